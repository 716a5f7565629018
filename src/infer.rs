//! Tagging text with a trained model: the subword tokens with their predicted tags (the book's
//! `tag_text`) and the word-level entities with character offsets.

use candle_core::{Device, Tensor, D};
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::metrics;
use crate::model::{Batch, TokenClassifier};

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
    let enc = tokenizer.encode_char_offsets(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let ids = enc.get_ids().to_vec();
    let n = ids.len();
    if n > model.config.max_position_embeddings.saturating_sub(2) {
        return Err(Error::Usage(format!(
            "text is {n} tokens long; the model takes at most {}",
            model.config.max_position_embeddings - 2
        )));
    }
    let device = Device::Cpu;
    let positions = model.position_ids(std::slice::from_ref(&ids), n);
    let batch = Batch {
        input_ids: Tensor::from_vec(ids, (1, n), &device)?,
        attention_mask: Tensor::ones((1, n), candle_core::DType::U32, &device)?,
        labels: Tensor::full(-100i64, (1, n), &device)?,
        position_ids: Tensor::from_vec(positions, (1, n), &device)?,
    };
    let pred: Vec<u32> = model.forward(&batch, None)?.argmax(D::Minus1)?.squeeze(0)?.to_vec1()?;
    let tags: Vec<String> = pred.iter().map(|&p| labels[p as usize].clone()).collect();

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
    Ok(Tagged { tokens: enc.get_tokens().to_vec(), tags, entities })
}
