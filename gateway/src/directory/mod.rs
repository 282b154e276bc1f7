//! The directory: every active number → its tenant route, account and secrets, in memory.
//!
//! A lookup is one hash-map read on an immutable snapshot; a refresh builds a new snapshot and
//! swaps it in atomically ([`DirectoryHandle`]), so requests never wait for a reload and never
//! see a half-applied one.

mod loader;
mod refresh;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use callgate_contract::booking::CalendarRoute;
use callgate_contract::secrets::Secret;
use callgate_contract::{CompanyId, E164, Provider, ProviderAccountId, Route};
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use callgate_contract::settings::AccountSettings;

pub use loader::{LoadError, Loader};
pub use refresh::{NOTIFY_CHANNEL, run_refresh};

/// A provider account's verification material, decrypted.
#[derive(Debug)]
pub struct Account {
    pub id: ProviderAccountId,
    pub company_id: CompanyId,
    pub provider: Provider,
    pub signing_secret: RotatingSecret,
    pub settings: AccountSettings,
}

/// A secret, decrypted, and the one it replaced while that is still accepted.
#[derive(Debug)]
pub struct RotatingSecret {
    pub current: Secret,
    /// The secret being rotated out, and when it stops being accepted (None: until removed).
    pub previous: Option<(Secret, Option<DateTime<Utc>>)>,
}

impl RotatingSecret {
    /// A secret with nothing being rotated out.
    pub fn new(current: Secret) -> Self {
        Self { current, previous: None }
    }

    /// The secrets a signature may be made with at `now`: current first, then a previous one
    /// still inside its rotation window.
    pub fn secrets(&self, now: DateTime<Utc>) -> Vec<&[u8]> {
        let mut out = vec![self.current.expose()];
        if let Some((previous, expires)) = &self.previous
            && expires.is_none_or(|at| now < at)
        {
            out.push(previous.expose());
        }
        out
    }
}

/// A company's Cal.com webhook endpoint and its secrets, decrypted.
#[derive(Debug)]
pub struct CalendarEntry {
    pub route: CalendarRoute,
    pub webhook_secret: RotatingSecret,
}

/// Cal.com endpoints by their path segment. There is one per company, so copying the map on
/// a change is cheap next to the numbers.
pub type Calendars = HashMap<Arc<str>, Arc<CalendarEntry>>;

/// One active number.
#[derive(Debug, Clone)]
pub struct NumberEntry {
    pub route: Route,
    pub account: Arc<Account>,
    /// Retell agent id / Vapi assistant id.
    pub agent_id: Option<Arc<str>>,
    pub provider_number_id: Option<Arc<str>>,
    /// A Retell number's answer to its inbound call webhook, serialised when loaded (shared by
    /// the numbers of a branch that answer alike).
    pub retell_inbound: Option<Arc<str>>,
}

/// Shards of a snapshot. A change copies only the shards it touches (copy-on-write), so
/// applying one change to a million-number directory costs a few thousand entries, not a
/// million.
const SHARDS: usize = 256;

type Shard = HashMap<E164, Arc<NumberEntry>>;
type IdShard = HashMap<Arc<str>, E164>;

fn shard_of_number(number: E164) -> usize {
    // Fibonacci hashing: numbers are often consecutive, the top bits of the product are not.
    (number.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SHARDS
}

fn shard_of_id(id: &str) -> usize {
    // FNV-1a: provider ids are short strings.
    (crate::fnv::fnv1a(id.as_bytes()) >> 56) as usize % SHARDS
}

/// An immutable snapshot.
#[derive(Debug, Clone)]
pub struct Directory {
    numbers: Vec<Arc<Shard>>,
    by_provider_number_id: Vec<Arc<IdShard>>,
    len: usize,
    accounts: usize,
    /// Accounts left out because their secret or settings would not load.
    invalid_accounts: HashSet<Uuid>,
    calendars: Arc<Calendars>,
}

impl Default for Directory {
    fn default() -> Self {
        Self::from_entries(Vec::new(), 0, HashSet::new())
    }
}

impl Directory {
    pub fn lookup(&self, number: E164) -> Option<&Arc<NumberEntry>> {
        self.numbers[shard_of_number(number)].get(&number)
    }

    /// Fallback by the provider's own id of the number (Vapi `phoneNumberId`).
    pub fn lookup_provider_number_id(&self, id: &str) -> Option<&Arc<NumberEntry>> {
        self.by_provider_number_id[shard_of_id(id)].get(id).and_then(|n| self.lookup(*n))
    }

    /// A company's Cal.com endpoint, by the path segment of its webhook URL.
    pub fn lookup_calendar(&self, path: &str) -> Option<&Arc<CalendarEntry>> {
        self.calendars.get(path)
    }

    pub fn calendars(&self) -> &Calendars {
        &self.calendars
    }

    /// This snapshot with its Cal.com endpoints replaced.
    pub fn with_calendars(mut self, calendars: Calendars) -> Self {
        self.calendars = Arc::new(calendars);
        self
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Provider accounts loaded (with their secrets open).
    pub fn account_count(&self) -> usize {
        self.accounts
    }

    pub fn invalid_account_count(&self) -> usize {
        self.invalid_accounts.len()
    }

    pub fn invalid_accounts(&self) -> &HashSet<Uuid> {
        &self.invalid_accounts
    }

    /// Builds a snapshot from loaded entries (also used by benchmarks).
    pub fn from_entries(
        entries: impl IntoIterator<Item = NumberEntry>,
        accounts: usize,
        invalid_accounts: HashSet<Uuid>,
    ) -> Self {
        let mut numbers: Vec<Shard> = (0..SHARDS).map(|_| HashMap::new()).collect();
        let mut ids: Vec<IdShard> = (0..SHARDS).map(|_| HashMap::new()).collect();
        let mut len = 0;
        for entry in entries {
            let number = entry.route.number;
            if let Some(id) = &entry.provider_number_id {
                ids[shard_of_id(id)].insert(id.clone(), number);
            }
            if numbers[shard_of_number(number)].insert(number, Arc::new(entry)).is_none() {
                len += 1;
            }
        }
        Self {
            numbers: numbers.into_iter().map(Arc::new).collect(),
            by_provider_number_id: ids.into_iter().map(Arc::new).collect(),
            len,
            accounts,
            invalid_accounts,
            calendars: Arc::default(),
        }
    }

    /// A new snapshot with every entry inside `changed` replaced by `fresh` (the rows the
    /// database now has for that scope; an entry absent from `fresh` was deleted). Shards the
    /// change does not touch are shared with `self`.
    pub fn with_changes(
        &self,
        changed: &ChangeSet,
        fresh: Vec<NumberEntry>,
        accounts: usize,
        invalid_accounts: HashSet<Uuid>,
    ) -> Self {
        let mut next = Self {
            numbers: self.numbers.clone(),
            by_provider_number_id: self.by_provider_number_id.clone(),
            len: self.len,
            accounts,
            invalid_accounts,
            calendars: self.calendars.clone(),
        };
        // Read-only pass to find what the change covers; only those shards get copied.
        let covered: Vec<E164> = self
            .numbers
            .iter()
            .flat_map(|shard| shard.iter())
            .filter(|(_, entry)| changed.covers(entry))
            .map(|(number, _)| *number)
            .collect();
        for number in covered {
            next.remove(number);
        }
        for entry in fresh {
            next.insert(entry);
        }
        next
    }

    fn remove(&mut self, number: E164) {
        let shard = Arc::make_mut(&mut self.numbers[shard_of_number(number)]);
        if let Some(old) = shard.remove(&number) {
            self.len -= 1;
            if let Some(id) = &old.provider_number_id {
                Arc::make_mut(&mut self.by_provider_number_id[shard_of_id(id)]).remove(id);
            }
        }
    }

    fn insert(&mut self, entry: NumberEntry) {
        // Whatever held the number before (even outside the change's scope) gives way.
        self.remove(entry.route.number);
        if let Some(id) = &entry.provider_number_id {
            Arc::make_mut(&mut self.by_provider_number_id[shard_of_id(id)]).insert(id.clone(), entry.route.number);
        }
        Arc::make_mut(&mut self.numbers[shard_of_number(entry.route.number)])
            .insert(entry.route.number, Arc::new(entry));
        self.len += 1;
    }
}

/// Rows named by change notifications, grouped by table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    pub all: bool,
    pub numbers: HashSet<Uuid>,
    pub accounts: HashSet<Uuid>,
    pub branches: HashSet<Uuid>,
    pub companies: HashSet<Uuid>,
    /// `calcom_accounts` ids.
    pub calendars: HashSet<Uuid>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.numbers.is_empty()
            && self.accounts.is_empty()
            && self.branches.is_empty()
            && self.companies.is_empty()
            && self.calendars.is_empty()
    }

    /// Called for every entry of the directory on each change: empty scopes cost nothing and
    /// small ones (the usual case) are compared directly instead of hashed.
    fn covers(&self, entry: &NumberEntry) -> bool {
        fn hit(set: &HashSet<Uuid>, id: &Uuid) -> bool {
            match set.len() {
                0 => false,
                1..=16 => set.iter().any(|x| x == id),
                _ => set.contains(id),
            }
        }
        let r = &entry.route;
        self.all
            || hit(&self.numbers, &r.phone_number_id.0)
            || hit(&self.accounts, &r.provider_account_id.0)
            || hit(&self.branches, &r.branch_id.0)
            || hit(&self.companies, &r.company_id.0)
    }

    /// Adds one notification payload: `{"scope":"phone_numbers","ids":[…]}` or `{"scope":"all"}`.
    /// An unreadable payload asks for a full reload rather than being ignored.
    pub fn add_notification(&mut self, payload: &str) {
        #[derive(serde::Deserialize)]
        struct Note {
            scope: String,
            #[serde(default)]
            ids: Vec<Uuid>,
        }
        let Ok(note) = serde_json::from_str::<Note>(payload) else {
            self.all = true;
            return;
        };
        let target = match note.scope.as_str() {
            "phone_numbers" => &mut self.numbers,
            "provider_accounts" => &mut self.accounts,
            "branches" => &mut self.branches,
            "companies" => &mut self.companies,
            "calcom_accounts" => &mut self.calendars,
            // The worker's settings cache listens for these; nothing routes by them.
            "services" => return,
            _ => {
                self.all = true;
                return;
            }
        };
        target.extend(note.ids);
    }
}

/// The current snapshot, shared by every request.
#[derive(Debug, Default)]
pub struct DirectoryHandle {
    current: ArcSwap<Directory>,
    loaded: AtomicBool,
}

impl DirectoryHandle {
    /// The snapshot to use for one request.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.current.load()
    }

    /// True once a first full load succeeded: before that, every number would look unknown.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn replace(&self, directory: Directory) {
        self.current.store(Arc::new(directory));
        self.loaded.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_contract::{BranchId, PhoneNumberId};

    fn entry(number: &str, company: Uuid, pid: Option<&str>) -> NumberEntry {
        let account = Arc::new(Account {
            id: ProviderAccountId(Uuid::new_v4()),
            company_id: CompanyId(company),
            provider: Provider::Retell,
            signing_secret: RotatingSecret::new(Secret::new(b"k".to_vec())),
            settings: AccountSettings::Retell,
        });
        NumberEntry {
            route: Route {
                company_id: CompanyId(company),
                branch_id: BranchId(Uuid::new_v4()),
                phone_number_id: PhoneNumberId(Uuid::new_v4()),
                provider_account_id: account.id,
                number: E164::parse(number).unwrap(),
            },
            account,
            agent_id: None,
            provider_number_id: pid.map(Arc::from),
            retell_inbound: None,
        }
    }

    #[test]
    fn changes_replace_exactly_their_scope() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let dir = Directory::from_entries(
            [entry("+14155550100", a, Some("pn-1")), entry("+14155550101", a, None), entry("+14155550102", b, None)],
            3,
            HashSet::new(),
        );
        assert_eq!(dir.len(), 3);
        assert_eq!(dir.account_count(), 3);
        assert!(dir.lookup_provider_number_id("pn-1").is_some());

        // Company a changed: the database now has only one of its numbers, a new one.
        let changed = ChangeSet { companies: [a].into(), ..ChangeSet::default() };
        let next = dir.with_changes(&changed, vec![entry("+14155550109", a, None)], 3, HashSet::new());
        assert_eq!(next.len(), 2);
        assert!(next.lookup(E164::parse("+14155550100").unwrap()).is_none());
        assert!(next.lookup_provider_number_id("pn-1").is_none());
        assert!(next.lookup(E164::parse("+14155550102").unwrap()).is_some());
        assert!(next.lookup(E164::parse("+14155550109").unwrap()).is_some());
        // The old snapshot is untouched.
        assert_eq!(dir.len(), 3);
        assert!(dir.lookup(E164::parse("+14155550100").unwrap()).is_some());
        assert!(dir.lookup_provider_number_id("pn-1").is_some());
    }

    #[test]
    fn a_number_moving_to_another_row_takes_its_provider_id_along() {
        let a = Uuid::new_v4();
        let dir = Directory::from_entries([entry("+14155550100", a, Some("pn-old"))], 1, HashSet::new());
        // A new row for the same number arrives before the old row's deletion is seen.
        let next =
            dir.with_changes(&ChangeSet::default(), vec![entry("+14155550100", a, Some("pn-new"))], 1, HashSet::new());
        assert_eq!(next.len(), 1);
        assert!(next.lookup_provider_number_id("pn-old").is_none());
        assert!(next.lookup_provider_number_id("pn-new").is_some());
    }

    #[test]
    fn shards_spread_consecutive_numbers() {
        let mut used = HashSet::new();
        for i in 0..10_000u64 {
            used.insert(shard_of_number(E164::parse(&format!("+1415555{i:04}")).unwrap()));
        }
        assert_eq!(used.len(), SHARDS);
    }

    #[test]
    fn notifications_parse_into_scopes() {
        let id = Uuid::new_v4();
        let mut set = ChangeSet::default();
        assert!(set.is_empty());
        set.add_notification(&format!(r#"{{"scope":"phone_numbers","ids":["{id}"]}}"#));
        set.add_notification(&format!(r#"{{"scope":"provider_accounts","ids":["{id}"]}}"#));
        assert!(set.numbers.contains(&id) && set.accounts.contains(&id) && !set.all);
        // Services are the worker's (its settings cache): no routing changes, no reload.
        let mut services = ChangeSet::default();
        services.add_notification(&format!(r#"{{"scope":"services","ids":["{id}"]}}"#));
        assert!(services.is_empty());
        set.add_notification("garbage");
        assert!(set.all);
    }

    #[test]
    fn previous_secret_honours_its_expiry() {
        let now = Utc::now();
        let mut secret = RotatingSecret {
            current: Secret::new(b"new".to_vec()),
            previous: Some((Secret::new(b"old".to_vec()), Some(now + chrono::Duration::minutes(5)))),
        };
        assert_eq!(secret.secrets(now), vec![&b"new"[..], &b"old"[..]]);
        secret.previous = Some((Secret::new(b"old".to_vec()), Some(now - chrono::Duration::seconds(1))));
        assert_eq!(secret.secrets(now), vec![&b"new"[..]]);
        secret.previous = Some((Secret::new(b"old".to_vec()), None));
        assert_eq!(secret.secrets(now).len(), 2);
        assert_eq!(RotatingSecret::new(Secret::new(b"only".to_vec())).secrets(now), vec![&b"only"[..]]);
    }
}
