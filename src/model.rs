//! The token classifier: a BERT / RoBERTa / XLM-R encoder body with a dropout + linear head,
//! in one file, read top-down in forward order (embeddings → self-attention → layer →
//! encoder → classifier), each block named after the transformers class it translates
//! (transformers/models/bert/modeling_bert.py, models/xlm_roberta/modeling_xlm_roberta.py).
//!
//! LayerNorm, attention softmax, GELU and dropout are our fused kernels (`kernels`), each with
//! its own backward: candle 0.11's `layer_norm` and `softmax_last_dim` have none, so gradients
//! would silently stop there, and composing them from generic ops is slow. On devices other than
//! the CPU the same ops come composed from candle's differentiable ones (`composed`).
//! Dropout is real (transformers' places and rates) and its masks come from a seeded
//! generator, so a resumed run draws the same masks as an uninterrupted one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, NamedTensor};
use crate::error::{Error, Result};
use crate::lowp::{self, Precision};
use crate::optim::SparseRows;
use crate::shuffle::Pcg64;
use crate::{composed, kernels, sgemm};
use rayon::prelude::*;

/// A Hugging Face `config.json` (the fields xner reads; all others kept for the round trip).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}

/// The body families xner runs: they differ in tensor prefix and position ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Bert,
    Roberta,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(path, format!("not a valid model config.json: {e}")))?;
        config.family().map_err(|msg| Error::invalid(path, msg))?;
        if config.hidden_act != "gelu" {
            return Err(Error::invalid(
                path,
                format!("hidden_act {:?} is not supported (only exact gelu)", config.hidden_act),
            ));
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(Error::invalid(path, "hidden_size is not a multiple of num_attention_heads"));
        }
        Ok(config)
    }

    pub fn family(&self) -> std::result::Result<Family, String> {
        match self.model_type.as_str() {
            "bert" => Ok(Family::Bert),
            "roberta" | "xlm-roberta" => Ok(Family::Roberta),
            other => Err(format!("model_type {other:?} is not supported (bert, roberta, xlm-roberta)")),
        }
    }

    /// The label names from `id2label`, if the config has a token-classification head.
    pub fn labels(&self) -> Option<Vec<String>> {
        let map = self.id2label.as_ref()?;
        let mut pairs: Vec<(usize, &String)> =
            map.iter().filter_map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v))).collect();
        pairs.sort();
        Some(pairs.into_iter().map(|(_, v)| v.clone()).collect())
    }

    /// Records the label set as transformers does (`id2label`, `label2id`).
    pub fn set_labels(&mut self, labels: &[String]) {
        self.id2label = Some(labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect());
        self.label2id = Some(labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect());
    }

    fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}

/// Dropout masks from a seeded generator. `None` in evaluation.
pub struct DropoutRng {
    rng: Pcg64,
}

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        DropoutRng { rng: Pcg64::from_seed(seed as u128) }
    }

    /// Dropout's mask for `n` elements: 0 with probability p, else 1/(1 − p) (as
    /// `torch.nn.functional.dropout` scales). 24 random bits per decision.
    fn mask(&mut self, n: usize, p: f64) -> Arc<Vec<f32>> {
        // One draw of the seeded generator per mask keys a counter-based stream for its
        // elements, drawn in parallel (millions of decisions a training step).
        Arc::new(kernels::dropout_mask(self.rng.next_u64(), n, p))
    }
}

/// Which implementation of the model's ops a forward pass runs: the fused CPU kernels, or the
/// same ops composed from candle's tensor ops (any device; the CPU too, for tests and `bench`).
/// Both compute the same values and gradients and draw the same dropout masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    Fused,
    /// The fused kernels with the linear layers' products in bf16, forward and backward
    /// (`train --bf16`: operands rounded to bf16, sums, weights and optimizer state in f32).
    FusedBf16,
    Composed,
}

/// One dispatch per op: `kernels::f` or `composed::f`, same arguments.
macro_rules! dispatch {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        impl Kernels {
            $(fn $name(self, $($arg: $ty),*) -> Result<Tensor> {
                Ok(match self {
                    Kernels::Fused | Kernels::FusedBf16 => kernels::$name($($arg),*)?,
                    Kernels::Composed => composed::$name($($arg),*)?,
                })
            })*
        }
    };
}

dispatch! {
    layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64);
    linear_transposed(x: &Tensor, wt: &Tensor, b: &Tensor, gelu: bool);
    mask_mul(x: &Tensor, mask: Arc<Vec<f32>>);
    residual_dropout(branch: &Tensor, residual: &Tensor, keep: Option<Arc<Vec<f32>>>);
    attention(qkv: &Tensor, heads: usize, scale: f64, lens: Arc<Vec<usize>>, dropout: Option<Arc<Vec<f32>>>);
}

impl Kernels {
    fn linear(self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Kernels::Fused => kernels::linear(x, w, b)?,
            Kernels::FusedBf16 => kernels::linear_bf16(x, w, b)?,
            Kernels::Composed => composed::linear(x, w, b)?,
        })
    }

    fn linear_gelu(self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Kernels::Fused => kernels::linear_gelu(x, w, b)?,
            Kernels::FusedBf16 => kernels::linear_gelu_bf16(x, w, b)?,
            Kernels::Composed => composed::linear_gelu(x, w, b)?,
        })
    }

    /// The fused kernels on the CPU, the composed ops elsewhere.
    pub fn for_device(device: &Device) -> Kernels {
        if device.is_cpu() {
            Kernels::Fused
        } else {
            Kernels::Composed
        }
    }

    /// Dropout in training (a mask from `rng`), identity in evaluation or at p = 0.
    fn dropout(self, x: &Tensor, p: f64, rng: &mut Option<&mut DropoutRng>) -> Result<Tensor> {
        match rng {
            Some(r) if p > 0.0 => self.mask_mul(x, r.mask(x.elem_count(), p)),
            _ => Ok(x.clone()),
        }
    }

    /// `residual + dropout(branch)` (in one pass when fused), `residual + branch` in evaluation.
    fn add_dropout(
        self,
        branch: &Tensor,
        residual: &Tensor,
        p: f64,
        rng: &mut Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let keep = match rng {
            Some(r) if p > 0.0 => Some(r.mask(branch.elem_count(), p)),
            _ => None,
        };
        self.residual_dropout(branch, residual, keep)
    }
}

/// `torch.nn.Linear`: y = x Wᵀ + b over the last dimension.
pub struct Linear {
    pub weight: Var,
    pub bias: Var,
}

impl Linear {
    fn forward(&self, x: &Tensor, grad: Grad<'_>, ops: Kernels) -> Result<Tensor> {
        ops.linear(x, &grad.param(&self.weight), &grad.param(&self.bias))
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
pub struct LayerNorm {
    pub weight: Var,
    pub bias: Var,
    pub eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor, grad: Grad<'_>, ops: Kernels) -> Result<Tensor> {
        ops.layer_norm(x, &grad.param(&self.weight), &grad.param(&self.bias), self.eps)
    }
}

/// Whether a forward pass builds the autograd graph. Without it (inference) every parameter
/// is read detached, so no op records its inputs: each intermediate is freed as soon as the
/// next layer has read it, and the fused kernels skip the state only backward reads; the
/// linear layers then read the weights' inference layout.
#[derive(Clone, Copy)]
enum Grad<'a> {
    Track,
    Off(&'a InferenceWeights),
}

impl<'a> Grad<'a> {
    fn param(self, v: &Var) -> Tensor {
        match self {
            Grad::Track => v.as_tensor().clone(),
            Grad::Off(_) => v.as_tensor().detach(),
        }
    }

    /// Layer `index`'s weights in their inference layout, in inference.
    fn layer(self, index: usize) -> Option<&'a LayerWeights> {
        match self {
            Grad::Track => None,
            Grad::Off(w) => w.layers.get(index),
        }
    }
}

/// `BertEmbeddings` / `XLMRobertaEmbeddings`.
pub struct Embeddings {
    pub word: Var,
    pub position: Var,
    pub token_type: Var,
    pub layer_norm: LayerNorm,
}

/// `BertSelfAttention` + `BertSelfOutput`.
pub struct Attention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    pub layer_norm: LayerNorm,
}

/// `BertLayer`: attention, then `BertIntermediate` (dense + GELU) and `BertOutput`.
pub struct Layer {
    pub attention: Attention,
    pub intermediate: Linear,
    pub output: Linear,
    pub layer_norm: LayerNorm,
}

/// `BertForTokenClassification` / `XLMRobertaForTokenClassification`.
pub struct TokenClassifier {
    pub config: Config,
    pub family: Family,
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    pub classifier: Linear,
    /// Every parameter with its transformers name (prefixed as in a token-classification
    /// checkpoint), in one list: the optimizer and the checkpoint writer walk it.
    pub params: Vec<(String, Var)>,
    /// The body's weights laid out for inference, made by the first inference pass and
    /// dropped by `weights_changed` (which every training step calls after its update).
    inference: std::sync::RwLock<Option<Arc<InferenceWeights>>>,
    /// Fused CPU kernels, or composed ops (other devices): `Kernels::for_device` at load.
    kernels: Kernels,
    /// The number format of the linear layers in inference (training is f32).
    precision: Precision,
}

/// Per layer, the linear weights in their inference layout, with q, k, v side by side: one
/// copy of the body's matrices (85 MB for e5-small in f32), made once instead of the three
/// concatenations and the packing of every batch. In f32, packed in panels for the AVX-512
/// product (`sgemm`), or, without AVX-512 or on other devices, transposed to (in, out), gemm's
/// fast layout for y = x·W; in bf16 or int8, packed for the tile unit (`lowp`).
pub struct InferenceWeights {
    precision: Precision,
    kernels: Kernels,
    layers: Vec<LayerWeights>,
}

struct LayerWeights {
    qkv: (LinearWeight, Tensor),
    attention_output: LinearWeight,
    intermediate: LinearWeight,
    output: LinearWeight,
}

/// One linear layer's weight for inference.
enum LinearWeight {
    /// (in, out), contiguous f32: for gemm, or the composed ops on other devices.
    F32(Tensor),
    /// f32 packed for the AVX-512 product (the fused kernels' f32 where the CPU has it).
    PackedF32(sgemm::PackedF32),
    Packed(lowp::Packed),
}

impl LinearWeight {
    /// `wt` (in, out) in `precision`, for `kernels`.
    fn new(wt: Tensor, precision: Precision, kernels: Kernels) -> Result<Self> {
        let (ins, outs) = wt.dims2()?;
        let data = || wt.flatten_all()?.to_vec1::<f32>();
        Ok(match precision {
            Precision::F32 if kernels == Kernels::Composed => LinearWeight::F32(wt),
            Precision::F32 => match sgemm::PackedF32::new(&data()?, ins, outs) {
                Some(packed) => LinearWeight::PackedF32(packed),
                None => LinearWeight::F32(wt),
            },
            p => LinearWeight::Packed(lowp::Packed::new(p, &data()?, ins, outs).expect("a low precision packs")),
        })
    }

    /// act(x·W + b), act GELU with `gelu`.
    fn forward(&self, ops: Kernels, x: &Tensor, b: &Tensor, gelu: bool) -> Result<Tensor> {
        Ok(match self {
            LinearWeight::F32(wt) => ops.linear_transposed(x, wt, b, gelu)?,
            LinearWeight::PackedF32(w) => kernels::linear_packed_f32(x, w, b, gelu)?,
            LinearWeight::Packed(w) => kernels::linear_packed(x, w, b, gelu)?,
        })
    }
}

impl InferenceWeights {
    fn new(layers: &[Layer], precision: Precision, kernels: Kernels) -> Result<Self> {
        let t = |w: &Var| -> Result<Tensor> { Ok(w.as_tensor().detach().t()?.contiguous()?) };
        let lw = |w: Tensor| LinearWeight::new(w, precision, kernels);
        let layers = layers
            .iter()
            .map(|l| {
                let a = &l.attention;
                let qkv_w = Tensor::cat(&[t(&a.query.weight)?, t(&a.key.weight)?, t(&a.value.weight)?], 1)?;
                let qkv_b =
                    Tensor::cat(&[&a.query.bias, &a.key.bias, &a.value.bias].map(|v| v.as_tensor().detach()), 0)?;
                Ok(LayerWeights {
                    qkv: (lw(qkv_w)?, qkv_b),
                    attention_output: lw(t(&a.output.weight)?)?,
                    intermediate: lw(t(&l.intermediate.weight)?)?,
                    output: lw(t(&l.output.weight)?)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(InferenceWeights { precision, kernels, layers })
    }

    /// Bytes of the packed or transposed linear weights.
    pub fn bytes(&self) -> usize {
        let size = |w: &LinearWeight| match w {
            LinearWeight::F32(t) => 4 * t.elem_count(),
            LinearWeight::PackedF32(p) => p.bytes(),
            LinearWeight::Packed(p) => p.bytes(),
        };
        self.layers
            .iter()
            .map(|l| size(&l.qkv.0) + size(&l.attention_output) + size(&l.intermediate) + size(&l.output))
            .sum()
    }
}

/// The word-embedding rows a training batch gathered, with the ids they came from.
pub struct WordRows {
    pub ids: Vec<u32>,
    pub rows: Var,
}

impl WordRows {
    /// The gradient of the table restricted to the touched rows: repeated ids summed, rows
    /// in ascending id order (a scatter-add into touched rows only).
    pub fn sparse_grad(&self, grads: &candle_core::backprop::GradStore) -> Result<Option<SparseRows>> {
        let Some(g) = grads.get(&self.rows) else { return Ok(None) };
        let width = g.dim(1)?;
        let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
        let mut unique: Vec<u32> = self.ids.clone();
        unique.sort_unstable();
        unique.dedup();
        let mut grad = vec![0f32; unique.len() * width];
        for (k, id) in self.ids.iter().enumerate() {
            let slot = unique.binary_search(id).expect("id in its own set");
            for (acc, v) in grad[slot * width..(slot + 1) * width].iter_mut().zip(&g[k * width..(k + 1) * width]) {
                *acc += v;
            }
        }
        Ok(Some(SparseRows { rows: unique, grad, width }))
    }
}

/// A padded batch: ids and mask are (batch, seq).
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    /// (batch, seq) i64 with -100 on ignored positions.
    pub labels: Tensor,
    /// Position ids (batch, seq), family-specific.
    pub position_ids: Tensor,
}

/// Where a padded batch's real tokens are: the encoder runs on them alone, packed row after
/// row (padding is 7–60 % of a batch's slots; nothing of it reaches a real token's output, since
/// padded keys are masked, so computing it is pure waste). Only attention needs the sentence
/// boundaries, and it gets them as lengths.
pub struct Packing {
    /// Flat (batch·seq) indices of the real tokens, row-major.
    pub real: Vec<u32>,
    /// Real tokens of each sentence.
    pub lens: Arc<Vec<usize>>,
    /// For each padded slot (batch·seq): its packed row, or `real.len()` (a zero row) for padding.
    pub slot_row: Vec<u32>,
    pub batch: usize,
    pub seq: usize,
}

impl Batch {
    /// The vocabulary ids of the real (non-padding) tokens, in packed order: the word rows a
    /// forward pass reads.
    pub fn real_token_ids(&self) -> Result<Vec<u32>> {
        Ok(Packing::new(self)?.select(&self.input_ids)?.to_vec1()?)
    }
}

impl Packing {
    pub fn new(batch: &Batch) -> Result<Self> {
        let (b, t) = batch.attention_mask.dims2()?;
        let mask: Vec<u32> = batch.attention_mask.flatten_all()?.to_vec1()?;
        let real: Vec<u32> = (0..b * t).filter(|&i| mask[i] != 0).map(|i| i as u32).collect();
        let lens = Arc::new(mask.chunks(t.max(1)).map(|row| row.iter().filter(|&&m| m != 0).count()).collect());
        let mut slot_row = vec![real.len() as u32; b * t];
        for (row, &slot) in real.iter().enumerate() {
            slot_row[slot as usize] = row as u32;
        }
        Ok(Packing { real, lens, slot_row, batch: b, seq: t })
    }

    /// Packed rows (n, …) back to (batch, seq, …), zeros on padding.
    pub fn unpack(&self, x: &Tensor) -> Result<Tensor> {
        let width = x.dim(1)?;
        let zero = Tensor::zeros((1, width), x.dtype(), x.device())?;
        let index = Tensor::from_vec(self.slot_row.clone(), self.slot_row.len(), x.device())?;
        Ok(Tensor::cat(&[x, &zero], 0)?.index_select(&index, 0)?.reshape((self.batch, self.seq, width))?)
    }

    /// The real tokens' values of a (batch, seq) tensor, flattened.
    fn select(&self, x: &Tensor) -> Result<Tensor> {
        let index = Tensor::from_vec(self.real.clone(), self.real.len(), x.device())?;
        Ok(x.flatten_all()?.index_select(&index, 0)?)
    }
}

impl TokenClassifier {
    /// Embeddings of the real tokens, packed (n, hidden).
    fn embed(
        &self,
        batch: &Batch,
        packing: &Packing,
        words: Option<&Var>,
        rng: &mut Option<&mut DropoutRng>,
        grad: Grad<'_>,
    ) -> Result<Tensor> {
        let e = &self.embeddings;
        let words = match words {
            Some(rows) => rows.as_tensor().clone(),
            None => grad.param(&e.word).index_select(&packing.select(&batch.input_ids)?, 0)?,
        };
        let positions = grad.param(&e.position).index_select(&packing.select(&batch.position_ids)?, 0)?;
        // Token type ids are all 0 for single sentences: row 0 for every position.
        let token_type = grad.param(&e.token_type).narrow(0, 0, 1)?;
        let x = words.add(&positions)?.broadcast_add(&token_type)?;
        let x = e.layer_norm.forward(&x, grad, self.kernels)?;
        self.kernels.dropout(&x, self.config.hidden_dropout_prob, rng)
    }

    fn attention(
        &self,
        a: &Attention,
        index: usize,
        x: &Tensor,
        lens: &Arc<Vec<usize>>,
        rng: &mut Option<&mut DropoutRng>,
        grad: Grad<'_>,
    ) -> Result<Tensor> {
        let ops = self.kernels;
        let fast = grad.layer(index);
        let h = x.dim(1)?;
        let heads = self.config.num_attention_heads;
        // One product for q, k and v (a wider product runs closer to the GEMM's peak, and x
        // gets one gradient contribution instead of three).
        let qkv = match fast {
            Some(f) => f.qkv.0.forward(ops, x, &f.qkv.1, false)?,
            None => {
                let w = [&a.query.weight, &a.key.weight, &a.value.weight].map(|v| grad.param(v));
                let bias = [&a.query.bias, &a.key.bias, &a.value.bias].map(|v| grad.param(v));
                ops.linear(x, &Tensor::cat(&w, 0)?, &Tensor::cat(&bias, 0)?)?
            }
        };
        let p = self.config.attention_probs_dropout_prob;
        let drop_mask = match rng {
            Some(r) if p > 0.0 => Some(r.mask(heads * lens.iter().map(|n| n * n).sum::<usize>(), p)),
            _ => None,
        };
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let context = ops.attention(&qkv, heads, scale, lens.clone(), drop_mask)?;
        let projected = match fast {
            Some(f) => f.attention_output.forward(ops, &context, &grad.param(&a.output.bias), false)?,
            None => a.output.forward(&context, grad, ops)?,
        };
        self.residual_norm(&projected, x, &a.layer_norm, rng, grad)
    }

    /// LayerNorm(dropout(branch) + residual): in inference with the fused kernels, one op.
    fn residual_norm(
        &self,
        branch: &Tensor,
        residual: &Tensor,
        norm: &LayerNorm,
        rng: &mut Option<&mut DropoutRng>,
        grad: Grad<'_>,
    ) -> Result<Tensor> {
        let ops = self.kernels;
        if let (Grad::Off(_), None, Kernels::Fused | Kernels::FusedBf16) = (grad, rng.as_ref(), ops) {
            let (w, b) = (grad.param(&norm.weight), grad.param(&norm.bias));
            return Ok(crate::kernels::add_layer_norm(branch, residual, &w, &b, norm.eps)?);
        }
        let out = ops.add_dropout(branch, residual, self.config.hidden_dropout_prob, rng)?;
        norm.forward(&out, grad, ops)
    }

    fn layer(
        &self,
        l: &Layer,
        index: usize,
        x: &Tensor,
        lens: &Arc<Vec<usize>>,
        rng: &mut Option<&mut DropoutRng>,
        grad: Grad<'_>,
    ) -> Result<Tensor> {
        let ops = self.kernels;
        let x = self.attention(&l.attention, index, x, lens, rng, grad)?;
        let (i, o) = (&l.intermediate, &l.output);
        let out = match grad.layer(index) {
            Some(f) => {
                let inner = f.intermediate.forward(ops, &x, &grad.param(&i.bias), true)?;
                f.output.forward(ops, &inner, &grad.param(&o.bias), false)?
            }
            None => o.forward(&ops.linear_gelu(&x, &grad.param(&i.weight), &grad.param(&i.bias))?, grad, ops)?,
        };
        self.residual_norm(&out, &x, &l.layer_norm, rng, grad)
    }

    /// The encoder's last hidden states (batch, seq, hidden); zeros on padding. No autograd
    /// graph (inference).
    pub fn encode(&self, batch: &Batch, rng: Option<&mut DropoutRng>) -> Result<Tensor> {
        let packing = Packing::new(batch)?;
        let weights = self.inference_weights()?;
        packing.unpack(&self.encode_packed(batch, &packing, None, rng, Grad::Off(&weights))?)
    }

    /// Hidden states of the real tokens, packed (n, hidden).
    fn encode_packed(
        &self,
        batch: &Batch,
        packing: &Packing,
        words: Option<&Var>,
        mut rng: Option<&mut DropoutRng>,
        grad: Grad<'_>,
    ) -> Result<Tensor> {
        let x = self.embed(batch, packing, words, &mut rng, grad)?;
        if let (Grad::Off(_), None, Kernels::Fused | Kernels::FusedBf16) = (grad, rng.as_ref(), self.kernels) {
            return self.body_in_parts(x, &packing.lens, grad);
        }
        self.body(x, &packing.lens, &mut rng, grad)
    }

    /// The encoder's layers over packed rows `x` of sentences of `lens` tokens.
    fn body(
        &self,
        mut x: Tensor,
        lens: &Arc<Vec<usize>>,
        rng: &mut Option<&mut DropoutRng>,
        grad: Grad<'_>,
    ) -> Result<Tensor> {
        for (i, l) in self.layers.iter().enumerate() {
            x = self.layer(l, i, &x, lens, rng, grad)?;
        }
        Ok(x)
    }

    /// Inference on the CPU: `body` on groups of whole sentences, one group per thread, in
    /// parallel. Sentences do not interact (every op works on a row or on one sentence), so the
    /// values are those of one pass over the whole batch. But the threads meet once per batch
    /// instead of at each of the seven parallel ops of every layer, and each keeps its rows in
    /// its own core's cache. Each group's ops still split their work for the pool, so a thread
    /// that finishes first takes over part of the other's.
    fn body_in_parts(&self, x: Tensor, lens: &Arc<Vec<usize>>, grad: Grad<'_>) -> Result<Tensor> {
        let groups = sentence_groups(lens, rayon::current_num_threads());
        if groups.len() < 2 {
            return self.body(x, lens, &mut None, grad);
        }
        let parts = groups
            .into_par_iter()
            .map(|(first_row, group_lens)| {
                let rows = group_lens.iter().sum();
                self.body(x.narrow(0, first_row, rows)?, &Arc::new(group_lens), &mut None, grad)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Makes the inference layout of the weights now (the first inference pass otherwise does).
    pub fn prepare_inference(&self) -> Result<()> {
        self.inference_weights().map(|_| ())
    }

    /// The inference layout of the body's weights, made on first use.
    fn inference_weights(&self) -> Result<Arc<InferenceWeights>> {
        // A poisoned lock only means a panic elsewhere while it was held; the cache stays valid.
        if let Some(w) = self.inference.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if w.precision == self.precision && w.kernels == self.kernels {
                return Ok(w.clone());
            }
        }
        let w = Arc::new(InferenceWeights::new(&self.layers, self.precision, self.kernels)?);
        *self.inference.write().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
        Ok(w)
    }

    /// Drops the inference copies of the weights: whatever writes the parameters (the
    /// training step, after its update) must call this before the next inference pass.
    pub fn weights_changed(&self) {
        *self.inference.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Logits (batch, seq, labels); padded positions hold zeros (never read). No autograd
    /// graph (inference; `forward_train` builds one). With `rng`, dropout is on.
    pub fn forward(&self, batch: &Batch, rng: Option<&mut DropoutRng>) -> Result<Tensor> {
        let packing = Packing::new(batch)?;
        let weights = self.inference_weights()?;
        self.forward_with(batch, &packing, None, rng, Grad::Off(&weights))
    }

    fn forward_with(
        &self,
        batch: &Batch,
        packing: &Packing,
        words: Option<&Var>,
        mut rng: Option<&mut DropoutRng>,
        grad: Grad<'_>,
    ) -> Result<Tensor> {
        let hidden = self.encode_packed(batch, packing, words, rng.as_deref_mut(), grad)?;
        let hidden = self.kernels.dropout(&hidden, self.config.head_dropout(), &mut rng)?;
        packing.unpack(&self.classifier.forward(&hidden, grad, self.kernels)?)
    }

    /// The training forward pass: logits, and the batch's word-embedding rows (real tokens
    /// only) as a leaf of the autograd graph. Backward then yields the gradient of the touched
    /// rows only, (tokens, hidden), where candle's `index_select` would build a dense
    /// (vocabulary, hidden) one — 384 MB for XLM-R's vocabulary at hidden 384 — every step; the
    /// optimizer scatters it.
    pub fn forward_train(&self, batch: &Batch, rng: Option<&mut DropoutRng>) -> Result<(Tensor, WordRows)> {
        let packing = Packing::new(batch)?;
        let ids = packing.select(&batch.input_ids)?;
        let rows = Var::from_tensor(&self.embeddings.word.as_tensor().detach().index_select(&ids, 0)?)?;
        let logits = self.forward_with(batch, &packing, Some(&rows), rng, Grad::Track)?;
        Ok((logits, WordRows { ids: ids.to_vec1()?, rows }))
    }

    /// The device the parameters live on (batches are built there).
    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Chooses the ops' implementation: the composed ops run anywhere, the fused kernels on the
    /// CPU only.
    pub fn set_kernels(&mut self, kernels: Kernels) -> Result<()> {
        if kernels != Kernels::Composed && !self.device().is_cpu() {
            return Err(Error::Usage(format!(
                "the fused kernels run on the CPU only, the model is on {:?}",
                self.device()
            )));
        }
        if kernels == Kernels::Composed && self.precision != Precision::F32 {
            return Err(Error::Usage(format!("--precision {} runs on the fused CPU kernels only", self.precision)));
        }
        self.kernels = kernels;
        Ok(())
    }

    /// The number format of the linear layers in inference: bf16 and int8 pack the weights
    /// (on the next inference pass) for the fused CPU kernels; training stays in f32.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision != Precision::F32 && self.kernels == Kernels::Composed {
            return Err(Error::Usage(format!(
                "--precision {precision} runs on the CPU only (the model is on {:?})",
                self.device()
            )));
        }
        self.precision = precision;
        self.weights_changed();
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of the linear weights' inference copies (made now if they are not yet).
    pub fn inference_bytes(&self) -> Result<usize> {
        Ok(self.inference_weights()?.bytes())
    }

    /// Index of the word-embedding table in `params`.
    pub fn word_embedding_index(&self) -> usize {
        self.params.iter().position(|(n, _)| n.ends_with("embeddings.word_embeddings.weight")).expect("loaded model")
    }

    /// The longest sequence the position embeddings allow, special tokens included: RoBERTa's
    /// positions start after `padding_idx` (514 embeddings, 512 tokens), BERT's at 0.
    pub fn max_tokens(&self) -> usize {
        let n = self.config.max_position_embeddings;
        match self.family {
            Family::Bert => n,
            Family::Roberta => n.saturating_sub(self.config.pad_token_id as usize + 1),
        }
    }

    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[0]
    }

    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Position ids for a padded batch of ids: BERT counts from 0; RoBERTa counts real tokens
    /// from `padding_idx + 1` and gives padding `padding_idx`
    /// (`create_position_ids_from_input_ids`).
    pub fn position_ids<R: AsRef<[u32]>>(&self, ids: &[R], seq_len: usize) -> Vec<u32> {
        let pad = self.config.pad_token_id;
        let mut out = Vec::with_capacity(ids.len() * seq_len);
        for row in ids {
            let row = row.as_ref();
            let mut count = 0;
            for j in 0..seq_len {
                out.push(match self.family {
                    Family::Bert => j as u32,
                    Family::Roberta => {
                        let id = row.get(j).copied().unwrap_or(pad);
                        if id == pad {
                            pad
                        } else {
                            count += 1;
                            pad + count
                        }
                    }
                });
            }
        }
        out
    }

    /// Loads a model directory (`config.json` + `model.safetensors`): a token-classification
    /// checkpoint, or a body alone (then the head is new, initialised as transformers does:
    /// normal(0, initializer_range) weights, zero bias, drawn with `seed`). `labels` sets the
    /// head's size and `id2label` when the checkpoint has no head or a different one.
    pub fn load(dir: &Path, labels: Option<&[String]>, seed: u64, device: &Device) -> Result<Self> {
        let mut config = Config::from_file(&dir.join("config.json"))?;
        let family = config.family().map_err(|m| Error::invalid(&dir.join("config.json"), m))?;
        let (weights_path, tensors) = read_weights(dir, device)?;
        let prefix = ["roberta.", "bert.", ""]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| {
                Error::invalid(&weights_path, "no embeddings.word_embeddings.weight: not a BERT/XLM-R body")
            })?;
        let mut store = TensorSource { tensors, prefix, path: &weights_path, used: vec![] };

        let saved_labels = config.labels();
        let head_matches = match (labels, &saved_labels) {
            (Some(want), Some(have)) => want == have.as_slice(),
            (None, Some(_)) => true,
            _ => false,
        };
        let label_names: Vec<String> = match (labels, &saved_labels) {
            (Some(l), _) => l.to_vec(),
            (None, Some(l)) => l.clone(),
            (None, None) => {
                return Err(Error::invalid(dir, "the model has no token-classification head and no labels were given"))
            }
        };
        config.set_labels(&label_names);

        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let mut params: Vec<(String, Var)> = vec![];
        let body_prefix = match family {
            Family::Bert => "bert.",
            Family::Roberta => "roberta.",
        };
        let mut var = |name: &str, shape: &[usize]| -> Result<Var> {
            let t = store.get(name, shape)?;
            let v = Var::from_tensor(&t)?;
            params.push((format!("{body_prefix}{name}"), v.clone()));
            Ok(v)
        };
        let ln = |var: &mut dyn FnMut(&str, &[usize]) -> Result<Var>, name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: var(&format!("{name}.weight"), &[h])?,
                bias: var(&format!("{name}.bias"), &[h])?,
                eps,
            })
        };
        let embeddings = Embeddings {
            word: var("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: var("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
            token_type: var("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?,
            layer_norm: ln(&mut var, "embeddings.LayerNorm")?,
        };
        let linear = |var: &mut dyn FnMut(&str, &[usize]) -> Result<Var>, name: &str, out: usize, inp: usize| {
            Ok::<_, Error>(Linear {
                weight: var(&format!("{name}.weight"), &[out, inp])?,
                bias: var(&format!("{name}.bias"), &[out])?,
            })
        };
        let f = config.intermediate_size;
        let mut layers = vec![];
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let attention = Attention {
                query: linear(&mut var, &format!("{p}.attention.self.query"), h, h)?,
                key: linear(&mut var, &format!("{p}.attention.self.key"), h, h)?,
                value: linear(&mut var, &format!("{p}.attention.self.value"), h, h)?,
                output: linear(&mut var, &format!("{p}.attention.output.dense"), h, h)?,
                layer_norm: ln(&mut var, &format!("{p}.attention.output.LayerNorm"))?,
            };
            layers.push(Layer {
                attention,
                intermediate: linear(&mut var, &format!("{p}.intermediate.dense"), f, h)?,
                output: linear(&mut var, &format!("{p}.output.dense"), h, f)?,
                layer_norm: ln(&mut var, &format!("{p}.output.LayerNorm"))?,
            });
        }

        let n = label_names.len();
        let classifier = if head_matches && store.has_head() {
            let w = store.get_head("classifier.weight", &[n, h])?;
            let b = store.get_head("classifier.bias", &[n])?;
            Linear { weight: Var::from_tensor(&w)?, bias: Var::from_tensor(&b)? }
        } else {
            let mut rng = Pcg64::from_seed(seed as u128);
            let std = config.initializer_range as f32;
            let w: Vec<f32> = (0..n * h).map(|_| normal(&mut rng) * std).collect();
            Linear {
                weight: Var::from_tensor(&Tensor::from_vec(w, (n, h), device)?)?,
                bias: Var::from_tensor(&Tensor::zeros(n, DType::F32, device)?)?,
            }
        };
        params.push(("classifier.weight".into(), classifier.weight.clone()));
        params.push(("classifier.bias".into(), classifier.bias.clone()));
        Ok(TokenClassifier {
            config,
            family,
            embeddings,
            layers,
            classifier,
            params,
            inference: Default::default(),
            kernels: Kernels::for_device(device),
            precision: Precision::F32,
        })
    }

    /// The parameters as named f32 tensors, under transformers' token-classification names.
    pub fn named_tensors(&self) -> Result<Vec<NamedTensor>> {
        self.params
            .iter()
            .map(|(name, v)| {
                let t = v.as_tensor();
                Ok(NamedTensor {
                    name: name.clone(),
                    shape: t.dims().to_vec(),
                    data: t.flatten_all()?.to_vec1::<f32>()?,
                })
            })
            .collect()
    }

    /// Writes `config.json` (with the head's architecture and labels) and `model.safetensors`
    /// into `dir`, each atomically; a `tokenizer.json` is the caller's to copy.
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::write_safetensors(&dir.join("model.safetensors"), &self.named_tensors()?)?;
        checkpoint::write_json(&dir.join("config.json"), &self.config_json()?)
    }

    /// config.json as `save` writes it: the head's architecture and labels.
    pub fn config_json(&self) -> Result<serde_json::Value> {
        let mut config = self.config.clone();
        let arch = match (self.family, config.model_type.as_str()) {
            (Family::Bert, _) => "BertForTokenClassification",
            (Family::Roberta, "roberta") => "RobertaForTokenClassification",
            (Family::Roberta, _) => "XLMRobertaForTokenClassification",
        };
        config.extra.insert("architectures".into(), serde_json::json!([arch]));
        config.extra.remove("num_labels");
        serde_json::to_value(&config).map_err(|e| Error::Json { context: "config.json".into(), source: e })
    }
}

/// The weights of a model directory: `model.safetensors`, or else PyTorch's `pytorch_model.bin`
/// (the zip format that `torch.save` has written since 1.6, which candle reads).
fn read_weights(dir: &Path, device: &Device) -> Result<(std::path::PathBuf, HashMap<String, Tensor>)> {
    let safetensors = dir.join("model.safetensors");
    if safetensors.exists() && crate::quantize::is_quantized(dir) {
        return Ok((safetensors.clone(), crate::quantize::read_dequantized(&safetensors, device)?));
    }
    if safetensors.exists() {
        let tensors = candle_core::safetensors::load(&safetensors, device)
            .map_err(|e| Error::invalid(&safetensors, format!("cannot read safetensors: {e}")))?;
        return Ok((safetensors, tensors));
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.exists() {
        let tensors = candle_core::pickle::read_all(&bin)
            .map_err(|e| Error::invalid(&bin, format!("cannot read this PyTorch checkpoint: {e}")))?;
        return Ok((bin, tensors.into_iter().map(|(k, t)| Ok((k, t.to_device(device)?))).collect::<Result<_>>()?));
    }
    Err(Error::invalid(dir, "no model.safetensors (or pytorch_model.bin) in the model directory"))
}

/// Standard normal by Box–Muller.
fn normal(rng: &mut Pcg64) -> f32 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Tensors of a safetensors file under a body prefix, with shape checks naming the file.
struct TensorSource<'a> {
    tensors: HashMap<String, Tensor>,
    prefix: &'a str,
    path: &'a Path,
    used: Vec<String>,
}

impl TensorSource<'_> {
    fn fetch(&mut self, full: String, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(&full).ok_or_else(|| Error::invalid(self.path, format!("missing tensor {full}")))?;
        if t.dims() != shape {
            return Err(Error::invalid(
                self.path,
                format!("tensor {full} has shape {:?}, config says {shape:?}", t.dims()),
            ));
        }
        self.used.push(full);
        Ok(t.to_dtype(DType::F32)?)
    }
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.fetch(format!("{}{name}", self.prefix), shape)
    }
    fn get_head(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.fetch(name.to_string(), shape)
    }
    fn has_head(&self) -> bool {
        self.tensors.contains_key("classifier.weight") && self.tensors.contains_key("classifier.bias")
    }
}

/// Sentences of `lens` tokens cut into at most `groups` runs of consecutive sentences with
/// about equal tokens: (first row, lengths) of each, none empty.
fn sentence_groups(lens: &[usize], groups: usize) -> Vec<(usize, Vec<usize>)> {
    let total: usize = lens.iter().sum();
    let groups = groups.clamp(1, lens.len().max(1));
    if total == 0 || groups == 1 {
        return vec![(0, lens.to_vec())];
    }
    let mut out: Vec<(usize, Vec<usize>)> = Vec::with_capacity(groups);
    let (mut row, mut current) = (0, (0, Vec::new()));
    for &n in lens {
        current.1.push(n);
        row += n;
        // Close the group once its share of the tokens is reached (the last takes the rest).
        if out.len() + 1 < groups && row * groups >= total * (out.len() + 1) {
            out.push(std::mem::replace(&mut current, (row, Vec::new())));
        }
    }
    if !current.1.is_empty() {
        out.push(current);
    }
    out
}

/// Mean cross-entropy over the positions whose label is not -100, as
/// `torch.nn.CrossEntropyLoss(ignore_index=-100)`; log-softmax from differentiable ops.
/// Returns None when the batch has no labelled position.
pub fn token_loss(logits: &Tensor, labels: &Tensor) -> Result<Option<Tensor>> {
    let n_labels = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), n_labels))?;
    let labels = labels.flatten_all()?.to_vec1::<i64>()?;
    let (keep, targets): (Vec<u32>, Vec<u32>) = labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l != crate::align::IGNORE_INDEX)
        .map(|(i, &l)| (i as u32, l as u32))
        .unzip();
    if keep.is_empty() {
        return Ok(None);
    }
    let n = keep.len();
    let device = logits.device();
    let selected = logits.index_select(&Tensor::from_vec(keep, n, device)?, 0)?; // (n, labels)
    let max = selected.max_keepdim(1)?.detach();
    let shifted = selected.broadcast_sub(&max)?;
    let log_norm = shifted.exp()?.sum_keepdim(1)?.log()?;
    let log_probs = shifted.broadcast_sub(&log_norm)?;
    let picked = log_probs.gather(&Tensor::from_vec(targets, (n, 1), device)?, 1)?;
    Ok(Some(picked.mean_all()?.neg()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_groups_cover_the_batch_in_order_with_about_equal_tokens() {
        let lens = [30, 5, 5, 12, 40, 1, 9, 18];
        for groups in 1..=10 {
            let cut = sentence_groups(&lens, groups);
            // A long sentence can take more than one group's share: then fewer groups.
            assert!(cut.len() <= groups && (groups == 1 || cut.len() > 1), "{groups} groups: {cut:?}");
            let mut row = 0;
            for (first, group) in &cut {
                assert!(!group.is_empty());
                assert_eq!(*first, row);
                row += group.iter().sum::<usize>();
            }
            assert_eq!(cut.iter().flat_map(|g| g.1.iter().copied()).collect::<Vec<_>>(), lens);
        }
        // Two groups: the cut falls where the tokens first reach half (60 of 120).
        assert_eq!(sentence_groups(&lens, 2), vec![(0, vec![30, 5, 5, 12, 40]), (92, vec![1, 9, 18])]);
        assert_eq!(sentence_groups(&[0, 0], 2), vec![(0, vec![0, 0])]);
        assert_eq!(sentence_groups(&[], 4), vec![(0, vec![])]);
    }

    #[test]
    fn dropout_masks_are_seeded_unbiased_and_independent_of_threads() {
        let p = 0.1;
        let a = DropoutRng::new(5).mask(100_001, p);
        assert_eq!(a, DropoutRng::new(5).mask(100_001, p), "same seed, same mask");
        assert_ne!(a, DropoutRng::new(6).mask(100_001, p));
        let dropped = a.iter().filter(|&&x| x == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - p).abs() < 0.005, "dropped {dropped}");
        assert!(a.iter().all(|&x| x == 0.0 || x == 1.0 / 0.9f32));
        // Successive masks of one generator differ; a mask drawn on one thread is the same.
        let mut rng = DropoutRng::new(5);
        let (first, second) = (rng.mask(1000, p), rng.mask(1000, p));
        assert_ne!(first, second);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(pool.install(|| DropoutRng::new(5).mask(100_001, p)), a);
        // A prefix of a longer mask is the shorter mask (chunks are cut on pairs).
        assert_eq!(DropoutRng::new(5).mask(40_000, p)[..], a[..40_000]);
    }
}
