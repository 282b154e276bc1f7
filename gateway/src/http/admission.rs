//! Load shedding at the edge: how many webhook requests, and how many bytes of their bodies,
//! the gateway holds at once. Past either bound a request is answered 503 with `Retry-After`
//! at once, before its body is read: memory stays bounded whatever senders do, and a provider
//! retries later instead of timing out against a saturated gateway.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Body bytes are counted in KiB so that a budget of several GiB fits a semaphore's permits.
const UNIT: u64 = 1024;

#[derive(Debug)]
pub struct Admission {
    requests: Arc<Semaphore>,
    body_units: Arc<Semaphore>,
    max_body_bytes: u64,
}

/// Held for as long as the request is being handled.
#[derive(Debug)]
pub struct Admitted {
    _request: OwnedSemaphorePermit,
    _body: OwnedSemaphorePermit,
}

impl Admission {
    /// `max_requests` in flight, `max_body_bytes_in_flight` of bodies between them;
    /// `max_body_bytes` is one body's limit (what a request that declares no length may bring).
    pub fn new(max_requests: usize, max_body_bytes_in_flight: u64, max_body_bytes: u64) -> Self {
        let units = usize::try_from(max_body_bytes_in_flight.div_ceil(UNIT)).unwrap_or(Semaphore::MAX_PERMITS);
        Self {
            requests: Arc::new(Semaphore::new(max_requests.min(Semaphore::MAX_PERMITS))),
            body_units: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            max_body_bytes,
        }
    }

    /// Admits a request whose body declares `content_length` (None: chunked, counted as the
    /// largest body allowed), or None when the gateway is at either bound.
    pub fn try_admit(&self, content_length: Option<u64>) -> Option<Admitted> {
        let bytes = content_length.unwrap_or(self.max_body_bytes).min(self.max_body_bytes);
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        let request = self.requests.clone().try_acquire_owned().ok()?;
        let body = self.body_units.clone().try_acquire_many_owned(units).ok()?;
        Some(Admitted { _request: request, _body: body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_body_bytes_are_both_bounded_and_given_back() {
        let admission = Admission::new(3, 10 * 1024 * 1024, 8 * 1024 * 1024);
        let big = admission.try_admit(Some(8 * 1024 * 1024)).expect("one 8 MiB body fits in 10 MiB");
        assert!(admission.try_admit(Some(4 * 1024 * 1024)).is_none(), "the bytes are spent");
        let small = admission.try_admit(Some(100)).expect("a small one still fits");
        // A body of unknown length counts as the largest allowed.
        assert!(admission.try_admit(None).is_none());
        drop(big);
        let unknown = admission.try_admit(None).expect("room again once the big one is done");
        assert!(admission.try_admit(Some(1)).is_some(), "three requests");
        drop((small, unknown));
        let _ = admission.try_admit(Some(1)).expect("given back");
    }

    #[test]
    fn the_request_count_is_a_bound_of_its_own() {
        let admission = Admission::new(2, u64::MAX, 8 * 1024 * 1024);
        let held: Vec<_> = (0..2).map(|_| admission.try_admit(Some(10)).unwrap()).collect();
        assert!(admission.try_admit(Some(10)).is_none());
        drop(held);
        assert!(admission.try_admit(Some(10)).is_some());
    }
}
