//! Tagging text with a trained model: the subword tokens with their predicted tags (the book's
//! `tag_text`) and the entities with character offsets and scores (`pipeline`), for texts of
//! any length (`window`). `Tagger` is what `xner tag`, `xner serve` and the Python binding call.

use std::path::Path;

use candle_core::Device;
use serde::Serialize;
use tokenizers::{Encoding, Tokenizer};

use crate::error::{Error, Result};
use crate::lowp::Precision;
use crate::model::TokenClassifier;
use crate::pipeline::{self, Aggregation, Entity, TokenizerKind};
use crate::window::{Sequence, WindowOptions};

/// One tagged text.
#[derive(Clone, Debug, Serialize)]
pub struct Tagged {
    /// Subword tokens, special tokens included, and the predicted tag of each.
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
    pub entities: Vec<Entity>,
}

/// A trained model with its tokenizer, labels and window: texts in, entities out.
pub struct Tagger {
    pub model: TokenClassifier,
    pub tokenizer: Tokenizer,
    pub labels: Vec<String>,
    pub window: WindowOptions,
    kind: TokenizerKind,
}

impl Tagger {
    /// Loads a model directory (config.json, model.safetensors, tokenizer.json).
    pub fn load(
        model_dir: &Path,
        device: &Device,
        max_len: Option<usize>,
        stride: usize,
        precision: Precision,
    ) -> Result<Self> {
        let mut model = TokenClassifier::load(model_dir, None, 0, device)?;
        model.set_precision(precision)?;
        // Pack or transpose the weights now, not in the first request.
        model.prepare_inference()?;
        let labels = model.config.labels().unwrap_or_default();
        let tokenizer = load_tokenizer(&model_dir.join("tokenizer.json"))?;
        let window = WindowOptions::new(&model, max_len, stride)?;
        let kind = TokenizerKind::of(&tokenizer);
        Ok(Tagger { model, tokenizer, labels, window, kind })
    }

    /// Tokenizes one text, whole (no truncation: long texts are windowed).
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        encode(&self.tokenizer, text)
    }

    /// Tags encoded texts in batches of up to `batch_size` formed in order of length.
    pub fn tag_encoded(
        &self,
        texts: &[(&str, Encoding)],
        aggregation: Aggregation,
        batch_size: usize,
        show_progress: bool,
    ) -> Result<Vec<Tagged>> {
        let refs: Vec<(&str, &Encoding)> = texts.iter().map(|(t, e)| (*t, e)).collect();
        self.tag_encoded_each(&refs, |_| aggregation, batch_size, show_progress)
    }

    /// `tag_encoded` with each text's own aggregation (`aggregation_of(i)`): the server batches
    /// requests that ask for different ones, and the forward pass is the same for all.
    pub fn tag_encoded_each(
        &self,
        texts: &[(&str, &Encoding)],
        aggregation_of: impl Fn(usize) -> Aggregation,
        batch_size: usize,
        show_progress: bool,
    ) -> Result<Vec<Tagged>> {
        let sequences: Vec<Sequence> =
            texts.iter().map(|(_, enc)| Sequence::from_word_ids(enc.get_ids(), enc.get_word_ids())).collect();
        let bar = crate::eval::progress(texts.len(), "tag", show_progress);
        let log_probs = crate::window::log_probs(&self.model, &sequences, self.window, batch_size, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        Ok(texts
            .iter()
            .zip(log_probs)
            .enumerate()
            .map(|(i, ((text, enc), rows))| {
                let tags = rows.iter().map(|lp| self.label(crate::window::best_label(lp).0)).collect();
                let entities = pipeline::entities(text, enc, &rows, &self.labels, self.kind, aggregation_of(i));
                Tagged { tokens: enc.get_tokens().to_vec(), tags, entities }
            })
            .collect())
    }

    /// Tags texts (encoded here); results in input order.
    pub fn tag(&self, texts: &[&str], aggregation: Aggregation, batch_size: usize) -> Result<Vec<Tagged>> {
        let encoded = texts.iter().map(|t| Ok((*t, self.encode(t)?))).collect::<Result<Vec<_>>>()?;
        self.tag_encoded(&encoded, aggregation, batch_size, false)
    }

    fn label(&self, i: usize) -> String {
        self.labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"))
    }
}

/// Tokenizes one text for tagging, whole, with character offsets.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Encoding> {
    tokenizer.encode_char_offsets(text, true).map_err(|e| Error::Tokenizer(e.to_string()))
}

/// A model's tokenizer.json as tagging needs it: without truncation or padding.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let mut tokenizer = crate::align::load_tokenizer(path)?;
    tokenizer.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}
