//! Who is on the other end of a connection, and with which role.
//!
//! The kernel's record of the peer (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS) is taken at
//! `connect()` time and cannot be forged by the client. The daemon's own uid is `owner`. Another
//! uid gets a role only while local roles are in force (the `rbac` feature on and a `[roles]`
//! grant, see [`crate::roles`]): the highest role granted to its uid, its effective gid or one
//! of its supplementary groups. Anyone else is refused. The role is fixed for the connection's
//! life; a reload changes the roles of connections opened after it.

use atlasbridge_protocol::methods::Role;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon;
use tracing::{debug, warn};

use crate::roles::{GroupCache, RolesConfig};

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

/// What the kernel says about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// Effective uid.
    pub uid: Option<u32>,
    /// Effective gid.
    pub gid: Option<u32>,
    /// Process id.
    pub pid: Option<i64>,
}

/// Why a connection is refused before its first request.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A uid other than the daemon's while no local roles are in force.
    #[error("uid {uid} is not allowed to use this daemon (only uid {owner} is)")]
    OtherUser {
        /// The peer's uid.
        uid: u32,
        /// The daemon's uid.
        owner: u32,
        /// The peer's effective gid.
        gid: Option<u32>,
        /// The peer's pid.
        pid: Option<i64>,
    },
    /// Local roles are in force, and none is granted to this uid or its groups.
    #[error(
        "uid {uid} has no role on this daemon: neither it nor its groups are granted one under [roles]{}",
        groups_error.as_ref().map(|e| format!(" (its supplementary groups could not be read: {e})")).unwrap_or_default()
    )]
    NoRole {
        /// The peer's uid.
        uid: u32,
        /// The peer's effective gid.
        gid: Option<u32>,
        /// The peer's pid.
        pid: Option<i64>,
        /// Why the supplementary groups are unknown, if they are.
        groups_error: Option<String>,
    },
    /// The peer's credentials could not be read: fail closed.
    #[error("cannot read the peer's credentials: {0}")]
    NoCredentials(String),
}

impl Refusal {
    /// The peer's uid, when known.
    pub fn uid(&self) -> Option<u32> {
        match self {
            Self::OtherUser { uid, .. } | Self::NoRole { uid, .. } => Some(*uid),
            Self::NoCredentials(_) => None,
        }
    }

    /// The peer's effective gid, when known.
    pub fn gid(&self) -> Option<u32> {
        match self {
            Self::OtherUser { gid, .. } | Self::NoRole { gid, .. } => *gid,
            Self::NoCredentials(_) => None,
        }
    }

    /// The peer's pid, when known.
    pub fn pid(&self) -> Option<i64> {
        match self {
            Self::OtherUser { pid, .. } | Self::NoRole { pid, .. } => *pid,
            Self::NoCredentials(_) => None,
        }
    }
}

/// Decides the role of the process behind `stream`. `roles` are the roles in force (`None`:
/// only the owner may connect). Supplementary groups are looked up (through `groups`) only for
/// a uid that is not the owner's while roles are in force.
pub async fn authorize(
    stream: &Stream,
    owner_uid: u32,
    roles: Option<&RolesConfig>,
    groups: &GroupCache,
) -> Result<Caller, Refusal> {
    let creds = stream
        .peer_creds()
        .map_err(|e| Refusal::NoCredentials(e.to_string()))?;
    let peer = PeerIdentity {
        uid: creds.euid(),
        gid: creds.egid(),
        pid: creds.pid().map(i64::from),
    };
    let supplementary = match (roles, peer.uid) {
        (Some(_), Some(uid)) if uid != owner_uid => {
            // macOS hands the groups over with the credentials (up to 16 of them); elsewhere,
            // or when that list is cut short, the group database has them.
            let from_kernel = creds.groups().map(<[u32]>::to_vec);
            let complete = from_kernel.is_some() && !creds.groups_truncated();
            let mut gids = from_kernel.unwrap_or_default();
            if complete {
                Ok(gids)
            } else {
                match groups.supplementary(uid).await {
                    Ok(more) => {
                        gids.extend(more.iter().copied());
                        Ok(gids)
                    }
                    Err(e) => {
                        // Fail towards fewer rights: a grant by uid or effective gid stands.
                        warn!(uid, error = %e, "cannot read a peer's supplementary groups; deciding without them");
                        if gids.is_empty() { Err(e) } else { Ok(gids) }
                    }
                }
            }
        }
        _ => Ok(Vec::new()),
    };
    classify(peer, owner_uid, roles, || supplementary)
}

/// The pure part of [`authorize`], testable without sockets: `supplementary` gives the peer's
/// supplementary groups, and is asked only when a role has to be looked for.
pub fn classify(
    peer: PeerIdentity,
    owner_uid: u32,
    roles: Option<&RolesConfig>,
    supplementary: impl FnOnce() -> Result<Vec<u32>, String>,
) -> Result<Caller, Refusal> {
    let PeerIdentity { uid, gid, pid } = peer;
    match uid {
        Some(uid) if uid == owner_uid => Ok(Caller {
            role: Role::Owner,
            uid: Some(uid),
            pid,
        }),
        Some(uid) => {
            let Some(roles) = roles else {
                return Err(Refusal::OtherUser {
                    uid,
                    owner: owner_uid,
                    gid,
                    pid,
                });
            };
            let mut gids: Vec<u32> = gid.into_iter().collect();
            let groups_error = match supplementary() {
                Ok(more) => {
                    gids.extend(more);
                    None
                }
                Err(e) => Some(e),
            };
            match roles.role_of(uid, &gids) {
                Some(grant) => {
                    debug!(uid, role = %grant.role, granted_by = %grant.key, "role granted");
                    Ok(Caller {
                        role: grant.role,
                        uid: Some(uid),
                        pid,
                    })
                }
                None => Err(Refusal::NoRole {
                    uid,
                    gid,
                    pid,
                    groups_error,
                }),
            }
        }
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::roles::Grant;

    const OWNER: u32 = 1000;

    fn peer(uid: u32, gid: u32) -> PeerIdentity {
        PeerIdentity {
            uid: Some(uid),
            gid: Some(gid),
            pid: Some(42),
        }
    }

    fn grant(role: Role, key: &str) -> Grant {
        Grant {
            role,
            key: key.to_owned(),
        }
    }

    /// alice (2001) is an operator; agents (3000) are viewers, admins (3001) admins.
    fn roles() -> RolesConfig {
        RolesConfig {
            socket_group: None,
            users: BTreeMap::from([(2001, grant(Role::Operator, "users.alice"))]),
            groups: BTreeMap::from([
                (3000, grant(Role::Viewer, "groups.agents")),
                (3001, grant(Role::Admin, "groups.admins")),
            ]),
        }
    }

    fn role_of(peer: PeerIdentity, supplementary: &[u32]) -> Result<Role, Refusal> {
        let roles = roles();
        classify(peer, OWNER, Some(&roles), || Ok(supplementary.to_vec())).map(|c| c.role)
    }

    #[test]
    fn the_daemons_own_uid_is_the_owner() {
        let never = || -> Result<Vec<u32>, String> { panic!("the owner needs no group lookup") };
        for roles in [None, Some(roles())] {
            let caller = classify(peer(OWNER, 1000), OWNER, roles.as_ref(), never).unwrap();
            assert_eq!(
                caller,
                Caller {
                    role: Role::Owner,
                    uid: Some(OWNER),
                    pid: Some(42)
                }
            );
        }
    }

    #[test]
    fn other_uids_are_refused_while_no_roles_are_in_force() {
        // rbac off, or no grant: the server passes no roles at all.
        let never = || -> Result<Vec<u32>, String> { panic!("no lookup without roles") };
        let err = classify(peer(2001, 3001), OWNER, None, never).unwrap_err();
        assert!(matches!(
            err,
            Refusal::OtherUser {
                uid: 2001,
                gid: Some(3001),
                pid: Some(42),
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "uid 2001 is not allowed to use this daemon (only uid 1000 is)"
        );
    }

    #[test]
    fn a_user_grant_gives_its_role() {
        let caller = classify(peer(2001, 2001), OWNER, Some(&roles()), || Ok(Vec::new())).unwrap();
        assert_eq!(
            caller,
            Caller {
                role: Role::Operator,
                uid: Some(2001),
                pid: Some(42)
            }
        );
    }

    #[test]
    fn a_group_grant_applies_through_the_effective_gid() {
        assert_eq!(role_of(peer(2002, 3000), &[]).unwrap(), Role::Viewer);
    }

    #[test]
    fn a_group_grant_applies_through_a_supplementary_group() {
        assert_eq!(
            role_of(peer(2002, 2002), &[2002, 3000]).unwrap(),
            Role::Viewer
        );
    }

    #[test]
    fn the_highest_role_wins() {
        assert_eq!(role_of(peer(2001, 3000), &[]).unwrap(), Role::Operator);
        assert_eq!(role_of(peer(2001, 3000), &[3001]).unwrap(), Role::Admin);
        assert_eq!(role_of(peer(2002, 3001), &[3000]).unwrap(), Role::Admin);
    }

    #[test]
    fn no_grant_is_refused() {
        let err = role_of(peer(2002, 2002), &[4000]).unwrap_err();
        assert!(matches!(
            err,
            Refusal::NoRole {
                uid: 2002,
                gid: Some(2002),
                pid: Some(42),
                groups_error: None
            }
        ));
        assert_eq!(
            err.to_string(),
            "uid 2002 has no role on this daemon: neither it nor its groups are granted one under [roles]"
        );
        assert_eq!(
            (err.uid(), err.gid(), err.pid()),
            (Some(2002), Some(2002), Some(42))
        );
    }

    #[test]
    fn root_is_nobody_special() {
        assert!(matches!(
            role_of(peer(0, 0), &[0]),
            Err(Refusal::NoRole { uid: 0, .. })
        ));
        assert!(matches!(
            classify(peer(0, 0), OWNER, None, || Ok(Vec::new())),
            Err(Refusal::OtherUser { uid: 0, .. })
        ));
        let mut roles = roles();
        roles.users.insert(0, grant(Role::Admin, "users.root"));
        let caller = classify(peer(0, 0), OWNER, Some(&roles), || Ok(Vec::new())).unwrap();
        assert_eq!(caller.role, Role::Admin);
    }

    #[test]
    fn unreadable_groups_keep_grants_by_uid_and_gid_and_are_named_in_a_refusal() {
        let roles = roles();
        let failing = || Err("the directory is down".to_owned());
        assert_eq!(
            classify(peer(2001, 2001), OWNER, Some(&roles), failing)
                .unwrap()
                .role,
            Role::Operator
        );
        assert_eq!(
            classify(peer(2002, 3000), OWNER, Some(&roles), failing)
                .unwrap()
                .role,
            Role::Viewer
        );
        let err = classify(peer(2002, 2002), OWNER, Some(&roles), failing).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(its supplementary groups could not be read: the directory is down)"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn no_uid_fails_closed_on_unix() {
        assert!(matches!(
            classify(PeerIdentity::default(), OWNER, Some(&roles()), || Ok(
                Vec::new()
            )),
            Err(Refusal::NoCredentials(_))
        ));
        assert_eq!(Refusal::NoCredentials("x".to_owned()).uid(), None);
    }
}
