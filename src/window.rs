//! Sequences longer than the model's window, never truncated: they run as overlapping windows,
//! as transformers' tokenizers cut them with `return_overflowing_tokens=True, stride=S` (each
//! window repeats the last S tokens of the one before), and every token takes its prediction
//! from the window in which it is most central (farthest from an edge, where the context is
//! cut). Evaluation and tagging run every sequence through `log_probs`; training takes each
//! window as an example (`align::AlignedCorpus::windows`).

use std::ops::Range;

use candle_core::D;

use crate::error::{Error, Result};
use crate::model::TokenClassifier;

/// The window size and overlap, in tokens, special tokens included in `max_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowOptions {
    pub max_len: usize,
    pub stride: usize,
}

impl WindowOptions {
    /// `--max-length` and `--stride` for `model`: at most what its position embeddings allow.
    pub fn new(model: &TokenClassifier, max_len: Option<usize>, stride: usize) -> Result<Self> {
        let limit = model.max_tokens();
        let max_len = max_len.unwrap_or(limit);
        if max_len > limit {
            return Err(Error::Usage(format!("--max-length {max_len}: the model takes at most {limit} tokens")));
        }
        Self::checked(max_len, stride)
    }

    pub fn checked(max_len: usize, stride: usize) -> Result<Self> {
        // Room for the special tokens and windows that advance by more than they overlap.
        if max_len < 8 {
            return Err(Error::Usage(format!("--max-length {max_len}: at least 8 tokens")));
        }
        if 2 * stride >= max_len - 2 {
            return Err(Error::Usage(format!(
                "--stride {stride}: must be under half of --max-length {max_len} less its two special tokens"
            )));
        }
        Ok(WindowOptions { max_len, stride })
    }
}

/// A token sequence as the tokenizer made it: `prefix` special tokens, content, `suffix` ones.
#[derive(Clone, Copy, Debug)]
pub struct Sequence<'a> {
    pub ids: &'a [u32],
    pub prefix: usize,
    pub suffix: usize,
}

impl<'a> Sequence<'a> {
    /// Special tokens are those without a word (`None`) at the start and end.
    pub fn from_word_ids(ids: &'a [u32], word_ids: &[Option<u32>]) -> Self {
        let prefix = word_ids.iter().take_while(|w| w.is_none()).count();
        let suffix =
            if prefix == word_ids.len() { 0 } else { word_ids.iter().rev().take_while(|w| w.is_none()).count() };
        Sequence { ids, prefix, suffix }
    }

    fn content_len(&self) -> usize {
        self.ids.len() - self.prefix - self.suffix
    }
}

/// Content ranges of `len` tokens in windows of `size`, consecutive ones sharing `stride`
/// tokens; one range when it fits.
pub fn plan(len: usize, size: usize, stride: usize) -> Vec<Range<usize>> {
    if len <= size {
        return std::iter::once(0..len).collect();
    }
    let step = size.saturating_sub(stride).max(1);
    let mut out = vec![];
    let mut start = 0;
    loop {
        let end = (start + size).min(len);
        out.push(start..end);
        if end == len {
            return out;
        }
        start += step;
    }
}

/// For each of `len` tokens, the window (index into `windows`, sorted by start) in which it is
/// farthest from an edge; the earlier window on a tie.
pub fn owners(windows: &[Range<usize>], len: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(len);
    let mut first = 0;
    for p in 0..len {
        while windows[first].end <= p {
            first += 1;
        }
        let mut best = (first, 0usize);
        let mut k = first;
        while k < windows.len() && windows[k].start <= p {
            let w = &windows[k];
            let margin = (p - w.start).min(w.end - 1 - p);
            if k == first || margin > best.1 {
                best = (k, margin);
            }
            k += 1;
        }
        out.push(best.0);
    }
    out
}

/// The ids of one window: the sequence's special tokens around `range` of its content.
pub fn window_ids(seq: &Sequence, range: &Range<usize>) -> Vec<u32> {
    let n = seq.ids.len();
    let mut ids = Vec::with_capacity(seq.prefix + range.len() + seq.suffix);
    ids.extend_from_slice(&seq.ids[..seq.prefix]);
    ids.extend_from_slice(&seq.ids[seq.prefix + range.start..seq.prefix + range.end]);
    ids.extend_from_slice(&seq.ids[n - seq.suffix..]);
    ids
}

/// Per sequence, per token, the log-probability of every label. Sequences (or their windows)
/// run in batches of up to `batch_size` formed in order of length; `on_batch(done, total)`
/// hears how many pieces (sequences or windows) have run, for progress bars.
pub fn log_probs(
    model: &TokenClassifier,
    sequences: &[Sequence],
    options: WindowOptions,
    batch_size: usize,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Vec<Vec<Vec<f32>>>> {
    struct Piece {
        sequence: usize,
        window: usize,
        ids: Option<Vec<u32>>,
    }
    let mut plans = Vec::with_capacity(sequences.len());
    let mut pieces = Vec::with_capacity(sequences.len());
    for (i, seq) in sequences.iter().enumerate() {
        let size = options.max_len.saturating_sub(seq.prefix + seq.suffix).max(1);
        let windows = if seq.ids.len() <= options.max_len {
            std::iter::once(0..seq.content_len()).collect()
        } else {
            plan(seq.content_len(), size, options.stride)
        };
        for (k, range) in windows.iter().enumerate() {
            let ids = (windows.len() > 1).then(|| window_ids(seq, range));
            pieces.push(Piece { sequence: i, window: k, ids });
        }
        plans.push(windows);
    }
    fn ids_of<'p>(p: &'p Piece, sequences: &'p [Sequence]) -> &'p [u32] {
        match &p.ids {
            Some(ids) => ids,
            None => sequences[p.sequence].ids,
        }
    }
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by_key(|&i| ids_of(&pieces[i], sequences).len());
    // Per sequence, per window, its rows: filled as batches come back.
    let mut rows: Vec<Vec<Vec<Vec<f32>>>> = plans.iter().map(|w| vec![vec![]; w.len()]).collect();
    let device = model.device().clone();
    let mut done = 0;
    for chunk in order.chunks(batch_size.max(1)) {
        let ids: Vec<&[u32]> = chunk.iter().map(|&i| ids_of(&pieces[i], sequences)).collect();
        let batch = crate::batch::collate_ids(model, &ids, &device)?;
        let lp: Vec<Vec<Vec<f32>>> =
            candle_nn::ops::log_softmax(&model.forward(&batch, None)?, D::Minus1)?.to_vec3()?;
        for (&i, mut r) in chunk.iter().zip(lp) {
            r.truncate(ids_of(&pieces[i], sequences).len());
            rows[pieces[i].sequence][pieces[i].window] = r;
        }
        done += chunk.len();
        on_batch(done, pieces.len());
    }
    Ok(sequences
        .iter()
        .zip(plans)
        .zip(rows)
        .map(|((seq, windows), mut rows)| merge(seq, &windows, &mut rows))
        .collect())
}

/// The best label of a row of scores and its score: the first of equal maxima, as numpy's
/// `argmax` picks it (transformers' pipeline).
pub fn best_label(row: &[f32]) -> (usize, f32) {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (k, &x)| if x > a.1 { (k, x) } else { a })
}

/// One sequence's rows from its windows' rows: specials from the first and last window, each
/// content token from its owner.
fn merge(seq: &Sequence, windows: &[Range<usize>], rows: &mut [Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    if rows.len() == 1 {
        return std::mem::take(&mut rows[0]);
    }
    let len = seq.content_len();
    let owner = owners(windows, len);
    let mut out = Vec::with_capacity(seq.ids.len());
    out.extend(rows[0][..seq.prefix].iter().cloned());
    for (p, &k) in owner.iter().enumerate() {
        out.push(rows[k][seq.prefix + p - windows[k].start].clone());
    }
    let last = &rows[rows.len() - 1];
    out.extend(last[last.len() - seq.suffix..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_everything_and_overlap_by_the_stride() {
        assert_eq!(plan(5, 8, 2), vec![0..5]);
        let w = plan(20, 8, 2);
        assert_eq!(w, vec![0..8, 6..14, 12..20]);
        let w = plan(21, 8, 3);
        assert_eq!(w.last().unwrap().end, 21);
        for pair in w.windows(2) {
            assert_eq!(pair[0].end - pair[1].start, 3);
        }
    }

    #[test]
    fn each_token_belongs_to_the_window_where_it_is_most_central() {
        let w = plan(20, 8, 4); // 0..8, 4..12, 8..16, 12..20
        let o = owners(&w, 20);
        assert_eq!(o.len(), 20);
        assert_eq!(&o[..6], &[0, 0, 0, 0, 0, 0]);
        assert_eq!(o[6], 1); // margin 1 in window 0, 2 in window 1
        assert_eq!(o[19], 3);
        for (p, &k) in o.iter().enumerate() {
            assert!(w[k].contains(&p));
        }
    }

    #[test]
    fn window_ids_keep_the_special_tokens() {
        let ids = [0, 10, 11, 12, 13, 2];
        let seq = Sequence::from_word_ids(&ids, &[None, Some(0), Some(1), Some(1), Some(2), None]);
        assert_eq!((seq.prefix, seq.suffix), (1, 1));
        assert_eq!(window_ids(&seq, &(1..3)), vec![0, 11, 12, 2]);
    }
}
