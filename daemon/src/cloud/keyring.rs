//! The OS keyring as a place for the cloud API key (`[cloud] api_key_keyring = true`).
//!
//! Built only with the `keyring` cargo feature. The stores are the platforms' own persistent
//! ones: the macOS Keychain, the Windows Credential Manager, and on Linux and the BSDs the Secret
//! Service (GNOME Keyring, KWallet, KeePassXC) spoken to over D-Bus in pure Rust, with no system
//! library. The Linux kernel keyring (keyutils) is not used: it forgets everything at reboot,
//! and a daemon's key has to outlive one.
//!
//! Every entry is service [`SERVICE`] and account = the organisation id. The access sits behind
//! [`SecretStore`] so the rules around it (precedence, messages) are tested without a real
//! keyring. Nothing here logs or formats a secret: a store's errors are passed on by their
//! `Display`, which never carries the stored bytes.

/// The keyring service every AtlasBridge entry is stored under (`cloud setup` uses the same).
pub const SERVICE: &str = "atlasbridge";

/// Whether this build has the OS keyring.
pub const BUILT: bool = cfg!(feature = "keyring");

/// Why a keyring could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// There is no keyring to ask, or it refused access: no Secret Service on the session bus,
    /// a store that stayed locked, access denied.
    #[error("{0}")]
    Unavailable(String),
    /// The keyring answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// A place that keeps secrets by service and account: the OS keyring, or a map in tests.
pub trait SecretStore: Send + Sync {
    /// The secret, or `None` when there is no such entry.
    fn get(&self, service: &str, account: &str) -> Result<Option<String>, StoreError>;
    /// Creates or replaces the entry.
    fn set(&self, service: &str, account: &str, secret: &str) -> Result<(), StoreError>;
    /// Deletes the entry; `false` when there was none.
    fn delete(&self, service: &str, account: &str) -> Result<bool, StoreError>;
}

/// The OS keyring of this build, or `None` when it was built without the `keyring` feature.
pub fn os_store() -> Option<&'static dyn SecretStore> {
    #[cfg(feature = "keyring")]
    {
        Some(&os::OsKeyring)
    }
    #[cfg(not(feature = "keyring"))]
    {
        None
    }
}

#[cfg(feature = "keyring")]
mod os {
    use super::{SecretStore, StoreError};

    /// The platform's keyring, through the `keyring` crate.
    #[derive(Debug)]
    pub(super) struct OsKeyring;

    fn entry(service: &str, account: &str) -> Result<::keyring::Entry, StoreError> {
        ::keyring::Entry::new(service, account).map_err(classify)
    }

    /// Sorts the crate's errors into "no keyring" and "the keyring failed", by their `Display`
    /// only (`BadEncoding` carries the stored bytes, so it gets a message of its own).
    fn classify(error: ::keyring::Error) -> StoreError {
        match error {
            ::keyring::Error::NoDefaultStore => {
                StoreError::Unavailable(match ::keyring::Entry::store_status() {
                    // Why the platform's store could not be opened (no session bus, …).
                    Err(why) => why.to_string(),
                    Ok(()) => "no credential store could be opened".to_owned(),
                })
            }
            ::keyring::Error::NoStorageAccess(why) => StoreError::Unavailable(why.to_string()),
            ::keyring::Error::BadEncoding(_) => {
                StoreError::Failed("the stored value is not UTF-8 text".to_owned())
            }
            other => StoreError::Failed(other.to_string()),
        }
    }

    impl SecretStore for OsKeyring {
        fn get(&self, service: &str, account: &str) -> Result<Option<String>, StoreError> {
            match entry(service, account)?.get_password() {
                Ok(secret) => Ok(Some(secret)),
                Err(::keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(classify(e)),
            }
        }

        fn set(&self, service: &str, account: &str, secret: &str) -> Result<(), StoreError> {
            entry(service, account)?
                .set_password(secret)
                .map_err(classify)
        }

        fn delete(&self, service: &str, account: &str) -> Result<bool, StoreError> {
            match entry(service, account)?.delete_credential() {
                Ok(()) => Ok(true),
                Err(::keyring::Error::NoEntry) => Ok(false),
                Err(e) => Err(classify(e)),
            }
        }
    }
}

/// The entries of a [`MemoryStore`], by (service, account).
#[cfg(test)]
type Entries = std::collections::HashMap<(String, String), String>;

/// An in-memory store for tests, which can also play an unavailable or failing keyring.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    entries: std::sync::Mutex<Entries>,
    /// When set, every call fails with this.
    fail: Option<StoreError>,
}

#[cfg(test)]
impl MemoryStore {
    /// A store that fails every call with `error`.
    pub(crate) fn failing(error: StoreError) -> Self {
        Self {
            fail: Some(error),
            ..Self::default()
        }
    }

    fn entries(&self) -> Result<std::sync::MutexGuard<'_, Entries>, StoreError> {
        if let Some(error) = &self.fail {
            return Err(error.clone());
        }
        self.entries
            .lock()
            .map_err(|_| StoreError::Failed("poisoned".to_owned()))
    }
}

#[cfg(test)]
impl SecretStore for MemoryStore {
    fn get(&self, service: &str, account: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .entries()?
            .get(&(service.to_owned(), account.to_owned()))
            .cloned())
    }

    fn set(&self, service: &str, account: &str, secret: &str) -> Result<(), StoreError> {
        self.entries()?
            .insert((service.to_owned(), account.to_owned()), secret.to_owned());
        Ok(())
    }

    fn delete(&self, service: &str, account: &str) -> Result<bool, StoreError> {
        Ok(self
            .entries()?
            .remove(&(service.to_owned(), account.to_owned()))
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_keeps_entries_by_service_and_account() {
        let store = MemoryStore::default();
        assert_eq!(store.get(SERVICE, "a").unwrap(), None);
        store.set(SERVICE, "a", "one").unwrap();
        store.set(SERVICE, "b", "two").unwrap();
        store.set("other", "a", "three").unwrap();
        assert_eq!(store.get(SERVICE, "a").unwrap().as_deref(), Some("one"));
        assert!(store.delete(SERVICE, "a").unwrap());
        assert!(!store.delete(SERVICE, "a").unwrap());
        assert_eq!(store.get(SERVICE, "b").unwrap().as_deref(), Some("two"));
    }

    #[test]
    fn the_build_says_whether_it_has_a_keyring() {
        assert_eq!(os_store().is_some(), BUILT);
        assert_eq!(BUILT, cfg!(feature = "keyring"));
    }

    /// Writes, reads, replaces and deletes a uniquely named entry in the real OS keyring when
    /// one answers; where none does (a headless machine without a Secret Service) it says why
    /// and checks only that the failure is reported as "unavailable".
    #[cfg(feature = "keyring")]
    #[test]
    fn a_real_keyring_round_trips_an_entry_when_one_is_reachable() {
        let store = os_store().unwrap();
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).unwrap();
        let account = format!(
            "atlasbridge-test-{}",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        match store.get(SERVICE, &account) {
            Err(StoreError::Unavailable(why)) => {
                println!("skipped: no OS keyring is reachable here ({why})");
                return;
            }
            Err(StoreError::Failed(why)) => panic!("the keyring failed: {why}"),
            Ok(found) => assert_eq!(found, None, "a fresh account has no entry"),
        }
        store.set(SERVICE, &account, "first").unwrap();
        let cleanup = Cleanup(store, &account);
        assert_eq!(
            store.get(SERVICE, &account).unwrap().as_deref(),
            Some("first")
        );
        store.set(SERVICE, &account, "second").unwrap();
        assert_eq!(
            store.get(SERVICE, &account).unwrap().as_deref(),
            Some("second")
        );
        assert!(store.delete(SERVICE, &account).unwrap());
        assert_eq!(store.get(SERVICE, &account).unwrap(), None);
        assert!(!store.delete(SERVICE, &account).unwrap());
        drop(cleanup);

        /// Deletes the entry even when an assertion above failed.
        struct Cleanup<'a>(&'static dyn SecretStore, &'a str);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = self.0.delete(SERVICE, self.1);
            }
        }
    }
}
