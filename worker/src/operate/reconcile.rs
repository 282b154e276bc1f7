//! `calcom reconcile`: one reconciliation pass for a company now, rather than at its next
//! scheduled turn (after an outage of Cal.com's webhooks, or to check a booking an operator
//! was asked about). The same pass the workers run (`crate::calcom::reconcile`), taking its
//! requests from the key's rate gate like them, with its audit row in the pass's transaction.

use serde_json::json;

use super::audit::{self, Action, Actor};
use crate::calcom::reconcile::{Pass, Reconciler};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the company has no connected Cal.com account")]
    NoAccount,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a run did, and whether it was kept.
#[derive(Debug)]
pub struct Report {
    pub pass: Pass,
    pub applied: bool,
}

/// Runs a pass for `company`; with `dry_run` everything it would apply is rolled back.
pub async fn run(
    reconciler: &Reconciler,
    company: uuid::Uuid,
    actor: &Actor,
    dry_run: bool,
) -> Result<Report, ReconcileError> {
    let (pass, mut tx) = reconciler.begin_pass(Some(company), dry_run).await?.ok_or(ReconcileError::NoAccount)?;
    if dry_run {
        tx.rollback().await?;
        return Ok(Report { pass, applied: false });
    }
    let recorded = Action {
        actor,
        name: "calcom reconcile",
        company: Some(company),
        selection: json!({ "listed": pass.found.listed, "results": pass.found.results, "stopped": pass.stopped }),
        rows: &pass.found.changed,
    };
    audit::record(&mut tx, &recorded).await?;
    tx.commit().await?;
    reconciler.observe(&pass);
    Ok(Report { pass, applied: true })
}

impl Report {
    /// What to print: the counts, why the pass stopped early if it did, the appointments
    /// changed (up to `sample`).
    pub fn lines(&self, sample: usize) -> Vec<String> {
        let found = &self.pass.found;
        let verb = if self.applied { "applied" } else { "would apply (dry run)" };
        let mut results: Vec<String> = found.results.iter().map(|(k, v)| format!("{k} {v}")).collect();
        results.sort();
        let mut lines = vec![format!(
            "read {} booking(s) from Cal.com: {}; {verb} {} change(s)",
            found.listed,
            if results.is_empty() { "nothing new".to_owned() } else { results.join(", ") },
            found.changed.len()
        )];
        if let Some(reason) = &self.pass.stopped {
            lines.push(format!("stopped early ({reason}); the next pass goes on from there"));
        }
        lines.extend(found.changed.iter().take(sample).map(|id| format!("appointment {id}")));
        if found.changed.len() > sample {
            lines.push(format!("… and {} more", found.changed.len() - sample));
        }
        lines
    }
}
