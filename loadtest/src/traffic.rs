//! What is sent: simulated calls, each its provider's real sequence of signed webhooks, and the
//! order they go out in.
//!
//! A call's events are `gap` apart, as a provider would send them during a call; many calls
//! overlap. The scheduler hands out the next event that is due, or starts a new call when none
//! is — so the request rate is exactly the one asked for, whatever the mix.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use callgate_contract::Provider;
use callgate_contract::envelope::event_id;
use callgate_tests::calls::{Line, Webhook, appointment_analysis, retell_call_on, twilio_call_on, vapi_call_on};
use rand::Rng as _;
use uuid::Uuid;

use crate::model::Model;

/// One event to send, and what to follow up when it is its call's last.
#[derive(Debug, Clone)]
pub struct Event {
    pub webhook: Webhook,
    /// Set on the last event of a call.
    pub last: Option<Last>,
    /// What the gateway will make of it, for the record of accepted events (`--accepted`).
    pub accepted: AcceptedEvent,
}

/// One event as the chaos verdict checks it: its `event_id` (derived as the gateway derives
/// it), its call, and the appointment slot its call asks for, if any.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AcceptedEvent {
    pub event_id: Uuid,
    pub provider: String,
    pub call_id: String,
    pub event_type: String,
    /// The call's analysis asks for an appointment (on its analysis event).
    pub wants_booking: bool,
    /// The last event of its call.
    pub last: bool,
    /// Unix ms when it was answered 2xx (filled in when written).
    #[serde(default)]
    pub accepted_at_ms: i64,
}

/// The provider's name for a webhook's event, read the way the gateway reads it.
fn event_type(provider: Provider, webhook: &Webhook) -> String {
    use callgate_gateway::providers::{retell, twilio, vapi};
    let body = webhook.body.as_bytes();
    let routed = match provider {
        Provider::Retell => retell::routing(body).map(|(routing, _)| routing),
        Provider::Vapi => vapi::routing(body),
        Provider::Twilio => twilio::routing(Some(webhook.content_type), body, None),
    };
    routed.map(|routing| routing.event_type).unwrap_or_default()
}

/// The last event of a call, to follow up in the database.
#[derive(Debug, Clone)]
pub struct Last {
    /// Its id in `processed_events`.
    pub event_id: Uuid,
    pub wants_booking: bool,
}

/// Appointment slots handed out by this process.
static SLOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The first slot: on the hour, 400 days ahead.
static SLOT_BASE: std::sync::LazyLock<chrono::DateTime<chrono::Utc>> = std::sync::LazyLock::new(|| {
    let now = chrono::Utc::now() + chrono::Duration::days(400);
    now - chrono::Duration::seconds(now.timestamp() % 3600)
});

#[derive(Debug)]
struct Call {
    events: VecDeque<Event>,
    ready_at: Instant,
}

#[derive(Debug)]
pub struct Scheduler {
    model: Model,
    run_id: String,
    gap: Duration,
    appointment_share: f64,
    active: VecDeque<Call>,
    calls: u64,
}

impl Scheduler {
    pub fn new(model: Model, gap: Duration, appointment_share: f64) -> Self {
        let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
        Self { model, run_id, gap, appointment_share, active: VecDeque::new(), calls: 0 }
    }

    pub fn calls_started(&self) -> u64 {
        self.calls
    }

    /// The next event to send at `now`.
    pub fn next(&mut self, now: Instant) -> Event {
        // Calls go back in the order their next event becomes due, so the front is the earliest.
        if self.active.front().is_some_and(|call| call.ready_at <= now)
            && let Some(mut call) = self.active.pop_front()
            && let Some(event) = call.events.pop_front()
        {
            if !call.events.is_empty() {
                call.ready_at = now + self.gap;
                self.active.push_back(call);
            }
            return event;
        }
        let mut events = self.new_call();
        let first = events.pop_front().expect("a call has events");
        if !events.is_empty() {
            self.active.push_back(Call { events, ready_at: now + self.gap });
        }
        first
    }

    fn new_call(&mut self) -> VecDeque<Event> {
        self.calls += 1;
        let mut rng = rand::thread_rng();
        let company = rng.gen_range(0..self.model.companies);
        let provider = Model::provider(rng.gen_range(0..3));
        let number = self.model.pick(company, provider, rng.r#gen());
        let secret = Model::secret(company, provider);
        let line = Line { number, secret: &secret };
        let call_id = format!("lt-{}-{}", self.run_id, self.calls);
        let caller = format!("+1415{:07}", rng.gen_range(0..10_000_000));
        // Slots half an hour apart across the process (warm-up and measured legs alike) never
        // overlap, so Cal.com books every one.
        let wants = provider != Provider::Twilio && rng.gen_bool(self.appointment_share);
        let slot = SLOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = (*SLOT_BASE + chrono::Duration::minutes(30 * slot as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let analysis = wants.then(|| appointment_analysis(&start, "checkup"));
        let (webhooks, last_type) = match provider {
            Provider::Retell => (retell_call_on(line, &call_id, &caller, analysis), "call_analyzed"),
            Provider::Vapi => (vapi_call_on(line, &call_id, &caller, analysis), "end-of-call-report"),
            Provider::Twilio => (twilio_call_on(line, &self.model.twilio_public_url, &call_id, &caller), "completed"),
        };
        let count = webhooks.len();
        webhooks
            .into_iter()
            .enumerate()
            .map(|(i, webhook)| {
                let is_last = i + 1 == count;
                let last = is_last.then(|| Last {
                    event_id: event_id(provider, &call_id, last_type, webhook.body.as_bytes()),
                    wants_booking: wants,
                });
                let kind = event_type(provider, &webhook);
                let accepted = AcceptedEvent {
                    event_id: event_id(provider, &call_id, &kind, webhook.body.as_bytes()),
                    provider: provider.as_str().to_owned(),
                    call_id: call_id.clone(),
                    event_type: kind,
                    wants_booking: wants && is_last,
                    last: is_last,
                    accepted_at_ms: 0,
                };
                Event { webhook, last, accepted }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_ends_with_its_providers_last_event() {
        let model = Model::new(2, 9, "https://h").unwrap();
        let mut scheduler = Scheduler::new(model, Duration::ZERO, 0.5);
        let now = Instant::now();
        let mut lasts = 0;
        for _ in 0..1000 {
            let event = scheduler.next(now);
            if event.last.is_some() {
                lasts += 1;
                let body = &event.webhook.body;
                assert!(
                    body.contains("call_analyzed")
                        || body.contains("end-of-call-report")
                        || body.contains("CallStatus=completed"),
                    "{body}"
                );
            }
        }
        // With no gap each call goes out back to back: 3 or 4 events per call.
        assert!((250..=334).contains(&lasts), "{lasts} calls finished");
        assert!(scheduler.calls_started() >= lasts);
    }
}
