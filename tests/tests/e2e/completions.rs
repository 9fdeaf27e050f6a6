//! `atlasbridge completions SHELL`: the real binary prints a script the shell accepts.

use std::process::Command;

use crate::support::{Options, Sandbox, TestDaemon};

#[test]
fn completions_print_a_script_bash_accepts_and_refuse_an_unknown_shell() {
    let cli = TestDaemon::unstarted(Sandbox::new(), Options::default());
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = cli.cli(&["completions", shell]);
        out.assert_code(0);
        for word in ["doctor", "integrity-check", "completions"] {
            assert!(out.stdout.contains(word), "{shell}: no {word:?}");
        }
    }
    let script = cli.sandbox.write(
        "atlasbridge.bash",
        &cli.cli(&["completions", "bash"]).stdout,
    );
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let out = cli.cli(&["completions", "tcsh"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("possible values: bash"),
        "{}",
        out.stderr
    );
}
