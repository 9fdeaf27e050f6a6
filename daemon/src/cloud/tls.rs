//! The TLS client configuration of the uplink: rustls with the aws-lc-rs provider, TLS 1.2 and
//! 1.3, trusting the system's roots or, when `ca_file` is set, the certificates in that file.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The client configuration for both the WebSocket and the REST calls.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let mut found = 0;
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read [cloud] ca_file {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| {
                    format!(
                        "[cloud] ca_file {} is not PEM certificates: {e}",
                        path.display()
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    format!(
                        "[cloud] ca_file {} holds an unusable certificate: {e}",
                        path.display()
                    )
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(format!(
                    "[cloud] ca_file {} holds no certificate",
                    path.display()
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "while loading the system's TLS roots");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(
                    "no usable TLS root certificates on this system; set [cloud] ca_file".into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = client_config(Some(&path)).unwrap_err();
        assert!(error.contains("ca.pem"), "{error}");
        let missing = client_config(Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert!(missing.contains("cannot read [cloud] ca_file"), "{missing}");
    }
}
