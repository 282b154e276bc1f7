//! The schema enforces tenancy itself: no code path can make a row point at another company's
//! branch or account, numbers are E.164 and unique while active, and changes are announced.

#![allow(clippy::unwrap_used)]

use callgate_contract::call::CallStatus;
use callgate_contract::{E164, Provider, SecretCipher};
use callgate_tests::TestDb;
use callgate_worker::tenants;
use sqlx::postgres::PgListener;

async fn two_companies(
    db: &TestDb,
    cipher: &SecretCipher,
) -> [(callgate_contract::CompanyId, callgate_contract::BranchId, callgate_contract::ProviderAccountId); 2] {
    let mut out = Vec::new();
    for slug in ["a", "b"] {
        let company = tenants::create_company(&db.pool, slug, slug).await.unwrap();
        let branch = tenants::create_branch(&db.pool, company, "Main", "America/Chicago").await.unwrap();
        let account = tenants::create_provider_account(
            &db.pool,
            cipher,
            company,
            Provider::Retell,
            "ws",
            b"k",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
        out.push((company, branch, account));
    }
    [out[0], out[1]]
}

fn constraint(error: tenants::TenantError) -> String {
    match error {
        tenants::TenantError::Database(error) => db_constraint(error),
        other => panic!("expected a database constraint error, got {other}"),
    }
}

#[tokio::test]
async fn rows_cannot_point_across_companies() {
    let db = TestDb::create().await;
    let cipher = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
    let [(a, a_branch, a_account), (_b, b_branch, b_account)] = two_companies(&db, &cipher).await;
    let number = E164::parse("+13125550100").unwrap();

    let cross_branch = tenants::add_phone_number(&db.pool, a, b_branch, a_account, number, &Default::default()).await;
    assert_eq!(constraint(cross_branch.unwrap_err()), "phone_numbers_company_id_branch_id_fkey");
    let cross_account = tenants::add_phone_number(&db.pool, a, a_branch, b_account, number, &Default::default()).await;
    assert_eq!(constraint(cross_account.unwrap_err()), "phone_numbers_company_id_provider_account_id_fkey");

    let null_company = sqlx::query("INSERT INTO branches (company_id, name, timezone) VALUES (NULL, 'x', 'UTC')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(null_company.to_string().contains("null value"), "{null_company}");
}

#[tokio::test]
async fn numbers_are_e164_and_unique_while_active() {
    let db = TestDb::create().await;
    let cipher = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
    let [(a, a_branch, a_account), (b, b_branch, b_account)] = two_companies(&db, &cipher).await;
    let number = E164::parse("+13125550100").unwrap();
    let first = tenants::add_phone_number(&db.pool, a, a_branch, a_account, number, &Default::default()).await.unwrap();
    let taken = tenants::add_phone_number(&db.pool, b, b_branch, b_account, number, &Default::default()).await;
    assert_eq!(constraint(taken.unwrap_err()), "phone_numbers_e164_active");
    // Released by a soft delete, the number can move to another company.
    assert!(tenants::remove_phone_number(&db.pool, first).await.unwrap());
    tenants::add_phone_number(&db.pool, b, b_branch, b_account, number, &Default::default()).await.unwrap();

    let not_e164 = sqlx::query(
        "INSERT INTO phone_numbers (company_id, branch_id, provider_account_id, e164) VALUES ($1, $2, $3, '4155550100')",
    )
    .bind(a.0)
    .bind(a_branch.0)
    .bind(a_account.0)
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(not_e164.to_string().contains("phone_numbers_e164_check"), "{not_e164}");

    let bad_zone = tenants::create_branch(&db.pool, a, "Nowhere", "Mars/Olympus_Mons").await.unwrap_err();
    assert!(bad_zone.to_string().contains("time zone"), "{bad_zone}");
}

#[tokio::test]
async fn migrations_are_idempotent_and_secrets_are_not_stored_in_the_clear() {
    let db = TestDb::create().await;
    callgate_worker::MIGRATOR.run(&db.pool).await.unwrap();
    let cipher = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
    let company = tenants::create_company(&db.pool, "c", "c").await.unwrap();
    tenants::create_provider_account(
        &db.pool,
        &cipher,
        company,
        Provider::Twilio,
        "AC1",
        b"my-auth-token",
        &serde_json::json!({}),
    )
    .await
    .unwrap();
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(encode(signing_secret, 'escape'), '') FROM provider_accounts")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!dump.contains("my-auth-token"));
}

#[tokio::test]
async fn changes_are_announced_per_statement() {
    let db = TestDb::create().await;
    let cipher = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen(callgate_gateway::directory::NOTIFY_CHANNEL).await.unwrap();
    let [(a, a_branch, a_account), _] = two_companies(&db, &cipher).await;
    // Drain the set-up's own notifications.
    while let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_millis(300), listener.recv()).await {}

    let id = tenants::add_phone_number(
        &db.pool,
        a,
        a_branch,
        a_account,
        E164::parse("+13125550100").unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let note = listener.recv().await.unwrap();
    let payload: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
    assert_eq!(payload, serde_json::json!({"scope": "phone_numbers", "ids": [id.to_string()]}));

    // A bulk import is one "reload everything", not thousands of notifications.
    sqlx::query(
        "INSERT INTO phone_numbers (company_id, branch_id, provider_account_id, e164)
         SELECT $1, $2, $3, '+1312556' || lpad(g::text, 4, '0') FROM generate_series(1, 500) g",
    )
    .bind(a.0)
    .bind(a_branch.0)
    .bind(a_account.0)
    .execute(&db.pool)
    .await
    .unwrap();
    let note = listener.recv().await.unwrap();
    assert_eq!(note.payload(), r#"{"scope":"all"}"#);
}

/// Inserts a call of `company` (branch, number given) and returns its id.
async fn insert_call(db: &TestDb, company: uuid::Uuid, branch: uuid::Uuid, number: uuid::Uuid, id: &str) -> uuid::Uuid {
    sqlx::query_scalar(
        "INSERT INTO calls (company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, status,
                            progress, first_event_at, last_event_at)
         VALUES ($1, $2, $3, 'retell', $4, '+13125550100', 'ended', 3, now(), now()) RETURNING id",
    )
    .bind(company)
    .bind(branch)
    .bind(number)
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

const CLEANING: tenants::ServiceDetails<'static> =
    tenants::ServiceDetails { name: "Cleaning", aliases: &[], duration_minutes: 30, calcom_event_type_id: None };

fn db_constraint(error: sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.constraint().unwrap_or(db.message()).to_owned(),
        other => panic!("expected a database constraint error, got {other}"),
    }
}

#[tokio::test]
async fn calls_customers_and_appointments_cannot_point_across_companies() {
    let db = TestDb::create().await;
    let cipher = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
    let [(a, a_branch, a_account), (b, b_branch, b_account)] = two_companies(&db, &cipher).await;
    let a_number = tenants::add_phone_number(
        &db.pool,
        a,
        a_branch,
        a_account,
        E164::parse("+13125550100").unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    tenants::add_phone_number(
        &db.pool,
        b,
        b_branch,
        b_account,
        E164::parse("+13125550101").unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let call = insert_call(&db, a.0, a_branch.0, a_number.0, "c1").await;
    let customer = |company: uuid::Uuid| {
        sqlx::query_scalar::<_, uuid::Uuid>(
            "INSERT INTO customers (company_id, e164) VALUES ($1, '+12025550123') RETURNING id",
        )
        .bind(company)
    };
    let b_customer = customer(b.0).fetch_one(&db.pool).await.unwrap();
    // The same caller is a customer of each company, once per company.
    let a_customer = customer(a.0).fetch_one(&db.pool).await.unwrap();
    assert_eq!(db_constraint(customer(a.0).fetch_one(&db.pool).await.unwrap_err()), "customers_e164_active");

    let cross_customer = sqlx::query("UPDATE calls SET customer_id = $1 WHERE id = $2")
        .bind(b_customer)
        .bind(call)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(db_constraint(cross_customer), "calls_company_id_customer_id_fkey");
    let cross_number = sqlx::query(
        "INSERT INTO calls (company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, status,
                            progress, first_event_at, last_event_at)
         VALUES ($1, $2, $3, 'retell', 'c2', '+13125550100', 'ended', 3, now(), now())",
    )
    .bind(b.0)
    .bind(b_branch.0)
    .bind(a_number.0)
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(db_constraint(cross_number), "calls_company_id_phone_number_id_fkey");

    let a_service = tenants::add_service(&db.pool, a, a_branch, &CLEANING).await.unwrap();
    let b_service = tenants::add_service(&db.pool, b, b_branch, &CLEANING).await.unwrap();
    let appointment =
        |company: uuid::Uuid, branch: uuid::Uuid, customer: uuid::Uuid, service: uuid::Uuid, key: char| {
            sqlx::query(
                "INSERT INTO appointments (company_id, branch_id, call_id, customer_id, service_id, starts_at, ends_at,
                                       timezone, idempotency_key)
             VALUES ($1, $2, $3, $4, $5, '2031-01-01T10:00Z', '2031-01-01T10:30Z', 'UTC', $6)",
            )
            .bind(company)
            .bind(branch)
            .bind(call)
            .bind(customer)
            .bind(service)
            .bind(key.to_string().repeat(64))
        };
    let err = appointment(a.0, a_branch.0, a_customer, b_service, 'a').execute(&db.pool).await.unwrap_err();
    assert_eq!(db_constraint(err), "appointments_company_id_service_id_fkey");
    let err = appointment(a.0, a_branch.0, b_customer, a_service, 'a').execute(&db.pool).await.unwrap_err();
    assert_eq!(db_constraint(err), "appointments_company_id_customer_id_fkey");
    let err = appointment(b.0, b_branch.0, b_customer, b_service, 'a').execute(&db.pool).await.unwrap_err();
    assert_eq!(db_constraint(err), "appointments_company_id_call_id_fkey");

    // The idempotency key makes a second identical appointment impossible.
    appointment(a.0, a_branch.0, a_customer, a_service, 'b').execute(&db.pool).await.unwrap();
    let err = appointment(a.0, a_branch.0, a_customer, a_service, 'b').execute(&db.pool).await.unwrap_err();
    assert_eq!(db_constraint(err), "appointments_company_id_idempotency_key_key");
}

#[tokio::test]
async fn every_appointment_status_change_is_in_its_history() {
    let db = TestDb::create().await;
    let cipher = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
    let [(a, a_branch, _), _] = two_companies(&db, &cipher).await;
    let service = tenants::add_service(&db.pool, a, a_branch, &CLEANING).await.unwrap();
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, timezone, idempotency_key)
         VALUES ($1, $2, $3, '2031-01-01T10:00Z', '2031-01-01T10:30Z', 'UTC', $4) RETURNING id",
    )
    .bind(a.0)
    .bind(a_branch.0)
    .bind(service)
    .bind("c".repeat(64))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('callgate.status_reason', 'booked in Cal.com', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE appointments SET status = 'booked', calcom_sync_status = 'synced' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Not a status change: no history row.
    sqlx::query("UPDATE appointments SET notes = 'x' WHERE id = $1").bind(id).execute(&db.pool).await.unwrap();
    type Change = (Option<String>, String, Option<String>, String, Option<String>);
    let history: Vec<Change> = sqlx::query_as(
        "SELECT from_status, to_status, from_sync_status, to_sync_status, reason
         FROM appointment_status_history WHERE appointment_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        history,
        vec![
            (None, "pending".into(), None, "pending".into(), None),
            (
                Some("pending".into()),
                "booked".into(),
                Some("pending".into()),
                "synced".into(),
                Some("booked in Cal.com".into())
            ),
        ]
    );
}

/// The values a CHECK constraint allows for `table.column`, as `col IN ('a', 'b')` lists them.
async fn allowed(db: &TestDb, table: &str, column: &str) -> std::collections::BTreeSet<String> {
    let definitions: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c'",
    )
    .bind(table)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let definition = definitions
        .iter()
        .find(|d| d.starts_with(&format!("CHECK (({column} = ANY")))
        .unwrap_or_else(|| panic!("no value list for {table}.{column} in {definitions:?}"));
    definition.split('\'').skip(1).step_by(2).map(str::to_owned).collect()
}

#[tokio::test]
async fn the_spellings_match_the_schema() {
    use callgate_worker::status::{AppointmentStatus, CustomerLink, EventOutcome, SyncStatus};
    fn spelled<T: Copy>(all: &[T], sql: fn(T) -> &'static str) -> std::collections::BTreeSet<String> {
        all.iter().map(|v| sql(*v).to_owned()).collect()
    }
    let db = TestDb::create().await;
    assert_eq!(allowed(&db, "processed_events", "outcome").await, spelled(EventOutcome::ALL, EventOutcome::as_sql));
    assert_eq!(allowed(&db, "calls", "customer_link").await, spelled(CustomerLink::ALL, CustomerLink::as_sql));
    assert_eq!(
        allowed(&db, "appointments", "status").await,
        spelled(AppointmentStatus::ALL, AppointmentStatus::as_sql)
    );
    assert_eq!(allowed(&db, "appointments", "calcom_sync_status").await, spelled(SyncStatus::ALL, SyncStatus::as_sql));
    let call_statuses = [CallStatus::Queued, CallStatus::Ringing, CallStatus::InProgress, CallStatus::Ended];
    assert_eq!(allowed(&db, "calls", "status").await, spelled(&call_statuses, CallStatus::as_str));
    for status in call_statuses {
        assert_eq!(CallStatus::from_sql(status.as_str()), Some(status));
    }
}

/// A call's later events advance these columns (`worker/src/apply/store.rs`, `write_calls`).
/// An index on any of them makes every such update rewrite all of the row's index entries
/// instead of a heap-only (HOT) update on the same page; and a page needs free room for the
/// new version. With both, at 1,000 webhooks/s 87 % of call updates were heap-only, against
/// 51 % with an index on `started_at` and full pages (BENCHMARKS.md, "Calls updated in place").
#[tokio::test]
async fn a_calls_later_events_update_it_in_place_without_rewriting_its_indexes() {
    let db = TestDb::create().await;
    let advanced = [
        "status",
        "progress",
        "progress_seq",
        "last_event_at",
        "direction",
        "started_at",
        "ended_at",
        "duration_ms",
        "transcript",
        "summary",
        "analysis",
        "cost",
        "disconnection_reason",
        "agent_id",
        "agent_version",
        "language",
        "sentiment",
        "cost_breakdown",
        "recording_url",
        "recording_multichannel_url",
        "recording_sid",
        "customer_link",
    ];
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'calls'::regclass")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    for index in &indexes {
        let words: Vec<&str> = index.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
        for column in advanced {
            assert!(!words.contains(&column), "{index} covers {column}, which a call's later events advance");
        }
    }
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'calls'::regclass")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let fillfactor: Option<u32> = options
        .unwrap_or_default()
        .iter()
        .find_map(|option| option.strip_prefix("fillfactor=").and_then(|v| v.parse().ok()));
    assert!(fillfactor.is_some_and(|f| f <= 90), "calls' pages keep no room for updates: {fillfactor:?}");
}
