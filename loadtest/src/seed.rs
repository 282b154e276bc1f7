//! `callgate-loadtest seed`: the model's tenants, written through the onboarding functions the
//! CLI uses (so secrets are sealed and bound like any tenant's); numbers in one statement per
//! company. Run it before starting the gateway: every company's numbers are one NOTIFY.

use std::sync::Arc;

use callgate_contract::{Provider, SecretCipher};
use callgate_worker::tenants::{self, ServiceDetails, TenantError};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::model::Model;

/// Companies seeded at once.
const PARALLEL: usize = 8;

pub async fn seed(pool: &PgPool, cipher: Arc<SecretCipher>, model: &Model, calcom: bool) -> Result<u64, TenantError> {
    let bar = ProgressBar::new(u64::from(model.companies));
    bar.set_style(
        ProgressStyle::with_template("seeding {bar:40} {pos}/{len} companies, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    let results: Vec<Result<bool, TenantError>> = futures::stream::iter(0..model.companies)
        .map(|company| {
            let (pool, cipher, bar) = (pool.clone(), cipher.clone(), bar.clone());
            async move {
                let created = seed_company(&pool, &cipher, model, company, calcom).await;
                bar.inc(1);
                created
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut created = 0;
    for result in results {
        if result? {
            created += 1;
        }
    }
    // Otherwise autovacuum works through the new million rows during the measured legs.
    sqlx::query("VACUUM (ANALYZE) companies, branches, provider_accounts, phone_numbers, services, calcom_accounts")
        .execute(pool)
        .await?;
    Ok(created)
}

/// One company: branch, an account per provider, a service, its numbers (and Cal.com). False
/// when it exists already (seeding again is harmless).
async fn seed_company(
    pool: &PgPool,
    cipher: &SecretCipher,
    model: &Model,
    company: u32,
    calcom: bool,
) -> Result<bool, TenantError> {
    let slug = Model::slug(company);
    let mut tx = pool.begin().await?;
    if tenants::find_company(&mut *tx, &slug).await?.is_some() {
        return Ok(false);
    }
    let id = tenants::create_company(&mut *tx, &format!("Load test {company}"), &slug).await?;
    let branch = tenants::create_branch(&mut *tx, id, "Main", "America/New_York").await?;
    let mut accounts = Vec::new();
    for provider in [Provider::Retell, Provider::Vapi, Provider::Twilio] {
        let settings = match provider {
            Provider::Vapi => serde_json::json!({"auth": {"mode": "secret"}}),
            Provider::Twilio => serde_json::json!({"public_base_url": model.twilio_public_url}),
            Provider::Retell => serde_json::json!({}),
        };
        let secret = Model::secret(company, provider);
        let account = tenants::create_provider_account(
            &mut *tx,
            cipher,
            id,
            provider,
            &format!("{slug}-{provider}"),
            secret.as_bytes(),
            &settings,
        )
        .await?;
        accounts.push(account.0);
    }
    let service = ServiceDetails {
        name: "Check-up",
        aliases: &["checkup".to_owned()],
        duration_minutes: 30,
        calcom_event_type_id: Some(Model::event_type(company)),
    };
    tenants::add_service(&mut *tx, id, branch, &service).await?;
    let numbers: Vec<String> = (0..model.per_company).map(|k| model.number(company, k).to_string()).collect();
    let owners: Vec<uuid::Uuid> = (0..model.per_company).map(|k| accounts[(k % 3) as usize]).collect();
    sqlx::query(
        "INSERT INTO phone_numbers (company_id, branch_id, provider_account_id, e164) \
         SELECT $1, $2, account, e164 FROM unnest($3::uuid[], $4::text[]) AS n(account, e164)",
    )
    .bind(id.0)
    .bind(branch.0)
    .bind(&owners)
    .bind(&numbers)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if calcom {
        let key = Model::calcom_key(company);
        tenants::set_calcom_account(pool, cipher, id, key.as_bytes(), format!("whsec-{slug}").as_bytes(), None, None)
            .await?;
    }
    Ok(true)
}
