//! Validated identifiers.
//!
//! Task, agent and workflow ids are NATS subject tokens, so they are refused
//! before anything is published unless they match `[A-Za-z0-9_-]{1,128}` and
//! start with a letter or digit (a leading `_` is reserved: `_system` is the
//! task token of alerts about Baton itself). Stage names follow the same rule
//! so they can be used in filters, rules files and subjects alike.

use std::{fmt, sync::Arc};

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct IdError {
    /// Which kind of id ("task id", "agent id", ...).
    pub what: &'static str,
    /// The refused value (truncated to 160 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: IdErrorReason,
}

/// What is wrong with a refused id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdErrorReason {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("character {0:?} is not allowed (use A-Z, a-z, 0-9, '_' and '-')")]
    BadChar(char),
    #[error("it must start with a letter or digit")]
    BadStart,
}

fn validate(what: &'static str, value: &str) -> Result<(), IdError> {
    let fail = |reason| IdError {
        what,
        value: value.chars().take(160).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(fail(IdErrorReason::Empty));
    }
    if value.len() > MAX_ID_LEN {
        return Err(fail(IdErrorReason::TooLong));
    }
    // Bytes, not chars: this runs for every id of every event. The first
    // byte that is not allowed starts the character to report.
    if let Some(at) = value
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        let bad = value[at..].chars().next().unwrap_or('\u{fffd}');
        return Err(fail(IdErrorReason::BadChar(bad)));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(fail(IdErrorReason::BadStart));
    }
    Ok(())
}

/// Ids up to this many bytes are stored inline: no allocation to make one,
/// and comparing one (as a hash-map key) reads no other cache line.
const INLINE_LEN: usize = 22;

/// An id's bytes: inline when short (most ids), shared on the heap when not.
/// 24 bytes either way.
#[derive(Clone)]
enum IdRepr {
    Inline { len: u8, bytes: [u8; INLINE_LEN] },
    Shared(Arc<str>),
}

impl IdRepr {
    fn new(value: &str) -> IdRepr {
        match u8::try_from(value.len()) {
            Ok(len) if value.len() <= INLINE_LEN => {
                let mut bytes = [0; INLINE_LEN];
                bytes[..value.len()].copy_from_slice(value.as_bytes());
                IdRepr::Inline { len, bytes }
            }
            _ => IdRepr::Shared(Arc::from(value)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IdRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            IdRepr::Shared(s) => s.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Inline bytes were copied from a validated (ASCII) `str`.
            IdRepr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            IdRepr::Shared(s) => s,
        }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(IdRepr);

        impl $name {
            /// Validates `value` as this kind of id.
            pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
                let value = value.as_ref();
                validate($what, value)?;
                Ok(Self(IdRepr::new(value)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.as_bytes() == other.0.as_bytes()
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.0.as_bytes().cmp(other.0.as_bytes())
            }
        }

        // As `str` hashes, so maps keyed by id can be searched with a `&str`.
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A task: the unit that has at most one owner.
    TaskId,
    "task id"
);
id_type!(
    /// An agent (or an operator acting under an agent id).
    AgentId,
    "agent id"
);
id_type!(
    /// A workflow: tasks that share one decision record.
    WorkflowId,
    "workflow id"
);
id_type!(
    /// A stage of a workflow ("draft", "review"); a handoff may target a stage.
    StageName,
    "stage"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_subject_tokens() {
        for ok in ["t1", "A", "draft-42", "a_b-C9", &"x".repeat(MAX_ID_LEN)] {
            assert_eq!(TaskId::new(ok).map(|t| t.to_string()), Ok(ok.to_string()));
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        let cases = [
            ("", IdErrorReason::Empty),
            ("a.b", IdErrorReason::BadChar('.')),
            ("a b", IdErrorReason::BadChar(' ')),
            ("a*", IdErrorReason::BadChar('*')),
            ("a>", IdErrorReason::BadChar('>')),
            ("é", IdErrorReason::BadChar('é')),
            ("_system", IdErrorReason::BadStart),
            ("-x", IdErrorReason::BadStart),
        ];
        for (value, reason) in cases {
            let err = AgentId::new(value).expect_err(value);
            assert_eq!(err.reason, reason, "{value:?}");
            assert_eq!(err.what, "agent id");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            WorkflowId::new(&long).expect_err("too long").reason,
            IdErrorReason::TooLong
        );
    }

    #[test]
    fn short_and_long_ids_behave_alike() {
        use std::collections::{BTreeSet, HashMap};
        let short = "t-1";
        let edge = "x".repeat(INLINE_LEN);
        let long = "y".repeat(INLINE_LEN + 1);
        let ids: Vec<TaskId> = [short, &edge, &long, "a", "z9"]
            .iter()
            .map(|s| TaskId::new(s).expect("valid"))
            .collect();
        let mut map = HashMap::new();
        for id in &ids {
            assert_eq!(id.as_str().len(), id.to_string().len());
            map.insert(id.clone(), id.as_str().to_string());
        }
        for id in &ids {
            // Looked up by `&str` (Borrow) and by a fresh id alike.
            assert_eq!(map.get(id.as_str()), Some(&id.as_str().to_string()));
            assert_eq!(
                map.get(&TaskId::new(id.as_str()).expect("valid")),
                map.get(id.as_str())
            );
        }
        let sorted: Vec<&str> = ids
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(TaskId::as_str)
            .collect();
        let mut expected: Vec<&str> = ids.iter().map(TaskId::as_str).collect();
        expected.sort_unstable();
        assert_eq!(sorted, expected, "ordered as strings");
        assert_eq!(std::mem::size_of::<TaskId>(), 24);
        assert_eq!(std::mem::size_of::<Option<TaskId>>(), 24);
    }

    #[test]
    fn error_message_names_the_value_and_the_rule() {
        let err = TaskId::new("my.task").expect_err("dot");
        assert_eq!(
            err.to_string(),
            "invalid task id \"my.task\": character '.' is not allowed (use A-Z, a-z, 0-9, '_' and '-')"
        );
    }
}
