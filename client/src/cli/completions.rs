//! `completions SHELL`: the completion script for `atlasbridge`, generated from the same clap
//! definitions the command line parses with, so it offers exactly the commands and flags there
//! are.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Args, CliError};

/// The shell to complete for.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

pub(super) fn run(args: &CompletionsArgs) -> Result<ExitCode, CliError> {
    std::io::stdout()
        .write_all(&script(args.shell))
        .map_err(|e| CliError::Failed(format!("cannot write the completion script: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script for `shell`.
fn script(shell: Shell) -> Vec<u8> {
    let mut command = Args::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "atlasbridge", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    const SHELLS: [Shell; 5] = [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ];

    fn text(shell: Shell) -> String {
        String::from_utf8(script(shell)).unwrap()
    }

    /// The shell's executable on PATH, if it is installed.
    fn installed(name: &str) -> Option<PathBuf> {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }

    /// Runs `shell args… <script file>` and fails the test with its output unless it exits 0.
    fn syntax_check(shell: Shell, program: &str, args: &[&str]) {
        let Some(program) = installed(program) else {
            eprintln!("skipped: {shell} syntax check ({program} is not installed)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("atlasbridge.completion");
        std::fs::write(&file, script(shell)).unwrap();
        let out = Command::new(&program)
            .args(args)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} rejects the {shell} script: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn every_shell_gets_a_script_that_knows_the_commands() {
        for shell in SHELLS {
            let script = text(shell);
            for word in [
                "atlasbridge",
                "doctor",
                "completions",
                "integrity-check",
                "socket",
            ] {
                assert!(script.contains(word), "{shell}: no {word:?} in the script");
            }
        }
    }

    #[test]
    fn bash_accepts_the_bash_script() {
        syntax_check(Shell::Bash, "bash", &["-n"]);
    }

    #[test]
    fn zsh_accepts_the_zsh_script() {
        syntax_check(Shell::Zsh, "zsh", &["-n"]);
    }

    #[test]
    fn fish_accepts_the_fish_script() {
        syntax_check(Shell::Fish, "fish", &["--no-execute"]);
    }
}
