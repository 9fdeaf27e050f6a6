//! The command line: `migrate`, `serve`, `create-org`, `create-api-key`, `revoke-api-key`,
//! `create-user`, `reset-password`, `public-key`. The one place that uses anyhow.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use atlasbridge_protocol::trace::checkpoint::encode_public_key;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::auth::ApiKey;
use crate::config::Config;
use crate::db::{Db, org_transaction};
use crate::pg_target::PgTarget;
use crate::role::Role;
use crate::store::people::{self, NewUser};
use crate::{migrate, password, server, store};

/// The AtlasBridge governance server.
#[derive(Debug, Parser)]
#[command(name = "atlasbridge-server", version)]
struct Cli {
    /// The TOML config file; ATLASBRIDGE_SERVER_* variables override it.
    #[arg(long, env = "ATLASBRIDGE_SERVER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Applies the embedded migrations with the owner role (database.owner_url).
    Migrate,
    /// Serves runtimes (migrating first when database.owner_url is set).
    Serve,
    /// Creates an organisation.
    CreateOrg {
        /// Its id: lower-case letters, digits, `-` and `_`.
        org_id: String,
        /// A name for people (defaults to the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Creates an API key of an organisation and prints it (once: only its hash is kept).
    CreateApiKey {
        /// The organisation.
        org_id: String,
        /// What the key is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revokes an API key; tokens issued for it stop working at their next use.
    RevokeApiKey {
        /// The organisation.
        org_id: String,
        /// The key's id (the part after `abk_`).
        key_id: String,
    },
    /// Creates a user of an organisation (the first owner, typically) and prints its id.
    CreateUser {
        /// The organisation.
        #[arg(long = "org")]
        org_id: String,
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// viewer, operator, admin or owner.
        #[arg(long)]
        role: String,
        /// A name for people.
        #[arg(long, default_value = "")]
        display_name: String,
        /// Read a password (at least 12 characters) from the first line of standard input;
        /// without it, the user can log in by SSO only.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Sets a user's password and revokes all of the user's sessions: the way back in for a
    /// person locked out (a forgotten password, the last owner). Clears the address's failed
    /// logins too. Unlike the API, it also gives an SSO-only user a password (whoever runs it
    /// holds the database's credentials anyway).
    ResetPassword {
        /// The organisation.
        #[arg(long = "org")]
        org_id: String,
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// Read the new password (at least 12 characters) from the first line of standard
        /// input; required, so that it never appears in the process list or shell history.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Prints the server's public key (`[cloud] server_public_key` of the runtimes), creating
    /// the key when it does not exist yet.
    PublicKey,
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("atlasbridge-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("atlasbridge-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATLASBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), |name| std::env::var(name).ok())?;
    match cli.command {
        Command::Migrate => {
            let owner_url = config
                .database
                .owner_url
                .as_deref()
                .context("database.owner_url (or ATLASBRIDGE_SERVER_DATABASE_OWNER_URL) is required to migrate")?;
            let owner = PgTarget::new(owner_url, config.database.ca_file.as_deref())?;
            let applied = migrate::migrate(&owner, &config.database.app_role).await?;
            println!("applied migrations: {applied:?}");
            Ok(())
        }
        Command::Serve => serve(config).await,
        Command::CreateOrg { org_id, name } => {
            let db = admin_db(&config)?;
            let mut client = db.client().await?;
            let transaction = org_transaction(&mut client, &org_id).await?;
            store::create_org(&transaction, &org_id, name.as_deref().unwrap_or(&org_id)).await?;
            transaction.commit().await?;
            println!("created org {org_id}");
            Ok(())
        }
        Command::CreateApiKey { org_id, label } => {
            let db = admin_db(&config)?;
            let key = ApiKey::generate()?;
            let mut client = db.client().await?;
            let transaction = org_transaction(&mut client, &org_id).await?;
            store::create_api_key(&transaction, &org_id, &key, &label)
                .await
                .with_context(|| {
                    format!("cannot create a key for org {org_id} (does it exist?)")
                })?;
            transaction.commit().await?;
            println!("{}", key.reveal());
            Ok(())
        }
        Command::RevokeApiKey { org_id, key_id } => {
            let db = admin_db(&config)?;
            let mut client = db.client().await?;
            let transaction = org_transaction(&mut client, &org_id).await?;
            let revoked = store::revoke_api_key(&transaction, &key_id).await?;
            transaction.commit().await?;
            if !revoked {
                bail!("org {org_id} has no live key {key_id}");
            }
            println!("revoked {key_id}");
            Ok(())
        }
        Command::CreateUser {
            org_id,
            email,
            role,
            display_name,
            password_stdin,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!("unknown role {role:?}: viewer, operator, admin or owner")
            })?;
            if !people::plausible_email(&email) {
                bail!("{email:?} is not an email address");
            }
            let password_hash = if password_stdin {
                Some(password_from_stdin().await?)
            } else {
                None
            };
            let db = admin_db(&config)?;
            let mut client = db.client().await?;
            let transaction = org_transaction(&mut client, &org_id).await?;
            let new = NewUser {
                email,
                display_name,
                role,
                password_hash,
                oidc: None,
            };
            let user = people::create_user(&transaction, &org_id, &new)
                .await
                .with_context(|| format!("cannot create the user in org {org_id}"))?;
            transaction.commit().await?;
            println!("{}", user.user_id);
            Ok(())
        }
        Command::ResetPassword {
            org_id,
            email,
            password_stdin: _,
        } => {
            let hash = password_from_stdin().await?;
            let db = admin_db(&config)?;
            let mut client = db.client().await?;
            let transaction = org_transaction(&mut client, &org_id).await?;
            let Some((user, _)) = people::login_candidate(&transaction, &email).await? else {
                bail!("org {org_id} has no user {email}");
            };
            people::set_password(&transaction, &user.user_id, &hash).await?;
            let revoked = people::revoke_user_sessions(&transaction, &user.user_id).await?;
            people::clear_login_failures(&transaction, &email).await?;
            transaction.commit().await?;
            info!(org_id, user_id = %user.user_id, revoked_sessions = revoked, "password reset from the command line");
            println!("{} (revoked {revoked} sessions)", user.user_id);
            Ok(())
        }
        Command::PublicKey => {
            let key = server::load_or_create_signing_key(&config.runtime.signing_key_file)?;
            println!("{}", encode_public_key(&key.verifying_key()));
            Ok(())
        }
    }
}

/// A password from the first line of standard input, hashed (argon2id, on the blocking pool).
async fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&password))
        .await
        .context("the password hash did not finish")??;
    Ok(hash)
}

/// The pool for one-off commands: the app role when configured, else the owner.
fn admin_db(config: &Config) -> anyhow::Result<Db> {
    let url = if config.database.url.is_empty() {
        config
            .database
            .owner_url
            .as_deref()
            .context("database.url (or ATLASBRIDGE_SERVER_DATABASE_URL) is required")?
    } else {
        &config.database.url
    };
    let target = PgTarget::new(url, config.database.ca_file.as_deref())?;
    Ok(Db::new(&target, 1, config.pool_wait())?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    config.check_for_serving()?;
    if let Some(owner_url) = &config.database.owner_url {
        let owner = PgTarget::new(owner_url, config.database.ca_file.as_deref())?;
        let applied = migrate::migrate(&owner, &config.database.app_role).await?;
        info!(?applied, "migrations checked at start");
    }
    let target = PgTarget::new(&config.database.url, config.database.ca_file.as_deref())?;
    info!(
        encrypted = target.encrypted(),
        "database connection settings read"
    );
    let db = Db::new(&target, config.database.pool_size, config.pool_wait())?;
    {
        let client = db.client().await.context("cannot reach the database")?;
        let pending = migrate::pending(&client).await?;
        if !pending.is_empty() {
            bail!("migrations {pending:?} are not applied: run `atlasbridge-server migrate`");
        }
    }
    let signing_key = server::load_or_create_signing_key(&config.runtime.signing_key_file)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let state = Arc::new(server::state(config, db, signing_key, shutdown.clone())?);
    tokio::spawn(stop_on_signal(shutdown.clone()));
    server::run(listener, state, shutdown).await?;
    info!("atlasbridge-server stopped");
    Ok(())
}

/// SIGINT or SIGTERM: stop accepting, close runtime connections with 1001, drain.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    info!("stopping");
    shutdown.cancel();
}
