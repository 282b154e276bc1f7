//! The spool at the edge, against a real broker that is killed and restarted: webhooks the
//! broker cannot take are answered 2xx once they are on disk, published in order when it is
//! back, survive a SIGKILL of the gateway, and a full spool answers 503.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callgate_contract::SecretCipher;
use callgate_tests::worker::metric_sum;
use callgate_tests::{
    ConsumedRecord, Tenant, TestBroker, TestDb, TestGateway, consume, create_topic, init_logs, seed_tenant,
    serve_config, signed, workspace_bin,
};
use reqwest::StatusCode;

const TOPIC: &str = "call-events.v1";
const PATIENCE: Duration = Duration::from_secs(90);

struct Setup {
    broker: TestBroker,
    db: TestDb,
    key: String,
    tenant: Tenant,
    spool: tempfile::TempDir,
}

async fn setup() -> Setup {
    init_logs();
    let broker = TestBroker::start();
    create_topic(&broker.brokers(), TOPIC, 2);
    let db = TestDb::create().await;
    let key = callgate_tests::secret_key();
    let cipher = SecretCipher::from_base64::<&str>(&key, &[]).unwrap();
    let tenant =
        seed_tenant(&db, &cipher, "acme", "+1415555", "https://h", serde_json::json!({"mode": "secret"})).await;
    Setup { broker, db, key, tenant, spool: tempfile::tempdir().unwrap() }
}

/// A signed Retell webhook of `event` for `call_id`, padded with `padding` bytes of a field nobody reads.
fn retell(tenant: &Tenant, event: &str, call_id: &str, padding: usize) -> (String, (&'static str, String)) {
    let mut body = signed::retell_body(event, call_id, tenant.retell_number.1, "+12025550123");
    if padding > 0 {
        body = body.replacen("\"call\":{", &format!("\"call\":{{\"padding\":\"{}\",", "x".repeat(padding)), 1);
    }
    let signature = signed::retell_signature(&tenant.retell_key, &body);
    (body, signature)
}

async fn send(client: &reqwest::Client, base: &str, webhook: &(String, (&'static str, String))) -> reqwest::Response {
    let (body, (name, value)) = webhook;
    client.post(format!("{base}/v1/webhooks/retell")).header(*name, value).body(body.clone()).send().await.unwrap()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the topic until it holds `distinct` different event ids. A record whose ack came too
/// late is on it twice (the producer's copy and the spool's): that is allowed.
async fn consume_events(brokers: &str, distinct: usize) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let records = consume(brokers, TOPIC, usize::MAX, Duration::from_secs(3)).await;
        let ids: std::collections::HashSet<&str> =
            records.iter().filter_map(|r| r.header("callgate-event-id")).collect();
        if ids.len() >= distinct {
            return records;
        }
        assert!(Instant::now() < deadline, "{} of {distinct} events on the topic: {:?}", ids.len(), keys(&records));
    }
}

fn keys(records: &[ConsumedRecord]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

/// The event id each copy of a record names, in topic order, for one key.
fn event_ids(records: &[ConsumedRecord], key: &str) -> Vec<String> {
    records.iter().filter(|r| r.key == key).map(|r| r.header("callgate-event-id").unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_broker_outage_is_answered_from_the_spool_and_published_in_order_when_it_returns() {
    let mut s = setup().await;
    let spool_dir = s.spool.path().to_str().unwrap().to_owned();
    let flags = ["--spool-dir", &spool_dir, "--spool-after", "500ms", "--kafka-ack-timeout", "1s"];
    let gw = TestGateway::start(serve_config(&s.db, &s.broker.brokers(), TOPIC, &s.key, &flags)).await;
    let base = gw.url("");

    assert_eq!(send(&gw.client, &base, &retell(&s.tenant, "call_started", "before", 0)).await.status(), 204);

    s.broker.stop();
    let call = [
        retell(&s.tenant, "call_started", "c1", 0),
        retell(&s.tenant, "call_ended", "c1", 0),
        retell(&s.tenant, "call_analyzed", "c1", 0),
    ];
    let other = retell(&s.tenant, "call_started", "c2", 0);
    for webhook in call.iter().chain([&other]) {
        let response = send(&gw.client, &base, webhook).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "spooled, and answered as usual");
    }
    // Vapi's assistant-request gets its normal answer, the number's assistant, from the spool too.
    let request = signed::vapi_body("assistant-request", "v1", Some(s.tenant.vapi_number.1), None);
    let answer = gw
        .client
        .post(gw.url("/v1/webhooks/vapi"))
        .header("x-vapi-secret", &s.tenant.vapi_secret)
        .header("content-type", "application/json")
        .body(request)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap()["assistantId"],
        callgate_tests::tenant::VAPI_ASSISTANT
    );
    let metrics = gw.metrics().await;
    assert_eq!(metric_sum(&metrics, "callgate_gateway_spool_open"), 1.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "callgate_gateway_spool_records"), 5.0);
    assert_eq!(metric_sum(&metrics, "callgate_gateway_spool_spooled_records_total"), 5.0);
    assert!(metric_sum(&metrics, "callgate_gateway_spool_oldest_record_age_seconds") >= 0.0);
    let ready = gw.client.get(format!("{}/readyz", gw.ops_url)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "the spool takes writes, so the gateway stays ready");

    s.broker.restart();
    wait_for("spool drained", async || metric_sum(&gw.metrics().await, "callgate_gateway_spool_open") == 0.0).await;
    let metrics = gw.metrics().await;
    assert_eq!(metric_sum(&metrics, "callgate_gateway_spool_drained_records_total"), 5.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "callgate_gateway_spool_records"), 0.0);
    // Drained: new webhooks go to the broker again, not to the spool.
    assert_eq!(send(&gw.client, &base, &retell(&s.tenant, "call_started", "after", 0)).await.status(), 204);
    assert_eq!(metric_sum(&gw.metrics().await, "callgate_gateway_spool_spooled_records_total"), 5.0);

    let records = consume_events(&s.broker.brokers(), 7).await;
    for key in ["retell:before", "retell:c2", "retell:after"] {
        assert!(!event_ids(&records, key).is_empty(), "{key} missing: {:?}", keys(&records));
    }
    // The call's events are on the topic in the order they were accepted, with the event id,
    // key and headers they were answered with (the envelope inside says the same id). A record
    // may be there twice, and the second copy comes later: the first one's late acknowledgement
    // came after it was spooled, or the drainer published again from a record the broker did
    // not acknowledge while it came back. The worker skips a second copy by its event id, so
    // what it applies is each event's first copy, in the order accepted.
    let c1: Vec<&ConsumedRecord> = records.iter().filter(|r| r.key == "retell:c1").collect();
    let mut seen = std::collections::HashSet::new();
    let first_copies: Vec<&str> = c1
        .iter()
        .filter(|r| seen.insert(r.header("callgate-event-id").unwrap()))
        .map(|r| r.header("callgate-event-type").unwrap())
        .collect();
    assert_eq!(first_copies, ["call_started", "call_ended", "call_analyzed"], "{:?}", c1);
    for record in &c1 {
        assert_eq!(record.value["event_id"].as_str(), record.header("callgate-event-id"));
        assert!(record.header("callgate-trace-id").is_some_and(|t| t.len() == 32));
    }
    // The segment files of a drained spool are gone.
    let left: Vec<_> = std::fs::read_dir(s.spool.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".seg"))
        .collect();
    assert!(left.len() <= 1, "only the segment being written stays: {left:?}");
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after_and_counts_it() {
    let mut s = setup().await;
    let spool_dir = s.spool.path().to_str().unwrap().to_owned();
    let flags = ["--spool-dir", &spool_dir, "--spool-after", "300ms", "--spool-max-bytes", "20000"];
    let gw = TestGateway::start(serve_config(&s.db, &s.broker.brokers(), TOPIC, &s.key, &flags)).await;
    let base = gw.url("");
    s.broker.stop();
    assert_eq!(send(&gw.client, &base, &retell(&s.tenant, "call_started", "fits", 0)).await.status(), 204);
    let refused = send(&gw.client, &base, &retell(&s.tenant, "call_ended", "too-much", 30_000)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "5");
    let metrics = gw.metrics().await;
    assert_eq!(metric_sum(&metrics, "callgate_gateway_spool_errors_total{kind=\"full\"}"), 1.0, "{metrics}");
    assert_eq!(
        metric_sum(&metrics, "callgate_gateway_requests_total{outcome=\"spool_full\",provider=\"retell\"}"),
        1.0,
        "{metrics}"
    );
    gw.gateway.shutdown().await;
}

/// A `callgate-gateway serve` process on this setup's spool.
fn gateway_process(s: &Setup, port: u16, ops_port: u16) -> Child {
    Command::new(workspace_bin("callgate-gateway"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", &format!("127.0.0.1:{ops_port}")])
        .args(["--kafka-brokers", &s.broker.brokers(), "--kafka-topic", TOPIC])
        .args(["--spool-dir", s.spool.path().to_str().unwrap(), "--spool-after", "300ms", "--log", "warn"])
        // Secrets by environment, never as arguments.
        .env("CALLGATE_DATABASE_URL", &s.db.url)
        .env("CALLGATE_SECRET_KEY", &s.key)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Spools `calls` webhooks in a gateway process with the broker down, then kills it (SIGKILL).
async fn spool_then_kill(s: &mut Setup, calls: &[&str]) {
    s.broker.stop();
    let (port, ops) = (free_port(), free_port());
    let mut child = gateway_process(s, port, ops);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    wait_for("gateway ready", async || {
        client.get(format!("http://127.0.0.1:{ops}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    for call in calls {
        let response =
            send(&client, &format!("http://127.0.0.1:{port}"), &retell(&s.tenant, "call_started", call, 0)).await;
        assert_eq!(response.status(), 204);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_gateway_killed_with_records_in_its_spool_publishes_them_when_started_again() {
    let mut s = setup().await;
    spool_then_kill(&mut s, &["k1", "k2", "k3"]).await;
    s.broker.restart();
    let (port, ops) = (free_port(), free_port());
    let mut child = gateway_process(&s, port, ops);
    let records = consume_events(&s.broker.brokers(), 3).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for key in ["retell:k1", "retell:k2", "retell:k3"] {
        assert!(!event_ids(&records, key).is_empty(), "{key} missing: {:?}", keys(&records));
    }
}

#[tokio::test]
async fn spool_drain_publishes_the_spool_of_a_gateway_that_is_gone_for_good() {
    let mut s = setup().await;
    spool_then_kill(&mut s, &["d1", "d2"]).await;
    s.broker.restart();
    let output = Command::new(workspace_bin("callgate-gateway"))
        .args(["spool", "drain", "--dir", s.spool.path().to_str().unwrap()])
        .args(["--kafka-brokers", &s.broker.brokers(), "--kafka-topic", TOPIC, "--log", "warn"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "2");
    let records = consume_events(&s.broker.brokers(), 2).await;
    assert!(!event_ids(&records, "retell:d1").is_empty() && !event_ids(&records, "retell:d2").is_empty());
}

#[tokio::test]
async fn a_gateway_stopping_publishes_its_spool_before_it_exits_if_the_broker_takes_it() {
    // A replica removed by a scale-down, say: nothing would start again on its volume.
    let mut s = setup().await;
    let spool_dir = s.spool.path().to_str().unwrap().to_owned();
    let flags =
        ["--spool-dir", &spool_dir, "--spool-after", "500ms", "--kafka-ack-timeout", "1s", "--shutdown-grace", "60s"];
    let gw = TestGateway::start(serve_config(&s.db, &s.broker.brokers(), TOPIC, &s.key, &flags)).await;
    let base = gw.url("");
    s.broker.stop();
    for call in ["g1", "g2", "g3"] {
        assert_eq!(send(&gw.client, &base, &retell(&s.tenant, "call_started", call, 0)).await.status(), 204);
    }
    assert_eq!(metric_sum(&gw.metrics().await, "callgate_gateway_spool_records"), 3.0);
    // Stopping while the broker is still down; it comes back during the shutdown's grace.
    let stopping = tokio::spawn(gw.gateway.shutdown());
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.broker.restart();
    stopping.await.unwrap();

    let records = consume(&s.broker.brokers(), TOPIC, usize::MAX, Duration::from_secs(3)).await;
    for key in ["retell:g1", "retell:g2", "retell:g3"] {
        assert!(!event_ids(&records, key).is_empty(), "{key} was left in the spool: {:?}", keys(&records));
    }
}
