//! The onboarding commands, run as an engineer runs them, against a real Postgres.

#![allow(clippy::unwrap_used)]

mod common;

use callgate_contract::SecretCipher;
use callgate_contract::secrets::{previous_signing_secret_binding, signing_secret_binding};
use common::{fresh_database, worker};
use sqlx::postgres::PgPoolOptions;

async fn sealed(url: &str, account: &str, column: &str) -> Vec<u8> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await.unwrap();
    let id: uuid::Uuid = account.parse().unwrap();
    sqlx::query_scalar(&format!("SELECT {column} FROM provider_accounts WHERE id = $1"))
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_engineer_onboards_a_business_from_the_command_line() {
    let url = fresh_database().await;
    let key = SecretCipher::generate_key();
    let env = [("CALLGATE_DATABASE_URL", url.as_str()), ("CALLGATE_SECRET_KEY", key.as_str()), ("USER", "carla")];
    let cipher = SecretCipher::from_base64::<&str>(&key, &[]).unwrap();

    assert!(worker(&env, &["migrate"], "").ok);
    assert!(worker(&env, &["migrate"], "").ok, "migrating twice is a no-op");
    let company = worker(&env, &["tenant", "add-company", "--name", "Acme Dental", "--slug", "acme"], "");
    assert!(company.ok, "{}", company.stderr);
    assert!(company.stdout.parse::<uuid::Uuid>().is_ok(), "prints the id: {}", company.stdout);
    let branch = ["tenant", "add-branch", "--company", "acme", "--name", "Downtown", "--timezone", "America/Chicago"];
    assert!(worker(&env, &branch, "").ok);

    let account_args = |settings: &'static str| {
        vec![
            "tenant",
            "add-account",
            "--company",
            "acme",
            "--provider",
            "twilio",
            "--external-id",
            "AC1",
            "--settings",
            settings,
        ]
    };
    // Bad settings and a missing secret are refused before anything is written.
    let bad = worker(&env, &account_args(r#"{"public_url":"https://hooks.acme.test"}"#), "tok-123\n");
    assert!(!bad.ok && bad.stderr.contains("settings invalid"), "{}", bad.stderr);
    let no_secret = worker(&env, &account_args("{}"), "\n");
    assert!(!no_secret.ok && no_secret.stderr.contains("no secret"), "{}", no_secret.stderr);
    let account = worker(&env, &account_args(r#"{"public_base_url":"https://hooks.acme.test"}"#), "tok-123\n");
    assert!(account.ok, "{}", account.stderr);
    let account_id = account.stdout.clone();

    // The secret is sealed and bound to its row: it opens to exactly what was piped in.
    let current = sealed(&url, &account_id, "signing_secret").await;
    let binding = signing_secret_binding(account_id.parse().unwrap());
    assert_eq!(cipher.open(&current, &binding).unwrap().expose(), b"tok-123");

    let number = [
        "tenant",
        "add-number",
        "--company",
        "acme",
        "--branch",
        "downtown",
        "--account",
        &account_id,
        "--number",
        "(415) 555-0100",
    ];
    assert!(worker(&env, &number, "").ok);
    let again = worker(&env, &number, "");
    assert!(!again.ok && again.stderr.contains("phone_numbers_e164_active"), "{}", again.stderr);

    let service = [
        "tenant",
        "add-service",
        "--company",
        "acme",
        "--branch",
        "Downtown",
        "--name",
        "Teeth Cleaning",
        "--aliases",
        "cleaning, hygiene visit",
        "--duration-minutes",
        "45",
        "--calcom-event-type-id",
        "1234",
    ];
    let added = worker(&env, &service, "");
    assert!(added.ok, "{}", added.stderr);
    let fields = ["tenant", "set-appointment-fields", "--company", "acme", "--fields"];
    let unknown = worker(&env, &[&fields[..], &[r#"{"when":"slot"}"#]].concat(), "");
    assert!(!unknown.ok && unknown.stderr.contains("unknown appointment field"), "{}", unknown.stderr);
    assert!(worker(&env, &[&fields[..], &[r#"{"start":"slot"}"#]].concat(), "").ok);

    let show = worker(&env, &["tenant", "show", "--company", "acme"], "");
    assert!(show.ok);
    for expected in [
        "Downtown",
        "America/Chicago",
        "twilio",
        "AC1",
        "+14155550100",
        "hooks.acme.test",
        "Teeth Cleaning",
        "aliases [cleaning, hygiene visit]",
        "event type 1234",
        "start: \"slot\"",
        "service: \"service\"",
    ] {
        assert!(show.stdout.contains(expected), "missing {expected}: {}", show.stdout);
    }
    assert!(!show.stdout.contains("tok-123"));

    let rotate = worker(&env, &["tenant", "rotate-secret", "--account", &account_id], "tok-456\n");
    assert!(rotate.ok, "{}", rotate.stderr);
    let current = sealed(&url, &account_id, "signing_secret").await;
    assert_eq!(cipher.open(&current, &binding).unwrap().expose(), b"tok-456");
    let previous = sealed(&url, &account_id, "previous_signing_secret").await;
    let previous_binding = previous_signing_secret_binding(account_id.parse().unwrap());
    assert_eq!(cipher.open(&previous, &previous_binding).unwrap().expose(), b"tok-123");

    let remove = ["tenant", "remove-number", "--number", "+1 415 555 0100"];
    assert!(worker(&env, &remove, "").ok);
    let gone = worker(&env, &remove, "");
    assert!(!gone.ok && gone.stderr.contains("no active row"), "{}", gone.stderr);
    let unknown = worker(&env, &["tenant", "show", "--company", "nobody"], "");
    assert!(!unknown.ok && unknown.stderr.contains("company \"nobody\" not found"), "{}", unknown.stderr);

    // Every change is in the audit trail, with who made it (the OS user here), and no secret.
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let audit: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, selection::text FROM operator_actions ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(_, action, _)| action.as_str()).collect();
    for expected in ["tenant add-company", "tenant add-branch", "tenant add-account", "tenant add-number"] {
        assert!(actions.contains(&expected), "{expected} missing: {actions:?}");
    }
    assert_eq!(actions.iter().filter(|a| **a == "tenant rotate-secret").count(), 1);
    assert_eq!(actions.iter().filter(|a| **a == "tenant remove-number").count(), 1, "the refused one is not recorded");
    assert!(audit.iter().all(|(actor, _, _)| actor == "carla"), "{audit:?}");
    assert!(audit.iter().all(|(_, _, selection)| !selection.contains("tok-")), "a secret in the trail: {audit:?}");
}

#[tokio::test]
async fn set_calcom_seals_both_secrets_prints_the_webhook_path_and_rotates() {
    use callgate_contract::secrets::{CalcomColumn, calcom_binding};
    let url = fresh_database().await;
    let key = SecretCipher::generate_key();
    let env = [("CALLGATE_DATABASE_URL", url.as_str()), ("CALLGATE_SECRET_KEY", key.as_str())];
    let cipher = SecretCipher::from_base64::<&str>(&key, &[]).unwrap();
    assert!(worker(&env, &["migrate"], "").ok);
    assert!(worker(&env, &["tenant", "add-company", "--name", "Acme", "--slug", "acme"], "").ok);
    let set = ["tenant", "set-calcom", "--company", "acme"];
    let one_line = worker(&env, &set, "cal_live_abc\n");
    assert!(!one_line.ok && one_line.stderr.contains("two lines"), "{}", one_line.stderr);

    let first = worker(&env, &set, "cal_live_abc\nwhsec-1\n");
    assert!(first.ok, "{}", first.stderr);
    let path = first.stdout.strip_prefix("/v1/webhooks/calcom/").unwrap().to_owned();
    assert_eq!(path.len(), 24);
    let second = worker(&env, &[&set[..], &["--rate-per-minute", "60"]].concat(), "cal_live_def\nwhsec-2\n");
    assert!(second.ok, "{}", second.stderr);
    assert_eq!(second.stdout, first.stdout, "the endpoint survives a credential change");

    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let (id, api_key, secret, previous, rate): (uuid::Uuid, Vec<u8>, Vec<u8>, Vec<u8>, i32) = sqlx::query_as(
        "SELECT id, api_key, webhook_secret, previous_webhook_secret, rate_per_minute FROM calcom_accounts",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let open = |sealed: &[u8], column| cipher.open(sealed, &calcom_binding(id, column)).unwrap().expose().to_vec();
    assert_eq!(open(&api_key, CalcomColumn::ApiKey), b"cal_live_def");
    assert_eq!(open(&secret, CalcomColumn::WebhookSecret), b"whsec-2");
    assert_eq!(open(&previous, CalcomColumn::PreviousWebhookSecret), b"whsec-1");
    assert_eq!(rate, 60);
    assert!(!api_key.windows(6).any(|w| w == b"cal_li"), "stored sealed");
    let gates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM calcom_rate_gates g JOIN calcom_accounts ca ON ca.gate_key = g.gate_key",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(gates, 1, "the account's current key has its rate gate");
    let show = worker(&env, &["tenant", "show", "--company", "acme"], "");
    assert!(show.stdout.contains(&format!("webhook {}  rate 60/min", first.stdout)), "{}", show.stdout);
    assert!(!show.stdout.contains("cal_live") && !show.stdout.contains("whsec"), "no secrets shown");
}

#[tokio::test]
async fn the_demo_tenant_is_created_once_with_services_booked_through_calcom() {
    let url = fresh_database().await;
    let key = SecretCipher::generate_key();
    let env = [("CALLGATE_DATABASE_URL", url.as_str()), ("CALLGATE_SECRET_KEY", key.as_str())];
    assert!(worker(&env, &["migrate"], "").ok);
    let first = worker(&env, &["demo-tenant"], "");
    assert_eq!(first.stdout, "demo tenant demo-dental created", "{}", first.stderr);
    assert_eq!(worker(&env, &["demo-tenant"], "").stdout, "demo tenant demo-dental already there");
    let show = worker(&env, &["tenant", "show", "--company", "demo-dental"], "").stdout;
    assert!(show.contains("cal.com event type 1001") && show.contains("cal.com event type 1002"), "{show}");
    assert!(show.contains("calcom  ") && show.contains("webhook /v1/webhooks/calcom/"), "{show}");
}
