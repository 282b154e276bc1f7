//! The Cal.com v2 bookings API, as the push and the reconciliation use it (docs/calcom.md §1–§3, §5).
//!
//! Every call answers with what happened in terms the push can act on — created, definitely
//! not done, rate limited, or *unknown* — plus the rate-limit headers of the answer. The API
//! key travels only in a sensitive header; nothing here logs it or puts it in an error.

use std::time::{Duration, Instant};

use callgate_contract::booking::METADATA_KEY;
use callgate_contract::secrets::Secret;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::CalcomApi;
use crate::metrics::Metrics;

/// The message of Cal.com's 400 for a slot that is taken, which it also answers to a repeat of
/// our own successful request (docs/calcom.md §2): "taken by someone else" or "taken by us" is decided by
/// looking the booking up.
const NOT_AVAILABLE: &str = "already has booking at this time or is not available";
/// Cal.com blocks an exhausted key for 60 s and does not always say so.
const DEFAULT_BLOCK: Duration = Duration::from_secs(60);
/// Bookings per page of a listing (Cal.com's largest `take`).
const PAGE: usize = 250;
/// Most errors worth keeping from a Cal.com message.
const MAX_MESSAGE: usize = 500;

/// A booking as Cal.com returns it (the fields we keep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub uid: String,
    pub id: Option<i64>,
    /// Lowercase: accepted, pending, cancelled, rejected.
    pub status: String,
}

impl Booking {
    /// Cancelled or rejected: it holds no slot any more.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.status.as_str(), "cancelled" | "rejected")
    }
}

/// Who the booking is for.
#[derive(Debug, Clone)]
pub struct Attendee {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// IANA zone of the branch.
    pub time_zone: String,
}

/// One booking to create.
#[derive(Debug, Clone)]
pub struct NewBooking {
    pub event_type_id: i64,
    pub start: DateTime<Utc>,
    pub attendee: Attendee,
    /// Our idempotency key, carried in the booking's metadata.
    pub key: String,
}

/// What a create request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    Created(Booking),
    /// The 400 "not available": someone's booking holds the slot — maybe ours.
    NotAvailable(String),
    /// Cal.com refused the request itself (validation, unknown event type, no hosts, auth):
    /// sending it again cannot succeed.
    Refused {
        status: u16,
        message: String,
    },
    /// The key is over its limit: nothing was done.
    RateLimited,
    /// The request was never sent (no connection): nothing was done.
    NotSent(String),
    /// Timeout, reset, 5xx, 409: Cal.com may or may not have booked it. `label` is the
    /// metric outcome (timeout, transport, server_error, conflict).
    Unknown {
        label: &'static str,
        detail: String,
    },
}

/// Which of a booking's times a listing follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Created,
    Updated,
}

/// A booking as the list shows it, with what the reconciliation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub uid: String,
    pub id: Option<i64>,
    /// Lowercase: accepted, pending, cancelled, rejected.
    pub status: String,
    /// Our idempotency key, when the booking is one we made (or moved).
    pub key: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    /// Null until the booking is first changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// Set on the booking a reschedule created: the one it replaced.
    pub rescheduled_from: Option<String>,
    /// Set on the booking a reschedule cancelled: the one that replaced it.
    pub rescheduled_to: Option<String>,
    pub cancellation_reason: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub bookings: Vec<Listed>,
    /// Another page follows.
    pub more: bool,
}

/// Why a listing has no page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    RateLimited,
    Failed(String),
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Booking),
    NotFound,
    RateLimited,
    Failed(String),
}

/// What the answer said about the key's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Set when a limit is exhausted (or a 429 came): send nothing with this key for this long.
    pub blocked_for: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_version: String,
    metrics: Metrics,
}

impl Client {
    pub fn new(config: &CalcomApi, metrics: Metrics) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("callgate-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        Ok(Self { http, base_url, api_version: config.api_version.clone(), metrics })
    }

    fn headers(&self, api_key: &Secret) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {}", String::from_utf8_lossy(api_key.expose()));
        if let Ok(mut value) = HeaderValue::from_str(&bearer) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.api_version) {
            headers.insert("cal-api-version", value);
        }
        headers
    }

    /// `POST /v2/bookings`.
    pub async fn create(&self, api_key: &Secret, booking: &NewBooking) -> (Creation, Budget) {
        let mut attendee = json!({ "name": booking.attendee.name, "timeZone": booking.attendee.time_zone });
        if let Some(email) = &booking.attendee.email {
            attendee["email"] = json!(email);
        }
        if let Some(phone) = &booking.attendee.phone {
            attendee["phoneNumber"] = json!(phone);
        }
        let body = json!({
            "start": booking.start.to_rfc3339_opts(SecondsFormat::Secs, true),
            "eventTypeId": booking.event_type_id,
            "attendee": attendee,
            "metadata": { METADATA_KEY: booking.key },
        });
        let started = Instant::now();
        let sent = self
            .http
            .post(format!("{}/v2/bookings", self.base_url))
            .headers(self.headers(api_key))
            .json(&body)
            .send()
            .await;
        let (outcome, budget) = match sent {
            Err(error) if error.is_connect() => (Creation::NotSent(describe(&error)), Budget::default()),
            Err(error) => {
                let label = if error.is_timeout() { "timeout" } else { "transport" };
                (Creation::Unknown { label, detail: describe(&error) }, Budget::default())
            }
            Ok(response) => {
                let budget = budget(&response);
                (created(response).await, budget)
            }
        };
        self.observe("create", created_label(&outcome), started);
        (outcome, budget)
    }

    /// Our booking among those of this event type starting in `[start, start + 1 day)`: the
    /// one whose metadata carries `key`. Cal.com cannot filter on metadata (§1), so the
    /// attendee's email narrows the list when there is one. Cancelled bookings are included:
    /// ours may have been cancelled before its answer reached us, and then it is found (and
    /// the appointment ends cancelled) instead of being booked a second time.
    pub async fn find(
        &self,
        api_key: &Secret,
        key: &str,
        event_type_id: i64,
        attendee_email: Option<&str>,
        start: DateTime<Utc>,
    ) -> (Lookup, Budget) {
        let started = Instant::now();
        let after = (start - chrono::Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let before = (start + chrono::Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut skip = 0;
        // A reschedule leaves the old booking cancelled beside the new one, both with our key:
        // a live booking wins, a cancelled one is the answer only when there is no live one.
        let mut cancelled: Option<Booking> = None;
        let (outcome, budget) = loop {
            let mut query = vec![
                ("eventTypeId", event_type_id.to_string()),
                ("afterStart", after.clone()),
                ("beforeEnd", before.clone()),
                ("status", "upcoming,unconfirmed,past,cancelled".to_owned()),
                ("take", PAGE.to_string()),
                ("skip", skip.to_string()),
            ];
            if let Some(email) = attendee_email {
                query.push(("attendeeEmail", email.to_owned()));
            }
            let (page, budget) = self.page(api_key, &query).await;
            let page = match page {
                Ok(page) => page,
                Err(Listing::RateLimited) => break (Lookup::RateLimited, budget),
                Err(Listing::Failed(error)) => break (Lookup::Failed(error), budget),
            };
            let ours = page.data.iter().filter(|b| b.metadata_key() == Some(key)).map(WireBooking::booking);
            let (live, dead): (Vec<Booking>, Vec<Booking>) = ours.partition(|b| !b.is_cancelled());
            if let Some(found) = live.into_iter().next() {
                break (Lookup::Found(found), budget);
            }
            cancelled = cancelled.or(dead.into_iter().next());
            if !page.more() {
                break (cancelled.take().map_or(Lookup::NotFound, Lookup::Found), budget);
            }
            skip += PAGE;
        };
        self.observe("lookup", lookup_label(&outcome), started);
        (outcome, budget)
    }

    /// One page of the bookings of `event_types` created (or changed) at or after `after`,
    /// oldest first: what the reconciliation reads (§5). Cal.com leaves `updatedAt` null until a
    /// booking is first changed, so new bookings are found by creation and changes by update.
    pub async fn changed_since(
        &self,
        api_key: &Secret,
        since: Since,
        after: DateTime<Utc>,
        event_types: &[i64],
        skip: usize,
    ) -> (Result<Changed, Listing>, Budget) {
        let started = Instant::now();
        let (filter, sort) = match since {
            Since::Created => ("afterCreatedAt", "sortCreated"),
            Since::Updated => ("afterUpdatedAt", "sortUpdatedAt"),
        };
        let ids: Vec<String> = event_types.iter().map(i64::to_string).collect();
        let query = [
            (filter, after.to_rfc3339_opts(SecondsFormat::Millis, true)),
            (sort, "asc".to_owned()),
            ("eventTypeIds", ids.join(",")),
            ("take", PAGE.to_string()),
            ("skip", skip.to_string()),
        ];
        let (page, budget) = self.page(api_key, &query).await;
        let outcome = page
            .map(|page| Changed { more: page.more(), bookings: page.data.iter().map(WireBooking::listed).collect() });
        let label = match &outcome {
            Ok(_) => "listed",
            Err(Listing::RateLimited) => "rate_limited",
            Err(Listing::Failed(_)) => "failed",
        };
        self.observe("list", label, started);
        (outcome, budget)
    }

    /// `GET /v2/bookings` with `query`: the page, or why there is none.
    async fn page(&self, api_key: &Secret, query: &[(&str, String)]) -> (Result<Page, Listing>, Budget) {
        let sent = self
            .http
            .get(format!("{}/v2/bookings", self.base_url))
            .headers(self.headers(api_key))
            .query(query)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return (Err(Listing::Failed(describe(&error))), Budget::default()),
        };
        let budget = budget(&response);
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (Err(Listing::RateLimited), budget);
        }
        if !status.is_success() {
            let message = error_message(response).await;
            return (Err(Listing::Failed(format!("HTTP {}: {message}", status.as_u16()))), budget);
        }
        match response.json().await {
            Ok(page) => (Ok(page), budget),
            Err(error) => (Err(Listing::Failed(format!("unreadable bookings list: {}", describe(&error)))), budget),
        }
    }

    fn observe(&self, operation: &str, outcome: &str, started: Instant) {
        self.metrics.calcom_requests.with_label_values(&[operation, outcome]).inc();
        self.metrics.calcom_request_duration.with_label_values(&[operation]).observe(started.elapsed().as_secs_f64());
    }
}

async fn created(response: Response) -> Creation {
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Creation::RateLimited;
    }
    if status.is_success() {
        // A 2xx whose body we cannot read booked something we cannot name: look it up.
        return match response.json::<Envelope>().await {
            Ok(Envelope { data: Data::One(booking) }) => Creation::Created(booking.booking()),
            Ok(Envelope { data: Data::Many(bookings) }) => match bookings.first() {
                Some(first) => Creation::Created(first.booking()),
                None => {
                    Creation::Unknown { label: "transport", detail: "Cal.com answered an empty booking list".into() }
                }
            },
            Err(error) => {
                Creation::Unknown { label: "transport", detail: format!("unreadable booking: {}", describe(&error)) }
            }
        };
    }
    let message = error_message(response).await;
    match status.as_u16() {
        400 if message.contains(NOT_AVAILABLE) => Creation::NotAvailable(message),
        // 409 is also Cal.com's answer to the loser of two concurrent identical requests (§2).
        409 => Creation::Unknown { label: "conflict", detail: format!("HTTP 409: {message}") },
        code @ 500..=599 => Creation::Unknown { label: "server_error", detail: format!("HTTP {code}: {message}") },
        code @ 400..=499 => Creation::Refused { status: code, message },
        code => Creation::Unknown { label: "transport", detail: format!("unexpected HTTP {code}: {message}") },
    }
}

/// Reads `X-RateLimit-Remaining-<Name>` / `X-RateLimit-Reset-<Name>` (seconds, not a timestamp):
/// an exhausted limit blocks the key until its reset; a 429 blocks it at least 60 s.
fn budget(response: &Response) -> Budget {
    let headers = response.headers();
    let number =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    let mut blocked_for: Option<Duration> = None;
    for (name, value) in headers {
        let Some(limit) = name.as_str().strip_prefix("x-ratelimit-remaining-") else { continue };
        let exhausted = value.to_str().ok().and_then(|v| v.trim().parse::<f64>().ok()).is_some_and(|v| v <= 0.0);
        if exhausted {
            let reset = number(&format!("x-ratelimit-reset-{limit}"))
                .filter(|s| s.is_finite() && *s > 0.0)
                .map_or(DEFAULT_BLOCK, |s| Duration::from_secs_f64(s.min(3600.0)));
            blocked_for = Some(blocked_for.map_or(reset, |b| b.max(reset)));
        }
    }
    if response.status() == StatusCode::TOO_MANY_REQUESTS && blocked_for.is_none() {
        blocked_for = Some(DEFAULT_BLOCK);
    }
    Budget { blocked_for }
}

/// `error.message` of Cal.com's error envelope, or the start of whatever the body was.
async fn error_message(response: Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or(text);
    truncate(message)
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A transport error without its URL's query (which may name an attendee's email).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_decode() || error.is_body() {
        "answer unreadable"
    } else {
        "request failed"
    };
    let source = std::error::Error::source(error).map(|s| format!(": {s}")).unwrap_or_default();
    truncate(format!("{kind}{source}"))
}

fn created_label(outcome: &Creation) -> &'static str {
    match outcome {
        Creation::Created(_) => "created",
        Creation::NotAvailable(_) => "not_available",
        Creation::Refused { status: 401 | 403, .. } => "unauthorized",
        Creation::Refused { .. } => "rejected",
        Creation::RateLimited => "rate_limited",
        Creation::NotSent(_) => "not_sent",
        Creation::Unknown { label, .. } => label,
    }
}

fn lookup_label(outcome: &Lookup) -> &'static str {
    match outcome {
        Lookup::Found(_) => "found",
        Lookup::NotFound => "not_found",
        Lookup::RateLimited => "rate_limited",
        Lookup::Failed(_) => "failed",
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: Data,
}

/// A recurring event type answers a list of occurrences.
#[derive(Deserialize)]
#[serde(untagged)]
enum Data {
    One(Box<WireBooking>),
    Many(Vec<WireBooking>),
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<WireBooking>,
    pagination: Option<Pagination>,
}

impl Page {
    /// Another page follows (a short page is the last, whatever the pagination says).
    fn more(&self) -> bool {
        self.pagination.as_ref().is_some_and(|p| p.has_next_page) && self.data.len() == PAGE
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    #[serde(default)]
    has_next_page: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBooking {
    uid: String,
    id: Option<i64>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
    // Read as text and parsed leniently: one odd value must not make a whole page unreadable.
    start: Option<String>,
    end: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    rescheduled_from_uid: Option<String>,
    rescheduled_to_uid: Option<String>,
    cancellation_reason: Option<String>,
}

impl WireBooking {
    fn metadata_key(&self) -> Option<&str> {
        self.metadata.as_ref()?.get(METADATA_KEY)?.as_str()
    }

    fn booking(&self) -> Booking {
        Booking { uid: self.uid.clone(), id: self.id, status: self.status.to_ascii_lowercase() }
    }

    fn listed(&self) -> Listed {
        let instant = |value: &Option<String>| {
            value.as_deref().and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|t| t.with_timezone(&Utc))
        };
        Listed {
            uid: self.uid.clone(),
            id: self.id,
            status: self.status.to_ascii_lowercase(),
            key: self.metadata_key().map(str::to_owned),
            start: instant(&self.start),
            end: instant(&self.end),
            created_at: instant(&self.created_at),
            updated_at: instant(&self.updated_at),
            rescheduled_from: self.rescheduled_from_uid.clone(),
            rescheduled_to: self.rescheduled_to_uid.clone(),
            cancellation_reason: self.cancellation_reason.clone(),
        }
    }
}
