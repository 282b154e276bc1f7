//! The alert rules against a real Prometheus scraping a real gateway: when the broker stops, the
//! broker alert's expression turns true (the alert goes pending, then fires after its `for`).
//! The rules' own unit tests (`promtool test rules`) run in deploy/check/deploy.sh.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use callgate_contract::SecretCipher;
use callgate_tests::prometheus::TestPrometheus;
use callgate_tests::{TestBroker, TestDb, TestGateway, create_topic, init_logs, seed_tenant, serve_config};

const PATIENCE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn prometheus_raises_the_broker_alert_when_the_broker_stops() {
    init_logs();
    let mut broker = TestBroker::start();
    create_topic(&broker.brokers(), "call-events.v1", 1);
    let db = TestDb::create().await;
    let key = callgate_tests::secret_key();
    let cipher = SecretCipher::from_base64::<&str>(&key, &[]).unwrap();
    seed_tenant(&db, &cipher, "acme", "+1415555", "https://h", serde_json::json!({"mode": "secret"})).await;
    let gw = TestGateway::start(serve_config(&db, &broker.brokers(), "call-events.v1", &key, &[])).await;
    let prometheus = TestPrometheus::start(&[("callgate-gateway", gw.gateway.ops_addr().to_string())]);

    // Scraped and healthy: no gateway or broker alert (the gateway one is pending only until
    // the first scrape, while its data is absent; no worker is scraped here, so that one stays).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let alerts = prometheus.alerts().await;
        let quiet =
            !alerts.iter().any(|(name, _)| name == "CallgateGatewayDown" || name == "CallgateBrokerUnreachable");
        if quiet && prometheus.scalar("max(callgate_gateway_broker_up)").await == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "never healthy in Prometheus: {alerts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    broker.stop();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let alerts = prometheus.alerts().await;
        if let Some((_, state)) = alerts.iter().find(|(name, _)| name == "CallgateBrokerUnreachable") {
            assert!(state == "pending" || state == "firing", "{alerts:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the broker alert never went pending: {alerts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.gateway.shutdown().await;
}
