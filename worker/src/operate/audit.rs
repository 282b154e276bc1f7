//! The audit trail: one append-only row per operator action (the table refuses updates and
//! deletes).

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// Who acts: `--actor` (or `CALLGATE_ACTOR`), else the OS user running the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The given name, or the OS user (`USER`, `LOGNAME`), or "unknown".
    pub fn resolve(given: Option<&str>) -> Self {
        let name = given
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .or_else(|| ["USER", "LOGNAME"].iter().find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty())))
            .unwrap_or_else(|| "unknown".to_owned());
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One action, as recorded.
#[derive(Debug)]
pub struct Action<'a> {
    pub actor: &'a Actor,
    /// The command, e.g. `calcom requeue`.
    pub name: &'static str,
    pub company: Option<Uuid>,
    /// The selection as given (filters, ids).
    pub selection: Value,
    /// The rows changed.
    pub rows: &'a [Uuid],
}

/// Records `action` in the caller's transaction.
pub async fn record(conn: &mut PgConnection, action: &Action<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO operator_actions (actor, action, company_id, selection, row_ids, rows_affected) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(action.actor.as_str())
    .bind(action.name)
    .bind(action.company)
    .bind(&action.selection)
    .bind(action.rows)
    .bind(i64::try_from(action.rows.len()).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_actor_wins_and_a_blank_one_falls_back_to_the_os_user() {
        assert_eq!(Actor::resolve(Some("  alice ")).as_str(), "alice");
        let fallback = Actor::resolve(Some(" "));
        assert!(!fallback.as_str().is_empty());
        assert_eq!(fallback, Actor::resolve(None));
    }
}
