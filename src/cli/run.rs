//! `vigil run`: the daemon in the foreground until SIGINT or SIGTERM.

use super::Exit;
use anyhow::Context;
use std::sync::Arc;
use vigil::app::App;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Write every raw event to DATA_DIR/events/ for debugging (pruned after 7 days).
    #[arg(long, env = "VIGIL_SPOOL_EVENTS")]
    spool_events: bool,
    /// Evaluate everything, print what would run, act on nothing.
    #[arg(long)]
    dry_run: bool,
    /// Log filter, e.g. `info`, `debug`, `vigil=debug` (or set RUST_LOG).
    #[arg(long, default_value = "info")]
    log_level: String,
}

pub fn run(app: Arc<App>, args: RunArgs) -> Exit {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .context("invalid --log-level; try `info` or `vigil=debug`")?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    super::memory::limit_arenas();
    // Two workers whatever the core count: the daemon's async work waits on I/O and its heavy
    // work runs on blocking threads, while every worker costs a stack and an allocator arena
    // that an idle daemon keeps resident (benches/idle.rs).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        tokio::spawn(async {
            // Start-up (config, regexes, migrations, sources attaching) is over by then.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            let kb = tokio::task::spawn_blocking(super::memory::release_startup_pages)
                .await
                .unwrap_or(0);
            tracing::debug!("start-up over: released {kb} kB of mapped pages");
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping");
            let _ = stop_tx.send(true);
        });
        let opts = vigil::daemon::Options {
            spool_events: args.spool_events,
            dry_run: args.dry_run,
        };
        let summary = vigil::daemon::run(app, opts, stop_rx).await?;
        eprintln!("vigil stopped: {summary}");
        Ok(0)
    })
}
