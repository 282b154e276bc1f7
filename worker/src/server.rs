//! A running worker: the consumer pipeline, a probe of its dependencies, and the
//! /metrics, /healthz and /readyz endpoints; stopped in order by [`Worker::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use callgate_ops::{Shutdown, ShutdownTrigger};
use rdkafka::consumer::Consumer as _;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use callgate_contract::SecretCipher;

use crate::calcom::client::Client;
use crate::calcom::push::Pusher;
use crate::calcom::reconcile::Reconciler;
use crate::catalog::{self, Catalog};
use crate::config::RunConfig;
use crate::consumer::Pipeline;
use crate::dlq::DeadLetters;
use crate::kafka;
use crate::metrics::Metrics;
use crate::retention::Retention;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid database URL: {0}")]
    Database(sqlx::Error),
    #[error("cannot create the Kafka client: {0}")]
    Kafka(rdkafka::error::KafkaError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("invalid Cal.com settings: {0}")]
    Calcom(String),
    #[error("invalid retention settings: {0}")]
    Retention(String),
    #[error("invalid master key: {0}")]
    SecretKey(#[from] callgate_contract::SecretError),
}

/// Connections of the Cal.com push's own pool, apart from the consumer's: a slow Cal.com must
/// not take connections the consumer's lanes count on.
const PUSH_CONNECTIONS: u32 = 4;

/// What the probe last saw.
#[derive(Debug, Default)]
struct Health {
    broker: AtomicBool,
    stopping: AtomicBool,
}

#[derive(Debug, Clone)]
struct OpsState {
    metrics: Metrics,
    health: Arc<Health>,
}

#[derive(Debug)]
pub struct Worker {
    addr: SocketAddr,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: ShutdownTrigger,
    pipeline: tokio::task::JoinHandle<()>,
    tasks: JoinSet<()>,
}

impl Worker {
    /// Joins the consumer group and starts consuming. Postgres may still be down: the pipeline
    /// waits for it.
    pub async fn start(config: RunConfig) -> Result<Self, StartError> {
        let metrics = Metrics::new();
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections.max(3))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(config.database_url.expose())
            .map_err(StartError::Database)?;
        let assigned = kafka::Assigned::default();
        let consumer =
            Arc::new(kafka::create_consumer(&config, metrics.clone(), assigned.clone()).map_err(StartError::Kafka)?);
        let dlq = DeadLetters::create(&config, metrics.clone()).map_err(StartError::Kafka)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let health = Arc::new(Health::default());
        let (shutdown, shutdown_rx) = callgate_ops::shutdown_channel();
        let config = Arc::new(config);
        let mut tasks = JoinSet::new();
        tasks.spawn(probe(
            pool.clone(),
            consumer.clone(),
            config.clone(),
            metrics.clone(),
            health.clone(),
            shutdown_rx.clone(),
        ));
        let state = OpsState { metrics: metrics.clone(), health: health.clone() };
        tasks.spawn(serve_ops(listener, state, shutdown_rx.clone()));
        if let Some((pusher, reconciler)) = calcom(&config, &metrics, &dlq)? {
            tasks.spawn(pusher.run(shutdown_rx.clone()));
            if let Some(reconciler) = reconciler {
                tasks.spawn(reconciler.run(shutdown_rx.clone()));
            }
        }
        if let Some(retention) = retention(&config, &metrics)? {
            tasks.spawn(retention.run(shutdown_rx.clone()));
        }
        let catalog = Arc::new(Catalog::new(metrics.clone()));
        tasks.spawn(catalog::follow(catalog.clone(), pool.clone(), shutdown_rx.clone()));
        let pipeline = Pipeline::new(consumer, dlq, pool, metrics.clone(), config, assigned, catalog);
        let pipeline = tokio::spawn(pipeline.run(shutdown_rx));
        tracing::info!(%addr, "worker started");
        Ok(Self { addr, metrics, health, shutdown, pipeline, tasks })
    }

    /// Where /metrics, /healthz and /readyz are served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Finishes the batch in hand, commits it, leaves the group, then stops the endpoints.
    pub async fn shutdown(mut self) {
        self.health.stopping.store(true, Ordering::SeqCst);
        self.shutdown.trigger();
        if let Err(error) = (&mut self.pipeline).await {
            tracing::error!(%error, "consumer task failed");
        }
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("worker stopped");
    }
}

/// Connections of the retention pass's own pool: its batches never wait for the consumer's
/// connections, nor take them.
const RETENTION_CONNECTIONS: u32 = 2;

/// The retention pass, unless --retention-interval is 0s.
fn retention(config: &RunConfig, metrics: &Metrics) -> Result<Option<Retention>, StartError> {
    if config.retention.interval.is_zero() {
        tracing::info!("retention switched off here (--retention-interval 0s)");
        return Ok(None);
    }
    config.retention.validate().map_err(StartError::Retention)?;
    let pool = PgPoolOptions::new()
        .max_connections(RETENTION_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(config.database_url.expose())
        .map_err(StartError::Database)?;
    Ok(Some(Retention::new(pool, config.retention.clone(), metrics.clone())))
}

/// The Cal.com push, and the reconciliation when it runs here.
type CalcomTasks = (Arc<Pusher>, Option<Reconciler>);

/// The Cal.com push and reconciliation (unless --calcom-reconcile-interval is 0s), unless
/// they are switched off or there is no master key to open API keys with.
fn calcom(config: &RunConfig, metrics: &Metrics, dlq: &DeadLetters) -> Result<Option<CalcomTasks>, StartError> {
    if !config.calcom.push {
        tracing::info!("Cal.com push switched off (--calcom-push false)");
        return Ok(None);
    }
    let Some(key) = &config.secret_key else {
        tracing::warn!("no CALLGATE_SECRET_KEY: appointments are not pushed to Cal.com by this worker");
        return Ok(None);
    };
    config.calcom.validate().map_err(StartError::Calcom)?;
    let cipher = Arc::new(SecretCipher::from_base64(key.expose(), &config.secret_keys_previous)?);
    let pool = PgPoolOptions::new()
        .max_connections(PUSH_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(config.database_url.expose())
        .map_err(StartError::Database)?;
    let client = Client::new(&config.calcom.api, metrics.clone()).map_err(|e| StartError::Calcom(e.to_string()))?;
    let interval = config.calcom.reconcile_interval;
    let reconciler = (!interval.is_zero()).then(|| {
        Reconciler::new(
            pool.clone(),
            client.clone(),
            cipher.clone(),
            config.calcom.api.clone(),
            interval,
            metrics.clone(),
        )
    });
    let pusher = Pusher::new(pool, client, cipher, config.calcom.clone(), metrics.clone(), dlq.clone());
    Ok(Some((Arc::new(pusher), reconciler)))
}

/// Checks Postgres and the broker every few seconds, so that /readyz and the `_up` gauges tell
/// the truth even when no records arrive.
async fn probe(
    pool: sqlx::PgPool,
    consumer: Arc<kafka::KafkaConsumer>,
    config: Arc<RunConfig>,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: Shutdown,
) {
    loop {
        let database = sqlx::query("SELECT 1").execute(&pool).await.is_ok();
        metrics.database_up.set(i64::from(database));
        let (topic, handle) = (config.kafka_topic.clone(), consumer.clone());
        let broker =
            tokio::task::spawn_blocking(move || handle.fetch_metadata(Some(&topic), Duration::from_secs(3)).is_ok())
                .await
                .unwrap_or(false);
        health.broker.store(broker, Ordering::SeqCst);
        if shutdown.sleep(Duration::from_secs(2)).await {
            return;
        }
    }
}

async fn serve_ops(listener: TcpListener, state: OpsState, shutdown: Shutdown) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(state);
    let stopped = async move { shutdown.requested().await };
    if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
        tracing::error!(%error, "ops endpoint failed");
    }
}

async fn metrics(State(state): State<OpsState>) -> String {
    state.metrics.render()
}

/// Alive, unless a partition lane stopped: its partition stalls until a restart, which the
/// orchestrator's liveness check then makes (the uncommitted records are delivered again).
async fn alive(State(state): State<OpsState>) -> (StatusCode, &'static str) {
    if state.metrics.lane_failures.get() > 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "a partition lane failed: restart the worker");
    }
    (StatusCode::OK, "ok")
}

/// Ready: alive, Postgres answered and the broker answered, and the worker is not stopping.
async fn ready(State(state): State<OpsState>) -> (StatusCode, &'static str) {
    if state.metrics.lane_failures.get() > 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "a partition lane failed: restart the worker");
    }
    let health = &state.health;
    if health.stopping.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping");
    }
    if state.metrics.database_up.get() != 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    }
    if !health.broker.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable");
    }
    (StatusCode::OK, "ready")
}
