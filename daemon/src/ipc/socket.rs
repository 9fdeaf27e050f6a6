//! Claiming the socket path: a private directory, one daemon per socket, stale sockets
//! replaced, and the listener bound with mode 0600.
//!
//! With local roles in force and a `socket_group` configured, the directory is given to that
//! group with mode 0750 and the socket with mode 0660, so that its members can connect (and
//! then get the role the peer check gives them). The directory must still be ours and not
//! writable by group or others.
//!
//! The order matters. The directory is checked first (a socket in a directory that others can
//! write to can be swapped under us). Then the lock file next to the socket is taken: whoever
//! holds it owns the path, so a socket file found afterwards can only be a leftover of a daemon
//! that died, and is removed. The lock file itself is never deleted, because deleting a lock
//! that another process may just have opened would let two daemons run at once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use tracing::info;

use crate::roles::SocketGroup;

/// The socket path could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket path has no parent directory.
    #[error("socket path {} has no parent directory", .0.display())]
    NoParent(PathBuf),
    /// `sun_path` cannot hold the path.
    #[error("socket path {} is {len} bytes long; the limit is {max}: choose a shorter --socket", path.display())]
    TooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The platform's limit.
        max: usize,
    },
    /// Creating or inspecting the directory failed.
    #[error("cannot prepare socket directory {}: {source}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory is a symlink, or not a directory at all.
    #[error("socket directory {} is {what}; refusing to use it", dir.display())]
    NotADirectory {
        /// The directory.
        dir: PathBuf,
        /// `a symlink` or `not a directory`.
        what: &'static str,
    },
    /// The directory belongs to someone else.
    #[error(
        "socket directory {} is owned by uid {owner}, not by this user (uid {uid}); refusing to use it",
        dir.display()
    )]
    ForeignOwner {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        uid: u32,
    },
    /// Group or others may write to the directory.
    #[error(
        "socket directory {} has mode {mode:04o}: it must not be writable by group or others; \
         fix it with `chmod 700 {}`",
        dir.display(),
        dir.display()
    )]
    InsecureMode {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another daemon holds the lock.
    #[error(
        "another atlasbridged is already running on {}{}; stop it with `atlasbridge daemon stop`",
        socket.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        /// The socket.
        socket: PathBuf,
        /// The other daemon's pid, when its lock file says.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or written.
    #[error("cannot use lock file {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something that is not a socket sits at the socket path.
    #[error("{} exists and is not a socket; refusing to remove it", .0.display())]
    NotASocket(PathBuf),
    /// A stale socket could not be removed.
    #[error("cannot remove stale socket {}: {source}", path.display())]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory or the socket could not be given to `socket_group`.
    #[error(
        "cannot give {} to group {group} (gid {gid}) for [roles] socket_group: {source}; \
         the daemon's user must be root or a member of that group",
        path.display()
    )]
    Share {
        /// The directory or the socket.
        path: PathBuf,
        /// The group as configured.
        group: String,
        /// Its gid.
        gid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// Binding failed.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Holding this keeps other daemons off the socket path (the lock is released with the file).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file for a socket path: `<socket>.lock`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Checks the socket path's length against `sun_path`.
pub fn check_length(socket: &Path) -> Result<(), SocketError> {
    // sun_path is 108 bytes on Linux and 104 on the BSDs and macOS, NUL included.
    let max = if cfg!(target_os = "linux") { 107 } else { 103 };
    let len = socket.as_os_str().len();
    if cfg!(unix) && len > max {
        return Err(SocketError::TooLong {
            path: socket.to_path_buf(),
            len,
            max,
        });
    }
    Ok(())
}

/// Creates `dir` (mode 0700) if missing, and checks that it is a real directory, ours, and not
/// writable by group or others.
#[cfg(unix)]
pub fn ensure_private_dir(dir: &Path) -> Result<(), SocketError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};

    let io_error = |source| SocketError::Directory {
        dir: dir.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_error)?;
        }
        Err(e) => return Err(io_error(e)),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_error)?;
    if meta.file_type().is_symlink() {
        return Err(SocketError::NotADirectory {
            dir: dir.to_path_buf(),
            what: "a symlink",
        });
    }
    if !meta.is_dir() {
        return Err(SocketError::NotADirectory {
            dir: dir.to_path_buf(),
            what: "not a directory",
        });
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(SocketError::ForeignOwner {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SocketError::InsecureMode {
            dir: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Named pipes have no directory.
#[cfg(not(unix))]
pub fn ensure_private_dir(_dir: &Path) -> Result<(), SocketError> {
    Ok(())
}

/// Takes the per-socket lock, writing our pid into the lock file.
pub fn acquire_instance_lock(socket: &Path) -> Result<InstanceLock, SocketError> {
    let path = lock_path(socket);
    let lock_error = |source| SocketError::Lock {
        path: path.clone(),
        source,
    };
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(SocketError::AlreadyRunning {
                socket: socket.to_path_buf(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(e)),
    }
    file.set_len(0).map_err(lock_error)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
    Ok(InstanceLock { _file: file, path })
}

/// Removes a socket left behind by a daemon that died. Call only while holding the lock.
/// Returns whether there was one.
#[cfg(unix)]
pub fn remove_stale_socket(socket: &Path) -> Result<bool, SocketError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SocketError::RemoveStale {
            path: socket.to_path_buf(),
            source,
        }),
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(SocketError::NotASocket(socket.to_path_buf()))
        }
        Ok(_) => std::fs::remove_file(socket)
            .map(|()| true)
            .map_err(|source| SocketError::RemoveStale {
                path: socket.to_path_buf(),
                source,
            }),
    }
}

/// Named pipes vanish with their server.
#[cfg(not(unix))]
pub fn remove_stale_socket(_socket: &Path) -> Result<bool, SocketError> {
    Ok(false)
}

/// Binds the listener; on Unix the socket file ends up mode 0600.
pub fn bind(socket: &Path) -> Result<Listener, SocketError> {
    let bind_error = |source| SocketError::Bind {
        path: socket.to_path_buf(),
        source,
    };
    let name = socket.to_fs_name::<GenericFilePath>().map_err(bind_error)?;
    let options = ListenerOptions::new().name(name).reclaim_name(true);
    // Linux applies the mode before bind(), so the socket is never reachable with a wider one;
    // elsewhere the private directory covers the moment before the chmod below.
    #[cfg(target_os = "linux")]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    let listener = options.create_tokio().map_err(bind_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
    }
    Ok(listener)
}

/// Gives `path` to `group` and sets its mode: the group first, so that the wider mode never
/// applies to another group.
#[cfg(unix)]
fn share(path: &Path, group: &SocketGroup, mode: u32) -> Result<(), SocketError> {
    use std::os::unix::fs::PermissionsExt;
    let share_error = |source| SocketError::Share {
        path: path.to_path_buf(),
        group: group.name.clone(),
        gid: group.gid,
        source,
    };
    std::os::unix::fs::chown(path, None, Some(group.gid)).map_err(share_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(share_error)
}

/// Named pipes have no group.
#[cfg(not(unix))]
fn share(_path: &Path, _group: &SocketGroup, _mode: u32) -> Result<(), SocketError> {
    Ok(())
}

/// Gives the (checked) socket directory to `group`, mode 0750, and checks it again.
pub fn share_dir(dir: &Path, group: &SocketGroup) -> Result<(), SocketError> {
    share(dir, group, 0o750)?;
    ensure_private_dir(dir)
}

/// Gives the bound socket to `group`, mode 0660.
pub fn share_socket(socket: &Path, group: &SocketGroup) -> Result<(), SocketError> {
    share(socket, group, 0o660)
}

/// Everything above, in order: the claimed path and its listener. With `group` (the
/// `socket_group` of the roles in force), the directory and the socket are shared with it.
pub fn claim(
    socket: &Path,
    group: Option<&SocketGroup>,
) -> Result<(InstanceLock, Listener, bool), SocketError> {
    check_length(socket)?;
    let dir = socket
        .parent()
        .ok_or_else(|| SocketError::NoParent(socket.to_path_buf()))?;
    ensure_private_dir(dir)?;
    if let Some(group) = group {
        share_dir(dir, group)?;
    }
    let lock = acquire_instance_lock(socket)?;
    let replaced_stale = remove_stale_socket(socket)?;
    let listener = bind(socket)?;
    if let Some(group) = group {
        share_socket(socket, group)?;
        info!(
            socket = %socket.display(),
            group = %group.name,
            gid = group.gid,
            "socket shared with its group (directory 0750, socket 0660)"
        );
    }
    Ok((lock, listener, replaced_stale))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn creates_a_missing_directory_with_mode_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn refuses_a_group_or_world_writable_directory() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o770, 0o702] {
            set_mode(tmp.path(), mode);
            let err = ensure_private_dir(tmp.path()).unwrap_err();
            assert!(
                matches!(err, SocketError::InsecureMode { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 700"), "{err}");
        }
        set_mode(tmp.path(), 0o755);
        ensure_private_dir(tmp.path()).unwrap();
    }

    #[test]
    fn refuses_a_symlink_and_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        set_mode(&real, 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link),
            Err(SocketError::NotADirectory {
                what: "a symlink",
                ..
            })
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            ensure_private_dir(&file),
            Err(SocketError::NotADirectory {
                what: "not a directory",
                ..
            })
        ));
    }

    #[test]
    fn refuses_a_directory_owned_by_someone_else() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: changing a directory's owner needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("foreign");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o700);
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        assert!(matches!(
            ensure_private_dir(&dir),
            Err(SocketError::ForeignOwner { owner: 65534, .. })
        ));
    }

    #[test]
    fn one_lock_holder_per_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("d.sock");
        let first = acquire_instance_lock(&socket).unwrap();
        let err = acquire_instance_lock(&socket).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, SocketError::AlreadyRunning { pid: Some(p), .. } if p == pid),
            "{err}"
        );
        drop(first);
        acquire_instance_lock(&socket).unwrap();
    }

    #[test]
    fn a_stale_socket_is_removed_but_a_regular_file_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("d.sock");
        assert!(!remove_stale_socket(&socket).unwrap());
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(remove_stale_socket(&socket).unwrap());
        assert!(!socket.exists());
        std::fs::write(&socket, b"precious").unwrap();
        assert!(matches!(
            remove_stale_socket(&socket),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
    }

    #[test]
    fn overly_long_paths_are_refused_before_anything_is_created() {
        let long = PathBuf::from(format!("/tmp/{}/d.sock", "x".repeat(120)));
        assert!(matches!(
            claim(&long, None),
            Err(SocketError::TooLong { .. })
        ));
        assert!(!long.parent().unwrap().exists());
    }

    #[tokio::test]
    async fn a_claimed_socket_is_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/d.sock");
        let (_lock, _listener, stale) = claim(&socket, None).unwrap();
        assert!(!stale);
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[tokio::test]
    async fn a_shared_socket_is_mode_0660_in_a_0750_directory_of_its_group() {
        use std::os::unix::fs::MetadataExt;
        // A group this process may give files to without root: its own effective gid.
        let gid = rustix::process::getegid().as_raw();
        let group = SocketGroup {
            gid,
            name: gid.to_string(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/d.sock");
        let (_lock, _listener, _) = claim(&socket, Some(&group)).unwrap();
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid);
        let dir = std::fs::metadata(socket.parent().unwrap()).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o750);
        assert_eq!(dir.gid(), gid);
        assert_eq!(dir.uid(), rustix::process::geteuid().as_raw());
        // The lock file stays private.
        let lock = std::fs::metadata(lock_path(&socket)).unwrap();
        assert_eq!(lock.permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_shared_directory_is_still_checked() {
        let gid = rustix::process::getegid().as_raw();
        let group = SocketGroup {
            gid,
            name: "agents".to_owned(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o770);
        assert!(matches!(
            claim(&dir.join("d.sock"), Some(&group)),
            Err(SocketError::InsecureMode { mode: 0o770, .. })
        ));
    }

    #[test]
    fn a_group_we_may_not_use_is_a_clear_error() {
        if rustix::process::geteuid().is_root() {
            eprintln!("skipped: root may give files to any group");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let group = SocketGroup {
            gid: 0,
            name: "root".to_owned(),
        };
        let err = share_dir(tmp.path(), &group).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be root or a member of that group"),
            "{err}"
        );
    }
}
