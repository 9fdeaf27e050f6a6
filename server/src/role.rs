//! The roles of people in an organisation, ordered: each can do what the ones below it can.
//!
//! - `viewer` reads everything of its organisation;
//! - `operator` also makes operational writes: the policy registry (policies, versions,
//!   distributions);
//! - `admin` also manages API keys and users, except owners;
//! - `owner` also manages owners. An organisation always keeps at least one owner.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A person's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and makes operational writes.
    Operator,
    /// Also manages API keys and users (not owners).
    Admin,
    /// Also manages owners.
    Owner,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Owner];

    /// The name stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// The role called `name`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip_by_name() {
        assert!(Role::Viewer < Role::Operator);
        assert!(Role::Operator < Role::Admin);
        assert!(Role::Admin < Role::Owner);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::from(role.as_str())
            );
        }
        assert_eq!(Role::parse("root"), None);
    }
}
