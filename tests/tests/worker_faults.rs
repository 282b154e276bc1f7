//! The worker when things go wrong: analyses that cannot become appointments, records that
//! cannot be parsed, Postgres going away, a worker killed mid-stream, two workers in a group,
//! and an orderly shutdown.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callgate_contract::envelope::{ENVELOPE_VERSION, EventEnvelope, Payload, Route};
use callgate_contract::{E164, Provider};
use callgate_tests::calls::{
    FUTURE_LOCAL, TWILIO_PUBLIC, Webhook, appointment_analysis, retell_call, twilio_call, vapi_call,
};
use callgate_tests::proxy::{TcpProxy, postgres_addr};
use callgate_tests::worker::{
    PATIENCE, count, deliver_once_routed, fresh_dlq_and_group, metric_sum, ops_get, run_args, run_config, snapshot,
    start_worker, wait_count, wait_metrics, worker_bin,
};
use callgate_tests::{Stack, Tenant, consume, init_logs, kafka_brokers, records, spawn_stack};
use callgate_worker::Worker;
use callgate_worker::dlq::headers as dlq_headers;
use callgate_worker::tenants::{self, NumberDetails};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn stack(partitions: u32) -> Stack {
    init_logs();
    spawn_stack(TWILIO_PUBLIC, partitions, &[]).await
}

/// Many calls of every provider: `n` of each, a third of the Retell and Vapi ones booking.
///
/// Each call has a caller of its own. When one caller's calls sit on different partitions,
/// which of them created the customer (link `created`) and which found it (`exact_phone`)
/// depends on which partition's transaction commits first; that is a real race, not a defect,
/// and comparing two runs would only measure it.
fn traffic(tenant: &Tenant, n: usize) -> Vec<Webhook> {
    let mut events = Vec::new();
    for i in 0..n {
        let booking = (i % 3 == 0).then(|| appointment_analysis(FUTURE_LOCAL, "cleaning"));
        events.extend(retell_call(tenant, &format!("call_{i}"), &format!("+1202555{i:04}"), booking.clone()));
        events.extend(vapi_call(tenant, &format!("vapi-{i}"), &format!("+1202556{i:04}"), booking));
        events.extend(twilio_call(tenant, &format!("CA{i:032}"), &format!("+1202557{i:04}")));
    }
    events
}

#[tokio::test]
async fn analyses_that_cannot_become_appointments_flag_the_call_and_the_worker_keeps_going() {
    let stack = stack(1).await;
    let pool = &stack.db.pool;
    // A branch whose zone Postgres accepts but the IANA database does not name.
    let remote = tenants::create_branch(pool, stack.tenant.company, "Remote", "UTC+5").await.unwrap();
    let remote_number = E164::parse("+14155550199").unwrap();
    let id = tenants::add_phone_number(
        pool,
        stack.tenant.company,
        remote,
        stack.tenant.retell_account,
        remote_number,
        &NumberDetails::default(),
    )
    .await
    .unwrap();
    let mut remote_tenant = stack.tenant.clone();
    remote_tenant.retell_number = (id, remote_number);
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;

    let analyzed = |tenant: &Tenant, call: &str, data: serde_json::Value| {
        retell_call(tenant, call, "+12025550111", Some(data)).remove(2)
    };
    let mut no_service = appointment_analysis(FUTURE_LOCAL, "x");
    no_service.as_object_mut().unwrap().remove("service");
    let cases = [
        ("unparseable_time", analyzed(&stack.tenant, "c_time", appointment_analysis("next tuesday at 3", "cleaning"))),
        ("past_time", analyzed(&stack.tenant, "c_past", appointment_analysis("2020-01-01T10:00", "cleaning"))),
        ("unknown_service", analyzed(&stack.tenant, "c_service", appointment_analysis(FUTURE_LOCAL, "root canal"))),
        ("missing_service", analyzed(&stack.tenant, "c_missing", no_service)),
        // 02:30 on 2031-03-09 does not exist in New York (clocks jump from 02:00 to 03:00).
        (
            "nonexistent_local_time",
            analyzed(&stack.tenant, "c_dst", appointment_analysis("2031-03-09T02:30", "cleaning")),
        ),
        ("no_timezone", analyzed(&remote_tenant, "c_zone", appointment_analysis(FUTURE_LOCAL, "cleaning"))),
        // The last minute chrono can represent: its end (start + the service's duration) cannot
        // be computed. This one used to panic the lane and stall the partition.
        (
            "implausible_time",
            analyzed(&stack.tenant, "c_far", appointment_analysis("+262142-12-31T23:59Z", "cleaning")),
        ),
        ("implausible_time", analyzed(&stack.tenant, "c_2999", appointment_analysis("2999-01-01T10:00Z", "cleaning"))),
        ("past_time", analyzed(&stack.tenant, "c_bce", appointment_analysis("-262143-01-01T00:00Z", "cleaning"))),
    ];
    for (_, webhook) in &cases {
        deliver_once_routed(webhook, &stack.gw).await;
    }
    // After all of them, on the same partition: a good one.
    let good = analyzed(&stack.tenant, "c_good", appointment_analysis(FUTURE_LOCAL, "hygiene visit"));
    good.deliver(&stack.gw).await;
    wait_count(pool, "SELECT count(*) FROM processed_events", cases.len() as i64 + 1).await;

    for (reason, webhook) in &cases {
        let call_id = serde_json::from_str::<serde_json::Value>(&webhook.body).unwrap()["call"]["call_id"].clone();
        let (flagged, detail): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT review_reason, review_detail FROM calls WHERE provider_call_id = $1")
                .bind(call_id.as_str().unwrap())
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(flagged.as_deref(), Some(*reason), "{call_id}");
        assert!(detail.is_some_and(|d| !d.is_empty()));
    }
    let booked: Vec<String> =
        sqlx::query_scalar("SELECT c.provider_call_id FROM appointments a JOIN calls c ON c.id = a.call_id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(booked, vec!["c_good".to_owned()]);
    let (_, metrics) = ops_get(&worker, "/metrics").await;
    for (reason, _) in &cases {
        let series = format!("callgate_worker_calls_flagged_total{{reason=\"{reason}\"}}");
        let expected = cases.iter().filter(|(r, _)| r == reason).count() as f64;
        assert_eq!(metric_sum(&metrics, &series), expected, "{series}");
    }
    worker.shutdown().await;
}

fn envelope(stack: &Stack, version: u16, body: &str) -> String {
    let env = EventEnvelope {
        version,
        event_id: uuid::Uuid::new_v4(),
        provider: Provider::Retell,
        event_type: "call_ended".into(),
        provider_call_id: "c_dlq".into(),
        received_at: chrono::Utc::now(),
        trace_id: "t".into(),
        route: Route {
            company_id: stack.tenant.company,
            branch_id: stack.tenant.branch,
            phone_number_id: stack.tenant.retell_number.0,
            provider_account_id: stack.tenant.retell_account,
            number: stack.tenant.retell_number.1,
        },
        redacted: false,
        payload: Payload::Json(serde_json::value::RawValue::from_string(body.to_owned()).unwrap()),
    };
    serde_json::to_string(&env).unwrap()
}

#[tokio::test]
async fn records_that_cannot_be_parsed_go_to_the_dlq_and_the_partition_moves_on() {
    let stack = stack(1).await;
    let (worker, dlq) = start_worker(&stack.db, &stack.topic).await;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().unwrap();
    let garbage = [
        ("envelope", "this is not an envelope".to_owned()),
        ("version", envelope(&stack, ENVELOPE_VERSION + 98, r#"{"event":"call_ended","call":{"call_id":"c_dlq"}}"#)),
        ("payload", envelope(&stack, ENVELOPE_VERSION, r#"{"event":"call_ended"}"#)),
    ];
    for (_, value) in &garbage {
        let record = FutureRecord::to(&stack.topic).key("retell:c_dlq").payload(value.as_str());
        producer.send(record, Duration::from_secs(30)).await.unwrap();
    }
    for webhook in retell_call(&stack.tenant, "c_after", "+12025550123", None) {
        webhook.deliver(&stack.gw).await;
    }
    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", 3).await;

    let letters = consume(&kafka_brokers(), &dlq, 3, PATIENCE).await;
    assert_eq!(letters.len(), 3);
    for ((reason, value), letter) in garbage.iter().zip(&letters) {
        assert_eq!(letter.payload, value.as_bytes(), "the original record, unchanged");
        assert_eq!(letter.key, "retell:c_dlq");
        assert_eq!(letter.header(dlq_headers::REASON), Some(*reason));
        assert!(!letter.header(dlq_headers::ERROR).unwrap_or_default().is_empty());
        assert!(letter.header(dlq_headers::SOURCE).unwrap().starts_with(&format!("{}/0/", stack.topic)));
    }
    let (_, metrics) = ops_get(&worker, "/metrics").await;
    assert_eq!(metric_sum(&metrics, "callgate_worker_dlq_records_total"), 3.0);
    assert_eq!(count(&stack.db.pool, "SELECT count(*) FROM calls").await, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn postgres_going_away_pauses_the_worker_which_resumes_without_losing_or_repeating() {
    let stack = stack(3).await;
    let proxy = TcpProxy::start(postgres_addr(&stack.db.url)).await;
    let (dlq, group) = fresh_dlq_and_group();
    let mut args = run_args(&stack.db, &stack.topic, &group, &dlq);
    let url = args.iter().position(|a| a == "--database-url").unwrap() + 1;
    args[url] = proxy.postgres_url(&stack.db.url);
    let worker = Worker::start(run_config(&args, &["--retry-max-backoff", "500ms"])).await.unwrap();
    let pool = &stack.db.pool;

    let before = traffic(&stack.tenant, 2);
    for webhook in &before {
        webhook.deliver(&stack.gw).await;
    }
    wait_count(pool, "SELECT count(*) FROM processed_events", before.len() as i64).await;

    proxy.cut();
    let during = traffic(&stack.tenant, 5).split_off(before.len());
    for webhook in &during {
        webhook.deliver(&stack.gw).await;
    }
    wait_metrics(&worker, "database retries", |m| {
        metric_sum(m, r#"callgate_worker_retries_total{reason="database"}"#) >= 2.0
            && metric_sum(m, "callgate_worker_database_up") == 0.0
    })
    .await;
    assert_eq!(ops_get(&worker, "/readyz").await.0, 503);
    assert_eq!(count(pool, "SELECT count(*) FROM processed_events").await, before.len() as i64);

    proxy.restore();
    let total = (before.len() + during.len()) as i64;
    wait_count(pool, "SELECT count(*) FROM processed_events", total).await;
    assert_eq!(count(pool, "SELECT count(*) FROM calls").await, 15);
    assert_eq!(count(pool, "SELECT count(*) FROM appointments").await, 4);
    wait_metrics(&worker, "the database back up", |m| metric_sum(m, "callgate_worker_database_up") == 1.0).await;
    let (_, metrics) = ops_get(&worker, "/metrics").await;
    let applied = metric_sum(&metrics, "callgate_worker_events_total{");
    assert_eq!(applied, total as f64, "every event counted once: {metrics}");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_and_restarted_ends_where_an_undisturbed_one_does() {
    let calm = stack(3).await;
    let killed = stack(3).await;
    let calm_events = traffic(&calm.tenant, 12);
    let killed_events = traffic(&killed.tenant, 12);
    let n = calm_events.len() as i64;
    for (a, b) in calm_events.iter().zip(&killed_events) {
        a.deliver(&calm.gw).await;
        b.deliver(&killed.gw).await;
    }
    let (calm_worker, _) = start_worker(&calm.db, &calm.topic).await;

    let (dlq, group) = fresh_dlq_and_group();
    let args = run_args(&killed.db, &killed.topic, &group, &dlq);
    // One record per transaction and commit: slow enough to be caught mid-stream.
    let spawn = || {
        Process(
            Command::new(worker_bin())
                .arg("run")
                .args(&args)
                // The killed member holds its partitions until its session expires: 6 s
                // (run_args, the local broker's consumer settings).
                .args(["--batch-max-records", "1", "--log", "warn"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    };
    let mut child = spawn();
    let pool = &killed.db.pool;
    let deadline = Instant::now() + PATIENCE;
    let at_kill = loop {
        let done = count(pool, "SELECT count(*) FROM processed_events").await;
        if done >= n / 4 {
            child.kill(); // SIGKILL
            break done;
        }
        assert!(Instant::now() < deadline, "the worker process applied nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let after_kill = count(pool, "SELECT count(*) FROM processed_events").await;
    eprintln!("killed after {at_kill} of {n} events ({after_kill} committed)");
    assert!(after_kill < n, "the stream was over before the kill; the test proves nothing");

    let mut child = spawn();
    wait_count(pool, "SELECT count(*) FROM processed_events", n).await;
    wait_count(&calm.db.pool, "SELECT count(*) FROM processed_events", n).await;
    child.kill();
    assert_eq!(snapshot(&calm.db.pool).await, snapshot(pool).await);
    assert_eq!(count(pool, "SELECT count(*) FROM appointments").await, 8);
    calm_worker.shutdown().await;
}

/// A worker process, killed with SIGKILL when the test is done with it (or panics).
struct Process(std::process::Child);

impl Process {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn assigned(metrics: &str) -> f64 {
    metric_sum(metrics, "callgate_worker_assigned_partitions")
}

#[tokio::test]
async fn two_workers_in_one_group_share_the_partitions_and_apply_everything_once() {
    two_workers_share_the_partitions(&[], &[]).await;
}

#[tokio::test]
async fn two_eager_workers_in_one_group_share_the_partitions_and_apply_everything_once() {
    two_workers_share_the_partitions(&["--kafka-assignor", "eager"], &["--kafka-assignor", "eager"]).await;
}

async fn two_workers_share_the_partitions(a_options: &[&str], b_options: &[&str]) {
    let stack = stack(4).await;
    let (dlq, group) = fresh_dlq_and_group();
    let args = run_args(&stack.db, &stack.topic, &group, &dlq);
    let a = Worker::start(run_config(&args, a_options)).await.unwrap();
    let b = Worker::start(run_config(&args, b_options)).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (ma, mb) = (ops_get(&a, "/metrics").await.1, ops_get(&b, "/metrics").await.1);
        if assigned(&ma) > 0.0 && assigned(&mb) > 0.0 && assigned(&ma) + assigned(&mb) == 4.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never split the partitions: {} / {}",
            assigned(&ma),
            assigned(&mb)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = traffic(&stack.tenant, 8);
    for webhook in &events {
        webhook.deliver(&stack.gw).await;
    }
    let n = events.len() as i64;
    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", n).await;
    let applied = |m: &str| {
        metric_sum(m, "callgate_worker_events_total{") - metric_sum(m, "callgate_worker_duplicates_skipped_total")
    };
    let (ma, mb) = (ops_get(&a, "/metrics").await.1, ops_get(&b, "/metrics").await.1);
    eprintln!("worker a applied {}, worker b applied {}", applied(&ma), applied(&mb));
    assert!(applied(&ma) > 0.0 && applied(&mb) > 0.0, "one worker did everything");
    assert_eq!(applied(&ma) + applied(&mb), n as f64);
    assert_eq!(count(&stack.db.pool, "SELECT count(*) FROM calls").await, 24);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_commits_the_batch_in_hand_and_leaves_the_group() {
    let stack = stack(3).await;
    let (dlq, group) = fresh_dlq_and_group();
    let args = run_args(&stack.db, &stack.topic, &group, &dlq);
    let first = Worker::start(run_config(&args, &[])).await.unwrap();
    let events = traffic(&stack.tenant, 3);
    for webhook in &events {
        webhook.deliver(&stack.gw).await;
    }
    let n = events.len() as i64;
    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", n).await;
    first.shutdown().await;

    // Its successor in the group starts after the committed offsets: nothing is redelivered.
    let second = Worker::start(run_config(&args, &[])).await.unwrap();
    let late = retell_call(&stack.tenant, "late", "+12025550999", None);
    for webhook in &late {
        webhook.deliver(&stack.gw).await;
    }
    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", n + 3).await;
    let (_, metrics) = ops_get(&second, "/metrics").await;
    assert_eq!(metric_sum(&metrics, "callgate_worker_duplicates_skipped_total"), 0.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "callgate_worker_events_total{"), 3.0);
    second.shutdown().await;
}

#[tokio::test]
async fn a_service_added_while_the_worker_runs_is_used_by_the_next_analysis() {
    let stack = stack(1).await;
    let pool = &stack.db.pool;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let asks_for_a_root_canal = |call: &str| {
        retell_call(&stack.tenant, call, "+12025550111", Some(appointment_analysis(FUTURE_LOCAL, "root canal")))
            .remove(2)
    };
    asks_for_a_root_canal("c_before").deliver(&stack.gw).await;
    wait_count(pool, "SELECT count(*) FROM processed_events", 1).await;
    let flagged: Option<String> =
        sqlx::query_scalar("SELECT review_reason FROM calls WHERE provider_call_id = 'c_before'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(flagged.as_deref(), Some("unknown_service"));

    // The branch's services are cached now; an operator adds the one the caller asked for.
    let (_, metrics) = ops_get(&worker, "/metrics").await;
    let flushes = metric_sum(&metrics, "callgate_worker_settings_cache_flushes_total");
    let service =
        tenants::ServiceDetails { name: "Root Canal", aliases: &[], duration_minutes: 90, calcom_event_type_id: None };
    tenants::add_service(pool, stack.tenant.company, stack.tenant.branch, &service).await.unwrap();
    wait_metrics(&worker, "the settings cache to be emptied", |m| {
        metric_sum(m, "callgate_worker_settings_cache_flushes_total") > flushes
    })
    .await;
    asks_for_a_root_canal("c_after").deliver(&stack.gw).await;
    wait_count(pool, "SELECT count(*) FROM processed_events", 2).await;
    let booked: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.provider_call_id, s.name FROM appointments a JOIN calls c ON c.id = a.call_id \
         JOIN services s ON s.id = a.service_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(booked, vec![("c_after".to_owned(), "Root Canal".to_owned())]);
    worker.shutdown().await;
}

/// Static membership (`--kafka-group-instance-id`): a worker restarted under its name rejoins,
/// takes partitions again, and nothing is lost or applied twice. Kafka also skips the rebalance
/// when the member returns within the session timeout; the local broker (nisshi 0.6.0) does
/// not (the other member gives up its partitions once the timeout passes), so that part is not
/// asserted here.
#[tokio::test]
async fn a_static_member_restarted_rejoins_and_nothing_is_lost() {
    let stack = stack(4).await;
    let (dlq, group) = fresh_dlq_and_group();
    let args = run_args(&stack.db, &stack.topic, &group, &dlq);
    let options = |name: &'static str| ["--kafka-group-instance-id", name];
    let a = Worker::start(run_config(&args, &options("worker-a"))).await.unwrap();
    let b = Worker::start(run_config(&args, &options("worker-b"))).await.unwrap();
    wait_metrics(&a, "the group to split the partitions", |m| assigned(m) > 0.0 && assigned(m) < 4.0).await;
    let events = traffic(&stack.tenant, 4);
    let (first, second) = events.split_at(events.len() / 2);
    for webhook in first {
        webhook.deliver(&stack.gw).await;
    }
    b.shutdown().await;
    for webhook in second {
        webhook.deliver(&stack.gw).await;
    }
    let b = Worker::start(run_config(&args, &options("worker-b"))).await.unwrap();
    wait_metrics(&b, "worker-b's partitions back", |m| assigned(m) > 0.0).await;
    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", events.len() as i64).await;
    assert_eq!(count(&stack.db.pool, "SELECT count(*) FROM calls").await, 12);
    a.shutdown().await;
    b.shutdown().await;
}

/// Runs `callgate-worker` as an operator would; (success, stdout, stderr).
fn operator(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(worker_bin()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_once_in_effect_and_each_replay_is_recorded() {
    let stack = stack(1).await;
    let (worker, dlq) = start_worker(&stack.db, &stack.topic).await;
    // Two letters, as the worker writes them: a Retell call_ended that failed on the database
    // (the cause since fixed), and a record that was never an envelope.
    let webhook = retell_call(&stack.tenant, "c_replayed", "+12025550123", None).remove(1);
    let (key, value) = records::envelope(&stack.tenant, Provider::Retell, stack.tenant.retell_number, &webhook);
    let event_id: uuid::Uuid =
        serde_json::from_str::<serde_json::Value>(&value).unwrap()["event_id"].as_str().unwrap().parse().unwrap();
    let producer = records::producer(0);
    let letters = [
        (key.as_str(), value.as_str(), "database", event_id.to_string()),
        ("retell:junk", "not an envelope", "envelope", String::new()),
    ];
    for (key, value, reason, id) in &letters {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "callgate-event-id", value: Some(id.as_str()) })
            .insert(Header { key: dlq_headers::REASON, value: Some(*reason) })
            .insert(Header { key: dlq_headers::ERROR, value: Some("it failed") })
            .insert(Header { key: dlq_headers::SOURCE, value: Some("call-events.v1/0/7") });
        let record = FutureRecord::to(&dlq).key(*key).payload(*value).headers(headers);
        producer.send(record, Duration::from_secs(30)).await.unwrap();
    }
    let brokers = kafka_brokers();
    let topics = ["--kafka-brokers", &brokers, "--kafka-topic", &stack.topic, "--kafka-dlq-topic", &dlq];

    let (ok, listed, stderr) = operator(&[&["dlq", "list"][..], &topics].concat());
    assert!(ok, "{stderr}");
    assert!(listed.starts_with("2 dead letter(s)"), "{listed}");
    assert!(listed.contains("reason database: 1") && listed.contains("reason envelope: 1"), "{listed}");

    let db = ["--database-url", stack.db.url.as_str()];
    let replay = [&["dlq", "replay", "--reason", "database", "--actor", "carol"][..], &topics, &db].concat();
    let (ok, dry, stderr) = operator(&[&replay[..], &["--dry-run"]].concat());
    assert!(ok, "{stderr}");
    assert!(dry.contains("1 dead letter(s)") && dry.contains("dry run: would replay 1"), "{dry}");
    let (ok, _, stderr) = operator(&[&["dlq", "replay"][..], &topics, &db].concat());
    assert!(!ok && stderr.contains("needs a selection"), "replaying everything takes a selection: {stderr}");

    let (ok, done, stderr) = operator(&replay);
    assert!(ok, "{stderr}");
    assert!(done.contains("replayed: 1 published"), "{done}");
    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", 1).await;
    // A second replay is harmless: the worker skips the event it applied.
    assert!(operator(&replay).0);
    wait_metrics(&worker, "the second copy skipped", |m| {
        metric_sum(m, "callgate_worker_duplicates_skipped_total") >= 1.0
    })
    .await;
    assert_eq!(count(&stack.db.pool, "SELECT count(*) FROM processed_events").await, 1);
    assert_eq!(count(&stack.db.pool, "SELECT count(*) FROM calls WHERE provider_call_id = 'c_replayed'").await, 1);
    let audit: Vec<(String, String, Vec<uuid::Uuid>)> =
        sqlx::query_as("SELECT actor, action, row_ids FROM operator_actions ORDER BY id")
            .fetch_all(&stack.db.pool)
            .await
            .unwrap();
    let replayed = ("carol".to_owned(), "dlq replay".to_owned(), vec![event_id]);
    assert_eq!(audit, vec![replayed.clone(), replayed], "each replay recorded, the dry run not");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_flagged_call_is_reprocessed_once_its_cause_is_fixed_and_only_once() {
    let stack = stack(1).await;
    let pool = &stack.db.pool;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let analysed =
        retell_call(&stack.tenant, "c_fixed", "+12025550111", Some(appointment_analysis(FUTURE_LOCAL, "root canal")));
    for webhook in analysed {
        webhook.deliver(&stack.gw).await;
    }
    wait_count(pool, "SELECT count(*) FROM processed_events", 3).await;
    let reprocess = || {
        let args =
            ["call", "reprocess", "--database-url", &stack.db.url, "--provider", "retell", "--call-id", "c_fixed"];
        operator(&[&args[..], &["--actor", "dana"]].concat())
    };
    let (ok, still, stderr) = reprocess();
    assert!(ok, "{stderr}");
    assert!(still.starts_with("still flagged: unknown_service"), "nothing fixed yet: {still}");

    let service =
        tenants::ServiceDetails { name: "Root Canal", aliases: &[], duration_minutes: 90, calcom_event_type_id: None };
    tenants::add_service(pool, stack.tenant.company, stack.tenant.branch, &service).await.unwrap();
    let (ok, created, stderr) = reprocess();
    assert!(ok, "{stderr}");
    assert!(created.starts_with("appointment created: Root Canal"), "{created}");
    let (flag, reason): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT c.review_reason, h.reason FROM calls c JOIN appointments a ON a.call_id = c.id \
         JOIN appointment_status_history h ON h.appointment_id = a.id WHERE c.provider_call_id = 'c_fixed'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(flag, None, "the flag is cleared");
    assert_eq!(reason.as_deref(), Some("created from the analysis of retell call c_fixed"));
    let (ok, again, _) = reprocess();
    assert!(ok && again.starts_with("the appointment existed already"), "{again}");
    assert_eq!(count(pool, "SELECT count(*) FROM appointments").await, 1);
    assert_eq!(count(pool, "SELECT count(*) FROM operator_actions WHERE action = 'call reprocess'").await, 3);
    worker.shutdown().await;
}
