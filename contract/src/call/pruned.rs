//! Reading a provider's payload for only the members its normaliser looks at.
//!
//! A payload carries much that the call model never reads: Retell's transcript word by word
//! (twice, with and without tool calls), Vapi's whole conversation and assistant configuration.
//! Read into a `serde_json::Value`, a ten-minute Retell call cost about 1 ms of CPU, eight times
//! what scanning its bytes costs (BENCHMARKS.md, "Reading provider payloads"). Each provider
//! names what it reads as a [`Keep`] tree; everything else is checked as JSON and skipped, with
//! nothing allocated for it.
//!
//! A kept member is exactly what a whole parse gives at that place (the same `Value`, the last
//! of repeated keys), so a normaliser reads the pruned document as it would read the whole one.
//! Each provider's property test holds that over arbitrary documents shaped like its payloads
//! (`tests::shaped`), and its field-by-field tests fail if its `Keep` leaves out a member it
//! reads. What is skipped has no nesting limit: a tenant's deeply nested `metadata` no longer
//! stops its calls from being read (a whole parse stops at 128 levels).

use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What of a JSON value a normaliser reads.
pub(super) enum Keep {
    /// All of it.
    All,
    /// These members of an object. Anything else in their place reads as what it is (a
    /// string, a number, …), except that an array's elements are skipped: nothing a
    /// normaliser reads member by member is read as an array.
    Fields(&'static [(&'static str, Keep)]),
}

/// Parses `body` (all of it must be JSON), keeping what `keep` names.
pub(super) fn parse(body: &str, keep: &Keep) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(body);
    let value = keep.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

impl<'de> DeserializeSeed<'de> for &Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        match self {
            Keep::All => serde::Deserialize::deserialize(de),
            Keep::Fields(fields) => de.deserialize_any(Members(fields)),
        }
    }
}

/// Reads an object's named members; the rest is skipped.
struct Members(&'static [(&'static str, Keep)]);

impl<'de> Visitor<'de> for Members {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.0.iter().find(|(name, _)| *name == key) {
                // Insert, not entry: the last of repeated keys wins, as in a whole parse.
                Some((_, keep)) => drop(kept.insert(key, map.next_value_seed(keep)?)),
                None => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Any JSON, a few levels deep, with the kinds of leaves the normalisers interpret.
    fn any_json() -> BoxedStrategy<Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            Just(Value::String("2026-12-03T10:00:00Z".into())),
            Just(Value::String("+14155550100".into())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{1,6}", inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
        .boxed()
    }

    /// Documents shaped like `keep`: where it names members, mostly an object with some of
    /// them (each shaped in turn) and some others, sometimes any other value.
    pub(in crate::call) fn shaped(keep: &'static Keep) -> BoxedStrategy<Value> {
        let Keep::Fields(fields) = keep else { return any_json() };
        let members: Vec<_> = fields
            .iter()
            .map(|(name, keep)| proptest::option::of(shaped(keep).prop_map(move |v| ((*name).to_owned(), v))))
            .collect();
        let others = prop::collection::vec(("[a-z_]{1,8}", any_json()), 0..3);
        prop_oneof![
            8 => (members, others).prop_map(|(members, others)| {
                Value::Object(others.into_iter().chain(members.into_iter().flatten()).collect())
            }),
            1 => any_json(),
        ]
        .boxed()
    }

    const KEEP: Keep = Keep::Fields(&[("a", Keep::Fields(&[("b", Keep::All)])), ("c", Keep::All)]);

    #[test]
    fn what_is_named_is_kept_whole_and_the_rest_skipped() {
        let body = r#"{"a": {"b": {"deep": [1, {"x": null}]}, "skip": [1, 2]}, "c": [true, 1.5, "s"], "d": {"e": 1}}"#;
        let pruned = parse(body, &KEEP).unwrap();
        assert_eq!(pruned, serde_json::json!({"a": {"b": {"deep": [1, {"x": null}]}}, "c": [true, 1.5, "s"]}));
    }

    #[test]
    fn other_values_read_as_what_they_are_and_the_last_repeated_key_wins() {
        assert_eq!(parse(r#""text""#, &KEEP).unwrap(), Value::String("text".into()));
        assert_eq!(parse("-3", &KEEP).unwrap(), Value::from(-3));
        assert_eq!(parse(r#"{"a": 7}"#, &KEEP).unwrap(), serde_json::json!({"a": 7}));
        assert_eq!(parse(r#"{"a": [{"b": 1}]}"#, &KEEP).unwrap(), serde_json::json!({"a": []}));
        let repeated = r#"{"c": 1, "a": {"b": 2}, "c": 3, "a": {"b": 4, "b": 5}}"#;
        let whole: Value = serde_json::from_str(repeated).unwrap();
        assert_eq!(parse(repeated, &KEEP).unwrap(), whole);
        assert_eq!(whole, serde_json::json!({"a": {"b": 5}, "c": 3}));
    }

    #[test]
    fn bad_json_is_refused_even_where_it_is_skipped() {
        for body in [r#"{"d": [1, }"#, r#"{"a": {"b": 1}} trailing"#, r#"{"d": "\x"}"#, ""] {
            assert!(parse(body, &KEEP).is_err(), "{body}");
        }
    }

    #[test]
    fn skipped_members_may_nest_deeper_than_a_whole_parse_allows() {
        let deep = format!(r#"{{"d": {}{}, "c": 1}}"#, "[".repeat(500), "]".repeat(500));
        assert!(serde_json::from_str::<Value>(&deep).is_err(), "a whole parse stops at 128 levels");
        assert_eq!(parse(&deep, &KEEP).unwrap(), serde_json::json!({"c": 1}));
    }
}
