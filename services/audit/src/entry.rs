//! A sealed log entry: the event plus its place in the tenant's log (`seq`) and the leaf hash of
//! the entry before it (`prev`), so each entry names its predecessor and a changed, removed,
//! inserted or reordered entry can be located exactly. The canonical bytes of the entry are the
//! Merkle leaf data; they are stored and exported verbatim.

use crate::canonical;
use crate::event::AuditEvent;
use crate::merkle::Hash;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ENTRY_TYPE: &str = "entry";

/// `prev` of the first entry of every log.
pub const GENESIS_PREV: Hash = [0u8; 32];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "type")]
    pub kind: String,
    /// The log (tenant) the entry belongs to: an entry copied into another tenant's log fails.
    pub log: Uuid,
    pub seq: u64,
    /// Hex SHA-256 leaf hash of entry `seq - 1` (zeros for the first).
    pub prev: String,
    pub event: AuditEvent,
}

impl Entry {
    pub fn new(log: Uuid, seq: u64, prev: &Hash, event: AuditEvent) -> Self {
        Self {
            kind: ENTRY_TYPE.into(),
            log,
            seq,
            prev: hex::encode(prev),
            event,
        }
    }

    pub fn encode(&self) -> Result<String, serde_json::Error> {
        canonical::to_string(self)
    }
}

/// Encodes an entry from an event already stored in canonical form, without re-parsing its
/// fields (the sealer's hot path). `event_json` must be a canonical JSON object.
pub fn encode_raw(log: Uuid, seq: u64, prev: &Hash, event_json: &str) -> String {
    // Keys in byte order: event, log, prev, seq, type.
    let mut s = String::with_capacity(event_json.len() + 160);
    s.push_str("{\"event\":");
    s.push_str(event_json);
    s.push_str(",\"log\":\"");
    s.push_str(&log.to_string());
    s.push_str("\",\"prev\":\"");
    s.push_str(&hex::encode(prev));
    s.push_str("\",\"seq\":");
    s.push_str(&seq.to_string());
    s.push_str(",\"type\":\"entry\"}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, Outcome};

    #[test]
    fn raw_encoding_equals_canonical_encoding() {
        let e = AuditEvent::new(
            Uuid::now_v7(),
            Actor::system("test"),
            "x.y",
            Outcome::Success,
        )
        .detail("n", 5)
        .detail("日本語", "値");
        let log = Uuid::now_v7();
        let prev = crate::merkle::leaf_hash(b"p");
        let canonical_event = canonical::to_string(&e).unwrap();
        assert_eq!(
            encode_raw(log, 7, &prev, &canonical_event),
            Entry::new(log, 7, &prev, e).encode().unwrap()
        );
    }
}
