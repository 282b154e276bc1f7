//! The call's merge rules, in one place: how a call row moves when events arrive in any order.
//!
//! A call only moves forward. An event is *newer* when its progress `(rank, seq)` is at least the
//! call's; a newer event sets the status and progress, and overwrites each data column it has a
//! value for. An older event only fills columns that are still blank. No event ever writes a
//! blank over a value. `first_event_at` and `last_event_at` only widen.
//!
//! The rules are applied here, in memory, to every event of one call in a batch, one after the
//! other, starting from the row as stored (read under the call's lock, see `store.rs`). The
//! result is written back in one statement: a column the events did not change is written as
//! NULL and kept by `COALESCE(new, old)`, so a long transcript is neither read back nor
//! rewritten by the events that do not carry it.

use callgate_contract::call::{CallDetails, CallStatus, CallUpdate, Direction};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// One data column: what to write (None: keep the stored value) and whether the merged call has
/// a value in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column<T> {
    pub write: Option<T>,
    pub filled: bool,
}

impl<T> Column<T> {
    /// A stored column, not read back: only whether it holds a value.
    pub fn stored(filled: bool) -> Self {
        Self { write: None, filled }
    }

    fn merge(&mut self, incoming: Option<&T>, newer: bool)
    where
        T: Clone,
    {
        let Some(value) = incoming else { return };
        if newer || !self.filled {
            self.write = Some(value.clone());
            self.filled = true;
        }
    }
}

impl<T> Default for Column<T> {
    fn default() -> Self {
        Self::stored(false)
    }
}

/// A call's state while a batch's events are folded into it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallState {
    pub status: CallStatus,
    /// `(rank, seq)`; None for a call not stored yet (any event is newer).
    pub progress: Option<(i16, i64)>,
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub direction: Column<Direction>,
    pub caller_raw: Column<String>,
    pub caller_e164: Column<String>,
    pub started_at: Column<DateTime<Utc>>,
    pub ended_at: Column<DateTime<Utc>>,
    pub duration_ms: Column<i64>,
    pub transcript: Column<String>,
    pub summary: Column<String>,
    pub analysis: Column<Value>,
    pub cost_usd: Column<f64>,
    pub disconnection_reason: Column<String>,
    pub details: DetailColumns,
}

/// The columns of [`CallDetails`], merged by the same rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetailColumns {
    pub agent_id: Column<String>,
    pub agent_version: Column<i32>,
    pub language: Column<String>,
    pub sentiment: Column<String>,
    pub cost_breakdown: Column<Value>,
    pub recording_url: Column<String>,
    pub recording_multichannel_url: Column<String>,
    pub recording_sid: Column<String>,
}

impl DetailColumns {
    /// Stored columns, not read back: whether each holds a value, in the order of the fields.
    pub fn stored(filled: &[bool]) -> Self {
        let at = |i: usize| filled.get(i).copied().unwrap_or(false);
        Self {
            agent_id: Column::stored(at(0)),
            agent_version: Column::stored(at(1)),
            language: Column::stored(at(2)),
            sentiment: Column::stored(at(3)),
            cost_breakdown: Column::stored(at(4)),
            recording_url: Column::stored(at(5)),
            recording_multichannel_url: Column::stored(at(6)),
            recording_sid: Column::stored(at(7)),
        }
    }

    fn merge(&mut self, incoming: &CallDetails, newer: bool) {
        self.agent_id.merge(incoming.agent_id.as_ref(), newer);
        self.agent_version.merge(incoming.agent_version.as_ref(), newer);
        self.language.merge(incoming.language.as_ref(), newer);
        self.sentiment.merge(incoming.sentiment.as_ref(), newer);
        self.cost_breakdown.merge(incoming.cost_breakdown.as_ref(), newer);
        self.recording_url.merge(incoming.recording_url.as_ref(), newer);
        self.recording_multichannel_url.merge(incoming.recording_multichannel_url.as_ref(), newer);
        self.recording_sid.merge(incoming.recording_sid.as_ref(), newer);
    }
}

impl CallState {
    /// A call that is not stored yet.
    pub fn new() -> Self {
        Self {
            status: CallStatus::Queued,
            progress: None,
            first_event_at: None,
            last_event_at: None,
            direction: Column::default(),
            caller_raw: Column::default(),
            caller_e164: Column::default(),
            started_at: Column::default(),
            ended_at: Column::default(),
            duration_ms: Column::default(),
            transcript: Column::default(),
            summary: Column::default(),
            analysis: Column::default(),
            cost_usd: Column::default(),
            disconnection_reason: Column::default(),
            details: DetailColumns::default(),
        }
    }

    /// Applies one event, received at `received_at`, by the rules above. `caller_e164` is the
    /// caller as E.164, when it is a number.
    pub fn apply(&mut self, update: &CallUpdate, caller_e164: Option<&String>, received_at: DateTime<Utc>) {
        let incoming = (update.progress.rank, update.progress.seq);
        let newer = self.progress.is_none_or(|current| incoming >= current);
        if newer {
            self.status = update.status;
            self.progress = Some(incoming);
        }
        self.first_event_at = Some(self.first_event_at.map_or(received_at, |at| at.min(received_at)));
        self.last_event_at = Some(self.last_event_at.map_or(received_at, |at| at.max(received_at)));
        self.direction.merge(update.direction.as_ref(), newer);
        self.caller_raw.merge(update.caller.as_ref(), newer);
        self.caller_e164.merge(caller_e164, newer);
        self.started_at.merge(update.started_at.as_ref(), newer);
        self.ended_at.merge(update.ended_at.as_ref(), newer);
        self.duration_ms.merge(update.duration_ms.as_ref(), newer);
        self.transcript.merge(update.transcript.as_ref(), newer);
        self.summary.merge(update.summary.as_ref(), newer);
        self.analysis.merge(update.analysis.as_ref(), newer);
        self.cost_usd.merge(update.cost_usd.as_ref(), newer);
        self.disconnection_reason.merge(update.disconnection_reason.as_ref(), newer);
        self.details.merge(&update.details, newer);
    }
}

impl Default for CallState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use callgate_contract::call::Progress;

    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + i64::from(second), 0).unwrap()
    }

    fn event(status: CallStatus, seq: i64) -> CallUpdate {
        CallUpdate::new(status, Progress::of(status, seq))
    }

    #[test]
    fn a_newer_event_overwrites_what_it_carries_and_an_older_one_only_fills_blanks() {
        let mut call = CallState::new();
        let mut ended = event(CallStatus::Ended, 0);
        ended.transcript = Some("final".into());
        call.apply(&ended, None, at(10));
        let mut started = event(CallStatus::InProgress, 0);
        started.transcript = Some("partial".into());
        started.summary = Some("from the older event".into());
        call.apply(&started, None, at(5));
        assert_eq!(call.status, CallStatus::Ended, "an older event never moves the status back");
        assert_eq!(call.transcript.write.as_deref(), Some("final"), "an older event never overwrites");
        assert_eq!(call.summary.write.as_deref(), Some("from the older event"), "but it fills a blank");
        assert_eq!((call.first_event_at, call.last_event_at), (Some(at(5)), Some(at(10))));
    }

    #[test]
    fn a_stored_value_is_kept_by_an_older_event_and_replaced_by_a_newer_one_and_never_by_a_blank() {
        // Stored: ended (rank 3), with a transcript.
        let mut call = CallState { progress: Some((3, 0)), transcript: Column::stored(true), ..CallState::new() };
        let mut older = event(CallStatus::InProgress, 0);
        older.transcript = Some("older".into());
        call.apply(&older, None, at(1));
        assert_eq!(call.transcript, Column::stored(true), "kept: nothing to write");
        let blank = event(CallStatus::Ended, 1);
        call.apply(&blank, None, at(2));
        assert_eq!(call.transcript, Column::stored(true), "a newer event without it keeps it");
        let mut newer = event(CallStatus::Ended, 2);
        newer.transcript = Some("newer".into());
        call.apply(&newer, None, at(3));
        assert_eq!(call.transcript.write.as_deref(), Some("newer"));
        assert_eq!(call.progress, Some((3, 2)));
    }

    /// A stored call as the database holds it: what a write through `COALESCE(new, old)` leaves.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct Row {
        status: Option<CallStatus>,
        progress: Option<(i16, i64)>,
        transcript: Option<String>,
        summary: Option<String>,
    }

    impl Row {
        fn fold(&mut self, events: &[CallUpdate]) {
            let mut state = CallState {
                progress: self.progress,
                transcript: Column::stored(self.transcript.is_some()),
                summary: Column::stored(self.summary.is_some()),
                ..CallState::new()
            };
            if let Some(status) = self.status {
                state.status = status;
            }
            for event in events {
                state.apply(event, None, at(0));
            }
            self.status = Some(state.status);
            self.progress = state.progress;
            self.transcript = state.transcript.write.or(self.transcript.take());
            self.summary = state.summary.write.or(self.summary.take());
        }
    }

    fn arbitrary_event() -> impl proptest::strategy::Strategy<Value = CallUpdate> {
        use proptest::prelude::*;
        let status = prop_oneof![Just(CallStatus::Ringing), Just(CallStatus::InProgress), Just(CallStatus::Ended)];
        let text = proptest::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("c".to_owned())]);
        (status, 0..3_i64, text.clone(), text).prop_map(|(status, seq, transcript, summary)| {
            let mut event = event(status, seq);
            event.transcript = transcript;
            event.summary = summary;
            event
        })
    }

    proptest::proptest! {
        /// However a partition's events are cut into batches (one event per transaction, as
        /// before, or several folded into one write), the stored call ends the same.
        #[test]
        fn cutting_the_events_into_batches_never_changes_the_call(
            events in proptest::collection::vec(arbitrary_event(), 1..12),
            cuts in proptest::collection::vec(0..12_usize, 0..4),
        ) {
            let mut one_by_one = Row::default();
            for event in &events {
                one_by_one.fold(std::slice::from_ref(event));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(events.len())).collect();
            cuts.push(events.len());
            cuts.sort_unstable();
            let mut batched = Row::default();
            let mut from = 0;
            for to in cuts {
                batched.fold(&events[from..to]);
                from = to;
            }
            proptest::prop_assert_eq!(one_by_one, batched);
        }
    }

    #[test]
    fn a_late_event_never_erases_the_recording_or_the_agent() {
        // Stored: analysed, with its recording and agent.
        let mut call =
            CallState { progress: Some((4, 0)), details: DetailColumns::stored(&[true; 8]), ..CallState::new() };
        let mut late = event(CallStatus::Ended, 0);
        late.details.recording_url = Some("https://other.example/r.wav".into());
        call.apply(&late, None, at(1));
        call.apply(&event(CallStatus::Queued, 0), None, at(2));
        assert_eq!(call.details, DetailColumns::stored(&[true; 8]), "nothing to write");
        // A recording callback (lowest rank) still fills a blank.
        let mut blank = CallState { progress: Some((4, 0)), ..CallState::new() };
        let mut recording = event(CallStatus::Queued, 0);
        recording.details.recording_sid = Some("RE1".into());
        blank.apply(&recording, None, at(3));
        assert_eq!(blank.details.recording_sid.write.as_deref(), Some("RE1"));
        assert_eq!(blank.progress, Some((4, 0)), "and never moves the call");
    }

    #[test]
    fn equal_progress_counts_as_newer_so_the_later_of_two_equal_events_wins() {
        let mut call = CallState::new();
        let mut first = event(CallStatus::Ended, 7);
        first.disconnection_reason = Some("first".into());
        let mut second = event(CallStatus::Ended, 7);
        second.disconnection_reason = Some("second".into());
        call.apply(&first, None, at(1));
        call.apply(&second, None, at(1));
        assert_eq!(call.disconnection_reason.write.as_deref(), Some("second"));
    }
}
