//! The command line: `herald serve`, `herald token`, `herald dlq`, `herald email`, `herald sync` and the rest.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::Application;
use crate::auth::Authenticator;
use crate::config::{Layer, Settings};
use crate::domain::UserId;
use crate::telemetry;

mod dlq;
mod sync;

#[derive(Parser)]
#[command(name = "herald", version, about = "A real-time notification hub")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print a signed token for a user (needs the HS256 secret: configured, or generated under the data dir).
    Token(TokenArgs),
    /// Inspect, replay or purge the RabbitMQ dead-letter queues (needs the AMQP URL, as for serve).
    Dlq(DlqArgs),
    /// Print the GraphQL schema (SDL) served at /graphql.
    GraphqlSchema,
    /// Bring the database's schema up to this build's (serve does it at start too); refuses a schema that a
    /// newer Herald has migrated.
    Migrate(MigrateArgs),
    /// The email types: list them with their variables, or render one to stdout.
    Email(EmailArgs),
    /// User sync: compare the graph database with a source export, and repair it.
    Sync(SyncArgs),
}

#[derive(Args)]
struct SyncArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: SyncAction,
}

#[derive(Subcommand)]
enum SyncAction {
    /// Compare the graph with a source export (one user document a line) and print the differences: users
    /// missing from the graph, only in it, or with different profile fields. Exits 1 while any remain.
    Verify {
        /// The export: JSON lines, one user document each (as `mongoexport` writes them).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Repair what differs: create the missing users, update the different ones.
        #[arg(long)]
        fix: bool,
        /// Also remove the users only the graph has (an export may be partial, so only when asked).
        #[arg(long)]
        delete_extra: bool,
    },
}

#[derive(Args)]
struct EmailArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: EmailAction,
}

#[derive(Subcommand)]
enum EmailAction {
    /// List the email types (built in, and those of HERALD_EMAIL_TEMPLATES) with their required variables.
    Types,
    /// Render one email to stdout: its subject and both parts, or only one of them.
    Preview {
        /// The email type, e.g. create-account.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// The variables, a JSON object, e.g. '{"email":"ana@example.com","otpCode":"123456"}'.
        #[arg(long, default_value = "{}")]
        data: String,
        /// Only the HTML part.
        #[arg(long, conflicts_with = "text")]
        html: bool,
        /// Only the plain-text part.
        #[arg(long)]
        text: bool,
    },
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The database, as for serve (sqlite://PATH or postgres://…).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args)]
struct DlqArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    action: DlqAction,
}

#[derive(Subcommand)]
enum DlqAction {
    /// Count the dead-lettered messages and show each one's reason, attempts and the start of its body.
    List {
        /// A consumer's queue (or its `.dlq`); every configured consumer's when left out.
        #[arg(long)]
        queue: Option<String>,
        /// Show at most this many messages per queue.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead-lettered messages back through their consumer, with a fresh set of attempts.
    Replay {
        #[arg(long)]
        queue: Option<String>,
        /// Replay every message.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// Replay these messages (the ids `herald dlq list` shows).
        #[arg(long, num_args = 1..)]
        id: Vec<String>,
    },
    /// Delete every dead-lettered message.
    Purge {
        #[arg(long)]
        queue: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Options shared by every command that reads the configuration. Flags beat HERALD_* variables, which beat
/// the file.
#[derive(Args)]
struct ConfigArgs {
    /// A TOML file with any of the configuration keys.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Where the SQLite database and generated secrets live [default: ./data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The address to listen on [default: 127.0.0.1:8004].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Where notifications are stored [default: sqlite://DATA_DIR/herald.db].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Log as text or as JSON lines.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The user id, the token's `sub`.
    #[arg(long)]
    user: String,
    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
    /// Topics the token may watch, names or patterns (`order:*`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    topics: Vec<String>,
}

fn settings(args: &ConfigArgs, flags: Layer) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(path) => Layer::from_file(path)?,
        None => Layer::default(),
    };
    let env = Layer::from_env(std::env::vars())?;
    let flags = Layer { data_dir: args.data_dir.clone(), ..flags };
    Ok(Settings::resolve(flags.over(env.over(file)))?)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Token(args) => token(args),
        Command::Dlq(args) => dlq::run(settings(&args.config, Layer::default())?, args.action.into()).await,
        Command::GraphqlSchema => {
            print!("{}", crate::transport::graphql::sdl());
            Ok(())
        }
        Command::Migrate(args) => migrate(args).await,
        Command::Email(args) => email(args),
        Command::Sync(args) => {
            let settings = settings(&args.config, Layer::default())?;
            let SyncAction::Verify { from, fix, delete_extra } = args.action;
            if !sync::verify(settings, sync::VerifyArgs { from, fix, delete_extra }).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn email(args: EmailArgs) -> anyhow::Result<()> {
    use crate::workers::email::{Catalog, Origin};
    let settings = settings(&args.config, Layer::default())?;
    let catalog = Catalog::load(settings.email_templates.as_deref())?;
    match args.action {
        EmailAction::Types => {
            for ty in catalog.types() {
                let origin = match &ty.origin {
                    Origin::BuiltIn => "built in".to_owned(),
                    Origin::Overridden(dir) => format!("built in, overridden from {}", dir.display()),
                    Origin::Directory(dir) => format!("from {}", dir.display()),
                };
                println!("{:<26} requires {:<20} ({origin})", ty.name, ty.required.join(", "));
            }
        }
        EmailAction::Preview { kind, data, html, text } => {
            let data: serde_json::Value = serde_json::from_str(&data).context("--data must be a JSON object")?;
            let email = catalog.render(&kind, &data)?;
            if html {
                print!("{}", email.html);
            } else if text {
                print!("{}", email.text);
            } else {
                println!(
                    "Subject: {}\n\n--- text/plain ---\n{}\n--- text/html ---\n{}",
                    email.subject, email.text, email.html
                );
            }
        }
    }
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let settings = settings(&args.config, Layer { database_url: args.database_url, ..Layer::default() })?;
    match &settings.database {
        crate::config::DatabaseUrl::Postgres(url) => {
            let version = crate::store::postgres::run_migrations(url.expose()).await?;
            println!("herald migrate: the PostgreSQL schema is at version {version}");
        }
        crate::config::DatabaseUrl::Sqlite(path) => {
            let version = crate::store::sqlite::migrate_file(path)
                .with_context(|| format!("migrating the SQLite store at {}", path.display()))?;
            println!("herald migrate: the SQLite schema of {} is at version {version}", path.display());
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let flags =
        Layer { listen: args.listen, database_url: args.database_url, log_format: args.log_format, ..Layer::default() };
    let mut settings = settings(&args.config, flags)?;
    telemetry::init_tracing(settings.log_format, &settings.log_filter)?;
    for stored in settings.load_generated_secrets().context("loading the generated secrets")? {
        let verb = if stored.created { "generated" } else { "using" };
        tracing::info!(path = %stored.path.display(), "{verb} a secret kept in the data dir (mode 0600)");
    }
    let prometheus = telemetry::install_metrics(settings.statsd_addr)?;
    tokio::spawn(telemetry::run_upkeep(prometheus.clone()));
    let app = Application::build(settings, Some(prometheus)).await?;
    let addr = app.local_addr()?;
    tracing::info!(%addr, "listening");
    // Tests and scripts wait for this line on stdout to know the server is ready and where.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "herald {} listening on http://{addr}", env!("CARGO_PKG_VERSION"))?;
    stdout.flush()?;
    app.run_until_stopped(shutdown_signal()).await
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let mut settings = settings(&args.config, Layer::default())?;
    settings.load_generated_secrets().context("loading the generated secrets")?;
    let user = UserId::parse(&args.user)?;
    let token =
        Authenticator::new(&settings.auth)?.mint_with_topics(&user, Duration::from_secs(args.ttl), &args.topics)?;
    println!("{token}");
    Ok(())
}

impl From<DlqAction> for dlq::Action {
    fn from(action: DlqAction) -> Self {
        use dlq::Action;
        match action {
            DlqAction::List { queue, limit, json } => Action::List { queue, limit, json },
            DlqAction::Replay { queue, all, id } => Action::Replay { queue, all, ids: id },
            DlqAction::Purge { queue, yes } => Action::Purge { queue, yes },
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
