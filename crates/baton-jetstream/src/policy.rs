//! The orchestrator's fold policy, published where every reader finds it.
//!
//! Operators and the unknown-task rule change what an event does to a task,
//! so every process that folds events (the stall detector, the query API,
//! the CLI, the SDKs, the backtester) must use the policy the orchestrator
//! runs, not a default of its own. The orchestrator writes it to KV
//! `baton-policy` at start; readers get it from there (decision 6).

use async_nats::jetstream::{self, kv};
use baton_core::{Policy, subjects};

/// Why the policy could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot reach KV {bucket}: {message}", bucket = subjects::POLICY_BUCKET)]
    Bucket { message: String },
    #[error("cannot read the published policy: {0}")]
    Read(String),
    #[error("the published policy is invalid: {0}")]
    Invalid(#[from] baton_core::WireError),
    #[error("cannot publish the policy: {0}")]
    Write(String),
}

async fn bucket(js: &jetstream::Context) -> Result<kv::Store, PolicyError> {
    js.get_key_value(subjects::POLICY_BUCKET)
        .await
        .map_err(|e| PolicyError::Bucket {
            message: e.to_string(),
        })
}

/// Publishes the policy the orchestrator runs.
pub async fn publish(js: &jetstream::Context, policy: &Policy) -> Result<(), PolicyError> {
    bucket(js)
        .await?
        .put(subjects::POLICY_KEY, policy.encode_to_vec().into())
        .await
        .map(|_| ())
        .map_err(|e| PolicyError::Write(e.to_string()))
}

/// The published policy; `None` when no orchestrator has published one yet
/// (or the bucket does not exist yet).
pub async fn read(js: &jetstream::Context) -> Result<Option<Policy>, PolicyError> {
    let store = match js.get_key_value(subjects::POLICY_BUCKET).await {
        Ok(store) => store,
        Err(e) if bucket_missing(&e) => return Ok(None),
        Err(e) => {
            return Err(PolicyError::Bucket {
                message: e.to_string(),
            });
        }
    };
    read_from(&store).await
}

/// The published policy from an opened `baton-policy` bucket: one request,
/// for readers that fold often (the SDK keeps the bucket open).
pub async fn read_from(store: &kv::Store) -> Result<Option<Policy>, PolicyError> {
    match store.get(subjects::POLICY_KEY).await {
        Ok(Some(bytes)) => Ok(Some(Policy::decode(&bytes)?)),
        Ok(None) => Ok(None),
        Err(e) => Err(PolicyError::Read(e.to_string())),
    }
}

/// Whether the error says the bucket does not exist (as opposed to the
/// broker not answering, which must not be mistaken for "no policy").
fn bucket_missing(e: &jetstream::context::KeyValueError) -> bool {
    use std::error::Error as _;
    e.kind() == jetstream::context::KeyValueErrorKind::GetBucket
        && e.source()
            .and_then(|s| s.downcast_ref::<jetstream::context::GetStreamError>())
            .is_some_and(|s| {
                matches!(
                    s.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                )
            })
}

/// The published policy, or the default (anyone may revoke and cancel;
/// unknown tasks raise an alert) when none is published.
pub async fn read_or_default(js: &jetstream::Context) -> Result<Policy, PolicyError> {
    Ok(read(js).await?.unwrap_or_default())
}
