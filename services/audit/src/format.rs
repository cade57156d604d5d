//! The export format (`anshin-audit-export/1`), JSON Lines. Specified for third-party verifiers
//! in `docs/audit-verification.md`; keep the two in step.
//!
//! 1. one `header` line;
//! 2. the entries `first..last` in order, each line the exact canonical bytes that were hashed;
//! 3. the `checkpoint` lines (signed bodies), in increasing tree size;
//! 4. one `proof` line: the subtree hashes left of `first` and, per checkpoint larger than
//!    `last`, right of `last`.

use crate::checkpoint::PublicKeyInfo;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const FORMAT: &str = "anshin-audit-export/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    #[serde(rename = "type")]
    pub kind: String,
    pub format: String,
    pub log: Uuid,
    /// The time range asked for (events whose `time` falls in it, plus everything sealed
    /// between them so the run of entries is contiguous).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// First entry exported and one past the last: the entries are `[first, last)`.
    pub first: u64,
    pub last: u64,
    pub exported_at: DateTime<Utc>,
    /// The keys that signed the checkpoints. A verifier should compare them with a key it got
    /// independently (`anshin audit verify --public-key`), not only trust this line.
    pub keys: Vec<PublicKeyInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointLine {
    #[serde(rename = "type")]
    pub kind: String,
    /// The canonical body exactly as signed.
    pub body: String,
    /// Base64 signature over the UTF-8 bytes of `body`.
    pub signature: String,
    /// Base64 DER RFC 3161 TimeStampToken over SHA-256(`body`), when a TSA was configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeLine {
    pub lo: u64,
    pub hi: u64,
    /// Hex.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RightNodes {
    pub tree_size: u64,
    pub nodes: Vec<NodeLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofLine {
    #[serde(rename = "type")]
    pub kind: String,
    /// Hex leaf hash of entry `first - 1` (what the first exported entry's `prev` must be);
    /// absent when `first` is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    /// The perfect subtrees covering `[0, first)`, left to right.
    pub left: Vec<NodeLine>,
    /// For each checkpoint with `tree_size > last`: the subtrees covering `[last, tree_size)`.
    pub right: Vec<RightNodes>,
}
