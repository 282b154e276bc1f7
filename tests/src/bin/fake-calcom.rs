//! The fake Cal.com of the test suite as a process, for the local demo (`deploy/local/run.sh`):
//! Cal.com is a SaaS that cannot run here, so the demo books into this instead. It logs each
//! booking it holds.
//!
//!   fake-calcom --listen 127.0.0.1:8095 --api-key cal_demo_key --event-type 1001:1:45
//!
//! The chaos run (`deploy/local/chaos.sh`) also uses it, with `--chaos` and its controls:
//! `POST /__chaos?share=…&faults=…` and `GET /__bookings`.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::Duration;

use callgate_tests::calcom::{FakeCalcom, Limits};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "A fake Cal.com v2 bookings API (docs/calcom.md §6), for local demos")]
struct Args {
    /// Address to serve on.
    #[arg(long, env = "CALLGATE_FAKE_CALCOM_LISTEN", default_value = "127.0.0.1:8095")]
    listen: SocketAddr,
    /// API keys it accepts (Bearer cal_…), repeatable.
    #[arg(long = "api-key", default_value = "cal_demo_key")]
    api_keys: Vec<String>,
    /// Event types it knows, as ID:HOST:MINUTES, repeatable.
    #[arg(long = "event-type", value_parser = event_type, default_values = ["1001:1:45", "1002:1:30"])]
    event_types: Vec<(i64, i64, i64)>,
    /// Share of create requests (0..=1) answered with one of Cal.com's real misbehaviours
    /// (503, a timeout before or after booking, a 500 after booking, a cut connection, 409, 429).
    /// `POST /__chaos?share=S&faults=A,B` changes it while running.
    #[arg(long, default_value_t = 0.0)]
    chaos: f64,
}

fn event_type(text: &str) -> Result<(i64, i64, i64), String> {
    let parts: Vec<i64> =
        text.split(':').map(|p| p.parse::<i64>()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    match parts[..] {
        [id, host, minutes] => Ok((id, host, minutes)),
        _ => Err("expected ID:HOST:MINUTES".into()),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let fake = FakeCalcom::start_on(args.listen, Limits::default()).await?;
    for key in &args.api_keys {
        fake.add_key(key);
    }
    for (id, host, minutes) in &args.event_types {
        fake.add_event_type(*id, *host, *minutes);
    }
    fake.set_chaos(args.chaos.clamp(0.0, 1.0));
    println!("fake Cal.com on http://{}", fake.addr);
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bookings = fake.bookings();
        for booking in bookings.iter().skip(seen) {
            println!(
                "fake Cal.com: booking {} event type {} at {} for {} ({})",
                booking.uid, booking.event_type_id, booking.start, booking.attendee["name"], booking.status
            );
        }
        seen = bookings.len();
    }
}
