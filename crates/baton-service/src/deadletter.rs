//! The dead-letter record of an event that could not be used: original bytes
//! and headers, plus why, where it came from, and when.

use async_nats::{HeaderMap, HeaderValue};
use baton_core::subjects;
use bytes::Bytes;

use crate::outbox::Outgoing;

/// Why it could not be used, in words.
pub const REASON_HEADER: &str = "Baton-Dlq-Reason";
/// The subject it was published on.
pub const SUBJECT_HEADER: &str = "Baton-Dlq-Subject";
/// Its stream and sequence (`BATON_EVENTS:42`).
pub const SOURCE_HEADER: &str = "Baton-Dlq-Source";
/// Set when the payload had to be cut to fit the broker's max payload; the
/// value is the original length.
pub const TRUNCATED_HEADER: &str = "Baton-Dlq-Truncated";

/// A message that could not be used, as delivered.
#[derive(Debug, Clone, Copy)]
pub struct Rejected<'a> {
    pub stream: &'a str,
    pub seq: u64,
    pub subject: &'a str,
    pub payload: &'a Bytes,
    pub headers: Option<&'a HeaderMap>,
}

/// Builds the dead letter for a rejected message. `reason_token` is the
/// subject token (`undecodable`, `invalid`, `subject_mismatch`), `reason`
/// the explanation; the payload is cut if it would exceed `max_payload`
/// with the headers.
pub fn dead_letter(
    rejected: Rejected<'_>,
    reason_token: &str,
    reason: &str,
    max_payload: usize,
) -> Outgoing {
    let Rejected {
        stream,
        seq,
        subject,
        payload,
        headers: original_headers,
    } = rejected;
    let mut headers = original_headers.cloned().unwrap_or_default();
    // The original Nats-Msg-Id would make the DLQ stream drop this as a
    // duplicate of nothing in particular; keep it under another name.
    if let Some(id) = headers.get(async_nats::header::NATS_MESSAGE_ID).cloned() {
        headers.insert(MSG_ID_HEADER, id);
    }
    let mut cleaned = HeaderMap::new();
    for (name, values) in headers.iter() {
        let name_str: &str = name.as_ref();
        if name_str.eq_ignore_ascii_case(async_nats::header::NATS_MESSAGE_ID.as_ref()) {
            continue;
        }
        for v in values {
            cleaned.append(name.clone(), v.clone());
        }
    }
    let reason_value: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(1024)
        .collect();
    cleaned.insert(REASON_HEADER, HeaderValue::from(reason_value.as_str()));
    cleaned.insert(SUBJECT_HEADER, HeaderValue::from(subject));
    cleaned.insert(
        SOURCE_HEADER,
        HeaderValue::from(format!("{stream}:{seq}").as_str()),
    );
    let room = max_payload.saturating_sub(8 * 1024);
    let body = if payload.len() > room {
        cleaned.insert(
            TRUNCATED_HEADER,
            HeaderValue::from(payload.len().to_string().as_str()),
        );
        payload.slice(..room)
    } else {
        payload.clone()
    };
    Outgoing::new(subjects::dlq(reason_token), body)
        .with_headers(cleaned)
        .with_msg_id(format!("dlq.{stream}.{seq}"))
}

/// A dead letter read back from `BATON_DLQ`: what [`dead_letter`] stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in `BATON_DLQ`.
    pub seq: u64,
    pub stored_at: baton_core::Time,
    /// The reason's subject token (`undecodable`, `invalid`, ...).
    pub reason_token: String,
    /// Why, in words (`Baton-Dlq-Reason`).
    pub reason: String,
    /// The subject the original was published on (`Baton-Dlq-Subject`).
    pub subject: String,
    /// Its stream and sequence (`Baton-Dlq-Source`).
    pub source: String,
    /// The original length, when the payload was cut to fit.
    pub truncated_from: Option<usize>,
    /// The original `Nats-Msg-Id`, if it had one.
    pub original_msg_id: Option<String>,
    /// The original's other headers, in order.
    pub headers: Vec<(String, String)>,
    /// The original bytes (possibly cut, see `truncated_from`).
    pub payload: Bytes,
}

/// The header under which the original `Nats-Msg-Id` is kept.
pub const MSG_ID_HEADER: &str = "Baton-Dlq-Msg-Id";

impl DeadLetter {
    /// Reads a stored dead letter; missing headers read as empty.
    pub fn from_stored(stored: &baton_jetstream::read::Stored) -> DeadLetter {
        let get = |name: &str| {
            stored
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let mut headers = Vec::new();
        if let Some(h) = &stored.headers {
            for (name, values) in h.iter() {
                let name: &str = name.as_ref();
                if name.starts_with("Baton-Dlq-") {
                    continue;
                }
                for v in values {
                    headers.push((name.to_string(), v.as_str().to_string()));
                }
            }
            headers.sort();
        }
        DeadLetter {
            seq: stored.seq,
            stored_at: stored.stored_at,
            reason_token: stored
                .subject
                .strip_prefix("baton.dlq.")
                .unwrap_or(&stored.subject)
                .to_string(),
            reason: get(REASON_HEADER).unwrap_or_default(),
            subject: get(SUBJECT_HEADER).unwrap_or_default(),
            source: get(SOURCE_HEADER).unwrap_or_default(),
            truncated_from: get(TRUNCATED_HEADER).and_then(|n| n.parse().ok()),
            original_msg_id: get(MSG_ID_HEADER),
            headers,
            payload: stored.payload.clone(),
        }
    }
}
