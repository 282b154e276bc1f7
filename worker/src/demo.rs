//! The local demo tenant: one company, one branch, one number per provider, with known
//! secrets, so a newcomer can send signed webhooks within a minute of starting the stack.

use callgate_contract::{E164, Provider, SecretCipher};
use sqlx::PgPool;

use crate::tenants::{self, NumberDetails, ServiceDetails, TenantError};

pub const SLUG: &str = "demo-dental";
pub const RETELL_NUMBER: &str = "+14155550100";
pub const VAPI_NUMBER: &str = "+14155550101";
pub const TWILIO_NUMBER: &str = "+14155550102";
pub const VAPI_ASSISTANT_ID: &str = "demo-assistant";
/// What the demo branch offers: name, aliases, minutes, Cal.com event type (as the local fake
/// Cal.com of `deploy/local/run.sh` knows them).
pub const SERVICES: &[(&str, &[&str], i32, i64)] =
    &[("Teeth Cleaning", &["cleaning", "hygiene visit"], 45, 1001), ("Check-up", &["checkup", "exam"], 30, 1002)];

/// The demo's provider secrets (local use only).
#[derive(Debug, Clone)]
pub struct DemoSecrets {
    pub retell_api_key: String,
    pub vapi_secret: String,
    pub twilio_auth_token: String,
    /// Where Twilio is told to send webhooks (the gateway's public URL).
    pub public_base_url: String,
    pub calcom_api_key: String,
    pub calcom_webhook_secret: String,
}

/// Creates the demo tenant unless it exists. Returns true when it was created.
pub async fn ensure(pool: &PgPool, cipher: &SecretCipher, secrets: &DemoSecrets) -> Result<bool, TenantError> {
    let mut tx = pool.begin().await?;
    if tenants::find_company(&mut *tx, SLUG).await?.is_some() {
        return Ok(false);
    }
    let company = tenants::create_company(&mut *tx, "Demo Dental", SLUG).await?;
    let branch = tenants::create_branch(&mut *tx, company, "Downtown", "America/Los_Angeles").await?;
    let empty = serde_json::json!({});
    let retell = tenants::create_provider_account(
        &mut *tx,
        cipher,
        company,
        Provider::Retell,
        "demo-retell-workspace",
        secrets.retell_api_key.as_bytes(),
        &empty,
    )
    .await?;
    let vapi = tenants::create_provider_account(
        &mut *tx,
        cipher,
        company,
        Provider::Vapi,
        "demo-vapi-org",
        secrets.vapi_secret.as_bytes(),
        &serde_json::json!({ "auth": { "mode": "secret" } }),
    )
    .await?;
    let twilio = tenants::create_provider_account(
        &mut *tx,
        cipher,
        company,
        Provider::Twilio,
        "AC00000000000000000000000000000000",
        secrets.twilio_auth_token.as_bytes(),
        &serde_json::json!({ "public_base_url": secrets.public_base_url }),
    )
    .await?;
    let numbers = [
        (retell, RETELL_NUMBER, NumberDetails { provider_agent_id: Some("demo-retell-agent"), ..Default::default() }),
        (
            vapi,
            VAPI_NUMBER,
            NumberDetails {
                provider_agent_id: Some(VAPI_ASSISTANT_ID),
                provider_number_id: Some("demo-vapi-phone-number"),
                ..Default::default()
            },
        ),
        (twilio, TWILIO_NUMBER, NumberDetails::default()),
    ];
    for (account, number, details) in numbers {
        let number = E164::parse(number).expect("demo numbers are E.164");
        tenants::add_phone_number(&mut *tx, company, branch, account, number, &details).await?;
    }
    for (name, aliases, minutes, event_type) in SERVICES {
        let aliases: Vec<String> = aliases.iter().map(|a| (*a).to_owned()).collect();
        let service = ServiceDetails {
            name,
            aliases: &aliases,
            duration_minutes: *minutes,
            calcom_event_type_id: Some(*event_type),
        };
        tenants::add_service(&mut *tx, company, branch, &service).await?;
    }
    tx.commit().await?;
    let (_, path) = tenants::set_calcom_account(
        pool,
        cipher,
        company,
        secrets.calcom_api_key.as_bytes(),
        secrets.calcom_webhook_secret.as_bytes(),
        None,
        None,
    )
    .await?;
    tracing::info!(webhook = %format!("/v1/webhooks/calcom/{path}"), "demo Cal.com account connected");
    Ok(true)
}
