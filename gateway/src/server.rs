//! Wires the gateway together and runs it: directory refresh, broker probe, HTTP listeners,
//! and an orderly shutdown (stop accepting, finish in-flight requests, flush the producer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callgate_contract::SecretCipher;
use callgate_ops::{Shutdown, ShutdownTrigger};
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::ServeConfig;
use crate::delivery::Delivery;
use crate::directory::{DirectoryHandle, Loader, run_refresh};
use crate::http::{Admission, AppState, EdgeConfig, ops_router, router};
use crate::metrics::Metrics;
use crate::publish::{PublishError, Publisher, PublisherConfig, TopicLimit, record_limit};
use crate::spool::store::StoreError;
use crate::spool::{self, Spool, SpoolConfig};

/// How often readiness asks the broker for the topic's metadata.
const BROKER_PROBE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("CALLGATE_SECRET_KEY is not usable: {0}")]
    SecretKey(#[from] callgate_contract::SecretError),
    #[error("database URL is not usable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Kafka producer could not be created: {0}")]
    Kafka(#[from] PublishError),
    #[error("the spool cannot be opened: {0}")]
    Spool(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "topic {topic} takes records up to {limit} bytes (its max.message.bytes), but --max-body-bytes {max_body} \
         needs {needed}: raise the topic's max.message.bytes to at least {needed}, or lower --max-body-bytes"
    )]
    TopicTooSmall { topic: String, limit: usize, max_body: usize, needed: usize },
    #[error(
        "--max-in-flight-body-bytes ({budget}) is below --max-body-bytes ({max_body}): no body that size could ever be admitted"
    )]
    BodyBudget { budget: u64, max_body: usize },
}

/// How long the start waits for the broker to describe the topic's record size limit.
const TOPIC_CHECK_WAIT: Duration = Duration::from_secs(10);

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    ops_addr: SocketAddr,
    shutdown: ShutdownTrigger,
    tasks: JoinSet<()>,
    publisher: Arc<Publisher>,
    state: AppState,
    grace: Duration,
}

impl Gateway {
    /// Binds the listeners and starts serving. The directory loads in the background: until
    /// it has, `/readyz` says so and webhooks are answered 503.
    pub async fn start(config: ServeConfig) -> Result<Self, StartError> {
        if config.max_in_flight_body_bytes < config.max_body_bytes as u64 {
            return Err(StartError::BodyBudget {
                budget: config.max_in_flight_body_bytes,
                max_body: config.max_body_bytes,
            });
        }
        let metrics = Metrics::new();
        let cipher = Arc::new(SecretCipher::from_base64(config.secret_key.expose(), &config.secret_keys_previous)?);
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(config.database_url.expose())?;
        let publisher = Arc::new(Publisher::new(
            PublisherConfig::from_args(&config.kafka, config.max_body_bytes),
            metrics.clone(),
        )?);
        check_topic_limit(&publisher, config.max_body_bytes).await?;
        let spool = match &config.spool.dir {
            Some(dir) => {
                let spool_config = SpoolConfig {
                    dir: dir.clone(),
                    max_bytes: config.spool.max_bytes,
                    segment_bytes: config.spool.segment_bytes,
                };
                Some(Arc::new(Spool::open(&spool_config, record_limit(config.max_body_bytes), metrics.clone())?))
            }
            None => None,
        };
        let delivery = Arc::new(Delivery::new(publisher.clone(), spool.clone(), config.spool.after));
        let state = AppState {
            directory: Arc::new(DirectoryHandle::default()),
            publisher: publisher.clone(),
            delivery,
            metrics: metrics.clone(),
            admission: Arc::new(Admission::new(
                config.max_in_flight,
                config.max_in_flight_body_bytes,
                config.max_body_bytes as u64,
            )),
            edge: Arc::new(EdgeConfig {
                max_body_bytes: config.max_body_bytes,
                body_read_timeout: config.body_read_timeout,
                public_base_url: config.public_base_url.clone(),
                default_country_code: config.default_country_code,
            }),
        };

        let listener = bind(config.listen).await?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let ops_listener = bind(config.metrics_listen).await?;
        let ops_addr =
            ops_listener.local_addr().map_err(|source| StartError::Bind { addr: config.metrics_listen, source })?;

        let (shutdown, shutdown_rx) = callgate_ops::shutdown_channel();
        let mut tasks = JoinSet::new();
        tasks.spawn(run_refresh(
            Loader::new(pool, cipher),
            state.directory.clone(),
            metrics.clone(),
            config.directory_reload_interval,
            shutdown_rx.clone(),
        ));
        tasks.spawn(probe_broker(publisher.clone(), shutdown_rx.clone()));
        if let Some(spool) = spool {
            let drainer = spool::drain(spool, publisher.clone(), shutdown_rx.clone(), spool::Until::EmptyAfterShutdown);
            tasks.spawn(async move {
                drainer.await;
            });
        }
        tasks.spawn(serve(listener, router(state.clone()), shutdown_rx.clone()));
        tasks.spawn(serve(ops_listener, ops_router(state.clone()), shutdown_rx));
        tracing::info!(%addr, %ops_addr, topic = %config.kafka.topic, "gateway listening");
        Ok(Self { addr, ops_addr, shutdown, tasks, publisher, state, grace: config.shutdown_grace })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where /metrics, /readyz and /healthz are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish and the spool drain (up to the grace
    /// period), then flushes records still in the producer.
    pub async fn shutdown(mut self) {
        self.shutdown.trigger();
        let drained = tokio::time::timeout(self.grace, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("shutdown grace period over with requests in flight or records in the spool");
            self.tasks.abort_all();
        }
        let spooled = self.state.metrics.spool_records.get();
        if spooled > 0 {
            tracing::warn!(
                records = spooled,
                "stopping with records in the spool: published when this replica starts again on its volume, \
                 or by `callgate-gateway spool drain` if it is gone for good"
            );
        }
        match self.publisher.flush(self.grace).await {
            Ok(()) => tracing::info!("producer flushed; gateway stopped"),
            Err(error) => tracing::error!(%error, "producer flush incomplete at shutdown"),
        }
    }
}

/// Refuses to start when the broker says the topic cannot take the largest body: every such
/// webhook would be answered 503 forever. A broker that cannot be asked now does not stop the
/// start (the gateway waits for the broker anyway); that is logged.
async fn check_topic_limit(publisher: &Publisher, max_body: usize) -> Result<(), StartError> {
    let needed = record_limit(max_body);
    match publisher.check_topic_limit(TOPIC_CHECK_WAIT).await {
        TopicLimit::Fits(limit) => {
            tracing::info!(topic = publisher.topic(), limit, needed, "topic takes the largest record");
            Ok(())
        }
        TopicLimit::TooSmall(limit) => {
            Err(StartError::TopicTooSmall { topic: publisher.topic().to_owned(), limit, max_body, needed })
        }
        TopicLimit::Unknown(why) => {
            tracing::warn!(
                topic = publisher.topic(), needed, %why,
                "could not check the topic's max.message.bytes; bodies near --max-body-bytes may be refused"
            );
            Ok(())
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

async fn serve(listener: TcpListener, router: axum::Router, shutdown: Shutdown) {
    let result = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.requested().await }).await;
    if let Err(error) = result {
        tracing::error!(%error, "HTTP server failed");
    }
}

async fn probe_broker(publisher: Arc<Publisher>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(BROKER_PROBE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            _ = ticker.tick() => {
                let was = publisher.is_reachable();
                let reachable = publisher.probe(BROKER_PROBE_EVERY).await;
                if was != reachable {
                    if reachable {
                        tracing::info!(topic = publisher.topic(), "broker reachable");
                    } else {
                        tracing::warn!(topic = publisher.topic(), "broker unreachable or topic missing");
                    }
                }
            }
        }
    }
}
