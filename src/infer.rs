//! Tagging text with a trained model: the subword tokens with their predicted tags (the book's
//! `tag_text`) and the word-level entities with character offsets.

use candle_core::D;
use serde::Serialize;
use tokenizers::{Encoding, Tokenizer};

use crate::error::{Error, Result};
use crate::metrics;
use crate::model::TokenClassifier;

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

/// Tags `text`: every subword gets the argmax label; each word takes its first subword's.
pub fn tag_text(model: &TokenClassifier, tokenizer: &Tokenizer, labels: &[String], text: &str) -> Result<Tagged> {
    let enc = encode(model, tokenizer, text)?;
    let mut tagged = tag_encoded(model, labels, &[(text, enc)], 1, false)?;
    Ok(tagged.remove(0))
}

/// Tokenizes one text for tagging; an error if it is longer than the model takes.
pub fn encode(model: &TokenClassifier, tokenizer: &Tokenizer, text: &str) -> Result<Encoding> {
    let enc = tokenizer.encode_char_offsets(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let n = enc.get_ids().len();
    let max = model.config.max_position_embeddings.saturating_sub(2);
    if n > max {
        return Err(Error::Usage(format!("text is {n} tokens long; the model takes at most {max}")));
    }
    Ok(enc)
}

/// Tags many encoded texts in batches of up to `batch_size`, formed in order of length (little
/// padding, as evaluation batches); results in input order.
pub fn tag_encoded(
    model: &TokenClassifier,
    labels: &[String],
    texts: &[(&str, Encoding)],
    batch_size: usize,
    show_progress: bool,
) -> Result<Vec<Tagged>> {
    let device = model.device().clone();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].1.get_ids().len());
    let mut out: Vec<Option<Tagged>> = vec![None; texts.len()];
    let bar = crate::eval::progress(texts.len(), "tag", show_progress);
    for chunk in order.chunks(batch_size.max(1)) {
        let ids: Vec<&[u32]> = chunk.iter().map(|&i| texts[i].1.get_ids()).collect();
        let batch = crate::batch::collate_ids(model, &ids, &device)?;
        let pred: Vec<Vec<u32>> = model.forward(&batch, None)?.argmax(D::Minus1)?.to_vec2()?;
        for (&i, p) in chunk.iter().zip(pred) {
            let (text, enc) = &texts[i];
            out[i] = Some(tagged(enc, text, &p[..enc.get_ids().len()], labels));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out.into_iter().map(|t| t.expect("every text is in one batch")).collect())
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
