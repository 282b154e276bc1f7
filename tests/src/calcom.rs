//! A fake Cal.com v2 API over real HTTP, behaving like Cal.com (docs/calcom.md §6) — including
//! its awkward answers: the 400 "not available" for a slot already booked (ours included),
//! 429 with `X-RateLimit-*-Default` headers and a block, 409/5xx, answers slower than the
//! client's timeout after the booking was written, and connections cut mid-answer.
//!
//! Faults are either queued (`push_fault`, deterministic) or drawn at random for a share of
//! create requests (`set_chaos`). It counts bookings per idempotency key, which is what the
//! exactly-once tests assert on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde_json::{Value, json};

pub const METADATA_KEY: &str = callgate_contract::booking::METADATA_KEY;
const NOT_AVAILABLE: &str = "User either already has booking at this time or is not available";

/// One forced misbehaviour of the next create request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Books, then answers only after `slow` (beyond the client's timeout).
    CommitThenSlow,
    /// Books, then cuts the connection in the middle of the answer.
    CommitThenReset,
    /// Books, then answers 500 (the race-loser uncertainty of §5.2, seen from the winner).
    CommitThen500,
    /// Answers 503 without booking.
    Unavailable,
    /// Answers 409 CONFLICT without booking.
    Conflict,
    /// Answers after `slow` without booking.
    SlowNoCommit,
    /// 429 with the key's limit exhausted and blocked for `block`.
    RateLimited,
}

const CHAOS: [Fault; 7] = [
    Fault::CommitThenSlow,
    Fault::CommitThenReset,
    Fault::CommitThen500,
    Fault::Unavailable,
    Fault::Conflict,
    Fault::SlowNoCommit,
    Fault::RateLimited,
];

#[derive(Debug, Clone)]
pub struct FakeBooking {
    pub id: i64,
    pub uid: String,
    pub event_type_id: i64,
    pub host: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// accepted, pending, cancelled, rejected.
    pub status: String,
    pub attendee: Value,
    pub metadata: serde_json::Map<String, Value>,
    pub created_at: DateTime<Utc>,
    /// Null until the booking is first changed, as in Cal.com's output.
    pub updated_at: Option<DateTime<Utc>>,
    pub rescheduled_to: Option<String>,
    pub rescheduled_from: Option<String>,
}

impl FakeBooking {
    fn key(&self) -> Option<&str> {
        self.metadata.get(METADATA_KEY).and_then(Value::as_str)
    }

    fn output(&self) -> Value {
        json!({
            "id": self.id, "uid": self.uid, "title": "Booking", "status": self.status,
            "start": self.start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "end": self.end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "duration": (self.end - self.start).num_minutes(),
            "eventTypeId": self.event_type_id, "eventType": {"id": self.event_type_id, "slug": "event"},
            "hosts": [{"id": self.host}], "attendees": [self.attendee.clone()],
            "metadata": self.metadata, "rescheduledToUid": self.rescheduled_to,
            "rescheduledFromUid": self.rescheduled_from,
            "createdAt": self.created_at.to_rfc3339(), "updatedAt": self.updated_at.map(|t| t.to_rfc3339()),
        })
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    used: u32,
    blocked_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    /// event type id → (host id, length in minutes)
    event_types: HashMap<i64, (i64, i64)>,
    keys: Vec<String>,
    bookings: Vec<FakeBooking>,
    next_id: i64,
    faults: VecDeque<Fault>,
    chaos: f64,
    /// The faults `chaos` picks from (all of them unless narrowed).
    chaos_faults: Vec<Fault>,
    windows: HashMap<String, Window>,
    /// Create requests received, per API key, with when.
    creates: HashMap<String, Vec<Instant>>,
    requests: u64,
    rate_limited: u64,
}

/// Knobs of the fake.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests per window per key (Cal.com: 120 per 60 s).
    pub limit: u32,
    pub window: Duration,
    /// How long an exhausted key is blocked (Cal.com: 60 s).
    pub block: Duration,
    /// How late a "slow" answer comes.
    pub slow: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            limit: 120,
            window: Duration::from_secs(60),
            block: Duration::from_secs(60),
            slow: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeCalcom {
    inner: Arc<Mutex<Inner>>,
    limits: Limits,
    pub addr: SocketAddr,
}

impl FakeCalcom {
    pub async fn start(limits: Limits) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), limits).await.unwrap()
    }

    /// Serves on `addr` (the `fake-calcom` binary of the local demo).
    pub async fn start_on(addr: SocketAddr, limits: Limits) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner { next_id: 1000, chaos_faults: CHAOS.to_vec(), ..Inner::default() }));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr().unwrap();
        let fake = Self { inner, limits, addr };
        let app = Router::new()
            .route("/v2/bookings", post(create).get(list))
            .route("/v2/bookings/{uid}", get(one))
            .route("/v2/bookings/{uid}/cancel", post(cancel))
            // The fake's own controls, outside Cal.com's API: for the chaos run.
            .route("/__chaos", post(set_chaos_route))
            .route("/__bookings", get(all_bookings))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Ok(fake)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_key(&self, key: &str) {
        self.inner.lock().unwrap().keys.push(key.to_owned());
    }

    pub fn add_event_type(&self, id: i64, host: i64, length_minutes: i64) {
        self.inner.lock().unwrap().event_types.insert(id, (host, length_minutes));
    }

    pub fn push_fault(&self, fault: Fault) {
        self.inner.lock().unwrap().faults.push_back(fault);
    }

    /// A share of create requests (0.0..=1.0) misbehaves in one of the [`Fault`] ways.
    pub fn set_chaos(&self, share: f64) {
        self.inner.lock().unwrap().chaos = share;
    }

    /// [`Self::set_chaos`], with only these faults.
    pub fn set_chaos_with(&self, share: f64, faults: &[Fault]) {
        let mut inner = self.inner.lock().unwrap();
        inner.chaos = share;
        inner.chaos_faults = if faults.is_empty() { CHAOS.to_vec() } else { faults.to_vec() };
    }

    pub fn bookings(&self) -> Vec<FakeBooking> {
        self.inner.lock().unwrap().bookings.clone()
    }

    /// Bookings (in any state) per idempotency key.
    pub fn bookings_per_key(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for booking in &self.inner.lock().unwrap().bookings {
            if let Some(key) = booking.key() {
                *counts.entry(key.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// When each create request of `key` arrived.
    pub fn create_times(&self, key: &str) -> Vec<Instant> {
        self.inner.lock().unwrap().creates.get(key).cloned().unwrap_or_default()
    }

    /// Requests received (every route, every key).
    pub fn request_count(&self) -> u64 {
        self.inner.lock().unwrap().requests
    }

    pub fn rate_limited_count(&self) -> u64 {
        self.inner.lock().unwrap().rate_limited
    }

    /// Books directly, as someone using Cal.com's own pages would.
    pub fn book_directly(&self, event_type_id: i64, start: DateTime<Utc>) -> FakeBooking {
        let mut inner = self.inner.lock().unwrap();
        let (host, length) = inner.event_types[&event_type_id];
        insert(&mut inner, event_type_id, host, start, length, json!({"name": "Walk-in"}), Default::default())
    }

    /// Cancels a booking as its host would in Cal.com; returns it.
    pub fn cancel(&self, uid: &str) -> Option<FakeBooking> {
        let mut inner = self.inner.lock().unwrap();
        let booking = inner.bookings.iter_mut().find(|b| b.uid == uid)?;
        booking.status = "cancelled".into();
        booking.updated_at = Some(Utc::now());
        Some(booking.clone())
    }

    /// Moves a booking as its attendee would on Cal.com's reschedule page: a new booking (new
    /// uid, same metadata) and the old one cancelled, pointing at it. Returns the new one.
    pub fn reschedule(&self, uid: &str, start: DateTime<Utc>) -> Option<FakeBooking> {
        let mut inner = self.inner.lock().unwrap();
        let old = inner.bookings.iter().find(|b| b.uid == uid && b.status != "cancelled")?.clone();
        let (_, length) = inner.event_types[&old.event_type_id];
        let mut new = insert(&mut inner, old.event_type_id, old.host, start, length, old.attendee, old.metadata);
        new.rescheduled_from = Some(old.uid.clone());
        let now = Utc::now();
        for booking in &mut inner.bookings {
            if booking.uid == new.uid {
                booking.rescheduled_from = new.rescheduled_from.clone();
            } else if booking.uid == old.uid {
                booking.status = "cancelled".into();
                booking.rescheduled_to = Some(new.uid.clone());
                booking.updated_at = Some(now);
            }
        }
        Some(new)
    }

    /// Per-key rate limiting: the rate-limit headers every answer carries, or the 429 to answer.
    fn throttle(&self, key: &str, path: &str) -> Result<HeaderMap, Box<Response>> {
        let mut inner = self.inner.lock().unwrap();
        inner.requests += 1;
        let now = Instant::now();
        let limits = self.limits;
        let window =
            inner.windows.entry(key.to_owned()).or_insert(Window { started: now, used: 0, blocked_until: None });
        if window.blocked_until.is_some_and(|until| until <= now) {
            *window = Window { started: now, used: 0, blocked_until: None };
        }
        if now.duration_since(window.started) >= limits.window && window.blocked_until.is_none() {
            *window = Window { started: now, used: 0, blocked_until: None };
        }
        let limited = if window.blocked_until.is_some() {
            true
        } else {
            window.used += 1;
            if window.used > limits.limit {
                window.blocked_until = Some(now + limits.block);
                true
            } else {
                false
            }
        };
        let reset = match window.blocked_until {
            Some(until) => until.saturating_duration_since(now),
            None => limits.window.saturating_sub(now.duration_since(window.started)),
        };
        let remaining = if limited { 0 } else { limits.limit.saturating_sub(window.used) };
        if limited {
            inner.rate_limited += 1;
        }
        let headers = rate_headers(limits.limit, remaining, reset);
        if limited { Err(Box::new(throttled(path, headers))) } else { Ok(headers) }
    }

    fn force_block(&self, key: &str) -> HeaderMap {
        let mut inner = self.inner.lock().unwrap();
        inner.rate_limited += 1;
        let now = Instant::now();
        inner.windows.insert(
            key.to_owned(),
            Window { started: now, used: self.limits.limit, blocked_until: Some(now + self.limits.block) },
        );
        rate_headers(self.limits.limit, 0, self.limits.block)
    }
}

fn rate_headers(limit: u32, remaining: u32, reset: Duration) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-limit-default", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining-default", HeaderValue::from(remaining));
    // Seconds, rounded up, never 0 (the e2e test asserts > 0).
    headers.insert("x-ratelimit-reset-default", HeaderValue::from(reset.as_secs_f64().ceil().max(1.0) as u64));
    headers
}

fn error(status: StatusCode, code: &str, message: &str, path: &str, mut headers: HeaderMap) -> Response {
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body = json!({"status": "error", "timestamp": Utc::now().to_rfc3339(), "path": path,
                      "error": {"code": code, "message": message}});
    (status, headers, body.to_string()).into_response()
}

fn success(status: StatusCode, data: Value, mut headers: HeaderMap) -> Response {
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (status, headers, json!({"status": "success", "data": data}).to_string()).into_response()
}

/// Cal.com's 429 (the throttler guard's exception, rendered by its HttpException filter).
fn throttled(path: &str, headers: HeaderMap) -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "ThrottlerException",
        "Too many requests. Please try again later.",
        path,
        headers,
    )
}

/// Cal.com's generic server error (the Prisma filter's catch-all).
fn internal(status: StatusCode, path: &str, headers: HeaderMap) -> Response {
    error(status, "INTERNAL_SERVER_ERROR", "There was an error, please try again later.", path, headers)
}

/// The API key, if it is one the fake knows; otherwise the 401 to answer.
fn authorize(fake: &FakeCalcom, headers: &HeaderMap, path: &str) -> Result<String, Box<Response>> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| k.starts_with("cal_"))
        .map(str::to_owned);
    match key {
        Some(key) if fake.inner.lock().unwrap().keys.contains(&key) => Ok(key),
        _ => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
            "ApiAuthStrategy - api key - Your api key is not valid",
            path,
            HeaderMap::new(),
        ))),
    }
}

fn version_ok(headers: &HeaderMap) -> bool {
    matches!(headers.get("cal-api-version").and_then(|v| v.to_str().ok()), Some("2024-08-13" | "2026-02-25"))
}

fn random_uid() -> String {
    rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(22).map(char::from).collect()
}

fn insert(
    inner: &mut Inner,
    event_type_id: i64,
    host: i64,
    start: DateTime<Utc>,
    length: i64,
    attendee: Value,
    metadata: serde_json::Map<String, Value>,
) -> FakeBooking {
    inner.next_id += 1;
    let now = Utc::now();
    let booking = FakeBooking {
        id: inner.next_id,
        uid: random_uid(),
        event_type_id,
        host,
        start,
        end: start + chrono::Duration::minutes(length),
        status: "accepted".into(),
        attendee,
        metadata,
        created_at: now,
        updated_at: None,
        rescheduled_to: None,
        rescheduled_from: None,
    };
    inner.bookings.push(booking.clone());
    booking
}

/// The 2024-08-13 body rules of §3.3 that a client can get wrong.
/// A create request that passed validation.
struct Valid {
    event_type_id: i64,
    start: DateTime<Utc>,
    attendee: Value,
    metadata: serde_json::Map<String, Value>,
}

fn validate(body: &Value) -> Result<Valid, &'static str> {
    let event_type_id = body["eventTypeId"].as_i64().ok_or("eventTypeId must be an integer")?;
    let start = body["start"].as_str().ok_or("start is required")?;
    let start = DateTime::parse_from_rfc3339(start).map_err(|_| "start must be an ISO 8601 date")?.with_timezone(&Utc);
    let attendee = body["attendee"].clone();
    if !attendee["name"].is_string() || !attendee["timeZone"].is_string() {
        return Err("attendee.name and attendee.timeZone are required");
    }
    if !attendee["email"].is_string() && !attendee["phoneNumber"].is_string() {
        return Err("Attendee must have at least one contact method (email or phone number)");
    }
    let metadata = body.get("metadata").cloned().unwrap_or(json!({}));
    let metadata = metadata.as_object().cloned().ok_or("metadata must be an object")?;
    if metadata.len() > 50 || metadata.iter().any(|(k, v)| k.len() > 40 || v.as_str().is_none_or(|v| v.len() > 500)) {
        return Err("metadata: at most 50 keys of at most 40 characters, string values of at most 500");
    }
    Ok(Valid { event_type_id, start, attendee, metadata })
}

async fn create(State(fake): State<FakeCalcom>, headers: HeaderMap, body: String) -> Response {
    let path = "/v2/bookings";
    let key = match authorize(&fake, &headers, path) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    fake.inner.lock().unwrap().creates.entry(key.clone()).or_default().push(Instant::now());
    let rate = match fake.throttle(&key, path) {
        Ok(rate) => rate,
        Err(response) => return *response,
    };
    let fault = {
        let mut inner = fake.inner.lock().unwrap();
        let chaos = inner.chaos;
        inner.faults.pop_front().or_else(|| {
            let mut rng = rand::thread_rng();
            let faults = &inner.chaos_faults;
            (chaos > 0.0 && !faults.is_empty() && rng.gen_bool(chaos)).then(|| faults[rng.gen_range(0..faults.len())])
        })
    };
    match fault {
        Some(Fault::RateLimited) => {
            let headers = fake.force_block(&key);
            return throttled(path, headers);
        }
        Some(Fault::Unavailable) => {
            return internal(StatusCode::SERVICE_UNAVAILABLE, path, rate);
        }
        Some(Fault::Conflict) => {
            return error(
                StatusCode::CONFLICT,
                "CONFLICT",
                "Invalid Input: Trying to create a record that already exists.",
                path,
                rate,
            );
        }
        Some(Fault::SlowNoCommit) => {
            tokio::time::sleep(fake.limits.slow).await;
            return internal(StatusCode::INTERNAL_SERVER_ERROR, path, rate);
        }
        _ => {}
    }
    if !version_ok(&headers) {
        // The legacy 2024-04-15 endpoint wants responses/timeZone/language: this body fails it.
        return error(StatusCode::BAD_REQUEST, "BadRequestException", "Bad Request Exception", path, rate);
    }
    let body: Value = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(_) => return error(StatusCode::BAD_REQUEST, "BadRequestException", "Bad Request Exception", path, rate),
    };
    let Valid { event_type_id, start, attendee, metadata } = match validate(&body) {
        Ok(valid) => valid,
        Err(message) => return error(StatusCode::BAD_REQUEST, "BadRequestException", message, path, rate),
    };
    let booked = {
        let mut inner = fake.inner.lock().unwrap();
        let Some(&(host, length)) = inner.event_types.get(&event_type_id) else {
            let message = format!("Event type with id {event_type_id} not found.");
            return error(StatusCode::NOT_FOUND, "NotFoundException", &message, path, rate);
        };
        if start < Utc::now() {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                "Attempting to book a meeting in the past.",
                path,
                rate,
            );
        }
        let end = start + chrono::Duration::minutes(length);
        let taken = inner.bookings.iter().any(|b| {
            b.host == host && matches!(b.status.as_str(), "accepted" | "pending") && b.start < end && start < b.end
        });
        if taken {
            return error(StatusCode::BAD_REQUEST, "BadRequestException", NOT_AVAILABLE, path, rate);
        }
        insert(&mut inner, event_type_id, host, start, length, attendee, metadata)
    };
    match fault {
        Some(Fault::CommitThenSlow) => tokio::time::sleep(fake.limits.slow).await,
        Some(Fault::CommitThen500) => {
            return internal(StatusCode::INTERNAL_SERVER_ERROR, path, rate);
        }
        Some(Fault::CommitThenReset) => {
            // Headers and half a body, then the connection breaks.
            let chunks: Vec<Result<&'static str, std::io::Error>> =
                vec![Ok("{\"status\":\"success\",\"data\":{\"id\":"), Err(std::io::Error::other("connection reset"))];
            let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
            *response.status_mut() = StatusCode::CREATED;
            response.headers_mut().extend(rate);
            return response;
        }
        _ => {}
    }
    success(StatusCode::CREATED, booked.output(), rate)
}

async fn one(State(fake): State<FakeCalcom>, Path(uid): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/v2/bookings/{uid}");
    let key = match authorize(&fake, &headers, &path) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let rate = match fake.throttle(&key, &path) {
        Ok(rate) => rate,
        Err(response) => return *response,
    };
    let found = fake.inner.lock().unwrap().bookings.iter().find(|b| b.uid == uid).cloned();
    match found {
        Some(booking) => success(StatusCode::OK, booking.output(), rate),
        None => error(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            &format!("Booking with uid={uid} was not found in the database"),
            &path,
            rate,
        ),
    }
}

async fn cancel(State(fake): State<FakeCalcom>, Path(uid): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/v2/bookings/{uid}/cancel");
    if let Err(response) = authorize(&fake, &headers, &path) {
        return *response;
    }
    match fake.cancel(&uid) {
        Some(booking) => success(StatusCode::OK, booking.output(), HeaderMap::new()),
        None => error(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            &format!("Booking with uid={uid} was not found in the database"),
            &path,
            HeaderMap::new(),
        ),
    }
}

async fn list(
    State(fake): State<FakeCalcom>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = "/v2/bookings";
    let key = match authorize(&fake, &headers, path) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let rate = match fake.throttle(&key, path) {
        Ok(rate) => rate,
        Err(response) => return *response,
    };
    let instant =
        |name: &str| query.get(name).and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|t| t.with_timezone(&Utc));
    let (after_start, before_end) = (instant("afterStart"), instant("beforeEnd"));
    let (after_created, after_updated) = (instant("afterCreatedAt"), instant("afterUpdatedAt"));
    // `eventTypeId=1` or `eventTypeIds=1,2`.
    let event_types: Vec<i64> = ["eventTypeId", "eventTypeIds"]
        .iter()
        .filter_map(|name| query.get(*name))
        .flat_map(|v| v.split(',').filter_map(|id| id.trim().parse().ok()))
        .collect();
    let email = query.get("attendeeEmail");
    let statuses: Vec<&str> = query.get("status").map(|s| s.split(',').collect()).unwrap_or_default();
    let take: usize = query.get("take").and_then(|v| v.parse().ok()).unwrap_or(100).clamp(1, 250);
    let skip: usize = query.get("skip").and_then(|v| v.parse().ok()).unwrap_or(0);
    let now = Utc::now();
    let mut matched: Vec<FakeBooking> = fake
        .inner
        .lock()
        .unwrap()
        .bookings
        .iter()
        .filter(|b| event_types.is_empty() || event_types.contains(&b.event_type_id))
        .filter(|b| email.is_none_or(|e| b.attendee["email"].as_str() == Some(e.as_str())))
        .filter(|b| after_start.is_none_or(|t| b.start >= t))
        .filter(|b| before_end.is_none_or(|t| b.end <= t))
        .filter(|b| after_created.is_none_or(|t| b.created_at >= t))
        // A booking never changed has no updatedAt, and Cal.com's filter leaves it out.
        .filter(|b| after_updated.is_none_or(|t| b.updated_at.is_some_and(|u| u >= t)))
        .filter(|b| {
            statuses.is_empty()
                || statuses.iter().any(|s| match *s {
                    "upcoming" => b.status == "accepted" && b.end >= now,
                    "unconfirmed" => b.status == "pending",
                    "past" => b.end < now && b.status != "cancelled",
                    "cancelled" => b.status == "cancelled",
                    _ => false,
                })
        })
        .cloned()
        .collect();
    if query.get("sortUpdatedAt").map(String::as_str) == Some("asc") {
        matched.sort_by_key(|b| b.updated_at);
    }
    if query.get("sortCreated").map(String::as_str) == Some("asc") {
        matched.sort_by_key(|b| b.created_at);
    }
    let total = matched.len();
    let page: Vec<Value> = matched.iter().skip(skip).take(take).map(FakeBooking::output).collect();
    let returned = page.len();
    let mut headers = rate;
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body = json!({
        "status": "success", "data": page,
        "pagination": {
            "returnedItems": returned, "totalItems": total, "itemsPerPage": take,
            "remainingItems": total.saturating_sub(skip + returned), "currentPage": skip / take + 1,
            "totalPages": total.div_ceil(take), "hasNextPage": skip + returned < total, "hasPreviousPage": skip > 0,
        }
    });
    (StatusCode::OK, headers, body.to_string()).into_response()
}

/// A Cal.com webhook delivery body for `booking`, as `sendPayload` builds it (uppercase status).
pub fn webhook_body(trigger: &str, booking: &FakeBooking, extra: Value) -> String {
    let mut payload = json!({
        "uid": booking.uid, "bookingId": booking.id, "eventTypeId": booking.event_type_id,
        "startTime": booking.start.to_rfc3339(), "endTime": booking.end.to_rfc3339(),
        "status": booking.status.to_ascii_uppercase(), "attendees": [booking.attendee.clone()],
        "iCalSequence": 0,
    });
    if trigger != "BOOKING_CANCELLED" {
        payload["metadata"] = Value::Object(booking.metadata.clone());
    }
    if let (Some(target), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
        target.extend(extra.clone());
    }
    json!({"triggerEvent": trigger, "createdAt": Utc::now().to_rfc3339(), "payload": payload}).to_string()
}

/// A company connected to the fake Cal.com: one branch, one service booked as `event_type`.
#[derive(Debug, Clone)]
pub struct CalcomCompany {
    pub company: callgate_contract::CompanyId,
    pub branch: callgate_contract::BranchId,
    pub service: uuid::Uuid,
    pub event_type: i64,
    pub api_key: String,
    pub webhook_secret: String,
    pub webhook_path: String,
}

/// Creates `slug` with a branch in New York, a 30-minute service booked as `event_type` (hosted
/// by `host` in the fake), and its Cal.com account, through the onboarding functions.
pub async fn seed_company(
    db: &crate::TestDb,
    cipher: &callgate_contract::SecretCipher,
    fake: &FakeCalcom,
    slug: &str,
    event_type: i64,
    host: i64,
) -> CalcomCompany {
    use callgate_worker::tenants::{self, ServiceDetails};
    let pool = &db.pool;
    let company = tenants::create_company(pool, &format!("{slug} Inc"), slug).await.unwrap();
    let branch = tenants::create_branch(pool, company, "Main", "America/New_York").await.unwrap();
    let details =
        ServiceDetails { name: "Check-up", aliases: &[], duration_minutes: 30, calcom_event_type_id: Some(event_type) };
    let service = tenants::add_service(pool, company, branch, &details).await.unwrap();
    let api_key = format!("cal_test_{slug}");
    let webhook_secret = format!("whsec-{slug}");
    let (_, webhook_path) = tenants::set_calcom_account(
        &db.pool,
        cipher,
        company,
        api_key.as_bytes(),
        webhook_secret.as_bytes(),
        None,
        None,
    )
    .await
    .unwrap();
    fake.add_key(&api_key);
    fake.add_event_type(event_type, host, 30);
    CalcomCompany { company, branch, service, event_type, api_key, webhook_secret, webhook_path }
}

/// `n` pending appointments for `company`, an hour apart from `first` (so none overlaps
/// another of the same host). Returns their idempotency keys.
pub async fn insert_appointments(
    db: &crate::TestDb,
    company: &CalcomCompany,
    n: usize,
    first: DateTime<Utc>,
) -> Vec<String> {
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
        let start = first + chrono::Duration::hours(i as i64);
        sqlx::query(
            "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, timezone, \
             customer_name, customer_email, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, 'America/New_York', 'Ana Lima', $6, $7)",
        )
        .bind(company.company.0)
        .bind(company.branch.0)
        .bind(company.service)
        .bind(start)
        .bind(start + chrono::Duration::minutes(30))
        .bind(format!("ana+{i}@example.com"))
        .bind(&key)
        .execute(&db.pool)
        .await
        .unwrap();
        keys.push(key);
    }
    keys
}

/// `callgate-worker run` flags pointing the push at the fake, with test-sized timings:
/// `extra` overrides (clap keeps the last value of a flag).
pub fn push_flags(fake: &FakeCalcom, secret_key: &str, extra: &[&str]) -> Vec<String> {
    let base_url = fake.base_url();
    let defaults = [
        ("--secret-key", secret_key),
        ("--calcom-base-url", base_url.as_str()),
        ("--calcom-poll-interval", "50ms"),
        ("--calcom-request-timeout", "1s"),
        ("--calcom-connect-timeout", "500ms"),
        ("--calcom-lease", "3s"),
        ("--calcom-initial-backoff", "50ms"),
        ("--calcom-max-backoff", "500ms"),
        // The reconciliation adopts a booking whose answer is still on its way, which makes the
        // push's own counts racy; the tests of the reconciliation turn it on.
        ("--calcom-reconcile-interval", "0s"),
    ];
    let mut flags: Vec<String> = Vec::new();
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            flags.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    flags
}

impl Fault {
    /// The fault named as in this enum (`Unavailable`, `SlowNoCommit`, …).
    pub fn named(name: &str) -> Option<Self> {
        CHAOS.iter().copied().find(|fault| format!("{fault:?}") == name)
    }
}

/// `POST /__chaos?share=0.5&faults=Unavailable,SlowNoCommit`: a share of creates misbehaves.
async fn set_chaos_route(State(fake): State<FakeCalcom>, Query(query): Query<HashMap<String, String>>) -> Response {
    let Some(share) = query.get("share").and_then(|s| s.parse::<f64>().ok()).filter(|s| (0.0..=1.0).contains(s)) else {
        return (StatusCode::BAD_REQUEST, "share in 0..=1 required").into_response();
    };
    let mut faults = Vec::new();
    for name in query.get("faults").map(String::as_str).unwrap_or("").split(',').filter(|n| !n.is_empty()) {
        match Fault::named(name) {
            Some(fault) => faults.push(fault),
            None => return (StatusCode::BAD_REQUEST, format!("unknown fault {name}")).into_response(),
        }
    }
    fake.set_chaos_with(share, &faults);
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /__bookings`: every booking the fake holds, with its metadata (the idempotency key).
async fn all_bookings(State(fake): State<FakeCalcom>) -> Response {
    let bookings: Vec<Value> = fake.bookings().iter().map(FakeBooking::output).collect();
    axum::Json(bookings).into_response()
}
