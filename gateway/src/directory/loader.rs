//! Reads the directory from Postgres: accounts (decrypting their secrets once each), then
//! numbers. Every query here is exercised by the integration tests against a real database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use callgate_contract::booking::CalendarRoute;
use callgate_contract::secrets::{
    CalcomColumn, calcom_binding, previous_signing_secret_binding, signing_secret_binding,
};
use callgate_contract::{
    BranchId, CalcomAccountId, CompanyId, E164, PhoneNumberId, Provider, ProviderAccountId, Route, SecretCipher,
    SecretError,
};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use callgate_contract::settings::parse_settings;

use super::{Account, CalendarEntry, Calendars, ChangeSet, Directory, NumberEntry, RotatingSecret};
use crate::providers::retell;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("directory query failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why one account was left out (logged with its id; never with secret material).
#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error("unknown provider {0:?}")]
    Provider(String),
    #[error("sealed secret does not open: {0}")]
    Secret(#[from] callgate_contract::SecretError),
    #[error("settings invalid: {0}")]
    Settings(#[from] serde_json::Error),
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    company_id: Uuid,
    provider: String,
    signing_secret: Vec<u8>,
    previous_signing_secret: Option<Vec<u8>>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    settings: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct NumberRow {
    id: Uuid,
    company_id: Uuid,
    branch_id: Uuid,
    provider_account_id: Uuid,
    e164: String,
    provider_number_id: Option<String>,
    provider_agent_id: Option<String>,
    // What Retell's inbound answer is built from; NULL for other providers' numbers, so a
    // million of them are not read and copied for nothing.
    company_name: Option<String>,
    branch_name: Option<String>,
    inbound_agent_id: Option<String>,
    inbound_agent_version: Option<i32>,
    inbound_variables: Option<serde_json::Value>,
}

const ACCOUNTS_SQL: &str = "
    SELECT pa.id, pa.company_id, pa.provider, pa.signing_secret, pa.previous_signing_secret,
           pa.previous_secret_expires_at, pa.settings
    FROM provider_accounts pa
    JOIN companies c ON c.id = pa.company_id
    WHERE pa.deleted_at IS NULL AND c.deleted_at IS NULL";

/// Active numbers whose branch, company and account are active too, the company not suspended.
const NUMBERS_SQL: &str = "
    SELECT pn.id, pn.company_id, pn.branch_id, pn.provider_account_id, pn.e164,
           pn.provider_number_id, pn.provider_agent_id,
           CASE WHEN pa.provider = 'retell' THEN c.name END AS company_name,
           CASE WHEN pa.provider = 'retell' THEN b.name END AS branch_name,
           CASE WHEN pa.provider = 'retell' THEN pn.inbound_agent_id END AS inbound_agent_id,
           CASE WHEN pa.provider = 'retell' THEN pn.inbound_agent_version END AS inbound_agent_version,
           CASE WHEN pa.provider = 'retell' THEN pn.inbound_variables END AS inbound_variables
    FROM phone_numbers pn
    JOIN branches b ON b.company_id = pn.company_id AND b.id = pn.branch_id
    JOIN companies c ON c.id = pn.company_id
    JOIN provider_accounts pa ON pa.company_id = pn.company_id AND pa.id = pn.provider_account_id
    WHERE pn.deleted_at IS NULL AND b.deleted_at IS NULL AND c.deleted_at IS NULL
      AND c.suspended_at IS NULL AND pa.deleted_at IS NULL";

#[derive(sqlx::FromRow)]
struct CalendarRow {
    id: Uuid,
    company_id: Uuid,
    webhook_path: String,
    webhook_secret: Vec<u8>,
    previous_webhook_secret: Option<Vec<u8>>,
    previous_webhook_secret_expires_at: Option<DateTime<Utc>>,
}

const CALENDARS_SQL: &str = "
    SELECT ca.id, ca.company_id, ca.webhook_path, ca.webhook_secret, ca.previous_webhook_secret,
           ca.previous_webhook_secret_expires_at
    FROM calcom_accounts ca
    JOIN companies c ON c.id = ca.company_id
    WHERE ca.deleted_at IS NULL AND c.deleted_at IS NULL";

/// Loads the directory, whole or in part.
#[derive(Debug, Clone)]
pub struct Loader {
    pool: PgPool,
    cipher: Arc<SecretCipher>,
}

impl Loader {
    pub fn new(pool: PgPool, cipher: Arc<SecretCipher>) -> Self {
        Self { pool, cipher }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every active number.
    pub async fn load_full(&self) -> Result<Directory, LoadError> {
        let accounts = self.accounts(None).await?;
        // A full load reads every row, so hash joins are always right; but right after a bulk
        // import, before autovacuum has analysed the tables, the planner can pick nested loops
        // over the million numbers and the load takes minutes instead of 2 s (seen in the load
        // test). Forbid them for this statement only.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL enable_nestloop = off").execute(&mut *tx).await?;
        let rows = sqlx::query_as::<_, NumberRow>(NUMBERS_SQL).fetch(&mut *tx);
        let entries = self.entries(rows, &accounts.valid).await?;
        tx.commit().await?;
        let calendars = self.calendars(&Calendars::new(), None).await?;
        Ok(Directory::from_entries(entries, accounts.valid.len(), accounts.invalid).with_calendars(calendars))
    }

    /// `current` with the rows inside `changes` re-read.
    pub async fn load_changes(&self, current: &Directory, changes: &ChangeSet) -> Result<Directory, LoadError> {
        if changes.all {
            return self.load_full().await;
        }
        let mut fresh = Vec::new();
        let mut account_ids: HashSet<Uuid> = changes.accounts.clone();
        let scopes = [
            ("pn.id", &changes.numbers),
            ("pn.provider_account_id", &changes.accounts),
            ("pn.branch_id", &changes.branches),
            ("pn.company_id", &changes.companies),
        ];
        let mut rows: Vec<NumberRow> = Vec::new();
        for (column, ids) in scopes {
            if ids.is_empty() {
                continue;
            }
            let ids: Vec<Uuid> = ids.iter().copied().collect();
            let sql = format!("{NUMBERS_SQL} AND {column} = ANY($1)");
            rows.extend(sqlx::query_as::<_, NumberRow>(&sql).bind(ids).fetch_all(&self.pool).await?);
        }
        account_ids.extend(rows.iter().map(|r| r.provider_account_id));
        let reloaded: Vec<Uuid> = account_ids.iter().copied().collect();
        let accounts = self.accounts(Some(reloaded.clone())).await?;
        let stream = futures::stream::iter(rows.into_iter().map(Ok::<_, sqlx::Error>));
        fresh.extend(self.entries(stream, &accounts.valid).await?);
        let mut invalid = current.invalid_accounts().clone();
        for id in &reloaded {
            invalid.remove(id);
        }
        invalid.extend(accounts.invalid);
        let active: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM ({ACCOUNTS_SQL}) a")).fetch_one(&self.pool).await?;
        let loaded = usize::try_from(active).unwrap_or(0).saturating_sub(invalid.len());
        let next = current.with_changes(changes, fresh, loaded, invalid);
        if changes.calendars.is_empty() && changes.companies.is_empty() {
            return Ok(next);
        }
        let calendars = self.calendars(current.calendars(), Some(changes)).await?;
        Ok(next.with_calendars(calendars))
    }

    /// The Cal.com endpoints: all of them, or `current` with those of the changed accounts and
    /// companies re-read.
    async fn calendars(&self, current: &Calendars, changes: Option<&ChangeSet>) -> Result<Calendars, LoadError> {
        let rows = match changes {
            None => sqlx::query_as::<_, CalendarRow>(CALENDARS_SQL).fetch_all(&self.pool).await?,
            Some(changes) => {
                let accounts: Vec<Uuid> = changes.calendars.iter().copied().collect();
                let companies: Vec<Uuid> = changes.companies.iter().copied().collect();
                sqlx::query_as::<_, CalendarRow>(&format!(
                    "{CALENDARS_SQL} AND (ca.id = ANY($1) OR ca.company_id = ANY($2))"
                ))
                .bind(accounts)
                .bind(companies)
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut calendars = current.clone();
        if let Some(changes) = changes {
            calendars.retain(|_, entry| {
                !changes.calendars.contains(&entry.route.calcom_account_id.0)
                    && !changes.companies.contains(&entry.route.company_id.0)
            });
        }
        for row in rows {
            let id = row.id;
            match self.calendar(row) {
                Ok((path, entry)) => {
                    calendars.insert(path, Arc::new(entry));
                }
                Err(error) => {
                    tracing::error!(calcom_account_id = %id, %error, "Cal.com account left out of the directory")
                }
            }
        }
        Ok(calendars)
    }

    fn calendar(&self, row: CalendarRow) -> Result<(Arc<str>, CalendarEntry), SecretError> {
        let webhook_secret = self.open_rotating(
            &row.webhook_secret,
            &calcom_binding(row.id, CalcomColumn::WebhookSecret),
            row.previous_webhook_secret.as_deref(),
            &calcom_binding(row.id, CalcomColumn::PreviousWebhookSecret),
            row.previous_webhook_secret_expires_at,
        )?;
        let route = CalendarRoute { company_id: CompanyId(row.company_id), calcom_account_id: CalcomAccountId(row.id) };
        Ok((Arc::from(row.webhook_path), CalendarEntry { route, webhook_secret }))
    }

    /// Opens a secret and, if there is one, the secret it is replacing; each sealed under its
    /// own binding.
    fn open_rotating(
        &self,
        current: &[u8],
        current_binding: &[u8],
        previous: Option<&[u8]>,
        previous_binding: &[u8],
        previous_expires_at: Option<DateTime<Utc>>,
    ) -> Result<RotatingSecret, SecretError> {
        Ok(RotatingSecret {
            current: self.cipher.open(current, current_binding)?,
            previous: previous
                .map(|sealed| Ok::<_, SecretError>((self.cipher.open(sealed, previous_binding)?, previous_expires_at)))
                .transpose()?,
        })
    }

    async fn accounts(&self, only: Option<Vec<Uuid>>) -> Result<LoadedAccounts, LoadError> {
        let rows = match only {
            None => sqlx::query_as::<_, AccountRow>(ACCOUNTS_SQL).fetch_all(&self.pool).await?,
            Some(ids) => {
                sqlx::query_as::<_, AccountRow>(&format!("{ACCOUNTS_SQL} AND pa.id = ANY($1)"))
                    .bind(ids)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut loaded = LoadedAccounts::default();
        for row in rows {
            let id = row.id;
            match self.account(row) {
                Ok(account) => {
                    loaded.valid.insert(id, Arc::new(account));
                }
                Err(error) => {
                    tracing::error!(provider_account_id = %id, %error, "provider account left out of the directory");
                    loaded.invalid.insert(id);
                }
            }
        }
        Ok(loaded)
    }

    fn account(&self, row: AccountRow) -> Result<Account, AccountError> {
        let provider: Provider = row.provider.parse().map_err(|_| AccountError::Provider(row.provider.clone()))?;
        let settings = parse_settings(provider, &row.settings)?;
        let signing_secret = self.open_rotating(
            &row.signing_secret,
            &signing_secret_binding(row.id),
            row.previous_signing_secret.as_deref(),
            &previous_signing_secret_binding(row.id),
            row.previous_secret_expires_at,
        )?;
        Ok(Account {
            id: ProviderAccountId(row.id),
            company_id: CompanyId(row.company_id),
            provider,
            signing_secret,
            settings,
        })
    }

    async fn entries<S>(&self, rows: S, accounts: &HashMap<Uuid, Arc<Account>>) -> Result<Vec<NumberEntry>, LoadError>
    where
        S: futures::Stream<Item = Result<NumberRow, sqlx::Error>>,
    {
        // Agent ids repeat across a tenant's numbers: share one allocation per id.
        let mut interned: HashMap<String, Arc<str>> = HashMap::new();
        let mut intern = |s: Option<String>| -> Option<Arc<str>> {
            s.map(|s| interned.entry(s).or_insert_with_key(|k| Arc::from(k.as_str())).clone())
        };
        // A branch's numbers mostly answer Retell's inbound webhook alike: one answer each.
        let mut answers: HashMap<InboundKey, Arc<str>> = HashMap::new();
        let mut entries = Vec::new();
        futures::pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let Some(account) = accounts.get(&row.provider_account_id) else {
                continue; // account invalid (already logged) or deleted meanwhile
            };
            let Ok(number) = E164::parse(&row.e164) else {
                tracing::error!(phone_number_id = %row.id, "stored number is not E.164; left out");
                continue;
            };
            let route = Route {
                company_id: CompanyId(row.company_id),
                branch_id: BranchId(row.branch_id),
                phone_number_id: PhoneNumberId(row.id),
                provider_account_id: ProviderAccountId(row.provider_account_id),
                number,
            };
            let retell_inbound = (account.provider == Provider::Retell).then(|| {
                let key = InboundKey::of(&row);
                answers.entry(key).or_insert_with(|| retell_inbound(&row, &route)).clone()
            });
            entries.push(NumberEntry {
                route,
                account: account.clone(),
                agent_id: intern(row.provider_agent_id),
                provider_number_id: row.provider_number_id.map(Arc::from),
                retell_inbound,
            });
        }
        Ok(entries)
    }
}

/// What a number's inbound answer depends on: its branch (the names and ids) and its settings.
#[derive(PartialEq, Eq, Hash)]
struct InboundKey {
    branch: Uuid,
    agent_id: Option<String>,
    agent_version: Option<i32>,
    variables: String,
}

impl InboundKey {
    fn of(row: &NumberRow) -> Self {
        Self {
            branch: row.branch_id,
            agent_id: row.inbound_agent_id.clone().or_else(|| row.provider_agent_id.clone()),
            agent_version: row.inbound_agent_version,
            variables: row.inbound_variables.as_ref().map(ToString::to_string).unwrap_or_default(),
        }
    }
}

/// A Retell number's answer to `call_inbound`: its override agent, else its own agent. The
/// metadata names the company and the branch (the number is the call's `to_number`), so the
/// numbers of a branch share the answer.
fn retell_inbound(row: &NumberRow, route: &Route) -> Arc<str> {
    let inbound = retell::Inbound {
        agent_id: row.inbound_agent_id.as_deref().or(row.provider_agent_id.as_deref()),
        agent_version: row.inbound_agent_version,
        business_name: row.company_name.as_deref().unwrap_or_default(),
        branch_name: row.branch_name.as_deref().unwrap_or_default(),
        variables: row.inbound_variables.as_ref().and_then(serde_json::Value::as_object),
        metadata: serde_json::json!({
            "callgate_company_id": route.company_id.0,
            "callgate_branch_id": route.branch_id.0,
        }),
    };
    Arc::from(retell::inbound_answer(&inbound))
}

#[derive(Default)]
struct LoadedAccounts {
    valid: HashMap<Uuid, Arc<Account>>,
    invalid: HashSet<Uuid>,
}
