//! Who is on the other end of a connection, and with which role.
//!
//! The kernel's record of the peer (SO_PEERCRED on Linux, getpeereid elsewhere) is taken at
//! `connect()` time and cannot be forged by the client. The daemon's own uid is `owner`; any
//! other uid is refused until local roles are configured.

use atlasbridge_protocol::methods::Role;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon;

/// The authenticated peer of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What it may do.
    pub role: Role,
    /// Its effective uid, when the platform reports one.
    pub uid: Option<u32>,
    /// Its pid at connect time, when the platform reports one.
    pub pid: Option<i64>,
}

/// Why a connection is refused before its first request.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A uid other than the daemon's, with no role configured for it.
    #[error("uid {uid} is not allowed to use this daemon (only uid {owner} is)")]
    OtherUser {
        /// The peer's uid.
        uid: u32,
        /// The daemon's uid.
        owner: u32,
        /// The peer's pid.
        pid: Option<i64>,
    },
    /// The peer's credentials could not be read: fail closed.
    #[error("cannot read the peer's credentials: {0}")]
    NoCredentials(String),
}

/// Decides the role of the process behind `stream`.
pub fn authorize(stream: &Stream, owner_uid: u32) -> Result<Caller, Refusal> {
    let creds = stream
        .peer_creds()
        .map_err(|e| Refusal::NoCredentials(e.to_string()))?;
    let pid = creds.pid().map(i64::from);
    classify(creds.euid(), pid, owner_uid)
}

/// The pure part of [`authorize`], testable without sockets.
pub fn classify(uid: Option<u32>, pid: Option<i64>, owner_uid: u32) -> Result<Caller, Refusal> {
    match uid {
        Some(uid) if uid == owner_uid => Ok(Caller {
            role: Role::Owner,
            uid: Some(uid),
            pid,
        }),
        Some(uid) => Err(Refusal::OtherUser {
            uid,
            owner: owner_uid,
            pid,
        }),
        // Named pipes carry no uid; their ACL already limits them to the current user.
        None if cfg!(windows) => Ok(Caller {
            role: Role::Owner,
            uid: None,
            pid,
        }),
        None => Err(Refusal::NoCredentials(
            "the platform reported no uid".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_own_uid_is_the_owner() {
        let caller = classify(Some(1000), Some(42), 1000).unwrap();
        assert_eq!(
            caller,
            Caller {
                role: Role::Owner,
                uid: Some(1000),
                pid: Some(42)
            }
        );
    }

    #[test]
    fn other_uids_are_refused() {
        let err = classify(Some(1001), Some(7), 1000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "uid 1001 is not allowed to use this daemon (only uid 1000 is)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn no_uid_fails_closed_on_unix() {
        assert!(matches!(
            classify(None, None, 1000),
            Err(Refusal::NoCredentials(_))
        ));
    }
}
