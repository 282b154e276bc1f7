//! A tenant with one account and one number per provider, through the onboarding functions.

use callgate_contract::{BranchId, CompanyId, E164, PhoneNumberId, Provider, ProviderAccountId, SecretCipher};
use callgate_worker::tenants::{self, NumberDetails, ServiceDetails};

use crate::TestDb;

#[derive(Debug, Clone)]
pub struct Tenant {
    pub company: CompanyId,
    pub branch: BranchId,
    pub retell_account: ProviderAccountId,
    pub vapi_account: ProviderAccountId,
    pub twilio_account: ProviderAccountId,
    pub retell_number: (PhoneNumberId, E164),
    pub vapi_number: (PhoneNumberId, E164),
    pub twilio_number: (PhoneNumberId, E164),
    pub retell_key: String,
    pub vapi_secret: String,
    pub twilio_token: String,
}

/// The branch's services: name, aliases, minutes, Cal.com event type.
pub const SERVICES: &[(&str, &[&str], i32, i64)] =
    &[("Teeth Cleaning", &["cleaning", "hygiene visit"], 45, 101), ("Check-up", &["checkup", "exam"], 30, 102)];

pub const VAPI_ASSISTANT: &str = "asst-test-1";
pub const VAPI_NUMBER_ID: &str = "vapi-pn-1";

/// The one tenant the worker benches feed: numbers +14155550100…, secrets sealed with the
/// test key.
pub async fn seed_bench_tenant(db: &TestDb) -> Tenant {
    let cipher = SecretCipher::from_base64::<&str>(&crate::secret_key(), &[]).unwrap();
    seed_tenant(db, &cipher, "bench", "+1415555", "https://hooks.bench.test", serde_json::json!({"mode": "secret"}))
        .await
}

/// Seeds a tenant whose numbers start with `prefix` (e.g. "+1415555" → +14155550100, …0101, …0102).
/// `twilio_public_base_url` is what Twilio would be configured with.
pub async fn seed_tenant(
    db: &TestDb,
    cipher: &SecretCipher,
    slug: &str,
    prefix: &str,
    twilio_public_base_url: &str,
    vapi_auth: serde_json::Value,
) -> Tenant {
    let pool = &db.pool;
    let company = tenants::create_company(pool, &format!("{slug} Inc"), slug).await.unwrap();
    let branch = tenants::create_branch(pool, company, "Main", "America/New_York").await.unwrap();
    let retell_key = format!("retell-key-{slug}");
    let vapi_secret = format!("vapi-secret-{slug}");
    let twilio_token = format!("twilio-token-{slug}");
    let retell_account = tenants::create_provider_account(
        pool,
        cipher,
        company,
        Provider::Retell,
        &format!("ws-{slug}"),
        retell_key.as_bytes(),
        &serde_json::json!({}),
    )
    .await
    .unwrap();
    let vapi_account = tenants::create_provider_account(
        pool,
        cipher,
        company,
        Provider::Vapi,
        &format!("org-{slug}"),
        vapi_secret.as_bytes(),
        &serde_json::json!({ "auth": vapi_auth }),
    )
    .await
    .unwrap();
    let twilio_account = tenants::create_provider_account(
        pool,
        cipher,
        company,
        Provider::Twilio,
        &format!("AC{slug}"),
        twilio_token.as_bytes(),
        &serde_json::json!({ "public_base_url": twilio_public_base_url }),
    )
    .await
    .unwrap();
    let number = |suffix: &str| E164::parse(&format!("{prefix}{suffix}")).unwrap();
    let (rn, vn, tn) = (number("0100"), number("0101"), number("0102"));
    let retell_id =
        tenants::add_phone_number(pool, company, branch, retell_account, rn, &NumberDetails::default()).await.unwrap();
    let vapi_id = tenants::add_phone_number(
        pool,
        company,
        branch,
        vapi_account,
        vn,
        &NumberDetails {
            provider_agent_id: Some(VAPI_ASSISTANT),
            provider_number_id: Some(&format!("{VAPI_NUMBER_ID}-{slug}")),
            label: None,
        },
    )
    .await
    .unwrap();
    let twilio_id =
        tenants::add_phone_number(pool, company, branch, twilio_account, tn, &NumberDetails::default()).await.unwrap();
    for (name, aliases, minutes, event_type) in SERVICES {
        let aliases: Vec<String> = aliases.iter().map(|a| (*a).to_owned()).collect();
        let details = ServiceDetails {
            name,
            aliases: &aliases,
            duration_minutes: *minutes,
            calcom_event_type_id: Some(*event_type),
        };
        tenants::add_service(pool, company, branch, &details).await.unwrap();
    }
    Tenant {
        company,
        branch,
        retell_account,
        vapi_account,
        twilio_account,
        retell_number: (retell_id, rn),
        vapi_number: (vapi_id, vn),
        twilio_number: (twilio_id, tn),
        retell_key,
        vapi_secret,
        twilio_token,
    }
}
