//! What the applier needs to know about a branch to turn an analysis into an appointment (the
//! company's appointment fields, the branch's time zone, its services), cached in memory and kept
//! fresh the way the gateway keeps its directory: the migrations' triggers notify
//! `callgate_directory` when companies, branches or services change, and every such
//! notification empties the cache, so the next batch that needs a branch reads it again. A
//! periodic flush covers a notification lost with its connection.
//!
//! A change is seen within about a second of its commit, like the gateway's routing: a call
//! analysed in that second is read with the settings before the change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use callgate_ops::Shutdown;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::appointments::{FieldMap, Service};
use crate::metrics::Metrics;

/// The channel the directory triggers notify (the gateway listens on it too).
const CHANNEL: &str = "callgate_directory";
/// The tables whose changes reach the cache; `all` is a bulk change of any table.
const SCOPES: &[&str] = &["companies", "branches", "services", "all"];
/// Emptied this often whatever the notifications say.
const FLUSH_EVERY: Duration = Duration::from_secs(60);
/// Wait before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// One branch's settings.
#[derive(Debug, Clone)]
pub struct Branch {
    pub company_id: Uuid,
    pub fields: FieldMap,
    pub timezone: String,
    pub services: Vec<Service>,
}

/// The cache. Cheap to share.
#[derive(Debug)]
pub struct Catalog {
    inner: Mutex<Inner>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Inner {
    /// Moves on at every flush: a read that started before a flush is not cached after it.
    generation: u64,
    branches: HashMap<Uuid, Arc<Branch>>,
}

#[derive(Debug, sqlx::FromRow)]
struct BranchRow {
    id: Uuid,
    company_id: Uuid,
    appointment_fields: Value,
    timezone: String,
}

#[derive(Debug, sqlx::FromRow)]
struct ServiceRow {
    branch_id: Uuid,
    id: Uuid,
    name: String,
    aliases: Vec<String>,
    duration_minutes: i32,
}

impl Catalog {
    pub fn new(metrics: Metrics) -> Self {
        Self { inner: Mutex::default(), metrics }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Empties the cache.
    pub fn flush(&self) {
        let mut inner = self.inner();
        inner.generation += 1;
        inner.branches.clear();
        self.metrics.settings_cache_flushes.inc();
    }

    /// The settings of `wanted` branches, read on `conn` for those not cached. A branch that
    /// does not exist is absent from the answer.
    pub async fn branches(
        &self,
        conn: &mut PgConnection,
        wanted: impl IntoIterator<Item = Uuid>,
    ) -> Result<HashMap<Uuid, Arc<Branch>>, sqlx::Error> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let generation = {
            let inner = self.inner();
            for branch in wanted {
                match inner.branches.get(&branch) {
                    Some(settings) => {
                        found.insert(branch, settings.clone());
                    }
                    None if !missing.contains(&branch) => missing.push(branch),
                    None => {}
                }
            }
            inner.generation
        };
        if missing.is_empty() {
            return Ok(found);
        }
        let loaded = load(conn, &missing).await?;
        let mut inner = self.inner();
        for (id, settings) in loaded {
            if inner.generation == generation {
                inner.branches.insert(id, settings.clone());
            }
            found.insert(id, settings);
        }
        Ok(found)
    }
}

/// Reads the settings of `branches` (what the cache holds, read now).
pub(crate) async fn load(conn: &mut PgConnection, branches: &[Uuid]) -> Result<Vec<(Uuid, Arc<Branch>)>, sqlx::Error> {
    let rows: Vec<BranchRow> = sqlx::query_as(
        "SELECT b.id, b.company_id, c.appointment_fields, b.timezone \
         FROM branches b JOIN companies c ON c.id = b.company_id WHERE b.id = ANY($1)",
    )
    .bind(branches)
    .fetch_all(&mut *conn)
    .await?;
    let services: Vec<ServiceRow> = sqlx::query_as(
        "SELECT branch_id, id, name, aliases, duration_minutes FROM services \
         WHERE branch_id = ANY($1) AND deleted_at IS NULL ORDER BY created_at, id",
    )
    .bind(branches)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_branch: HashMap<Uuid, Vec<Service>> = HashMap::new();
    for row in services {
        by_branch.entry(row.branch_id).or_default().push(Service {
            id: row.id,
            name: row.name,
            aliases: row.aliases,
            duration_minutes: row.duration_minutes,
        });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let branch = Branch {
                company_id: row.company_id,
                fields: FieldMap::with_overrides(&row.appointment_fields),
                timezone: row.timezone,
                services: by_branch.remove(&row.id).unwrap_or_default(),
            };
            (row.id, Arc::new(branch))
        })
        .collect())
}

/// Keeps `catalog` fresh until `shutdown`: flushes it on every notification about companies,
/// branches or services, when the listening connection is lost, and every minute.
pub async fn follow(catalog: Arc<Catalog>, pool: PgPool, shutdown: Shutdown) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => listener,
                Err(error) => {
                    tracing::warn!(%error, "settings cache cannot listen for changes; retrying");
                    if shutdown.sleep(RETRY).await {
                        return;
                    }
                    continue;
                }
            },
            Err(error) => {
                tracing::warn!(%error, "settings cache cannot listen for changes; retrying");
                if shutdown.sleep(RETRY).await {
                    return;
                }
                continue;
            }
        };
        // Anything may have changed while nobody listened.
        catalog.flush();
        let mut flush = tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                _ = flush.tick() => catalog.flush(),
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        if concerns_settings(notification.payload()) {
                            catalog.flush();
                        }
                    }
                    // The connection was lost and will be re-established: notifications may
                    // have been missed.
                    Ok(None) => catalog.flush(),
                    Err(error) => {
                        tracing::warn!(%error, "settings cache listener failed; reconnecting");
                        catalog.flush();
                        break;
                    }
                },
            }
        }
    }
}

/// Whether a directory notification is about a table the cache holds (or about everything, or
/// unreadable: then it is taken as a change).
fn concerns_settings(payload: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Note {
        scope: String,
    }
    serde_json::from_str::<Note>(payload).map_or(true, |note| SCOPES.contains(&note.scope.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_notes_about_settings_flush_the_cache() {
        assert!(concerns_settings(r#"{"scope":"services","ids":[]}"#));
        assert!(concerns_settings(r#"{"scope":"branches","ids":[]}"#));
        assert!(concerns_settings(r#"{"scope":"all"}"#));
        assert!(concerns_settings("not json"));
        assert!(!concerns_settings(r#"{"scope":"phone_numbers","ids":[]}"#));
        assert!(!concerns_settings(r#"{"scope":"calcom_accounts","ids":[]}"#));
    }
}
