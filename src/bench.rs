//! `xner bench`: times the phases of a training step (forward, backward, clipping + AdamW) and
//! inference, on synthetic batches of a fixed shape or on real sentences batched as training
//! batches them, for a model directory or random weights of a named shape; reports real-token
//! throughput, the padding the batches carry, and the process's peak memory.

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use crate::align::AlignedSentence;
use crate::batch::{collate, token_counts};
use crate::checkpoint::NamedTensor;
use crate::error::{Error, Result};
use crate::model::{Batch, DropoutRng, TokenClassifier};
use crate::optim::{AdamW, AdamWConfig};
use crate::shuffle::Pcg64;
use crate::train::{epoch_batches, match_optimizer, train_step};

/// Seconds per phase summed over the timed steps, with the tokens they covered.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
    pub inference: f64,
    /// Making the inference layout of the weights (once per model, before the passes).
    pub inference_setup: f64,
    pub steps: usize,
    /// Real (non-padding) tokens of the timed steps.
    pub tokens: usize,
    /// Slots of the padded batches (what a padded implementation computes).
    pub padded_tokens: usize,
}

impl Timings {
    pub fn step(&self) -> f64 {
        self.forward + self.backward + self.optimizer
    }

    /// Share of the padded batches' slots that are padding.
    pub fn padding_fraction(&self) -> f64 {
        1.0 - self.tokens as f64 / self.padded_tokens.max(1) as f64
    }
}

/// A batch of random ids (no padding) of shape (batch, seq).
pub fn synthetic_batch(model: &TokenClassifier, batch: usize, seq: usize, seed: u64) -> Result<Batch> {
    let mut rng = Pcg64::from_seed(seed as u128);
    let vocab = model.config.vocab_size as u64;
    let n_labels = model.num_labels() as u64;
    let ids: Vec<Vec<u32>> =
        (0..batch).map(|_| (0..seq).map(|_| 5 + (rng.next_u64() % (vocab - 5)) as u32).collect()).collect();
    let labels: Vec<i64> = (0..batch * seq).map(|_| (rng.next_u64() % n_labels) as i64).collect();
    let dev = model.device();
    let positions = model.position_ids(&ids, seq);
    Ok(Batch {
        input_ids: Tensor::from_vec(ids.concat(), (batch, seq), dev)?,
        attention_mask: Tensor::ones((batch, seq), candle_core::DType::U32, dev)?,
        labels: Tensor::from_vec(labels, (batch, seq), dev)?,
        position_ids: Tensor::from_vec(positions, (batch, seq), dev)?,
    })
}

/// Real sentences in the batches one training epoch would make of them (length-grouped,
/// seed 42, epoch 0).
pub fn sentence_batches(sentences: &[AlignedSentence], batch_size: usize) -> Vec<Vec<&AlignedSentence>> {
    let lengths: Vec<usize> = sentences.iter().map(|s| s.len()).collect();
    epoch_batches(&lengths, batch_size, 42, 0, true)
        .into_iter()
        .map(|idx| idx.into_iter().map(|i| &sentences[i]).collect())
        .collect()
}

/// Times one training step per batch, after one untimed warm-up step on the first batch
/// (first-touch page faults, moments allocation), then one inference pass per batch with the
/// weights the steps left — as an evaluation follows training. Making the inference layout of
/// those weights, once per evaluation, is timed on its own.
pub fn time_batches(model: &TokenClassifier, batches: &[Batch]) -> Result<Timings> {
    let mut opt = AdamW::new(&model.params, AdamWConfig::default())?;
    match_optimizer(model, &mut opt)?;
    let mut t = Timings::default();
    let Some(first) = batches.first() else { return Ok(t) };
    let mut rng = DropoutRng::new(0);
    train_step(model, &mut opt, first, &mut rng, 1e-5, 1.0)?;
    let mut trained = vec![];
    for (k, b) in batches.iter().enumerate() {
        let mut rng = DropoutRng::new(k as u64 + 1);
        let Some(phases) = train_step(model, &mut opt, b, &mut rng, 1e-5, 1.0)? else { continue };
        t.forward += phases.forward;
        t.backward += phases.backward;
        t.optimizer += phases.optimizer;
        t.steps += 1;
        let mask: Vec<u32> = b.attention_mask.flatten_all()?.to_vec1()?;
        t.tokens += mask.iter().filter(|&&m| m != 0).count();
        t.padded_tokens += mask.len();
        trained.push(b);
    }
    let t0 = Instant::now();
    model.prepare_inference()?;
    model.device().synchronize()?;
    t.inference_setup = t0.elapsed().as_secs_f64();
    for b in trained {
        let t0 = Instant::now();
        let _ = model.forward(b, None)?.sum_all()?.to_scalar::<f32>()?;
        t.inference += t0.elapsed().as_secs_f64();
    }
    Ok(t)
}

/// `steps` synthetic batches of (batch, seq).
pub fn synthetic_batches(model: &TokenClassifier, batch: usize, seq: usize, steps: usize) -> Result<Vec<Batch>> {
    (0..steps).map(|s| synthetic_batch(model, batch, seq, s as u64 + 1)).collect()
}

/// Padded batches of real sentences for `model`.
pub fn real_batches(model: &TokenClassifier, sentences: &[AlignedSentence], batch_size: usize) -> Result<Vec<Batch>> {
    sentence_batches(sentences, batch_size).iter().map(|b| collate(model, b, model.device())).collect()
}

/// Real and padded token counts of the batches `sentence_batches` makes.
pub fn padding_of(sentences: &[AlignedSentence], batch_size: usize) -> (usize, usize) {
    sentence_batches(sentences, batch_size).iter().map(|b| token_counts(b)).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
}

/// The process's peak resident memory in bytes (Linux: VmHWM), if known.
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Encoder shapes for random-weight benchmarks.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
}

impl Shape {
    /// `xlm-roberta-base` (278 M parameters) or `e5-small`'s body.
    pub fn named(name: &str) -> Result<Shape> {
        match name {
            "xlmr-base" | "xlm-roberta-base" => {
                Ok(Shape { vocab: 250_002, hidden: 768, intermediate: 3072, layers: 12, heads: 12 })
            }
            "e5-small" => Ok(Shape { vocab: 250_037, hidden: 384, intermediate: 1536, layers: 12, heads: 12 }),
            other => Err(Error::Usage(format!("unknown shape {other:?}: xlmr-base or e5-small"))),
        }
    }
}

/// Writes an XLM-R body of `shape` with random weights (normal-ish, σ 0.02; LayerNorm 1/0)
/// into `dir` as a Hugging Face directory (config.json + model.safetensors), so that xner and
/// transformers read the very same weights.
pub fn write_random_model(dir: &Path, shape: Shape, seed: u64) -> Result<()> {
    let Shape { vocab, hidden: h, intermediate: f, layers, heads } = shape;
    let max_pos = 514;
    let mut rng = Pcg64::from_seed(seed as u128);
    let mut normal =
        |n: usize| -> Vec<f32> { (0..n).map(|_| ((rng.next_f64() + rng.next_f64() - 1.0) * 0.035) as f32).collect() };
    let mut tensors = vec![];
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| tensors.push(NamedTensor { name, shape, data });
    push("embeddings.word_embeddings.weight".into(), vec![vocab, h], normal(vocab * h));
    push("embeddings.position_embeddings.weight".into(), vec![max_pos, h], normal(max_pos * h));
    push("embeddings.token_type_embeddings.weight".into(), vec![1, h], normal(h));
    let ln = |push: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), p: &str| {
        push(format!("{p}.weight"), vec![h], vec![1.0; h]);
        push(format!("{p}.bias"), vec![h], vec![0.0; h]);
    };
    ln(&mut push, "embeddings.LayerNorm");
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", f, h),
            ("output.dense", h, f),
        ] {
            push(format!("{p}.{name}.weight"), vec![out, inp], normal(out * inp));
            push(format!("{p}.{name}.bias"), vec![out], vec![0.0; out]);
        }
        ln(&mut push, &format!("{p}.attention.output.LayerNorm"));
        ln(&mut push, &format!("{p}.output.LayerNorm"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::checkpoint::write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let config = serde_json::json!({
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "vocab_size": vocab,
        "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": f,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": max_pos, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1,
        "bos_token_id": 0, "eos_token_id": 2, "initializer_range": 0.02
    });
    crate::checkpoint::write_json(&dir.join("config.json"), &config)
}

/// One matrix product the model runs: C (m, n) = A (m, k) · B (k, n), with A or B read
/// transposed where the model reads them so.
#[derive(Clone, Debug, Serialize)]
pub struct GemmShape {
    pub name: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a_transposed: bool,
    pub b_transposed: bool,
    /// Whether inference runs it (so bf16 and int8 are timed too).
    pub inference: bool,
}

impl GemmShape {
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// Every product of a layer of this width, over `tokens` packed tokens: the four linear layers
/// forward (weights stored (in, out) for inference), and in training their backward products,
/// dx = dy·W (W as stored, (out, in)) and dW = dyᵀ·x.
pub fn gemm_shapes(hidden: usize, intermediate: usize, tokens: &[usize]) -> Vec<GemmShape> {
    let layers = [
        ("qkv", hidden, 3 * hidden),
        ("attn-out", hidden, hidden),
        ("ffn-up", hidden, intermediate),
        ("ffn-down", intermediate, hidden),
    ];
    let mut shapes = vec![];
    for &m in tokens {
        for &(name, ins, outs) in &layers {
            let shape = |what: &str, (m, k, n): (usize, usize, usize), a_t: bool, inference: bool| GemmShape {
                name: format!("{name} {what}"),
                m,
                k,
                n,
                a_transposed: a_t,
                b_transposed: false,
                inference,
            };
            shapes.push(shape("forward", (m, ins, outs), false, true));
            // Training reads torch's (out, in) weight transposed.
            shapes.push(GemmShape { b_transposed: true, ..shape("forward (training)", (m, ins, outs), false, false) });
            shapes.push(shape("dx", (m, outs, ins), false, false));
            shapes.push(shape("dW", (outs, m, ins), true, false));
        }
    }
    shapes
}

/// GFLOP/s of `shape` in `precision` (the best of repeated runs over at least `seconds`).
/// For inference shapes, each precision times the whole inference product: rounding or
/// quantizing the activations (bf16, int8), the product on weights packed beforehand (f32 too,
/// where the CPU has AVX-512), the bias. For training
/// shapes, bf16 is `train --bf16`'s product: both operands rounded and packed on every call.
pub fn time_gemm(shape: &GemmShape, precision: crate::lowp::Precision, seconds: f64) -> f64 {
    let mut rng = Pcg64::from_seed(7);
    let mut random = |len: usize| -> Vec<f32> {
        (0..len).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect()
    };
    let (a, b) = (random(shape.m * shape.k), random(shape.k * shape.n));
    let bias = vec![0f32; shape.n];
    let packed = if shape.inference { crate::lowp::Packed::new(precision, &b, shape.k, shape.n) } else { None };
    let packed_f32 = match (shape.inference, precision) {
        (true, crate::lowp::Precision::F32) => crate::sgemm::PackedF32::new(&b, shape.k, shape.n),
        _ => None,
    };
    // A transposed operand (rows, cols) is stored as its transpose, row-major.
    fn view(data: &[f32], rows: usize, cols: usize, transposed: bool) -> crate::kernels::View<'_> {
        use crate::kernels::View;
        if transposed {
            View::rows(data, cols, rows).t()
        } else {
            View::rows(data, rows, cols)
        }
    }
    let run = || match (&packed, &packed_f32, precision) {
        (Some(p), _, _) => p.linear(&a, shape.m, &bias, false),
        (None, Some(p), _) => p.linear(&a, shape.m, &bias, false),
        (None, None, crate::lowp::Precision::F32) => {
            crate::kernels::matmul_f32(shape.m, shape.k, shape.n, &a, shape.a_transposed, &b, shape.b_transposed)
        }
        (None, None, _) => crate::lowp::matmul_bf16(
            view(&a, shape.m, shape.k, shape.a_transposed),
            view(&b, shape.k, shape.n, shape.b_transposed),
            None,
        ),
    };
    std::hint::black_box(run());
    let (start, mut best, mut runs) = (Instant::now(), f64::INFINITY, 0);
    while runs < 3 || start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        std::hint::black_box(run());
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    shape.flops() / best / 1e9
}
