//! Property tests over what the worker reads from an analysis: the requested time, the spoken
//! service, the contact fields, and the dates computed from them. Bounded case counts (256 by
//! default; `PROPTEST_CASES=100000 cargo test -p callgate-worker --test properties` for a
//! longer run); failures found are kept in `proptest-regressions/`.
//!
//! Invariants: no panic for any value; a start that is accepted lies after the call and within
//! the horizon, and its end can be computed.

#![allow(clippy::unwrap_used)]

use callgate_worker::appointments::{self, FieldMap, Service};
use chrono::{DateTime, TimeZone as _, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (DateTime::<Utc>::MIN_UTC.timestamp(), DateTime::<Utc>::MAX_UTC.timestamp());
    prop_oneof![
        (min..=max).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
        (1_600_000_000i64..2_100_000_000).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
        Just(DateTime::<Utc>::MAX_UTC),
        Just(DateTime::<Utc>::MIN_UTC),
    ]
}

fn start_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,30}",
        "[+-]?[0-9]{4,6}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        Just("+262142-12-31T23:59Z".to_owned()),
        Just("-262143-01-01T00:00Z".to_owned()),
    ]
}

fn zone() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("America/New_York".to_owned()),
        Just("Pacific/Kiritimati".to_owned()),
        Just("UTC+5".to_owned()),
        ".{0,20}",
    ]
}

proptest! {
    #[test]
    fn any_start_is_read_or_flagged_and_an_accepted_one_is_plausible(text in start_text(), zone in zone(), call_end in instant(), received in instant(), minutes in any::<i32>()) {
        let Ok(start) = appointments::parse_start(&Value::String(text), &zone) else { return Ok(()) };
        if appointments::check_start(start, call_end, received).is_ok() {
            prop_assert!(start > call_end);
            prop_assert!(start <= received.checked_add_signed(appointments::HORIZON).unwrap());
        }
        let _ = appointments::end_of(start, minutes);
    }

    #[test]
    fn any_analysis_value_becomes_a_request_or_not(start in any::<Option<String>>(), number in any::<f64>(), service in ".{0,40}", name in ".{0,300}", email in ".{0,60}") {
        let mut data = Map::new();
        data.insert("appointment_start".into(), start.map_or(Value::Null, Value::String));
        data.insert("service".into(), Value::String(service.clone()));
        data.insert("customer_name".into(), Value::String(name));
        data.insert("customer_email".into(), Value::String(email));
        data.insert("notes".into(), serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number));
        let fields = FieldMap::default();
        if let Some(request) = appointments::request(&data, &fields) {
            let _ = appointments::parse_start(&request.start, "America/New_York");
        }
        let _ = appointments::contact(&data, &fields);
        let services = [Service { id: uuid::Uuid::nil(), name: "Teeth Cleaning".into(), aliases: vec!["hygiene visit".into(), service.clone()], duration_minutes: 30 }];
        prop_assert!(appointments::match_service(&service, &services).is_some() || appointments::fold(&service).is_empty());
    }
}
