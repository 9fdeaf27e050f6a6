//! The service definitions `service install` writes: a systemd user unit (Linux) and a launchd
//! agent (macOS). Pure text from paths, so that tests can check them and the files checked in
//! under `systemd/` and `launchd/` are the same text for the documented default paths.

/// The systemd unit's file name.
pub(crate) const SYSTEMD_UNIT_NAME: &str = "atlasbridged.service";
/// The launchd job's label (and file stem).
pub(crate) const LAUNCHD_LABEL: &str = "com.atlasbridge.atlasbridged";

/// The sandbox both units share; each adds what fits its mode (a user unit cannot drop
/// capabilities or hide other processes, a system unit need not map users).
const SANDBOX: &str = "\
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# AF_UNIX for the socket; AF_INET/AF_INET6 only for the cloud uplink, which is off by default.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
";

/// A systemd user unit running `daemon` with `data_dir` as its only writable place (besides its
/// runtime directory, where the socket lives). Both may use specifiers such as `%h`.
pub(crate) fn systemd_user_unit(daemon: &str, data_dir: &str) -> String {
    format!(
        "\
# AtlasBridge governance daemon, as a systemd user unit.
# `atlasbridge service install` writes this file with the paths of your installation; to install
# it by hand, copy it to ~/.config/systemd/user/ and run
# `systemctl --user daemon-reload && systemctl --user enable --now atlasbridged`.
[Unit]
Description=AtlasBridge governance daemon
Documentation=https://github.com/atlasbridge/atlasbridge/blob/main/docs/operations.md

[Service]
# READY=1 once the socket accepts, STOPPING=1 when draining, WATCHDOG=1 every WatchdogSec/2.
Type=notify
NotifyAccess=main
# The home directory is read-only below: the data directory must exist before the sandbox is set up.
ExecStartPre=+/bin/mkdir -p -m 0700 {data_dir}
ExecStart={daemon}
# SIGHUP reloads the config and the policy, keeping the last good ones.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
# 78 = unusable configuration: restarting would only fail again.
RestartPreventExitStatus=78
TimeoutStopSec=30s
WatchdogSec=30s
# The socket's directory, $XDG_RUNTIME_DIR/atlasbridge, private to the user.
RuntimeDirectory=atlasbridge
RuntimeDirectoryMode=0700
UMask=0077

# Sandbox. In a user unit these need a user namespace, hence PrivateUsers (the user's own uid
# stays mapped, so the daemon still recognises its owner on the socket).
PrivateUsers=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={data_dir}
{SANDBOX}
[Install]
WantedBy=default.target
"
    )
}

/// Where the system-wide service keeps things (fixed: the unit's directories create them).
pub(crate) const SYSTEM_SOCKET: &str = "/run/atlasbridge/atlasbridged.sock";
/// The system service's data directory (its `StateDirectory`).
pub(crate) const SYSTEM_DATA_DIR: &str = "/var/lib/atlasbridge";
/// The system service's config file (in its `ConfigurationDirectory`).
pub(crate) const SYSTEM_CONFIG: &str = "/etc/atlasbridge/config.toml";
/// The account the system service runs as.
pub(crate) const SYSTEM_USER: &str = "atlasbridge";

/// A systemd system unit running `daemon` as its own user, the socket reachable by members of
/// `socket_group` only, the data directory and keys reachable by nobody else.
pub(crate) fn systemd_system_unit(daemon: &str, socket_group: &str) -> String {
    format!(
        "\
# AtlasBridge governance daemon, system-wide: its own user owns the data directory and the
# keys; agents reach it only through the socket, as members of {socket_group}, with the
# roles of /etc/atlasbridge/config.toml. Written by `atlasbridge service install --system`.
[Unit]
Description=AtlasBridge governance daemon (system)
Documentation=https://github.com/atlasbridge/atlasbridge/blob/main/docs/operations.md

[Service]
Type=notify
NotifyAccess=main
User={SYSTEM_USER}
Group={SYSTEM_USER}
# The socket's group: the daemon hands the socket to it (0660, directory 0750).
SupplementaryGroups={socket_group}
ExecStart={daemon}
ExecReload=/bin/kill -HUP $MAINPID
Environment=ATLASBRIDGE_SOCKET={SYSTEM_SOCKET}
Environment=ATLASBRIDGE_DATA_DIR={SYSTEM_DATA_DIR}
Environment=ATLASBRIDGE_CONFIG={SYSTEM_CONFIG}
Restart=on-failure
RestartSec=2s
RestartPreventExitStatus=78
TimeoutStopSec=30s
WatchdogSec=30s
RuntimeDirectory=atlasbridge
RuntimeDirectoryMode=0750
StateDirectory=atlasbridge
StateDirectoryMode=0700
ConfigurationDirectory=atlasbridge
ConfigurationDirectoryMode=0755
UMask=0077

NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
ProtectProc=invisible
ProcSubset=pid
RemoveIPC=yes
{SANDBOX}
[Install]
WantedBy=multi-user.target
"
    )
}

/// The system service's config: roles on, the socket handed to `socket_group`, and the role of
/// each agent account and group.
pub(crate) fn system_config(
    socket_group: &str,
    users: &[(String, String)],
    groups: &[(String, String)],
) -> String {
    let mut text = format!(
        "\
# atlasbridged, system-wide (written by `atlasbridge service install --system`).
# Every key: https://github.com/atlasbridge/atlasbridge/blob/main/docs/configuration.md

[features]
# Roles for the agents' accounts: without it only the daemon's own user may connect.
rbac = true

[roles]
# Members of this group may open the socket; what they may do is their role below.
socket_group = {}
",
        toml_string(socket_group)
    );
    text.push_str("\n[roles.users]\n");
    for (user, role) in users {
        text.push_str(&format!("{} = {}\n", toml_string(user), toml_string(role)));
    }
    text.push_str("\n[roles.groups]\n");
    for (group, role) in groups {
        text.push_str(&format!("{} = {}\n", toml_string(group), toml_string(role)));
    }
    text
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A launchd agent running `daemon` at login, restarted when it fails, logging to `log_file`.
pub(crate) fn launchd_agent(daemon: &str, log_file: &str) -> String {
    let daemon = xml_escape(daemon);
    let log_file = xml_escape(log_file);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!--
  AtlasBridge governance daemon, as a launchd agent.
  `atlasbridge service install` writes this file with the paths of your installation to
  ~/Library/LaunchAgents/ and runs
  `launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist`.
-->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{daemon}</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <!-- Restart after a failure; a clean stop (atlasbridge daemon stop) stays stopped. -->
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <!-- At most one restart every 10 seconds: an unusable config exits at once. -->
  <key>ThrottleInterval</key>
  <integer>10</integer>
  <key>ExitTimeOut</key>
  <integer>30</integer>
  <key>ProcessType</key>
  <string>Background</string>
  <key>StandardOutPath</key>
  <string>{log_file}</string>
  <key>StandardErrorPath</key>
  <string>{log_file}</string>
</dict>
</plist>
"#
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// systemd unit values are one line; a path with a newline cannot be expressed, and spaces need
/// quoting in `ExecStart=`. Returns the value to write, or why it cannot be.
pub(crate) fn systemd_path(path: &std::path::Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))?;
    if text.contains(['\n', '\r']) {
        return Err(format!("{text:?} contains a line break"));
    }
    // `%` starts a specifier and `\` an escape: double them; quote when there is whitespace.
    let escaped = text.replace('\\', "\\\\").replace('%', "%%");
    Ok(if escaped.contains([' ', '\t', '"', '\'']) {
        format!("\"{}\"", escaped.replace('"', "\\\""))
    } else {
        escaped
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;

    /// The files checked in under `systemd/` and `launchd/` are what `service install` writes
    /// for the documented default paths (`ATLASBRIDGE_REGENERATE_UNITS=1` rewrites them).
    #[test]
    fn the_checked_in_units_are_the_generated_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let expected = [
            (
                root.join("systemd").join(SYSTEMD_UNIT_NAME),
                systemd_user_unit("%h/.cargo/bin/atlasbridged", "%h/.local/share/atlasbridge"),
            ),
            (
                root.join("launchd").join(format!("{LAUNCHD_LABEL}.plist")),
                launchd_agent(
                    "/Users/USER/.cargo/bin/atlasbridged",
                    "/Users/USER/Library/Logs/atlasbridge/atlasbridged.log",
                ),
            ),
        ];
        let regenerate = std::env::var_os("ATLASBRIDGE_REGENERATE_UNITS").is_some();
        for (path, text) in expected {
            if regenerate {
                std::fs::write(&path, &text).unwrap();
            }
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                text,
                "{} differs from the generated unit: run \
                 `ATLASBRIDGE_REGENERATE_UNITS=1 cargo test -p atlasbridge units` to update it",
                path.display()
            );
        }
    }

    /// `plutil -lint` where it exists (macOS); else Python's plistlib, which parses the same XML
    /// property list format.
    #[test]
    fn the_launchd_agent_is_a_valid_property_list() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.plist");
        std::fs::write(
            &file,
            launchd_agent(
                "/Users/a&b/bin/atlasbridged",
                "/Users/a&b/Library/Logs/x.log",
            ),
        )
        .unwrap();
        let checked = if let Ok(out) = std::process::Command::new("plutil")
            .arg("-lint")
            .arg(&file)
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            true
        } else if let Ok(out) = std::process::Command::new("python3")
            .args([
                "-c",
                "import plistlib, sys, json; d = plistlib.load(open(sys.argv[1], 'rb')); \
                 print(json.dumps(d))",
            ])
            .arg(&file)
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(parsed["Label"], LAUNCHD_LABEL);
            assert_eq!(parsed["ProgramArguments"][0], "/Users/a&b/bin/atlasbridged");
            assert_eq!(parsed["KeepAlive"]["SuccessfulExit"], false);
            assert_eq!(parsed["RunAtLoad"], true);
            true
        } else {
            false
        };
        if !checked {
            eprintln!("skipped: neither plutil nor python3 is installed");
        }
    }

    #[test]
    fn paths_are_escaped_for_each_format() {
        assert_eq!(
            systemd_path(Path::new("/opt/ab/atlasbridged")).unwrap(),
            "/opt/ab/atlasbridged"
        );
        assert_eq!(
            systemd_path(Path::new("/home/a b/100%/atlasbridged")).unwrap(),
            "\"/home/a b/100%%/atlasbridged\""
        );
        assert!(systemd_path(Path::new("/tmp/a\nb")).is_err());
        let plist = launchd_agent("/Users/a&b/<bin>", "/tmp/log");
        assert!(plist.contains("<string>/Users/a&amp;b/&lt;bin&gt;</string>"));
    }
}
