//! Batches for the model: dynamic padding to the longest sentence of each batch (as
//! transformers' `DataCollatorForTokenClassification`), pad id in the inputs, 0 in the
//! attention mask, -100 in the labels.

use candle_core::{Device, Tensor};

use crate::align::{AlignedSentence, IGNORE_INDEX};
use crate::error::Result;
use crate::model::{Batch, TokenClassifier};

/// Pads `sentences` into one batch for `model`.
pub fn collate(model: &TokenClassifier, sentences: &[&AlignedSentence], device: &Device) -> Result<Batch> {
    let pad = model.config.pad_token_id;
    let b = sentences.len();
    let t = sentences.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    let mut labels = Vec::with_capacity(b * t);
    let mut rows = Vec::with_capacity(b);
    for s in sentences {
        let n = s.len();
        ids.extend_from_slice(&s.input_ids);
        ids.extend(std::iter::repeat_n(pad, t - n));
        mask.extend(std::iter::repeat_n(1u32, n).chain(std::iter::repeat_n(0, t - n)));
        labels.extend_from_slice(&s.label_ids);
        labels.extend(std::iter::repeat_n(IGNORE_INDEX, t - n));
        rows.push(s.input_ids.clone());
    }
    let positions = model.position_ids(&rows, t);
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (b, t), device)?,
        attention_mask: Tensor::from_vec(mask, (b, t), device)?,
        labels: Tensor::from_vec(labels, (b, t), device)?,
        position_ids: Tensor::from_vec(positions, (b, t), device)?,
    })
}

/// Real (non-padding) tokens and padded slots of a batch of sentences.
pub fn token_counts(sentences: &[&AlignedSentence]) -> (usize, usize) {
    let real: usize = sentences.iter().map(|s| s.len()).sum();
    let padded = sentences.iter().map(|s| s.len()).max().unwrap_or(0) * sentences.len();
    (real, padded)
}
