//! Tokenization and label alignment, as the book's `tokenize_and_align_labels`:
//! words go to the tokenizer already split (`is_split_into_words=True`), each word's label goes
//! on its first subword, and special tokens and continuation subwords get -100 so that the loss
//! and the metric skip them.

use std::path::Path;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Model, Tokenizer};

use crate::data::{split_bio, Corpus, LabelSet, Sentence};
use crate::error::{Error, Result};
use crate::window::{self, Sequence, WindowOptions};

/// The label of positions that neither the loss nor the metric sees (PyTorch's ignore_index).
pub const IGNORE_INDEX: i64 = -100;

/// Loads a `tokenizer.json`, with the file named in the error.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::invalid(path, "no such tokenizer file"));
    }
    Tokenizer::from_file(path).map_err(|e| Error::invalid(path, format!("not a valid tokenizer.json: {e}")))
}

/// A cased BERT WordPiece tokenizer from a `vocab.txt` (as `bert-base-cased`): BERT's
/// normalizer without lower-casing, BERT's pre-tokenizer, `[CLS] … [SEP]`.
pub fn wordpiece_from_vocab(vocab: &Path) -> Result<Tokenizer> {
    let path = vocab.to_str().ok_or_else(|| Error::invalid(vocab, "path is not UTF-8"))?;
    let model = WordPiece::from_file(path)
        .build()
        .map_err(|e| Error::invalid(vocab, format!("not a WordPiece vocabulary: {e}")))?;
    let id = |tok: &str| model.token_to_id(tok).ok_or_else(|| Error::invalid(vocab, format!("vocabulary lacks {tok}")));
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, false)))
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    Ok(tokenizer)
}

/// One sentence as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlignedSentence {
    pub input_ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// The word each subword comes from; None for special tokens.
    pub word_ids: Vec<Option<u32>>,
    /// The word's label on its first subword, `IGNORE_INDEX` elsewhere.
    pub label_ids: Vec<i64>,
}

impl AlignedSentence {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// `label_ids` per subword: the word's label where the word id changes, -100 elsewhere; with
/// `continuation` (run_ner.py's `label_all_tokens`), later subwords of a word get
/// `continuation[label]` instead: its `I-` label for a `B-` one (`b_to_i_label`).
pub fn align_labels(word_ids: &[Option<u32>], word_labels: &[usize], continuation: Option<&[usize]>) -> Vec<i64> {
    let mut previous = None;
    word_ids
        .iter()
        .map(|&w| {
            let label = match (w, continuation) {
                (Some(w), _) if Some(w) != previous => word_labels[w as usize] as i64,
                (Some(w), Some(map)) => map[word_labels[w as usize]] as i64,
                _ => IGNORE_INDEX,
            };
            previous = w;
            label
        })
        .collect()
}

/// For each label, the one its word's later subwords get: `I-X` for `B-X` (when the set has
/// it), the label itself otherwise.
pub fn continuation_labels(labels: &LabelSet) -> Vec<usize> {
    (0..labels.len())
        .map(|i| match split_bio(labels.name(i)) {
            Some(('B', ty)) => labels.id(&format!("I-{ty}")).unwrap_or(i),
            _ => i,
        })
        .collect()
}

impl AlignedSentence {
    /// Positions of each word's first subword: where the word is labelled, predicted and scored.
    pub fn first_subwords(&self) -> Vec<usize> {
        let mut previous = None;
        let mut out = vec![];
        for (j, &w) in self.word_ids.iter().enumerate() {
            if w.is_some() && w != previous {
                out.push(j);
            }
            previous = w;
        }
        out
    }

    /// The sentence as the model's windowing sees it (special tokens at both ends).
    pub fn sequence(&self) -> Sequence<'_> {
        Sequence::from_word_ids(&self.input_ids, &self.word_ids)
    }

    /// The sentence cut into windows of at most `options.max_len` tokens (one when it fits).
    pub fn windows(&self, options: WindowOptions) -> Vec<AlignedSentence> {
        if self.len() <= options.max_len {
            return vec![self.clone()];
        }
        let seq = self.sequence();
        let (pre, n) = (seq.prefix, self.len());
        let size = options.max_len.saturating_sub(seq.prefix + seq.suffix).max(1);
        let content = n - seq.prefix - seq.suffix;
        window::plan(content, size, options.stride)
            .into_iter()
            .map(|r| {
                let pick = |j: usize| j < pre || j >= n - seq.suffix || (j - pre >= r.start && j - pre < r.end);
                let keep: Vec<usize> = (0..n).filter(|&j| pick(j)).collect();
                AlignedSentence {
                    input_ids: keep.iter().map(|&j| self.input_ids[j]).collect(),
                    tokens: keep.iter().map(|&j| self.tokens[j].clone()).collect(),
                    word_ids: keep.iter().map(|&j| self.word_ids[j]).collect(),
                    label_ids: keep.iter().map(|&j| self.label_ids[j]).collect(),
                }
            })
            .collect()
    }
}

/// All of a corpus, aligned, one entry per sentence, whatever its length.
#[derive(Clone, Debug)]
pub struct AlignedCorpus {
    pub sentences: Vec<AlignedSentence>,
}

impl AlignedCorpus {
    /// Training examples: every sentence longer than the window as overlapping windows.
    /// Also returns how many sentences were split.
    pub fn windows(&self, options: WindowOptions) -> (AlignedCorpus, usize) {
        let mut split = 0;
        let mut sentences = Vec::with_capacity(self.sentences.len());
        for s in &self.sentences {
            let w = s.windows(options);
            split += (w.len() > 1) as usize;
            sentences.extend(w);
        }
        (AlignedCorpus { sentences }, split)
    }

    /// Sentences longer than `max_len` tokens.
    pub fn longer_than(&self, max_len: usize) -> usize {
        self.sentences.iter().filter(|s| s.len() > max_len).count()
    }
}

/// A tokenizer aligning word-split sentences for a model. It never truncates: long sentences
/// are windowed downstream (`crate::window`).
pub struct Aligner {
    tokenizer: Tokenizer,
    /// `Some`: later subwords of a word are labelled too (`--label-all-subwords`).
    continuation: Option<Vec<usize>>,
}

impl Aligner {
    pub fn new(mut tokenizer: Tokenizer) -> Result<Self> {
        tokenizer.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Aligner { tokenizer, continuation: None })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::new(load_tokenizer(path)?)
    }

    /// Labels every subword of a word (its first with the word's label, the others with
    /// `continuation_labels`), as run_ner.py's `--label_all_tokens`.
    pub fn label_all_subwords(mut self, labels: &LabelSet) -> Self {
        self.continuation = Some(continuation_labels(labels));
        self
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn to_aligned(&self, enc: &tokenizers::Encoding, sentence: &Sentence) -> AlignedSentence {
        let word_ids = enc.get_word_ids().to_vec();
        let label_ids = align_labels(&word_ids, &sentence.label_ids, self.continuation.as_deref());
        AlignedSentence { input_ids: enc.get_ids().to_vec(), tokens: enc.get_tokens().to_vec(), word_ids, label_ids }
    }

    /// Tokenizes one sentence's words and aligns its labels.
    pub fn align(&self, sentence: &Sentence) -> Result<AlignedSentence> {
        let enc =
            self.tokenizer.encode(sentence.words.as_slice(), true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(self.to_aligned(&enc, sentence))
    }

    /// Aligns a whole corpus (in parallel, order kept).
    pub fn align_corpus(&self, corpus: &Corpus) -> Result<AlignedCorpus> {
        let inputs: Vec<&[String]> = corpus.sentences.iter().map(|s| s.words.as_slice()).collect();
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let sentences = encodings.iter().zip(&corpus.sentences).map(|(enc, s)| self.to_aligned(enc, s)).collect();
        Ok(AlignedCorpus { sentences })
    }

    /// Tokens of a raw text with special tokens (the book's `tokenizer(text).tokens()`).
    pub fn tokens_of_text(&self, text: &str) -> Result<Vec<String>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_tokens().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_subword_gets_the_label() {
        let word_ids = [None, Some(0), Some(1), Some(1), Some(2), None];
        assert_eq!(align_labels(&word_ids, &[3, 5, 0], None), vec![-100, 3, 5, -100, 0, -100]);
        // run_ner's label_all_tokens: B-PER (1) continues as I-PER (2).
        let labels = LabelSet::panx();
        let cont = continuation_labels(&labels);
        assert_eq!(align_labels(&word_ids, &[1, 5, 0], Some(&cont)), vec![-100, 1, 5, 6, 0, -100]);
    }
}
