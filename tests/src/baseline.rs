//! The database ceiling the worker is measured against (the worker bench and the load test):
//! a bare batched insert of call-shaped rows into Postgres, with nothing else to do.

use std::time::{Duration, Instant};

use sqlx::PgPool;

/// Inserts `rows` rows shaped like `calls` (the same column types, a primary key and the
/// `(provider, provider_call_id)` unique index) into a scratch table, 500 per statement, each
/// statement its own transaction, and drops the table again. Returns how long the inserts took.
/// A regular table, not a temporary one: temporary tables skip the write-ahead log, which the
/// worker's tables cannot.
pub async fn bare_insert(pool: &PgPool, rows: u64) -> Result<Duration, sqlx::Error> {
    let table = format!("baseline_calls_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!(
        "CREATE TABLE {table} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
         provider text NOT NULL, provider_call_id text NOT NULL, status text NOT NULL, caller_raw text, \
         started_at timestamptz, ended_at timestamptz, transcript text, analysis jsonb, UNIQUE (provider, provider_call_id))"
    ))
    .execute(pool)
    .await?;
    let insert = format!(
        "INSERT INTO {table} (provider, provider_call_id, status, caller_raw, started_at, ended_at, transcript, analysis) \
         SELECT 'retell', id, 'ended', '+14155550123', now(), now(), 'Agent: Hi.\nUser: A cleaning.', '{{\"summary\":\"x\"}}'::jsonb \
         FROM unnest($1::text[]) AS id"
    );
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(500);
        let ids: Vec<String> = (done..done + n).map(|i| format!("call-{i}")).collect();
        sqlx::query(&insert).bind(&ids).execute(pool).await?;
        done += n;
    }
    let took = started.elapsed();
    sqlx::query(&format!("DROP TABLE {table}")).execute(pool).await?;
    Ok(took)
}

/// The statements that took the most of Postgres's time since `reset`, if the server loads
/// `pg_stat_statements` (the local stack does): where the worker's database time goes.
pub mod statements {
    use sqlx::PgPool;

    /// Starts counting afresh. False if the extension is not available.
    pub async fn reset(pool: &PgPool) -> bool {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(pool).await.is_ok()
            && sqlx::query("SELECT pg_stat_statements_reset()").execute(pool).await.is_ok()
    }

    /// (calls, total ms, first 90 characters of the statement) for this database, busiest first.
    pub async fn top(pool: &PgPool, limit: i64) -> Vec<(i64, f64, String)> {
        sqlx::query_as(
            "SELECT calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await
        .unwrap_or_default()
    }
}
