//! The results: a plain-text report, a JSON file, and a self-contained SVG (latency over time
//! and the latency distribution).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::e2e::EndToEnd;
use crate::run::Measured;

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

#[derive(Debug, Serialize)]
pub struct SecondReport {
    pub second: usize,
    pub sent: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One measured leg (the gateway, or a baseline at the same load).
#[derive(Debug, Serialize)]
pub struct Leg {
    pub name: String,
    pub target: String,
    pub offered: String,
    pub wall_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub skipped: u64,
    pub achieved_per_s: f64,
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub ack: Percentiles,
    pub calls: u64,
    pub timeline: Vec<SecondReport>,
}

impl Leg {
    pub fn new(name: &str, target: &str, offered: String, m: &Measured) -> Self {
        Self {
            name: name.to_owned(),
            target: target.to_owned(),
            offered,
            wall_s: m.wall.as_secs_f64(),
            sent: m.sent,
            ok: m.ok,
            errors: m.errors,
            skipped: m.skipped,
            achieved_per_s: m.ok as f64 / m.wall.as_secs_f64(),
            statuses: m.statuses.clone(),
            ack: Percentiles::of(&m.latency),
            calls: m.calls,
            timeline: m
                .timeline
                .iter()
                .enumerate()
                .map(|(second, s)| SecondReport {
                    second,
                    sent: s.sent,
                    errors: s.errors,
                    p50_ms: s.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EndToEndReport {
    pub committed: Percentiles,
    pub clock: crate::e2e::Clock,
    pub booked: Percentiles,
    pub missing: u64,
    pub missing_bookings: u64,
}

impl EndToEndReport {
    pub fn of(e: &EndToEnd) -> Self {
        Self {
            committed: Percentiles::of(&e.committed),
            clock: e.clock,
            booked: Percentiles::of(&e.booked),
            missing: e.missing,
            missing_bookings: e.missing_bookings,
        }
    }
}

/// A same-machine ceiling and what we got against it.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub what: String,
    pub ours: f64,
    pub ceiling: f64,
    pub unit: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub command: String,
    pub legs: Vec<Leg>,
    /// The gateway's own stage histograms over the measured leg.
    pub stages: Vec<crate::stages::Stage>,
    /// The worker's event ages over the gateway leg and the drain after it.
    pub event_ages: Vec<crate::stages::Stage>,
    /// CPU per process over the gateway leg (every process on the machine).
    pub cpu: Vec<crate::cpu::Usage>,
    pub end_to_end: Option<EndToEndReport>,
    pub ratios: Vec<Ratio>,
    /// The gateway's raw per-event distribution, for the chart.
    #[serde(skip)]
    pub distribution: Vec<(f64, f64)>,
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// (percentile, ms) points for a distribution plot.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0]
        .iter()
        .map(|q| (*q * 100.0, h.value_at_quantile(*q) as f64 / 1000.0))
        .collect()
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "callgate load test  ({})\n{}\n", self.machine, self.command);
        for leg in &self.legs {
            let _ = writeln!(
                out,
                "{}  → {}\n  offered {}, {:.1} s: sent {}, ok {}, errors {}, skipped {}, {:.0} ok/s, {} calls",
                leg.name,
                leg.target,
                leg.offered,
                leg.wall_s,
                leg.sent,
                leg.ok,
                leg.errors,
                leg.skipped,
                leg.achieved_per_s,
                leg.calls
            );
            let _ = writeln!(out, "  ack latency  {}", leg.ack.line());
            let statuses: Vec<String> = leg.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            let _ = writeln!(out, "  statuses     {}\n", statuses.join(", "));
        }
        stage_lines(&mut out, "gateway stages (its histograms; bucket upper bounds):", &self.stages);
        if !self.cpu.is_empty() {
            let parts: Vec<String> = self.cpu.iter().map(|u| format!("{} {:.0} %", u.process, u.cpu_percent)).collect();
            let total: f64 = self.cpu.iter().map(|u| u.cpu_percent).sum();
            let _ = writeln!(
                out,
                "CPU during the gateway leg (100 % = one core; {total:.0} % in all):\n  {}\n",
                parts.join(", ")
            );
        }
        if let Some(e2e) = &self.end_to_end {
            let _ = writeln!(out, "end to end (last event sent → rows committed)  {}", e2e.committed.line());
            let _ = writeln!(out, "  (an event's rows are timed at {})", e2e.clock.describe());
            if e2e.booked.count > 0 || e2e.missing_bookings > 0 {
                let _ = writeln!(out, "end to end (last event sent → booked in Cal.com) {}", e2e.booked.line());
            }
            let _ = writeln!(out, "  not seen in time: {} calls, {} bookings\n", e2e.missing, e2e.missing_bookings);
        }
        stage_lines(
            &mut out,
            "worker: every event's age since the gateway accepted it, when read from Kafka and when committed \
             (its histogram; bucket upper bounds):",
            &self.event_ages,
        );
        for ratio in &self.ratios {
            let _ = writeln!(
                out,
                "{}: {:.1} vs {:.1} {} = {:.2}",
                ratio.what,
                ratio.ours,
                ratio.ceiling,
                ratio.unit,
                if ratio.ceiling > 0.0 { ratio.ours / ratio.ceiling } else { 0.0 }
            );
        }
        out
    }

    /// Two charts side by side: p50/p99 per second of every leg, and the gateway's distribution.
    pub fn svg(&self) -> String {
        let (w, h, pad) = (520.0, 300.0, 45.0);
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
        let mut svg = format!(
            "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='11'>",
            w * 2.0 + 20.0,
            h + 30.0
        );
        let max_t = self.legs.iter().map(|l| l.timeline.len()).max().unwrap_or(1).max(1) as f64;
        let max_ms = self.legs.iter().flat_map(|l| l.timeline.iter().map(|s| s.p99_ms)).fold(1.0_f64, f64::max);
        let _ = write!(
            svg,
            "<text x='{pad}' y='15'>ack latency per second (p50 thin, p99 thick), ms, max {max_ms:.1}</text>"
        );
        axes(&mut svg, 0.0, w, h, pad);
        for (i, leg) in self.legs.iter().enumerate() {
            let color = colors[i % colors.len()];
            for (q, width) in [(false, 1.0), (true, 2.0)] {
                let points: Vec<String> = leg
                    .timeline
                    .iter()
                    .map(|s| {
                        let v = if q { s.p99_ms } else { s.p50_ms };
                        let x = pad + s.second as f64 / max_t * (w - 2.0 * pad);
                        let y = h - pad - v / max_ms * (h - 2.0 * pad);
                        format!("{x:.1},{y:.1}")
                    })
                    .collect();
                let _ = write!(
                    svg,
                    "<polyline fill='none' stroke='{color}' stroke-width='{width}' points='{}'/>",
                    points.join(" ")
                );
            }
            let _ = write!(
                svg,
                "<text x='{}' y='{}' fill='{color}'>{}</text>",
                w - 150.0,
                30.0 + 14.0 * i as f64,
                leg.name
            );
        }
        let _ = write!(svg, "<text x='{}' y='{}'>seconds</text>", w / 2.0, h - 10.0);
        // Distribution: percentile (0..100, nines stretched) → ms.
        let x0 = w + 20.0;
        let dmax = self.distribution.iter().map(|p| p.1).fold(1.0_f64, f64::max);
        let _ = write!(svg, "<text x='{}' y='15'>gateway ack latency distribution, ms, max {dmax:.1}</text>", x0 + pad);
        axes(&mut svg, x0, w, h, pad);
        let stretch = |p: f64| (1.0 / (1.0 - (p / 100.0).min(0.99999))).log10() / 5.0;
        let points: Vec<String> = self
            .distribution
            .iter()
            .map(|(p, ms)| {
                let x = x0 + pad + stretch(*p) * (w - 2.0 * pad);
                let y = h - pad - ms / dmax * (h - 2.0 * pad);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>",
            colors[0],
            points.join(" ")
        );
        for (p, label) in [(50.0, "50%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%"), (99.99, "99.99%")] {
            let x = x0 + pad + stretch(p) * (w - 2.0 * pad);
            let _ = write!(svg, "<text x='{x:.1}' y='{}'>{label}</text>", h - pad + 14.0);
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn axes(svg: &mut String, x0: f64, w: f64, h: f64, pad: f64) {
    let _ = write!(
        svg,
        "<line x1='{a}' y1='{b}' x2='{c}' y2='{b}' stroke='#444'/><line x1='{a}' y1='{d}' x2='{a}' y2='{b}' stroke='#444'/>",
        a = x0 + pad,
        b = h - pad,
        c = x0 + w - pad,
        d = pad
    );
}

/// A service's stage histogram as report lines, under `title`; nothing when it was not scraped.
fn stage_lines(out: &mut String, title: &str, stages: &[crate::stages::Stage]) {
    if stages.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}");
    for stage in stages {
        let _ = writeln!(
            out,
            "  {:<9} p50 ≤ {} ms  p99 ≤ {} ms  (n={})",
            stage.stage, stage.p50_le_ms, stage.p99_le_ms, stage.count
        );
    }
    let _ = writeln!(out);
}
