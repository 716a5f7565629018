//! AdamW as the transformers Trainer runs it (`torch.optim.AdamW`, decoupled weight decay, no
//! decay on biases and LayerNorm weights), fused: one pass that reads each parameter, gradient
//! and both moments once and writes the parameter and moments in place, in parallel, with no
//! temporaries. Gradient-norm clipping is folded in as a scale on the gradient.
//!
//! Parameters on other devices (CUDA, Metal) get the same update composed from candle's tensor
//! ops, with the moments as tensors beside them (`Moments::Device`).
//!
//! Per element, with g = clip_scale · grad and t the step (from 1):
//!   p ← p · (1 − lr · wd)
//!   m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
//!   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Storage, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// transformers' rule: biases and LayerNorm weights are not decayed.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 15;

/// A gradient that is zero outside some rows of a (rows, width) parameter: the word
/// embeddings, of which a batch touches a few hundred rows out of 250 002.
#[derive(Clone, Debug)]
pub struct SparseRows {
    /// Touched rows, ascending.
    pub rows: Vec<u32>,
    /// (rows.len(), width) row-major.
    pub grad: Vec<f32>,
    pub width: usize,
}

impl SparseRows {
    pub fn norm_sq(&self) -> f64 {
        self.grad.iter().map(|&x| (x as f64) * (x as f64)).sum()
    }

    /// The dense gradient of the whole `like`-shaped table on its device: zero outside the
    /// touched rows (transformers' update of an embedding is dense too).
    fn to_dense(&self, like: &Tensor) -> Result<Tensor> {
        let device = like.device();
        let n = self.rows.len();
        let rows = Tensor::from_vec(self.rows.clone(), n, device)?;
        let grad = Tensor::from_vec(self.grad.clone(), (n, self.width), device)?;
        Ok(Tensor::zeros(like.shape(), DType::F32, device)?.index_add(&rows, &grad, 0)?)
    }
}

/// One parameter's moments: host memory beside a CPU parameter (the fused update), or tensors
/// on the parameter's device (the composed update).
pub enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

impl Moments {
    fn host_zeros(n: usize) -> Moments {
        Moments::Host { m: vec![0.0; n], v: vec![0.0; n] }
    }

    fn device_zeros(like: &Tensor) -> Result<Moments> {
        Ok(Moments::Device { m: like.zeros_like()?, v: like.zeros_like()? })
    }

    /// m and v in host memory, flattened (for checkpoints).
    pub fn to_host(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Moments::Host { m, v } => Ok((m.clone(), v.clone())),
            Moments::Device { m, v } => Ok((m.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?)),
        }
    }

    /// Host moments moved beside a parameter on `device` (a checkpoint resumed on a GPU).
    fn move_to(&mut self, like: &Tensor) -> Result<()> {
        if let Moments::Host { m, v } = self {
            let (m, v) = (std::mem::take(m), std::mem::take(v));
            *self = Moments::Device {
                m: Tensor::from_vec(m, like.shape(), like.device())?,
                v: Tensor::from_vec(v, like.shape(), like.device())?,
            };
        }
        Ok(())
    }
}

pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub moments: Vec<Moments>,
    /// Per parameter, for those updated from sparse rows: which rows are still untouched.
    lazy: Vec<Option<Untouched>>,
}

/// The rows of a sparsely updated table that have never had a gradient (their moments are 0).
/// AdamW only decays such a row, p ← p·(1 − lr·wd), so instead of reading and writing 96 M
/// embedding values every step the decay is kept as one pending factor and applied when a
/// batch is about to read the row (`decay_pending_rows`, before the forward pass) or by `flush`
/// (before evaluation and saving). The forward passes and updates are then those of the dense
/// AdamW, up to the rounding of one product instead of several, at the cost of the read rows.
struct Untouched {
    /// `still[r]`: row r's moments are all zero.
    still: Vec<bool>,
    /// Π(1 − lr·wd) over the steps since the untouched rows were last brought up to date.
    pending: f64,
}

/// Runs `f` on a contiguous f32 CPU tensor's data.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => Ok(f(&data[start..end])),
        _ => Err(Error::Usage("expected a contiguous f32 CPU tensor".into())),
    }
}

/// The global L2 norm of all gradients (`clip_grad_norm_`'s total norm), sparse ones included.
pub fn grad_norm(params: &[(String, Var)], grads: &GradStore, sparse: &[(usize, &SparseRows)]) -> Result<f64> {
    let mut total: f64 = sparse.iter().map(|(_, r)| r.norm_sq()).sum();
    // Gradients on another device: summed there, one transfer for all of them.
    let mut on_device = vec![];
    for (_, var) in params {
        if let Some(g) = grads.get(var) {
            if g.device().is_cpu() {
                // Chunk sums added in chunk order: a parallel `sum` associates them in an order
                // that depends on work stealing, and the clipping scale with it.
                let chunks: Vec<f64> =
                    with_f32(&g.contiguous()?, |g| g.par_chunks(CHUNK).map(sum_of_squares).collect())?;
                total += chunks.iter().sum::<f64>();
            } else {
                on_device.push(g.sqr()?.sum_all()?);
            }
        }
    }
    Ok((total + sum_on_device(&on_device)?).sqrt())
}

crate::kernels::multiversion! {
    /// Σ x² in f64 over 8 lanes, added in a fixed order at the end: one serial sum was a chain
    /// of dependent additions, 5 % of a `--bf16` training step. The clipping scale it feeds is
    /// rounded to f32, which a change in the 16th digit leaves as it was.
    fn sum_of_squares(chunk: &[f32]) -> f64 {
        let mut lanes = [0f64; 8];
        let mut groups = chunk.chunks_exact(8);
        for group in &mut groups {
            for (lane, &x) in lanes.iter_mut().zip(group) {
                *lane += (x as f64) * (x as f64);
            }
        }
        let tail: f64 = groups.remainder().iter().map(|&x| (x as f64) * (x as f64)).sum();
        lanes.iter().sum::<f64>() + tail
    }
}

/// The sum of per-tensor scalars computed on a device, read back once, in f64.
fn sum_on_device(scalars: &[Tensor]) -> Result<f64> {
    if scalars.is_empty() {
        return Ok(0.0);
    }
    Ok(Tensor::stack(scalars, 0)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?)
}

/// Where a parameter's gradient comes from.
enum GradSource<'a> {
    /// A dense tensor, handed to the op by candle.
    Dense,
    /// Touched rows only: `slot[row]` indexes `rows.grad`, -1 for rows without a gradient;
    /// rows never touched only accumulate their decay in `untouched`.
    Sparse { rows: &'a SparseRows, slot: Vec<i32>, untouched: std::sync::Mutex<&'a mut Untouched> },
}

/// The constants of one parameter's update at one step.
#[derive(Clone, Copy)]
struct Coefficients {
    lr: f32,
    decay: f32,
    grad_scale: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    bias2_sqrt: f32,
}

/// The update of one CPU parameter, run in place on its storage by candle.
struct Update<'a> {
    source: GradSource<'a>,
    moments: std::sync::Mutex<(&'a mut [f32], &'a mut [f32])>,
    c: Coefficients,
}

/// The same update from candle's tensor ops, on any device: the parameter is overwritten in
/// place (`Var::set`), the moments replaced. Temporaries live on the device for one parameter.
fn update_tensors(var: &Var, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, c: Coefficients) -> Result<()> {
    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
    let g = grad.detach().affine(c.grad_scale as f64, 0.0)?;
    let m_new = (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
    let v_new = (v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
    let denom = v_new.sqrt()?.affine(1.0 / c.bias2_sqrt as f64, c.eps as f64)?;
    let p = var.as_tensor().detach();
    let p_new =
        (p.affine(1.0 - (c.lr * c.decay) as f64, 0.0)? - m_new.div(&denom)?.affine(c.step_size as f64, 0.0)?)?;
    var.set(&p_new)?;
    *m = m_new;
    *v = v_new;
    Ok(())
}

impl candle_core::InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(&self, param: &mut CpuStorage, pl: &Layout, grad: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(g), Some((gs, ge))) = (grad, gl.contiguous_offsets()) else {
            candle_core::bail!("fused-adamw: contiguous f32 gradients only")
        };
        self.apply(param, pl, Some(&g[gs..ge]))
    }
}

impl candle_core::InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw-sparse"
    }

    fn cpu_fwd(&self, param: &mut CpuStorage, pl: &Layout) -> candle_core::Result<()> {
        self.apply(param, pl, None)
    }
}

impl Update<'_> {
    /// The element loop; `dense` is the gradient when it is a tensor, else the sparse rows.
    fn apply(&self, param: &mut CpuStorage, pl: &Layout, dense: Option<&[f32]>) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), Some((ps, pe))) = (param, pl.contiguous_offsets()) else {
            candle_core::bail!("fused-adamw: contiguous f32 parameters only")
        };
        let mut guard = self.moments.lock().map_err(|_| candle_core::Error::Msg("moments lock poisoned".into()))?;
        let (m, v) = &mut *guard;
        let p = &mut p[ps..pe];
        let c = self.c;
        let decay_factor = 1.0 - c.lr * c.decay;
        let update = |p: &mut [f32], g: Option<&[f32]>, m: &mut [f32], v: &mut [f32]| {
            for i in 0..p.len() {
                let gi = g.map_or(0.0, |g| g[i] * c.grad_scale);
                let mi = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
                let vi = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
                m[i] = mi;
                v[i] = vi;
                let denom = vi.sqrt() / c.bias2_sqrt + c.eps;
                p[i] = p[i] * decay_factor - c.step_size * mi / denom;
            }
        };
        match (&self.source, dense) {
            (GradSource::Dense, Some(g)) => p
                .par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((p, g), (m, v))| update(p, Some(g), m, v)),
            (GradSource::Sparse { rows, slot, untouched }, None) => {
                let w = rows.width;
                let mut untouched =
                    untouched.lock().map_err(|_| candle_core::Error::Msg("untouched rows lock poisoned".into()))?;
                let pending = untouched.pending as f32;
                p.par_chunks_mut(w)
                    .zip(m.par_chunks_mut(w).zip(v.par_chunks_mut(w)))
                    .zip(untouched.still.par_iter_mut())
                    .enumerate()
                    .with_min_len(256)
                    .for_each(|(r, ((p, (m, v)), still))| {
                        let g = usize::try_from(slot[r]).ok().map(|s| &rows.grad[s * w..(s + 1) * w]);
                        if *still {
                            // A row whose moments stay zero only decays: leave that to `pending`.
                            match g {
                                Some(g) if g.iter().any(|&x| x != 0.0) => {
                                    if pending != 1.0 {
                                        p.iter_mut().for_each(|x| *x *= pending);
                                    }
                                    *still = false;
                                }
                                _ => return,
                            }
                        }
                        update(p, g, m, v)
                    });
                untouched.pending *= decay_factor as f64;
            }
            _ => candle_core::bail!("fused-adamw: gradient source mismatch"),
        }
        Ok(())
    }
}

/// Multiplies the rows marked in `rows` by `factor`, in place.
struct ScaleRows<'a> {
    rows: &'a [bool],
    factor: f32,
}

impl candle_core::InplaceOp1 for ScaleRows<'_> {
    fn name(&self) -> &'static str {
        "scale-untouched-rows"
    }

    fn cpu_fwd(&self, param: &mut CpuStorage, pl: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), Some((ps, pe))) = (param, pl.contiguous_offsets()) else {
            candle_core::bail!("scale-untouched-rows: contiguous f32 parameters only")
        };
        let p = &mut p[ps..pe];
        let width = p.len() / self.rows.len().max(1);
        p.par_chunks_mut(width).zip(self.rows.par_iter()).with_min_len(256).for_each(|(row, &scale)| {
            if scale {
                row.iter_mut().for_each(|x| *x *= self.factor);
            }
        });
        Ok(())
    }
}

impl AdamW {
    /// Zero moments: the fused update for CPU parameters, the composed one for others.
    pub fn new(params: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        let moments = params
            .iter()
            .map(|(_, v)| {
                if v.device().is_cpu() {
                    Ok(Moments::host_zeros(v.elem_count()))
                } else {
                    Moments::device_zeros(v.as_tensor())
                }
            })
            .collect::<Result<_>>()?;
        Ok(AdamW::from_moments(config, 0, moments))
    }

    /// Zero moments as tensors: the composed update (other devices' path) on any parameters,
    /// the CPU's included (to test it against the fused one).
    pub fn composed(params: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        let moments = params.iter().map(|(_, v)| Moments::device_zeros(v.as_tensor())).collect::<Result<_>>()?;
        Ok(AdamW::from_moments(config, 0, moments))
    }

    /// Moves host moments into tensors beside their parameters: from then on every update is
    /// the composed one (a resumed run that continues on a GPU or with `--composed`). Pending
    /// lazy decay is applied first.
    pub fn move_moments_beside(&mut self, params: &[(String, Var)]) -> Result<()> {
        self.flush(params)?;
        for (moments, (_, var)) in self.moments.iter_mut().zip(params) {
            moments.move_to(var.as_tensor())?;
        }
        self.lazy.iter_mut().for_each(|l| *l = None);
        Ok(())
    }

    /// An optimizer resumed at `step` with saved moments.
    pub fn from_moments(config: AdamWConfig, step: u64, moments: Vec<Moments>) -> Self {
        let lazy = moments.iter().map(|_| None).collect();
        AdamW { config, step, moments, lazy }
    }

    /// Applies the pending decay to the rows of parameter `index` that a batch is about to read
    /// (`rows`, repeats allowed), so that the forward pass reads the values the dense update
    /// would hold; from then on they are updated every step like any row with moments.
    pub fn decay_pending_rows(&mut self, params: &[(String, Var)], index: usize, rows: &[u32]) -> Result<()> {
        let (Some(Some(lazy)), Some((_, var))) = (self.lazy.get_mut(index), params.get(index)) else {
            return Ok(());
        };
        let mut read = vec![false; lazy.still.len()];
        for &r in rows {
            if let Some(still) = lazy.still.get_mut(r as usize) {
                read[r as usize] = *still;
                *still = false;
            }
        }
        if lazy.pending != 1.0 && read.iter().any(|&r| r) {
            var.as_tensor().inplace_op1(&ScaleRows { rows: &read, factor: lazy.pending as f32 })?;
        }
        Ok(())
    }

    /// Whether parameter `index` has rows whose decay is pending (`decay_pending_rows` then has
    /// work to do before a forward pass).
    pub fn has_pending_rows(&self, index: usize) -> bool {
        matches!(self.lazy.get(index), Some(Some(_)))
    }

    /// Applies the pending decay to every untouched row, so that the parameters hold their
    /// exact values (call before reading them: evaluation, checkpoints).
    pub fn flush(&mut self, params: &[(String, Var)]) -> Result<()> {
        for ((_, var), lazy) in params.iter().zip(self.lazy.iter_mut()) {
            let Some(lazy) = lazy else { continue };
            if lazy.pending == 1.0 {
                continue;
            }
            let factor = lazy.pending as f32;
            let still = &lazy.still;
            var.as_tensor().inplace_op1(&ScaleRows { rows: still, factor })?;
            lazy.pending = 1.0;
        }
        Ok(())
    }

    /// One update at learning rate `lr`, gradients scaled by `grad_scale` (clipping).
    /// `sparse` gives row gradients for parameters (by index) that have no dense one.
    /// Parameters without any gradient are left alone, as torch does for `grad is None`.
    pub fn step(
        &mut self,
        params: &[(String, Var)],
        grads: &GradStore,
        sparse: &[(usize, &SparseRows)],
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        for (index, (((name, var), moments), lazy)) in
            params.iter().zip(self.moments.iter_mut()).zip(self.lazy.iter_mut()).enumerate()
        {
            let dense = grads.get(var);
            let sparse_rows = sparse.iter().find(|(i, _)| *i == index).map(|(_, r)| *r);
            if dense.is_none() && sparse_rows.is_none() {
                continue;
            }
            let coefficients = Coefficients {
                lr: lr as f32,
                decay: if decays(name) { c.weight_decay as f32 } else { 0.0 },
                grad_scale: grad_scale as f32,
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                eps: c.eps as f32,
                step_size: (lr / bias1) as f32,
                bias2_sqrt: bias2.sqrt() as f32,
            };
            if !var.device().is_cpu() {
                moments.move_to(var.as_tensor())?;
            }
            let (m, v) = match moments {
                Moments::Device { m, v } => {
                    let grad = match (dense, sparse_rows) {
                        (Some(g), _) => g.clone(),
                        (None, Some(rows)) => rows.to_dense(var.as_tensor())?,
                        (None, None) => continue,
                    };
                    update_tensors(var, &grad, m, v, coefficients)?;
                    continue;
                }
                Moments::Host { m, v } => (m, v),
            };
            let source = match (dense, sparse_rows) {
                (Some(_), _) => GradSource::Dense,
                (None, Some(rows)) => {
                    let mut slot = vec![-1i32; var.dims()[0]];
                    for (s, &r) in rows.rows.iter().enumerate() {
                        slot[r as usize] = s as i32;
                    }
                    let width = rows.width;
                    let fresh = self.step == 1;
                    let untouched = lazy.get_or_insert_with(|| Untouched {
                        // At the first step the moments are known zeros: reading 2 × 384 MB of
                        // untouched pages only to find that took most of a second.
                        still: if fresh {
                            vec![true; m.len() / width.max(1)]
                        } else {
                            m.chunks(width)
                                .zip(v.chunks(width))
                                .map(|(m, v)| m.iter().chain(v).all(|&x| x == 0.0))
                                .collect()
                        },
                        pending: 1.0,
                    });
                    GradSource::Sparse { rows, slot, untouched: std::sync::Mutex::new(untouched) }
                }
                (None, None) => continue,
            };
            let update = Update {
                source,
                moments: std::sync::Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
                c: coefficients,
            };
            match dense {
                Some(grad) => var.as_tensor().inplace_op2(grad, &update)?,
                None => var.as_tensor().inplace_op1(&update)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// torch.optim.AdamW's update, written the plain way, element by element.
    fn reference(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], lr: f64, wd: f64, t: i32) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
            p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
        }
    }

    #[test]
    fn fused_update_follows_torch_step_by_step() {
        follows_torch_step_by_step(AdamW::new);
    }

    #[test]
    fn composed_update_for_other_devices_follows_torch_step_by_step() {
        follows_torch_step_by_step(AdamW::composed);
    }

    type Constructor = fn(&[(String, Var)], AdamWConfig) -> Result<AdamW>;

    fn follows_torch_step_by_step(make: Constructor) {
        let dev = Device::Cpu;
        let n = 100_003; // several parallel chunks and a ragged tail
        let init: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
        let w = Var::from_tensor(&Tensor::from_vec(init.clone(), n, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::from_vec(init[..10].to_vec(), 10, &dev).unwrap()).unwrap();
        let params = vec![("dense.weight".to_string(), w.clone()), ("dense.bias".to_string(), b.clone())];
        let mut opt = make(&params, AdamWConfig::default()).unwrap();
        let mut rp: Vec<f64> = init.iter().map(|&x| x as f64).collect();
        let (mut rm, mut rv) = (vec![0f64; n], vec![0f64; n]);
        let mut bp: Vec<f64> = init[..10].iter().map(|&x| x as f64).collect();
        let (mut bm, mut bv) = (vec![0f64; 10], vec![0f64; 10]);
        for step in 1..=5 {
            // loss = Σ w² · c: gradient 2cw, different each step.
            let c = step as f64 * 0.5;
            let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * c).unwrap();
            let loss = (loss + (b.as_tensor().sqr().unwrap().sum_all().unwrap() * c).unwrap()).unwrap();
            let grads = loss.backward().unwrap();
            let g: Vec<f64> = rp.iter().map(|&x| 2.0 * c * x).collect();
            let gb: Vec<f64> = bp.iter().map(|&x| 2.0 * c * x).collect();
            let lr = 1e-2 * (1.0 - step as f64 / 10.0);
            opt.step(&params, &grads, &[], lr, 1.0).unwrap();
            reference(&mut rp, &mut rm, &mut rv, &g, lr, 0.01, step);
            reference(&mut bp, &mut bm, &mut bv, &gb, lr, 0.0, step);
            let got = w.as_tensor().to_vec1::<f32>().unwrap();
            let worst = got.iter().zip(&rp).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-5, "step {step}: weight differs by {worst}");
            let got = b.as_tensor().to_vec1::<f32>().unwrap();
            let worst = got.iter().zip(&bp).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-5, "step {step}: bias differs by {worst}");
        }
    }

    #[test]
    fn sparse_rows_update_like_a_dense_gradient_with_zero_rows() {
        let dev = Device::Cpu;
        let (rows, width) = (1000, 8);
        let init: Vec<f32> = (0..rows * width).map(|i| ((i as f32) * 0.11).cos()).collect();
        let make = || Var::from_tensor(&Tensor::from_vec(init.clone(), (rows, width), &dev).unwrap()).unwrap();
        let (dense_w, sparse_w) = (make(), make());
        let dense_params = vec![("embeddings.word_embeddings.weight".to_string(), dense_w.clone())];
        let sparse_params = vec![("embeddings.word_embeddings.weight".to_string(), sparse_w.clone())];
        let composed_w = make();
        let composed_params = vec![("embeddings.word_embeddings.weight".to_string(), composed_w.clone())];
        let mut dense_opt = AdamW::new(&dense_params, AdamWConfig::default()).unwrap();
        let mut sparse_opt = AdamW::new(&sparse_params, AdamWConfig::default()).unwrap();
        // Other devices' update densifies the rows (transformers' dense update, no lazy decay).
        let mut composed_opt = AdamW::composed(&composed_params, AdamWConfig::default()).unwrap();
        for step in 0..4u32 {
            // Rows 3, 500+step and 999 get a gradient; the rest none (but still decay and move).
            let touched = [3u32, 500 + step, 999];
            let grad_rows: Vec<f32> =
                (0..touched.len() * width).map(|i| (i as f32 + 1.0) * 0.01 * (step + 1) as f32).collect();
            let mut dense = vec![0f32; rows * width];
            for (k, &r) in touched.iter().enumerate() {
                dense[r as usize * width..(r as usize + 1) * width]
                    .copy_from_slice(&grad_rows[k * width..(k + 1) * width]);
            }
            // The forward pass reads the touched rows as the dense update holds them, also a row
            // read for the first time after steps of pending decay (500 + step).
            sparse_opt.decay_pending_rows(&sparse_params, 0, &touched).unwrap();
            let read = |w: &Var| {
                let ids = Tensor::new(&touched[..], &dev).unwrap();
                w.as_tensor().index_select(&ids, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            let (a, b) = (read(&dense_w), read(&sparse_w));
            let worst = a.iter().zip(&b).map(|(a, b)| ((a - b) / a.abs().max(1e-3)).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "step {step}: the batch reads rows {worst} (relative) from the dense ones");
            // A dense gradient through candle's own backward: d/dw Σ w·G = G.
            let g = Tensor::from_vec(dense, (rows, width), &dev).unwrap();
            let grads = dense_w.as_tensor().mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            dense_opt.step(&dense_params, &grads, &[], 1e-2, 0.5).unwrap();
            let sparse = SparseRows { rows: touched.to_vec(), grad: grad_rows, width };
            let empty = sparse_w.as_tensor().detach().sum_all().unwrap().backward().unwrap();
            sparse_opt.step(&sparse_params, &empty, &[(0, &sparse)], 1e-2, 0.5).unwrap();
            composed_opt.step(&composed_params, &empty, &[(0, &sparse)], 1e-2, 0.5).unwrap();
        }
        // Untouched rows (all but 3, 500..503 and 999) hold their decay as a pending factor.
        let b = sparse_w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            b,
            init.iter()
                .enumerate()
                .map(|(i, &x)| if [3, 500, 501, 502, 503, 999].contains(&(i / width)) { b[i] } else { x })
                .collect::<Vec<_>>()
        );
        sparse_opt.flush(&sparse_params).unwrap();
        let a = dense_w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = sparse_w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = a.iter().zip(&b).map(|(a, b)| ((a - b) / a.abs().max(1e-3)).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "sparse and dense updates differ by {worst} (relative)");
        // Rows touched from the first step on take the very same path as the dense update.
        for r in [3usize, 999] {
            assert_eq!(a[r * width..(r + 1) * width], b[r * width..(r + 1) * width]);
        }
        let c = composed_w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = a.iter().zip(&c).map(|(a, c)| ((a - c) / a.abs().max(1e-3)).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "composed and fused updates differ by {worst} (relative)");
        let (m, _) = composed_opt.moments[0].to_host().unwrap();
        assert!(m[3 * width] != 0.0 && m[4 * width] == 0.0, "moments move on touched rows only");
    }

    #[test]
    fn device_side_squares_sum_like_the_host_loop() {
        // grad_norm's branch for gradients on another device, run on CPU tensors.
        let grads: Vec<Tensor> = (1..4)
            .map(|k| Tensor::from_vec((0..1000 * k).map(|i| (i as f32 * 0.37).sin()).collect(), 1000 * k, &Device::Cpu))
            .collect::<candle_core::Result<_>>()
            .unwrap();
        let on_device: Vec<Tensor> = grads.iter().map(|g| g.sqr().unwrap().sum_all().unwrap()).collect();
        let host: f64 = grads
            .iter()
            .map(|g| with_f32(g, |g| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).unwrap())
            .sum();
        let device = sum_on_device(&on_device).unwrap();
        assert!((device - host).abs() < 1e-4 * host, "{device} vs {host}");
        assert_eq!(sum_on_device(&[]).unwrap(), 0.0);
    }

    #[test]
    fn no_decay_for_bias_and_layer_norm() {
        assert!(decays("roberta.encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("roberta.encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("roberta.embeddings.LayerNorm.weight"));
        assert!(decays("classifier.weight"));
    }
}
