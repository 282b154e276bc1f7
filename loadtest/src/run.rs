//! Sending: open loop at a rate (each request leaves on schedule whether or not earlier ones
//! returned, and its latency counts from when it *should* have left, so a stall shows up as
//! latency instead of hiding it), or closed loop with C connections to find the ceiling.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::traffic::{Event, Scheduler};

/// How the load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Open { rate: f64 },
    Closed { connections: usize },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub target: String,
    pub mode: Mode,
    pub duration: Duration,
    /// Requests allowed in flight before an open-loop send is counted as `skipped`.
    pub max_in_flight: usize,
    /// Where every event answered 2xx is recorded (`--accepted`).
    pub accepted: Option<Arc<AcceptedLog>>,
}

/// The load generator's own record of every event the gateway answered 2xx: JSON lines of
/// [`crate::traffic::AcceptedEvent`], what the chaos verdict holds the database to.
#[derive(Debug)]
pub struct AcceptedLog(Mutex<std::io::BufWriter<std::fs::File>>);

impl AcceptedLog {
    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self(Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?))))
    }

    fn write(&self, event: &crate::traffic::AcceptedEvent) {
        use std::io::Write as _;
        let mut event = event.clone();
        event.accepted_at_ms = chrono::Utc::now().timestamp_millis();
        let mut out = self.0.lock().expect("not poisoned");
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(out, "{line}");
        }
    }

    pub fn flush(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        self.0.lock().expect("not poisoned").flush()
    }
}

/// A finished call's last event, acknowledged: followed up to the database.
#[derive(Debug, Clone)]
pub struct Finished {
    pub event_id: Uuid,
    pub sent_at: SystemTime,
    pub wants_booking: bool,
}

/// Latency in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    pub sent: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

#[derive(Debug)]
pub struct Measured {
    pub wall: Duration,
    pub sent: u64,
    pub ok: u64,
    pub skipped: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub latency: Histogram<u64>,
    pub timeline: Vec<Second>,
    pub calls: u64,
}

#[derive(Debug)]
struct Shared {
    latency: Mutex<Histogram<u64>>,
    timeline: Mutex<Vec<Second>>,
    statuses: Mutex<BTreeMap<u16, u64>>,
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    started: Instant,
}

impl Shared {
    fn record(&self, intended: Instant, status: Option<u16>) {
        let micros = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        let second = intended.duration_since(self.started).as_secs() as usize;
        let failed = !status.is_some_and(|s| (200..300).contains(&s));
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(status) = status {
            *self.statuses.lock().expect("not poisoned").entry(status).or_default() += 1;
        }
        let _ = self.latency.lock().expect("not poisoned").record(micros.min(600_000_000));
        let mut timeline = self.timeline.lock().expect("not poisoned");
        while timeline.len() <= second {
            timeline.push(Second { sent: 0, errors: 0, latency: histogram() });
        }
        let slot = &mut timeline[second];
        slot.sent += 1;
        slot.errors += u64::from(failed);
        let _ = slot.latency.record(micros.min(600_000_000));
    }
}

/// Runs the plan; each finished call's last event goes to `finished` (when given).
pub async fn run(plan: &Plan, mut scheduler: Scheduler, finished: Option<mpsc::UnboundedSender<Finished>>) -> Measured {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client builds");
    let shared = Arc::new(Shared {
        latency: Mutex::new(histogram()),
        timeline: Mutex::new(Vec::new()),
        statuses: Mutex::new(BTreeMap::new()),
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        started: Instant::now(),
    });
    let bar = progress(plan, shared.clone());
    let end = shared.started + plan.duration;
    let calls = match plan.mode {
        Mode::Open { rate } => {
            let slots = Arc::new(Semaphore::new(plan.max_in_flight));
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            let mut i: u32 = 0;
            loop {
                let intended = shared.started + period * i;
                if intended >= end {
                    break;
                }
                i += 1;
                tokio::time::sleep_until(intended.into()).await;
                let event = scheduler.next(Instant::now());
                shared.sent.fetch_add(1, Ordering::Relaxed);
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    shared.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (client, shared, target, finished, accepted) =
                    (client.clone(), shared.clone(), plan.target.clone(), finished.clone(), plan.accepted.clone());
                tasks.spawn(async move {
                    send(&client, &target, event, intended, &shared, finished.as_ref(), accepted.as_deref()).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            scheduler.calls_started()
        }
        Mode::Closed { connections } => {
            let scheduler = Arc::new(Mutex::new(scheduler));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..connections {
                let (client, shared, target, finished, scheduler, accepted) = (
                    client.clone(),
                    shared.clone(),
                    plan.target.clone(),
                    finished.clone(),
                    scheduler.clone(),
                    plan.accepted.clone(),
                );
                tasks.spawn(async move {
                    while Instant::now() < end {
                        let event = scheduler.lock().expect("not poisoned").next(Instant::now());
                        shared.sent.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        send(&client, &target, event, now, &shared, finished.as_ref(), accepted.as_deref()).await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            scheduler.lock().expect("not poisoned").calls_started()
        }
    };
    finish(shared, bar, calls)
}

fn finish(shared: Arc<Shared>, bar: ProgressBar, calls: u64) -> Measured {
    bar.finish_and_clear();
    let wall = shared.started.elapsed();
    Measured {
        wall,
        sent: shared.sent.load(Ordering::Relaxed),
        ok: shared.ok.load(Ordering::Relaxed),
        skipped: shared.skipped.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        statuses: shared.statuses.lock().expect("not poisoned").clone(),
        latency: shared.latency.lock().expect("not poisoned").clone(),
        timeline: shared.timeline.lock().expect("not poisoned").clone(),
        calls,
    }
}

async fn send(
    client: &reqwest::Client,
    target: &str,
    event: Event,
    intended: Instant,
    shared: &Shared,
    finished: Option<&mpsc::UnboundedSender<Finished>>,
    accepted: Option<&AcceptedLog>,
) {
    let webhook = &event.webhook;
    let mut request = client
        .post(format!("{}{}", target.trim_end_matches('/'), webhook.path))
        .header("content-type", webhook.content_type);
    for (name, value) in &webhook.headers {
        request = request.header(*name, value);
    }
    let sent_at = SystemTime::now();
    let status = request.body(webhook.body.clone()).send().await.ok().map(|r| r.status().as_u16());
    shared.record(intended, status);
    if let (Some(log), Some(200..=299)) = (accepted, status) {
        log.write(&event.accepted);
    }
    if let (Some(finished), Some(last), Some(200..=299)) = (finished, event.last, status) {
        let _ = finished.send(Finished { event_id: last.event_id, sent_at, wants_booking: last.wants_booking });
    }
}

fn progress(plan: &Plan, shared: Arc<Shared>) -> ProgressBar {
    let bar = ProgressBar::new(plan.duration.as_secs());
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}").expect("valid template"));
    let ticker = bar.clone();
    tokio::spawn(async move {
        let mut last = (0, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if ticker.is_finished() {
                break;
            }
            let sent = shared.sent.load(Ordering::Relaxed);
            let rate = (sent - last.0) as f64 / last.1.elapsed().as_secs_f64();
            last = (sent, Instant::now());
            let p99 = shared.latency.lock().expect("not poisoned").value_at_quantile(0.99) as f64 / 1000.0;
            ticker.set_position(shared.started.elapsed().as_secs());
            ticker.set_message(format!(
                "{rate:>7.0} req/s  errors {}  skipped {}  p99 {p99:.1} ms",
                shared.errors.load(Ordering::Relaxed),
                shared.skipped.load(Ordering::Relaxed)
            ));
        }
    });
    bar
}
