//! `cloud setup`: asks for (or takes as flags) what the uplink needs, validates each value, tests
//! the connection through the running daemon, and writes the `[cloud]` section of the config
//! file (mode 0600). The API key is never echoed or printed: typed at a prompt with echo off,
//! or read from standard input or a file, and kept in a 0600 file the config points at or, in a
//! build with the `keyring` feature and `--api-key-store keyring`, in the OS keyring.

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

/// The OS keyring's service for the key; the account is the organisation id. The daemon reads
/// the same entry (`atlasbridged::cloud::keyring::SERVICE`).
const KEYRING_SERVICE: &str = "atlasbridge";

/// Where `cloud setup` keeps the API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KeyStore {
    /// A file of mode 0600 next to the config.
    File,
    /// The OS keyring: service "atlasbridge", account = the organisation id.
    Keyring,
}

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
    /// Read the API key from standard input (one line) instead of a prompt.
    #[arg(long)]
    api_key_stdin: bool,
    /// Where to keep a key given at the prompt or on standard input: a 0600 file next to the
    /// config, or the OS keyring (needs an atlasbridge and an atlasbridged built with the
    /// `keyring` feature).
    #[arg(long, value_enum, default_value_t = KeyStore::File)]
    api_key_store: KeyStore,
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

/// Where the daemon is to find the key.
#[derive(Debug, PartialEq, Eq)]
enum KeyPlace {
    /// A file; `write` when this command writes the key there.
    File { path: PathBuf, write: bool },
    /// The OS keyring, service [`KEYRING_SERVICE`], account = the organisation id.
    Keyring,
}

/// The values to write.
#[derive(Debug)]
struct Answers {
    endpoint: String,
    api_base: Option<String>,
    org_id: String,
    api_key: String,
    /// Where the key is (or is to be) kept.
    key_place: KeyPlace,
    server_public_key: Option<String>,
    ca_file: Option<PathBuf>,
    policy_sync: String,
    honor_kill_switch: bool,
}

pub(super) fn run(ctx: &Context, args: &SetupArgs) -> Result<ExitCode, CliError> {
    check_key_store(args, cfg!(feature = "keyring"))?;
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

    match &answers.key_place {
        KeyPlace::File { path, write: true } => {
            write_private(path, format!("{}\n", answers.api_key).as_bytes())?;
        }
        KeyPlace::File { write: false, .. } => {}
        KeyPlace::Keyring => keep_in_keyring(&answers.org_id, &answers.api_key)?,
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
    let stale_key_file = previous_key_file(&existing, &config)
        .filter(|_| answers.key_place == KeyPlace::Keyring)
        .filter(|file| file.exists());
    let text = with_cloud_section(&existing, &cloud_section(&answers));
    write_private(&config, text.as_bytes())?;

    let tested = match &test {
        Some(Ok(result)) if result.ok => "tested: ok",
        Some(Ok(_)) => "tested: FAILED",
        Some(Err(_)) => "not tested (the daemon could not be asked)",
        None => "not tested (--no-test)",
    };
    let (key_file, store) = match &answers.key_place {
        KeyPlace::File { path, .. } => (Some(path), "file"),
        KeyPlace::Keyring => (None, "keyring"),
    };
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "config": config,
            "api_key_store": store,
            "api_key_file": key_file,
            "keyring": (answers.key_place == KeyPlace::Keyring).then(|| json!({
                "service": KEYRING_SERVICE,
                "account": answers.org_id,
            })),
            "endpoint": answers.endpoint,
            "org_id": answers.org_id,
            "test": test.and_then(Result::ok),
        }));
    } else {
        println!(
            "wrote the [cloud] section of {} ({tested})",
            config.display()
        );
        match &answers.key_place {
            KeyPlace::File { path, .. } => {
                println!("the API key is in {} (mode 0600)", path.display());
            }
            KeyPlace::Keyring => println!(
                "the API key is in the OS keyring (service {KEYRING_SERVICE:?}, account {:?})",
                answers.org_id
            ),
        }
        if let Some(file) = &stale_key_file {
            println!(
                "the key file the previous configuration named, {}, is no longer used; delete \
                 it when nothing else needs it",
                file.display()
            );
        }
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
    let (api_key, key_place) = match &args.api_key_file {
        Some(file) => {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            let place = KeyPlace::File {
                path: file.clone(),
                write: false,
            };
            (read_key_file(&file)?, place)
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
            let place = match args.api_key_store {
                KeyStore::File => KeyPlace::File {
                    path: config
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join(KEY_FILE_NAME),
                    write: true,
                },
                KeyStore::Keyring => KeyPlace::Keyring,
            };
            (key, place)
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
        key_place,
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

/// Refuses `--api-key-store keyring` before anything is asked when this build has no keyring
/// (`built`), or when the key is to stay in the file `--api-key-file` names.
fn check_key_store(args: &SetupArgs, built: bool) -> Result<(), CliError> {
    if args.api_key_store != KeyStore::Keyring {
        return Ok(());
    }
    if !built {
        return Err(CliError::Failed(
            "the keyring feature is not built into this atlasbridge: `--api-key-store keyring` \
             needs an atlasbridge (and an atlasbridged) built with `--features keyring`; without \
             it the key is kept in a 0600 file (`--api-key-store file`, the default)"
                .into(),
        ));
    }
    if args.api_key_file.is_some() {
        return Err(CliError::Failed(
            "--api-key-file keeps the key in that file; `--api-key-store keyring` takes the key \
             from the prompt or --api-key-stdin"
                .into(),
        ));
    }
    Ok(())
}

/// The `api_key_file` of the `[cloud]` table in `existing`, the text of `config`, if any;
/// relative to the config's folder as the daemon reads it.
fn previous_key_file(existing: &str, config: &Path) -> Option<PathBuf> {
    let table: toml::Table = toml::from_str(existing).ok()?;
    let file = table.get("cloud")?.get("api_key_file")?.as_str()?;
    Some(match config.parent() {
        Some(dir) if !file.starts_with('~') => dir.join(file),
        _ => PathBuf::from(file),
    })
}

/// Stores the key in the OS keyring and reads it back, as the daemon will (same user).
#[cfg(feature = "keyring")]
fn keep_in_keyring(account: &str, key: &str) -> Result<(), CliError> {
    let failed = |why: String| {
        CliError::Failed(format!(
            "cannot keep the API key in the OS keyring (service {KEYRING_SERVICE:?}, account \
             {account:?}): {why}; on Linux a Secret Service (GNOME Keyring, KeePassXC) must be \
             running and unlocked; or keep the key in a file with `--api-key-store file`"
        ))
    };
    // By `Display` only: `BadEncoding` would carry the stored bytes.
    let describe = |error: keyring::Error| match error {
        keyring::Error::NoDefaultStore => match keyring::Entry::store_status() {
            Err(why) => why.to_string(),
            Ok(()) => "no credential store could be opened".to_owned(),
        },
        keyring::Error::BadEncoding(_) => "the stored value is not UTF-8 text".to_owned(),
        other => other.to_string(),
    };
    let entry = keyring::Entry::new(KEYRING_SERVICE, account).map_err(|e| failed(describe(e)))?;
    entry.set_password(key).map_err(|e| failed(describe(e)))?;
    match entry.get_password() {
        Ok(stored) if stored == key => Ok(()),
        Ok(_) => Err(failed("reading it back gave a different value".to_owned())),
        Err(e) => Err(failed(describe(e))),
    }
}

/// Never reached: [`check_key_store`] refuses the keyring in a build without it.
#[cfg(not(feature = "keyring"))]
fn keep_in_keyring(_account: &str, _key: &str) -> Result<(), CliError> {
    Err(CliError::Failed(
        "the keyring feature is not built into this atlasbridge".into(),
    ))
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
    match &answers.key_place {
        KeyPlace::File { path, .. } => section.push_str(&format!(
            "api_key_file = {}\n",
            quoted(&path.display().to_string())
        )),
        KeyPlace::Keyring => section.push_str("api_key_keyring = true\n"),
    }
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
            key_place: KeyPlace::File {
                path: PathBuf::from("/home/me/.config/atlasbridge/cloud-api-key"),
                write: true,
            },
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
        assert_eq!(
            parsed["cloud"]["api_key_file"].as_str(),
            Some("/home/me/.config/atlasbridge/cloud-api-key")
        );
        assert!(parsed["cloud"].get("api_key_keyring").is_none());
    }

    #[test]
    fn a_key_in_the_keyring_is_named_by_a_flag_and_no_file() {
        let answers = Answers {
            endpoint: "wss://c.example/v1/connect".into(),
            api_base: None,
            org_id: "acme".into(),
            api_key: "secret-key".into(),
            key_place: KeyPlace::Keyring,
            server_public_key: None,
            ca_file: None,
            policy_sync: "manual".into(),
            honor_kill_switch: false,
        };
        let section = cloud_section(&answers);
        assert!(!section.contains("secret-key"));
        let parsed: toml::Table = toml::from_str(&section).unwrap();
        assert_eq!(parsed["cloud"]["api_key_keyring"].as_bool(), Some(true));
        assert!(parsed["cloud"].get("api_key_file").is_none());
    }

    fn setup_args(flags: &[&str]) -> SetupArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: SetupArgs,
        }
        let mut argv = vec!["setup"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_keyring_store_is_refused_without_the_feature_and_with_a_key_file() {
        assert_eq!(setup_args(&[]).api_key_store, KeyStore::File);
        let keyring = setup_args(&["--api-key-store", "keyring", "--api-key-stdin"]);
        assert!(check_key_store(&keyring, true).is_ok());
        let error = check_key_store(&keyring, false).unwrap_err().to_string();
        assert!(
            error.contains("the keyring feature is not built into this atlasbridge"),
            "{error}"
        );
        assert!(error.contains("--features keyring"), "{error}");
        let with_file = setup_args(&["--api-key-store", "keyring", "--api-key-file", "/k"]);
        let error = check_key_store(&with_file, true).unwrap_err().to_string();
        assert!(error.contains("--api-key-file"), "{error}");
        let file = setup_args(&["--api-key-store", "file", "--api-key-file", "/k"]);
        assert!(check_key_store(&file, false).is_ok());
    }

    #[test]
    fn the_previous_key_file_is_found_in_the_cloud_table() {
        let config = Path::new("/etc/ab/config.toml");
        let existing = "[trace]\ndurability = \"batch\"\n[cloud]\napi_key_file = \"/old/key\"\n";
        assert_eq!(
            previous_key_file(existing, config),
            Some(PathBuf::from("/old/key"))
        );
        let relative = "[cloud]\napi_key_file = \"cloud-api-key\"\n";
        assert_eq!(
            previous_key_file(relative, config),
            Some(PathBuf::from("/etc/ab/cloud-api-key"))
        );
        assert_eq!(previous_key_file("[cloud]\nenabled = true\n", config), None);
        assert_eq!(previous_key_file("not toml [", config), None);
    }
}
