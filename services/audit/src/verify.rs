//! Offline verification of an export (`anshin-audit-export/1`, `docs/audit-verification.md`):
//! everything is recomputed from the file and the public keys; nothing is asked of the server.
//!
//! Entry lines are read for the four fields the checks need (`type`, `log`, `seq`, `prev`; the
//! event is only checked to be valid JSON, see [`line_fields`]) and their raw bytes hashed, by
//! all threads in small tasks, while the next chunk is read. The sequential checks (contiguous
//! `seq`, the `prev` chain) run over compact records with a window of the entries that follow,
//! so that a failure is blamed on the right entry; they also hash aligned blocks of leaves, so
//! that the checkpoint roots need few hashes once the proof line (the last) is read.
//!
//! The first failure is reported ([`VerifyError`]: what is wrong, the line and the entry's
//! `seq`); on success the [`VerifyReport`] lists the checkpoints and which entries each one
//! first sealed.

use crate::checkpoint::{
    key_id_of, verify_signature, CheckpointBody, PublicKeyInfo, CHECKPOINT_TYPE,
};
use crate::entry::{ENTRY_TYPE, GENESIS_PREV};
use crate::event::ClockStamp;
use crate::format::{CheckpointLine, Header, NodeLine, ProofLine, FORMAT};
use crate::merkle::{leaf_hash, node_hash, root_with_right, Frontier, Hash, RangeNode};
use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::VecDeque;
use std::fmt;
use std::io::BufRead;
use uuid::Uuid;

/// Lines parsed per chunk (one chunk is parsed while the next one is read).
const CHUNK_LINES: usize = 8192;
const CHUNK_BYTES: usize = 8 << 20;
/// Entries kept ahead of the one being checked, to tell an altered entry from its neighbour
/// and a reordering from a gap.
const LOOKAHEAD: usize = 4096;

/// What is wrong with an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The export could not be read.
    Io,
    /// A line is not what the format says it must be.
    Malformed,
    /// The header line is missing or wrong.
    Header,
    /// An entry of another log.
    WrongLog,
    /// One or more entries are missing (a gap in `seq`).
    Missing,
    /// An entry that was not sealed at that place: a repeated `seq`, one outside the range,
    /// one after the checkpoint lines.
    Inserted,
    /// Entries out of order.
    Reordered,
    /// An entry's bytes differ from what was sealed.
    Altered,
    /// Entries that no checkpoint covers: they were never sealed.
    Unsealed,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A checkpoint is signed by a key that is not trusted.
    UnknownKey,
    /// A checkpoint is out of place (another log, sizes not increasing, too small).
    Checkpoint,
    /// The proof line is wrong (its hashes do not lead to the signed roots).
    Proof,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Io => "cannot read the export",
            Failure::Malformed => "malformed line",
            Failure::Header => "bad header",
            Failure::WrongLog => "entry of another log",
            Failure::Missing => "missing entry",
            Failure::Inserted => "inserted entry",
            Failure::Reordered => "reordered entries",
            Failure::Altered => "altered entry",
            Failure::Unsealed => "unsealed entry",
            Failure::BadSignature => "bad checkpoint signature",
            Failure::UnknownKey => "checkpoint signed by an unknown key",
            Failure::Checkpoint => "bad checkpoint",
            Failure::Proof => "bad proof",
        }
    }
}

/// A failed verification: what is wrong and the first offending line (1-based) and entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub failure: Failure,
    pub line: Option<u64>,
    /// The `seq` of the offending entry (or, for a missing one, the first `seq` missing).
    pub seq: Option<u64>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.failure.as_str())?;
        match (self.seq, self.line) {
            (Some(s), Some(l)) => write!(f, " (entry seq {s}, line {l})")?,
            (Some(s), None) => write!(f, " (entry seq {s})")?,
            (None, Some(l)) => write!(f, " (line {l})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for VerifyError {}

fn fail(failure: Failure, line: Option<u64>, seq: Option<u64>, message: String) -> VerifyError {
    VerifyError {
        failure,
        line,
        seq,
        message,
    }
}

/// Whose keys the checkpoint signatures were checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTrust {
    /// Keys the verifier was given (obtained independently of the export).
    Supplied(Vec<String>),
    /// The keys listed in the export's own header: proves integrity relative to those keys
    /// only; compare their ids with a key obtained another way.
    FromExport(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    pub line: u64,
    pub tree_size: u64,
    pub root_hash: String,
    pub time: DateTime<Utc>,
    pub clock: ClockStamp,
    pub key_id: String,
    /// An RFC 3161 token is attached (this verifier does not check it; see the spec).
    pub timestamp_token: bool,
    /// The exported entries `[lo, hi)` this checkpoint is the first in the export to cover:
    /// they were sealed no later than its `time`.
    pub first_seals: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub log: Uuid,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub exported_at: DateTime<Utc>,
    /// The entries verified are `[first, last)`.
    pub first: u64,
    pub last: u64,
    pub entries: u64,
    pub checkpoints: Vec<CheckpointReport>,
    pub keys: KeyTrust,
}

impl VerifyReport {
    /// The first checkpoint of the export that covers entry `seq`.
    pub fn sealed_by(&self, seq: u64) -> Option<&CheckpointReport> {
        if seq < self.first || seq >= self.last {
            return None;
        }
        self.checkpoints.iter().find(|c| c.tree_size > seq)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "OK: export of log {} ({FORMAT})", self.log)?;
        let range = |t: Option<DateTime<Utc>>| t.map_or("-".to_string(), |t| t.to_rfc3339());
        writeln!(
            f,
            "time range asked: {} .. {}; exported at {}",
            range(self.from),
            range(self.to),
            self.exported_at.to_rfc3339()
        )?;
        if self.entries == 0 {
            writeln!(f, "entries verified: 0")?;
        } else {
            writeln!(
                f,
                "entries verified: {} (seq {}..={}), contiguous, chained and covered by signed checkpoints",
                self.entries,
                self.first,
                self.last - 1
            )?;
        }
        match &self.keys {
            KeyTrust::Supplied(ids) => writeln!(
                f,
                "signatures checked against the trusted key(s): {}",
                ids.join(", ")
            )?,
            KeyTrust::FromExport(ids) => writeln!(
                f,
                "signatures checked against the key(s) listed in the export itself: {} \
                 (no trusted key given: compare these ids with a key obtained independently)",
                ids.join(", ")
            )?,
        }
        writeln!(f, "checkpoints:")?;
        for c in &self.checkpoints {
            let offset = c
                .clock
                .offset_ms
                .map_or("offset unknown".to_string(), |o| format!("offset {o} ms"));
            write!(
                f,
                "  tree size {:>10}  {}  clock {} ({offset})  key {}",
                c.tree_size,
                c.time.to_rfc3339(),
                c.clock.source,
                c.key_id
            )?;
            match c.first_seals {
                Some((lo, hi)) => write!(f, "  first seals seq {lo}..={}", hi - 1)?,
                None => write!(f, "  (covers no entry not already covered)")?,
            }
            if c.timestamp_token {
                write!(f, "  [RFC 3161 token attached, not checked here]")?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "each entry was sealed no later than the time of the first checkpoint that seals it"
        )
    }
}

/// A trusted Ed25519 key from its base64 raw public key (as `--public-key` takes it).
pub fn trusted_ed25519_key(b64: &str) -> Result<PublicKeyInfo, String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "the public key is not valid base64".to_string())?;
    if raw.len() != 32 {
        return Err("an Ed25519 public key has 32 bytes".into());
    }
    Ok(PublicKeyInfo {
        algorithm: "ed25519".into(),
        key_id: key_id_of(&raw),
        public_key: base64::engine::general_purpose::STANDARD.encode(&raw),
    })
}

/// Verifies an export read from `input`. With `trusted_keys`, checkpoint signatures must verify
/// with one of them; without, with the keys in the export's header (and the report says so).
pub fn verify<R: BufRead>(
    input: R,
    trusted_keys: Option<&[PublicKeyInfo]>,
) -> Result<VerifyReport, VerifyError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    verify_with_threads(input, trusted_keys, threads)
}

/// [`verify`] with a given number of threads parsing and hashing the entries (the calling
/// thread, which also reads and checks, counts as one).
pub fn verify_with_threads<R: BufRead>(
    input: R,
    trusted_keys: Option<&[PublicKeyInfo]>,
    threads: usize,
) -> Result<VerifyReport, VerifyError> {
    let mut lines = Lines { input, line: 0 };
    let header = read_header(&mut lines)?;
    let (keys, trust) = match trusted_keys {
        Some(k) => (k.to_vec(), KeyTrust::Supplied(ids(k))),
        None => (header.keys.clone(), KeyTrust::FromExport(ids(&header.keys))),
    };
    if keys.is_empty() {
        return Err(fail(
            Failure::Header,
            Some(1),
            None,
            "no public key to check the checkpoints with (none given, none in the header)".into(),
        ));
    }

    let mut chain = Chain::new(&header);
    let rest = read_entries(&mut lines, &mut chain, threads.max(1))?;
    let tail = read_tail(&header, rest).and_then(|t| {
        checkpoints_and_proof(
            &header,
            &keys,
            t,
            lines.line + 1,
            &chain.leaves,
            &chain.blocks,
            threads,
        )
    });
    if let Some((a, b)) = chain.end_twin {
        // The last seq twice, both chaining: keep the copy the roots accept; the other one
        // was inserted.
        let a_sealed = tail
            .as_ref()
            .is_ok_and(|t| t.roots.as_ref().is_some_and(|r| r.is_ok()));
        if let (false, Some(l)) = (a_sealed, chain.leaves.last_mut()) {
            *l = b.leaf;
        }
        let b_sealed = !a_sealed
            && tail.as_ref().is_ok_and(|t| {
                check_roots(&header, &chain.leaves, &[], &t.proof, t.proof_line, &t.cps).is_ok()
            });
        let (x, other) = if b_sealed { (a, b) } else { (b, a) };
        return Err(fail(
            Failure::Inserted,
            Some(x.line),
            Some(x.seq),
            format!(
                "seq {} appears twice (also at line {}); the checkpoints sealed the other one",
                x.seq, other.line
            ),
        ));
    }
    let Checked {
        mut cps,
        proof_line,
        proof,
        roots,
    } = tail?;
    chain.check_first_prev(proof.prev_hash)?;
    match roots {
        Some(r) => r?,
        None => check_roots(
            &header,
            &chain.leaves,
            &chain.blocks,
            &proof,
            proof_line,
            &cps,
        )?,
    }

    let covered = cps.last().map_or(0, |c| c.tree_size);
    if covered < header.last {
        let s = covered.max(header.first);
        return Err(fail(
            Failure::Unsealed,
            Some(chain.line_of(s)),
            Some(s),
            format!(
                "entries seq {s}..={} are not covered by any checkpoint (the largest has tree \
                 size {covered}): they were not sealed, or were added after sealing",
                header.last - 1
            ),
        ));
    }
    let mut below = 0u64;
    for c in &mut cps {
        let (lo, hi) = (below.max(header.first), c.tree_size.min(header.last));
        c.first_seals = (lo < hi).then_some((lo, hi));
        below = c.tree_size;
    }
    Ok(VerifyReport {
        log: header.log,
        from: header.from,
        to: header.to,
        exported_at: header.exported_at,
        first: header.first,
        last: header.last,
        entries: header.last - header.first,
        checkpoints: cps,
        keys: trust,
    })
}

/// The checked checkpoints and proof, and the roots recomputed (speculatively, beside the
/// signature checks) when the sizes allowed it.
struct Checked {
    cps: Vec<CheckpointReport>,
    proof_line: u64,
    proof: Proof,
    roots: Option<Result<(), VerifyError>>,
}

/// Checks the checkpoint lines (signatures, order) and parses the proof line. The signatures
/// are checked on `threads` threads while another recomputes the roots.
fn checkpoints_and_proof(
    header: &Header,
    keys: &[PublicKeyInfo],
    tail: Tail,
    end_line: u64,
    leaves: &[Hash],
    blocks: &[Hash],
    threads: usize,
) -> Result<Checked, VerifyError> {
    let proof = tail
        .proof
        .ok_or_else(|| {
            fail(
                Failure::Malformed,
                Some(end_line),
                None,
                "the export ends without its proof line".into(),
            )
        })
        .and_then(|(line, p)| Proof::parse(header, line, &p).map(|p| (line, p)));
    // What the roots need, if every body parses and the sizes are usable.
    let mut pre = Vec::with_capacity(tail.checkpoints.len());
    for (line, c) in &tail.checkpoints {
        let Ok(b) = serde_json::from_str::<CheckpointBody>(&c.body) else {
            break;
        };
        let size_ok = b.tree_size >= header.first.max(1)
            && pre
                .last()
                .is_none_or(|p: &CheckpointReport| p.tree_size < b.tree_size);
        if !size_ok {
            break;
        }
        pre.push(CheckpointReport {
            line: *line,
            tree_size: b.tree_size,
            root_hash: b.root_hash,
            time: b.time,
            clock: b.clock,
            key_id: b.key_id,
            timestamp_token: false,
            first_seals: None,
        });
    }
    let all = pre.len() == tail.checkpoints.len();
    let (sigs, roots) = std::thread::scope(|s| {
        let roots = match (&proof, all) {
            (Ok((line, p)), true) => {
                Some(s.spawn(|| check_roots(header, leaves, blocks, p, *line, &pre)))
            }
            _ => None,
        };
        let sigs = signatures(keys, &tail.checkpoints, threads);
        let roots = roots.map(|h| match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        });
        (sigs, roots)
    });
    let mut cps: Vec<CheckpointReport> = Vec::with_capacity(tail.checkpoints.len());
    for ((line, c), sig) in tail.checkpoints.iter().zip(sigs) {
        let c = check_checkpoint(header, keys, *line, c, sig)?;
        if let Some(p) = cps.last().filter(|p| c.tree_size <= p.tree_size) {
            return Err(fail(
                Failure::Checkpoint,
                Some(c.line),
                None,
                format!(
                    "checkpoint tree sizes must increase: {} follows {}",
                    c.tree_size, p.tree_size
                ),
            ));
        }
        cps.push(c);
    }
    let (proof_line, proof) = proof?;
    Ok(Checked {
        cps,
        proof_line,
        proof,
        roots,
    })
}

/// The signature check of each checkpoint line, on `threads` threads: `None` where the body,
/// key or signature cannot even be read ([`check_checkpoint`] then says why).
fn signatures(
    keys: &[PublicKeyInfo],
    lines: &[(u64, CheckpointLine)],
    threads: usize,
) -> Vec<Option<Result<(), String>>> {
    #[derive(Deserialize)]
    struct KeyId {
        key_id: String,
    }
    let one = |c: &CheckpointLine| -> Option<Result<(), String>> {
        use base64::Engine;
        let id: KeyId = serde_json::from_str(&c.body).ok()?;
        let key = keys.iter().find(|k| k.key_id == id.key_id)?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&c.signature)
            .ok()?;
        Some(verify_signature(key, c.body.as_bytes(), &sig))
    };
    let per = lines.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|(_, c)| one(c)).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(lines.len());
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}

fn ids(keys: &[PublicKeyInfo]) -> Vec<String> {
    keys.iter().map(|k| k.key_id.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Reading lines

struct Lines<R> {
    input: R,
    /// Lines read so far.
    line: u64,
}

#[derive(Default)]
struct Chunk {
    buf: Vec<u8>,
    /// (start, end) of each line in `buf`, without the line feed.
    spans: Vec<(usize, usize)>,
    /// Line number of the first line.
    first_line: u64,
}

impl Chunk {
    fn line(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.buf[a..b]
    }
}

impl<R: BufRead> Lines<R> {
    fn fill(&mut self, c: &mut Chunk) -> Result<(), VerifyError> {
        c.buf.clear();
        c.spans.clear();
        c.first_line = self.line + 1;
        while c.spans.len() < CHUNK_LINES && c.buf.len() < CHUNK_BYTES {
            let start = c.buf.len();
            let n = self
                .input
                .read_until(b'\n', &mut c.buf)
                .map_err(|e| fail(Failure::Io, Some(self.line + 1), None, e.to_string()))?;
            if n == 0 {
                break;
            }
            let mut end = c.buf.len();
            if c.buf[end - 1] == b'\n' {
                end -= 1;
            }
            c.spans.push((start, end));
            self.line += 1;
        }
        Ok(())
    }

    fn next_line(&mut self) -> Result<Option<Vec<u8>>, VerifyError> {
        let mut buf = Vec::new();
        let n = self
            .input
            .read_until(b'\n', &mut buf)
            .map_err(|e| fail(Failure::Io, Some(self.line + 1), None, e.to_string()))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        self.line += 1;
        Ok(Some(buf))
    }
}

fn read_header<R: BufRead>(lines: &mut Lines<R>) -> Result<Header, VerifyError> {
    let bad = |m: String| fail(Failure::Header, Some(1), None, m);
    let line = lines
        .next_line()?
        .ok_or_else(|| bad("the export is empty".into()))?;
    let header: Header = serde_json::from_slice(&line).map_err(|e| {
        fail(
            Failure::Malformed,
            Some(1),
            None,
            format!("not a header line: {e}"),
        )
    })?;
    if header.kind != "header" {
        return Err(bad(format!(
            "the first line has type '{}', not 'header'",
            header.kind
        )));
    }
    if header.format != FORMAT {
        return Err(bad(format!(
            "format '{}' is not supported (this verifier reads '{FORMAT}')",
            header.format
        )));
    }
    if header.first > header.last {
        return Err(bad(format!(
            "first ({}) is after last ({})",
            header.first, header.last
        )));
    }
    Ok(header)
}

// ---------------------------------------------------------------------------------------------
// Entries

/// The fields of an entry line the checks need; the event is only checked to be JSON.
#[derive(Deserialize)]
struct LineFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    log: Option<&'a str>,
    seq: Option<u64>,
    #[serde(borrow)]
    prev: Option<&'a str>,
    event: Option<IgnoredAny>,
}

/// The line entry `seq` is on in a well-formed export starting at `first`.
fn line_of(first: u64, seq: u64) -> u64 {
    2 + seq.saturating_sub(first)
}

/// An entry reduced to what the sequential checks need.
#[derive(Debug, Clone, Copy)]
struct Rec {
    line: u64,
    seq: u64,
    /// The entry's log when it is not the export's.
    other_log: Option<Uuid>,
    prev: Hash,
    leaf: Hash,
}

#[derive(Debug)]
enum Item {
    Entry(Rec),
    Bad {
        line: u64,
        seq: Option<u64>,
        message: String,
    },
}

enum Parsed {
    Item(Item),
    /// A checkpoint or proof line: the entries have ended.
    Other,
}

/// What the verifier reads from a line: its type and, for an entry, `log`, `seq` and `prev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFieldsOf<'a> {
    Entry {
        log: &'a str,
        seq: u64,
        prev: &'a str,
    },
    Checkpoint,
    Proof,
}

/// Why a line could not be read: the message, and the line's `seq` when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub seq: Option<u64>,
    pub message: String,
}

/// Reads a line's type and, for an entry, the fields the checks need. A line must be UTF-8 and
/// JSON. An entry line in the layout Anshin writes (`{"event":…,"log":…,"prev":…,"seq":…,
/// "type":"entry"}`, canonical JSON) takes a fast path: the event is skipped by a strict JSON
/// scanner and the four fields read from the fixed tail; any other line is parsed with
/// serde_json (unknown fields ignored, duplicate fields refused). Both give the same answer for
/// a canonical line.
pub fn line_fields(line: &[u8]) -> Result<LineFieldsOf<'_>, LineError> {
    let err = |seq: Option<u64>, message: String| LineError { seq, message };
    let text = std::str::from_utf8(line).map_err(|e| err(None, format!("not UTF-8: {e}")))?;
    if let Some(f) = fast::entry(line) {
        return Ok(f);
    }
    slow(text)
}

/// [`line_fields`] with serde_json.
fn slow(text: &str) -> Result<LineFieldsOf<'_>, LineError> {
    let err = |seq: Option<u64>, message: String| LineError { seq, message };
    let f: LineFields = serde_json::from_str(text)
        .map_err(|e| err(None, format!("not valid JSON of an export line: {e}")))?;
    match f.kind {
        Some(ENTRY_TYPE) => {}
        Some("checkpoint") => return Ok(LineFieldsOf::Checkpoint),
        Some("proof") => return Ok(LineFieldsOf::Proof),
        Some(other) => return Err(err(f.seq, format!("unknown line type '{other}'"))),
        None => return Err(err(f.seq, "the line has no type".into())),
    }
    let (Some(log), Some(seq), Some(prev), Some(_)) = (f.log, f.seq, f.prev, f.event) else {
        return Err(err(f.seq, "an entry needs log, seq, prev and event".into()));
    };
    Ok(LineFieldsOf::Entry { log, seq, prev })
}

/// The fast path of [`line_fields`] for canonical entry lines.
mod fast {
    use super::LineFieldsOf;

    const HEAD: &[u8] = b"{\"event\":";
    const LOG: &[u8] = b",\"log\":\"";
    const PREV: &[u8] = b"\",\"prev\":\"";
    const SEQ: &[u8] = b"\",\"seq\":";
    const TAIL: &[u8] = b",\"type\":\"entry\"}";
    /// Nesting limit, as serde_json's for parsed values.
    const DEPTH: u32 = 128;

    /// `None`: not a canonical entry line (the caller falls back to a full parse, which
    /// also reports what is wrong).
    pub(super) fn entry(b: &[u8]) -> Option<LineFieldsOf<'_>> {
        let i = skip_value(b, b.strip_prefix(HEAD).map(|_| HEAD.len())?)?;
        let rest = b.get(i..)?.strip_prefix(LOG)?;
        let (log, rest) = (rest.get(..36)?, rest.get(36..)?.strip_prefix(PREV)?);
        let (prev, rest) = (rest.get(..64)?, rest.get(64..)?.strip_prefix(SEQ)?);
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if rest.get(digits..)? != TAIL || digits == 0 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        // The two strings end where the layout says only if they hold no quote or backslash.
        if !plain(log) || !plain(prev) {
            return None;
        }
        Some(LineFieldsOf::Entry {
            log: std::str::from_utf8(log).ok()?,
            seq,
            prev: std::str::from_utf8(prev).ok()?,
        })
    }

    fn plain(s: &[u8]) -> bool {
        s.chunks(8).all(|c| {
            let mut w = [b'a'; 8];
            w[..c.len()].copy_from_slice(c);
            special(u64::from_le_bytes(w)) == 0
        })
    }

    #[inline(always)]
    fn ws(b: &[u8], mut i: usize) -> usize {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }

    /// The index after the JSON value starting at `i` (after whitespace), if it is valid.
    /// Iterative: `stack` holds one bit per open container (1: object, 0: array).
    fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
        let mut stack: u128 = 0;
        let mut depth = 0u32;
        'value: loop {
            i = ws(b, i);
            match *b.get(i)? {
                b'"' => i = skip_string(b, i + 1)?,
                b'{' => {
                    depth += 1;
                    if depth > DEPTH {
                        return None;
                    }
                    stack = stack << 1 | 1;
                    i = ws(b, i + 1);
                    if b.get(i) == Some(&b'}') {
                        i += 1;
                        depth -= 1;
                        stack >>= 1;
                    } else {
                        i = key(b, i)?;
                        continue 'value;
                    }
                }
                b'[' => {
                    depth += 1;
                    if depth > DEPTH {
                        return None;
                    }
                    stack <<= 1;
                    i = ws(b, i + 1);
                    if b.get(i) == Some(&b']') {
                        i += 1;
                        depth -= 1;
                        stack >>= 1;
                    } else {
                        continue 'value;
                    }
                }
                b't' => i = b[i..].starts_with(b"true").then_some(i + 4)?,
                b'f' => i = b[i..].starts_with(b"false").then_some(i + 5)?,
                b'n' => i = b[i..].starts_with(b"null").then_some(i + 4)?,
                b'-' | b'0'..=b'9' => i = skip_number(b, i)?,
                _ => return None,
            }
            // After a value: a separator, or the end of containers.
            loop {
                if depth == 0 {
                    return Some(i);
                }
                i = ws(b, i);
                let object = stack & 1 == 1;
                match (*b.get(i)?, object) {
                    (b',', true) => {
                        i = key(b, ws(b, i + 1))?;
                        continue 'value;
                    }
                    (b',', false) => {
                        i += 1;
                        continue 'value;
                    }
                    (b'}', true) | (b']', false) => {
                        i += 1;
                        depth -= 1;
                        stack >>= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key":` at `i`; the index after the colon.
    #[inline(always)]
    fn key(b: &[u8], i: usize) -> Option<usize> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let i = ws(b, skip_string(b, i + 1)?);
        (b.get(i) == Some(&b':')).then_some(i + 1)
    }

    fn digits(b: &[u8], mut i: usize) -> usize {
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        i
    }

    fn skip_number(b: &[u8], mut i: usize) -> Option<usize> {
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match *b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(b, i + 1),
            _ => return None,
        };
        if b.get(i) == Some(&b'.') {
            let j = digits(b, i + 1);
            if j == i + 1 {
                return None;
            }
            i = j;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let j = digits(b, i);
            if j == i {
                return None;
            }
            i = j;
        }
        Some(i)
    }

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    /// High bit set in each byte of `x` that is a quote, a backslash or a control character;
    /// the lowest one marks the first such byte (bytes above it may be false positives).
    #[inline(always)]
    fn special(x: u64) -> u64 {
        let q = x ^ (ONES * u64::from(b'"'));
        let s = x ^ (ONES * u64::from(b'\\'));
        let zero_q = q.wrapping_sub(ONES) & !q;
        let zero_s = s.wrapping_sub(ONES) & !s;
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        (zero_q | zero_s | control) & HIGH
    }

    /// The index after the closing quote of the string whose content starts at `i`.
    #[inline(always)]
    fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
        loop {
            while let Some(w) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
                let m = special(u64::from_le_bytes(*w));
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            match *b.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                    _ => return None,
                },
                c if c < 0x20 => return None,
                _ => i += 1,
            }
        }
    }
}

/// Hex digit values; 0xff for anything else.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// 64 hex digits to a hash.
fn hash_hex(s: &[u8]) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// The export's log, to compare entry lines with.
#[derive(Clone, Copy)]
struct LogId {
    id: Uuid,
    /// Hyphenated, lowercase: how Anshin writes it.
    text: [u8; 36],
}

impl LogId {
    fn new(id: Uuid) -> Self {
        let mut text = [0u8; 36];
        id.hyphenated().encode_lower(&mut text);
        Self { id, text }
    }
}

fn parse_line(line: u64, bytes: &[u8], log_id: &LogId) -> Parsed {
    let bad = |seq: Option<u64>, message: String| Parsed::Item(Item::Bad { line, seq, message });
    let (log, seq, prev) = match line_fields(bytes) {
        Ok(LineFieldsOf::Entry { log, seq, prev }) => (log, seq, prev),
        Ok(_) => return Parsed::Other,
        Err(e) => return bad(e.seq, e.message),
    };
    let other_log = if log.as_bytes() == log_id.text {
        None
    } else {
        match Uuid::try_parse(log) {
            Ok(id) if id == log_id.id => None,
            Ok(id) => Some(id),
            Err(_) => return bad(Some(seq), format!("log '{log}' is not a UUID")),
        }
    };
    let Some(prev) = hash_hex(prev.as_bytes()) else {
        return bad(Some(seq), "prev is not 64 hex digits".into());
    };
    Parsed::Item(Item::Entry(Rec {
        line,
        seq,
        other_log,
        prev,
        leaf: leaf_hash(bytes),
    }))
}

/// Parses a chunk on `threads` threads (this one included, once `read` has run), in tasks
/// of a few hundred lines.
fn parse_chunk_while<T>(
    c: &Chunk,
    log: &LogId,
    threads: usize,
    read: impl FnOnce() -> T,
) -> (Vec<Vec<Parsed>>, T) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Lines per task: small enough that the threads finish together.
    const TASK: usize = 512;
    let n = c.spans.len();
    let tasks = n.div_ceil(TASK);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            if t >= tasks {
                return done;
            }
            let part = (t * TASK..((t + 1) * TASK).min(n))
                .map(|i| parse_line(c.first_line + i as u64, c.line(i), log))
                .collect::<Vec<_>>();
            done.push((t, part));
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let read = read();
        // Then this thread helps with what is left.
        let mut parts = work();
        for h in handles {
            match h.join() {
                Ok(v) => parts.extend(v),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        parts.sort_unstable_by_key(|(t, _)| *t);
        (parts.into_iter().map(|(_, p)| p).collect(), read)
    })
}

/// Reads and checks the entry lines; returns the lines after them (checkpoints, proof), with
/// their line numbers.
fn read_entries<R: BufRead>(
    lines: &mut Lines<R>,
    chain: &mut Chain,
    threads: usize,
) -> Result<Vec<(u64, Vec<u8>)>, VerifyError> {
    let mut window: VecDeque<Item> = VecDeque::with_capacity(LOOKAHEAD + CHUNK_LINES);
    let mut rest = Vec::new();
    let log = LogId::new(chain.log);
    let (mut cur, mut next) = (Chunk::default(), Chunk::default());
    lines.fill(&mut cur)?;
    let mut done = false;
    while !done && !cur.spans.is_empty() {
        // While the chunk is parsed: read the next one and check the entries before it.
        let (parsed, (read, checked)) = parse_chunk_while(&cur, &log, threads, || {
            let read = lines.fill(&mut next);
            (read, drain(chain, &mut window, LOOKAHEAD))
        });
        checked?;
        for (i, p) in parsed.into_iter().flatten().enumerate() {
            match p {
                Parsed::Item(item) => window.push_back(item),
                Parsed::Other => {
                    done = true;
                    for j in i..cur.spans.len() {
                        rest.push((cur.first_line + j as u64, cur.line(j).to_vec()));
                    }
                    break;
                }
            }
        }
        read?;
        std::mem::swap(&mut cur, &mut next);
    }
    drain(chain, &mut window, 0)?;
    if done {
        for j in 0..cur.spans.len() {
            rest.push((cur.first_line + j as u64, cur.line(j).to_vec()));
        }
        while let Some(l) = lines.next_line()? {
            rest.push((lines.line, l));
        }
    }
    let end_line = rest.first().map_or(lines.line + 1, |(l, _)| *l);
    chain.finish(end_line)?;
    Ok(rest)
}

/// Checks the items of `window` in order until `keep` are left (the lookahead).
fn drain(chain: &mut Chain, window: &mut VecDeque<Item>, keep: usize) -> Result<(), VerifyError> {
    while window.len() > keep {
        let Some(item) = window.pop_front() else {
            break;
        };
        chain.check(&item, window)?;
    }
    Ok(())
}

/// The sequential checks over the entries, in file order.
struct Chain {
    log: Uuid,
    first: u64,
    last: u64,
    /// The `seq` the next entry must have.
    expected: u64,
    prev: Option<Rec>,
    /// The first entry, and whether the entry after it names it as `prev`.
    first_rec: Option<(Rec, Option<bool>)>,
    undecided_twin: bool,
    /// The last `seq` appeared twice, both copies chaining to the entry before: (the one taken
    /// into the chain, the other). Decided by the checkpoint roots.
    end_twin: Option<(Rec, Rec)>,
    leaves: Vec<Hash>,
    /// Roots of the aligned blocks of [`BLOCK`] leaves inside `[first, last)`, computed as the
    /// entries stream by, so that recomputing the roots at the end needs few hashes.
    blocks: Vec<Hash>,
}

/// Leaves per block (a power of two).
const BLOCK: u64 = 64;

/// The root of a perfect subtree of [`BLOCK`] leaves.
fn block_root(leaves: &[Hash]) -> Hash {
    let mut buf = [[0u8; 32]; BLOCK as usize];
    buf.copy_from_slice(leaves);
    let mut n = buf.len();
    while n > 1 {
        for i in 0..n / 2 {
            buf[i] = node_hash(&buf[2 * i], &buf[2 * i + 1]);
        }
        n /= 2;
    }
    buf[0]
}

fn entry_at(window: &VecDeque<Item>, i: usize) -> Option<&Rec> {
    match window.get(i) {
        Some(Item::Entry(r)) => Some(r),
        _ => None,
    }
}

impl Chain {
    fn new(h: &Header) -> Self {
        Self {
            log: h.log,
            first: h.first,
            last: h.last,
            expected: h.first,
            prev: None,
            first_rec: None,
            undecided_twin: false,
            end_twin: None,
            leaves: Vec::with_capacity((h.last - h.first).min(1 << 21) as usize),
            blocks: Vec::new(),
        }
    }

    /// The line entry `seq` is on in a well-formed export.
    fn line_of(&self, seq: u64) -> u64 {
        line_of(self.first, seq)
    }

    /// Checks one item; `ahead` holds the items after it.
    fn check(&mut self, item: &Item, ahead: &VecDeque<Item>) -> Result<(), VerifyError> {
        let r = match item {
            Item::Entry(r) => *r,
            Item::Bad { line, seq, message } => {
                let seq = seq.or((self.expected < self.last).then_some(self.expected));
                return Err(fail(Failure::Malformed, Some(*line), seq, message.clone()));
            }
        };
        let exp = self.expected;
        let here = |f: Failure, seq: u64, m: String| Err(fail(f, Some(r.line), Some(seq), m));
        if let Some(other) = r.other_log {
            return here(
                Failure::WrongLog,
                r.seq,
                format!(
                    "the entry belongs to log {}, the export to {}",
                    other, self.log
                ),
            );
        }
        let n1 = entry_at(ahead, 0);
        if r.seq != exp {
            if let Some(p) = self.prev.filter(|p| p.seq == r.seq) {
                if ahead.is_empty() && self.undecided_twin {
                    self.end_twin = Some((p, r));
                    return Ok(());
                }
            }
            return Err(self.misplaced(&r, ahead));
        }
        if exp >= self.last {
            return here(
                Failure::Inserted,
                r.seq,
                format!(
                    "the header's range ends at seq {}, but the entries go on",
                    self.last.saturating_sub(1)
                ),
            );
        }
        // Two lines with this seq: the one the next entry names as prev was sealed.
        if let Some(twin) = n1.filter(|n| n.seq == r.seq) {
            let n2 = entry_at(ahead, 1).filter(|n| n.seq == r.seq + 1);
            let before = self.prev.map(|p| p.leaf);
            let verdict = match (n2, before) {
                (Some(n2), _) if n2.prev == twin.leaf && n2.prev != r.leaf => Some(true),
                (Some(n2), _) if n2.prev == r.leaf => Some(false),
                (_, Some(b)) if twin.prev == b && r.prev != b => Some(true),
                (_, Some(b)) if r.prev == b && twin.prev != b => Some(false),
                _ => None,
            };
            // Two different entries at the very end that both chain: the roots will tell.
            self.undecided_twin = verdict.is_none() && twin.leaf != r.leaf && ahead.len() == 1;
            if verdict == Some(true) {
                return here(
                    Failure::Inserted,
                    r.seq,
                    format!(
                        "seq {} appears twice (again at line {}); this one is not in the chain",
                        r.seq, twin.line
                    ),
                );
            }
        }
        match self.prev {
            Some(p) if r.prev != p.leaf => {
                // Link (p, r) is broken. If r links to its successor, r is intact, so p was
                // altered; if that link is broken too, r was.
                let next_links = n1.filter(|n| n.seq == r.seq + 1).map(|n| n.prev == r.leaf);
                return match next_links {
                    Some(false) => here(
                        Failure::Altered,
                        r.seq,
                        format!(
                            "the entry was altered: its prev does not match entry seq {} (line {}) \
                             and the entry after it does not name it as prev either",
                            p.seq, p.line
                        ),
                    ),
                    _ => Err(fail(
                        Failure::Altered,
                        Some(p.line),
                        Some(p.seq),
                        format!(
                            "the entry was altered: its leaf hash does not match the prev of entry \
                             seq {} (line {}){}",
                            r.seq,
                            r.line,
                            if next_links.is_none() {
                                " (or that entry's prev was altered)"
                            } else {
                                ""
                            }
                        ),
                    )),
                };
            }
            None if r.seq == 0 && r.prev != GENESIS_PREV => {
                return here(
                    Failure::Altered,
                    0,
                    "the first entry of a log must have prev = 64 zeros".into(),
                );
            }
            None => {
                let links = n1.filter(|n| n.seq == r.seq + 1).map(|n| n.prev == r.leaf);
                self.first_rec = Some((r, links));
            }
            Some(_) => {}
        }
        self.leaves.push(r.leaf);
        let end = self.first + self.leaves.len() as u64;
        if end.is_multiple_of(BLOCK) && end - BLOCK >= self.first {
            let lo = self.leaves.len() - BLOCK as usize;
            self.blocks.push(block_root(&self.leaves[lo..]));
        }
        self.prev = Some(r);
        self.expected += 1;
        Ok(())
    }

    /// Names what is wrong when entry `r` is not the `seq` expected at its place.
    fn misplaced(&self, r: &Rec, ahead: &VecDeque<Item>) -> VerifyError {
        let exp = self.expected;
        let n1s = entry_at(ahead, 0).map(|n| n.seq);
        let n2s = entry_at(ahead, 1).map(|n| n.seq);
        let here = |f: Failure, seq: u64, m: String| fail(f, Some(r.line), Some(seq), m);
        if let Some(p) = self.prev.filter(|p| p.seq == r.seq) {
            return here(
                Failure::Inserted,
                r.seq,
                format!(
                    "seq {} appears a second time (first at line {}, which the entries around \
                     it chain to)",
                    r.seq, p.line
                ),
            );
        }
        // The entries before and after it follow each other: this one does not belong here.
        let intruder = n1s == Some(exp)
            && (n2s == Some(exp + 1) || (ahead.len() == 1 && exp + 1 == self.last));
        if intruder {
            return here(
                Failure::Inserted,
                r.seq,
                format!(
                    "an entry reading seq {} stands where seq {exp} belongs; the entries around \
                     it follow each other without it",
                    r.seq
                ),
            );
        }
        if r.seq > exp {
            let found = ahead.iter().find_map(|i| match i {
                Item::Entry(e) if e.seq == exp => Some(e.line),
                _ => None,
            });
            if let Some(l) = found {
                return here(
                    Failure::Reordered,
                    r.seq,
                    format!(
                        "entry seq {} is at line {}, where seq {exp} belongs; seq {exp} comes \
                         later, at line {l}",
                        r.seq, r.line
                    ),
                );
            }
        }
        // The entries on both sides are where they belong (or this is the last one).
        if n1s == Some(exp + 1) || (ahead.is_empty() && exp + 1 == self.last) {
            return here(
                Failure::Altered,
                exp,
                format!(
                    "the entry where seq {exp} belongs (the next is seq {}) reads seq {}: its \
                     seq was altered",
                    exp + 1,
                    r.seq
                ),
            );
        }
        if r.seq >= self.last || r.seq < self.first {
            return here(
                Failure::Inserted,
                r.seq,
                format!(
                    "seq {} lies outside the export's range {}..{}",
                    r.seq, self.first, self.last
                ),
            );
        }
        if r.seq > exp {
            let what = if r.seq - exp == 1 {
                format!("entry seq {exp} is missing")
            } else {
                format!("entries seq {exp}..={} are missing", r.seq - 1)
            };
            return here(
                Failure::Missing,
                exp,
                format!(
                    "{what}: line {} has seq {} where seq {exp} belongs",
                    r.line, r.seq
                ),
            );
        }
        here(
            Failure::Reordered,
            r.seq,
            format!(
                "entry seq {} comes where seq {exp} belongs, after a later entry",
                r.seq
            ),
        )
    }

    /// After the last entry line (`end_line` is the line after it).
    fn finish(&self, end_line: u64) -> Result<(), VerifyError> {
        if self.expected < self.last {
            let e = self.expected;
            let what = if self.last - e == 1 {
                format!("entry seq {e} is missing")
            } else {
                format!("entries seq {e}..={} are missing", self.last - 1)
            };
            return Err(fail(
                Failure::Missing,
                Some(end_line),
                Some(e),
                format!(
                    "{what}: the header says the entries end at seq {}",
                    self.last - 1
                ),
            ));
        }
        Ok(())
    }

    /// The first entry's prev against the proof's `prev_hash` (known only at the end).
    fn check_first_prev(&self, prev_hash: Option<Hash>) -> Result<(), VerifyError> {
        let (Some((r, next_links)), Some(want)) = (self.first_rec, prev_hash) else {
            return Ok(());
        };
        if r.prev == want {
            return Ok(());
        }
        if next_links == Some(true) {
            return Err(fail(
                Failure::Proof,
                None,
                None,
                format!(
                    "the proof's prev_hash does not match the prev of entry seq {} (line {})",
                    r.seq, r.line
                ),
            ));
        }
        Err(fail(
            Failure::Altered,
            Some(r.line),
            Some(r.seq),
            "its prev does not match the proof's prev_hash (the leaf hash of the entry before)"
                .into(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and proof

#[derive(Deserialize)]
struct KindOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    seq: Option<u64>,
}

struct Tail {
    checkpoints: Vec<(u64, CheckpointLine)>,
    proof: Option<(u64, ProofLine)>,
}

fn read_tail(h: &Header, rest: Vec<(u64, Vec<u8>)>) -> Result<Tail, VerifyError> {
    let mut t = Tail {
        checkpoints: Vec::new(),
        proof: None,
    };
    for (line, bytes) in rest {
        let malformed = |m: String| fail(Failure::Malformed, Some(line), None, m);
        if t.proof.is_some() {
            return Err(malformed("nothing may follow the proof line".into()));
        }
        let k: KindOnly = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("not valid JSON of an export line: {e}")))?;
        match k.kind {
            Some("checkpoint") => {
                let c: CheckpointLine = serde_json::from_slice(&bytes)
                    .map_err(|e| malformed(format!("not a checkpoint line: {e}")))?;
                t.checkpoints.push((line, c));
            }
            Some("proof") => {
                let p: ProofLine = serde_json::from_slice(&bytes)
                    .map_err(|e| malformed(format!("not a proof line: {e}")))?;
                t.proof = Some((line, p));
            }
            Some(ENTRY_TYPE) => {
                return Err(fail(
                    Failure::Inserted,
                    Some(line),
                    k.seq,
                    format!(
                        "an entry line after the checkpoint lines (the entries of this export \
                         are seq {}..{} and come first)",
                        h.first, h.last
                    ),
                ));
            }
            Some(other) => return Err(malformed(format!("unknown line type '{other}'"))),
            None => return Err(malformed("the line has no type".into())),
        }
    }
    Ok(t)
}

fn check_checkpoint(
    h: &Header,
    keys: &[PublicKeyInfo],
    line: u64,
    c: &CheckpointLine,
    signature_checked: Option<Result<(), String>>,
) -> Result<CheckpointReport, VerifyError> {
    use base64::Engine;
    let at = |f: Failure, m: String| fail(f, Some(line), None, m);
    let body: CheckpointBody = serde_json::from_str(&c.body).map_err(|e| {
        at(
            Failure::Malformed,
            format!("the checkpoint body does not parse ({e}): altered?"),
        )
    })?;
    let size = body.tree_size;
    let Some(key) = keys.iter().find(|k| k.key_id == body.key_id) else {
        return Err(at(
            Failure::UnknownKey,
            format!(
                "checkpoint (tree size {size}) is signed by key {}, which is not among the keys \
                 checked against ({})",
                body.key_id,
                ids(keys).join(", ")
            ),
        ));
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&c.signature)
        .map_err(|_| {
            at(
                Failure::Malformed,
                "the signature is not valid base64".into(),
            )
        })?;
    signature_checked
        .unwrap_or_else(|| verify_signature(key, c.body.as_bytes(), &sig))
        .map_err(|e| {
        at(
            Failure::BadSignature,
            format!(
                "checkpoint (tree size {size}) with key {}: {e} (the body or the signature was altered)",
                key.key_id
            ),
        )
    })?;
    if body.kind != CHECKPOINT_TYPE {
        return Err(at(
            Failure::Checkpoint,
            format!("checkpoint type '{}' is not '{CHECKPOINT_TYPE}'", body.kind),
        ));
    }
    if body.log != h.log {
        return Err(at(
            Failure::Checkpoint,
            format!(
                "the checkpoint is of log {}, the export of log {}",
                body.log, h.log
            ),
        ));
    }
    if size == 0 || size < h.first {
        return Err(at(
            Failure::Checkpoint,
            format!(
                "a checkpoint of tree size {size} cannot be checked by an export starting at seq {}",
                h.first
            ),
        ));
    }
    let mut root = [0u8; 32];
    if hex::decode_to_slice(&body.root_hash, &mut root).is_err() {
        return Err(at(
            Failure::Malformed,
            "root_hash is not 64 hex digits".into(),
        ));
    }
    if let Some(t) = &c.timestamp_token {
        if base64::engine::general_purpose::STANDARD.decode(t).is_err() {
            return Err(at(
                Failure::Malformed,
                "timestamp_token is not valid base64".into(),
            ));
        }
    }
    Ok(CheckpointReport {
        line,
        tree_size: size,
        root_hash: body.root_hash,
        time: body.time,
        clock: body.clock,
        key_id: body.key_id,
        timestamp_token: c.timestamp_token.is_some(),
        first_seals: None,
    })
}

struct Proof {
    prev_hash: Option<Hash>,
    left: Vec<Hash>,
    right: Vec<(u64, Vec<RangeNode>)>,
}

fn hash_of(s: &str) -> Option<Hash> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok().map(|()| h)
}

/// The aligned perfect subtrees that make up `[0, n)`, largest first.
fn decomposition(n: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut lo = 0u64;
    for b in (0..64).rev() {
        if n >> b & 1 == 1 {
            out.push((lo, lo + (1u64 << b)));
            lo += 1u64 << b;
        }
    }
    out
}

impl Proof {
    fn parse(h: &Header, line: u64, p: &ProofLine) -> Result<Self, VerifyError> {
        let bad = |m: String| fail(Failure::Proof, Some(line), None, m);
        let prev_hash = match (&p.prev_hash, h.first) {
            (None, 0) => None,
            (Some(_), 0) => return Err(bad("prev_hash must be absent when first is 0".into())),
            (None, _) => return Err(bad("prev_hash is missing".into())),
            (Some(s), _) => {
                Some(hash_of(s).ok_or_else(|| bad("prev_hash is not 64 hex digits".into()))?)
            }
        };
        let want = decomposition(h.first);
        let got: Vec<(u64, u64)> = p.left.iter().map(|n| (n.lo, n.hi)).collect();
        if got != want {
            return Err(bad(format!(
                "left must be the aligned subtrees of [0, {}): {want:?}, not {got:?}",
                h.first
            )));
        }
        let node = |n: &NodeLine| -> Result<Hash, VerifyError> {
            hash_of(&n.hash)
                .ok_or_else(|| bad(format!("node [{}, {}) is not 64 hex digits", n.lo, n.hi)))
        };
        let left = p.left.iter().map(node).collect::<Result<Vec<_>, _>>()?;
        let mut right = Vec::new();
        for r in &p.right {
            if r.tree_size <= h.last || right.iter().any(|(s, _)| *s == r.tree_size) {
                return Err(bad(format!(
                    "right nodes for tree size {} (must be unique and larger than last, {})",
                    r.tree_size, h.last
                )));
            }
            let mut nodes = Vec::with_capacity(r.nodes.len());
            for n in &r.nodes {
                if n.lo < h.last || n.hi > r.tree_size || n.lo >= n.hi {
                    return Err(bad(format!(
                        "node [{}, {}) lies outside [{}, {})",
                        n.lo, n.hi, h.last, r.tree_size
                    )));
                }
                nodes.push(RangeNode {
                    lo: n.lo,
                    hi: n.hi,
                    hash: node(n)?,
                });
            }
            right.push((r.tree_size, nodes));
        }
        Ok(Self {
            prev_hash,
            left,
            right,
        })
    }
}

/// A frontier that takes aligned perfect subtrees as well as leaves.
struct Stack {
    size: u64,
    /// (level, hash): a perfect subtree of 2^level leaves; levels strictly decrease.
    nodes: Vec<(u32, Hash)>,
}

impl Stack {
    /// Pushes a perfect subtree of 2^level leaves (`size` must be a multiple of it).
    fn push(&mut self, level: u32, hash: Hash) {
        self.nodes.push((level, hash));
        self.size += 1 << level;
        while self.nodes.len() >= 2 {
            let n = self.nodes.len();
            let ((la, a), (lb, b)) = (self.nodes[n - 2], self.nodes[n - 1]);
            if la != lb {
                break;
            }
            self.nodes.truncate(n - 2);
            self.nodes.push((la + 1, node_hash(&a, &b)));
        }
    }

    fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some((_, last)) = it.next() else {
            return crate::merkle::empty_root();
        };
        it.fold(*last, |acc, (_, n)| node_hash(n, &acc))
    }
}

/// Recomputes every checkpoint's root from the left nodes, the entries' leaf hashes (and the
/// roots of whole blocks of them, where given) and the right nodes, in increasing tree size.
fn check_roots(
    h: &Header,
    leaves: &[Hash],
    blocks: &[Hash],
    proof: &Proof,
    proof_line: u64,
    cps: &[CheckpointReport],
) -> Result<(), VerifyError> {
    let (first, last) = (h.first, h.last);
    let mut stack = Stack {
        size: 0,
        nodes: Vec::with_capacity(64),
    };
    for ((lo, hi), hash) in decomposition(first).into_iter().zip(&proof.left) {
        stack.push((hi - lo).trailing_zeros(), *hash);
    }
    let block_base = first.div_ceil(BLOCK) * BLOCK;
    let advance = |stack: &mut Stack, to: u64| {
        while stack.size < to {
            let at = stack.size;
            if at.is_multiple_of(BLOCK) && at + BLOCK <= to {
                if let Some(b) = blocks.get(((at - block_base) / BLOCK) as usize) {
                    stack.push(BLOCK.trailing_zeros(), *b);
                    continue;
                }
            }
            stack.push(0, leaves[(at - first) as usize]);
        }
    };
    // Tree size of the last checkpoint that verified.
    let mut verified: Option<u64> = None;
    for c in cps {
        let root = if c.tree_size <= last {
            advance(&mut stack, c.tree_size);
            Some(stack.root())
        } else {
            advance(&mut stack, last);
            let nodes = stack.nodes.iter().map(|(_, h)| *h).collect();
            let frontier = Frontier::new(last, nodes)
                .map_err(|e| fail(Failure::Proof, Some(proof_line), None, e.to_string()))?;
            let right = proof
                .right
                .iter()
                .find(|(s, _)| *s == c.tree_size)
                .map(|(_, n)| n.as_slice())
                .unwrap_or_default();
            root_with_right(&frontier, right, c.tree_size)
        };
        let Some(root) = root else {
            return Err(fail(
                Failure::Proof,
                Some(proof_line),
                None,
                format!(
                    "the proof lacks the subtrees right of seq {} needed for checkpoint tree size {}",
                    last.saturating_sub(1),
                    c.tree_size
                ),
            ));
        };
        if hash_hex(c.root_hash.as_bytes()) == Some(root) {
            verified = Some(c.tree_size);
            continue;
        }
        return Err(root_mismatch(first, last, verified, c, proof_line));
    }
    Ok(())
}

/// Names the likeliest culprit when checkpoint `c`'s root does not match, given that the
/// `prev` chain of the entries held and that checkpoint `verified` (if any) matched.
fn root_mismatch(
    first: u64,
    last: u64,
    verified: Option<u64>,
    c: &CheckpointReport,
    proof_line: u64,
) -> VerifyError {
    let size = c.tree_size;
    let mismatch = format!(
        "the recomputed root of tree size {size} does not match the signed checkpoint (line {})",
        c.line
    );
    let lo = verified.unwrap_or(first).max(first);
    let left_note = if verified.is_none() && first > 0 {
        " (or the proof's left subtrees were altered)"
    } else {
        ""
    };
    if lo >= last {
        // Every entry is already proven: only the right subtrees are left.
        return fail(
            Failure::Proof,
            Some(proof_line),
            None,
            format!("{mismatch}: the proof's right subtrees for tree size {size} are wrong"),
        );
    }
    if size >= last {
        // The last entry has no successor whose prev would show a change: the root does.
        let s = last - 1;
        let right_note = if size > last {
            " (or the proof's right subtrees were altered)"
        } else {
            ""
        };
        let earlier = if s > lo {
            format!(", or an entry from seq {lo} on was altered and every later prev recomputed")
        } else {
            String::new()
        };
        return fail(
            Failure::Altered,
            Some(line_of(first, s)),
            Some(s),
            format!("{mismatch}: entry seq {s} was altered{earlier}{right_note}{left_note}"),
        );
    }
    fail(
        Failure::Altered,
        Some(line_of(first, lo)),
        Some(lo),
        format!(
            "{mismatch}: one of the entries seq {lo}..={} was altered and the prev of every later \
             entry recomputed{left_note}",
            size - 1
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{select_rows, write_export, CheckpointRow, ExportParts};
    use crate::checkpoint::{LocalSigner, Signer};
    use crate::entry::encode_raw;
    use crate::event::{Actor, AuditEvent, Outcome};

    struct Log {
        log: Uuid,
        entries: Vec<String>,
        leaves: Vec<Hash>,
        rows: Vec<CheckpointRow>,
        signer: LocalSigner,
    }

    fn sign(signer: &LocalSigner, body: &str) -> String {
        use base64::Engine;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sig = rt.block_on(signer.sign(body.as_bytes())).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    /// A log sealed in batches of the given sizes, one signed checkpoint per batch.
    fn build(batches: &[u64]) -> Log {
        let log = Uuid::now_v7();
        let signer = LocalSigner::from_seed(&[7u8; 32]);
        let (mut entries, mut leaves, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let mut frontier = Frontier::default();
        let mut prev = GENESIS_PREV;
        for &b in batches {
            for _ in 0..b {
                let seq = frontier.size();
                let event =
                    AuditEvent::new(log, Actor::system("test"), "test.action", Outcome::Success)
                        .detail("n", seq);
                let line = encode_raw(
                    log,
                    seq,
                    &prev,
                    &crate::canonical::to_string(&event).unwrap(),
                );
                prev = leaf_hash(line.as_bytes());
                frontier.push(prev);
                leaves.push(prev);
                entries.push(line);
            }
            let body = CheckpointBody::new(
                log,
                frontier.size(),
                &frontier.root(),
                ClockStamp::default(),
                &signer.key_id(),
            )
            .encode()
            .unwrap();
            rows.push(CheckpointRow {
                tree_size: frontier.size(),
                signature: sign(&signer, &body),
                body,
                timestamp_token: None,
            });
        }
        Log {
            log,
            entries,
            leaves,
            rows,
            signer,
        }
    }

    impl Log {
        fn export(&self, first: u64, last: u64) -> Vec<String> {
            let checkpoints = select_rows(&self.rows, first, last);
            let keys = [self.signer.public_key()];
            let parts = ExportParts {
                log: self.log,
                from: None,
                to: None,
                first,
                last,
                exported_at: Utc::now(),
                leaves: &self.leaves,
                checkpoints: &checkpoints,
                keys: &keys,
            };
            let mut out = Vec::new();
            write_export(
                &mut out,
                &parts,
                &self.entries[first as usize..last as usize],
            )
            .unwrap();
            String::from_utf8(out)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    fn check(lines: &[String]) -> Result<VerifyReport, VerifyError> {
        check_with(lines, None)
    }

    fn check_with(
        lines: &[String],
        trusted: Option<&[PublicKeyInfo]>,
    ) -> Result<VerifyReport, VerifyError> {
        let text = lines.join("\n") + "\n";
        let two = verify_with_threads(text.as_bytes(), trusted, 2);
        let one = verify_with_threads(text.as_bytes(), trusted, 1);
        assert_eq!(one, two, "the result does not depend on the threads");
        two
    }

    /// Line of entry `seq` in an export starting at `first`.
    fn line(first: u64, seq: u64) -> usize {
        (1 + seq - first) as usize
    }

    fn expect(
        r: Result<VerifyReport, VerifyError>,
        failure: Failure,
        seq: u64,
        first: u64,
    ) -> VerifyError {
        let e = r.expect_err("verification should fail");
        assert_eq!(e.failure, failure, "{e}");
        assert_eq!(e.seq, Some(seq), "{e}");
        assert_eq!(e.line, Some(line(first, seq) as u64 + 1), "{e}");
        assert!(e.to_string().contains(&format!("seq {seq}")), "{e}");
        e
    }

    #[test]
    fn the_fast_path_reads_what_serde_reads() {
        let l = build(&[20]);
        let prev = hex::encode([0xabu8; 32]);
        let log = l.log;
        let good_events = [
            r#"{}"#,
            r#"[]"#,
            r#""s""#,
            r#"{"a":"q\"uo\\te\/\b\f\n\r\t\u00e9\ud83d\ude00 日本語 ","b":[1,-2,3.5,-0.25e-3,1E+9,0,true,false,null,{},[[]]],"c":{"d":{"e":"long string of more than eight bytes"}}}"#,
            "{ \"a\" : [ 1 , 2 ] , \"b\" : \"x\" }",
        ];
        let mut lines: Vec<String> = l.entries.clone();
        for (i, e) in good_events.iter().enumerate() {
            lines.push(encode_raw(log, 1000 + i as u64, &[0xab; 32], e));
        }
        for line in &lines {
            let fast = fast::entry(line.as_bytes());
            assert!(fast.is_some(), "the fast path should read {line}");
            assert_eq!(fast, slow(line).ok(), "{line}");
        }
        let bad_events = [
            "{\"a\":\"ctl\u{1}\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":.5}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1 2]}"#,
            r#"{a:1}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":-}"#,
        ];
        for e in bad_events {
            let line = encode_raw(log, 7, &[0xab; 32], e);
            assert_eq!(fast::entry(line.as_bytes()), None, "{line}");
            assert!(slow(&line).is_err(), "{line}");
            assert!(line_fields(line.as_bytes()).is_err(), "{line}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        let line = encode_raw(log, 7, &[0xab; 32], &deep);
        // Too deep for the fast path; serde_json skips it without a depth limit.
        assert_eq!(fast::entry(line.as_bytes()), None);
        assert_eq!(line_fields(line.as_bytes()), slow(&line));
        // Other layouts take the slow path and still read the same fields.
        let other =
            format!(r#"{{"type":"entry","seq":5,"prev":"{prev}","log":"{log}","event":{{}}}}"#);
        assert_eq!(fast::entry(other.as_bytes()), None);
        assert_eq!(
            line_fields(other.as_bytes()),
            Ok(LineFieldsOf::Entry {
                log: &log.to_string(),
                seq: 5,
                prev: &prev
            })
        );
        let leading_zero = encode_raw(log, 5, &[0xab; 32], "{}").replace("\"seq\":5", "\"seq\":05");
        assert!(line_fields(leading_zero.as_bytes()).is_err());
        let dup = encode_raw(log, 5, &[0xab; 32], "{}").replace(",\"type\"", ",\"seq\":6,\"type\"");
        assert!(
            line_fields(dup.as_bytes()).is_err(),
            "duplicate fields are refused"
        );
        assert!(line_fields(b"{\"type\":\"entry\",\"x\":\"\xff\"}").is_err());
    }

    const BATCHES: [u64; 7] = [5, 7, 3, 10, 1, 8, 6];

    #[test]
    fn good_exports_verify() {
        let l = build(&BATCHES); // checkpoints at 5, 12, 15, 25, 26, 34, 40
        for (first, last) in [
            (0, 40),
            (9, 23),
            (0, 5),
            (5, 12),
            (12, 25),
            (39, 40),
            (13, 14),
            (3, 3),
            (0, 1),
            (26, 34),
        ] {
            let r =
                check(&l.export(first, last)).unwrap_or_else(|e| panic!("{first}..{last}: {e}"));
            assert_eq!((r.first, r.last, r.entries), (first, last, last - first));
            assert_eq!(r.checkpoints.last().map(|c| c.tree_size), Some(40));
            for s in first..last {
                let c = r.sealed_by(s).unwrap();
                let (lo, hi) = c.first_seals.unwrap();
                assert!(lo <= s && s < hi && c.tree_size > s);
            }
            assert!(matches!(r.keys, KeyTrust::FromExport(_)));
        }
        let r = check(&l.export(9, 23)).unwrap();
        let sizes: Vec<u64> = r.checkpoints.iter().map(|c| c.tree_size).collect();
        assert_eq!(sizes, vec![12, 15, 25, 40]);
        assert_eq!(r.sealed_by(9).unwrap().tree_size, 12);
        assert_eq!(r.sealed_by(14).unwrap().tree_size, 15);
        assert_eq!(r.sealed_by(22).unwrap().tree_size, 25);
        assert_eq!(r.checkpoints[3].first_seals, None);
        let text = r.to_string();
        assert!(text.contains("entries verified: 14 (seq 9..=22)"), "{text}");
        assert!(text.contains("no trusted key given"), "{text}");

        let trusted = [l.signer.public_key()];
        let r = check_with(&l.export(9, 23), Some(&trusted)).unwrap();
        assert!(matches!(r.keys, KeyTrust::Supplied(_)));
        let b64 = l.signer.public_key().public_key;
        assert_eq!(trusted_ed25519_key(&b64).unwrap(), l.signer.public_key());
    }

    #[test]
    fn roots_from_blocks_and_leaves_agree() {
        let l = build(&[70, 64, 1, 130, 35, 64, 10]);
        for (first, last) in [
            (0, 374),
            (5, 290),
            (64, 128),
            (63, 129),
            (65, 300),
            (128, 192),
            (200, 374),
        ] {
            let r =
                check(&l.export(first, last)).unwrap_or_else(|e| panic!("{first}..{last}: {e}"));
            assert_eq!(r.entries, last - first);
            let mut lines = l.export(first, last);
            let i = line(first, last - 1);
            lines[i] = lines[i].replacen("test.action", "test.actioN", 1);
            expect(check(&lines), Failure::Altered, last - 1, first);
        }
    }

    #[test]
    fn hex_hashes() {
        let h = [0xabu8; 32];
        assert_eq!(hash_hex(hex::encode(h).as_bytes()), Some(h));
        assert_eq!(hash_hex(hex::encode_upper(h).as_bytes()), Some(h));
        assert_eq!(hash_hex(&[b'a'; 63]), None);
        let mut bad = hex::encode(h).into_bytes();
        bad[7] = b'g';
        assert_eq!(hash_hex(&bad), None);
    }

    #[test]
    fn a_changed_byte_in_any_entry_names_that_entry() {
        let l = build(&BATCHES);
        for (first, last) in [(0, 40), (9, 23), (13, 14), (12, 15)] {
            let good = l.export(first, last);
            for seq in first..last {
                let mut lines = good.clone();
                let i = line(first, seq);
                lines[i] = lines[i].replacen("test.action", "test.actioN", 1);
                let e = expect(check(&lines), Failure::Altered, seq, first);
                assert!(e.message.contains("altered"), "{e}");
            }
        }
    }

    #[test]
    fn a_changed_prev_names_that_entry() {
        let l = build(&BATCHES);
        let (first, last) = (9, 23);
        let good = l.export(first, last);
        for seq in first..last {
            let mut lines = good.clone();
            let i = line(first, seq);
            let at = lines[i].find("\"prev\":\"").unwrap() + 8;
            let c = if &lines[i][at..at + 1] == "0" {
                "1"
            } else {
                "0"
            };
            lines[i].replace_range(at..at + 1, c);
            if seq + 1 < last {
                expect(check(&lines), Failure::Altered, seq, first);
            } else {
                // The last entry has no successor to tell its changed prev from a change to
                // the entry before it: the message says both.
                let e = expect(check(&lines), Failure::Altered, seq - 1, first);
                assert!(
                    e.message.contains("or that entry's prev was altered"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn a_changed_seq_names_that_entry() {
        let l = build(&BATCHES);
        let (first, last) = (9, 23);
        let good = l.export(first, last);
        for (seq, to) in [(9, 10), (15, 31), (15, 2), (22, 99), (16, 17)] {
            let mut lines = good.clone();
            let i = line(first, seq);
            lines[i] = lines[i].replace(&format!("\"seq\":{seq},"), &format!("\"seq\":{to},"));
            expect(check(&lines), Failure::Altered, seq, first);
        }
    }

    #[test]
    fn a_deleted_entry_is_missing() {
        let l = build(&BATCHES);
        for (first, last) in [(0, 40), (9, 23)] {
            let good = l.export(first, last);
            for seq in [first, first + 1, (first + last) / 2, last - 2, last - 1] {
                let mut lines = good.clone();
                lines.remove(line(first, seq));
                let e = check(&lines).unwrap_err();
                assert_eq!((e.failure, e.seq), (Failure::Missing, Some(seq)), "{e}");
            }
            // Several in a row.
            let mut lines = good.clone();
            lines.drain(line(first, first + 2)..line(first, first + 5));
            let e = check(&lines).unwrap_err();
            assert_eq!(
                (e.failure, e.seq),
                (Failure::Missing, Some(first + 2)),
                "{e}"
            );
            assert!(
                e.message
                    .contains(&format!("{}..={}", first + 2, first + 4)),
                "{e}"
            );
        }
    }

    #[test]
    fn an_inserted_entry_is_named() {
        let l = build(&BATCHES);
        let (first, last) = (9, 23);
        let good = l.export(first, last);
        // A copy of an entry right after it, right before it, and at the end.
        for seq in [first, 15, last - 1] {
            let i = line(first, seq);
            let mut lines = good.clone();
            lines.insert(i + 1, good[i].clone());
            let e = check(&lines).unwrap_err();
            assert_eq!(
                (e.failure, e.seq, e.line),
                (Failure::Inserted, Some(seq), Some(i as u64 + 2)),
                "{e}"
            );
        }
        // A forged entry with a taken seq and the right prev, before the real one.
        for seq in [first + 1, 15, last - 1] {
            let i = line(first, seq);
            let mut lines = good.clone();
            let forged = encode_raw(
                l.log,
                seq,
                &l.leaves[seq as usize - 1],
                r#"{"forged":true}"#,
            );
            lines.insert(i, forged);
            let e = check(&lines).unwrap_err();
            assert_eq!(
                (e.failure, e.seq, e.line),
                (Failure::Inserted, Some(seq), Some(i as u64 + 1)),
                "{e}"
            );
        }
        // A forged entry with a fresh seq in the middle.
        let mut lines = good.clone();
        lines.insert(
            line(first, 15),
            encode_raw(l.log, 1000, &l.leaves[14], "{}"),
        );
        let e = check(&lines).unwrap_err();
        assert_eq!((e.failure, e.seq), (Failure::Inserted, Some(1000)), "{e}");
        // Appended after the last entry with the header's range widened: never sealed.
        let mut lines = l.export(34, 40);
        lines.insert(line(34, 40), encode_raw(l.log, 40, &l.leaves[39], "{}"));
        lines[0] = lines[0].replace("\"last\":40", "\"last\":41");
        expect(check(&lines), Failure::Unsealed, 40, 34);
        // Appended without touching the header.
        let mut lines = l.export(34, 40);
        lines.insert(line(34, 40), encode_raw(l.log, 40, &l.leaves[39], "{}"));
        expect(check(&lines), Failure::Inserted, 40, 34);
        // After the checkpoint lines.
        let mut lines = good.clone();
        let n = lines.len();
        lines.insert(n - 1, good[line(first, 12)].clone());
        let e = check(&lines).unwrap_err();
        assert_eq!((e.failure, e.seq), (Failure::Inserted, Some(12)), "{e}");
    }

    #[test]
    fn swapped_entries_are_reordered() {
        let l = build(&BATCHES);
        let (first, last) = (9, 23);
        let good = l.export(first, last);
        for (a, b) in [(9, 10), (15, 16), (21, 22), (10, 20), (9, 22)] {
            let mut lines = good.clone();
            lines.swap(line(first, a), line(first, b));
            let e = check(&lines).unwrap_err();
            assert_eq!(e.failure, Failure::Reordered, "{e}");
            assert_eq!(
                (e.seq, e.line),
                (Some(b), Some(line(first, a) as u64 + 1)),
                "{e}"
            );
            assert!(e.message.contains(&format!("seq {a}")), "{e}");
        }
    }

    #[test]
    fn an_entry_of_another_log_is_refused() {
        let l = build(&BATCHES);
        let other = build(&[30]);
        let mut lines = l.export(9, 23);
        lines[line(9, 14)] = other.entries[14].clone();
        expect(check(&lines), Failure::WrongLog, 14, 9);
    }

    #[test]
    fn a_malformed_entry_is_named() {
        let l = build(&BATCHES);
        let mut lines = l.export(9, 23);
        lines[line(9, 14)].pop();
        expect(check(&lines), Failure::Malformed, 14, 9);
        let mut lines = l.export(9, 23);
        lines[line(9, 14)] = lines[line(9, 14)].replace("\"type\":\"entry\"", "\"type\":\"entrx\"");
        expect(check(&lines), Failure::Malformed, 14, 9);
    }

    #[test]
    fn checkpoint_and_key_tampering_is_caught() {
        let l = build(&BATCHES);
        let (first, last) = (9, 23);
        let good = l.export(first, last);
        let cp_line = line(first, last); // the first checkpoint line (index)
                                         // A changed body: the signature no longer verifies.
        for (from, to) in [
            ("\\\"tree_size\\\":12", "\\\"tree_size\\\":13"),
            ("\\\"root_hash\\\":\\\"", "\\\"root_hash\\\":\\\"0"),
        ] {
            let mut lines = good.clone();
            assert!(lines[cp_line].contains(from), "{}", lines[cp_line]);
            lines[cp_line] = lines[cp_line].replacen(from, to, 1);
            let e = check(&lines).unwrap_err();
            assert_eq!(e.failure, Failure::BadSignature, "{e}");
            assert_eq!(e.line, Some(cp_line as u64 + 1), "{e}");
        }
        let mut lines = good.clone();
        lines[cp_line] = lines[cp_line].replacen("\\\"tree_size\\\":12", "\\\"tree_size\\\":13", 1);
        let e = check(&lines).unwrap_err();
        assert_eq!(e.failure, Failure::BadSignature);
        // A signature from another key, or another key in the header.
        let other = LocalSigner::from_seed(&[9u8; 32]);
        let e = check_with(&good, Some(&[other.public_key()])).unwrap_err();
        assert_eq!(
            (e.failure, e.line),
            (Failure::UnknownKey, Some(cp_line as u64 + 1)),
            "{e}"
        );
        let mut lines = good.clone();
        lines[0] = lines[0].replace(
            &l.signer.public_key().public_key,
            &other.public_key().public_key,
        );
        let e = check(&lines).unwrap_err();
        assert_eq!(e.failure, Failure::BadSignature, "{e}");
        // A checkpoint re-signed by another key, trusted keys given: unknown key.
        let body = l.rows[1].body.replace(&l.signer.key_id(), &other.key_id());
        let mut lines = good.clone();
        lines[cp_line] = serde_json::to_string(&CheckpointLine {
            kind: "checkpoint".into(),
            signature: sign(&other, &body),
            body,
            timestamp_token: None,
        })
        .unwrap();
        let e = check_with(&lines, Some(&[l.signer.public_key()])).unwrap_err();
        assert_eq!(e.failure, Failure::UnknownKey, "{e}");
        // Checkpoints out of order.
        let mut lines = good.clone();
        lines.swap(cp_line, cp_line + 1);
        assert_eq!(check(&lines).unwrap_err().failure, Failure::Checkpoint);
        // A checkpoint dropped: the entries it covered are still covered by later ones...
        let mut lines = good.clone();
        lines.remove(cp_line);
        check(&lines).unwrap();
        // ...but not when the last one goes.
        let mut lines = l.export(34, 40);
        let n = lines.len();
        lines.remove(n - 2);
        let e = check(&lines).unwrap_err();
        assert_eq!(e.failure, Failure::Unsealed, "{e}");
    }

    #[test]
    fn proof_tampering_is_caught() {
        let l = build(&BATCHES);
        let (first, last) = (9, 23);
        let good = l.export(first, last);
        let n = good.len();
        let mut p: ProofLine = serde_json::from_str(&good[n - 1]).unwrap();
        let with = |p: &ProofLine| {
            let mut lines = good.clone();
            lines[n - 1] = serde_json::to_string(p).unwrap();
            check(&lines)
        };
        let orig = p.clone();
        p.left[0].hash = hex::encode([1u8; 32]);
        let e = with(&p).unwrap_err();
        assert!(e.message.contains("left subtrees"), "{e}");
        p = orig.clone();
        p.left.pop();
        assert_eq!(with(&p).unwrap_err().failure, Failure::Proof);
        p = orig.clone();
        p.prev_hash = Some(hex::encode([1u8; 32]));
        assert_eq!(with(&p).unwrap_err().failure, Failure::Proof);
        p = orig.clone();
        p.right[0].nodes[0].hash = hex::encode([1u8; 32]);
        let e = with(&p).unwrap_err();
        assert!(e.message.contains("right subtrees"), "{e}");
        p = orig.clone();
        p.right.clear();
        assert_eq!(with(&p).unwrap_err().failure, Failure::Proof);
        let mut lines = good.clone();
        lines.pop();
        assert_eq!(check(&lines).unwrap_err().failure, Failure::Malformed);
        // The header.
        let mut lines = good.clone();
        lines[0] = lines[0].replace(crate::format::FORMAT, "anshin-audit-export/9");
        assert_eq!(check(&lines).unwrap_err().failure, Failure::Header);
    }

    #[test]
    fn large_exports_across_chunks() {
        let l = build(&[3000, 5000, 1, 4000, 2999]);
        let (first, last) = (1000, 14000);
        let good = l.export(first, last);
        let r = check(&good).unwrap();
        assert_eq!(r.entries, 13000);
        for seq in [
            first + CHUNK_LINES as u64 - 2,
            first + CHUNK_LINES as u64 - 1,
            first + CHUNK_LINES as u64,
            12000,
            last - 1,
        ] {
            let mut lines = good.clone();
            let i = line(first, seq);
            lines[i] = lines[i].replacen("test.action", "test.actioN", 1);
            expect(check(&lines), Failure::Altered, seq, first);
            let mut lines = good.clone();
            lines.remove(i);
            let e = check(&lines).unwrap_err();
            assert_eq!((e.failure, e.seq), (Failure::Missing, Some(seq)), "{e}");
        }
        let mut lines = good.clone();
        lines.swap(line(first, 2000), line(first, 2000 + 3000));
        let e = check(&lines).unwrap_err();
        assert_eq!((e.failure, e.seq), (Failure::Reordered, Some(5000)), "{e}");
    }
}
