//! Onboarding: companies, branches, provider accounts (with sealed secrets) and numbers.
//!
//! These are the only functions that write tenant rows; the demo set-up, the tests and the
//! load generator's seed mode all go through them, so every row is written the same way:
//! numbers normalised to E.164, secrets sealed and bound to their row.

use callgate_contract::secrets::{
    CalcomColumn, calcom_binding, previous_signing_secret_binding, signing_secret_binding,
};
use callgate_contract::settings::parse_settings;
use callgate_contract::{
    BranchId, CalcomAccountId, CompanyId, E164, PhoneNumberId, Provider, ProviderAccountId, SecretCipher,
};
use sqlx::{PgExecutor, Row as _};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("secret: {0}")]
    Secret(#[from] callgate_contract::SecretError),
    #[error("provider account {0} not found")]
    AccountNotFound(ProviderAccountId),
    #[error("settings invalid for this provider: {0}")]
    Settings(serde_json::Error),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

pub async fn create_company(db: impl PgExecutor<'_>, name: &str, slug: &str) -> Result<CompanyId, TenantError> {
    let id: Uuid = sqlx::query_scalar("INSERT INTO companies (name, slug) VALUES ($1, $2) RETURNING id")
        .bind(name)
        .bind(slug)
        .fetch_one(db)
        .await?;
    Ok(CompanyId(id))
}

/// The active company with this slug, if any.
pub async fn find_company(db: impl PgExecutor<'_>, slug: &str) -> Result<Option<CompanyId>, TenantError> {
    let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM companies WHERE slug = $1 AND deleted_at IS NULL")
        .bind(slug)
        .fetch_optional(db)
        .await?;
    Ok(id.map(CompanyId))
}

/// The active company with this slug, or `NotFound`.
pub async fn company(db: impl PgExecutor<'_>, slug: &str) -> Result<CompanyId, TenantError> {
    find_company(db, slug).await?.ok_or_else(|| TenantError::NotFound(format!("company {slug:?}")))
}

/// The active branch of `company` with this name (case-insensitive), or `NotFound`.
pub async fn branch(db: impl PgExecutor<'_>, company: CompanyId, name: &str) -> Result<BranchId, TenantError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM branches WHERE company_id = $1 AND lower(name) = lower($2) AND deleted_at IS NULL",
    )
    .bind(company.0)
    .bind(name)
    .fetch_optional(db)
    .await?;
    id.map(BranchId).ok_or_else(|| TenantError::NotFound(format!("branch {name:?}")))
}

/// `timezone` is an IANA name; the schema refuses names Postgres does not know.
pub async fn create_branch(
    db: impl PgExecutor<'_>,
    company: CompanyId,
    name: &str,
    timezone: &str,
) -> Result<BranchId, TenantError> {
    let id: Uuid =
        sqlx::query_scalar("INSERT INTO branches (company_id, name, timezone) VALUES ($1, $2, $3) RETURNING id")
            .bind(company.0)
            .bind(name)
            .bind(timezone)
            .fetch_one(db)
            .await?;
    Ok(BranchId(id))
}

/// What a branch offers, for matching the service a caller asks for. `aliases` are other names
/// callers use; matching ignores case and accents.
pub async fn add_service(
    db: impl PgExecutor<'_>,
    company: CompanyId,
    branch: BranchId,
    service: &ServiceDetails<'_>,
) -> Result<Uuid, TenantError> {
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO services (company_id, branch_id, name, aliases, duration_minutes, calcom_event_type_id) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(company.0)
    .bind(branch.0)
    .bind(service.name)
    .bind(service.aliases)
    .bind(service.duration_minutes)
    .bind(service.calcom_event_type_id)
    .fetch_one(db)
    .await?;
    Ok(id)
}

#[derive(Debug, Clone, Copy)]
pub struct ServiceDetails<'a> {
    pub name: &'a str,
    pub aliases: &'a [String],
    pub duration_minutes: i32,
    pub calcom_event_type_id: Option<i64>,
}

/// Which analysis fields hold a company's appointment requests (see `appointments::FieldMap`).
pub async fn set_appointment_fields(
    db: impl PgExecutor<'_>,
    company: CompanyId,
    fields: &serde_json::Value,
) -> Result<(), TenantError> {
    crate::appointments::FieldMap::validate_overrides(fields).map_err(TenantError::Invalid)?;
    sqlx::query("UPDATE companies SET appointment_fields = $2 WHERE id = $1")
        .bind(company.0)
        .bind(fields)
        .execute(db)
        .await?;
    Ok(())
}

/// A provider login of a company. `secret` is sealed before it leaves this function.
pub async fn create_provider_account(
    db: impl PgExecutor<'_>,
    cipher: &SecretCipher,
    company: CompanyId,
    provider: Provider,
    external_account_id: &str,
    secret: &[u8],
    settings: &serde_json::Value,
) -> Result<ProviderAccountId, TenantError> {
    parse_settings(provider, settings).map_err(TenantError::Settings)?;
    // The id is chosen here because the sealed secret is bound to it.
    let id = Uuid::new_v4();
    let sealed = cipher.seal(secret, &signing_secret_binding(id));
    sqlx::query(
        "INSERT INTO provider_accounts (id, company_id, provider, external_account_id, signing_secret, settings)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(company.0)
    .bind(provider.as_str())
    .bind(external_account_id)
    .bind(sealed)
    .bind(settings)
    .execute(db)
    .await?;
    Ok(ProviderAccountId(id))
}

/// Rotates an account's signing secret: the new one becomes current, the old one stays
/// accepted until `previous_valid_until` (None: until the next rotation).
pub async fn rotate_secret(
    db: impl sqlx::Acquire<'_, Database = sqlx::Postgres>,
    cipher: &SecretCipher,
    account: ProviderAccountId,
    new_secret: &[u8],
    previous_valid_until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), TenantError> {
    let mut tx = db.begin().await?;
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT signing_secret FROM provider_accounts WHERE id = $1 FOR UPDATE")
            .bind(account.0)
            .fetch_optional(&mut *tx)
            .await?;
    let sealed = sealed.ok_or(TenantError::AccountNotFound(account))?;
    let old = cipher.open(&sealed, &signing_secret_binding(account.0))?;
    let previous = cipher.seal(old.expose(), &previous_signing_secret_binding(account.0));
    let current = cipher.seal(new_secret, &signing_secret_binding(account.0));
    sqlx::query(
        "UPDATE provider_accounts
         SET signing_secret = $2, previous_signing_secret = $3,
             previous_secret_expires_at = $4
         WHERE id = $1",
    )
    .bind(account.0)
    .bind(current)
    .bind(previous)
    .bind(previous_valid_until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A company's Cal.com account, created or updated: the API key is replaced; the webhook
/// secret becomes current and the old one stays accepted until `previous_valid_until`.
/// Returns the account and its webhook path segment (`/v1/webhooks/calcom/{path}`).
/// The name of a Cal.com API key's rate gate: a fingerprint of the key, so that every account
/// using one key shares one budget, as Cal.com counts it, without the key leaving its seal.
pub fn calcom_gate_key(api_key: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"callgate calcom api key\0");
    hasher.update(api_key);
    hasher.finalize().to_vec()
}

pub async fn set_calcom_account(
    db: impl sqlx::Acquire<'_, Database = sqlx::Postgres>,
    cipher: &SecretCipher,
    company: CompanyId,
    api_key: &[u8],
    webhook_secret: &[u8],
    rate_per_minute: Option<i32>,
    previous_valid_until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(CalcomAccountId, String), TenantError> {
    let mut tx = db.begin().await?;
    let existing = sqlx::query(
        "SELECT id, webhook_path, webhook_secret FROM calcom_accounts \
         WHERE company_id = $1 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(company.0)
    .fetch_optional(&mut *tx)
    .await?;
    let (id, path) = match existing {
        Some(row) => {
            let id: Uuid = row.try_get("id")?;
            let old: Vec<u8> = row.try_get("webhook_secret")?;
            let old = cipher.open(&old, &calcom_binding(id, CalcomColumn::WebhookSecret))?;
            sqlx::query(
                "UPDATE calcom_accounts SET api_key = $2, webhook_secret = $3, previous_webhook_secret = $4, \
                 previous_webhook_secret_expires_at = $5, rate_per_minute = $6, gate_key = $7 WHERE id = $1",
            )
            .bind(id)
            .bind(cipher.seal(api_key, &calcom_binding(id, CalcomColumn::ApiKey)))
            .bind(cipher.seal(webhook_secret, &calcom_binding(id, CalcomColumn::WebhookSecret)))
            .bind(cipher.seal(old.expose(), &calcom_binding(id, CalcomColumn::PreviousWebhookSecret)))
            .bind(previous_valid_until)
            .bind(rate_per_minute)
            .bind(calcom_gate_key(api_key))
            .execute(&mut *tx)
            .await?;
            (id, row.try_get("webhook_path")?)
        }
        None => {
            // The id is chosen here because the sealed secrets are bound to it.
            let id = Uuid::new_v4();
            let path: String = {
                use rand::Rng as _;
                rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(24).map(char::from).collect()
            };
            sqlx::query(
                "INSERT INTO calcom_accounts (id, company_id, api_key, webhook_path, webhook_secret, rate_per_minute, \
                 gate_key) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(company.0)
            .bind(cipher.seal(api_key, &calcom_binding(id, CalcomColumn::ApiKey)))
            .bind(&path)
            .bind(cipher.seal(webhook_secret, &calcom_binding(id, CalcomColumn::WebhookSecret)))
            .bind(rate_per_minute)
            .bind(calcom_gate_key(api_key))
            .execute(&mut *tx)
            .await?;
            (id, path)
        }
    };
    tx.commit().await?;
    Ok((CalcomAccountId(id), path))
}

/// Details of a number beyond its owner.
#[derive(Debug, Clone, Default)]
pub struct NumberDetails<'a> {
    /// The provider's id of the number (Vapi phoneNumberId, Twilio PN sid).
    pub provider_number_id: Option<&'a str>,
    /// Retell agent id / Vapi assistant id.
    pub provider_agent_id: Option<&'a str>,
    pub label: Option<&'a str>,
}

pub async fn add_phone_number(
    db: impl PgExecutor<'_>,
    company: CompanyId,
    branch: BranchId,
    account: ProviderAccountId,
    number: E164,
    details: &NumberDetails<'_>,
) -> Result<PhoneNumberId, TenantError> {
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO phone_numbers
            (company_id, branch_id, provider_account_id, e164, provider_number_id, provider_agent_id, label)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(company.0)
    .bind(branch.0)
    .bind(account.0)
    .bind(number.to_string())
    .bind(details.provider_number_id)
    .bind(details.provider_agent_id)
    .bind(details.label)
    .fetch_one(db)
    .await?;
    Ok(PhoneNumberId(id))
}

/// Soft-deletes the active row of a number; false when no active row has it.
pub async fn remove_number(db: impl PgExecutor<'_>, number: E164) -> Result<bool, TenantError> {
    let done = sqlx::query("UPDATE phone_numbers SET deleted_at = now() WHERE e164 = $1 AND deleted_at IS NULL")
        .bind(number.to_string())
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What a Retell number answers Retell's inbound call webhook with (besides the business and
/// branch names, always sent).
#[derive(Debug, Clone, Default)]
pub struct InboundSettings {
    /// The agent to take the call; None: the number's own agent.
    pub agent_id: Option<String>,
    pub agent_version: Option<i32>,
    /// Dynamic variables for the agent's prompt (Retell takes strings).
    pub variables: Vec<(String, String)>,
}

/// Sets a Retell number's inbound answer (replacing the previous one); the number's id and
/// company. Refused for a number of another provider.
pub async fn set_inbound(
    db: impl PgExecutor<'_>,
    number: E164,
    settings: &InboundSettings,
) -> Result<(PhoneNumberId, CompanyId), TenantError> {
    if let Some((name, _)) = settings.variables.iter().find(|(name, _)| name.trim().is_empty()) {
        return Err(TenantError::Invalid(format!("a variable needs a name: {name:?}")));
    }
    let variables: serde_json::Map<String, serde_json::Value> =
        settings.variables.iter().map(|(name, value)| (name.clone(), value.clone().into())).collect();
    let row: Option<(Uuid, Uuid, String)> = sqlx::query_as(
        "UPDATE phone_numbers pn SET inbound_agent_id = $2, inbound_agent_version = $3, inbound_variables = $4 \
         FROM provider_accounts pa \
         WHERE pn.e164 = $1 AND pn.deleted_at IS NULL AND pa.company_id = pn.company_id \
           AND pa.id = pn.provider_account_id AND pa.provider = 'retell' \
         RETURNING pn.id, pn.company_id, pa.provider",
    )
    .bind(number.to_string())
    .bind(settings.agent_id.as_deref())
    .bind(settings.agent_version)
    .bind(serde_json::Value::Object(variables))
    .fetch_optional(db)
    .await?;
    let (id, company, _) = row.ok_or_else(|| TenantError::NotFound(format!("an active Retell number {number}")))?;
    Ok((PhoneNumberId(id), CompanyId(company)))
}

#[derive(sqlx::FromRow)]
struct BranchLine {
    id: Uuid,
    name: String,
    timezone: String,
}

#[derive(sqlx::FromRow)]
struct AccountLine {
    id: Uuid,
    provider: String,
    external_account_id: String,
    has_previous: bool,
    previous_secret_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    settings: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct NumberLine {
    id: Uuid,
    e164: String,
    branch: String,
    provider: String,
    provider_number_id: Option<String>,
    provider_agent_id: Option<String>,
}

/// One line per branch, account (never its secret) and active number of a company.
pub async fn describe(db: &sqlx::PgPool, company: CompanyId) -> Result<Vec<String>, TenantError> {
    let branches: Vec<BranchLine> = sqlx::query_as(
        "SELECT id, name, timezone FROM branches WHERE company_id = $1 AND deleted_at IS NULL ORDER BY name",
    )
    .bind(company.0)
    .fetch_all(db)
    .await?;
    let accounts: Vec<AccountLine> = sqlx::query_as(
        "SELECT id, provider, external_account_id, previous_signing_secret IS NOT NULL AS has_previous,
                previous_secret_expires_at, settings
         FROM provider_accounts WHERE company_id = $1 AND deleted_at IS NULL ORDER BY provider, created_at",
    )
    .bind(company.0)
    .fetch_all(db)
    .await?;
    let numbers: Vec<NumberLine> = sqlx::query_as(
        "SELECT pn.id, pn.e164, b.name AS branch, pa.provider, pn.provider_number_id, pn.provider_agent_id
         FROM phone_numbers pn
         JOIN branches b ON b.company_id = pn.company_id AND b.id = pn.branch_id
         JOIN provider_accounts pa ON pa.company_id = pn.company_id AND pa.id = pn.provider_account_id
         WHERE pn.company_id = $1 AND pn.deleted_at IS NULL ORDER BY pn.e164",
    )
    .bind(company.0)
    .fetch_all(db)
    .await?;

    let services: Vec<ServiceLine> = sqlx::query_as(
        "SELECT s.id, s.name, b.name AS branch, s.aliases, s.duration_minutes, s.calcom_event_type_id
         FROM services s JOIN branches b ON b.company_id = s.company_id AND b.id = s.branch_id
         WHERE s.company_id = $1 AND s.deleted_at IS NULL ORDER BY b.name, s.name",
    )
    .bind(company.0)
    .fetch_all(db)
    .await?;
    let fields: serde_json::Value = sqlx::query_scalar("SELECT appointment_fields FROM companies WHERE id = $1")
        .bind(company.0)
        .fetch_one(db)
        .await?;

    let mut lines = vec![format!("appointment fields {:?}", crate::appointments::FieldMap::with_overrides(&fields))];
    for b in branches {
        lines.push(format!("branch  {}  {}  {}", b.id, b.name, b.timezone));
    }
    for a in accounts {
        let previous = match (a.has_previous, a.previous_secret_expires_at) {
            (false, _) => String::from("no previous secret"),
            (true, None) => String::from("previous secret accepted until removed"),
            (true, Some(at)) => format!("previous secret accepted until {}", at.to_rfc3339()),
        };
        lines.push(format!(
            "account {}  {}  {}  {previous}  settings {}",
            a.id, a.provider, a.external_account_id, a.settings
        ));
    }
    for n in numbers {
        let dash = || String::from("-");
        lines.push(format!(
            "number  {}  {}  {}  {}  number-id {}  agent {}",
            n.id,
            n.e164,
            n.branch,
            n.provider,
            n.provider_number_id.unwrap_or_else(dash),
            n.provider_agent_id.unwrap_or_else(dash)
        ));
    }
    for s in services {
        lines.push(format!(
            "service {}  {}  {}  {} min  aliases [{}]  cal.com event type {}",
            s.id,
            s.name,
            s.branch,
            s.duration_minutes,
            s.aliases.join(", "),
            s.calcom_event_type_id.map_or_else(|| String::from("-"), |t| t.to_string())
        ));
    }
    let calcom: Option<(Uuid, String, Option<i32>, i64)> = sqlx::query_as(
        "SELECT id, webhook_path, rate_per_minute,
                (SELECT count(*) FROM appointments a
                 WHERE a.company_id = ca.company_id AND a.calcom_sync_status IN ('pending', 'in_flight'))
         FROM calcom_accounts ca WHERE company_id = $1 AND deleted_at IS NULL",
    )
    .bind(company.0)
    .fetch_optional(db)
    .await?;
    lines.push(match calcom {
        Some((id, path, rate, pending)) => format!(
            "calcom  {id}  webhook /v1/webhooks/calcom/{path}  rate {}  {pending} appointments waiting to be pushed",
            rate.map_or_else(|| String::from("worker default"), |r| format!("{r}/min"))
        ),
        None => String::from("calcom  not connected (tenant set-calcom): appointments wait unpushed"),
    });
    Ok(lines)
}

#[derive(sqlx::FromRow)]
struct ServiceLine {
    id: Uuid,
    name: String,
    branch: String,
    aliases: Vec<String>,
    duration_minutes: i32,
    calcom_event_type_id: Option<i64>,
}

/// Soft-deletes a number: it stops routing, its history stays.
pub async fn remove_phone_number(db: impl PgExecutor<'_>, id: PhoneNumberId) -> Result<bool, TenantError> {
    let done = sqlx::query("UPDATE phone_numbers SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(id.0)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
