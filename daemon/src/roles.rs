//! Local roles: which role a local user other than the daemon's own gets, from `[roles]` in the
//! config file and the peer's uid and groups.
//!
//! Names are resolved to numeric ids when the config is read (a name that does not resolve is a
//! config error, like any other bad value), so a connection only compares numbers. A peer's
//! supplementary groups are not part of its socket credentials on Linux (SO_PEERCRED carries the
//! uid, the effective gid and the pid); they come from the group database through NSS
//! (`getgrouplist` of the uid's user name) and are cached per uid for [`GROUPS_TTL`]. On macOS
//! the kernel's credentials carry them.
//!
//! Roles are only in force with the `rbac` feature on and at least one grant: otherwise only the
//! daemon's own uid may connect, as without any `[roles]` table.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::methods::Role;
use serde::Deserialize;
use toml::Spanned;

use crate::state::Settings;

/// How long a uid's supplementary groups are remembered. A change of group membership reaches
/// new connections after at most this long.
pub const GROUPS_TTL: Duration = Duration::from_secs(30);

/// Every role, lowest first.
const ROLES: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Owner];

/// One grant: the role, and the config key that gave it (`users.alice`, `groups.1001`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The role granted.
    pub role: Role,
    /// The key under `[roles]`, for logs.
    pub key: String,
}

/// The group the socket and its directory are shared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    /// Its gid.
    pub gid: u32,
    /// As written in the config (a name, or the gid in decimal).
    pub name: String,
}

/// `[roles]`, with every name resolved to its id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RolesConfig {
    /// `socket_group`: who may open the socket at all (mode 0660, directory 0750).
    pub socket_group: Option<SocketGroup>,
    /// `[roles.users]`: uid → grant.
    pub users: BTreeMap<u32, Grant>,
    /// `[roles.groups]`: gid → grant.
    pub groups: BTreeMap<u32, Grant>,
}

impl RolesConfig {
    /// Whether any user or group is granted a role.
    pub fn grants_any(&self) -> bool {
        !self.users.is_empty() || !self.groups.is_empty()
    }

    /// The highest role granted to `uid` or to any of `gids`, with the grant that gives it (the
    /// first such grant when several give the same role: the user's own before its groups).
    pub fn role_of(&self, uid: u32, gids: &[u32]) -> Option<&Grant> {
        let by_user = self.users.get(&uid);
        let by_group = gids.iter().filter_map(|gid| self.groups.get(gid));
        by_user
            .into_iter()
            .chain(by_group)
            .fold(None, |best: Option<&Grant>, grant| match best {
                Some(b) if b.role >= grant.role => Some(b),
                _ => Some(grant),
            })
    }
}

/// The roles in force: only with the `rbac` feature on and at least one grant.
pub fn in_force(settings: &Settings) -> Option<&RolesConfig> {
    let roles = &settings.config.roles;
    (settings.features.is_enabled(Feature::Rbac) && roles.grants_any()).then_some(roles)
}

/// The group the socket is shared with: `socket_group`, while roles are in force.
pub fn socket_group(settings: &Settings) -> Option<&SocketGroup> {
    in_force(settings)?.socket_group.as_ref()
}

/// Warnings about a `[roles]` table that has no effect.
pub fn warnings(settings: &Settings) -> Vec<String> {
    let roles = &settings.config.roles;
    let configured = roles.grants_any() || roles.socket_group.is_some();
    if configured && !settings.features.is_enabled(Feature::Rbac) {
        return vec![format!(
            "[roles] is configured but not applied, so only the daemon's own user may connect: {}",
            Feature::Rbac.disabled_message()
        )];
    }
    if roles.socket_group.is_some() && !roles.grants_any() {
        return vec![
            "[roles] socket_group is set but no role is granted under [roles.users] or \
             [roles.groups]: the socket stays private (mode 0600)"
                .to_owned(),
        ];
    }
    Vec::new()
}

/// Looks names up in the user and group databases.
pub trait Directory {
    /// The uid of user `name`, `None` if there is no such user.
    fn user_id(&self, name: &str) -> Result<Option<u32>, String>;
    /// The gid of group `name`, `None` if there is no such group.
    fn group_id(&self, name: &str) -> Result<Option<u32>, String>;
}

/// The system's databases, through NSS (`/etc/passwd`, LDAP, SSSD, … as configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemDirectory;

#[cfg(unix)]
impl Directory for SystemDirectory {
    fn user_id(&self, name: &str) -> Result<Option<u32>, String> {
        nix::unistd::User::from_name(name)
            .map(|user| user.map(|u| u.uid.as_raw()))
            .map_err(|e| e.desc().to_owned())
    }

    fn group_id(&self, name: &str) -> Result<Option<u32>, String> {
        nix::unistd::Group::from_name(name)
            .map(|group| group.map(|g| g.gid.as_raw()))
            .map_err(|e| e.desc().to_owned())
    }
}

#[cfg(not(unix))]
impl Directory for SystemDirectory {
    fn user_id(&self, _name: &str) -> Result<Option<u32>, String> {
        Err("user names need a Unix system".to_owned())
    }

    fn group_id(&self, _name: &str) -> Result<Option<u32>, String> {
        Err("group names need a Unix system".to_owned())
    }
}

/// A bad value: its span in the file and the message.
pub(crate) type Invalid = (Option<std::ops::Range<usize>>, String);

/// `[roles]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoles {
    socket_group: Option<Spanned<toml::Value>>,
    #[serde(default)]
    users: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// Which database a name is looked up in.
#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Self::User => "uid",
            Self::Group => "gid",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::User => "[roles.users]",
            Self::Group => "[roles.groups]",
        }
    }
}

impl RawRoles {
    /// Resolves names and roles; the first bad value is the error.
    pub(crate) fn validate(self, directory: &dyn Directory) -> Result<RolesConfig, Invalid> {
        let socket_group = match self.socket_group {
            None => None,
            Some(value) => {
                let span = value.span();
                let written = match value.into_inner() {
                    toml::Value::String(text) => text,
                    toml::Value::Integer(n) => match u32::try_from(n) {
                        Ok(gid) => gid.to_string(),
                        Err(_) => {
                            return Err((
                                Some(span),
                                format!("[roles] socket_group: {n} is not a valid gid"),
                            ));
                        }
                    },
                    other => {
                        return Err((
                            Some(span),
                            format!(
                                "[roles] socket_group must be a group name or a numeric gid, not {}",
                                other.type_str()
                            ),
                        ));
                    }
                };
                let gid = resolve(directory, Kind::Group, &written)
                    .map_err(|why| (Some(span), format!("[roles] socket_group: {why}")))?;
                Some(SocketGroup { gid, name: written })
            }
        };
        Ok(RolesConfig {
            socket_group,
            users: grants(directory, Kind::User, self.users)?,
            groups: grants(directory, Kind::Group, self.groups)?,
        })
    }
}

fn grants(
    directory: &dyn Directory,
    kind: Kind,
    raw: BTreeMap<Spanned<String>, Spanned<String>>,
) -> Result<BTreeMap<u32, Grant>, Invalid> {
    let mut grants: BTreeMap<u32, Grant> = BTreeMap::new();
    for (key, role) in raw {
        let name = key.get_ref();
        let id = resolve(directory, kind, name)
            .map_err(|why| (Some(key.span()), format!("{} {why}", kind.table())))?;
        let role_value = parse_role(role.get_ref()).map_err(|why| {
            (
                Some(role.span()),
                format!("{} {}: {why}", kind.table(), quote_key(name)),
            )
        })?;
        let grant = Grant {
            role: role_value,
            key: format!(
                "{}.{}",
                match kind {
                    Kind::User => "users",
                    Kind::Group => "groups",
                },
                quote_key(name)
            ),
        };
        // A name and its number may both be listed: the higher role counts, as it would for a
        // user in two granted groups.
        match grants.get(&id) {
            Some(existing) if existing.role >= grant.role => {}
            _ => {
                grants.insert(id, grant);
            }
        }
    }
    Ok(grants)
}

/// A key as TOML would need it written: bare when it can be.
fn quote_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// A name or a decimal id. All-digit keys are ids and are not looked up, so that a uid or gid
/// without an entry in the databases (a container's, say) can still be granted a role.
fn resolve(directory: &dyn Directory, kind: Kind, written: &str) -> Result<u32, String> {
    if !written.is_empty() && written.bytes().all(|b| b.is_ascii_digit()) {
        return written
            .parse::<u32>()
            .map_err(|_| format!("{written} is not a valid {}", kind.id()));
    }
    let found = match kind {
        Kind::User => directory.user_id(written),
        Kind::Group => directory.group_id(written),
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(format!(
            "unknown {} '{written}': no such {} on this system",
            kind.noun(),
            kind.noun()
        )),
        Err(why) => Err(format!("cannot look up {} '{written}': {why}", kind.noun())),
    }
}

/// `viewer`, `operator`, `admin` or `owner` (case-insensitive).
fn parse_role(text: &str) -> Result<Role, String> {
    let wanted = text.trim();
    ROLES
        .into_iter()
        .find(|r| r.name().eq_ignore_ascii_case(wanted))
        .ok_or_else(|| {
            let names: Vec<_> = ROLES.iter().map(|r| r.name()).collect();
            format!(
                "unknown role '{text}': expected one of {}",
                names.join(", ")
            )
        })
}

/// A uid's supplementary groups, or why they could not be read.
type Lookup = Result<Arc<[u32]>, String>;

/// Supplementary groups per uid, looked up off the async runtime and remembered for
/// [`GROUPS_TTL`] (failures too, so that a failing directory is not asked on every connect).
#[derive(Debug, Default)]
pub struct GroupCache {
    entries: Mutex<HashMap<u32, (Instant, Lookup)>>,
}

impl GroupCache {
    /// The supplementary groups of `uid` (its user's groups in the group database, its
    /// passwd group included). A uid with no user entry has none.
    pub async fn supplementary(&self, uid: u32) -> Lookup {
        let now = Instant::now();
        if let Some((at, groups)) = self.lock().get(&uid)
            && now.duration_since(*at) < GROUPS_TTL
        {
            return groups.clone();
        }
        let looked_up = tokio::task::spawn_blocking(move || lookup_supplementary(uid))
            .await
            .unwrap_or_else(|e| Err(format!("the lookup failed: {e}")))
            .map(Arc::from);
        let mut entries = self.lock();
        entries.retain(|_, (at, _)| now.duration_since(*at) < GROUPS_TTL);
        entries.insert(uid, (now, looked_up.clone()));
        looked_up
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Instant, Lookup)>> {
        // A panic while holding the lock leaves a map of complete entries: still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `getgrouplist` of the uid's user name. Blocking: NSS may ask a network directory.
#[cfg(all(unix, not(target_vendor = "apple")))]
fn lookup_supplementary(uid: u32) -> Result<Vec<u32>, String> {
    use nix::unistd::{Uid, User, getgrouplist};
    let user = User::from_uid(Uid::from_raw(uid))
        .map_err(|e| format!("cannot look up uid {uid}: {}", e.desc()))?;
    let Some(user) = user else {
        return Ok(Vec::new());
    };
    let name = std::ffi::CString::new(user.name.as_bytes())
        .map_err(|_| format!("the user name of uid {uid} contains a NUL byte"))?;
    let groups = getgrouplist(&name, user.gid).map_err(|e| {
        format!(
            "cannot list the groups of user '{}': {}",
            user.name,
            e.desc()
        )
    })?;
    Ok(groups.into_iter().map(|g| g.as_raw()).collect())
}

/// macOS has no `getgrouplist` worth the name (group membership lives in opendirectoryd);
/// the peer's credentials carry its groups instead.
#[cfg(not(all(unix, not(target_vendor = "apple"))))]
fn lookup_supplementary(_uid: u32) -> Result<Vec<u32>, String> {
    Ok(Vec::new())
}

/// alice=1000, bob=1001; agents=2000, admins=2001.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FakeDirectory;

#[cfg(test)]
impl Directory for FakeDirectory {
    fn user_id(&self, name: &str) -> Result<Option<u32>, String> {
        Ok(match name {
            "alice" => Some(1000),
            "bob" => Some(1001),
            "broken" => return Err("the directory is down".to_owned()),
            _ => None,
        })
    }

    fn group_id(&self, name: &str) -> Result<Option<u32>, String> {
        Ok(match name {
            "agents" => Some(2000),
            "admins" => Some(2001),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, key: &str) -> Grant {
        Grant {
            role,
            key: key.to_owned(),
        }
    }

    fn roles() -> RolesConfig {
        RolesConfig {
            socket_group: None,
            users: BTreeMap::from([(1000, grant(Role::Operator, "users.alice"))]),
            groups: BTreeMap::from([
                (2000, grant(Role::Viewer, "groups.agents")),
                (2001, grant(Role::Admin, "groups.admins")),
            ]),
        }
    }

    #[test]
    fn the_highest_grant_wins() {
        let roles = roles();
        assert_eq!(
            roles.role_of(1000, &[]).map(|g| g.role),
            Some(Role::Operator)
        );
        assert_eq!(
            roles.role_of(1000, &[2000]).map(|g| g.key.as_str()),
            Some("users.alice")
        );
        assert_eq!(
            roles.role_of(1000, &[2000, 2001]).map(|g| g.key.as_str()),
            Some("groups.admins")
        );
        assert_eq!(
            roles.role_of(1001, &[2000]).map(|g| g.role),
            Some(Role::Viewer)
        );
        assert_eq!(roles.role_of(1001, &[3000]), None);
        assert_eq!(roles.role_of(0, &[0]), None);
    }

    #[test]
    fn equal_roles_keep_the_users_own_grant() {
        let mut roles = roles();
        roles
            .groups
            .insert(2002, grant(Role::Operator, "groups.ops"));
        assert_eq!(
            roles.role_of(1000, &[2002]).map(|g| g.key.as_str()),
            Some("users.alice")
        );
    }

    #[test]
    fn roles_parse_case_insensitively_and_unknown_ones_are_listed() {
        assert_eq!(parse_role("Operator"), Ok(Role::Operator));
        assert_eq!(parse_role("owner"), Ok(Role::Owner));
        assert_eq!(
            parse_role("boss"),
            Err("unknown role 'boss': expected one of viewer, operator, admin, owner".to_owned())
        );
    }

    #[test]
    fn digits_are_ids_and_names_are_looked_up() {
        assert_eq!(resolve(&FakeDirectory, Kind::User, "4242"), Ok(4242));
        assert_eq!(resolve(&FakeDirectory, Kind::User, "alice"), Ok(1000));
        assert_eq!(resolve(&FakeDirectory, Kind::Group, "agents"), Ok(2000));
        assert_eq!(
            resolve(&FakeDirectory, Kind::User, "carol"),
            Err("unknown user 'carol': no such user on this system".to_owned())
        );
        assert_eq!(
            resolve(&FakeDirectory, Kind::Group, "99999999999"),
            Err("99999999999 is not a valid gid".to_owned())
        );
        assert_eq!(
            resolve(&FakeDirectory, Kind::User, "broken"),
            Err("cannot look up user 'broken': the directory is down".to_owned())
        );
    }

    #[test]
    fn keys_are_quoted_only_when_they_must_be() {
        assert_eq!(quote_key("atlasbridge-agents"), "atlasbridge-agents");
        assert_eq!(quote_key("a.b"), "\"a.b\"");
        assert_eq!(quote_key(""), "\"\"");
    }

    fn settings(rbac: Option<bool>, roles: RolesConfig) -> Settings {
        let mut config = crate::config::Config::default();
        if let Some(on) = rbac {
            config.features.insert(Feature::Rbac, on);
        }
        config.roles = roles;
        let env = BTreeMap::<String, String>::new();
        Settings {
            features: atlasbridge_protocol::flags::FeatureSet::resolve(None, &env, &config.flags())
                .unwrap(),
            config,
            config_file: None,
        }
    }

    #[test]
    fn roles_are_in_force_only_with_rbac_on_and_a_grant() {
        let shared = RolesConfig {
            socket_group: Some(SocketGroup {
                gid: 2000,
                name: "agents".to_owned(),
            }),
            ..roles()
        };
        let on = settings(Some(true), shared.clone());
        assert_eq!(in_force(&on), Some(&shared));
        assert_eq!(socket_group(&on).map(|g| g.gid), Some(2000));
        assert!(warnings(&on).is_empty());

        // The community edition's default: off.
        for rbac in [None, Some(false)] {
            let off = settings(rbac, shared.clone());
            assert_eq!(in_force(&off), None);
            assert_eq!(socket_group(&off), None);
            let warnings = warnings(&off);
            assert_eq!(warnings.len(), 1);
            assert!(
                warnings[0].contains("only the daemon's own user may connect"),
                "{warnings:?}"
            );
            assert!(warnings[0].contains("rbac = true"), "{warnings:?}");
        }

        let no_grants = RolesConfig {
            socket_group: shared.socket_group,
            ..RolesConfig::default()
        };
        let unused = settings(Some(true), no_grants);
        assert_eq!(in_force(&unused), None);
        assert_eq!(socket_group(&unused), None);
        assert!(warnings(&unused)[0].contains("the socket stays private"));

        let nothing = settings(Some(false), RolesConfig::default());
        assert!(warnings(&nothing).is_empty());
    }

    #[cfg(all(unix, not(target_vendor = "apple")))]
    #[tokio::test]
    async fn the_cache_answers_for_the_current_user() {
        // Whoever runs the tests: their passwd group is among their supplementary groups.
        let uid = rustix::process::getuid().as_raw();
        let cache = GroupCache::default();
        let first = cache.supplementary(uid).await;
        let again = cache.supplementary(uid).await;
        assert_eq!(first, again);
        if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            assert!(first.unwrap().contains(&user.gid.as_raw()));
        }
    }
}
