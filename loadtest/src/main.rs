//! `callgate-loadtest`: seed load-test tenants, then offer signed provider traffic to a gateway
//! at a target rate (open loop) or with C connections (closed loop), and report the gateway's
//! ack latency, the end-to-end latency to committed rows (and bookings), and the same-machine
//! ceilings it ran against. See BENCHMARKS.md for the commands behind each figure.

// A report printer: its output is the point (stdout: the report; stderr: progress).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod baseline;
mod cpu;
mod e2e;
mod model;
mod report;
mod run;
mod seed;
mod stages;
mod traffic;
mod verdict;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use callgate_contract::SecretCipher;
use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

use crate::model::Model;
use crate::report::{EndToEndReport, Leg, Ratio, Report};
use crate::run::{Mode, Plan};
use crate::traffic::Scheduler;

#[derive(Debug, Parser)]
#[command(name = "callgate-loadtest", version, about = "Signed provider traffic against callgate, measured")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the model's tenants into the database (before starting the gateway).
    Seed(SeedArgs),
    /// Offer traffic to a gateway and report.
    Run(Box<RunArgs>),
    /// Hold the database and Cal.com to a record of accepted events (`run --accepted`): print
    /// lost, duplicated and late counts; exit 1 unless all are zero.
    Verdict(VerdictArgs),
}

#[derive(Debug, Args)]
struct VerdictArgs {
    /// The record written by `run --accepted`.
    #[arg(long)]
    accepted: PathBuf,
    /// Postgres of the deployment under test.
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The fake Cal.com's base URL: also check bookings.
    #[arg(long)]
    calcom_url: Option<String>,
    /// How long to wait for the last events and bookings to settle.
    #[arg(long, value_parser = callgate_ops::parse_duration, default_value = "180s")]
    wait: Duration,
    /// An event applied later than this after its 2xx counts as late.
    #[arg(long, value_parser = callgate_ops::parse_duration, default_value = "120s")]
    late_after: Duration,
}

/// The tenants traffic is addressed to: `seed` and `run` must be given the same values.
#[derive(Debug, Clone, Args)]
struct ModelArgs {
    /// Load-test companies (slugs lt-0, lt-1, …).
    #[arg(long, default_value_t = 100)]
    companies: u32,
    /// Numbers per company, spread over Retell, Vapi and Twilio (at least 3).
    #[arg(long, default_value_t = 30)]
    numbers_per_company: u32,
    /// The public base URL the Twilio accounts are configured with (signatures cover it).
    #[arg(long, default_value = "https://hooks.loadtest.invalid")]
    twilio_public_url: String,
}

impl ModelArgs {
    fn model(&self) -> anyhow::Result<Model> {
        Model::new(self.companies, self.numbers_per_company, &self.twilio_public_url).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Args)]
struct SeedArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Master key sealing the tenants' secrets (the gateway's CALLGATE_SECRET_KEY).
    #[arg(long, env = "CALLGATE_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
    /// Also connect every company to Cal.com (key cal_lt_<n>, event type 10000+n).
    #[arg(long)]
    calcom: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// The gateway's ops base URL (its --metrics-listen), for its stage histograms.
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    target_metrics: String,
    /// The worker's ops base URL, for its event ages (read from Kafka, committed); none: not
    /// reported.
    #[arg(long)]
    worker_metrics: Option<String>,
    /// Open loop: requests per second.
    #[arg(long, conflicts_with = "connections")]
    rate: Option<f64>,
    /// Closed loop: connections each sending its next request when the last one returned.
    #[arg(long)]
    connections: Option<usize>,
    #[arg(long, value_parser = callgate_ops::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Load sent before each measured leg and not counted (connections, caches, JIT-free but
    /// not cold).
    #[arg(long, value_parser = callgate_ops::parse_duration, default_value = "3s")]
    warmup: Duration,
    /// Time between two events of one call.
    #[arg(long, value_parser = callgate_ops::parse_duration, default_value = "500ms")]
    event_gap: Duration,
    /// Share of Retell and Vapi calls whose analysis asks for an appointment.
    #[arg(long, default_value_t = 0.2)]
    appointment_share: f64,
    /// Requests in flight before an open-loop send is skipped (and counted).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Postgres of the deployment under test: enables end-to-end latency.
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// How long to wait after the run for the last calls to reach the database.
    #[arg(long, value_parser = callgate_ops::parse_duration, default_value = "60s")]
    drain: Duration,
    /// First run the same load against a plain axum handler answering 204 (the HTTP ceiling).
    #[arg(long)]
    baseline_http: bool,
    /// Then send as many records as the gateway published, of the same size, with a bare
    /// producer to these brokers (the broker ceiling).
    #[arg(long)]
    baseline_kafka: Option<String>,
    /// librdkafka properties for the bare producer (use the gateway's).
    #[arg(long, value_delimiter = ',', value_parser = callgate_ops::KafkaPropertyParser)]
    baseline_kafka_properties: Vec<callgate_ops::SecretString>,
    /// Then insert as many call-shaped rows as calls were sent, batched, into a scratch table
    /// of --database-url (the database ceiling).
    #[arg(long)]
    baseline_db: bool,
    /// Then time 2,000 sequential 2 KB write+fdatasync in this directory (put it on the
    /// spool's disk): the durable-write ceiling of webhooks answered from the spool.
    #[arg(long)]
    baseline_fsync: Option<std::path::PathBuf>,
    /// Record every event the gateway answered 2xx (JSON lines), for `verdict`.
    #[arg(long)]
    accepted: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the charts as SVG here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match Cli::parse().command {
        Command::Seed(args) => {
            let model = args.model.model()?;
            let pool = PgPoolOptions::new().max_connections(10).connect(&args.database_url).await?;
            let cipher = Arc::new(SecretCipher::from_base64::<&str>(&args.secret_key, &[])?);
            let started = std::time::Instant::now();
            let created = seed::seed(&pool, cipher, &model, args.calcom).await?;
            println!(
                "seeded {created} companies ({} numbers in the model) in {:.1} s",
                model.numbers(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Run(args) => run(*args).await?,
        Command::Verdict(args) => {
            let accepted = verdict::read_accepted(&args.accepted)?;
            let pool = PgPoolOptions::new().max_connections(2).connect(&args.database_url).await.context("database")?;
            let verdict =
                verdict::judge(&pool, args.calcom_url.as_deref(), &accepted, args.wait, args.late_after).await?;
            print!("{}", verdict.text());
            if verdict.failures() > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let model = args.model.model()?;
    let mode = match (args.rate, args.connections) {
        (Some(rate), None) if rate > 0.0 => Mode::Open { rate },
        (None, Some(connections)) if connections > 0 => Mode::Closed { connections },
        _ => anyhow::bail!("give --rate R (open loop) or --connections C (closed loop)"),
    };
    let offered = match mode {
        Mode::Open { rate } => format!("{rate} req/s open loop"),
        Mode::Closed { connections } => format!("{connections} connections closed loop"),
    };
    let accepted = match &args.accepted {
        Some(path) => Some(Arc::new(run::AcceptedLog::create(path).context("--accepted")?)),
        None => None,
    };
    let plan = |target: String| Plan {
        target,
        mode,
        duration: args.duration,
        max_in_flight: args.max_in_flight,
        accepted: None,
    };
    let warm = |target: String| async {
        if !args.warmup.is_zero() {
            let warmup =
                Plan { target, mode, duration: args.warmup, max_in_flight: args.max_in_flight, accepted: None };
            let scheduler = Scheduler::new(model.clone(), args.event_gap, args.appointment_share);
            run::run(&warmup, scheduler, None).await;
        }
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut legs = Vec::new();
    let mut ratios = Vec::new();

    if args.baseline_http {
        let addr = baseline::plain_http().await?;
        let target = format!("http://{addr}");
        eprintln!("baseline: plain axum 204 handler at {target}");
        warm(target.clone()).await;
        let scheduler = Scheduler::new(model.clone(), args.event_gap, args.appointment_share);
        let measured = run::run(&plan(target.clone()), scheduler, None).await;
        legs.push(Leg::new("plain axum (204)", &target, offered.clone(), &measured));
    }

    let pool = match &args.database_url {
        Some(url) => Some(PgPoolOptions::new().max_connections(4).connect(url).await.context("database")?),
        None => None,
    };
    let (finished_tx, finished_rx) = tokio::sync::mpsc::unbounded_channel();
    let tracker = pool.clone().map(|pool| tokio::spawn(e2e::track(pool, finished_rx, args.drain)));
    eprintln!("gateway at {}", args.target);
    warm(args.target.clone()).await;
    let scheduler = Scheduler::new(model.clone(), args.event_gap, args.appointment_share);
    let scraper = reqwest::Client::new();
    let stages_before = stages::scrape(&scraper, &args.target_metrics, stages::GATEWAY).await;
    let ages_before = match &args.worker_metrics {
        Some(worker) => stages::scrape(&scraper, worker, stages::WORKER).await,
        None => None,
    };
    let cpu_before = cpu::snapshot();
    let window_start = chrono::Utc::now();
    let gateway_plan = Plan { accepted: accepted.clone(), ..plan(args.target.clone()) };
    let measured = run::run(&gateway_plan, scheduler, tracker.as_ref().map(|_| finished_tx)).await;
    if let Some(log) = &accepted {
        log.flush().context("--accepted")?;
    }
    let window_end = chrono::Utc::now();
    let cpu = cpu::between(&cpu_before, &cpu::snapshot());
    let stages = match (stages_before, stages::scrape(&scraper, &args.target_metrics, stages::GATEWAY).await) {
        (Some(before), Some(after)) => stages::between(&before, &after),
        _ => Vec::new(),
    };
    let distribution = report::distribution(&measured.latency);
    let gateway = Leg::new("gateway", &args.target, offered.clone(), &measured);
    if let Some(http) = legs.first() {
        ratios.push(Ratio {
            what: "gateway ok/s vs plain axum ok/s (same load)".into(),
            ours: gateway.achieved_per_s,
            ceiling: http.achieved_per_s,
            unit: "req/s".into(),
        });
        ratios.push(Ratio {
            what: "gateway p99 vs plain axum p99".into(),
            ours: gateway.ack.p99_ms,
            ceiling: http.ack.p99_ms,
            unit: "ms".into(),
        });
    }
    let published = measured.ok;
    legs.push(gateway);
    let end_to_end = match tracker {
        Some(tracker) => {
            eprintln!("waiting for the last calls to reach the database…");
            Some(EndToEndReport::of(&tracker.await?))
        }
        None => None,
    };
    // After the drain: every event of the leg has been read and committed by then.
    let event_ages = match (ages_before, &args.worker_metrics) {
        (Some(before), Some(worker)) => match stages::scrape(&scraper, worker, stages::WORKER).await {
            Some(after) => stages::between(&before, &after),
            None => Vec::new(),
        },
        _ => Vec::new(),
    };

    if let Some(brokers) = &args.baseline_kafka {
        let topic = format!("loadtest-baseline-{}", uuid::Uuid::new_v4().simple());
        // The gateway's records: an envelope of about this size (measured on the provider mix).
        let produced =
            baseline::bare_producer(brokers, &topic, &args.baseline_kafka_properties, published.max(1), 1_900, 2_000)
                .await?;
        let rate = produced.records as f64 / produced.wall.as_secs_f64();
        eprintln!(
            "baseline: bare producer {} records in {:.1} s ({rate:.0}/s), {} errors, ack {}",
            produced.records,
            produced.wall.as_secs_f64(),
            produced.errors,
            report::Percentiles::of(&produced.latency).line()
        );
        ratios.push(Ratio {
            what: "gateway published/s vs bare producer records/s".into(),
            ours: published as f64 / measured.wall.as_secs_f64(),
            ceiling: rate,
            unit: "records/s".into(),
        });
    }
    if args.baseline_db
        && let Some(pool) = &pool
    {
        // What the worker applied while the load ran (it kept up: this is the offered rate, not
        // its ceiling; the worker_throughput bench measures that against the same insert).
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE received_at BETWEEN $1 AND $2")
                .bind(window_start)
                .bind(window_end)
                .fetch_one(pool)
                .await?;
        let rows = u64::try_from(applied).unwrap_or(0).max(1_000);
        let took = callgate_tests::baseline::bare_insert(pool, rows).await?;
        ratios.push(Ratio {
            what: "worker events applied/s in this run vs bare batched insert rows/s".into(),
            ours: applied as f64 / measured.wall.as_secs_f64(),
            ceiling: rows as f64 / took.as_secs_f64(),
            unit: "rows/s".into(),
        });
    }

    if let Some(dir) = &args.baseline_fsync {
        let dir = dir.clone();
        let synced = tokio::task::spawn_blocking(move || baseline::bare_fsync(&dir, 2_000, 2_000)).await??;
        let bare = report::Percentiles::of(&synced);
        eprintln!("baseline: bare 2 KB write+fdatasync {}", bare.line());
        if let Some(gateway) = legs.iter().find(|leg| leg.name == "gateway") {
            ratios.push(Ratio {
                what: "gateway p50 vs one bare write+fdatasync p50".into(),
                ours: gateway.ack.p50_ms,
                ceiling: bare.p50_ms,
                unit: "ms".into(),
            });
            ratios.push(Ratio {
                what: "gateway p99 vs one bare write+fdatasync p99".into(),
                ours: gateway.ack.p99_ms,
                ceiling: bare.p99_ms,
                unit: "ms".into(),
            });
        }
    }

    let report =
        Report { machine: report::machine(), command, legs, stages, event_ages, cpu, end_to_end, ratios, distribution };
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg())?;
    }
    Ok(())
}
