//! `tenant suspend`, `resume` and `offboard`.
//!
//! Suspending takes a company's numbers out of the gateways' directory (they follow within a
//! second, through the same notifications as any directory change); its calls, appointments and
//! Cal.com routing stay, and events already accepted are still applied. Offboarding soft-deletes
//! what the company configured and its customers (`deleted_at`), keeps calls and appointments as
//! history, and refuses while an appointment still waits for Cal.com, unless forced.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, Action, Actor};

#[derive(Debug, thiserror::Error)]
pub enum TenantOpError {
    #[error("no active company has the slug {0:?}")]
    NoCompany(String),
    #[error("{0} appointment(s) still wait for Cal.com; offboard after they settle, or --force")]
    InFlight(i64),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What an offboarding removed (or, dry, would remove), by table.
#[derive(Debug, Default)]
pub struct Offboarded {
    pub company: Uuid,
    pub removed: Vec<(&'static str, u64)>,
    pub in_flight: i64,
}

async fn company(conn: &mut sqlx::PgConnection, slug: &str) -> Result<Uuid, TenantOpError> {
    sqlx::query_scalar("SELECT id FROM companies WHERE slug = $1 AND deleted_at IS NULL FOR UPDATE")
        .bind(slug)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| TenantOpError::NoCompany(slug.to_owned()))
}

/// Suspends (`suspend` true) or resumes the company; false when it already was so.
pub async fn set_suspended(pool: &PgPool, slug: &str, suspend: bool, actor: &Actor) -> Result<bool, TenantOpError> {
    let mut tx = pool.begin().await?;
    let id = company(&mut tx, slug).await?;
    let changed = sqlx::query(
        "UPDATE companies SET suspended_at = CASE WHEN $2 THEN now() END \
         WHERE id = $1 AND (suspended_at IS NULL) = $2",
    )
    .bind(id)
    .bind(suspend)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if changed {
        let name = if suspend { "tenant suspend" } else { "tenant resume" };
        let action = Action { actor, name, company: Some(id), selection: json!({ "company": slug }), rows: &[id] };
        audit::record(&mut tx, &action).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Tables soft-deleted by an offboarding, children first.
const OFFBOARDED: [&str; 7] =
    ["phone_numbers", "provider_accounts", "calcom_accounts", "services", "customers", "branches", "companies"];

/// Offboards the company: soft-deletes its configuration and customers in one transaction.
pub async fn offboard(
    pool: &PgPool,
    slug: &str,
    force: bool,
    dry_run: bool,
    actor: &Actor,
) -> Result<Offboarded, TenantOpError> {
    let mut tx = pool.begin().await?;
    let id = company(&mut tx, slug).await?;
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM appointments WHERE company_id = $1 AND calcom_sync_status IN ('pending', 'in_flight')",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if in_flight > 0 && !force {
        return Err(TenantOpError::InFlight(in_flight));
    }
    let mut report = Offboarded { company: id, removed: Vec::new(), in_flight };
    for table in OFFBOARDED {
        let column = if table == "companies" { "id" } else { "company_id" };
        let sql = if dry_run {
            format!("SELECT count(*) FROM {table} WHERE {column} = $1 AND deleted_at IS NULL")
        } else {
            format!(
                "WITH gone AS (UPDATE {table} SET deleted_at = now() WHERE {column} = $1 AND deleted_at IS NULL \
                 RETURNING 1) SELECT count(*) FROM gone"
            )
        };
        let n: i64 = sqlx::query_scalar(&sql).bind(id).fetch_one(&mut *tx).await?;
        report.removed.push((table, u64::try_from(n).unwrap_or(0)));
    }
    if dry_run {
        return Ok(report);
    }
    let selection = json!({ "company": slug, "force": force, "in_flight": in_flight });
    let action = Action { actor, name: "tenant offboard", company: Some(id), selection, rows: &[id] };
    audit::record(&mut tx, &action).await?;
    tx.commit().await?;
    Ok(report)
}
