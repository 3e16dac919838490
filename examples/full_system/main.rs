//! WDS as a runnable system: the initiator, worker and notifier services,
//! together in one process (`all`, the default; `demo`) or each on its own
//! (`initiator`, `worker`, `notifier`) sharing a Redis. `all` and `demo`
//! keep their state in DATA_DIR/wds.db (SQLite) unless told otherwise.
//!
//! ```text
//! cargo run --release --example full_system -- demo            # 100,000 users, end to end
//! cargo run --release --example full_system                    # all three, watching ./wds-data/inbox
//! cargo run --release --example full_system -- --help          # every setting
//! ```

mod demo;
mod notices;
mod redis;
mod roles;
mod settings;
mod sqlite;

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use wds_server::Metrics;

use crate::roles::{bind, Backend, Fallible};
use crate::settings::{Cli, LogFormat, Role};

/// mimalloc rather than the system allocator: every delivery allocates its
/// request and response on one runtime thread and often frees them on the
/// other, and glibc's arenas serialise those frees behind a lock (see
/// docs/performance.md, "Cost per delivery"). A service embedding the
/// library chooses its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let role = cli.role.unwrap_or(Role::All);
    // The demo draws a progress bar: keep the log to warnings unless asked.
    let default_level = if matches!(role, Role::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colour codes only for a person at a terminal: in a file or a log
    // collector they are noise around every field.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.settings.log_format {
        LogFormat::Human => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(role, cli.settings)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(role: Role, mut settings: settings::Settings) -> Fallible<ExitCode> {
    if matches!(role, Role::All | Role::Demo(_)) && settings.secrets.is_empty() {
        // Worker and notifier share this process: sign with a secret of
        // this run's own rather than accept unsigned webhooks.
        let secret = wds_http::signature::Secret::generate()
            .map_err(|e| format!("cannot generate a signing secret: {e}"))?;
        settings.secrets = vec![secret.to_whsec()];
        tracing::info!(
            "no --secret given: webhooks are signed with a secret generated for this run"
        );
    }
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(cancel.clone()));
    match role {
        Role::All => {
            let backend = Backend::connect(&settings, "all").await?;
            let notifier = bind(settings.notifier_listen, "notifier").await?;
            let api = bind(settings.api_listen, "control API").await?;
            // The bound addresses, not the settings: port 0 picks a free one.
            let address = |l: &tokio::net::TcpListener| {
                l.local_addr()
                    .map_err(|e| format!("cannot read a bound address: {e}"))
            };
            println!(
                "WDS running: drop files into {} · control API http://{} · notifier http://{} · Ctrl-C stops",
                settings.inbox().display(),
                address(&api)?,
                address(&notifier)?
            );
            demo::run_all(
                &settings,
                &backend,
                api,
                notifier,
                settings.output(),
                cancel,
            )
            .await?;
        }
        Role::Initiator => {
            let backend = Backend::connect(&settings, "initiator").await?;
            let api = bind(settings.api_listen, "control API").await?;
            roles::initiator(
                &settings,
                &backend,
                api,
                &settings.webhook_url(settings.notifier_listen),
                std::sync::Arc::new(Metrics::new()),
                cancel,
            )
            .await?;
        }
        Role::Worker => {
            let backend = Backend::connect(&settings, "worker").await?;
            let url = settings.webhook_url(settings.notifier_listen);
            roles::worker(
                &settings,
                &backend,
                url,
                std::sync::Arc::new(Metrics::new()),
                cancel,
            )
            .await?;
        }
        Role::Notifier => {
            let listener = bind(settings.notifier_listen, "notifier").await?;
            roles::notifier(&settings, listener, settings.output(), cancel).await?;
        }
        Role::Demo(args) => return demo::run(&settings, &args, cancel).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM: every role shuts down gracefully (workers finish what
/// is on the wire and release the rest; nothing stays leased).
async fn shutdown_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    cancel.cancel();
}
