//! `cloud setup`: asks for (or takes as flags) what the uplink needs, validates each value, tests
//! the connection through the running daemon, and writes the `[cloud]` section of the config
//! file (mode 0600). The API key is never echoed or printed: typed at a prompt with echo off,
//! or read from standard input or a file, and kept in a 0600 file the config points at.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atlasbridge_protocol::cloud::endpoint::{parse_api_base, parse_endpoint};
use atlasbridge_protocol::methods::{self as m, CloudTestParams, CloudTestResult};
use atlasbridge_protocol::paths::{self, ProcessEnvironment};
use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use serde_json::json;

use super::{CliError, Context};

/// The file, next to the config, that holds a key given at a prompt or on standard input.
const KEY_FILE_NAME: &str = "cloud-api-key";

/// `cloud setup`'s options; whatever is missing is asked for on a terminal.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// The cloud's WebSocket endpoint: `wss://host/path` (`ws://` only for a loopback host).
    #[arg(long)]
    endpoint: Option<String>,
    /// The REST base URL [default: the endpoint's host and port over https].
    #[arg(long)]
    api_base: Option<String>,
    /// The organisation.
    #[arg(long)]
    org_id: Option<String>,
    /// A file holding the API key (it must not be readable by others); the config points at it.
    #[arg(long, conflicts_with = "api_key_stdin")]
    api_key_file: Option<PathBuf>,
    /// Read the API key from standard input (one line); it is kept in a 0600 file next to the
    /// config.
    #[arg(long)]
    api_key_stdin: bool,
    /// The key the cloud signs its messages and policies with (`ed25519:<base64url>`).
    #[arg(long)]
    server_public_key: Option<String>,
    /// Extra TLS roots for the cloud (PEM).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// What to do with policies the cloud offers: manual (default) or auto.
    #[arg(long, value_parser = ["manual", "auto"])]
    policy_sync: Option<String>,
    /// Let the cloud's kill switch pause and resume the autopilot.
    #[arg(long)]
    honor_kill_switch: bool,
    /// The config file to write [default: the daemon's, or ATLASBRIDGE_CONFIG].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not test the connection (the test goes through the running daemon).
    #[arg(long)]
    no_test: bool,
}

/// The values to write.
#[derive(Debug)]
struct Answers {
    endpoint: String,
    api_base: Option<String>,
    org_id: String,
    api_key: String,
    /// Where the key is (or is to be) kept, and whether this command writes it.
    key_file: PathBuf,
    write_key: bool,
    server_public_key: Option<String>,
    ca_file: Option<PathBuf>,
    policy_sync: String,
    honor_kill_switch: bool,
}

pub(super) fn run(ctx: &Context, args: &SetupArgs) -> Result<ExitCode, CliError> {
    let config = match &args.config {
        Some(path) => std::path::absolute(path).unwrap_or_else(|_| path.clone()),
        None => {
            paths::config_file(None, &ProcessEnvironment)
                .map_err(|e| CliError::Failed(e.to_string()))?
                .path
        }
    };
    let interactive = std::io::stdin().is_terminal() && !args.api_key_stdin;
    let answers = gather(args, &config, interactive)?;

    let test = if args.no_test {
        None
    } else {
        Some(test(ctx, &answers))
    };
    match &test {
        Some(Ok(result)) if !result.ok => {
            eprintln!(
                "the connection test failed at the {} stage: {}",
                result.stage, result.message
            );
            if !(interactive && confirm("write the configuration anyway? [y/N] ")?) {
                return Err(CliError::Failed(
                    "nothing written; fix the values or pass --no-test".into(),
                ));
            }
        }
        Some(Err(e)) => eprintln!("could not test the connection: {e}"),
        _ => {}
    }

    if answers.write_key {
        write_private(
            &answers.key_file,
            format!("{}\n", answers.api_key).as_bytes(),
        )?;
    }
    let existing = match std::fs::read_to_string(&config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CliError::Unreadable(format!(
                "cannot read {}: {e}",
                config.display()
            )));
        }
    };
    let text = with_cloud_section(&existing, &cloud_section(&answers));
    write_private(&config, text.as_bytes())?;

    let tested = match &test {
        Some(Ok(result)) if result.ok => "tested: ok",
        Some(Ok(_)) => "tested: FAILED",
        Some(Err(_)) => "not tested (the daemon could not be asked)",
        None => "not tested (--no-test)",
    };
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "config": config,
            "api_key_file": answers.key_file,
            "endpoint": answers.endpoint,
            "org_id": answers.org_id,
            "test": test.and_then(Result::ok),
        }));
    } else {
        println!(
            "wrote the [cloud] section of {} ({tested})",
            config.display()
        );
        println!(
            "the API key is in {} (mode 0600)",
            answers.key_file.display()
        );
        println!(
            "restart the daemon to connect (`atlasbridge daemon stop && atlasbridge daemon \
             start`, or `systemctl --user restart atlasbridged`), then `atlasbridge cloud status`"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn gather(args: &SetupArgs, config: &Path, interactive: bool) -> Result<Answers, CliError> {
    let endpoint = value(
        args.endpoint.clone(),
        interactive,
        "cloud endpoint (wss://host/path): ",
        "--endpoint",
        |text| parse_endpoint(text).map(|_| ()),
    )?;
    let api_base = match &args.api_base {
        Some(base) => {
            parse_api_base(base).map_err(CliError::Failed)?;
            Some(base.clone())
        }
        None => None,
    };
    let org_id = value(
        args.org_id.clone(),
        interactive,
        "organisation id: ",
        "--org-id",
        |text| {
            if text.trim().is_empty() {
                Err("the organisation id must not be empty".into())
            } else {
                Ok(())
            }
        },
    )?;
    let (api_key, key_file, write_key) = match &args.api_key_file {
        Some(file) => {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            (read_key_file(&file)?, file, false)
        }
        None => {
            let key = if args.api_key_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| CliError::Failed(format!("cannot read the API key: {e}")))?;
                line.trim().to_owned()
            } else if interactive {
                read_secret("API key (not shown): ")?
            } else {
                return Err(CliError::Failed(
                    "no API key: pass --api-key-file FILE or --api-key-stdin".into(),
                ));
            };
            if key.is_empty() {
                return Err(CliError::Failed("the API key is empty".into()));
            }
            let dir = config.parent().unwrap_or(Path::new("."));
            (key, dir.join(KEY_FILE_NAME), true)
        }
    };
    let server_public_key = match &args.server_public_key {
        Some(key) => Some(key.clone()),
        None if interactive => {
            let key = prompt("the cloud's public key (ed25519:…, Enter to skip): ")?;
            (!key.is_empty()).then_some(key)
        }
        None => None,
    };
    if let Some(key) = &server_public_key
        && decode_public_key(key).is_none()
    {
        return Err(CliError::Failed(
            "the server public key must be an Ed25519 key as `ed25519:<base64url>`".into(),
        ));
    }
    Ok(Answers {
        endpoint,
        api_base,
        org_id,
        api_key,
        key_file,
        write_key,
        server_public_key,
        ca_file: args
            .ca_file
            .as_ref()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())),
        policy_sync: args
            .policy_sync
            .clone()
            .unwrap_or_else(|| "manual".to_owned()),
        honor_kill_switch: args.honor_kill_switch,
    })
}

/// A flag's value, or asked for until it validates on a terminal.
fn value(
    given: Option<String>,
    interactive: bool,
    question: &str,
    flag: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<String, CliError> {
    if let Some(given) = given {
        check(&given).map_err(CliError::Failed)?;
        return Ok(given);
    }
    if !interactive {
        return Err(CliError::Failed(format!(
            "{flag} is required when standard input is not a terminal"
        )));
    }
    loop {
        let answer = prompt(question)?;
        match check(&answer) {
            Ok(()) => return Ok(answer),
            Err(e) => eprintln!("{e}"),
        }
    }
}

fn prompt(question: &str) -> Result<String, CliError> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))?;
    Ok(line.trim().to_owned())
}

fn confirm(question: &str) -> Result<bool, CliError> {
    Ok(matches!(prompt(question)?.as_str(), "y" | "Y" | "yes"))
}

/// Reads a line from the terminal with echo off, restoring the terminal whatever happens.
fn read_secret(question: &str) -> Result<String, CliError> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut silent = saved.clone();
        silent.local_modes.remove(LocalModes::ECHO);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &silent);
    }
    let answer = prompt(question);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, saved);
    }
    eprintln!();
    answer
}

fn read_key_file(file: &Path) -> Result<String, CliError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .map_err(|e| CliError::Unreadable(format!("cannot read {}: {e}", file.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(CliError::Failed(format!(
                "{} is readable by others (mode {:o}); run `chmod 600 {}`",
                file.display(),
                mode & 0o777,
                file.display()
            )));
        }
    }
    let key = std::fs::read_to_string(file)
        .map_err(|e| CliError::Unreadable(format!("cannot read {}: {e}", file.display())))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(CliError::Failed(format!("{} is empty", file.display())));
    }
    Ok(key.to_owned())
}

/// Asks the running daemon to try the values.
fn test(ctx: &Context, answers: &Answers) -> Result<CloudTestResult, CliError> {
    Ok(ctx.connect()?.call(
        m::CLOUD_TEST,
        Some(CloudTestParams {
            endpoint: answers.endpoint.clone(),
            api_base: answers.api_base.clone(),
            org_id: answers.org_id.clone(),
            api_key: answers.api_key.clone(),
            server_public_key: answers.server_public_key.clone(),
            ca_file: answers.ca_file.as_ref().map(|f| f.display().to_string()),
        }),
    )?)
}

/// The `[cloud]` section for the answers (the key itself is not in it).
fn cloud_section(answers: &Answers) -> String {
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let mut section = String::from("[cloud]\nenabled = true\n");
    section.push_str(&format!("endpoint = {}\n", quoted(&answers.endpoint)));
    if let Some(base) = &answers.api_base {
        section.push_str(&format!("api_base = {}\n", quoted(base)));
    }
    section.push_str(&format!("org_id = {}\n", quoted(&answers.org_id)));
    section.push_str(&format!(
        "api_key_file = {}\n",
        quoted(&answers.key_file.display().to_string())
    ));
    if let Some(key) = &answers.server_public_key {
        section.push_str(&format!("server_public_key = {}\n", quoted(key)));
    }
    if let Some(ca) = &answers.ca_file {
        section.push_str(&format!(
            "ca_file = {}\n",
            quoted(&ca.display().to_string())
        ));
    }
    section.push_str(&format!("policy_sync = {}\n", quoted(&answers.policy_sync)));
    section.push_str(&format!(
        "honor_kill_switch = {}\n",
        answers.honor_kill_switch
    ));
    section
}

/// `existing` with its `[cloud]` table (if any) replaced by `section`; everything else, comments
/// included, is kept as written.
fn with_cloud_section(existing: &str, section: &str) -> String {
    let mut out = String::new();
    let mut in_cloud = false;
    for line in existing.lines() {
        let header = line.trim_start();
        if header.starts_with('[') && !header.starts_with("[[") {
            let name = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            in_cloud = name == "cloud" || name.starts_with("cloud.");
        }
        if !in_cloud {
            out.push_str(line);
            out.push('\n');
        }
    }
    let kept = out.trim_end();
    if kept.is_empty() {
        section.to_owned()
    } else {
        format!("{kept}\n\n{section}")
    }
}

/// Writes `bytes` to `path` atomically, mode 0600, its directory 0700 if created.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let failed =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(failed)?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let temporary = dir.join(name);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary).map_err(failed)?;
        file.write_all(bytes).map_err(failed)?;
        file.sync_all().map_err(failed)?;
    }
    #[cfg(unix)]
    {
        // An existing file keeps its mode through a rename of a new one; make sure of 0600.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
    }
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloud_table_is_replaced_and_everything_else_kept() {
        let existing = "# mine\nedition = \"enterprise\"\n\n[cloud]\nenabled = false\nendpoint = \"x\"\n\n[trace]\ndurability = \"batch\"\n";
        let section = "[cloud]\nenabled = true\n";
        let text = with_cloud_section(existing, section);
        assert_eq!(
            text,
            "# mine\nedition = \"enterprise\"\n\n[trace]\ndurability = \"batch\"\n\n[cloud]\nenabled = true\n"
        );
        assert_eq!(with_cloud_section("", section), section);
    }

    #[test]
    fn the_section_quotes_values_and_leaves_the_key_out() {
        let answers = Answers {
            endpoint: "wss://c.example/v1/connect".into(),
            api_base: None,
            org_id: "org \"q\"".into(),
            api_key: "secret-key".into(),
            key_file: PathBuf::from("/home/me/.config/atlasbridge/cloud-api-key"),
            write_key: true,
            server_public_key: None,
            ca_file: None,
            policy_sync: "auto".into(),
            honor_kill_switch: true,
        };
        let section = cloud_section(&answers);
        assert!(!section.contains("secret-key"));
        let parsed: toml::Table = toml::from_str(&section).unwrap();
        assert_eq!(parsed["cloud"]["org_id"].as_str(), Some("org \"q\""));
        assert_eq!(parsed["cloud"]["honor_kill_switch"].as_bool(), Some(true));
    }
}
