//! Signals -> cancellation. SIGTERM or SIGINT cancels the token; the stages then drain.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT; a second one exits the process at once
/// (exit code 130), without draining: records not yet committed are replayed on restart.
pub async fn on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining (a second one exits at once)"),
        _ = int.recv() => tracing::info!("SIGINT: draining (a second one exits at once)"),
        _ = token.cancelled() => {}
    }
    token.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now without draining");
    std::process::exit(130);
}
