//! Merkle tree hashing as in RFC 9162 §2.1: leaf = SHA-256(0x00 ‖ data), node =
//! SHA-256(0x01 ‖ left ‖ right), and a tree of n leaves splits at the largest power of two
//! smaller than n. Inclusion and consistency proofs follow §2.1.3 and §2.1.4.
//!
//! Besides the RFC's proofs, a *range proof* lets a verifier recompute the root of a tree of
//! `size` leaves from a contiguous run of leaves `[first, last)` plus the hashes of the subtrees
//! left and right of the run (see `docs/audit-verification.md`). The left subtrees are the
//! perfect, aligned subtrees of `[0, first)`: the same whatever the tree size, which is why one
//! export can prove several checkpoints.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// MTH of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[0:n]) of the given leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::default();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

/// The roots of the perfect subtrees that make up `[0, size)`, largest (leftmost) first: all a
/// log needs to append leaves and compute its root without reading earlier leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a frontier of size {size} needs {expected} subtree hashes, got {got}")]
pub struct FrontierError {
    pub size: u64,
    pub expected: u32,
    pub got: usize,
}

impl Frontier {
    pub fn new(size: u64, nodes: Vec<Hash>) -> Result<Self, FrontierError> {
        if nodes.len() != size.count_ones() as usize {
            return Err(FrontierError {
                size,
                expected: size.count_ones(),
                got: nodes.len(),
            });
        }
        Ok(Self { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// The frontier's subtrees as `(lo, hi)` leaf ranges with their hashes.
    pub fn ranges(&self) -> Vec<(u64, u64, Hash)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut lo = 0u64;
        let mut bits: Vec<u32> = (0..64).rev().filter(|b| self.size >> b & 1 == 1).collect();
        bits.truncate(self.nodes.len());
        for (b, h) in bits.into_iter().zip(&self.nodes) {
            let hi = lo + (1u64 << b);
            out.push((lo, hi, *h));
            lo = hi;
        }
        out
    }

    pub fn push(&mut self, leaf: Hash) {
        self.nodes.push(leaf);
        self.size += 1;
        let mut s = self.size;
        while s & 1 == 0 {
            let (Some(right), Some(left)) = (self.nodes.pop(), self.nodes.pop()) else {
                break;
            };
            self.nodes.push(node_hash(&left, &right));
            s >>= 1;
        }
    }

    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, n| node_hash(n, &acc))
    }
}

/// MTH of `leaves[lo..hi]`.
fn subtree(leaves: &[Hash], lo: u64, hi: u64) -> Hash {
    match hi - lo {
        0 => empty_root(),
        1 => leaves[lo as usize],
        n => {
            let k = split(n);
            node_hash(&subtree(leaves, lo, lo + k), &subtree(leaves, lo + k, hi))
        }
    }
}

/// A subtree hash named by the leaf range it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeNode {
    pub lo: u64,
    pub hi: u64,
    pub hash: Hash,
}

/// The subtrees outside `[first, last)` that recomputing the root of `[0, size)` needs, given
/// every leaf hash of the tree (`leaves.len() ≥ size`). Left of `first` they are the frontier
/// of `first`; right of `last` they depend on `size`.
pub fn range_nodes(leaves: &[Hash], first: u64, last: u64, size: u64) -> Vec<RangeNode> {
    let mut out = Vec::new();
    if size == 0 {
        return out;
    }
    walk(leaves, 0, size, first, last, &mut out);
    out
}

fn walk(leaves: &[Hash], lo: u64, hi: u64, first: u64, last: u64, out: &mut Vec<RangeNode>) {
    if hi <= first || lo >= last {
        out.push(RangeNode {
            lo,
            hi,
            hash: subtree(leaves, lo, hi),
        });
        return;
    }
    if lo >= first && hi <= last {
        return;
    }
    let k = split(hi - lo);
    walk(leaves, lo, lo + k, first, last, out);
    walk(leaves, lo + k, hi, first, last, out);
}

/// Recomputes the root of `[0, size)` from a frontier covering `[0, frontier.size())` and the
/// subtrees to its right (`right`, as produced by [`range_nodes`]). Returns `None` when a
/// needed subtree is missing.
pub fn root_with_right(frontier: &Frontier, right: &[RangeNode], size: u64) -> Option<Hash> {
    if size == frontier.size() {
        return Some(frontier.root());
    }
    if size < frontier.size() {
        return None;
    }
    let left = frontier.ranges();
    let find = |lo: u64, hi: u64| -> Option<Hash> {
        left.iter()
            .find(|(l, h, _)| *l == lo && *h == hi)
            .map(|(_, _, x)| *x)
            .or_else(|| {
                right
                    .iter()
                    .find(|n| n.lo == lo && n.hi == hi)
                    .map(|n| n.hash)
            })
    };
    fn go(lo: u64, hi: u64, find: &dyn Fn(u64, u64) -> Option<Hash>) -> Option<Hash> {
        if let Some(h) = find(lo, hi) {
            return Some(h);
        }
        if hi - lo < 2 {
            return None;
        }
        let k = split(hi - lo);
        Some(node_hash(&go(lo, lo + k, find)?, &go(lo + k, hi, find)?))
    }
    go(0, size, &find)
}

/// RFC 9162 §2.1.3.1: the audit path for leaf `index` in the tree of the first `size` leaves.
pub fn inclusion_proof(leaves: &[Hash], index: u64, size: u64) -> Vec<Hash> {
    fn path(leaves: &[Hash], m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(leaves, m, lo, lo + k, out);
            out.push(subtree(leaves, lo + k, hi));
        } else {
            path(leaves, m - k, lo + k, hi, out);
            out.push(subtree(leaves, lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if index < size && size as usize <= leaves.len() {
        path(leaves, index, 0, size, &mut out);
    }
    out
}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnum, mut snum) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snum == 0 {
            return false;
        }
        if fnum & 1 == 1 || fnum == snum {
            r = node_hash(p, &r);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    snum == 0 && r == *root
}

/// RFC 9162 §2.1.4.1: proof that the tree of `old` leaves is a prefix of the tree of `new`.
pub fn consistency_proof(leaves: &[Hash], old: u64, new: u64) -> Vec<Hash> {
    fn subproof(leaves: &[Hash], m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(subtree(leaves, lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(leaves, m, lo, lo + k, complete, out);
            out.push(subtree(leaves, lo + k, hi));
        } else {
            subproof(leaves, m - k, lo + k, hi, false, out);
            out.push(subtree(leaves, lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if 0 < old && old < new && new as usize <= leaves.len() {
        subproof(leaves, old, 0, new, true, &mut out);
    }
    out
}

/// RFC 9162 §2.1.4.2.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 || old > new {
        return false;
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        proof.insert(0, *old_root);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut fnum, mut snum) = (old - 1, new - 1);
    while fnum & 1 == 1 {
        fnum >>= 1;
        snum >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snum == 0 {
            return false;
        }
        if fnum & 1 == 1 || fnum == snum {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    fr == *old_root && sr == *new_root && snum == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn rfc_shapes() {
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_eq!(root(&[]), empty_root());
        assert_eq!(root(&l[..1]), l[0]);
        // Known answer: SHA-256 of the empty string.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn frontier_matches_recursive_definition() {
        let l = leaves(70);
        let mut f = Frontier::default();
        for (i, h) in l.iter().enumerate() {
            f.push(*h);
            assert_eq!(f.root(), subtree(&l, 0, i as u64 + 1), "size {}", i + 1);
            let again = Frontier::new(f.size(), f.nodes().to_vec()).unwrap();
            assert_eq!(again, f);
        }
        assert!(Frontier::new(3, vec![l[0]]).is_err());
    }

    #[test]
    fn inclusion_proofs_verify_and_fail_when_wrong() {
        let l = leaves(37);
        for size in 1..=37u64 {
            let r = subtree(&l, 0, size);
            for i in 0..size {
                let p = inclusion_proof(&l, i, size);
                assert!(
                    verify_inclusion(&l[i as usize], i, size, &p, &r),
                    "{i}/{size}"
                );
                if size > 1 {
                    let other = (i + 1) % size;
                    assert!(!verify_inclusion(&l[other as usize], i, size, &p, &r));
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_fail_when_wrong() {
        let l = leaves(33);
        for new in 1..=33u64 {
            for old in 1..=new {
                let p = consistency_proof(&l, old, new);
                let (ro, rn) = (subtree(&l, 0, old), subtree(&l, 0, new));
                assert!(verify_consistency(old, new, &p, &ro, &rn), "{old}->{new}");
                if old < new {
                    assert!(!verify_consistency(old, new, &p, &l[0], &rn) || old == 1);
                }
            }
        }
    }

    #[test]
    fn range_nodes_recompute_every_root() {
        let l = leaves(45);
        for size in 1..=45u64 {
            for first in 0..size {
                for last in (first + 1)..=size {
                    let nodes = range_nodes(&l, first, last, size);
                    let left: Vec<Hash> = nodes
                        .iter()
                        .filter(|n| n.hi <= first)
                        .map(|n| n.hash)
                        .collect();
                    let mut f = Frontier::new(first, left).unwrap();
                    for h in &l[first as usize..last as usize] {
                        f.push(*h);
                    }
                    let right: Vec<RangeNode> =
                        nodes.into_iter().filter(|n| n.lo >= last).collect();
                    assert_eq!(
                        root_with_right(&f, &right, size),
                        Some(subtree(&l, 0, size)),
                        "{first}..{last} of {size}"
                    );
                }
            }
        }
    }
}
