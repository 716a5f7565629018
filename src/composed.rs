//! The model's ops composed from candle's differentiable tensor ops: what runs on devices other
//! than the CPU (CUDA, Metal), where the fused kernels (`kernels`, CPU loops) cannot, and the
//! plain definition each fused kernel is tested against.
//!
//! Each function takes exactly the arguments of its namesake in `kernels` and computes the same
//! values, so the model switches between the two with one flag (`model::Kernels`). Nothing here
//! uses `candle_nn::ops::layer_norm` or `softmax_last_dim`: in candle 0.11 they have no backward.
//!
//! Attention works on the padded layout a GPU wants (batch, heads, t, t) with padded keys
//! masked, then packs the context back: the packed rows never carry padding, so the model's
//! other ops are the same on every device.

use std::sync::Arc;

use candle_core::{Result, Tensor, D};

/// `torch.nn.LayerNorm` over the last dimension: (x − mean) / √(var + eps) · w + b, with the
/// biased variance, as torch computes it.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(w)?.broadcast_add(b)
}

/// y = x Wᵀ + b over the last dimension of `x`; `w` is (out, in) as torch stores it.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    on_rows(x, |rows| rows.matmul(&w.t()?)?.broadcast_add(b))
}

/// gelu(x Wᵀ + b), GELU exact (erf), as BERT's intermediate layer.
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    linear(x, w, b)?.gelu_erf()
}

/// y = x Wt + b (and GELU) for weights already transposed to (in, out): inference's layout.
pub fn linear_transposed(x: &Tensor, wt: &Tensor, b: &Tensor, gelu: bool) -> Result<Tensor> {
    let y = on_rows(x, |rows| rows.matmul(wt)?.broadcast_add(b))?;
    if gelu {
        y.gelu_erf()
    } else {
        Ok(y)
    }
}

/// `f` on `x` flattened to rows (…, in) → (rows, in), reshaped back to (…, out).
fn on_rows(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let width = *dims.last().unwrap_or(&1);
    let y = f(&x.reshape(((), width))?)?;
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = y.dim(1)?;
    }
    y.reshape(out_dims)
}

/// A keep/scale mask as a tensor beside `like` (same shape, device).
fn mask_tensor(mask: Arc<Vec<f32>>, like: &Tensor) -> Result<Tensor> {
    if mask.len() != like.elem_count() {
        candle_core::bail!("dropout mask has {} values for {} inputs", mask.len(), like.elem_count())
    }
    let values = Arc::try_unwrap(mask).unwrap_or_else(|shared| shared.as_ref().clone());
    Tensor::from_vec(values, like.shape(), like.device())
}

/// `x · mask` (dropout with its keep/scale values drawn on the host).
pub fn mask_mul(x: &Tensor, mask: Arc<Vec<f32>>) -> Result<Tensor> {
    x.mul(&mask_tensor(mask, x)?)
}

/// `residual + branch · keep` (training), `residual + branch` (evaluation).
pub fn residual_dropout(branch: &Tensor, residual: &Tensor, keep: Option<Arc<Vec<f32>>>) -> Result<Tensor> {
    match keep {
        Some(keep) => mask_mul(branch, keep)?.add(residual),
        None => branch.add(residual),
    }
}

/// Multi-head self-attention of packed sentences, as `kernels::attention`: `qkv` (tokens,
/// 3·hidden), sentences of `lens` tokens one after another; `dropout` holds per sentence
/// heads·t·t keep/scale values. Padded to (sentences, heads, t_max, t_max) for batched products,
/// padded keys masked with the most negative f32 (as transformers' extended attention mask).
pub fn attention(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    lens: Arc<Vec<usize>>,
    dropout: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    let (n, width) = qkv.dims2()?;
    let hidden = width / 3;
    if width % 3 != 0 || hidden % heads != 0 || lens.iter().sum::<usize>() != n {
        candle_core::bail!("attention: packed width {width} with {heads} heads, {n} rows for sentences {lens:?}")
    }
    let d = hidden / heads;
    let (b, t) = (lens.len(), lens.iter().copied().max().unwrap_or(0));
    let device = qkv.device();

    // Padded slot → packed row (row n, a zero row, for padding), and the reverse.
    let mut slot_row = vec![n as u32; b * t];
    let mut real = Vec::with_capacity(n);
    let mut row = 0u32;
    for (s, &len) in lens.iter().enumerate() {
        for i in 0..len {
            slot_row[s * t + i] = row;
            real.push((s * t + i) as u32);
            row += 1;
        }
    }
    let zero = Tensor::zeros((1, width), qkv.dtype(), device)?;
    let padded = Tensor::cat(&[qkv, &zero], 0)?.index_select(&Tensor::from_vec(slot_row, b * t, device)?, 0)?;
    let padded = padded.reshape((b, t, 3, heads, d))?;
    // (b, heads, t, d) each.
    let part = |i: usize| padded.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);

    let key_bias: Vec<f32> =
        lens.iter().flat_map(|&len| (0..t).map(move |j| if j < len { 0.0 } else { f32::MIN })).collect();
    let key_bias = Tensor::from_vec(key_bias, (b, 1, 1, t), device)?;
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&key_bias)?;
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&max)?.exp()?;
    let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    let probs = match dropout {
        Some(keep) => probs.mul(&Tensor::from_vec(pad_keep(&keep, &lens, heads, t)?, (b, heads, t, t), device)?)?,
        None => probs,
    };
    let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * t, hidden))?;
    context.index_select(&Tensor::from_vec(real, n, device)?, 0)
}

/// Per-sentence (heads, len, len) keep values laid out in (sentences, heads, t, t), 0 outside
/// the sentence (padded keys have probability 0; padded queries are never read).
fn pad_keep(keep: &[f32], lens: &[usize], heads: usize, t: usize) -> Result<Vec<f32>> {
    let expected = heads * lens.iter().map(|l| l * l).sum::<usize>();
    if keep.len() != expected {
        candle_core::bail!("attention: dropout mask has {} values, the sentences need {expected}", keep.len())
    }
    let mut out = vec![0f32; lens.len() * heads * t * t];
    let mut at = 0;
    for (s, &len) in lens.iter().enumerate() {
        for head in 0..heads {
            for i in 0..len {
                let dst = ((s * heads + head) * t + i) * t;
                out[dst..dst + len].copy_from_slice(&keep[at..at + len]);
                at += len;
            }
        }
    }
    Ok(out)
}
