//! Batches for the model: dynamic padding to the longest sentence of each batch (as
//! transformers' `DataCollatorForTokenClassification`), pad id in the inputs, 0 in the
//! attention mask, -100 in the labels.

use candle_core::{Device, Tensor};

use crate::align::{AlignedSentence, IGNORE_INDEX};
use crate::error::Result;
use crate::model::{Batch, TokenClassifier};

/// Pads `sentences` into one batch for `model`.
pub fn collate(model: &TokenClassifier, sentences: &[&AlignedSentence], device: &Device) -> Result<Batch> {
    let rows: Vec<(&[u32], &[i64])> = sentences.iter().map(|s| (&s.input_ids[..], &s.label_ids[..])).collect();
    pad_rows(model, &rows, device)
}

/// Pads token ids without labels (tagging new text) into one batch: labels all -100.
pub fn collate_ids(model: &TokenClassifier, ids: &[&[u32]], device: &Device) -> Result<Batch> {
    let rows: Vec<(&[u32], &[i64])> = ids.iter().map(|ids| (*ids, &[][..])).collect();
    pad_rows(model, &rows, device)
}

/// (ids, labels) rows padded to the longest; labels shorter than their ids are padded too.
fn pad_rows(model: &TokenClassifier, rows: &[(&[u32], &[i64])], device: &Device) -> Result<Batch> {
    let pad = model.config.pad_token_id;
    let b = rows.len();
    let t = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    let mut labels = Vec::with_capacity(b * t);
    for (row, row_labels) in rows {
        let n = row.len();
        ids.extend_from_slice(row);
        ids.extend(std::iter::repeat_n(pad, t - n));
        mask.extend(std::iter::repeat_n(1u32, n).chain(std::iter::repeat_n(0, t - n)));
        labels.extend_from_slice(row_labels);
        labels.extend(std::iter::repeat_n(IGNORE_INDEX, t - row_labels.len()));
    }
    let id_rows: Vec<&[u32]> = rows.iter().map(|(ids, _)| *ids).collect();
    let positions = model.position_ids(&id_rows, t);
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
