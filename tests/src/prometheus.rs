//! A real Prometheus (Debian's package) for the alert tests: it scrapes the targets it is given
//! every second and evaluates callgate's rules (`deploy/prometheus/callgate-rules.yml`) every
//! second, so an alert's expression turns true within seconds of its cause.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The rules file of the repository.
pub fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/callgate-rules.yml")
}

fn prometheus_bin() -> String {
    std::env::var("CALLGATE_PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".to_owned())
}

#[derive(Debug)]
pub struct TestPrometheus {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestPrometheus {
    /// Starts Prometheus scraping `targets` (job name, host:port) and waits until it is ready.
    pub fn start(targets: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels:\n    runbook_base: https://runbooks.test\n\
             rule_files:\n  - {}\nscrape_configs:\n",
            rules_file().display()
        );
        for (job, target) in targets {
            config.push_str(&format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"));
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {} ({error}): deploy/local/test.sh installs it (Debian's prometheus)",
                    prometheus_bin()
                )
            });
        let this = Self { url: format!("http://127.0.0.1:{port}"), child, _dir: dir };
        let ready = callgate_ops::HealthcheckArgs {
            addr: ([127, 0, 0, 1], port).into(),
            path: "/-/ready".into(),
            timeout: Duration::from_secs(2),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(callgate_ops::healthcheck(&ready), Ok(200)) {
            assert!(Instant::now() < deadline, "Prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        this
    }

    /// The alerts Prometheus holds now: (name, state: pending or firing).
    pub async fn alerts(&self) -> Vec<(String, String)> {
        let body: serde_json::Value =
            reqwest::get(format!("{}/api/v1/alerts", self.url)).await.unwrap().json().await.unwrap();
        body["data"]["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| {
                        (
                            a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                            a["state"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value of an instant query, if it has exactly one series.
    pub async fn scalar(&self, query: &str) -> Option<f64> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let result = body["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
