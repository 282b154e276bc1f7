//! Keeps the directory fresh: LISTEN for change notifications and apply just the changed rows
//! (within a second of the commit), plus a periodic full reload as a safety net. A failed
//! reload keeps the last good snapshot and shows in metrics.

use std::sync::Arc;
use std::time::Duration;

use callgate_ops::Shutdown;
use sqlx::postgres::PgListener;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};

use super::{ChangeSet, DirectoryHandle, Loader};
use crate::metrics::Metrics;

/// The channel the migrations' triggers notify.
pub const NOTIFY_CHANNEL: &str = "callgate_directory";

/// After a notification, wait this long for the rest of a burst so it is applied as one change.
const COALESCE: Duration = Duration::from_millis(20);
/// Wait between attempts when the database is unreachable.
const RETRY: Duration = Duration::from_secs(1);

/// Runs until `shutdown` turns true.
pub async fn run_refresh(
    loader: Loader,
    handle: Arc<DirectoryHandle>,
    metrics: Metrics,
    full_reload_every: Duration,
    shutdown: Shutdown,
) {
    let refresher = Refresher { loader, handle, metrics };
    loop {
        // LISTEN before loading, so nothing committed in between is missed.
        let mut listener = match connect(refresher.loader.pool()).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "directory listener cannot connect; retrying");
                refresher.metrics.directory_reloads.with_label_values(&["full", "error"]).inc();
                if shutdown.sleep(RETRY).await {
                    return;
                }
                continue;
            }
        };
        if !refresher.full().await {
            if shutdown.sleep(RETRY).await {
                return;
            }
            continue;
        }
        let mut ticker = interval_at(Instant::now() + full_reload_every, full_reload_every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                _ = ticker.tick() => { refresher.full().await; }
                received = listener.try_recv() => match received {
                    Ok(Some(first)) => {
                        let mut changes = ChangeSet::default();
                        changes.add_notification(first.payload());
                        // Drain the rest of a burst.
                        while let Ok(Ok(Some(next))) = timeout(COALESCE, listener.try_recv()).await {
                            changes.add_notification(next.payload());
                        }
                        refresher.changes(&changes).await;
                    }
                    Ok(None) => {
                        // Connection lost: notifications may have been missed. try_recv
                        // reconnects and re-LISTENs on its next call; reload everything.
                        tracing::warn!("directory listener lost its connection; reloading in full");
                        refresher.full().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "directory listener failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

async fn connect(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

struct Refresher {
    loader: Loader,
    handle: Arc<DirectoryHandle>,
    metrics: Metrics,
}

impl Refresher {
    async fn full(&self) -> bool {
        let started = std::time::Instant::now();
        match self.loader.load_full().await {
            Ok(directory) => {
                tracing::info!(
                    numbers = directory.len(),
                    accounts = directory.account_count(),
                    invalid_accounts = directory.invalid_account_count(),
                    calendars = directory.calendars().len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "directory loaded"
                );
                self.install(directory, "full");
                true
            }
            Err(error) => {
                tracing::error!(%error, "directory full reload failed; keeping the last snapshot");
                self.metrics.directory_reloads.with_label_values(&["full", "error"]).inc();
                false
            }
        }
    }

    async fn changes(&self, changes: &ChangeSet) {
        if changes.is_empty() {
            return;
        }
        if changes.all {
            // A bulk statement: reload everything, logged and counted as a full reload.
            self.full().await;
            return;
        }
        let current = self.handle.snapshot();
        match self.loader.load_changes(&current, changes).await {
            Ok(directory) => {
                tracing::debug!(numbers = directory.len(), "directory changes applied");
                self.install(directory, "delta");
            }
            Err(error) => {
                tracing::error!(%error, "directory change failed to apply; reloading in full");
                self.metrics.directory_reloads.with_label_values(&["delta", "error"]).inc();
                self.full().await;
            }
        }
    }

    fn install(&self, directory: super::Directory, kind: &str) {
        self.metrics.directory_numbers.set(directory.len() as i64);
        self.metrics.directory_accounts.set(directory.account_count() as i64);
        self.metrics.directory_invalid_accounts.set(directory.invalid_account_count() as i64);
        self.metrics.directory_reloads.with_label_values(&[kind, "ok"]).inc();
        self.metrics.directory_last_success.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        self.handle.replace(directory);
    }
}
