//! What a corpus file holds, for `xner data stats FILE...`: sentences, words, entities per
//! type, the label set, the scheme and its violations, and (given a tokenizer) how long the
//! sentences are in subwords, against the model's window.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Corpus, ReadReport};
use crate::metrics;

/// Minimum, mean, median, 95th percentile and maximum of a list of lengths.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub min: usize,
    pub mean: f64,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
}

impl Summary {
    pub fn of(values: &[usize]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        // Nearest-rank percentiles: the value at ceil(p * n) (1-based).
        let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Summary {
            min: sorted[0],
            mean: sorted.iter().sum::<usize>() as f64 / sorted.len() as f64,
            median: rank(0.5),
            p95: rank(0.95),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// Sentence lengths in subwords (special tokens included).
#[derive(Clone, Debug, Serialize)]
pub struct SubwordStats {
    pub summary: Summary,
    /// Sentences longer than the window (`window`): they run as overlapping windows.
    pub window: usize,
    pub longer_than_window: usize,
    /// Sentences per length bucket, `(upper bound, count)`; the last bound is `usize::MAX`.
    pub histogram: Vec<(usize, usize)>,
}

impl SubwordStats {
    pub fn of(lengths: &[usize], window: usize) -> SubwordStats {
        let bounds = [16, 32, 64, 128, 256, 512, usize::MAX];
        let mut histogram: Vec<(usize, usize)> = bounds.iter().map(|&b| (b, 0)).collect();
        for &n in lengths {
            if let Some(bucket) = histogram.iter_mut().find(|(b, _)| n <= *b) {
                bucket.1 += 1;
            }
        }
        SubwordStats {
            summary: Summary::of(lengths),
            window,
            longer_than_window: lengths.iter().filter(|&&n| n > window).count(),
            histogram,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FileStats {
    pub read: ReadReport,
    pub sentences: usize,
    pub words: usize,
    pub words_per_sentence: Summary,
    /// Entities per type (seqeval's chunks of the IOB2 tags).
    pub entities: BTreeMap<String, usize>,
    pub labels: Vec<String>,
    pub subwords: Option<SubwordStats>,
}

impl FileStats {
    pub fn of(corpus: &Corpus, read: ReadReport, subwords: Option<SubwordStats>) -> FileStats {
        let lengths: Vec<usize> = corpus.sentences.iter().map(|s| s.words.len()).collect();
        let mut entities: BTreeMap<String, usize> = corpus.labels.entity_types().into_iter().map(|t| (t, 0)).collect();
        for s in &corpus.sentences {
            for (ty, _, _) in metrics::get_entities(&corpus.tags(s)) {
                *entities.entry(ty).or_default() += 1;
            }
        }
        FileStats {
            read,
            sentences: corpus.len(),
            words: lengths.iter().sum(),
            words_per_sentence: Summary::of(&lengths),
            entities,
            labels: corpus.labels.names().to_vec(),
            subwords,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_ranks() {
        let s = Summary::of(&[5, 1, 3, 2, 4]);
        assert_eq!((s.min, s.median, s.p95, s.max), (1, 3, 5, 5));
        assert_eq!(s.mean, 3.0);
        let h = SubwordStats::of(&[3, 16, 17, 600], 512);
        assert_eq!(h.longer_than_window, 1);
        assert_eq!(h.histogram[0], (16, 2));
        assert_eq!(h.histogram[1], (32, 1));
        assert_eq!(h.histogram[6], (usize::MAX, 1));
    }
}
