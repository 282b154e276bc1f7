//! Every status the worker writes, as an enum, spelled in SQL here and nowhere else. The
//! migrations' CHECK constraints list the same values; `the_spellings_match_the_schema` in
//! `tests/tests/schema.rs` holds the two together.

/// An enum whose variants are stored as text.
macro_rules! sql_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $sql:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the order the schema lists them.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The value as stored.
            pub const fn as_sql(self) -> &'static str {
                match self {
                    $(Self::$variant => $sql),+
                }
            }

            /// The value read back; None for anything the schema does not allow.
            pub fn from_sql(text: &str) -> Option<Self> {
                match text {
                    $($sql => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

sql_enum! {
    /// What became of an event (`processed_events.outcome`).
    EventOutcome {
        Applied => "applied",
        /// An event type the call model does not use.
        Ignored => "ignored",
        /// It would have crossed into another company's data.
        Refused => "refused",
    }
}

sql_enum! {
    /// How a call found its customer (`calls.customer_link`).
    CustomerLink {
        /// Not looked at yet.
        Pending => "pending",
        /// The caller's number matched a customer.
        ExactPhone => "exact_phone",
        /// A customer was created for the caller's number.
        Created => "created",
        /// The number was withheld.
        Anonymous => "anonymous",
        /// The caller is not a number (a SIP URI, garbage).
        Unparseable => "unparseable",
        /// No event said who called.
        NoNumber => "no_number",
        /// The caller was erased (`customer erase`).
        Erased => "erased",
    }
}

sql_enum! {
    /// Where an appointment stands (`appointments.status`).
    AppointmentStatus {
        Pending => "pending",
        Booked => "booked",
        Cancelled => "cancelled",
        Rescheduled => "rescheduled",
        Rejected => "rejected",
        Failed => "failed",
        /// The caller did not come (Cal.com's no-show mark).
        NoShow => "no_show",
        /// The meeting took place.
        Completed => "completed",
    }
}

sql_enum! {
    /// Where an appointment's Cal.com booking stands (`appointments.calcom_sync_status`).
    SyncStatus {
        /// Waiting for the push.
        Pending => "pending",
        /// A request may have reached Cal.com; look it up before sending again.
        InFlight => "in_flight",
        Synced => "synced",
        Failed => "failed",
        NeedsReview => "needs_review",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_reads_back_as_itself_and_nothing_else_reads() {
        for value in SyncStatus::ALL {
            assert_eq!(SyncStatus::from_sql(value.as_sql()), Some(*value));
        }
        for value in CustomerLink::ALL {
            assert_eq!(CustomerLink::from_sql(value.as_sql()), Some(*value));
        }
        assert_eq!(AppointmentStatus::from_sql("Booked"), None);
        assert_eq!(EventOutcome::from_sql(""), None);
    }
}
