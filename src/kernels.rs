//! Fused CPU kernels, each forward beside its backward (as llm.c lays them out), wrapped as
//! candle custom ops so autograd calls our backward instead of replaying a dozen generic ops.
//!
//! Why: candle composes LayerNorm and softmax from ~10 elementwise ops, each of whose backward
//! passes allocates a zero tensor, adds into it, and (for `Mul`) also differentiates the
//! constant side; dropout by multiplication pays that too. One fused pass per direction reads
//! and writes each element once. Every kernel is tested against the unfused composition,
//! values and gradients (tests below).
//!
//! Shapes: `x` (rows, width) for row-wise kernels, any leading dimensions flattened.

// Index loops mirror the formulas (several slices indexed together).
#![allow(clippy::needless_range_loop)]

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// The contiguous f32 data of a storage under its layout.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: contiguous f32 input expected"),
    }
}

/// A tensor's contiguous f32 data, copied out (backward passes read their inputs this way).
fn data(t: &Tensor) -> CResult<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Rows per parallel task for row-wise kernels.
const ROWS_PER_TASK: usize = 16;

// ---- LayerNorm -----------------------------------------------------------------------------

/// `torch.nn.functional.layer_norm` over the last dimension: y = (x − μ)/√(σ² + ε) · w + b.
struct LayerNorm {
    eps: f32,
}

/// Mean and 1/std of one row (two passes, as the composed version computes them).
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(xs, xl, self.name())?, slice(ws, wl, self.name())?, slice(bs, bl, self.name())?);
        let h = w.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h * ROWS_PER_TASK).zip(x.par_chunks(h * ROWS_PER_TASK)).for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(h).zip(x.chunks(h)) {
                let (mean, rstd) = row_stats(x, self.eps);
                for i in 0..h {
                    y[i] = (x[i] - mean) * rstd * w[i] + b[i];
                }
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = dy · w; dw = Σ dy · x̂; db = Σ dy.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xv, wv, dyv) = (data(x)?, data(w)?, data(dy)?);
        let h = wv.len();
        let mut dx = vec![0f32; xv.len()];
        let (dw, db) = dx
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(xv.par_chunks(h * ROWS_PER_TASK).zip(dyv.par_chunks(h * ROWS_PER_TASK)))
            .map(|(dx, (x, dy))| {
                let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
                let mut xhat = vec![0f32; h];
                for ((dx, x), dy) in dx.chunks_mut(h).zip(x.chunks(h)).zip(dy.chunks(h)) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let (mut g_mean, mut gx_mean) = (0f32, 0f32);
                    for i in 0..h {
                        xhat[i] = (x[i] - mean) * rstd;
                        let g = dy[i] * wv[i];
                        g_mean += g;
                        gx_mean += g * xhat[i];
                        dw[i] += dy[i] * xhat[i];
                        db[i] += dy[i];
                    }
                    g_mean /= h as f32;
                    gx_mean /= h as f32;
                    for i in 0..h {
                        dx[i] = rstd * (dy[i] * wv[i] - g_mean - xhat[i] * gx_mean);
                    }
                }
                (dw, db)
            })
            .reduce(
                || (vec![0f32; h], vec![0f32; h]),
                |(mut aw, mut ab), (bw, bb)| {
                    aw.iter_mut().zip(bw).for_each(|(a, b)| *a += b);
                    ab.iter_mut().zip(bb).for_each(|(a, b)| *a += b);
                    (aw, ab)
                },
            );
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, h, dev)?),
            Some(Tensor::from_vec(db, h, dev)?),
        ))
    }
}

/// LayerNorm over the last dimension of `x` with weight `w` and bias `b` (both (width,)).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(w, b, LayerNorm { eps: eps as f32 })
}

// ---- attention probabilities: scale, key mask, softmax, dropout ------------------------------

/// p = softmax(scale · s + mask[batch]) over the last dimension, then · dropout mask.
/// `s` is (batch, heads, queries, keys); `key_bias` (batch, keys) holds 0 or a large negative.
struct AttentionProbs {
    scale: f32,
    heads: usize,
    key_bias: Arc<Vec<f32>>,
    dropout: Option<Arc<Vec<f32>>>,
}

impl AttentionProbs {
    /// Softmax of one row of scores into `p`.
    fn softmax_row(&self, s: &[f32], bias: &[f32], p: &mut [f32]) {
        let mut max = f32::NEG_INFINITY;
        for j in 0..s.len() {
            p[j] = self.scale * s[j] + bias[j];
            max = max.max(p[j]);
        }
        let mut sum = 0f32;
        for v in p.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        p.iter_mut().for_each(|v| *v *= inv);
    }

    fn keys_of(&self, dims: &[usize]) -> CResult<(usize, usize)> {
        let &[_, heads, queries, keys] = dims else { candle_core::bail!("attention scores must be 4-d") };
        if heads != self.heads {
            candle_core::bail!("attention: {heads} heads, expected {}", self.heads)
        }
        Ok((queries, keys))
    }
}

impl CustomOp1 for AttentionProbs {
    fn name(&self) -> &'static str {
        "fused-attention-probs"
    }

    fn cpu_fwd(&self, ss: &CpuStorage, sl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let s = slice(ss, sl, self.name())?;
        let (queries, keys) = self.keys_of(sl.dims())?;
        let per_batch = self.heads * queries;
        let mut out = vec![0f32; s.len()];
        out.par_chunks_mut(keys).zip(s.par_chunks(keys)).enumerate().with_min_len(ROWS_PER_TASK).for_each(
            |(row, (p, s))| {
                let b = row / per_batch;
                self.softmax_row(s, &self.key_bias[b * keys..(b + 1) * keys], p);
                if let Some(mask) = &self.dropout {
                    p.iter_mut().zip(&mask[row * keys..(row + 1) * keys]).for_each(|(v, m)| *v *= m);
                }
            },
        );
        Ok((CpuStorage::F32(out), sl.shape().clone()))
    }

    /// With p recomputed from s: dp = dy · dropout; ds = scale · p · (dp − Σ dp · p).
    fn bwd(&self, s: &Tensor, _out: &Tensor, dy: &Tensor) -> CResult<Option<Tensor>> {
        let (sv, dyv) = (data(s)?, data(dy)?);
        let (queries, keys) = self.keys_of(s.dims())?;
        let per_batch = self.heads * queries;
        let mut ds = vec![0f32; sv.len()];
        ds.par_chunks_mut(keys)
            .zip(sv.par_chunks(keys).zip(dyv.par_chunks(keys)))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, (ds, (s, dy)))| {
                let b = row / per_batch;
                // ds doubles as the buffer for p.
                self.softmax_row(s, &self.key_bias[b * keys..(b + 1) * keys], ds);
                let drop = self.dropout.as_ref().map(|m| &m[row * keys..(row + 1) * keys]);
                let dp = |j: usize| drop.map_or(dy[j], |m| dy[j] * m[j]);
                let dot: f32 = (0..keys).map(|j| dp(j) * ds[j]).sum();
                for j in 0..keys {
                    ds[j] = self.scale * ds[j] * (dp(j) - dot);
                }
            });
        Ok(Some(Tensor::from_vec(ds, s.shape(), s.device())?))
    }
}

/// Attention probabilities from raw scores q·kᵀ (batch, heads, queries, keys): scaled,
/// key-masked by `key_bias` (batch·keys values, 0 or very negative), softmaxed, then multiplied
/// by `dropout` (batch·heads·queries·keys values of 0 or 1/(1−p)) when training.
pub fn attention_probs(
    scores: &Tensor,
    scale: f64,
    key_bias: Arc<Vec<f32>>,
    dropout: Option<Arc<Vec<f32>>>,
) -> candle_core::Result<Tensor> {
    let heads = scores.dim(1)?;
    scores.contiguous()?.apply_op1(AttentionProbs { scale: scale as f32, heads, key_bias, dropout })
}

// ---- GELU (exact, erf) -----------------------------------------------------------------------

struct Gelu;

/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, < 1e-6 in f32): branch-light,
/// where libm's `erff` took 8% of a training step in the profile.
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-a * a).exp();
    y.copysign(x)
}

/// Φ(x), the standard normal CDF.
fn gelu_cdf(x: f32) -> f32 {
    (erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(xs, xl, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(4096).zip(x.par_chunks(4096)).for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * gelu_cdf(x);
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// d/dx x·Φ(x) = Φ(x) + x·φ(x).
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> CResult<Option<Tensor>> {
        let (xv, dyv) = (data(x)?, data(dy)?);
        let mut dx = vec![0f32; xv.len()];
        dx.par_chunks_mut(4096).zip(xv.par_chunks(4096).zip(dyv.par_chunks(4096))).for_each(|(dx, (x, dy))| {
            for i in 0..dx.len() {
                let pdf = INV_SQRT_2PI * (-0.5 * x[i] * x[i]).exp();
                dx[i] = dy[i] * (gelu_cdf(x[i]) + x[i] * pdf);
            }
        });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Exact GELU, x·Φ(x) (transformers' "gelu").
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

// ---- dropout by a precomputed mask -----------------------------------------------------------

/// y = x · mask, where the mask is a constant: backward is dy · mask and nothing else.
struct MaskMul {
    mask: Arc<Vec<f32>>,
}

impl CustomOp1 for MaskMul {
    fn name(&self) -> &'static str {
        "fused-dropout"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = slice(xs, xl, self.name())?;
        if x.len() != self.mask.len() {
            candle_core::bail!("dropout mask has {} values for {} inputs", self.mask.len(), x.len())
        }
        let y: Vec<f32> = x.par_iter().zip(self.mask.par_iter()).map(|(x, m)| x * m).collect();
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> CResult<Option<Tensor>> {
        let dyv = data(dy)?;
        let dx: Vec<f32> = dyv.par_iter().zip(self.mask.par_iter()).map(|(d, m)| d * m).collect();
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `x · mask` with the mask a constant (dropout's keep/scale values).
pub fn mask_mul(x: &Tensor, mask: Arc<Vec<f32>>) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaskMul { mask })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::shuffle::Pcg64::from_seed(seed as u128);
        (0..n).map(|_| (rng.next_f64() * 4.0 - 2.0) as f32).collect()
    }

    fn var(shape: &[usize], seed: u64) -> Var {
        let n = shape.iter().product();
        Var::from_tensor(&Tensor::from_vec(random(n, seed), shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        a.sub(b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Loss Σ out · R for a fixed random R, so every output element has its own gradient.
    fn weighted_sum(out: &Tensor, seed: u64) -> Tensor {
        let r = Tensor::from_vec(random(out.elem_count(), seed), out.shape(), &Device::Cpu).unwrap();
        out.mul(&r).unwrap().sum_all().unwrap()
    }

    #[test]
    fn layer_norm_matches_the_composed_version_values_and_gradients() {
        let (x, w, b) = (var(&[3, 5, 48], 1), var(&[48], 2), var(&[48], 3));
        let eps = 1e-5;
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), eps).unwrap();
        let composed = {
            let x = x.as_tensor();
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let c = x.broadcast_sub(&mean).unwrap();
            let var_ = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let n = c.broadcast_div(&(var_ + eps).unwrap().sqrt().unwrap()).unwrap();
            n.broadcast_mul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap()
        };
        assert!(max_diff(&fused, &composed) < 1e-5);
        let gf = weighted_sum(&fused, 9).backward().unwrap();
        let gc = weighted_sum(&composed, 9).backward().unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let d = max_diff(gf.get(v).unwrap(), gc.get(v).unwrap());
            assert!(d < 1e-4, "d{name} differs by {d}");
        }
    }

    #[test]
    fn attention_probs_match_the_composed_version_values_and_gradients() {
        let (bsz, heads, t) = (2, 3, 7);
        let s = var(&[bsz, heads, t, t], 4);
        // Second sentence: last two keys are padding.
        let mut bias = vec![0f32; bsz * t];
        bias[t + 5] = f32::MIN;
        bias[t + 6] = f32::MIN;
        let keep: Vec<f32> =
            random(bsz * heads * t * t, 5).iter().map(|r| if *r > -1.0 { 1.0 / 0.75 } else { 0.0 }).collect();
        let scale = 0.125;
        for dropout in [None, Some(Arc::new(keep.clone()))] {
            let fused = attention_probs(s.as_tensor(), scale, Arc::new(bias.clone()), dropout.clone()).unwrap();
            let composed = {
                let m = Tensor::from_vec(bias.clone(), (bsz, 1, 1, t), &Device::Cpu).unwrap();
                let z = (s.as_tensor() * scale).unwrap().broadcast_add(&m).unwrap();
                let max = z.max_keepdim(D::Minus1).unwrap().detach();
                let e = z.broadcast_sub(&max).unwrap().exp().unwrap();
                let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
                match &dropout {
                    Some(k) => p.mul(&Tensor::from_vec(k.to_vec(), p.shape(), &Device::Cpu).unwrap()).unwrap(),
                    None => p,
                }
            };
            assert!(max_diff(&fused, &composed) < 1e-6);
            let gf = weighted_sum(&fused, 8).backward().unwrap();
            let gc = weighted_sum(&composed, 8).backward().unwrap();
            let d = max_diff(gf.get(&s).unwrap(), gc.get(&s).unwrap());
            assert!(d < 1e-5, "dscores differs by {d}");
        }
    }

    #[test]
    fn polynomial_erf_is_within_1e6_of_libm() {
        let worst = (-6000..=6000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| (erf(x) - candle_core::cpu::erf::erf_f32(x)).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "erf differs by {worst}");
    }

    #[test]
    fn gelu_and_dropout_match_candle() {
        let x = var(&[4, 33], 6);
        let fused = gelu(x.as_tensor()).unwrap();
        let composed = x.as_tensor().gelu_erf().unwrap();
        assert!(max_diff(&fused, &composed) < 1e-6);
        let gf = weighted_sum(&fused, 7).backward().unwrap();
        let gc = weighted_sum(&composed, 7).backward().unwrap();
        assert!(max_diff(gf.get(&x).unwrap(), gc.get(&x).unwrap()) < 1e-5);

        let mask: Vec<f32> = (0..132).map(|i| if i % 3 == 0 { 0.0 } else { 1.5 }).collect();
        let fused = mask_mul(x.as_tensor(), Arc::new(mask.clone())).unwrap();
        let m = Tensor::from_vec(mask, (4, 33), &Device::Cpu).unwrap();
        let composed = x.as_tensor().mul(&m).unwrap();
        assert_eq!(max_diff(&fused, &composed), 0.0);
        let gf = weighted_sum(&fused, 3).backward().unwrap();
        let gc = weighted_sum(&composed, 3).backward().unwrap();
        assert_eq!(max_diff(gf.get(&x).unwrap(), gc.get(&x).unwrap()), 0.0);
    }
}
