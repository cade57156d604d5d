//! Writes an export (`anshin-audit-export/1`, see [`crate::format`] and
//! `docs/audit-verification.md`) from what the store holds: the exact entry lines, the leaf
//! hashes of the tree, the signed checkpoints and the public keys. Pure: no database, no clock;
//! the caller loads the rows and chooses the checkpoints with [`select_checkpoints`].

use crate::checkpoint::PublicKeyInfo;
use crate::format::{CheckpointLine, Header, NodeLine, ProofLine, RightNodes, FORMAT};
use crate::merkle::{range_nodes, Frontier, Hash};
use crate::AuditError;
use chrono::{DateTime, Utc};
use std::io::Write;
use uuid::Uuid;

/// A stored checkpoint as it goes into an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub tree_size: u64,
    /// The canonical body exactly as signed.
    pub body: String,
    /// Base64 signature over the UTF-8 bytes of `body`.
    pub signature: String,
    /// Base64 DER RFC 3161 token, when a time-stamping authority was configured.
    pub timestamp_token: Option<String>,
}

/// Everything an export holds besides the entry lines.
#[derive(Debug, Clone, Copy)]
pub struct ExportParts<'a> {
    pub log: Uuid,
    /// The time range asked for (informational: see the header's doc).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The entries exported are `[first, last)`.
    pub first: u64,
    pub last: u64,
    pub exported_at: DateTime<Utc>,
    /// Leaf hashes of the log from seq 0, at least up to the largest checkpoint included.
    pub leaves: &'a [Hash],
    /// The checkpoints to include, in strictly increasing tree size (see
    /// [`select_checkpoints`]). The largest must cover `last`; none may be smaller than `first`.
    pub checkpoints: &'a [CheckpointRow],
    /// The keys that signed them.
    pub keys: &'a [PublicKeyInfo],
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot assemble the export: {0}")]
    Invalid(String),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode the export: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<AssembleError> for AuditError {
    fn from(e: AssembleError) -> Self {
        match e {
            AssembleError::Encode(e) => AuditError::Encode(e),
            other => AuditError::Invalid(other.to_string()),
        }
    }
}

/// Which of a log's checkpoints an export of the entries `[first, last)` includes, given the
/// tree sizes of all the log's checkpoints in increasing order: for every exported entry the
/// first checkpoint that covers it (which proves when it was sealed), plus the latest. Returns
/// indices into `sizes`, increasing.
///
/// Checkpoint `k` is the first to cover the entries `[sizes[k-1], sizes[k])`; it is included
/// when that range meets `[first, last)`. So a store can load just the checkpoints with
/// `first < tree_size` up to the first with `tree_size >= last`, and the latest.
pub fn select_checkpoints(sizes: &[u64], first: u64, last: u64) -> Vec<usize> {
    let mut out = Vec::new();
    let mut below = 0u64;
    for (k, &size) in sizes.iter().enumerate() {
        if below.max(first) < size.min(last) {
            out.push(k);
        }
        below = size;
    }
    if let Some(latest) = sizes.len().checked_sub(1) {
        if out.last() != Some(&latest) {
            out.push(latest);
        }
    }
    out
}

/// [`select_checkpoints`] over rows: the rows to pass as [`ExportParts::checkpoints`].
pub fn select_rows(rows: &[CheckpointRow], first: u64, last: u64) -> Vec<CheckpointRow> {
    let sizes: Vec<u64> = rows.iter().map(|r| r.tree_size).collect();
    select_checkpoints(&sizes, first, last)
        .into_iter()
        .filter_map(|i| rows.get(i).cloned())
        .collect()
}

fn node_line(lo: u64, hi: u64, hash: &Hash) -> NodeLine {
    NodeLine {
        lo,
        hi,
        hash: hex::encode(hash),
    }
}

/// The proof line of an export: `prev_hash`, the subtrees left of `first` and, for each
/// checkpoint larger than `last`, those right of `last`.
pub fn proof_line(
    leaves: &[Hash],
    first: u64,
    last: u64,
    sizes: impl IntoIterator<Item = u64>,
) -> Result<ProofLine, AssembleError> {
    let need = |n: u64| -> Result<(), AssembleError> {
        if (leaves.len() as u64) < n {
            return Err(AssembleError::Invalid(format!(
                "{n} leaf hashes are needed, {} given",
                leaves.len()
            )));
        }
        Ok(())
    };
    need(last)?;
    // The aligned decomposition of [0, first): the frontier of a tree of `first` leaves.
    let mut frontier = Frontier::default();
    for h in &leaves[..first as usize] {
        frontier.push(*h);
    }
    let left = frontier
        .ranges()
        .iter()
        .map(|(lo, hi, h)| node_line(*lo, *hi, h))
        .collect();
    let mut right = Vec::new();
    for size in sizes {
        if size <= last {
            continue;
        }
        need(size)?;
        let nodes = range_nodes(leaves, first, last, size)
            .into_iter()
            .filter(|n| n.lo >= last)
            .map(|n| node_line(n.lo, n.hi, &n.hash))
            .collect();
        right.push(RightNodes {
            tree_size: size,
            nodes,
        });
    }
    Ok(ProofLine {
        kind: "proof".into(),
        prev_hash: first
            .checked_sub(1)
            .map(|i| hex::encode(leaves[i as usize])),
        left,
        right,
    })
}

/// Writes an export as JSON Lines: the header, the entry lines `[first, last)` exactly as
/// given (they must be the bytes that were hashed), the checkpoints and the proof line.
/// `entries` must yield exactly `last - first` lines. Buffers internally.
pub fn write_export<W, I, S>(
    out: W,
    parts: &ExportParts<'_>,
    entries: I,
) -> Result<(), AssembleError>
where
    W: Write,
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let ExportParts {
        log,
        from,
        to,
        first,
        last,
        exported_at,
        leaves,
        checkpoints,
        keys,
    } = *parts;
    let invalid = |m: String| Err(AssembleError::Invalid(m));
    if first > last {
        return invalid(format!("first ({first}) is after last ({last})"));
    }
    let Some(latest) = checkpoints.last() else {
        return invalid("an export needs at least one checkpoint".into());
    };
    if latest.tree_size < last {
        return invalid(format!(
            "the latest checkpoint (tree size {}) does not cover the last entry ({})",
            latest.tree_size,
            last - 1
        ));
    }
    for w in checkpoints.windows(2) {
        if w[0].tree_size >= w[1].tree_size {
            return invalid("checkpoints must be in strictly increasing tree size".into());
        }
    }
    if let Some(c) = checkpoints.iter().find(|c| c.tree_size < first.max(1)) {
        return invalid(format!(
            "a checkpoint of tree size {} cannot be verified from an export starting at {first}",
            c.tree_size
        ));
    }
    let proof = proof_line(leaves, first, last, checkpoints.iter().map(|c| c.tree_size))?;

    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    let header = Header {
        kind: "header".into(),
        format: FORMAT.into(),
        log,
        from,
        to,
        first,
        last,
        exported_at,
        keys: keys.to_vec(),
    };
    serde_json::to_writer(&mut w, &header)?;
    w.write_all(b"\n")?;
    let mut n = 0u64;
    for e in entries {
        let e = e.as_ref();
        if e.contains('\n') {
            return invalid(format!("entry {} contains a line break", first + n));
        }
        n += 1;
        if n > last - first {
            return invalid(format!("more than {} entries given", last - first));
        }
        w.write_all(e.as_bytes())?;
        w.write_all(b"\n")?;
    }
    if n != last - first {
        return invalid(format!("{} entries expected, {n} given", last - first));
    }
    for c in checkpoints {
        let line = CheckpointLine {
            kind: "checkpoint".into(),
            body: c.body.clone(),
            signature: c.signature.clone(),
            timestamp_token: c.timestamp_token.clone(),
        };
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    serde_json::to_writer(&mut w, &proof)?;
    w.write_all(b"\n")?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_the_first_covering_checkpoint_of_each_entry_and_the_latest() {
        let sizes = [5, 12, 15, 25, 26, 34, 40];
        // Entries 9..23: 12 covers 9..11, 15 covers 12..14, 25 covers 15..22; 40 is the latest.
        assert_eq!(select_checkpoints(&sizes, 9, 23), vec![1, 2, 3, 6]);
        assert_eq!(select_checkpoints(&sizes, 0, 5), vec![0, 6]);
        assert_eq!(select_checkpoints(&sizes, 0, 40), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(select_checkpoints(&sizes, 34, 40), vec![6]);
        assert_eq!(
            select_checkpoints(&sizes, 12, 12),
            vec![6],
            "empty range: latest only"
        );
        assert!(select_checkpoints(&[], 0, 0).is_empty());
    }

    #[test]
    fn proof_line_left_is_the_decomposition_of_first() {
        let leaves: Vec<Hash> = (0..40u8).map(|i| crate::merkle::leaf_hash(&[i])).collect();
        let p = proof_line(&leaves, 13, 20, [15, 20, 33]).unwrap();
        let ranges: Vec<(u64, u64)> = p.left.iter().map(|n| (n.lo, n.hi)).collect();
        assert_eq!(ranges, vec![(0, 8), (8, 12), (12, 13)]);
        assert_eq!(p.prev_hash, Some(hex::encode(leaves[12])));
        assert_eq!(p.right.len(), 1);
        assert_eq!(p.right[0].tree_size, 33);
        assert!(p.right[0].nodes.iter().all(|n| n.lo >= 20 && n.hi <= 33));
        assert!(proof_line(&leaves, 0, 41, []).is_err());
    }
}
