//! Directory lookups with one million numbers loaded.
//!
//! Criterion gives the mean cost of a lookup; the target is a p99, so after the criterion
//! groups this also times one million individual lookups and prints their percentiles, the
//! heap the million numbers take, and the cost of applying one change (the
//! LISTEN/NOTIFY path builds a new snapshot from the current one).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use callgate_contract::secrets::Secret;
use callgate_contract::{BranchId, CompanyId, E164, PhoneNumberId, Provider, ProviderAccountId, Route};
use callgate_gateway::directory::{Account, AccountSettings, ChangeSet, Directory, NumberEntry, RotatingSecret};
use criterion::Criterion;
use uuid::Uuid;

const NUMBERS: u64 = 1_000_000;
/// Numbers per company: a million numbers over 100,000 tenants.
const PER_COMPANY: u64 = 10;

fn number(i: u64) -> E164 {
    E164::parse(&format!("+1{}", 2_000_000_000 + i * 7)).unwrap()
}

fn build() -> Directory {
    let mut entries = Vec::with_capacity(NUMBERS as usize);
    let mut account = None;
    let mut agent: Option<Arc<str>> = None;
    let mut inbound: Option<Arc<str>> = None;
    for i in 0..NUMBERS {
        if i % PER_COMPANY == 0 {
            // One agent per company, shared by its numbers (the loader interns them the same way),
            // and one answer to Retell's inbound webhook per branch (a branch per company here).
            agent = Some(Arc::from(format!("agent_{:024x}", i / PER_COMPANY)));
            let answer = callgate_gateway::providers::retell::Inbound {
                agent_id: agent.as_deref(),
                business_name: "Bright Smiles Dental of Springfield",
                branch_name: "Downtown",
                metadata: serde_json::json!({"callgate_company_id": Uuid::new_v4(), "callgate_branch_id": Uuid::new_v4()}),
                ..Default::default()
            };
            inbound = Some(Arc::from(callgate_gateway::providers::retell::inbound_answer(&answer)));
            account = Some(Arc::new(Account {
                id: ProviderAccountId(Uuid::new_v4()),
                company_id: CompanyId(Uuid::new_v4()),
                provider: Provider::Retell,
                signing_secret: RotatingSecret::new(Secret::new(b"a-retell-api-key-of-typical-length".to_vec())),
                settings: AccountSettings::Retell,
            }));
        }
        let account = account.clone().unwrap();
        entries.push(NumberEntry {
            route: Route {
                company_id: account.company_id,
                branch_id: BranchId(Uuid::new_v4()),
                phone_number_id: PhoneNumberId(Uuid::new_v4()),
                provider_account_id: account.id,
                number: number(i),
            },
            account,
            agent_id: agent.clone(),
            provider_number_id: None,
            retell_inbound: inbound.clone(),
        });
    }
    Directory::from_entries(entries, (NUMBERS / PER_COMPANY) as usize, HashSet::new())
}

/// Counts live heap bytes, so the directory's own size is measured exactly (RSS would also
/// count the construction buffers the allocator keeps).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// The one unsafe block of the workspace: a global allocator must be `unsafe impl`; it only
// forwards to the system allocator and counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A cheap deterministic sequence of indices (no RNG dependency).
fn indices(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % NUMBERS
        })
        .collect()
}

fn lookups(c: &mut Criterion, directory: &Directory) {
    let probes: Vec<E164> = indices(4096).into_iter().map(number).collect();
    let mut group = c.benchmark_group("directory_1m");
    let mut i = 0;
    group.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(directory.lookup(black_box(probes[i])))
        })
    });
    let miss = E164::parse("+19999999999").unwrap();
    group.bench_function("lookup_miss", |b| b.iter(|| black_box(directory.lookup(black_box(miss)))));
    group.bench_function("normalise_and_lookup", |b| {
        b.iter(|| {
            let n = E164::parse_with_default(black_box("+1 (200) 000-0007"), Some(1)).unwrap();
            black_box(directory.lookup(n))
        })
    });
    group.sample_size(10);
    group.bench_function("apply_one_change", |b| {
        let some = NumberEntry::clone(directory.lookup(number(12_345)).unwrap());
        let changes = ChangeSet { numbers: [some.route.phone_number_id.0].into(), ..ChangeSet::default() };
        b.iter(|| black_box(directory.with_changes(&changes, vec![some.clone()], 1, HashSet::new())))
    });
    group.finish();
}

fn percentiles(directory: &Directory) {
    let probes: Vec<E164> = indices(1_000_000).into_iter().map(number).collect();
    let mut samples: Vec<u64> = Vec::with_capacity(probes.len());
    for n in &probes {
        let started = Instant::now();
        black_box(directory.lookup(black_box(*n)));
        samples.push(started.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "directory_1m individual lookups (ns, timer included): p50 {} p90 {} p99 {} p99.9 {} max {}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1]
    );
}

fn main() {
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let directory = build();
    let built = started.elapsed();
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "directory_1m: {} numbers built in {:.2?}; live heap +{:.0} MiB ({:.0} bytes per number)",
        directory.len(),
        built,
        (after - before) as f64 / (1024.0 * 1024.0),
        (after - before) as f64 / directory.len() as f64
    );
    percentiles(&directory);
    let mut criterion = Criterion::default().configure_from_args();
    lookups(&mut criterion, &directory);
    criterion.final_summary();
}
