//! The vocabulary every layer shares: how a file arrived ([`Channel`]), what
//! became of it ([`Verdict`], [`FileState`]), where a drill signal came from
//! ([`DrillSource`]), and the exit codes of every command ([`Exit`]). Each
//! is mapped to its database or command-line text here and nowhere else.

use std::fmt;
use std::str::FromStr;

/// A text that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?} (known: {known})")]
pub struct UnknownName {
    pub what: &'static str,
    pub found: String,
    pub known: String,
}

/// Display, FromStr, TryFrom<String> and serde for a type with
/// `as_str` and `parse` (its text in the database and on the command line).
macro_rules! text_impls {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<$ty, UnknownName> {
                $ty::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = UnknownName;
            fn try_from(s: String) -> Result<$ty, UnknownName> {
                $ty::parse(&s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = String::deserialize(d)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Text ↔ value for a closed set of names (database columns, CLI values).
macro_rules! named {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Result<$ty, UnknownName> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        found: s.to_string(),
                        known: [$($text),+].join(", "),
                    }),
                }
            }
        }

        text_impls!($ty);
    };
}

/// How a file arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// `settlegate ingest` by an operator.
    Manual,
    /// A partner's watched inbox folder.
    Watch,
    /// Scheduled pickup from a partner's SFTP server.
    SftpPull,
    /// A partner's upload to settlegate's SFTP server.
    SftpPush,
    /// `settlegate redeliver`: a stored file's bytes taken through the
    /// pipeline again (after a format or configuration fix).
    Redelivery,
}

named!(Channel, "channel", {
    Manual => "manual",
    Watch => "watch",
    SftpPull => "sftp-pull",
    SftpPush => "sftp-push",
    Redelivery => "redelivery",
});

impl Channel {
    /// Whoever hands a file in by this channel learns its verdict from a
    /// receipt file; a manual ingest answers the operator on the terminal.
    pub fn answers_with_receipts(self) -> bool {
        !matches!(self, Channel::Manual | Channel::Redelivery)
    }
}

/// The judge's verdict. The order of the variants is the precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Cannot be decoded or parsed, or control totals disagree. Quarantined.
    Invalid,
    /// A drill/test file. Quarantined, never fed.
    Drill,
    /// Same bytes as an earlier arrival, or same content as a fed file. Refused.
    Duplicate,
    /// Same business key as a fed file, different content. Quarantined.
    Conflict,
    /// Some record keys were already fed from another file. Quarantined.
    Overlap,
    /// Fed into settlement.
    Fed,
}

named!(Verdict, "verdict", {
    Invalid => "invalid",
    Drill => "drill",
    Duplicate => "duplicate",
    Conflict => "conflict",
    Overlap => "overlap",
    Fed => "fed",
});

impl Verdict {
    /// Waiting for an operator (release, supersede, reject).
    pub fn is_quarantine(self) -> bool {
        matches!(
            self,
            Verdict::Invalid | Verdict::Drill | Verdict::Conflict | Verdict::Overlap
        )
    }
}

/// Where a file stands in the ledger: recorded and waiting to be judged,
/// judged, or closed by an operator. One column (`files.verdict`) holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileState {
    /// Staged and recorded, not judged yet (a crash, or judging in progress).
    Received,
    Judged(Verdict),
    /// Was fed; replaced by a conflict file an operator fed instead (its
    /// entries are offset by reversals).
    Superseded,
    /// Closed for good by an operator; never fed.
    Rejected,
}

impl FileState {
    pub const FED: FileState = FileState::Judged(Verdict::Fed);

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Received => "received",
            FileState::Judged(v) => v.as_str(),
            FileState::Superseded => "superseded",
            FileState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Result<FileState, UnknownName> {
        match s {
            "received" => Ok(FileState::Received),
            "superseded" => Ok(FileState::Superseded),
            "rejected" => Ok(FileState::Rejected),
            other => Verdict::parse(other)
                .map(FileState::Judged)
                .map_err(|_| UnknownName {
                    what: "file state",
                    found: other.to_string(),
                    known: FileState::all()
                        .map(FileState::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
        }
    }

    /// Every state, in the order a listing explains them.
    pub fn all() -> impl Iterator<Item = FileState> {
        std::iter::once(FileState::Received)
            .chain(Verdict::ALL.iter().map(|v| FileState::Judged(*v)))
            .chain([FileState::Superseded, FileState::Rejected])
    }

    /// The verdict, once judged (also for superseded: it was fed).
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            FileState::Judged(v) => Some(v),
            _ => None,
        }
    }

    pub fn is(self, v: Verdict) -> bool {
        self == FileState::Judged(v)
    }
}

text_impls!(FileState);

/// What raised a drill signal. A signal from how a file arrived says
/// nothing about another arrival of the same bytes by a production route;
/// one from the content (or its business date) says it of every copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrillSource {
    /// The format's own flag in the file (e.g. a header run mode).
    Content,
    /// The business date lies outside the partner's window around today.
    BusinessDate,
    /// The file name matches one of the partner's drill patterns.
    Name,
    /// Every arrival by this channel is a drill for this partner.
    Channel,
    /// The endpoint or account is a drill/DR site.
    Endpoint,
    /// Received inside an announced drill window.
    Window,
}

named!(DrillSource, "drill source", {
    Content => "content",
    BusinessDate => "business-date",
    Name => "name",
    Channel => "channel",
    Endpoint => "endpoint",
    Window => "window",
});

impl DrillSource {
    /// Raised by how the file arrived, not by what it holds.
    pub fn is_arrival(self) -> bool {
        matches!(
            self,
            DrillSource::Name | DrillSource::Channel | DrillSource::Endpoint | DrillSource::Window
        )
    }
}

/// One drill signal: where it came from and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillSignal {
    pub source: DrillSource,
    pub text: String,
}

impl DrillSignal {
    pub fn new(source: DrillSource, text: impl Into<String>) -> DrillSignal {
        DrillSignal {
            source,
            text: text.into(),
        }
    }
}

impl fmt::Display for DrillSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether a set of signals quarantines a file only for how it arrived.
pub fn drill_by_arrival_only(signals: &[DrillSignal]) -> bool {
    !signals.is_empty() && signals.iter().all(|s| s.source.is_arrival())
}

/// Where an outbound delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Recorded, waiting to go out (or to be collected).
    Queued,
    /// An upload is in progress (or was, when a process died).
    Sending,
    /// In place on the partner's server under its final name.
    Delivered,
    /// Read whole by the partner from `/outbox`.
    Collected,
    /// The last attempt failed (the error says why); tried again.
    Failed,
    /// Failed its outbound format: never sent.
    Invalid,
    /// The same bytes are already a live delivery to this partner: never sent.
    Duplicate,
}

named!(DeliveryState, "delivery state", {
    Queued => "queued",
    Sending => "sending",
    Delivered => "delivered",
    Collected => "collected",
    Failed => "failed",
    Invalid => "invalid",
    Duplicate => "duplicate",
});

/// How an outbound file came to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliverySource {
    /// Dropped into the partner's outbox by the settlement system.
    Outbox,
    /// `settlegate send` by an operator.
    Send,
    /// `settlegate resend`: the same bytes again, on purpose.
    Resend,
}

named!(DeliverySource, "delivery source", {
    Outbox => "outbox",
    Send => "send",
    Resend => "resend",
});

/// How far an upload attempt got: what a delivery found `sending` after a
/// crash is resolved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadProgress {
    /// The final name was checked to be free (or may be replaced).
    Checked,
    /// The bytes are on the partner's side under the temporary name.
    Uploaded,
    /// Renamed to the final name.
    Renamed,
}

named!(UploadProgress, "upload progress", {
    Checked => "checked",
    Uploaded => "uploaded",
    Renamed => "renamed",
});

/// An operator action that may need a second operator's approval
/// (`[operators] four_eyes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverrideAction {
    /// Feed a quarantined drill file after all.
    Release,
    /// Replace a fed file by a conflicting one.
    Supersede,
    /// Close a quarantined file for good.
    Reject,
    /// Take a stored file through the pipeline again.
    Redeliver,
    /// Send a delivered file again.
    Resend,
}

named!(OverrideAction, "action", {
    Release => "release",
    Supersede => "supersede",
    Reject => "reject",
    Redeliver => "redeliver",
    Resend => "resend",
});

impl OverrideAction {
    /// Whether the action names a delivery (else a file).
    pub fn on_delivery(self) -> bool {
        self == OverrideAction::Resend
    }
}

/// Where a four-eyes request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Waiting for a second operator.
    Pending,
    /// Approved by a second operator and carried out.
    Approved,
    /// Approved, but the action was refused (the file moved on meanwhile).
    Failed,
    /// Denied by a second operator.
    Denied,
}

named!(RequestState, "request state", {
    Pending => "pending",
    Approved => "approved",
    Failed => "failed",
    Denied => "denied",
});

/// The exit codes of every command: one table, so a script tells outcomes
/// apart the same way whichever command it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done: valid, fed, delivered, ready.
    Ok = 0,
    /// Any other failure (a file, ledger or disk that cannot be read or
    /// written), with a message and nothing half-written.
    Failure = 1,
    /// Usage or configuration error.
    Usage = 2,
    /// An operator action the current state does not allow; nothing changed.
    Refused = 3,
    /// An SFTP endpoint could not be reached or refused us.
    Endpoint = 4,
    /// The settlement day is not ready.
    NotReady = 5,
    /// Recorded as a request awaiting a second operator's approval.
    Pending = 6,
    Duplicate = 10,
    Drill = 11,
    Conflict = 12,
    Overlap = 13,
    Invalid = 14,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Verdict> for Exit {
    fn from(v: Verdict) -> Exit {
        match v {
            Verdict::Fed => Exit::Ok,
            Verdict::Duplicate => Exit::Duplicate,
            Verdict::Drill => Exit::Drill,
            Verdict::Conflict => Exit::Conflict,
            Verdict::Overlap => Exit::Overlap,
            Verdict::Invalid => Exit::Invalid,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Ok(*c));
        }
        for s in FileState::all() {
            assert_eq!(FileState::parse(s.as_str()), Ok(s));
        }
        for d in DrillSource::ALL {
            assert_eq!(DrillSource::parse(d.as_str()), Ok(*d));
        }
        let e = Channel::parse("fax").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown channel \"fax\" (known: manual, watch, sftp-pull, sftp-push, redelivery)"
        );
        assert!(FileState::parse("lost").is_err());
    }

    #[test]
    fn exit_codes_are_the_documented_table() {
        let table = [
            (Exit::Ok, 0),
            (Exit::Failure, 1),
            (Exit::Usage, 2),
            (Exit::Refused, 3),
            (Exit::Endpoint, 4),
            (Exit::NotReady, 5),
            (Exit::Pending, 6),
            (Exit::Duplicate, 10),
            (Exit::Drill, 11),
            (Exit::Conflict, 12),
            (Exit::Overlap, 13),
            (Exit::Invalid, 14),
        ];
        for (e, code) in table {
            assert_eq!(e.code(), code, "{e:?}");
        }
        assert_eq!(Exit::from(Verdict::Fed), Exit::Ok);
        assert_eq!(Exit::from(Verdict::Invalid), Exit::Invalid);
    }

    #[test]
    fn arrival_only_drills() {
        let s = |src| DrillSignal::new(src, "x");
        assert!(!drill_by_arrival_only(&[]));
        assert!(drill_by_arrival_only(&[s(DrillSource::Endpoint)]));
        assert!(drill_by_arrival_only(&[
            s(DrillSource::Name),
            s(DrillSource::Window)
        ]));
        assert!(!drill_by_arrival_only(&[
            s(DrillSource::Endpoint),
            s(DrillSource::Content)
        ]));
        assert!(!drill_by_arrival_only(&[s(DrillSource::BusinessDate)]));
    }
}
