use anyhow::Context as _;
use callgate_contract::SecretCipher;
use callgate_worker::{MIGRATOR, demo};
use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, Parser)]
#[command(name = "callgate-worker", version, about = "callgate's database side: migrations, onboarding, consumers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the schema migrations (safe to run again: applied ones are skipped).
    Migrate(Database),
    /// Create the local demo tenant unless it exists.
    DemoTenant(DemoArgs),
    /// Print a fresh random master key for CALLGATE_SECRET_KEY.
    GenerateSecretKey,
}

#[derive(Debug, Args)]
struct Database {
    /// Postgres URL.
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    database: Database,
    /// Master key sealing provider secrets (base64, 32 bytes).
    #[arg(long, env = "CALLGATE_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
    /// The demo Retell API key.
    #[arg(long, env = "CALLGATE_DEMO_RETELL_KEY", default_value = "demo-retell-api-key")]
    retell_api_key: String,
    /// The demo Vapi server secret (x-vapi-secret).
    #[arg(long, env = "CALLGATE_DEMO_VAPI_SECRET", default_value = "demo-vapi-secret")]
    vapi_secret: String,
    /// The demo Twilio auth token.
    #[arg(long, env = "CALLGATE_DEMO_TWILIO_TOKEN", default_value = "demo-twilio-auth-token")]
    twilio_auth_token: String,
    /// The gateway's public base URL, as Twilio would be configured with it.
    #[arg(long, env = "CALLGATE_PUBLIC_BASE_URL", default_value = "http://127.0.0.1:8080")]
    public_base_url: String,
}

async fn pool(database: &Database) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new().max_connections(2).connect(&database.database_url).await.context("connecting to Postgres")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    match Cli::parse().command {
        Command::Migrate(database) => {
            let pool = pool(&database).await?;
            MIGRATOR.run(&pool).await.context("applying migrations")?;
            tracing::info!(migrations = MIGRATOR.iter().count(), "schema is up to date");
        }
        Command::DemoTenant(args) => {
            let pool = pool(&args.database).await?;
            let cipher = SecretCipher::from_base64::<&str>(&args.secret_key, &[]).context("CALLGATE_SECRET_KEY")?;
            let secrets = demo::DemoSecrets {
                retell_api_key: args.retell_api_key,
                vapi_secret: args.vapi_secret,
                twilio_auth_token: args.twilio_auth_token,
                public_base_url: args.public_base_url,
            };
            let created = demo::ensure(&pool, &cipher, &secrets).await.context("creating the demo tenant")?;
            tracing::info!(slug = demo::SLUG, created, "demo tenant ready");
        }
        Command::GenerateSecretKey => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", SecretCipher::generate_key());
            }
        }
    }
    Ok(())
}
