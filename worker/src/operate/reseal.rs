//! `tenant reseal`: finishes a master-key rotation. Every sealed secret that an older key
//! sealed (`--secret-keys-previous`) is opened and sealed again with the current key, a batch of
//! rows per transaction, so it is safe to interrupt and to run again (a secret the current key
//! sealed is left alone). Once it reports nothing left, the old key can be retired.

use callgate_contract::SecretCipher;
use callgate_contract::secrets::{CalcomColumn, calcom_binding, row_binding};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, Action, Actor};

/// A table's sealed columns and how each is bound to its row.
struct Sealed {
    table: &'static str,
    columns: &'static [&'static str],
    binding: fn(Uuid, &str) -> Vec<u8>,
}

const SEALED: [Sealed; 2] = [
    Sealed {
        table: "provider_accounts",
        columns: &["signing_secret", "previous_signing_secret"],
        binding: |id, column| row_binding("provider_accounts", id, column),
    },
    Sealed {
        table: "calcom_accounts",
        columns: &["api_key", "webhook_secret", "previous_webhook_secret"],
        binding: |id, column| {
            let column = match column {
                "api_key" => CalcomColumn::ApiKey,
                "webhook_secret" => CalcomColumn::WebhookSecret,
                _ => CalcomColumn::PreviousWebhookSecret,
            };
            calcom_binding(id, column)
        },
    },
];

/// What a run found.
#[derive(Debug, Default)]
pub struct Resealed {
    pub resealed: usize,
    pub current: usize,
    /// (table, row, column) of secrets no configured key opens: they stay as they are.
    pub unopened: Vec<(&'static str, Uuid, &'static str)>,
    pub rows: Vec<Uuid>,
}

/// Reseals every secret an older key sealed, `batch` rows per transaction.
pub async fn run(
    pool: &PgPool,
    cipher: &SecretCipher,
    batch: i64,
    dry_run: bool,
    actor: &Actor,
) -> Result<Resealed, sqlx::Error> {
    let mut report = Resealed::default();
    for sealed in &SEALED {
        let mut after = Uuid::nil();
        loop {
            let mut tx = pool.begin().await?;
            let select = format!(
                "SELECT id, {} FROM {} WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
                sealed.columns.iter().map(|c| format!("{c}::bytea")).collect::<Vec<_>>().join(", "),
                sealed.table
            );
            let rows = sqlx::query(&select).bind(after).bind(batch.max(1)).fetch_all(&mut *tx).await?;
            if rows.is_empty() {
                break;
            }
            let mut resealed_rows = Vec::new();
            for row in &rows {
                use sqlx::Row as _;
                let id: Uuid = row.try_get("id")?;
                after = id;
                let mut changes = Vec::new();
                for column in sealed.columns {
                    let Some(value) = row.try_get::<Option<Vec<u8>>, _>(*column)? else { continue };
                    match cipher.reseal(&value, &(sealed.binding)(id, column)) {
                        Ok(Some(again)) => changes.push((*column, again)),
                        Ok(None) => report.current += 1,
                        Err(_) => report.unopened.push((sealed.table, id, column)),
                    }
                }
                report.resealed += changes.len();
                if changes.is_empty() {
                    continue;
                }
                resealed_rows.push(id);
                if !dry_run {
                    for (column, again) in changes {
                        sqlx::query(&format!("UPDATE {} SET {column} = $2 WHERE id = $1", sealed.table))
                            .bind(id)
                            .bind(again)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            if !dry_run && !resealed_rows.is_empty() {
                let action = Action {
                    actor,
                    name: "tenant reseal",
                    company: None,
                    selection: json!({ "table": sealed.table }),
                    rows: &resealed_rows,
                };
                audit::record(&mut tx, &action).await?;
            }
            tx.commit().await?;
            report.rows.extend(resealed_rows);
        }
    }
    Ok(report)
}

impl Resealed {
    pub fn lines(&self, dry_run: bool) -> Vec<String> {
        let verb = if dry_run { "would reseal (dry run)" } else { "resealed" };
        let mut lines = vec![format!(
            "{verb} {} secret(s) in {} row(s); {} already under the current key; {} that no key opens",
            self.resealed,
            self.rows.len(),
            self.current,
            self.unopened.len()
        )];
        lines.extend(
            self.unopened.iter().map(|(table, id, column)| format!("  no configured key opens {table} {id} {column}")),
        );
        lines
    }
}
