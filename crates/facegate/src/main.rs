//! The `facegate` command: the server and the operator tools around it.

mod audit_log;
mod backup;
mod bench;
mod config;
mod eval;
mod import;
mod inspect;
mod keys;
mod packs;
mod reindex;
mod runtime;
mod serve;
mod tenant;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "facegate", version, about = "Self-hosted face identity service")]
struct Cli {
    /// Log filter, e.g. `info` or `facegate=debug,ort=warn`. ONNX Runtime is chatty at info.
    #[arg(long, env = "FACEGATE_LOG", default_value = "info,ort=warn", global = true)]
    log: String,
    /// How log lines on stderr are written: `text` for people, `json` (one object a line, the
    /// request's span with its `request_id` in each) for log shippers.
    #[arg(long, env = "FACEGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// TOML file with any of the settings (`key = value`, the flag names with `_`); flags and
    /// environment variables override it. Read by every command; an unknown key is an error.
    #[arg(long, env = "FACEGATE_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(Box<serve::ServeArgs>),
    /// Manage tenants (customers / applications) and their credentials.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Print the faces found in an image as JSON.
    Detect(inspect::DetectArgs),
    /// Compare the largest faces of two images and print the similarity and decision.
    Compare(inspect::CompareArgs),
    /// Measure accuracy on labelled face data.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Bulk-enroll photos (one folder per person, or a CSV list) into a tenant of a stopped
    /// server's data directory, or through a running server's API; re-running skips what is
    /// already imported.
    Import(import::ImportArgs),
    /// Measure speed: the face pipeline on photos, search over synthetic galleries, and
    /// `match_faces` over HTTP under load.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Encryption keys: make one, or re-encrypt a stopped server's data under a new one.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// List the model packs, their licences, and which one is active (`--pack`, `--model-dir`).
    Packs(packs::PacksArgs),
    /// Re-embed every stored face image of a stopped server's gallery with the active model pack,
    /// after a pack change, so that the people enrolled before are found again. Resumable: run
    /// it again after an interruption; nothing changes until every face has been processed.
    Reindex(reindex::ReindexArgs),
    /// Write a consistent backup of a SQLite data directory (its database and face images) to
    /// one file, beside a running server; encrypted data stays encrypted. Prints a JSON summary.
    /// For PostgreSQL, use `pg_dump` (docs/deployment.md).
    Backup(backup::BackupArgs),
    /// Restore a backup file into an empty or missing data directory, checking every hash and
    /// the database's integrity. Prints a JSON summary.
    Restore(backup::RestoreArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The log on stderr, filtered by `--log`, and the audit trail, which the commands that change
/// the gallery send to `<data_dir>/audit.log` whatever the filter says (`audit_log::open_in`).
fn init_logging(filter: &str, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let env_filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    // Both forms escape what they print: text through Debug formatting of client values, JSON
    // through its string encoding.
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(env_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(env_filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(stderr).with(audit_log::layer()).init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    let result = config::FileConfig::load(cli.config.as_deref()).and_then(|file| match cli.command {
        Command::Serve(args) => serve::run(*args, &file),
        Command::Tenant(cmd) => tenant::run(cmd, &file),
        Command::Detect(args) => inspect::detect(args, &file),
        Command::Compare(args) => inspect::compare(args, &file),
        Command::Eval(cmd) => eval::run(cmd, &file),
        Command::Import(args) => import::run(args, &file, &cli.log),
        Command::Bench(cmd) => bench::run(cmd, &file),
        Command::Keys(cmd) => keys::run(cmd, &file),
        Command::Packs(args) => packs::run(args, &file),
        Command::Reindex(args) => reindex::run(args, &file),
        Command::Backup(args) => backup::backup(args, &file),
        Command::Restore(args) => backup::restore(args),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facegate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
