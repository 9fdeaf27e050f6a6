//! The README's one-minute path, typed into a terminal as a person would: the lines between
//! the `one-minute-path` markers of README.md run one by one in a tmux session (in a plain
//! shell where tmux is not installed), and the screen must show each step working.
//!
//! The `cargo build` and `export PATH` lines are left out: the binaries under test are already
//! built, and the terminal's PATH finds them as `atlasbridge` and `atlasbridged`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{CLI, DAEMON, Sandbox};

/// The shell lines of the README's one-minute path, comments and build steps removed.
fn one_minute_path() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let start = text
        .find("<!-- one-minute-path")
        .expect("README.md has a one-minute-path block");
    let end = text[start..]
        .find("<!-- /one-minute-path -->")
        .expect("the one-minute-path block ends")
        + start;
    let block = &text[start..end];
    let lines: Vec<String> = block
        .lines()
        .skip_while(|line| !line.starts_with("```sh"))
        .skip(1)
        .take_while(|line| !line.starts_with("```"))
        .filter(|line| !line.starts_with("cargo build") && !line.starts_with("export PATH="))
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 5, "the block lost its lines: {lines:?}");
    lines
}

/// A directory with `atlasbridge` and `atlasbridged`, the names the README uses.
fn binaries(sandbox: &Sandbox) -> PathBuf {
    let bin = sandbox.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(CLI, bin.join("atlasbridge")).unwrap();
    std::os::unix::fs::symlink(DAEMON, bin.join("atlasbridged")).unwrap();
    bin
}

/// The environment of the person's terminal: the sandbox's home and XDG folders, no
/// `--socket`, the default paths.
fn terminal_env(sandbox: &Sandbox, bin: &Path) -> Vec<(String, String)> {
    let runtime = sandbox.path("xdg-run");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut env = sandbox.env();
    for (key, value) in &mut env {
        if key == "PATH" {
            *value = format!("{}:{value}", bin.display());
        }
    }
    env.push(("PS1".to_owned(), "$ ".to_owned()));
    env.push(("TERM".to_owned(), "xterm".to_owned()));
    env
}

struct Tmux {
    socket: String,
    tmpdir: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .env("TMUX_TMPDIR", &self.tmpdir)
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "readme"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` and Enter, then a marker that prints the line's status without changing
    /// `$?`, and waits for the marker.
    fn type_line(&self, index: usize, line: &str) {
        let marker = format!("__step_{index}_done__");
        let typed = format!("{line}\n__s=$?; echo {marker} $__s; (exit $__s)\n");
        for part in typed.split_inclusive('\n') {
            let text = part.trim_end_matches('\n');
            assert!(
                self.run(&["send-keys", "-t", "readme", "-l", text])
                    .status
                    .success()
            );
            assert!(
                self.run(&["send-keys", "-t", "readme", "Enter"])
                    .status
                    .success()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .screen()
            .lines()
            .any(|l| l.starts_with(&format!("{marker} ")))
        {
            assert!(
                Instant::now() < deadline,
                "`{line}` did not finish; the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn in_tmux(sandbox: &Sandbox, env: &[(String, String)], lines: &[String]) -> String {
    let tmux = Tmux {
        socket: format!("atlasbridge-readme-{}", std::process::id()),
        tmpdir: sandbox.path("tmux"),
    };
    std::fs::create_dir_all(&tmux.tmpdir).unwrap();
    let mut shell = vec!["env".to_owned(), "-i".to_owned()];
    shell.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    shell.extend(["bash", "--norc", "--noprofile"].map(str::to_owned));
    let mut args = vec!["new-session", "-d", "-s", "readme", "-x", "200", "-y", "50"];
    args.extend(shell.iter().map(String::as_str));
    let started = tmux.run(&args);
    assert!(
        started.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    for (index, line) in lines.iter().enumerate() {
        tmux.type_line(index, line);
    }
    tmux.screen()
}

/// Without tmux: the same lines, each followed by its marker, in one bash.
fn in_shell(env: &[(String, String)], lines: &[String]) -> String {
    let mut script = String::new();
    for (index, line) in lines.iter().enumerate() {
        script.push_str(&format!(
            "echo \"$ {}\"\n{line}\n__s=$?; echo __step_{index}_done__ $__s; (exit $__s)\n",
            line.replace('"', "\\\"").replace('$', "\\$")
        ));
    }
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The status printed by the marker of step `index`.
fn status_of(screen: &str, index: usize) -> i32 {
    let marker = format!("__step_{index}_done__ ");
    screen
        .lines()
        .find_map(|l| l.strip_prefix(&marker))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no status for step {index}:\n{screen}"))
}

#[test]
fn the_readme_one_minute_path_works_in_a_terminal() {
    let sandbox = Sandbox::new();
    let bin = binaries(&sandbox);
    let env = terminal_env(&sandbox, &bin);
    let lines = one_minute_path();
    let screen = if Command::new("tmux").arg("-V").output().is_ok() {
        in_tmux(&sandbox, &env, &lines)
    } else {
        eprintln!("tmux is not installed: running the README's lines in a plain bash instead");
        in_shell(&env, &lines)
    };
    let step = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("the README lost its `{prefix}` step"))
    };
    let start = step("daemon start");
    let decide = step("atlasbridge decide");
    let tail = step("trace tail");
    let verify = step("integrity-check");
    let stop = step("daemon stop");
    for index in [start, tail, verify, stop] {
        assert_eq!(
            status_of(&screen, index),
            0,
            "`{}` failed:\n{screen}",
            lines[index]
        );
    }
    // `decide` answers through its exit status: 10, a person decides.
    assert_eq!(status_of(&screen, decide), 10, "{screen}");
    assert!(screen.lines().any(|l| l.trim() == "10"), "{screen}");
    assert!(screen.contains("atlasbridged started (pid"), "{screen}");
    assert!(
        screen.contains("require_human (rule default-require-human"),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.contains("require_human") && l.contains("demo/")),
        "the decision is not in `trace tail`:\n{screen}"
    );
    assert!(screen.contains("trace is valid: 1 entries"), "{screen}");
    assert!(screen.contains("atlasbridged stopped (pid"), "{screen}");
}
