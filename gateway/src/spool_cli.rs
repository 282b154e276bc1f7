//! `callgate-gateway spool drain`: publishes everything a spool directory holds, then exits.
//! For the volume of a gateway replica that is gone for good; a running gateway drains its own.

use std::sync::Arc;
use std::time::Duration;

use callgate_ops::Shutdown;

use crate::config::SpoolDrainArgs;
use crate::metrics::Metrics;
use crate::publish::{PublishError, Publisher, PublisherConfig, record_limit};
use crate::spool::store::StoreError;
use crate::spool::{self, Spool, SpoolConfig};

#[derive(Debug, thiserror::Error)]
pub enum SpoolCliError {
    #[error("Kafka producer could not be created: {0}")]
    Kafka(#[from] PublishError),
    #[error("the spool cannot be opened: {0}")]
    Spool(#[from] StoreError),
}

/// Drains the directory until it is empty, or until `stop` is requested; the records published.
pub async fn drain(args: &SpoolDrainArgs, stop: Shutdown) -> Result<u64, SpoolCliError> {
    let metrics = Metrics::new();
    let publisher =
        Arc::new(Publisher::new(PublisherConfig::from_args(&args.kafka, args.max_body_bytes), metrics.clone())?);
    // Nothing is written by this command: the limits only bound writes.
    let config = SpoolConfig { dir: args.dir.clone(), max_bytes: u64::MAX, segment_bytes: u64::MAX };
    let spool = Arc::new(Spool::open(&config, record_limit(args.max_body_bytes), metrics)?);
    let drained = spool::drain(spool, publisher.clone(), stop, spool::Until::EmptyOrStopped).await;
    if let Err(error) = publisher.flush(Duration::from_secs(10)).await {
        tracing::warn!(%error, "producer flush incomplete");
    }
    Ok(drained)
}
