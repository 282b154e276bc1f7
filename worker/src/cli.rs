//! `callgate-worker`'s commands: the consumer (`run`), migrations, onboarding, the demo tenant.
//!
//! Onboarding commands print what they created (an id) on stdout, so scripts can capture it.
//! Secrets are read from standard input, never from arguments (they would show in `ps` and in
//! shell history).

use std::io::Read as _;
use std::time::Duration;

use callgate_contract::{E164, Provider, ProviderAccountId, SecretCipher};
use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::RunConfig;
use crate::operate;
use crate::status::SyncStatus;
use crate::tenants::{self, NumberDetails, ServiceDetails, TenantError};
use crate::{MIGRATOR, Worker, demo};

#[derive(Debug, Parser)]
#[command(name = "callgate-worker", version, about = "callgate's database side: migrations, onboarding, consumers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume call events into Postgres (runs until SIGTERM or Ctrl-C).
    Run(Box<RunConfig>),
    /// Apply the schema migrations (safe to run again: applied ones are skipped).
    Migrate(Database),
    /// Register businesses, their branches, provider accounts and numbers.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Cal.com pushes: re-queue the ones that ended, reconcile now.
    #[command(subcommand)]
    Calcom(CalcomCommand),
    /// One caller's data: export it (an access request) or erase it.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Inspect calls.
    #[command(subcommand)]
    Call(CallCommand),
    /// The dead-letter topic: what is in it, and putting it back.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Create the local demo tenant unless it exists.
    DemoTenant(DemoArgs),
    /// Print a fresh random master key for CALLGATE_SECRET_KEY.
    GenerateSecretKey,
    /// Ask a running worker's ops listener (container health checks): exit 0 on 2xx.
    Healthcheck(callgate_ops::HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct Database {
    /// Postgres URL.
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct MasterKey {
    /// Master key sealing provider secrets (base64, 32 bytes).
    #[arg(long, env = "CALLGATE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    /// Older master keys still accepted during a rotation, comma-separated (as the servers).
    #[arg(long, env = "CALLGATE_SECRET_KEYS_PREVIOUS", hide_env_values = true, value_delimiter = ',')]
    pub secret_keys_previous: Vec<callgate_ops::SecretString>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a company; prints its id.
    AddCompany {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[arg(long)]
        name: String,
        /// Lowercase letters, digits and dashes; unique among active companies.
        #[arg(long)]
        slug: String,
    },
    /// Create a branch of a company; prints its id.
    AddBranch {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        /// The company's slug.
        #[arg(long)]
        company: String,
        #[arg(long)]
        name: String,
        /// IANA time zone, e.g. America/Chicago.
        #[arg(long)]
        timezone: String,
    },
    /// Register a provider account; its signing secret is read from standard input. Prints its id.
    AddAccount {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[command(flatten)]
        key: MasterKey,
        #[arg(long)]
        company: String,
        /// retell, vapi or twilio.
        #[arg(long)]
        provider: Provider,
        /// How the provider names the account (Retell workspace, Vapi org id, Twilio AccountSid).
        #[arg(long)]
        external_id: String,
        /// Provider settings as JSON (see the README), validated before anything is written.
        #[arg(long, default_value = "{}")]
        settings: String,
    },
    /// Add a number; any common format is normalised to E.164. Prints its id.
    AddNumber {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[arg(long)]
        company: String,
        /// The branch's name.
        #[arg(long)]
        branch: String,
        /// The provider account (id printed by add-account).
        #[arg(long)]
        account: uuid::Uuid,
        #[command(flatten)]
        number: NumberArg,
        /// The provider's id of the number (Vapi phoneNumberId, Twilio PN sid).
        #[arg(long)]
        provider_number_id: Option<String>,
        /// The agent answering it (Retell agent id, Vapi assistant id).
        #[arg(long)]
        agent_id: Option<String>,
        #[arg(long)]
        label: Option<String>,
    },
    /// Add a service a branch offers; prints its id.
    AddService {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[arg(long)]
        company: String,
        /// The branch's name.
        #[arg(long)]
        branch: String,
        #[arg(long)]
        name: String,
        /// Other names callers use, comma-separated ("cleaning,hygiene visit").
        #[arg(long, value_delimiter = ',')]
        aliases: Vec<String>,
        #[arg(long)]
        duration_minutes: i32,
        /// The Cal.com event type this service is booked as.
        #[arg(long)]
        calcom_event_type_id: Option<i64>,
    },
    /// Name the analysis fields holding appointment requests, as JSON, e.g.
    /// '{"start":"slot","service":"treatment"}'. Keys: start, service, customer_name,
    /// customer_email, notes; unset keys keep their defaults (appointment_start, service, …).
    SetAppointmentFields {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[arg(long)]
        company: String,
        #[arg(long)]
        fields: String,
    },
    /// Stop routing a number (soft delete).
    RemoveNumber {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[command(flatten)]
        number: NumberArg,
    },
    /// Set what a Retell number answers Retell's inbound call webhook with: the agent to take
    /// the call and variables for its prompt (the business and branch names are always sent).
    /// Replaces what was set; with no options, the number's own agent and no extra variables.
    /// Running gateways serve it within a second.
    SetInbound {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[command(flatten)]
        number: NumberArg,
        /// The Retell agent to take the call (default: the number's own).
        #[arg(long)]
        agent_id: Option<String>,
        #[arg(long, requires = "agent_id")]
        agent_version: Option<i32>,
        /// A dynamic variable, `name=value`; repeat for more.
        #[arg(long = "variable", value_parser = parse_variable)]
        variables: Vec<(String, String)>,
    },
    /// Rotate an account's signing secret; the new one is read from standard input. The old
    /// one stays accepted for the given hours (0: refused at once).
    RotateSecret {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[command(flatten)]
        key: MasterKey,
        #[arg(long)]
        account: uuid::Uuid,
        #[arg(long, default_value_t = 24)]
        keep_previous_hours: u32,
    },
    /// Connect a company to Cal.com, or replace its credentials. Standard input holds two
    /// lines: the API key, then the webhook's secret. Prints the webhook path to give Cal.com
    /// (on the gateway: https://<gateway>/v1/webhooks/calcom/<path>).
    SetCalcom {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[command(flatten)]
        key: MasterKey,
        #[arg(long)]
        company: String,
        /// Requests per minute for this key (default: the worker's --calcom-rate-per-minute).
        #[arg(long)]
        rate_per_minute: Option<i32>,
        /// How long the previous webhook secret stays accepted, when replacing one.
        #[arg(long, default_value_t = 24)]
        keep_previous_hours: u32,
    },
    /// Take a company's numbers out of the gateways' directory (within a second); its history,
    /// its Cal.com routing and the events already accepted stay.
    Suspend(CompanyAction),
    /// Put a suspended company's numbers back in the directory.
    Resume(CompanyAction),
    /// Soft-delete a company: its numbers, accounts, Cal.com connection, services, customers,
    /// branches and itself (calls and appointments stay as history). Refused while an
    /// appointment waits for Cal.com, unless --force.
    Offboard {
        #[command(flatten)]
        target: CompanyAction,
        /// Offboard even with appointments waiting for Cal.com (their pushes go on).
        #[arg(long)]
        force: bool,
        /// Print what would be removed and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Finish a master-key rotation: seal again with the current key every secret an older
    /// key (--secret-keys-previous) sealed, a batch of rows per transaction; safe to interrupt
    /// and to run again. When it reports nothing left, the old key can be retired.
    Reseal {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        key: MasterKey,
        #[command(flatten)]
        actor: ActorArg,
        /// Rows per transaction.
        #[arg(long, default_value_t = 100)]
        batch: i64,
        /// Count what would be resealed and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List a company's branches, accounts (never their secrets) and numbers.
    Show {
        #[command(flatten)]
        database: Database,
        #[arg(long)]
        company: String,
    },
}

/// An operator action on one company.
#[derive(Debug, Args)]
pub struct CompanyAction {
    #[command(flatten)]
    pub database: Database,
    #[command(flatten)]
    pub actor: ActorArg,
    /// The company's slug.
    #[arg(long)]
    pub company: String,
}

/// A phone number as typed: E.164, or national with its country code.
#[derive(Debug, Args)]
pub struct NumberArg {
    #[arg(long)]
    pub number: String,
    /// Country calling code for national-format numbers.
    #[arg(long, default_value_t = 1)]
    pub default_country_code: u16,
}

impl NumberArg {
    fn parse(&self) -> Result<E164, CliError> {
        Ok(E164::parse_with_default(&self.number, Some(self.default_country_code))?)
    }
}

/// Who runs an operator command, for the audit trail.
#[derive(Debug, Args)]
pub struct ActorArg {
    /// Your name in the audit trail (default: the OS user).
    #[arg(long, env = "CALLGATE_ACTOR")]
    pub actor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CalcomCommand {
    /// Put appointments whose push ended (failed, needs_review) back in the push's queue, after
    /// what stopped them is fixed. One whose last request may have reached Cal.com is looked up
    /// there before anything is sent again. Prints how many and which; --dry-run stops there.
    Requeue {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        /// One appointment (its push must have ended).
        #[arg(long, required_unless_present = "status")]
        appointment: Option<uuid::Uuid>,
        /// Push outcomes to take, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',')]
        status: Vec<EndedPush>,
        /// Only this company's (its slug).
        #[arg(long)]
        company: Option<String>,
        /// Only those whose last error contains this text (case-insensitive).
        #[arg(long)]
        reason: Option<String>,
        /// Print what would be re-queued and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Reconcile one company with Cal.com now: read the bookings created or changed since its
    /// last pass and apply what no webhook brought (the workers do this every
    /// --calcom-reconcile-interval). Prints what it found.
    Reconcile {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        key: MasterKey,
        #[command(flatten)]
        actor: ActorArg,
        #[command(flatten)]
        api: crate::config::CalcomApi,
        /// The company (its slug).
        #[arg(long)]
        company: String,
        /// Read and print what would change, and keep nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Whom a `customer` command is about: a company's caller, by number, email or both.
#[derive(Debug, Args)]
pub struct PersonArgs {
    #[command(flatten)]
    pub target: CompanyAction,
    /// The caller's number.
    #[arg(long, required_unless_present = "email")]
    pub phone: Option<String>,
    /// Country calling code for a national-format --phone.
    #[arg(long, default_value_t = 1)]
    pub default_country_code: u16,
    /// The caller's email.
    #[arg(long)]
    pub email: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Everything callgate holds about the person, as JSON on standard output (customers,
    /// calls with transcripts and analyses, their events, appointments with history).
    Export(PersonArgs),
    /// Remove the person's data from customers, calls and appointments in one transaction;
    /// prints what changed, and the Cal.com bookings and provider recordings to delete there.
    Erase {
        #[command(flatten)]
        person: PersonArgs,
        /// Count what would be erased and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The topics a DLQ command reads and writes.
#[derive(Debug, Args)]
pub struct DlqTopics {
    /// Kafka bootstrap servers.
    #[arg(long, env = "CALLGATE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic a replayed call event goes back to.
    #[arg(long, env = "CALLGATE_KAFKA_TOPIC", default_value = callgate_contract::envelope::EVENTS_TOPIC)]
    pub kafka_topic: String,
    /// The dead-letter topic.
    #[arg(long, env = "CALLGATE_KAFKA_DLQ_TOPIC", default_value = callgate_contract::envelope::DLQ_TOPIC)]
    pub kafka_dlq_topic: String,
    /// Extra librdkafka properties (TLS, SASL), `k=v,k=v`.
    #[arg(
        long,
        env = "CALLGATE_KAFKA_PROPERTIES",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = callgate_ops::KafkaPropertyParser
    )]
    pub kafka_properties: Vec<callgate_ops::SecretString>,
    /// Give up reading the topic after this long.
    #[arg(long, value_parser = callgate_ops::parse_duration, default_value = "60s")]
    pub read_timeout: std::time::Duration,
}

/// Which dead letters.
#[derive(Debug, Args)]
pub struct DlqSelection {
    /// Only letters with this reason (envelope, version, payload, database, panic, calcom).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only letters written at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only letters written before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these letters, `partition:offset`, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = operate::dlq::parse_offset)]
    pub offsets: Vec<(i32, i64)>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count the dead letters by reason and hour, and show a sample.
    List {
        #[command(flatten)]
        topics: DlqTopics,
        #[command(flatten)]
        selection: DlqSelection,
        /// Letters shown after the counts.
        #[arg(long, default_value_t = 20)]
        sample: usize,
    },
    /// Publish the selected letters back onto the events topic (original key, headers and
    /// event id: the worker skips what it applied already, so replaying twice is safe); a
    /// Cal.com push's letter re-queues its appointment instead. Prints what it selected first.
    Replay {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        topics: DlqTopics,
        #[command(flatten)]
        selection: DlqSelection,
        #[command(flatten)]
        actor: ActorArg,
        /// Print what would be replayed and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CallCommand {
    /// One call: its row, every event entered for it in order (outcome, trace id), its
    /// customer, its appointments with their status history and Cal.com attempts.
    /// Named by provider and call id, or found by a number and a time.
    Show {
        #[command(flatten)]
        database: Database,
        /// retell, vapi or twilio.
        #[arg(long, requires = "call_id", required_unless_present = "number")]
        provider: Option<Provider>,
        /// The provider's call id (Retell call_id, Vapi call id, Twilio CallSid).
        #[arg(long, requires = "provider")]
        call_id: Option<String>,
        /// A number of the call, the caller's or the business's (E.164); with --company.
        #[arg(long, requires = "company", conflicts_with_all = ["provider", "call_id"])]
        number: Option<String>,
        /// The company (its slug) whose calls --number searches.
        #[arg(long, requires = "number")]
        company: Option<String>,
        /// With --number: calls that started within an hour of this time (RFC 3339), nearest
        /// first. Without it: the latest calls.
        #[arg(long, requires = "number")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// Print JSON (with the analysis) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-derive a flagged call's appointment from its stored analysis, after fixing what
    /// flagged it (a service alias, a branch's time zone). Same rules and idempotency key as
    /// the first time: an appointment that exists is not made twice.
    Reprocess {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        actor: ActorArg,
        #[arg(long)]
        provider: Provider,
        #[arg(long)]
        call_id: String,
    },
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndedPush {
    Failed,
    NeedsReview,
}

impl From<EndedPush> for SyncStatus {
    fn from(ended: EndedPush) -> Self {
        match ended {
            EndedPush::Failed => Self::Failed,
            EndedPush::NeedsReview => Self::NeedsReview,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub database: Database,
    #[command(flatten)]
    pub key: MasterKey,
    /// The demo Retell API key.
    #[arg(long, env = "CALLGATE_DEMO_RETELL_KEY", default_value = "demo-retell-api-key")]
    pub retell_api_key: String,
    /// The demo Vapi server secret (x-vapi-secret).
    #[arg(long, env = "CALLGATE_DEMO_VAPI_SECRET", default_value = "demo-vapi-secret")]
    pub vapi_secret: String,
    /// The demo Twilio auth token.
    #[arg(long, env = "CALLGATE_DEMO_TWILIO_TOKEN", default_value = "demo-twilio-auth-token")]
    pub twilio_auth_token: String,
    /// The gateway's public base URL, as Twilio would be configured with it.
    #[arg(long, env = "CALLGATE_PUBLIC_BASE_URL", default_value = "http://127.0.0.1:8080")]
    pub public_base_url: String,
    /// The demo Cal.com API key (the local fake Cal.com accepts it).
    #[arg(long, env = "CALLGATE_DEMO_CALCOM_KEY", default_value = "cal_demo_key")]
    pub calcom_api_key: String,
    /// The demo Cal.com webhook secret.
    #[arg(long, env = "CALLGATE_DEMO_CALCOM_WEBHOOK_SECRET", default_value = "demo-calcom-secret")]
    pub calcom_webhook_secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to Postgres: {0}")]
    Connect(sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("CALLGATE_SECRET_KEY: {0}")]
    Key(#[from] callgate_contract::SecretError),
    #[error("not a phone number: {0}")]
    Number(#[from] callgate_contract::E164Error),
    #[error("--settings is not JSON: {0}")]
    SettingsJson(serde_json::Error),
    #[error("--fields is not JSON: {0}")]
    FieldsJson(serde_json::Error),
    #[error("cannot start the worker: {0}")]
    Start(#[from] crate::server::StartError),
    #[error("no secret on standard input (set-calcom reads two lines: API key, webhook secret)")]
    NoSecret,
    #[error("reading standard input: {0}")]
    Stdin(#[from] std::io::Error),
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    #[error("no active row has the number {0}")]
    NumberNotFound(E164),
    #[error(transparent)]
    Requeue(#[from] operate::requeue::RequeueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no {0} call {1} is stored")]
    NoCall(Provider, String),
    #[error("no {0} call {1} is stored")]
    NoCallStored(String, String),
    #[error("no call of that company has the number {0:?} (at that time)")]
    NoCallByNumber(String),
    #[error(transparent)]
    Dlq(#[from] operate::dlq::DlqError),
    #[error(transparent)]
    TenantOp(#[from] operate::tenant::TenantOpError),
    #[error(transparent)]
    Reconcile(#[from] operate::reconcile::ReconcileError),
    #[error(transparent)]
    Privacy(#[from] operate::privacy::PrivacyError),
    #[error("{0}")]
    Config(String),
    #[error("cannot set up the Cal.com client: {0}")]
    Http(reqwest::Error),
    #[error("a replay needs a selection: --reason, --since, --until or --offsets")]
    NoSelection,
}

async fn pool(database: &Database) -> Result<PgPool, CliError> {
    PgPoolOptions::new().max_connections(2).connect(&database.database_url).await.map_err(CliError::Connect)
}

fn cipher(key: &MasterKey) -> Result<SecretCipher, CliError> {
    let previous: Vec<&str> = key.secret_keys_previous.iter().map(callgate_ops::SecretString::expose).collect();
    Ok(SecretCipher::from_base64(&key.secret_key, &previous)?)
}

/// The secret piped in, without the line ending a shell adds.
fn secret_from_stdin() -> Result<Vec<u8>, CliError> {
    let mut secret = Vec::new();
    std::io::stdin().read_to_end(&mut secret)?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.is_empty() { Err(CliError::NoSecret) } else { Ok(secret) }
}

/// Runs one command; returns the lines to print.
pub async fn run(command: Command) -> Result<Vec<String>, CliError> {
    match command {
        Command::Run(config) => {
            let worker = Worker::start(*config).await?;
            callgate_ops::shutdown_signal().await;
            tracing::info!("shutdown requested");
            worker.shutdown().await;
            Ok(Vec::new())
        }
        Command::Migrate(database) => {
            MIGRATOR.run(&pool(&database).await?).await?;
            Ok(vec![format!("schema up to date ({} migrations)", MIGRATOR.iter().count())])
        }
        Command::Tenant(command) => tenant(command).await,
        Command::Calcom(command) => calcom(command).await,
        Command::Customer(command) => customer(command).await,
        Command::Dlq(command) => dlq(command).await,
        Command::Call(CallCommand::Reprocess { database, actor, provider, call_id }) => {
            let actor = operate::Actor::resolve(actor.actor.as_deref());
            let line = operate::reprocess::run(&pool(&database).await?, provider, &call_id, &actor)
                .await?
                .ok_or(CliError::NoCall(provider, call_id))?;
            Ok(vec![line])
        }
        Command::Call(CallCommand::Show { database, provider, call_id, number, company, at, json }) => {
            let pool = pool(&database).await?;
            let (provider, call_id) = match (provider, call_id, number, company) {
                (Some(provider), Some(call_id), _, _) => (provider.as_str().to_owned(), call_id),
                (_, _, Some(number), Some(slug)) => {
                    let company = tenants::company(&pool, &slug).await?.0;
                    let mut found = operate::inspect::by_number(&pool, company, &number, at).await?;
                    match found.len() {
                        0 => return Err(CliError::NoCallByNumber(number)),
                        1 => {
                            let only = found.remove(0);
                            (only.provider, only.provider_call_id)
                        }
                        _ => return Ok(operate::inspect::matches_lines(&found)),
                    }
                }
                // clap requires one of the two forms.
                _ => {
                    return Err(CliError::Config(
                        "name a call: --provider and --call-id, or --number and --company".into(),
                    ));
                }
            };
            let report = operate::inspect::call(&pool, &provider, &call_id)
                .await?
                .ok_or(CliError::NoCallStored(provider, call_id))?;
            if json { Ok(vec![serde_json::to_string_pretty(&report).unwrap_or_default()]) } else { Ok(report.lines()) }
        }
        Command::DemoTenant(args) => {
            let pool = pool(&args.database).await?;
            let secrets = demo::DemoSecrets {
                retell_api_key: args.retell_api_key,
                vapi_secret: args.vapi_secret,
                twilio_auth_token: args.twilio_auth_token,
                public_base_url: args.public_base_url,
                calcom_api_key: args.calcom_api_key,
                calcom_webhook_secret: args.calcom_webhook_secret,
            };
            let created = demo::ensure(&pool, &cipher(&args.key)?, &secrets).await?;
            Ok(vec![format!("demo tenant {} {}", demo::SLUG, if created { "created" } else { "already there" })])
        }
        Command::GenerateSecretKey => Ok(vec![SecretCipher::generate_key()]),
        Command::Healthcheck(args) => match callgate_ops::healthcheck(&args) {
            Ok(status @ 200..=299) => Ok(vec![format!("{} {status}", args.path)]),
            Ok(status) => Err(CliError::Unhealthy(format!("{} answered {status}", args.path))),
            Err(error) => Err(CliError::Unhealthy(format!("{}: {error}", args.addr))),
        },
    }
}

/// Appointments printed after a count.
const SAMPLE: usize = 20;

fn dlq_parts(topics: DlqTopics, selection: DlqSelection) -> (operate::dlq::Topics, operate::dlq::Filter, Duration) {
    let filter = operate::dlq::Filter {
        reason: selection.reason,
        since: selection.since,
        until: selection.until,
        offsets: selection.offsets,
    };
    let patience = topics.read_timeout;
    let topics = operate::dlq::Topics {
        brokers: topics.kafka_brokers,
        events: topics.kafka_topic,
        dlq: topics.kafka_dlq_topic,
        properties: topics.kafka_properties,
    };
    (topics, filter, patience)
}

async fn dlq(command: DlqCommand) -> Result<Vec<String>, CliError> {
    match command {
        DlqCommand::List { topics, selection, sample } => {
            let (topics, filter, patience) = dlq_parts(topics, selection);
            let letters = operate::dlq::read(&topics, &filter, patience).await?;
            Ok(operate::dlq::summary(&letters, sample))
        }
        DlqCommand::Replay { database, topics, selection, actor, dry_run } => {
            let (topics, filter, patience) = dlq_parts(topics, selection);
            if filter.reason.is_none() && filter.since.is_none() && filter.until.is_none() && filter.offsets.is_empty()
            {
                return Err(CliError::NoSelection);
            }
            let pool = pool(&database).await?;
            let letters = operate::dlq::read(&topics, &filter, patience).await?;
            let mut lines = operate::dlq::summary(&letters, SAMPLE);
            let actor = operate::Actor::resolve(actor.actor.as_deref());
            let done = operate::dlq::replay(&pool, &topics, &letters, &actor, &filter, dry_run).await?;
            lines.push(if dry_run {
                format!("dry run: would replay {} letter(s)", letters.len())
            } else {
                format!(
                    "replayed: {} published, {} appointment(s) re-queued, {} skipped (their push had not ended)",
                    done.published, done.requeued, done.skipped
                )
            });
            Ok(lines)
        }
    }
}

async fn calcom(command: CalcomCommand) -> Result<Vec<String>, CliError> {
    match command {
        CalcomCommand::Requeue { database, actor, appointment, status, company, reason, dry_run } => {
            let pool = pool(&database).await?;
            let company = match company {
                Some(slug) => Some(tenants::company(&pool, &slug).await?.0),
                None => None,
            };
            let selection = operate::requeue::Selection {
                appointment,
                statuses: status.into_iter().map(SyncStatus::from).collect(),
                company,
                reason_contains: reason,
            };
            let actor = operate::Actor::resolve(actor.actor.as_deref());
            let report = operate::requeue::run(&pool, &selection, &actor, dry_run).await?;
            Ok(report.lines(SAMPLE))
        }
        CalcomCommand::Reconcile { database, key, actor, api, company, dry_run } => {
            let pool = pool(&database).await?;
            let company = tenants::company(&pool, &company).await?.0;
            let metrics = crate::metrics::Metrics::new();
            let client = crate::calcom::client::Client::new(&api, metrics.clone()).map_err(CliError::Http)?;
            let cipher = std::sync::Arc::new(cipher(&key)?);
            let interval = callgate_ops::parse_duration(crate::config::RECONCILE_INTERVAL).map_err(CliError::Config)?;
            let reconciler = crate::calcom::reconcile::Reconciler::new(pool, client, cipher, api, interval, metrics);
            let actor = operate::Actor::resolve(actor.actor.as_deref());
            let report = operate::reconcile::run(&reconciler, company, &actor, dry_run).await?;
            Ok(report.lines(SAMPLE))
        }
    }
}

async fn customer(command: CustomerCommand) -> Result<Vec<String>, CliError> {
    let (args, dry_run) = match &command {
        CustomerCommand::Export(args) => (args, false),
        CustomerCommand::Erase { person, dry_run } => (person, *dry_run),
    };
    let pool = pool(&args.target.database).await?;
    let phone = match &args.phone {
        Some(phone) => Some(E164::parse_with_default(phone, Some(args.default_country_code))?.to_string()),
        None => None,
    };
    let company = tenants::company(&pool, &args.target.company).await?.0;
    let person = operate::privacy::Person { company, phone, email: args.email.clone() };
    let actor = operate::Actor::resolve(args.target.actor.actor.as_deref());
    match command {
        CustomerCommand::Export(_) => {
            let document = operate::privacy::export(&pool, &person, &actor).await?;
            Ok(vec![serde_json::to_string_pretty(&document).unwrap_or_default()])
        }
        CustomerCommand::Erase { .. } => Ok(operate::privacy::erase(&pool, &person, &actor, dry_run).await?.lines()),
    }
}

async fn suspension(target: &CompanyAction, suspend: bool) -> Result<Vec<String>, CliError> {
    let (actor, company) = (operate::Actor::resolve(target.actor.actor.as_deref()), &target.company);
    let changed = operate::tenant::set_suspended(&pool(&target.database).await?, company, suspend, &actor).await?;
    let state = if suspend { "suspended" } else { "active" };
    Ok(vec![if changed { format!("{company} {state}") } else { format!("{company} was already {state}") }])
}

/// `name=value`, for --variable.
fn parse_variable(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not name=value"))?;
    Ok((name.trim().to_owned(), value.to_owned()))
}

fn describe_inbound(settings: &tenants::InboundSettings) -> String {
    let agent = match (&settings.agent_id, settings.agent_version) {
        (Some(agent), Some(version)) => format!("agent {agent} (version {version})"),
        (Some(agent), None) => format!("agent {agent}"),
        _ => "its own agent".to_owned(),
    };
    let names: Vec<&str> = settings.variables.iter().map(|(name, _)| name.as_str()).collect();
    format!(
        "{agent} and variables business_name, branch_name{}",
        names.iter().map(|n| format!(", {n}")).collect::<String>()
    )
}

/// An onboarding change, made in `tx`, and how the audit trail records it.
struct Onboarded {
    output: String,
    action: &'static str,
    company: Option<uuid::Uuid>,
    selection: serde_json::Value,
    rows: Vec<uuid::Uuid>,
}

/// Records the change made in `tx` and commits both; returns its output.
async fn commit_onboarded(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    actor: &ActorArg,
    done: Onboarded,
) -> Result<Vec<String>, CliError> {
    let actor = operate::Actor::resolve(actor.actor.as_deref());
    let action = operate::audit::Action {
        actor: &actor,
        name: done.action,
        company: done.company,
        selection: done.selection,
        rows: &done.rows,
    };
    operate::audit::record(&mut tx, &action).await?;
    tx.commit().await?;
    Ok(vec![done.output])
}

async fn tenant(command: TenantCommand) -> Result<Vec<String>, CliError> {
    use serde_json::json;
    match command {
        TenantCommand::AddCompany { database, actor, name, slug } => {
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let id = tenants::create_company(&mut *tx, &name, &slug).await?;
            let done = Onboarded {
                output: id.to_string(),
                action: "tenant add-company",
                company: Some(id.0),
                selection: json!({ "name": name, "slug": slug }),
                rows: vec![id.0],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::AddBranch { database, actor, company, name, timezone } => {
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let company_id = tenants::company(&mut *tx, &company).await?;
            let id = tenants::create_branch(&mut *tx, company_id, &name, &timezone).await?;
            let done = Onboarded {
                output: id.to_string(),
                action: "tenant add-branch",
                company: Some(company_id.0),
                selection: json!({ "company": company, "name": name, "timezone": timezone }),
                rows: vec![id.0],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::AddAccount { database, actor, key, company, provider, external_id, settings } => {
            let settings: serde_json::Value = serde_json::from_str(&settings).map_err(CliError::SettingsJson)?;
            let cipher = cipher(&key)?;
            let secret = secret_from_stdin()?;
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let company_id = tenants::company(&mut *tx, &company).await?;
            let id = tenants::create_provider_account(
                &mut *tx,
                &cipher,
                company_id,
                provider,
                &external_id,
                &secret,
                &settings,
            )
            .await?;
            // The settings may name the public URL; the secret never goes into the record.
            let done = Onboarded {
                output: id.to_string(),
                action: "tenant add-account",
                company: Some(company_id.0),
                selection: json!({ "company": company, "provider": provider.as_str(), "external_id": external_id }),
                rows: vec![id.0],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::AddNumber {
            database,
            actor,
            company,
            branch,
            account,
            number,
            provider_number_id,
            agent_id,
            label,
        } => {
            let number = number.parse()?;
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let company_id = tenants::company(&mut *tx, &company).await?;
            let branch_id = tenants::branch(&mut *tx, company_id, &branch).await?;
            let details = NumberDetails {
                provider_number_id: provider_number_id.as_deref(),
                provider_agent_id: agent_id.as_deref(),
                label: label.as_deref(),
            };
            let id = tenants::add_phone_number(
                &mut *tx,
                company_id,
                branch_id,
                ProviderAccountId(account),
                number,
                &details,
            )
            .await?;
            let done = Onboarded {
                output: id.to_string(),
                action: "tenant add-number",
                company: Some(company_id.0),
                selection: json!({ "company": company, "branch": branch, "number": number.to_string() }),
                rows: vec![id.0],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::AddService {
            database,
            actor,
            company,
            branch,
            name,
            aliases,
            duration_minutes,
            calcom_event_type_id,
        } => {
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let company_id = tenants::company(&mut *tx, &company).await?;
            let branch_id = tenants::branch(&mut *tx, company_id, &branch).await?;
            let aliases: Vec<String> =
                aliases.into_iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect();
            let details = ServiceDetails { name: &name, aliases: &aliases, duration_minutes, calcom_event_type_id };
            let id = tenants::add_service(&mut *tx, company_id, branch_id, &details).await?;
            let done = Onboarded {
                output: id.to_string(),
                action: "tenant add-service",
                company: Some(company_id.0),
                selection: json!({ "company": company, "branch": branch, "name": name, "aliases": aliases }),
                rows: vec![id],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::SetAppointmentFields { database, actor, company, fields } => {
            let parsed: serde_json::Value = serde_json::from_str(&fields).map_err(CliError::FieldsJson)?;
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let company_id = tenants::company(&mut *tx, &company).await?;
            tenants::set_appointment_fields(&mut *tx, company_id, &parsed).await?;
            let done = Onboarded {
                output: "appointment fields set".to_owned(),
                action: "tenant set-appointment-fields",
                company: Some(company_id.0),
                selection: json!({ "company": company, "fields": parsed }),
                rows: vec![company_id.0],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::RemoveNumber { database, actor, number } => {
            let number = number.parse()?;
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            if !tenants::remove_number(&mut *tx, number).await? {
                return Err(CliError::NumberNotFound(number));
            }
            let done = Onboarded {
                output: format!("removed {number}"),
                action: "tenant remove-number",
                company: None,
                selection: json!({ "number": number.to_string() }),
                rows: Vec::new(),
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::SetInbound { database, actor, number, agent_id, agent_version, variables } => {
            let number = number.parse()?;
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let names: Vec<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
            let selection = json!({ "number": number.to_string(), "agent_id": agent_id, "variables": names });
            let settings = tenants::InboundSettings { agent_id, agent_version, variables };
            let (id, company) = tenants::set_inbound(&mut *tx, number, &settings).await?;
            let done = Onboarded {
                output: format!("{number} answers Retell's inbound webhook with {}", describe_inbound(&settings)),
                action: "tenant set-inbound",
                company: Some(company.0),
                selection,
                rows: vec![id.0],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::RotateSecret { database, actor, key, account, keep_previous_hours } => {
            let cipher = cipher(&key)?;
            let secret = secret_from_stdin()?;
            let until = chrono::Utc::now() + chrono::Duration::hours(i64::from(keep_previous_hours));
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            tenants::rotate_secret(&mut *tx, &cipher, ProviderAccountId(account), &secret, Some(until)).await?;
            let done = Onboarded {
                output: format!("rotated; previous secret accepted until {}", until.to_rfc3339()),
                action: "tenant rotate-secret",
                company: None,
                selection: json!({ "account": account, "keep_previous_hours": keep_previous_hours }),
                rows: vec![account],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::SetCalcom { database, actor, key, company, rate_per_minute, keep_previous_hours } => {
            let cipher = cipher(&key)?;
            let input = secret_from_stdin()?;
            let text = String::from_utf8(input).map_err(|_| CliError::NoSecret)?;
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let (Some(api_key), Some(webhook_secret)) = (lines.next(), lines.next()) else {
                return Err(CliError::NoSecret);
            };
            let until = chrono::Utc::now() + chrono::Duration::hours(i64::from(keep_previous_hours));
            let pool = pool(&database).await?;
            let mut tx = pool.begin().await?;
            let company_id = tenants::company(&mut *tx, &company).await?;
            let (id, path) = tenants::set_calcom_account(
                &mut *tx,
                &cipher,
                company_id,
                api_key.as_bytes(),
                webhook_secret.as_bytes(),
                rate_per_minute,
                Some(until),
            )
            .await?;
            let done = Onboarded {
                output: format!("/v1/webhooks/calcom/{path}"),
                action: "tenant set-calcom",
                company: Some(company_id.0),
                selection: json!({ "company": company, "rate_per_minute": rate_per_minute }),
                rows: vec![id.0],
            };
            commit_onboarded(tx, &actor, done).await
        }
        TenantCommand::Suspend(target) => suspension(&target, true).await,
        TenantCommand::Resume(target) => suspension(&target, false).await,
        TenantCommand::Offboard { target: CompanyAction { database, actor, company }, force, dry_run } => {
            let actor = operate::Actor::resolve(actor.actor.as_deref());
            let report = operate::tenant::offboard(&pool(&database).await?, &company, force, dry_run, &actor).await?;
            let verb = if dry_run { "would remove (dry run)" } else { "removed" };
            let mut lines = vec![format!("{company} ({}): {verb}", report.company)];
            lines.extend(report.removed.iter().map(|(table, n)| format!("  {table}: {n}")));
            if report.in_flight > 0 {
                lines.push(format!("  {} appointment(s) still waiting for Cal.com (forced)", report.in_flight));
            }
            Ok(lines)
        }
        TenantCommand::Reseal { database, key, actor, batch, dry_run } => {
            let actor = operate::Actor::resolve(actor.actor.as_deref());
            let report = operate::reseal::run(&pool(&database).await?, &cipher(&key)?, batch, dry_run, &actor).await?;
            Ok(report.lines(dry_run))
        }
        TenantCommand::Show { database, company } => {
            let pool = pool(&database).await?;
            let company = tenants::company(&pool, &company).await?;
            Ok(tenants::describe(&pool, company).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_config_defaults_and_secrets() {
        let cli =
            Cli::try_parse_from(["callgate-worker", "run", "--database-url", "postgres://u:hunter2@h/db"]).unwrap();
        let Command::Run(config) = &cli.command else { panic!("run expected") };
        assert_eq!(config.kafka_topic, "call-events.v1");
        assert_eq!(config.kafka_dlq_topic, "call-events.dlq.v1");
        assert_eq!(config.kafka_group_id, "callgate-worker");
        assert_eq!(config.kafka_assignor.strategy(), "cooperative-sticky");
        assert_eq!(config.kafka_group_instance_id, None);
        assert_eq!(config.batch_max_records, 500);
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn kafka_properties_are_checked_and_never_echoed() {
        for option in ["--kafka-properties", "--kafka-consumer-properties", "--kafka-producer-properties"] {
            let run = |property: &str| {
                Cli::try_parse_from(["callgate-worker", "run", "--database-url", "postgres://h/db", option, property])
            };
            let cli = run("sasl.password=hunter2").unwrap();
            assert!(!format!("{cli:?}").contains("hunter2"), "{option}");
            let error = run("sasl.password hunter2").unwrap_err().to_string();
            assert!(error.contains(option) && error.contains("key=value"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
