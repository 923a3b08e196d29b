//! `baton dlq`: what the services could not use (BATON_DLQ): list the dead
//! letters, show one (why, where from, its headers, its bytes), and re-drive
//! one to the events stream once whatever refused it has been fixed.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use baton_core::{subjects, wire::read_event};
use baton_jetstream::{Retry, publish_durable, read};
use baton_service::deadletter::DeadLetter;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::{
    args::NatsArgs,
    cmd::common::{connect, now},
    output::{Table, ago, print_json},
};

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
    /// Print JSON
    #[arg(long, global = true, env = "BATON_DLQ_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// List dead letters, oldest first
    List {
        /// Show at most this many (the newest)
        #[arg(long, env = "BATON_DLQ_LIMIT", default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter: why, where from, its headers and its bytes (hex)
    Show {
        /// Its BATON_DLQ sequence (from `baton dlq list`)
        seq: u64,
    },
    /// Publish a dead letter's original event again on its subject in
    /// BATON_EVENTS (after fixing what refused it); refused while the event
    /// still does not decode or match its subject, unless --force
    Redrive {
        /// Its BATON_DLQ sequence (from `baton dlq list`)
        seq: u64,
        /// Re-drive even if the event still does not pass the checks
        #[arg(long, env = "BATON_DLQ_FORCE")]
        force: bool,
    },
}

#[derive(Serialize)]
struct DeadLetterJson {
    seq: u64,
    stored_at: String,
    /// The subject token: undecodable, invalid, subject_mismatch, ...
    reason_token: String,
    reason: String,
    subject: String,
    source: String,
    /// The original length, when the payload had to be cut.
    truncated_from: Option<usize>,
    original_msg_id: Option<String>,
    size: usize,
    /// The original headers (without Baton-Dlq-*).
    headers: Vec<(String, String)>,
    /// The payload, hex-encoded (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

impl DeadLetterJson {
    fn from(d: &DeadLetter, with_payload: bool) -> DeadLetterJson {
        DeadLetterJson {
            seq: d.seq,
            stored_at: d.stored_at.to_rfc3339(),
            reason_token: d.reason_token.clone(),
            reason: d.reason.clone(),
            subject: d.subject.clone(),
            source: d.source.clone(),
            truncated_from: d.truncated_from,
            original_msg_id: d.original_msg_id.clone(),
            size: d.payload.len(),
            headers: d.headers.clone(),
            payload_hex: with_payload
                .then(|| d.payload.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }
}

#[derive(Serialize)]
struct RedrivenJson {
    dlq_seq: u64,
    subject: String,
    /// Sequence in BATON_EVENTS.
    seq: u64,
    /// The same dead letter had been re-driven before: stored once.
    duplicate: bool,
}

pub async fn dlq(nats: &NatsArgs, args: &DlqArgs) -> anyhow::Result<ExitCode> {
    let conn = connect(nats).await?;
    conn.require_baton().await?;
    match &args.action {
        DlqAction::List { limit } => {
            let stored =
                read::read_subject(&conn.js, subjects::DLQ_STREAM, subjects::DLQ_ALL, 0, None)
                    .await?;
            let skip = stored.len().saturating_sub(*limit);
            let letters: Vec<DeadLetter> = stored
                .iter()
                .skip(skip)
                .map(DeadLetter::from_stored)
                .collect();
            if args.json {
                print_json(
                    &letters
                        .iter()
                        .map(|d| DeadLetterJson::from(d, false))
                        .collect::<Vec<_>>(),
                );
                return Ok(ExitCode::SUCCESS);
            }
            if letters.is_empty() {
                println!("No dead letters.");
                return Ok(ExitCode::SUCCESS);
            }
            let now = now();
            let mut t = Table::new(&[
                "SEQ", "STORED", "REASON", "SUBJECT", "SOURCE", "SIZE", "WHY",
            ]);
            for d in &letters {
                let mut why: String = d.reason.chars().take(80).collect();
                if d.reason.chars().count() > 80 {
                    why.push('…');
                }
                t.row(vec![
                    d.seq.to_string(),
                    ago(d.stored_at, now),
                    d.reason_token.clone(),
                    d.subject.clone(),
                    d.source.clone(),
                    d.payload.len().to_string(),
                    why,
                ]);
            }
            t.print();
            Ok(ExitCode::SUCCESS)
        }
        DlqAction::Show { seq } => {
            let d = get(&conn.js, *seq).await?;
            if args.json {
                print_json(&DeadLetterJson::from(&d, true));
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "dead letter {} (stored {})",
                d.seq,
                d.stored_at.to_rfc3339()
            );
            println!("  reason    {}: {}", d.reason_token, d.reason);
            println!("  subject   {}", d.subject);
            println!("  source    {}", d.source);
            if let Some(id) = &d.original_msg_id {
                println!("  msg id    {id}");
            }
            match d.truncated_from {
                Some(n) => println!("  payload   {} bytes (cut from {n})", d.payload.len()),
                None => println!("  payload   {} bytes", d.payload.len()),
            }
            if !d.headers.is_empty() {
                println!("  headers");
                for (k, v) in &d.headers {
                    println!("    {k}: {v}");
                }
            }
            println!();
            for line in hex_view(&d.payload) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqAction::Redrive { seq, force } => {
            let d = get(&conn.js, *seq).await?;
            if subjects::parse_event(&d.subject).is_none() {
                bail!(
                    "dead letter {seq} came from {}, not an event subject (baton.evt.<task>.<agent>): nothing to re-drive",
                    d.subject
                );
            }
            if let Some(n) = d.truncated_from {
                bail!(
                    "dead letter {seq} holds only {} of the event's {n} bytes: it cannot be re-driven",
                    d.payload.len()
                );
            }
            let check = read_event(&d.subject, &d.payload).map_err(|e| e.to_string());
            if let Err(why) = check
                && !force
            {
                eprintln!(
                    "refused: dead letter {seq} would be refused again ({why}); nothing was published (--force re-drives it anyway)"
                );
                return Ok(ExitCode::from(2));
            }
            // A re-drive has its own id: the original's is remembered by
            // the events stream, and re-driving this dead letter twice
            // stores it once.
            let msg_id = format!("baton-redrive.{}.{seq}", subjects::DLQ_STREAM);
            let ack = publish_durable(
                &conn.js,
                &d.subject,
                d.payload.clone(),
                &msg_id,
                None,
                Retry::default(),
            )
            .await
            .with_context(|| format!("re-driving dead letter {seq} to {}", d.subject))?;
            let out = RedrivenJson {
                dlq_seq: *seq,
                subject: d.subject.clone(),
                seq: ack.sequence,
                duplicate: ack.duplicate,
            };
            if args.json {
                print_json(&out);
            } else if ack.duplicate {
                println!(
                    "Dead letter {seq} was re-driven before: stored once, at seq {} of {}.",
                    ack.sequence,
                    subjects::EVENTS_STREAM
                );
            } else {
                println!(
                    "Re-drove dead letter {seq} to {} at seq {} of {}.",
                    d.subject,
                    ack.sequence,
                    subjects::EVENTS_STREAM
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Dead letter `seq`, or a clear error.
async fn get(js: &async_nats::jetstream::Context, seq: u64) -> anyhow::Result<DeadLetter> {
    let found =
        read::read_range_direct(js, subjects::DLQ_STREAM, subjects::DLQ_ALL, seq, seq).await?;
    match found.first() {
        Some(s) if s.seq == seq => Ok(DeadLetter::from_stored(s)),
        _ => bail!(
            "no dead letter at sequence {seq} of {} (see `baton dlq list`)",
            subjects::DLQ_STREAM
        ),
    }
}

/// `xxd`-style lines: offset, 16 bytes in hex, the printable ones as text.
fn hex_view(bytes: &[u8]) -> Vec<String> {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let text: String = chunk
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{:08x}  {:<47}  {text}", i * 16, hex.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::hex_view;

    #[test]
    fn hex_view_shows_offsets_bytes_and_text() {
        let lines = hex_view(b"\x00\x01hello, dead letter!");
        assert_eq!(
            lines,
            vec![
                "00000000  00 01 68 65 6c 6c 6f 2c 20 64 65 61 64 20 6c 65  ..hello, dead le"
                    .to_string(),
                "00000010  74 74 65 72 21                                   tter!".to_string(),
            ]
        );
    }
}
