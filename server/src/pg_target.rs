//! Where the server's PostgreSQL is and how the connection to it is protected: the parsed URL
//! and the TLS connector (rustls), shared by the pool, the live stream's listening connection
//! and migrations.
//!
//! `sslmode=require` in the URL means TLS with the certificate verified against the system's
//! roots, or against `database.ca_file` when it is set, and the host name checked: libpq's
//! `verify-full`. `verify-full` and `verify-ca` are accepted as spellings of it, so a URL
//! written for libpq works. Without `sslmode` (or with `disable` or `prefer`) the connection is
//! not encrypted: `prefer` would otherwise mean "encrypted if the server offers it, verified
//! then", which fails against the self-signed certificates many PostgreSQL packages enable by
//! default instead of falling back, so it is read as `disable` and a warning says so when the
//! host is not this machine.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::warn;

/// The stream of a connection opened through a [`PgTarget`].
pub type PgStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// Why a database URL or its TLS setup cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PgTargetError {
    /// The URL is not a PostgreSQL connection string.
    #[error("bad database URL: {0}")]
    BadUrl(String),
    /// `database.ca_file` cannot be read or holds no usable certificate.
    #[error("database.ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    /// No root certificate to verify the database's with.
    #[error(
        "sslmode=require, but this system has no usable TLS root certificates: set database.ca_file"
    )]
    NoRoots,
    /// rustls refused the configuration.
    #[error("cannot set up TLS to the database: {0}")]
    Tls(String),
}

/// A PostgreSQL server to connect to, and how.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: only say where and whether it is encrypted.
        f.debug_struct("PgTarget")
            .field("hosts", &self.config.get_hosts())
            .field("encrypted", &self.encrypted())
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses `url` and, when it asks for TLS, loads the roots to verify the server with: those
    /// of `ca_file` when given, else the system's.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, PgTargetError> {
        let mut config: tokio_postgres::Config = libpq_ssl_modes_as_require(url)
            .parse()
            .map_err(|e: tokio_postgres::Error| PgTargetError::BadUrl(e.to_string()))?;
        let encrypted = config.get_ssl_mode() == SslMode::Require;
        let roots = if encrypted {
            roots(ca_file)?
        } else {
            if !is_local(&config) {
                warn!(
                    "the database URL does not set sslmode=require: the connection to a remote \
                     PostgreSQL is not encrypted"
                );
            }
            config.ssl_mode(SslMode::Disable);
            RootCertStore::empty()
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgTargetError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// Whether connections are encrypted (and the server's certificate verified).
    pub fn encrypted(&self) -> bool {
        self.config.get_ssl_mode() == SslMode::Require
    }

    /// The parsed connection settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The connector to hand to a pool.
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// Opens one connection; the caller drives the returned [`Connection`].
    pub async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, PgStream>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// `url` with libpq's verifying modes spelled as the one tokio-postgres knows, which verifies
/// fully here anyway.
fn libpq_ssl_modes_as_require(url: &str) -> String {
    url.replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
}

/// Whether every host of `config` is this machine (a Unix socket or a loopback address).
fn is_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, PgTargetError> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_file else {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            warn!(%error, "while loading the system's TLS roots");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            return Err(PgTargetError::NoRoots);
        }
        return Ok(roots);
    };
    let ca_error = |message: String| PgTargetError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| ca_error(format!("cannot be read: {e}")))?;
    for certificate in certificates {
        let certificate =
            certificate.map_err(|e| ca_error(format!("is not PEM certificates: {e}")))?;
        roots
            .add(certificate)
            .map_err(|e| ca_error(format!("holds an unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_error("holds no certificate".to_owned()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_require_nothing_is_encrypted_and_no_roots_are_needed() {
        for url in [
            "postgres://u:p@db.example:5432/x",
            "postgres://u:p@db.example/x?sslmode=prefer",
            "host=127.0.0.1 user=u sslmode=disable",
        ] {
            let target = PgTarget::new(url, Some(Path::new("/nonexistent/ca.pem"))).unwrap();
            assert!(!target.encrypted(), "{url}");
            assert_eq!(target.config().get_ssl_mode(), SslMode::Disable, "{url}");
        }
    }

    #[test]
    fn libpq_verifying_modes_mean_require() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, TEST_CA).unwrap();
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u:p@db.example/x?sslmode={mode}");
            let target = PgTarget::new(&url, Some(&ca)).unwrap();
            assert!(target.encrypted(), "{mode}");
        }
    }

    #[test]
    fn a_bad_ca_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let url = "postgres://u:p@db.example/x?sslmode=require";
        let error = PgTarget::new(url, Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("ca.pem") && error.contains("no certificate"),
            "{error}"
        );
        let missing = dir.path().join("missing.pem");
        let error = PgTarget::new(url, Some(&missing)).unwrap_err().to_string();
        assert!(
            error.contains("missing.pem") && error.contains("cannot be read"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_url_says_so() {
        let error = PgTarget::new("postgres://u@h/x?sslmode=sometimes", None)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("bad database URL"), "{error}");
    }

    #[test]
    fn only_loopback_and_sockets_are_local() {
        let local = |url: &str| is_local(&url.parse().unwrap());
        assert!(local("postgres://u@127.0.0.1/x"));
        assert!(local("postgres://u@localhost/x"));
        assert!(local("postgres://u@[::1]/x"));
        assert!(local("host=/run/postgresql user=u"));
        assert!(!local("postgres://u@10.0.0.5/x"));
        assert!(!local("postgres://u@db.example/x"));
    }

    /// A self-signed CA certificate (only parsed, never trusted for anything).
    const TEST_CA: &str = include_str!("../tests/data/pg-test-ca.pem");
}
