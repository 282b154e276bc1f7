//! What the worker's log lines say about a caller. Logs outlive a customer's erasure and the
//! content retention, so what a caller said stays in the database, where both reach it; a log
//! line names the event, the call and the reason.
//!
//! One test in its own binary: it installs the process's log subscriber itself, to read what
//! was logged.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use callgate_tests::calls::{FUTURE_LOCAL, TWILIO_PUBLIC, appointment_analysis, retell_call};
use callgate_tests::spawn_stack;
use callgate_tests::worker::{start_worker, wait_count};
use tracing_subscriber::fmt::MakeWriter;

/// Everything logged, kept.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn a_flagged_calls_log_line_names_the_reason_not_what_the_caller_asked_for() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("info,sqlx=warn,librdkafka=warn")
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();
    let stack = spawn_stack(TWILIO_PUBLIC, 3, &[]).await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let analysis = appointment_analysis(FUTURE_LOCAL, "a root canal");
    for webhook in retell_call(&stack.tenant, "call_flagged", "+12025550123", Some(analysis)) {
        webhook.deliver(&stack.gw).await;
    }
    let pool = &stack.db.pool;
    wait_count(pool, "SELECT count(*) FROM calls WHERE review_reason = 'unknown_service'", 1).await;
    worker.shutdown().await;

    let detail: String = sqlx::query_scalar("SELECT review_detail FROM calls").fetch_one(pool).await.unwrap();
    assert!(detail.contains("a root canal"), "the operator reads it in the database: {detail}");
    let text = logs.text();
    let line = text.lines().find(|l| l.contains("call flagged for review")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("call_flagged") && line.contains("unknown_service"), "{line}");
    assert!(!text.contains("root canal"), "the caller's words were logged:\n{text}");
}
