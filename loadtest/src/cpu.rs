//! Where the machine's CPU went during a leg: every process's user + system time from
//! `/proc/<pid>/stat`, read before and after and grouped by process name. On a shared 2-core
//! machine the gateway's latency is decided as much by who else runs (the broker, Postgres,
//! the worker, this load generator) as by the gateway itself.
//!
//! Processes that start during the leg (Postgres backends) count from zero; those that end
//! during it are lost. Linux only: elsewhere the report simply has no CPU section.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

/// CPU ticks per process, keyed by pid, with the process name.
#[derive(Debug)]
pub struct Snapshot {
    at: Instant,
    ticks: HashMap<u32, (String, u64)>,
}

/// The kernel's clock tick for `/proc` times (`sysconf(_SC_CLK_TCK)`, 100 on every Linux
/// configuration in practice).
const TICKS_PER_SECOND: f64 = 100.0;

pub fn snapshot() -> Snapshot {
    let mut ticks = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(sample) =
                std::fs::read_to_string(entry.path().join("stat")).ok().as_deref().and_then(parse_stat)
            {
                ticks.insert(pid, sample);
            }
        }
    }
    Snapshot { at: Instant::now(), ticks }
}

/// `pid (comm) state ppid … utime stime …`: the name may contain spaces and parentheses, so
/// the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 2..)?.split_ascii_whitespace();
    // After the name: state(3) ppid(4) … utime(14) stime(15), i.e. the 12th and 13th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub process: String,
    /// Percent of one core over the leg (200 % = both cores of a 2-core machine).
    pub cpu_percent: f64,
}

/// CPU per process name between two snapshots, busiest first; names under 1 % are left out.
pub fn between(before: &Snapshot, after: &Snapshot) -> Vec<Usage> {
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let mut per_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (pid, (name, ticks)) in &after.ticks {
        let earlier = before.ticks.get(pid).filter(|(n, _)| n == name).map_or(0, |(_, t)| *t);
        *per_name.entry(name).or_default() += ticks.saturating_sub(earlier);
    }
    let mut usage: Vec<Usage> = per_name
        .into_iter()
        .map(|(name, ticks)| Usage {
            process: name.to_owned(),
            cpu_percent: ticks as f64 / TICKS_PER_SECOND / wall * 100.0,
        })
        .filter(|u| u.cpu_percent >= 1.0)
        .collect();
    usage.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 9 0 123 4567 89";
        assert_eq!(parse_stat(stat), Some(("tokio (x) 1".to_owned(), 320)));
    }

    #[test]
    fn usage_is_the_difference_per_name_and_a_reused_pid_counts_from_zero() {
        let at = Instant::now();
        let before = Snapshot {
            at,
            ticks: HashMap::from([(1, ("postgres".into(), 100)), (2, ("nisshi".into(), 50)), (3, ("old".into(), 90))]),
        };
        let after = Snapshot {
            at: at + std::time::Duration::from_secs(2),
            ticks: HashMap::from([
                (1, ("postgres".into(), 200)),
                (2, ("nisshi".into(), 250)),
                (3, ("postgres".into(), 40)),
                (4, ("postgres".into(), 20)),
            ]),
        };
        let usage = between(&before, &after);
        let names: Vec<_> = usage.iter().map(|u| (u.process.as_str(), u.cpu_percent.round())).collect();
        // nisshi 200 ticks / 2 s = 100 %; postgres 100 + 40 (pid 3 reused) + 20 = 160 ticks = 80 %.
        assert_eq!(names, vec![("nisshi", 100.0), ("postgres", 80.0)]);
    }
}
