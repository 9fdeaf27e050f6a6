//! The service manager's readiness protocol (systemd's `sd_notify`): `READY=1` once the socket
//! accepts and the stores are open, `RELOADING=1` around a SIGHUP reload, `STOPPING=1` when the
//! drain begins, and `WATCHDOG=1` pings when the unit asks for them.
//!
//! Written against the protocol rather than linking libsystemd: one datagram per message to the
//! `AF_UNIX` socket named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without `NOTIFY_SOCKET` (started by hand, by launchd, by a test) every call does nothing.

use std::time::Duration;

use tracing::{debug, warn};

/// The environment variables of the protocol.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// A connection to the service manager, when there is one.
#[derive(Debug)]
pub struct ServiceNotifier {
    #[cfg(target_os = "linux")]
    target: Option<(
        std::os::unix::net::UnixDatagram,
        std::os::unix::net::SocketAddr,
    )>,
}

impl ServiceNotifier {
    /// Reads `NOTIFY_SOCKET`. A value that cannot be used is logged and ignored: the daemon runs
    /// the same, only without telling the manager.
    pub fn from_environment() -> Self {
        #[cfg(target_os = "linux")]
        {
            let target = std::env::var_os(NOTIFY_SOCKET_ENV).and_then(|value| {
                match linux::connect(&value) {
                    Ok(target) => Some(target),
                    Err(e) => {
                        warn!(socket = ?value, error = %e, "cannot use NOTIFY_SOCKET; not notifying the service manager");
                        None
                    }
                }
            });
            Self { target }
        }
        #[cfg(not(target_os = "linux"))]
        {
            Self {}
        }
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.target.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// The socket accepts requests.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS={}",
            std::process::id(),
            one_line(status)
        ));
    }

    /// A SIGHUP reload began; [`ServiceNotifier::ready`] ends it.
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    /// The drain began; the manager waits for the exit.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// The daemon is alive (sent on the interval of [`watchdog_interval`]).
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        #[cfg(target_os = "linux")]
        if let Some((socket, address)) = &self.target {
            match socket.send_to_addr(message.as_bytes(), address) {
                Ok(_) => debug!(message, "notified the service manager"),
                Err(e) => warn!(error = %e, "cannot notify the service manager"),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = message;
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (as `sd_watchdog_enabled`
/// recommends), when that is set and `WATCHDOG_PID`, if set, names this process.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_of(
        std::env::var(WATCHDOG_USEC_ENV).ok().as_deref(),
        std::env::var(WATCHDOG_PID_ENV).ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_of(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// `STATUS=` is one line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsStr;
    use std::io;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    /// An unbound datagram socket and the manager's address (`@name` is abstract).
    pub(super) fn connect(value: &OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
        let bytes = value.as_bytes();
        let address = match bytes.split_first() {
            None => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty"));
            }
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(std::path::Path::new(value))?,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract name (@…)",
                ));
            }
        };
        Ok((UnixDatagram::unbound()?, address))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::ffi::OsStr;
    use std::os::linux::net::SocketAddrExt;

    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let (socket, address) = linux::connect(path.as_os_str()).unwrap();
        let notifier = ServiceNotifier {
            target: Some((socket, address)),
        };
        assert!(notifier.is_active());
        notifier.ready("listening on\n/run/x.sock");
        notifier.stopping("stop requested");
        let mut buffer = [0u8; 256];
        let n = manager.recv(&mut buffer).unwrap();
        let ready = std::str::from_utf8(&buffer[..n]).unwrap();
        assert!(ready.starts_with("READY=1\nMAINPID="), "{ready}");
        assert!(
            ready.ends_with("STATUS=listening on /run/x.sock"),
            "{ready}"
        );
        let n = manager.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1\nSTATUS=stop requested");
    }

    #[test]
    fn abstract_names_and_bad_values() {
        let name = format!("atlasbridge-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap();
        let (socket, address) = linux::connect(OsStr::new(&format!("@{name}"))).unwrap();
        ServiceNotifier {
            target: Some((socket, address)),
        }
        .watchdog();
        let mut buffer = [0u8; 64];
        let n = manager.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
        assert!(linux::connect(OsStr::new("")).is_err());
        assert!(linux::connect(OsStr::new("relative/path")).is_err());
    }

    #[test]
    fn the_watchdog_interval_is_half_of_the_managers() {
        assert_eq!(
            watchdog_interval_of(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_of(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        // Meant for another process (a forking parent), disabled, or nonsense.
        assert_eq!(watchdog_interval_of(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_of(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_of(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval_of(None, None, 7), None);
    }
}
