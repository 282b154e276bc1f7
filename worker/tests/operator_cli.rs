//! Operator commands, run as an operator runs them, against a real Postgres: each says what it
//! will touch, `--dry-run` changes nothing, and every action lands in the audit trail.

#![allow(clippy::unwrap_used)]

mod common;

use callgate_contract::SecretCipher;
use common::{fresh_database, worker};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// Inserts an appointment of the demo company whose push stands at `sync_status`.
async fn appointment(pool: &PgPool, sync_status: &str, status: &str, unsure: bool, error: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, timezone, \
           idempotency_key, status, calcom_sync_status, calcom_unsure, sync_attempts, last_sync_error) \
         SELECT s.company_id, s.branch_id, s.id, '2031-03-04T15:30Z', '2031-03-04T16:15Z', 'America/New_York', \
           encode(sha256(gen_random_uuid()::text::bytea), 'hex'), $1, $2, $3, 5, $4 \
         FROM services s JOIN companies c ON c.id = s.company_id WHERE c.slug = 'demo-dental' LIMIT 1 \
         RETURNING id",
    )
    .bind(status)
    .bind(sync_status)
    .bind(unsure)
    .bind(error)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn push_state(pool: &PgPool, id: Uuid) -> (String, String, bool, i32) {
    sqlx::query_as("SELECT calcom_sync_status, status, calcom_unsure, sync_attempts FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn audit(pool: &PgPool) -> Vec<(String, String, Vec<Uuid>, i64)> {
    sqlx::query_as("SELECT actor, action, row_ids, rows_affected FROM operator_actions ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn requeue_counts_first_keeps_an_unsure_push_unsure_and_records_who_did_it() {
    let url = fresh_database().await;
    let key = SecretCipher::generate_key();
    let env = [("CALLGATE_DATABASE_URL", url.as_str()), ("CALLGATE_SECRET_KEY", key.as_str()), ("USER", "bob")];
    assert!(worker(&env, &["migrate"], "").ok);
    let demo = worker(&env, &["demo-tenant"], "");
    assert!(demo.ok, "{}", demo.stderr);
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    // Its last request timed out, so Cal.com may hold the booking.
    let timed_out =
        appointment(&pool, "failed", "failed", true, "gave up after 5 attempts: lookup: HTTP 503 from Cal.com").await;
    let no_event_type =
        appointment(&pool, "needs_review", "pending", false, "no_event_type: service has no Cal.com event type").await;
    let synced = appointment(&pool, "synced", "booked", false, "").await;

    let dry = worker(&env, &["calcom", "requeue", "--status", "failed", "--company", "demo-dental", "--dry-run"], "");
    assert!(dry.ok, "{}", dry.stderr);
    assert!(dry.stdout.starts_with("would re-queue (dry run) 1 appointment(s)"), "{}", dry.stdout);
    assert!(dry.stdout.contains(&timed_out.to_string()) && dry.stdout.contains("unsure (looked up first)"));
    assert_eq!(
        push_state(&pool, timed_out).await,
        ("failed".into(), "failed".into(), true, 5),
        "a dry run changes nothing"
    );
    assert!(audit(&pool).await.is_empty(), "and records nothing");

    let args = ["calcom", "requeue", "--status", "failed,needs-review", "--reason", "http 503", "--actor", "alice"];
    let requeued = worker(&env, &args, "");
    assert!(requeued.ok, "{}", requeued.stderr);
    assert!(requeued.stdout.starts_with("re-queued 1 appointment(s)"), "{}", requeued.stdout);
    // Still unsure: the push looks its booking up before sending anything (in_flight is the
    // state the claim reads that way), and it has its attempts back.
    assert_eq!(push_state(&pool, timed_out).await, ("in_flight".into(), "pending".into(), true, 0));
    assert_eq!(push_state(&pool, no_event_type).await.0, "needs_review", "the reason filter left it");
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT reason FROM appointment_status_history WHERE appointment_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(timed_out)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reason.as_deref(), Some("re-queued for Cal.com by alice"));

    let one = worker(&env, &["calcom", "requeue", "--appointment", &no_event_type.to_string()], "");
    assert!(one.ok, "{}", one.stderr);
    assert_eq!(push_state(&pool, no_event_type).await, ("pending".into(), "pending".into(), false, 0));

    let refused = worker(&env, &["calcom", "requeue", "--appointment", &synced.to_string()], "");
    assert!(!refused.ok);
    assert!(refused.stderr.contains("only failed or needs_review"), "{}", refused.stderr);
    let nothing = worker(&env, &["calcom", "requeue"], "");
    assert!(!nothing.ok, "a selection is required");

    assert_eq!(
        audit(&pool).await,
        vec![
            ("alice".to_owned(), "calcom requeue".to_owned(), vec![timed_out], 1),
            ("bob".to_owned(), "calcom requeue".to_owned(), vec![no_event_type], 1),
        ],
        "the OS user when no --actor is given"
    );
    let rewrite = sqlx::query("UPDATE operator_actions SET actor = 'mallory'").execute(&pool).await;
    assert!(rewrite.unwrap_err().to_string().contains("append-only"));
    let erase = sqlx::query("DELETE FROM operator_actions").execute(&pool).await;
    assert!(erase.is_err());
}

#[tokio::test]
async fn offboarding_waits_for_cal_com_unless_forced_and_keeps_the_history() {
    let url = fresh_database().await;
    let key = SecretCipher::generate_key();
    let env = [("CALLGATE_DATABASE_URL", url.as_str()), ("CALLGATE_SECRET_KEY", key.as_str()), ("USER", "bob")];
    assert!(worker(&env, &["migrate"], "").ok);
    assert!(worker(&env, &["demo-tenant"], "").ok);
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let waiting = appointment(&pool, "pending", "pending", false, "").await;

    let refused = worker(&env, &["tenant", "offboard", "--company", "demo-dental"], "");
    assert!(!refused.ok && refused.stderr.contains("1 appointment(s) still wait for Cal.com"), "{}", refused.stderr);
    let dry = worker(&env, &["tenant", "offboard", "--company", "demo-dental", "--force", "--dry-run"], "");
    assert!(dry.ok, "{}", dry.stderr);
    assert!(dry.stdout.contains("would remove (dry run)") && dry.stdout.contains("phone_numbers: 3"), "{}", dry.stdout);
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM phone_numbers WHERE deleted_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(active, 3, "a dry run changes nothing");

    let done = worker(&env, &["tenant", "offboard", "--company", "demo-dental", "--force"], "");
    assert!(done.ok, "{}", done.stderr);
    for table in ["phone_numbers", "provider_accounts", "calcom_accounts", "services", "branches", "companies"] {
        let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE deleted_at IS NULL"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments WHERE id = $1")
        .bind(waiting)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 1, "appointments stay as history");
    let gone = worker(&env, &["tenant", "offboard", "--company", "demo-dental"], "");
    assert!(!gone.ok && gone.stderr.contains("no active company"), "{}", gone.stderr);
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM operator_actions ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(actions, [("bob".to_owned(), "tenant offboard".to_owned())]);
}

#[tokio::test]
async fn after_a_master_key_change_the_commands_open_old_secrets_and_reseal_moves_them_to_the_new_key() {
    let url = fresh_database().await;
    let (old, new) = (SecretCipher::generate_key(), SecretCipher::generate_key());
    let with_old = [("CALLGATE_DATABASE_URL", url.as_str()), ("CALLGATE_SECRET_KEY", old.as_str()), ("USER", "bob")];
    assert!(worker(&with_old, &["migrate"], "").ok);
    assert!(worker(&with_old, &["demo-tenant"], "").ok);
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let retell: Uuid = sqlx::query_scalar("SELECT id FROM provider_accounts WHERE provider = 'retell'")
        .fetch_one(&pool)
        .await
        .unwrap();

    // The new key is deployed, the old one kept as previous: the tenant commands must still
    // open what the old key sealed, like the servers do.
    let rotating = [
        ("CALLGATE_DATABASE_URL", url.as_str()),
        ("CALLGATE_SECRET_KEY", new.as_str()),
        ("CALLGATE_SECRET_KEYS_PREVIOUS", old.as_str()),
        ("USER", "bob"),
    ];
    let rotate = worker(&rotating, &["tenant", "rotate-secret", "--account", &retell.to_string()], "fresh-key\n");
    assert!(rotate.ok, "{}", rotate.stderr);

    let dry = worker(&rotating, &["tenant", "reseal", "--dry-run"], "");
    assert!(dry.ok, "{}", dry.stderr);
    assert!(dry.stdout.contains("would reseal (dry run)"), "{}", dry.stdout);
    let resealed = worker(&rotating, &["tenant", "reseal", "--batch", "1"], "");
    assert!(resealed.ok, "{}", resealed.stderr);
    assert!(resealed.stdout.contains("0 that no key opens"), "{}", resealed.stdout);
    let again = worker(&rotating, &["tenant", "reseal"], "");
    assert!(again.stdout.starts_with("resealed 0 secret(s)"), "running it again finds nothing: {}", again.stdout);

    // The old key can go: everything opens with the new one alone.
    let only_new = [("CALLGATE_DATABASE_URL", url.as_str()), ("CALLGATE_SECRET_KEY", new.as_str())];
    let cipher = SecretCipher::from_base64::<&str>(&new, &[]).unwrap();
    let sealed: Vec<(Uuid, Vec<u8>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, signing_secret, previous_signing_secret FROM provider_accounts")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id, current, previous) in sealed {
        use callgate_contract::secrets::{previous_signing_secret_binding, signing_secret_binding};
        cipher.open(&current, &signing_secret_binding(id)).unwrap();
        if let Some(previous) = previous {
            cipher.open(&previous, &previous_signing_secret_binding(id)).unwrap();
        }
    }
    let rotate = worker(&only_new, &["tenant", "rotate-secret", "--account", &retell.to_string()], "fresher\n");
    assert!(rotate.ok, "{}", rotate.stderr);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_actions ORDER BY id").fetch_all(&pool).await.unwrap();
    assert!(actions.contains(&"tenant reseal".to_owned()), "{actions:?}");
}
