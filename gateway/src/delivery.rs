//! Where an accepted webhook's record goes: to the broker, or, when the broker does not
//! acknowledge within `--spool-after` (or records already wait in the spool), to the spool.
//! The webhook is answered 2xx only once one of the two has it durably.

use std::sync::Arc;
use std::time::Duration;

use crate::publish::{PublishError, Publisher, Record};
use crate::spool::{Spool, SpoolError};

/// Where a record ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Acknowledged by the broker (`acks=all`).
    Broker,
    /// Synced to the local spool; the drainer publishes it.
    Spooled,
}

impl Delivered {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivered::Broker => "broker",
            Delivered::Spooled => "spool",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

#[derive(Debug)]
pub struct Delivery {
    publisher: Arc<Publisher>,
    spool: Option<Arc<Spool>>,
    spool_after: Duration,
}

impl Delivery {
    pub fn new(publisher: Arc<Publisher>, spool: Option<Arc<Spool>>, spool_after: Duration) -> Self {
        Self { publisher, spool, spool_after }
    }

    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    pub async fn deliver(&self, record: Record<'_>) -> Result<Delivered, DeliveryError> {
        let Some(spool) = &self.spool else {
            self.publisher.publish(record).await?;
            return Ok(Delivered::Broker);
        };
        let why = if spool.is_open() {
            "records wait in the spool"
        } else {
            match tokio::time::timeout(self.spool_after, self.publisher.publish(record)).await {
                Ok(Ok(())) => return Ok(Delivered::Broker),
                // The broker would refuse this record whenever it is sent: not the spool's job.
                Ok(Err(error)) if error.is_permanent() => return Err(error.into()),
                Ok(Err(error)) => error.reason(),
                // The record may still be acknowledged later: then the spooled copy is a
                // duplicate, which the worker skips by event id.
                Err(_elapsed) => "no acknowledgement within --spool-after",
            }
        };
        spool.append(&record, why).await?;
        Ok(Delivered::Spooled)
    }
}
