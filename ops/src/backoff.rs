//! The one retry schedule: exponential from a first wait, capped, with jitter.

use std::time::Duration;

use rand::Rng as _;

/// The wait before retry number `attempt` (0 for the first retry): `first · 2^attempt`, capped
/// at `cap`, then a random share between half and all of it, so that the many tasks that failed
/// together (every lane on a database restart, every appointment on a Cal.com outage) do not
/// come back together.
pub fn delay(attempt: u32, first: Duration, cap: Duration) -> Duration {
    ceiling(attempt, first, cap).mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// The schedule before jitter.
fn ceiling(attempt: u32, first: Duration, cap: Duration) -> Duration {
    first.saturating_mul(1_u32 << attempt.min(31)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_wait_up_to_the_cap_with_jitter_below_it() {
        let (first, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(ceiling(0, first, cap), first);
        assert_eq!(ceiling(3, first, cap), Duration::from_millis(800));
        assert_eq!(ceiling(6, first, cap), cap);
        // No overflow however long it has failed.
        assert_eq!(ceiling(u32::MAX, Duration::from_secs(u64::MAX / 4), cap), cap);
        for attempt in 0..40 {
            let wait = delay(attempt, first, cap);
            let top = ceiling(attempt, first, cap);
            assert!(wait <= top && wait >= top / 2, "attempt {attempt}: {wait:?} outside {top:?}/2..={top:?}");
        }
    }
}
