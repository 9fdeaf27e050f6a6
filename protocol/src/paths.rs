//! Where the socket, the data directory and the config file live, resolved the same way by the
//! daemon and every client.
//!
//! Order for each: the command-line flag, then the environment variable, then the platform
//! default. The environment is injected ([`Environment`]) so the resolution is testable without
//! touching the process's own variables. Empty variables count as unset.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Overrides the socket path.
pub const SOCKET_ENV: &str = "ATLASBRIDGE_SOCKET";
/// Overrides the data directory.
pub const DATA_DIR_ENV: &str = "ATLASBRIDGE_DATA_DIR";
/// Overrides the config file.
pub const CONFIG_ENV: &str = "ATLASBRIDGE_CONFIG";
/// Overrides the edition.
pub const EDITION_ENV: &str = "ATLASBRIDGE_EDITION";
/// The socket's file name inside its directory.
pub const SOCKET_FILE_NAME: &str = "atlasbridged.sock";
/// The config file's name inside the config directory.
pub const CONFIG_FILE_NAME: &str = "config.toml";

/// Read access to environment variables.
pub trait Environment {
    /// The variable's value, if set.
    fn var_os(&self, key: &str) -> Option<OsString>;
    /// Every variable whose name starts with `prefix`.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, OsString)>;

    /// The variable's value if set and not empty.
    fn non_empty(&self, key: &str) -> Option<OsString> {
        self.var_os(key).filter(|v| !v.is_empty())
    }
}

/// The process's real environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var_os(&self, key: &str) -> Option<OsString> {
        std::env::var_os(key)
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, OsString)> {
        std::env::vars_os()
            .filter_map(|(k, v)| k.into_string().ok().map(|k| (k, v)))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }
}

/// A fixed environment, for tests.
impl Environment for BTreeMap<String, String> {
    fn var_os(&self, key: &str) -> Option<OsString> {
        self.get(key).map(OsString::from)
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, OsString)> {
        self.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), OsString::from(v)))
            .collect()
    }
}

/// A location could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// No home or runtime directory to derive a default from.
    #[error(
        "cannot find a per-user directory for the {what} (no XDG_RUNTIME_DIR or HOME); \
         set {env} or pass {flag}"
    )]
    NoDefault {
        /// What was being located.
        what: &'static str,
        /// The variable that would set it.
        env: &'static str,
        /// The flag that would set it.
        flag: &'static str,
    },
    /// The current directory was needed to make a relative path absolute and is unreadable.
    #[error("cannot make {path} absolute: {source}")]
    Absolute {
        /// The relative path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "atlasbridge", "atlasbridge")
}

fn absolute(path: PathBuf) -> Result<PathBuf, PathError> {
    std::path::absolute(&path).map_err(|source| PathError::Absolute { path, source })
}

fn chosen(flag: Option<&Path>, env: &impl Environment, var: &str) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| env.non_empty(var).map(PathBuf::from))
}

/// The socket path: `--socket`, then `ATLASBRIDGE_SOCKET`, then the platform default
/// ([`default_socket_path`]). Relative paths are made absolute against the current directory.
pub fn socket_path(flag: Option<&Path>, env: &impl Environment) -> Result<PathBuf, PathError> {
    match chosen(flag, env, SOCKET_ENV) {
        Some(path) => absolute(path),
        None => default_socket_path(env),
    }
}

/// The platform default socket path.
///
/// - Linux: `$XDG_RUNTIME_DIR/atlasbridge/atlasbridged.sock`; without `XDG_RUNTIME_DIR`, the
///   per-user state directory (`~/.local/state/atlasbridge/`).
/// - macOS and other Unix: the per-user runtime directory if the platform has one, else the
///   local data directory's `run/` folder.
/// - Windows: the named pipe `\\.\pipe\atlasbridged-<user>`.
pub fn default_socket_path(env: &impl Environment) -> Result<PathBuf, PathError> {
    let no_default = || PathError::NoDefault {
        what: "socket",
        env: SOCKET_ENV,
        flag: "--socket",
    };
    if cfg!(windows) {
        let user = env
            .non_empty("USERNAME")
            .unwrap_or_else(|| OsString::from("default"));
        let mut pipe = OsString::from(r"\\.\pipe\atlasbridged-");
        pipe.push(user);
        return Ok(PathBuf::from(pipe));
    }
    if cfg!(target_os = "linux")
        && let Some(runtime) = env.non_empty("XDG_RUNTIME_DIR").map(PathBuf::from)
        && runtime.is_absolute()
    {
        return Ok(runtime.join("atlasbridge").join(SOCKET_FILE_NAME));
    }
    let dirs = project_dirs().ok_or_else(no_default)?;
    let dir = dirs
        .runtime_dir()
        .or_else(|| dirs.state_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dirs.data_local_dir().join("run"));
    Ok(dir.join(SOCKET_FILE_NAME))
}

/// The data directory: `--data-dir`, then `ATLASBRIDGE_DATA_DIR`, then the per-user local data
/// directory (`~/.local/share/atlasbridge` on Linux).
pub fn data_dir(flag: Option<&Path>, env: &impl Environment) -> Result<PathBuf, PathError> {
    match chosen(flag, env, DATA_DIR_ENV) {
        Some(path) => absolute(path),
        None => project_dirs()
            .map(|d| d.data_local_dir().to_path_buf())
            .ok_or(PathError::NoDefault {
                what: "data directory",
                env: DATA_DIR_ENV,
                flag: "--data-dir",
            }),
    }
}

/// Where the config file is expected, and whether someone asked for it explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLocation {
    /// The file.
    pub path: PathBuf,
    /// Named by `--config` or `ATLASBRIDGE_CONFIG`: then a missing file is an error. The
    /// default location may be absent; the embedded defaults apply.
    pub explicit: bool,
}

/// The config file: `--config`, then `ATLASBRIDGE_CONFIG`, then `config.toml` in the per-user
/// config directory (`~/.config/atlasbridge/config.toml` on Linux).
pub fn config_file(
    flag: Option<&Path>,
    env: &impl Environment,
) -> Result<ConfigLocation, PathError> {
    match chosen(flag, env, CONFIG_ENV) {
        Some(path) => Ok(ConfigLocation {
            path: absolute(path)?,
            explicit: true,
        }),
        None => project_dirs()
            .map(|d| ConfigLocation {
                path: d.config_dir().join(CONFIG_FILE_NAME),
                explicit: false,
            })
            .ok_or(PathError::NoDefault {
                what: "config file",
                env: CONFIG_ENV,
                flag: "--config",
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_flag_beats_the_environment() {
        let e = env(&[(SOCKET_ENV, "/tmp/from-env.sock")]);
        let got = socket_path(Some(Path::new("/tmp/flag.sock")), &e).unwrap();
        assert_eq!(got, PathBuf::from("/tmp/flag.sock"));
    }

    #[test]
    fn the_environment_beats_the_default_and_empty_counts_as_unset() {
        let e = env(&[
            (SOCKET_ENV, "/tmp/from-env.sock"),
            ("XDG_RUNTIME_DIR", "/run/user/7"),
        ]);
        assert_eq!(
            socket_path(None, &e).unwrap(),
            PathBuf::from("/tmp/from-env.sock")
        );
        let e = env(&[(SOCKET_ENV, ""), ("XDG_RUNTIME_DIR", "/run/user/7")]);
        if cfg!(target_os = "linux") {
            assert_eq!(
                socket_path(None, &e).unwrap(),
                PathBuf::from("/run/user/7/atlasbridge/atlasbridged.sock")
            );
        }
    }

    #[test]
    fn relative_paths_become_absolute() {
        let got = socket_path(Some(Path::new("rel.sock")), &env(&[])).unwrap();
        assert!(got.is_absolute());
        assert!(got.ends_with("rel.sock"));
        let got = data_dir(None, &env(&[(DATA_DIR_ENV, "data")])).unwrap();
        assert!(got.is_absolute());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_relative_runtime_dir_is_ignored() {
        let got = default_socket_path(&env(&[("XDG_RUNTIME_DIR", "relative")])).unwrap();
        assert!(got.is_absolute(), "{got:?}");
        assert!(got.ends_with(SOCKET_FILE_NAME));
    }

    #[test]
    fn config_is_explicit_only_when_named() {
        let named = config_file(None, &env(&[(CONFIG_ENV, "/etc/ab.toml")])).unwrap();
        assert_eq!(
            named,
            ConfigLocation {
                path: "/etc/ab.toml".into(),
                explicit: true
            }
        );
        if let Ok(default) = config_file(None, &env(&[])) {
            assert!(!default.explicit);
            assert!(default.path.ends_with(CONFIG_FILE_NAME));
        }
    }
}
