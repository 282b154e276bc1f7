//! SIGTERM behaviour: stop accepting, let the request in flight finish, flush its record.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use callgate_tests::{Stack, TestGateway, consume, init_logs, kafka_brokers, signed, spawn_stack};
use reqwest::StatusCode;

async fn eventually<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, check: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_finishes_the_request_in_flight_and_flushes() {
    init_logs();
    let Stack { gw, tenant, topic, .. } = spawn_stack("https://h", 1, &[]).await;
    let TestGateway { gateway, base_url, ops_url, client } = gw;
    let addr = gateway.local_addr();

    // A request whose body arrives in two parts, the second only after shutdown has begun.
    let body = signed::retell_body("call_ended", "call_inflight", tenant.retell_number.1, "+12025550123");
    let (name, signature) = signed::retell_signature(&tenant.retell_key, &body);
    let (first, second) = body.as_bytes().split_at(body.len() / 2);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let in_flight = client
        .post(format!("{base_url}/v1/webhooks/retell"))
        .header(name, signature)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let in_flight = tokio::spawn(in_flight);
    tx.send(first.to_vec()).await.unwrap();
    let metrics_url = format!("{ops_url}/metrics");
    eventually("the request reaching the gateway", || async {
        let text = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        text.contains("callgate_gateway_requests_in_flight 1")
    })
    .await;

    let shutdown = tokio::spawn(gateway.shutdown());
    eventually("the listener closing", || async { tokio::net::TcpStream::connect(addr).await.is_err() }).await;
    assert!(!shutdown.is_finished(), "shutdown must wait for the request in flight");

    tx.send(second.to_vec()).await.unwrap();
    drop(tx);
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    shutdown.await.unwrap();

    let records = consume(&kafka_brokers(), &topic, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "retell:call_inflight");
}
