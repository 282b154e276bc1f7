//! From a call's structured analysis to an appointment request: which fields to read (a
//! per-company mapping), when the caller meant (the branch's time zone), which service (the
//! branch's services, ignoring case and accents), and the idempotency key. Pure functions; the
//! database side is in `apply/call.rs`.

use std::str::FromStr as _;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;
use uuid::Uuid;

/// Which analysis fields hold the appointment. A company overrides any of them in
/// `companies.appointment_fields`, e.g. `{"start": "slot", "service": "treatment"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    /// Default `appointment_start`: ISO 8601, with an offset or read in the branch's zone.
    pub start: String,
    /// Default `service`: matched against the branch's service names and aliases.
    pub service: String,
    /// Default `customer_name`: fills a blank customer name.
    pub customer_name: String,
    /// Default `customer_email`: fills a blank customer email.
    pub customer_email: String,
    /// Default `notes`: copied onto the appointment.
    pub notes: String,
}

impl Default for FieldMap {
    fn default() -> Self {
        Self {
            start: "appointment_start".into(),
            service: "service".into(),
            customer_name: "customer_name".into(),
            customer_email: "customer_email".into(),
            notes: "notes".into(),
        }
    }
}

impl FieldMap {
    /// The default with a company's overrides applied; unknown keys and non-string values are
    /// ignored (the onboarding command refuses them).
    pub fn with_overrides(overrides: &Value) -> Self {
        let mut map = Self::default();
        if let Some(object) = overrides.as_object() {
            for (key, value) in object {
                let Some(value) = value.as_str().filter(|v| !v.is_empty()) else { continue };
                if let Some(slot) = map.slot(key) {
                    *slot = value.to_owned();
                }
            }
        }
        map
    }

    /// Checks a company's overrides before they are stored.
    pub fn validate_overrides(overrides: &Value) -> Result<(), String> {
        let object = overrides.as_object().ok_or("appointment fields must be a JSON object")?;
        let mut map = Self::default();
        for (key, value) in object {
            if map.slot(key).is_none() {
                return Err(format!(
                    "unknown appointment field {key:?} (start, service, customer_name, customer_email, notes)"
                ));
            }
            if value.as_str().is_none_or(str::is_empty) {
                return Err(format!("appointment field {key:?} must name an analysis field (a non-empty string)"));
            }
        }
        Ok(())
    }

    fn slot(&mut self, key: &str) -> Option<&mut String> {
        match key {
            "start" => Some(&mut self.start),
            "service" => Some(&mut self.service),
            "customer_name" => Some(&mut self.customer_name),
            "customer_email" => Some(&mut self.customer_email),
            "notes" => Some(&mut self.notes),
            _ => None,
        }
    }
}

/// What the analysis asked for, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub start: Value,
    pub service: Option<String>,
    pub notes: Option<String>,
}

/// Contact details the analysis heard, usable to fill a customer's blanks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    pub name: Option<String>,
    pub email: Option<String>,
}

/// The appointment request in `data`, if the analysis asks for one: its start field is present
/// and not null, `false` or empty.
pub fn request(data: &Map<String, Value>, fields: &FieldMap) -> Option<Request> {
    let start = data.get(&fields.start)?;
    let absent = match start {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    };
    if absent {
        return None;
    }
    Some(Request {
        start: start.clone(),
        service: text(data.get(&fields.service)),
        notes: text(data.get(&fields.notes)),
    })
}

pub fn contact(data: &Map<String, Value>, fields: &FieldMap) -> Contact {
    let name = text(data.get(&fields.customer_name)).filter(|n| n.chars().count() <= 200);
    let email = text(data.get(&fields.customer_email)).filter(|e| plausible_email(e)).map(|e| e.to_lowercase());
    Contact { name, email }
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Enough to refuse what a transcription model makes of "john at example dot com"; Cal.com
/// validates the rest.
fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    email.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

/// Why an analysis did not become an appointment. Stored on the call (`review_reason`) and
/// counted (`callgate_worker_calls_flagged_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewReason {
    UnparseableTime,
    /// A local time that does not exist in the branch's zone (skipped by a DST change).
    NonexistentLocalTime,
    PastTime,
    /// Further ahead than [`HORIZON`]: a misheard or invented date, or one the calendar's range
    /// cannot hold with the service's duration added.
    ImplausibleTime,
    /// A time without an offset, and a branch zone the worker cannot read.
    NoTimezone,
    MissingService,
    UnknownService,
}

impl ReviewReason {
    pub const ALL: [Self; 7] = [
        Self::UnparseableTime,
        Self::NonexistentLocalTime,
        Self::PastTime,
        Self::ImplausibleTime,
        Self::NoTimezone,
        Self::MissingService,
        Self::UnknownService,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnparseableTime => "unparseable_time",
            Self::NonexistentLocalTime => "nonexistent_local_time",
            Self::PastTime => "past_time",
            Self::ImplausibleTime => "implausible_time",
            Self::NoTimezone => "no_timezone",
            Self::MissingService => "missing_service",
            Self::UnknownService => "unknown_service",
        }
    }
}

/// How far ahead of the webhook's arrival a requested start may lie. Receptionists book weeks or
/// months ahead; a start decades away (year 2999, or the calendar's end) is a misheard or
/// invented value for a person to look at. Ten years is deliberately lenient: a flagged call
/// loses nothing, but a plausible booking should not wait for review. The bound also keeps every
/// later computation on the date (its end, Cal.com's lookup window) far inside the calendar's
/// range, whatever the payload says.
pub const HORIZON: TimeDelta = TimeDelta::days(3_653);

/// Checks a requested start: after the call (`after`, its end), and no further than
/// [`HORIZON`] from `received_at` (the gateway's clock, not the payload's). Never panics, for any
/// input: every date computation is checked.
pub fn check_start(
    start: DateTime<Utc>,
    after: DateTime<Utc>,
    received_at: DateTime<Utc>,
) -> Result<(), (ReviewReason, String)> {
    if start <= after {
        let detail = format!("{} is not after the call ({})", start.to_rfc3339(), after.to_rfc3339());
        return Err((ReviewReason::PastTime, detail));
    }
    match received_at.checked_add_signed(HORIZON) {
        Some(latest) if start <= latest => Ok(()),
        _ => Err((
            ReviewReason::ImplausibleTime,
            format!("{} is more than {} days after the call arrived", start.to_rfc3339(), HORIZON.num_days()),
        )),
    }
}

/// The end of an appointment of `minutes` starting at `start`, or why not.
pub fn end_of(start: DateTime<Utc>, minutes: i32) -> Result<DateTime<Utc>, (ReviewReason, String)> {
    start.checked_add_signed(TimeDelta::minutes(i64::from(minutes))).ok_or_else(|| {
        (ReviewReason::ImplausibleTime, format!("{} plus {minutes} minutes is beyond the calendar", start.to_rfc3339()))
    })
}

/// Reads the requested start. With an offset (`2026-11-24T10:00:00-05:00`, `…Z`) it is an
/// instant; without (`2026-11-24T10:00`, `2026-11-24 10:00:00`) it is wall-clock time in the
/// branch's zone. A wall-clock time that happens twice (DST ends) is the first one.
pub fn parse_start(start: &Value, zone: &str) -> Result<DateTime<Utc>, ReviewReason> {
    let text = start.as_str().map(str::trim).ok_or(ReviewReason::UnparseableTime)?;
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Utc));
    }
    // Offsets on times without seconds, or with a space: what language models tend to write.
    let zulu = text.strip_suffix(['Z', 'z']).map(|t| format!("{t}+00:00"));
    let with_offset = zulu.as_deref().unwrap_or(text);
    let offset_formats =
        ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M%:z"];
    if let Some(instant) = offset_formats.iter().find_map(|f| DateTime::parse_from_str(with_offset, f).ok()) {
        return Ok(instant.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .ok_or(ReviewReason::UnparseableTime)?;
    let tz = Tz::from_str(zone).map_err(|_| ReviewReason::NoTimezone)?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.with_timezone(&Utc)),
        LocalResult::None => Err(ReviewReason::NonexistentLocalTime),
    }
}

/// A service as the matcher sees it.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    pub aliases: Vec<String>,
    pub duration_minutes: i32,
}

/// Lowercase, accents removed, runs of spaces and punctuation folded to one space:
/// "  Détartrage / Nettoyage " and "detartrage nettoyage" are the same service.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    }
    out
}

/// The branch's service the caller named, by name or alias.
pub fn match_service<'a>(spoken: &str, services: &'a [Service]) -> Option<&'a Service> {
    let wanted = fold(spoken);
    if wanted.is_empty() {
        return None;
    }
    services.iter().find(|s| fold(&s.name) == wanted || s.aliases.iter().any(|a| fold(a) == wanted))
}

/// The idempotency key of an appointment: the same company, call, start and service always give
/// the same key, so a redelivered analysis, a replay or a second worker cannot book twice. It is
/// also the key sent to Cal.com in the booking's metadata.
pub fn idempotency_key(company: Uuid, call_id: Uuid, start: DateTime<Utc>, service: Uuid) -> String {
    let mut hasher = Sha256::new();
    hasher.update(company.as_bytes());
    hasher.update(call_id.as_bytes());
    hasher.update(start.timestamp_micros().to_be_bytes());
    hasher.update(service.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn starts_outside_the_call_and_the_horizon_are_flagged_and_no_date_overflows() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let (call_end, received) = (at("2026-12-03T10:00:00Z"), at("2026-12-03T10:00:05Z"));
        assert_eq!(check_start(at("2026-12-10T09:00:00Z"), call_end, received), Ok(()));
        assert_eq!(check_start(call_end, call_end, received).unwrap_err().0, ReviewReason::PastTime);
        assert_eq!(check_start(at("2036-12-01T09:00:00Z"), call_end, received), Ok(()), "inside ten years");
        let far = check_start(at("2036-12-04T09:00:00Z"), call_end, received).unwrap_err();
        assert_eq!(far.0, ReviewReason::ImplausibleTime);
        // The calendar's last minute, a payload whose call "ended" there, a clock at its end.
        let last = DateTime::<Utc>::MAX_UTC;
        assert_eq!(check_start(last, call_end, received).unwrap_err().0, ReviewReason::ImplausibleTime);
        assert_eq!(
            check_start(last, call_end, last - TimeDelta::minutes(1)).unwrap_err().0,
            ReviewReason::ImplausibleTime
        );
        assert_eq!(check_start(DateTime::<Utc>::MIN_UTC, last, received).unwrap_err().0, ReviewReason::PastTime);
        assert_eq!(end_of(last, 30).unwrap_err().0, ReviewReason::ImplausibleTime);
        assert_eq!(end_of(at("2026-12-10T09:00:00Z"), 45), Ok(at("2026-12-10T09:45:00Z")));
        assert_eq!(end_of(DateTime::<Utc>::MIN_UTC, i32::MIN).unwrap_err().0, ReviewReason::ImplausibleTime);
    }

    #[test]
    fn default_and_overridden_fields() {
        let d = data(json!({"appointment_start": "2026-12-01T10:00", "service": "Cleaning", "notes": " n "}));
        let r = request(&d, &FieldMap::default()).unwrap();
        assert_eq!((r.service.as_deref(), r.notes.as_deref()), (Some("Cleaning"), Some("n")));
        let custom = FieldMap::with_overrides(&json!({"start": "slot", "service": "treatment"}));
        let d = data(json!({"slot": "2026-12-01T10:00", "treatment": "Whitening"}));
        assert_eq!(request(&d, &custom).unwrap().service.as_deref(), Some("Whitening"));
        assert!(FieldMap::validate_overrides(&json!({"start": "slot"})).is_ok());
        assert!(FieldMap::validate_overrides(&json!({"when": "slot"})).is_err());
        assert!(FieldMap::validate_overrides(&json!({"start": 3})).is_err());
    }

    #[test]
    fn no_request_without_a_start() {
        for start in [json!(null), json!(false), json!(""), json!("  ")] {
            assert!(request(&data(json!({"appointment_start": start})), &FieldMap::default()).is_none());
        }
        assert!(request(&data(json!({"service": "x"})), &FieldMap::default()).is_none());
    }

    #[test]
    fn contact_details_are_checked() {
        let fields = FieldMap::default();
        let c = contact(&data(json!({"customer_name": " Ana ", "customer_email": "Ana@Example.com"})), &fields);
        assert_eq!(c, Contact { name: Some("Ana".into()), email: Some("ana@example.com".into()) });
        for bad in ["ana at example dot com", "ana@", "@x.com", "ana@example", "a na@x.com"] {
            assert_eq!(contact(&data(json!({"customer_email": bad})), &fields).email, None, "{bad}");
        }
    }

    #[test]
    fn times_with_offsets_and_in_the_branch_zone() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let ny = "America/New_York";
        assert_eq!(parse_start(&json!("2026-12-01T10:00:00-08:00"), ny), Ok(utc("2026-12-01T18:00:00Z")));
        assert_eq!(parse_start(&json!("2026-12-01T10:00"), ny), Ok(utc("2026-12-01T15:00:00Z")));
        assert_eq!(parse_start(&json!("2026-07-01 10:00"), ny), Ok(utc("2026-07-01T14:00:00Z")));
        // 2026-03-08 02:30 does not exist in New York; 2026-11-01 01:30 happens twice (EDT first).
        assert_eq!(parse_start(&json!("2026-03-08T02:30"), ny), Err(ReviewReason::NonexistentLocalTime));
        assert_eq!(parse_start(&json!("2026-11-01T01:30"), ny), Ok(utc("2026-11-01T05:30:00Z")));
        assert_eq!(parse_start(&json!("next tuesday"), ny), Err(ReviewReason::UnparseableTime));
        assert_eq!(parse_start(&json!(1700000000), ny), Err(ReviewReason::UnparseableTime));
        // A zone Postgres accepts but the IANA database does not name.
        assert_eq!(parse_start(&json!("2026-12-01T10:00"), "UTC+5"), Err(ReviewReason::NoTimezone));
        assert_eq!(parse_start(&json!("2026-12-01T10:00Z"), "UTC+5"), Ok(utc("2026-12-01T10:00:00Z")));
        assert_eq!(parse_start(&json!("2026-12-01 10:00-05:00"), "UTC+5"), Ok(utc("2026-12-01T15:00:00Z")));
    }

    #[test]
    fn services_match_ignoring_case_accents_and_spacing() {
        let services = vec![
            Service { id: Uuid::from_u128(1), name: "Détartrage".into(), aliases: vec![], duration_minutes: 30 },
            Service {
                id: Uuid::from_u128(2),
                name: "Teeth Cleaning".into(),
                aliases: vec!["hygiene visit".into(), "Limpieza".into()],
                duration_minutes: 45,
            },
        ];
        assert_eq!(match_service("detartrage", &services).unwrap().id, Uuid::from_u128(1));
        assert_eq!(match_service("  TEETH   cleaning ", &services).unwrap().id, Uuid::from_u128(2));
        assert_eq!(match_service("Hygiene-Visit", &services).unwrap().id, Uuid::from_u128(2));
        assert_eq!(match_service("limpiéza", &services).unwrap().id, Uuid::from_u128(2));
        assert!(match_service("root canal", &services).is_none());
        assert!(match_service("  ", &services).is_none());
    }

    #[test]
    fn idempotency_key_is_deterministic() {
        let t = Utc::now();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let key = idempotency_key(a, b, t, a);
        assert_eq!(key, idempotency_key(a, b, t, a));
        assert_eq!(key.len(), 64);
        assert_ne!(key, idempotency_key(b, b, t, a));
        assert_ne!(key, idempotency_key(a, b, t + chrono::Duration::minutes(30), a));
        assert_ne!(key, idempotency_key(a, b, t, b));
    }
}
