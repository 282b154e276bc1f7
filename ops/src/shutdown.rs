//! The one shutdown type every long-running loop takes.
//!
//! A [`ShutdownTrigger`] is held by whoever decides to stop (a signal handler, a server's
//! `shutdown()`, a test); every loop holds a [`Shutdown`] and either checks it between steps or
//! waits on it beside its own work in a `select!`. Stopping is a one-way latch: once requested it
//! stays requested, and a loop that starts waiting afterwards returns at once.

use std::time::Duration;

use tokio::sync::watch;

/// Fires the shutdown every [`Shutdown`] made from it waits for.
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

/// A loop's view of the shutdown: cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// A trigger and the first [`Shutdown`] it fires.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    /// Requests the shutdown; idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Another [`Shutdown`] fired by this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown { receiver: self.sender.subscribe() }
    }
}

impl Shutdown {
    /// Whether the shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once the shutdown is requested (at once if it already was). Never resolves if
    /// the trigger was dropped without firing: a dropped trigger is not a request to stop.
    pub async fn requested(&self) {
        let mut receiver = self.receiver.clone();
        if receiver.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Sleeps for `period`, cut short by the shutdown; true when the shutdown was requested.
    pub async fn sleep(&self, period: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(period) => self.is_requested(),
            () = self.requested() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_one_trigger_and_keeps_seeing_it() {
        let (trigger, first) = channel();
        let second = trigger.subscribe();
        assert!(!first.is_requested());
        let waiting = tokio::spawn({
            let first = first.clone();
            async move { first.requested().await }
        });
        trigger.trigger();
        waiting.await.unwrap();
        assert!(second.is_requested());
        // Waiting after the fact returns at once; so does a sleep.
        second.requested().await;
        assert!(first.sleep(Duration::from_secs(3600)).await);
    }

    #[tokio::test]
    async fn a_sleep_without_a_shutdown_runs_its_course_and_a_dropped_trigger_is_not_a_stop() {
        let (trigger, shutdown) = channel();
        assert!(!shutdown.sleep(Duration::from_millis(50)).await);
        drop(trigger);
        assert!(!shutdown.sleep(Duration::from_millis(50)).await);
        let never = tokio::time::timeout(Duration::from_millis(50), shutdown.requested()).await;
        assert!(never.is_err());
    }
}
