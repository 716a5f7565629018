//! Tokenization and label alignment, as the book's `tokenize_and_align_labels`:
//! words go to the tokenizer already split (`is_split_into_words=True`), each word's label goes
//! on its first subword, and special tokens and continuation subwords get -100 so that the loss
//! and the metric skip them.

use std::path::Path;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Model, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::data::{Corpus, Sentence};
use crate::error::{Error, Result};

/// The label of positions that neither the loss nor the metric sees (PyTorch's ignore_index).
pub const IGNORE_INDEX: i64 = -100;

/// The maximum sequence length of XLM-R and BERT (position embeddings).
pub const DEFAULT_MAX_LEN: usize = 512;

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

/// `label_ids` per subword: the word's label where the word id changes, -100 elsewhere.
pub fn align_labels(word_ids: &[Option<u32>], word_labels: &[usize]) -> Vec<i64> {
    let mut previous = None;
    word_ids
        .iter()
        .map(|&w| {
            let label = match w {
                Some(w) if Some(w) != previous => word_labels[w as usize] as i64,
                _ => IGNORE_INDEX,
            };
            previous = w;
            label
        })
        .collect()
}

/// All of a corpus, aligned; `truncated` counts sentences cut to the maximum length.
#[derive(Clone, Debug)]
pub struct AlignedCorpus {
    pub sentences: Vec<AlignedSentence>,
    pub truncated: usize,
}

/// A tokenizer with truncation set, aligning sentences for a model.
pub struct Aligner {
    tokenizer: Tokenizer,
}

impl Aligner {
    pub fn new(mut tokenizer: Tokenizer, max_len: usize) -> Result<Self> {
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Aligner { tokenizer })
    }

    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        Self::new(load_tokenizer(path)?, max_len)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn to_aligned(&self, enc: &tokenizers::Encoding, sentence: &Sentence) -> (AlignedSentence, bool) {
        let word_ids = enc.get_word_ids().to_vec();
        let label_ids = align_labels(&word_ids, &sentence.label_ids);
        let truncated = !enc.get_overflowing().is_empty();
        let aligned = AlignedSentence {
            input_ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            word_ids,
            label_ids,
        };
        (aligned, truncated)
    }

    /// Tokenizes one sentence's words and aligns its labels.
    pub fn align(&self, sentence: &Sentence) -> Result<AlignedSentence> {
        let enc =
            self.tokenizer.encode(sentence.words.as_slice(), true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(self.to_aligned(&enc, sentence).0)
    }

    /// Aligns a whole corpus (in parallel, order kept).
    pub fn align_corpus(&self, corpus: &Corpus) -> Result<AlignedCorpus> {
        let inputs: Vec<&[String]> = corpus.sentences.iter().map(|s| s.words.as_slice()).collect();
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut truncated = 0;
        let sentences = encodings
            .iter()
            .zip(&corpus.sentences)
            .map(|(enc, s)| {
                let (aligned, cut) = self.to_aligned(enc, s);
                truncated += cut as usize;
                aligned
            })
            .collect();
        Ok(AlignedCorpus { sentences, truncated })
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
        assert_eq!(align_labels(&word_ids, &[3, 5, 0]), vec![-100, 3, 5, -100, 0, -100]);
    }
}
