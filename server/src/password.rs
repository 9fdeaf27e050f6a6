//! Human passwords: argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1, the OWASP
//! baseline), stored as PHC strings, so parameters can be raised later without invalidating
//! stored hashes (each hash names its own).
//!
//! Hashing is deliberately slow and memory-hungry, so it runs on the blocking pool, and at most
//! one hash per core runs at once: a burst of logins waits instead of exhausting memory.
//! A login for an unknown user, a disabled one or one without a password still verifies against
//! a dummy hash, so the time taken does not reveal which accounts exist.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bytes): argon2 takes any length, but a megabyte-long "password"
/// is a cheap way to make the server hash a lot.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error(
        "a password needs at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes"
    )]
    Unacceptable,
    /// The hash function failed (no randomness for a salt).
    #[error("cannot hash a password: {0}")]
    Hashing(String),
}

/// Whether `password` may be set at all.
pub fn acceptable(password: &str) -> bool {
    password.chars().count() >= MIN_PASSWORD_CHARS && password.len() <= MAX_PASSWORD_BYTES
}

/// Hashes `password` (blocking; see [`Passwords::hash`] for async code).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    if !acceptable(password) {
        return Err(PasswordError::Unacceptable);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches the PHC string `stored` (blocking).
pub fn verify_blocking(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Hashes and verifies off the async threads, a bounded number at a time.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of nothing anyone knows, verified when there is no real hash to compare with.
    dummy: Arc<str>,
}

impl Passwords {
    /// At most one hash per core at once.
    pub fn new() -> Result<Self, PasswordError> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| PasswordError::Hashing(e.to_string()))?;
        let dummy = hash_blocking(&atlasbridge_protocol::hash::hex_lower(&secret))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(cores)),
            dummy: dummy.into(),
        })
    }

    /// Hashes `password`.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
    }

    /// Whether `password` matches `stored`; with no stored hash, the dummy is verified (and the
    /// answer is false), taking the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let real = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.to_string());
        let matched = tokio::task::spawn_blocking(move || verify_blocking(&password, &stored))
            .await
            .unwrap_or(false);
        real && matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_names_argon2id() {
        let hash = hash_blocking("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_blocking("correct horse battery", &hash));
        assert!(!verify_blocking("correct horse batterY", &hash));
        assert!(!verify_blocking(
            "correct horse battery",
            "not a phc string"
        ));
        assert!(matches!(
            hash_blocking("short"),
            Err(PasswordError::Unacceptable)
        ));
        assert!(matches!(
            hash_blocking(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::Unacceptable)
        ));
    }

    #[tokio::test]
    async fn without_a_stored_hash_nothing_verifies() {
        let passwords = Passwords::new().unwrap();
        assert!(!passwords.verify("anything at all".into(), None).await);
        let hash = passwords.hash("a fine long password".into()).await.unwrap();
        assert!(
            passwords
                .verify("a fine long password".into(), Some(hash))
                .await
        );
    }
}
