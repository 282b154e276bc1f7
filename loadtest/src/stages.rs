//! Where the time goes, from the services' own histograms with a `stage` label, scraped before
//! and after the measured leg and differenced, so warm-up and earlier legs do not count:
//! - the gateway's `callgate_gateway_stage_duration_seconds{stage}` (lookup, verify, produce);
//! - the worker's `callgate_worker_event_age_seconds{stage}`: from the gateway's acceptance to
//!   the record's read from Kafka (the broker's share) and to its transaction's commit.

use std::collections::BTreeMap;

use serde::Serialize;

pub const GATEWAY: &str = "callgate_gateway_stage_duration_seconds";
pub const WORKER: &str = "callgate_worker_event_age_seconds";

/// Cumulative bucket counts per stage: (upper bound in seconds, count).
pub type Buckets = BTreeMap<String, Vec<(f64, u64)>>;

/// `metric`'s buckets at the ops endpoint `target`.
pub async fn scrape(client: &reqwest::Client, target: &str, metric: &str) -> Option<Buckets> {
    let url = format!("{}/metrics", target.trim_end_matches('/'));
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(parse(&text, metric))
}

pub fn parse(text: &str, metric: &str) -> Buckets {
    let prefix = format!("{metric}_bucket{{");
    let mut out: Buckets = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            line[start..].split('"').next().map(str::to_owned)
        };
        let (Some(stage), Some(le)) = (label("stage"), label("le")) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        out.entry(stage).or_default().push((le, count));
    }
    for buckets in out.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

#[derive(Debug, Serialize)]
pub struct Stage {
    pub stage: String,
    pub count: u64,
    /// Upper bounds of the buckets holding the 50th and 99th percentiles, in ms.
    pub p50_le_ms: f64,
    pub p99_le_ms: f64,
}

/// The stages' distributions between two scrapes.
pub fn between(before: &Buckets, after: &Buckets) -> Vec<Stage> {
    after
        .iter()
        .map(|(stage, buckets)| {
            let earlier = before.get(stage);
            let diff: Vec<(f64, u64)> = buckets
                .iter()
                .map(|(le, n)| {
                    let was = earlier.and_then(|b| b.iter().find(|(l, _)| l == le)).map_or(0, |(_, n)| *n);
                    (*le, n.saturating_sub(was))
                })
                .collect();
            let total = diff.last().map_or(0, |(_, n)| *n);
            let bound = |q: f64| {
                let want = (total as f64 * q).ceil() as u64;
                diff.iter().find(|(_, n)| *n >= want.max(1)).map_or(f64::INFINITY, |(le, _)| le * 1000.0)
            };
            Stage { stage: stage.clone(), count: total, p50_le_ms: bound(0.5), p99_le_ms: bound(0.99) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_quantiles_come_from_the_difference_of_two_scrapes() {
        let before = parse(
            concat!(
                "callgate_gateway_stage_duration_seconds_bucket{stage=\"produce\",le=\"0.001\"} 10\n",
                "callgate_gateway_stage_duration_seconds_bucket{stage=\"produce\",le=\"0.01\"} 10\n",
                "callgate_gateway_stage_duration_seconds_bucket{stage=\"produce\",le=\"+Inf\"} 10\n",
            ),
            GATEWAY,
        );
        let after = parse(
            concat!(
                "callgate_gateway_stage_duration_seconds_bucket{stage=\"produce\",le=\"0.001\"} 60\n",
                "callgate_gateway_stage_duration_seconds_bucket{stage=\"produce\",le=\"0.01\"} 109\n",
                "callgate_gateway_stage_duration_seconds_bucket{stage=\"produce\",le=\"+Inf\"} 110\n",
                "callgate_gateway_requests_total{outcome=\"accepted\"} 5\n",
            ),
            GATEWAY,
        );
        let stages = between(&before, &after);
        assert_eq!(stages.len(), 1);
        // Another service's histogram reads nothing from these lines.
        assert!(
            parse("callgate_gateway_stage_duration_seconds_bucket{stage=\"produce\",le=\"+Inf\"} 10\n", WORKER)
                .is_empty()
        );
        assert_eq!((stages[0].count, stages[0].p50_le_ms, stages[0].p99_le_ms), (100, 1.0, 10.0));
    }
}
