//! Retention against a real Postgres: a worker's pass removes exactly what the policy says is
//! old, per company, and leaves everything younger alone.

#![allow(clippy::unwrap_used)]

use callgate_contract::SecretCipher;
use callgate_tests::tenant::{Tenant, seed_tenant};
use callgate_tests::worker::{count, fresh_dlq_and_group, metric_sum, run_args, run_config, wait_metrics};
use callgate_tests::{TestDb, create_topic, fresh_topic, kafka_brokers, secret_key};
use callgate_worker::Worker;
use sqlx::PgPool;
use uuid::Uuid;

/// A call `days` old (its first event), with everything retention removes: among it, the
/// caller's own words in why the call was flagged for review.
async fn call(pool: &PgPool, tenant: &Tenant, call_id: &str, days: i32, parent: Option<Uuid>) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO calls (company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164,
           status, progress, first_event_at, last_event_at, caller_raw, transcript, summary, analysis, sentiment,
           recording_url, duration_ms, parent_call_id, review_reason, review_detail, flagged_at)
         VALUES ($1, $2, $3, 'retell', $4, $5, 'ended', 4, now() - make_interval(days => $6),
           now() - make_interval(days => $6) + interval '5 minutes', '+12025550123', 'Agent: hello', 'a summary',
           '{\"user_sentiment\": \"Positive\"}', 'Positive', 'https://r.example/' || $4, 60000, $7,
           'unknown_service', 'no service of the branch is called \"a root canal\"', now())
         RETURNING id",
    )
    .bind(tenant.company.0)
    .bind(tenant.branch.0)
    .bind(tenant.retell_number.0.0)
    .bind(call_id)
    .bind(tenant.retell_number.1.to_string())
    .bind(days)
    .bind(parent)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A ledger row processed `days` ago.
async fn ledger_row(pool: &PgPool, tenant: &Tenant, days: i32) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, company_id, provider, event_type, provider_call_id, outcome,
           kafka_partition, kafka_offset, received_at, processed_at)
         VALUES (gen_random_uuid(), $1, 'retell', 'call_ended', 'c', 'applied', 0, 0,
           now() - make_interval(days => $2), now() - make_interval(days => $2))",
    )
    .bind(tenant.company.0)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

/// What is left of a call's content: `All`, `None`, or `Some` of it (a defect); `Deleted` once
/// the call is gone.
#[derive(Debug, PartialEq)]
enum Content {
    All,
    None,
    Some,
    Deleted,
}

async fn content(pool: &PgPool, call_id: &str) -> Content {
    let left: Option<(i32, bool)> = sqlx::query_as(
        "SELECT (transcript IS NOT NULL)::int + (summary IS NOT NULL)::int + (analysis IS NOT NULL)::int
                + (sentiment IS NOT NULL)::int + (recording_url IS NOT NULL)::int + (review_detail IS NOT NULL)::int,
                content_removed_at IS NOT NULL
         FROM calls WHERE provider_call_id = $1",
    )
    .bind(call_id)
    .fetch_optional(pool)
    .await
    .unwrap();
    match left {
        None => Content::Deleted,
        Some((6, false)) => Content::All,
        Some((0, true)) => Content::None,
        Some(_) => Content::Some,
    }
}

#[tokio::test]
async fn nothing_younger_than_the_policy_is_touched_and_nothing_older_survives() {
    callgate_tests::init_logs();
    let db = TestDb::create().await;
    let pool = &db.pool;
    let cipher = SecretCipher::from_base64::<&str>(&secret_key(), &[]).unwrap();
    let vapi = serde_json::json!({"mode": "secret"});
    let default = seed_tenant(&db, &cipher, "keeps-default", "+1415555", "https://h.test", vapi.clone()).await;
    let short = seed_tenant(&db, &cipher, "keeps-short", "+1212555", "https://h.test", vapi).await;
    sqlx::query("UPDATE companies SET retention_content_days = 7, retention_call_days = 30 WHERE id = $1")
        .bind(short.company.0)
        .execute(pool)
        .await
        .unwrap();

    // The worker's defaults: content 90 days, calls 730 days, ledger 30 days.
    for (id, days) in [("d-89", 89), ("d-91", 91), ("d-729", 729), ("d-731", 731), ("d-800", 800)] {
        call(pool, &default, id, days, None).await;
    }
    for (id, days) in [("s-6", 6), ("s-8", 8), ("s-29", 29), ("s-31", 31)] {
        call(pool, &short, id, days, None).await;
    }
    // An appointment made by a call that is deleted keeps its time and service; a leg whose
    // parent is deleted (and is younger itself) loses the link only.
    let old_parent = call(pool, &default, "d-740-parent", 740, None).await;
    call(pool, &default, "d-100-leg", 100, Some(old_parent)).await;
    let service = callgate_worker::tenants::add_service(
        pool,
        default.company,
        default.branch,
        &callgate_worker::tenants::ServiceDetails {
            name: "Retention check",
            aliases: &[],
            duration_minutes: 30,
            calcom_event_type_id: None,
        },
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO appointments (company_id, branch_id, call_id, service_id, starts_at, ends_at, timezone,
           idempotency_key)
         VALUES ($1, $2, $3, $4, now() - interval '739 days', now() - interval '739 days' + interval '30 minutes',
           'America/New_York', repeat('a', 64))",
    )
    .bind(default.company.0)
    .bind(default.branch.0)
    .bind(old_parent)
    .bind(service)
    .execute(pool)
    .await
    .unwrap();
    for days in [1, 29, 31, 45] {
        ledger_row(pool, &default, days).await;
    }

    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, 1);
    let (dlq, group) = fresh_dlq_and_group();
    // Small batches, so a pass takes several of each.
    let config = run_config(&run_args(&db, &topic, &group, &dlq), &["--retention-batch", "2"]);
    let worker = Worker::start(config).await.unwrap();
    wait_metrics(&worker, "a retention pass", |m| {
        metric_sum(m, "callgate_worker_retention_passes_total{outcome=\"complete\"}") >= 1.0
    })
    .await;
    let metrics = worker.metrics().render();
    worker.shutdown().await;

    for id in ["d-89", "s-6"] {
        assert_eq!(content(pool, id).await, Content::All, "{id} is younger than its policy");
    }
    for id in ["d-91", "d-729", "s-8", "s-29", "d-100-leg"] {
        assert_eq!(content(pool, id).await, Content::None, "{id}'s content is removed, all of it");
    }
    for id in ["d-731", "d-800", "s-31", "d-740-parent"] {
        assert_eq!(content(pool, id).await, Content::Deleted, "{id} is deleted");
    }
    let flag: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT review_reason, review_detail FROM calls WHERE provider_call_id = 'd-91'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(flag, (Some("unknown_service".to_owned()), None), "why it was flagged stays, in its own words");
    let kept: (i64, Option<String>) =
        sqlx::query_as("SELECT duration_ms, caller_raw FROM calls WHERE provider_call_id = 'd-91'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(kept, (60_000, Some("+12025550123".to_owned())), "what the business counts stays");
    let orphan: Option<Uuid> =
        sqlx::query_scalar("SELECT parent_call_id FROM calls WHERE provider_call_id = 'd-100-leg'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(orphan, None);
    let appointment: Option<Uuid> =
        sqlx::query_scalar("SELECT call_id FROM appointments").fetch_one(pool).await.unwrap();
    assert_eq!(appointment, None, "the appointment stays without its call");
    assert_eq!(count(pool, "SELECT count(*) FROM processed_events").await, 2, "the ledger keeps its last 30 days");
    assert_eq!(
        count(pool, "SELECT count(*) FROM processed_events WHERE processed_at > now() - interval '30 days'").await,
        2
    );

    assert_eq!(metric_sum(&metrics, "callgate_worker_retention_rows_total{action=\"content_removed\"}"), 5.0);
    assert_eq!(metric_sum(&metrics, "callgate_worker_retention_rows_total{action=\"call_deleted\"}"), 4.0);
    assert_eq!(metric_sum(&metrics, "callgate_worker_retention_rows_total{action=\"event_pruned\"}"), 2.0);
}

#[test]
fn a_ledger_shorter_than_the_topics_retention_is_refused() {
    let config = |ledger: &str| {
        let args = ["--database-url", "postgres://x", "--retention-ledger", ledger].map(str::to_owned);
        run_config(&args, &[]).retention
    };
    assert!(config("7d").validate().unwrap_err().contains("at least 8d"));
    assert!(config("8d").validate().is_ok());
}
