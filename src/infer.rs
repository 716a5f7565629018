//! Tagging text with a trained model: the subword tokens with their predicted tags (the book's
//! `tag_text`) and the word-level entities with character offsets.

use serde::Serialize;
use tokenizers::{Encoding, Tokenizer};

use crate::error::{Error, Result};
use crate::metrics;
use crate::model::TokenClassifier;
use crate::window::{Sequence, WindowOptions};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TaggedEntity {
    pub label: String,
    pub text: String,
    /// Character offsets into the input, end exclusive.
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Tagged {
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
    pub entities: Vec<TaggedEntity>,
}

/// Tags `text` (of any length): every subword gets the argmax label; each word takes its
/// first subword's.
pub fn tag_text(
    model: &TokenClassifier,
    tokenizer: &Tokenizer,
    labels: &[String],
    text: &str,
    window: WindowOptions,
) -> Result<Tagged> {
    let enc = encode(tokenizer, text)?;
    let mut tagged = tag_encoded(model, labels, &[(text, enc)], window, 1, false)?;
    Ok(tagged.remove(0))
}

/// Tokenizes one text for tagging, whole (no truncation: long texts are windowed).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Encoding> {
    tokenizer.encode_char_offsets(text, true).map_err(|e| Error::Tokenizer(e.to_string()))
}

/// A model's tokenizer.json as tagging needs it: without truncation or padding.
pub fn load_tokenizer(path: &std::path::Path) -> Result<Tokenizer> {
    let mut tokenizer = crate::align::load_tokenizer(path)?;
    tokenizer.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Tags many encoded texts in batches of up to `batch_size`, formed in order of length (little
/// padding, as evaluation batches), texts longer than the window in overlapping windows;
/// results in input order.
pub fn tag_encoded(
    model: &TokenClassifier,
    labels: &[String],
    texts: &[(&str, Encoding)],
    window: WindowOptions,
    batch_size: usize,
    show_progress: bool,
) -> Result<Vec<Tagged>> {
    let sequences: Vec<Sequence> =
        texts.iter().map(|(_, enc)| Sequence::from_word_ids(enc.get_ids(), enc.get_word_ids())).collect();
    let bar = crate::eval::progress(texts.len(), "tag", show_progress);
    let log_probs = crate::window::log_probs(model, &sequences, window, batch_size, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    Ok(texts
        .iter()
        .zip(log_probs)
        .map(|((text, enc), rows)| {
            let pred: Vec<u32> = rows
                .iter()
                .map(|lp| {
                    lp.iter()
                        .enumerate()
                        .fold((0u32, f32::NEG_INFINITY), |a, (k, &v)| if v > a.1 { (k as u32, v) } else { a })
                        .0
                })
                .collect();
            tagged(enc, text, &pred, labels)
        })
        .collect())
}

/// Subword tags from the predicted label ids, and word-level entities with character spans.
fn tagged(enc: &Encoding, text: &str, pred: &[u32], labels: &[String]) -> Tagged {
    let tags: Vec<String> =
        pred.iter().map(|&p| labels.get(p as usize).cloned().unwrap_or_else(|| format!("LABEL_{p}"))).collect();

    // Words: first subword's tag; character span from the first to the last subword.
    let mut word_tags: Vec<String> = vec![];
    let mut spans: Vec<(usize, usize)> = vec![];
    let mut previous = None;
    for (j, w) in enc.get_word_ids().iter().enumerate() {
        let Some(w) = *w else { continue };
        let (s, e) = enc.get_offsets()[j];
        if Some(w) != previous {
            word_tags.push(tags[j].clone());
            spans.push((s, e));
        } else if let Some(last) = spans.last_mut() {
            last.1 = e;
        }
        previous = Some(w);
    }
    let chars: Vec<char> = text.chars().collect();
    let entities = metrics::get_entities(&word_tags)
        .into_iter()
        .map(|(label, first, last)| {
            // Metaspace offsets may include the leading space: trim it off the span.
            let (mut start, end) = (spans[first].0, spans[last].1.min(chars.len()));
            while start < end && chars[start].is_whitespace() {
                start += 1;
            }
            TaggedEntity { label, text: chars[start..end].iter().collect(), start, end }
        })
        .collect();
    Tagged { tokens: enc.get_tokens().to_vec(), tags, entities }
}
