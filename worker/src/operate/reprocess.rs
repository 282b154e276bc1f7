//! `call reprocess`: re-derives a flagged call's appointment from its stored analysis (the
//! rules live with the applier, `apply::reprocess`), and records the action.

use callgate_contract::Provider;
use serde_json::json;
use sqlx::PgPool;

use super::audit::{self, Action, Actor};
use crate::apply::reprocess::{Rederived, rederive};

/// What to print: what became of the call; None when no such call is stored.
pub async fn run(
    pool: &PgPool,
    provider: Provider,
    provider_call_id: &str,
    actor: &Actor,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(done) = rederive(&mut tx, provider, provider_call_id).await? else { return Ok(None) };
    let line = match &done.outcome {
        Rederived::Created(what) => format!("appointment created: {what}; the call's flag is cleared"),
        Rederived::Existed(what) => format!("the appointment existed already: {what}; the call's flag is cleared"),
        Rederived::Flagged(reason, detail) => format!("still flagged: {}: {detail}", reason.as_str()),
        Rederived::NoRequest => "the call's analysis asks for no appointment".to_owned(),
    };
    let action = Action {
        actor,
        name: "call reprocess",
        company: Some(done.company),
        selection: json!({ "provider": provider.as_str(), "call_id": provider_call_id, "result": line }),
        rows: &[done.call],
    };
    audit::record(&mut tx, &action).await?;
    tx.commit().await?;
    Ok(Some(line))
}
