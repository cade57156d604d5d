//! Trusted time (guideline 17 ③: "アクセスログの記録に用いる時刻情報は、信頼できるものを利用すること").
//!
//! Two independent pieces of evidence about the time written into the audit trail:
//!
//! 1. **Clock offset** ([`ntp`]). A background task ([`run_clock_monitor`]) asks the configured
//!    NTP server (SNTP, RFC 4330 / RFC 5905 client mode) how far the host clock is from it, every
//!    `audit.ntp_check_interval_secs`, and publishes the result with [`crate::clock::set`]: every
//!    event and checkpoint then carries `clock: {source: "ntp:<server>", offset_ms}`. When the
//!    server does not answer, or none is configured, the stamp says `source: "system"` with
//!    `offset_ms: null` ("unknown") rather than repeat a stale figure. The sign: `offset_ms` is
//!    the reference clock minus the host clock, so reference time ≈ recorded time + offset.
//! 2. **RFC 3161 timestamp tokens** ([`tsp`], [`store`]). With `audit.tsa_url` set, a worker
//!    ([`run_timestamper`]) asks the time-stamping authority for a token over SHA-256 of each
//!    checkpoint's signed body and keeps it in `audit_checkpoint_timestamps`; exports carry it
//!    as `timestamp_token`, and anyone can check it with [`verify_token`] or
//!    `openssl ts -verify -token_in`. The token proves, on the TSA's word and signature, that the
//!    checkpoint (and, through the Merkle log, every entry it covers) existed at `genTime`.

pub mod migration;
pub mod ntp;
pub mod store;
pub mod tsp;

pub use migration::{grants, migrations};
pub use ntp::{check_clock, measure, measure_best, run_clock_monitor, Measurement};
pub use store::{run_timestamper, timestamp_pending, tokens_for, TimestampReport};
pub use tsp::{verify_token, SignatureCheck, Stamp, TokenInfo, TsaClient};

/// What can go wrong asking a time server or a TSA, or checking a token.
#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error("invalid time server address '{0}'")]
    Address(String),
    #[error("cannot reach the time server {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("no answer from the time server {server} within {timeout_ms} ms")]
    Timeout { server: String, timeout_ms: u64 },
    /// Stratum 0: the server refuses service (RFC 5905 7.4), e.g. `RATE` or `DENY`.
    #[error("the time server {server} refused service (kiss-o'-death code {code})")]
    KissOfDeath { server: String, code: String },
    #[error("the time server {server} is not synchronized")]
    Unsynchronized { server: String },
    #[error("malformed answer from the time server {server}: {reason}")]
    BadReply { server: String, reason: String },
    /// Transport or HTTP failure talking to the TSA.
    #[error("time-stamping authority {url}: {reason}")]
    Tsa { url: String, reason: String },
    /// The TSA answered with a PKIStatus other than granted / grantedWithMods.
    #[error("the time-stamping authority refused the request: {status}{detail}")]
    Rejected { status: String, detail: String },
    #[error("malformed timestamp: {0}")]
    Malformed(String),
    /// The token is well formed but is not for this body (imprint), this request (nonce), or is
    /// otherwise inconsistent.
    #[error("the timestamp token does not match: {0}")]
    Mismatch(String),
    #[error("the timestamp token's signature does not verify: {0}")]
    Signature(String),
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
}

impl From<der::Error> for TimeError {
    fn from(e: der::Error) -> Self {
        TimeError::Malformed(e.to_string())
    }
}
