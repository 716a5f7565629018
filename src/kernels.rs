//! Fused CPU kernels, each forward beside its backward (as llm.c lays them out), wrapped as
//! candle custom ops so autograd calls our backward instead of replaying a dozen generic ops.
//!
//! Why: candle composes LayerNorm and softmax from ~10 elementwise ops, each of whose backward
//! passes allocates a zero tensor, adds into it, and (for `Mul`) also differentiates the
//! constant side; dropout by multiplication pays that too. One fused pass per direction reads
//! and writes each element once. Every kernel is tested against the unfused composition
//! (`composed`, which other devices run), values and gradients (tests below).
//!
//! Shapes: `x` (rows, width) for row-wise kernels, any leading dimensions flattened.

// Index loops mirror the formulas (several slices indexed together).
#![allow(clippy::needless_range_loop)]

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::lowp::matmul_bf16;
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// The contiguous f32 data of a storage under its layout.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: contiguous f32 input expected"),
    }
}

/// Rows per parallel task for row-wise kernels.
const ROWS_PER_TASK: usize = 16;

/// eˣ in f32 without a libm call, so that loops over it vectorise (libm's `expf` was the
/// largest cost of softmax and GELU): 2ⁿ · p(r) with x = n·ln2 + r, |r| ≤ ln2/2, p of degree 6
/// (relative error < 3e-7); 0 below −87.3, where f32 underflows anyway.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest by the 1.5·2²³ trick (SSE2 has no vector round).
    const SHIFT: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.7);
    let shifted = xc * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // n as an integer straight from the bits of `shifted` (its mantissa holds 2²² + n): integer
    // lane arithmetic, where `n as i32` is a scalar, NaN-checked conversion per lane.
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let scaled = p * f32::from_bits((n_bits.wrapping_add(127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        scaled
    }
}

/// Compiles a loop twice: for baseline x86-64 (4-wide SSE2, what the crate targets)
/// and for AVX-512 (16-wide), picked at run time. Results are the same bits
/// (no reassociation, no contraction); only the width changes.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU has the features `wide` was compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

pub(crate) use multiversion;

/// Partial sums kept per lane: reductions over this many accumulators vectorise (a serial
/// sum is one dependent add per element); the result differs from it by rounding only.
const LANES: usize = 16;

/// Σ f(xᵢ), lane-wise.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

/// Σ aᵢ·bᵢ, lane-wise.
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let body = a.len().min(b.len()) / LANES * LANES;
    for (x, y) in a[..body].chunks_exact(LANES).zip(b[..body].chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + a[body..].iter().zip(&b[body..]).map(|(x, y)| x * y).sum::<f32>()
}

/// max xᵢ, lane-wise.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

// ---- LayerNorm -----------------------------------------------------------------------------

/// `torch.nn.functional.layer_norm` over the last dimension: y = (x − μ)/√(σ² + ε) · w + b.
struct LayerNorm {
    eps: f32,
}

/// Mean and 1/std of one row (two passes, as the composed version computes them).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

multiversion! {
    /// Forward over whole rows of width w.len().
    fn layer_norm_rows(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let h = w.len();
        for (y, x) in y.chunks_mut(h).zip(x.chunks(h)) {
            let (mean, rstd) = row_stats(x, eps);
            for i in 0..h {
                y[i] = (x[i] - mean) * rstd * w[i] + b[i];
            }
        }
    }
}

multiversion! {
    /// Backward over whole rows: writes dx, adds into dw and db.
    fn layer_norm_bwd_rows(
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        w: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        eps: f32,
    ) {
        let h = w.len();
        let mut xhat = vec![0f32; h];
        for ((dx, x), dy) in dx.chunks_mut(h).zip(x.chunks(h)).zip(dy.chunks(h)) {
            let (mean, rstd) = row_stats(x, eps);
            for i in 0..h {
                xhat[i] = (x[i] - mean) * rstd;
                dw[i] += dy[i] * xhat[i];
                db[i] += dy[i];
                // dx holds g = dy·w until the means are known.
                dx[i] = dy[i] * w[i];
            }
            let g_mean = lane_sum(dx, |g| g) / h as f32;
            let gx_mean = lane_dot(dx, &xhat) / h as f32;
            for i in 0..h {
                dx[i] = rstd * (dx[i] - g_mean - xhat[i] * gx_mean);
            }
        }
    }
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
        y.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(y, x)| layer_norm_rows(x, y, w, b, self.eps));
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
        let (dx, dw, db) = with_data(x, |xv| {
            with_data(w, |wv| {
                with_data(dy, |dyv| {
                    let h = wv.len();
                    let mut dx = vec![0f32; xv.len()];
                    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
                        .par_chunks_mut(h * ROWS_PER_TASK)
                        .zip(xv.par_chunks(h * ROWS_PER_TASK).zip(dyv.par_chunks(h * ROWS_PER_TASK)))
                        .map(|(dx, (x, dy))| {
                            let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
                            layer_norm_bwd_rows(x, dy, dx, wv, &mut dw, &mut db, self.eps);
                            (dw, db)
                        })
                        .collect();
                    let (dw, db): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
                    Ok((dx, sum_in_order(dw, h), sum_in_order(db, h)))
                })
            })
        })?;
        let h = dw.len();
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

multiversion! {
    /// y = LayerNorm(branch + residual) over whole rows of width w.len(): the sum is made in
    /// y's row, then normalised there (the same arithmetic as `residual_dropout` without
    /// dropout followed by `layer_norm_rows`).
    fn add_layer_norm_rows(branch: &[f32], residual: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let h = w.len();
        for (y, (branch, residual)) in y.chunks_mut(h).zip(branch.chunks(h).zip(residual.chunks(h))) {
            for i in 0..h {
                y[i] = branch[i] + residual[i];
            }
            let (mean, rstd) = row_stats(y, eps);
            for i in 0..h {
                y[i] = (y[i] - mean) * rstd * w[i] + b[i];
            }
        }
    }
}

/// Inference only: LayerNorm(branch + residual), a sub-layer's skip connection and norm in one
/// pass over the rows (one output, one parallel region, where the two ops made two of each).
pub fn add_layer_norm(
    branch: &Tensor,
    residual: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    if [branch, residual, w, b].iter().any(|t| t.track_op()) {
        candle_core::bail!("add_layer_norm is for inference: its inputs must not be tracked")
    }
    if branch.dims() != residual.dims() || branch.dims().last() != Some(&w.elem_count()) {
        candle_core::bail!(
            "add_layer_norm: branch {:?}, residual {:?}, weight {:?}",
            branch.dims(),
            residual.dims(),
            w.dims()
        )
    }
    let (branch, residual) = (branch.contiguous()?, residual.contiguous()?);
    let h = w.elem_count();
    let y = with_data(&branch, |br| {
        with_data(&residual, |re| {
            with_data(w, |w| {
                with_data(b, |b| {
                    let mut y = vec![0f32; br.len()];
                    y.par_chunks_mut(h * ROWS_PER_TASK)
                        .zip(br.par_chunks(h * ROWS_PER_TASK).zip(re.par_chunks(h * ROWS_PER_TASK)))
                        .for_each(|(y, (br, re))| add_layer_norm_rows(br, re, y, w, b, eps as f32));
                    Ok(y)
                })
            })
        })
    })?;
    Tensor::from_vec(y, branch.shape(), branch.device())
}

// ---- matrix products through gemm -----------------------------------------------------------

/// A read-only matrix in a slice: element (i, j) at `data[i * rs + j * cs]` (the f32 products
/// here and `lowp`'s bf16 ones read their operands through it).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// Row-major (rows, cols).
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, without moving data.
    pub fn t(self) -> Self {
        View { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    #[cfg(test)]
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    pub(crate) fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// a·b as a new row-major (a.rows × b.cols) output, over rayon's threads: on `sgemm`'s
/// AVX-512 tiles where it takes the product (the same values, and no zeroed output first),
/// else on gemm's micro-kernels.
fn matmul_new(a: View, b: View) -> Vec<f32> {
    crate::sgemm::matmul(a, b).unwrap_or_else(|| {
        let mut c = vec![0f32; a.rows * b.cols];
        gemm_into(&mut c, false, a, b);
        c
    })
}

/// `dst` (row-major a.rows × b.cols) = a·b, or += a·b with `accumulate`, on gemm's
/// micro-kernels (AVX-512 where present) over rayon's threads.
pub(crate) fn gemm_into(dst: &mut [f32], accumulate: bool, a: View, b: View) {
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    gemm_with(dst, accumulate, a, b, parallelism)
}

fn gemm_with(dst: &mut [f32], accumulate: bool, a: View, b: View, parallelism: gemm::Parallelism) {
    assert!(a.cols == b.rows && dst.len() == a.rows * b.cols && a.fits() && b.fits(), "gemm: shapes do not fit");
    if dst.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index gemm forms inside the three slices, and `dst`
    // is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `gemm_into` on the calling thread: for the many small products inside a parallel task.
fn gemm_local(dst: &mut [f32], accumulate: bool, a: View, b: View) {
    gemm_with(dst, accumulate, a, b, gemm::Parallelism::None)
}

/// A kernel's saved forward state (kept for its backward pass).
fn saved<'a, T>(m: &'a std::sync::Mutex<T>, op: &str) -> CResult<std::sync::MutexGuard<'a, T>> {
    m.lock().map_err(|_| candle_core::Error::Msg(format!("{op}: saved state poisoned")))
}

/// Runs `f` on the contiguous f32 data of a CPU tensor, without copying it out.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> CResult<R>) -> CResult<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(s) => f(slice(s, layout, "kernel input")?),
        _ => candle_core::bail!("fused kernels run on the CPU"),
    }
}

// ---- Linear: y = x Wᵀ + b, and Linear + GELU ------------------------------------------------

/// `rows` copies of `row`, one after another, written by the threads in parallel straight into
/// fresh memory (a serial fill left the other core idle for ~3 % of an inference pass).
fn repeat_rows(row: &[f32], rows: usize) -> Vec<f32> {
    let (w, n) = (row.len(), rows * row.len());
    let mut y = Vec::with_capacity(n);
    if n > 0 {
        y.spare_capacity_mut()[..n].par_chunks_mut(w * ROWS_PER_TASK).for_each(|chunk| {
            // Chunks start on row boundaries, so cycling the row lines up.
            for (dst, &v) in chunk.iter_mut().zip(row.iter().cycle()) {
                dst.write(v);
            }
        });
    }
    // SAFETY: the loop above wrote all n elements (the chunks cover 0..n).
    unsafe { y.set_len(n) };
    y
}

/// y = x·w + b for x (rows, ins) and a weight view w (ins, outs) — Wᵀ of a (outs, ins) W, or
/// a stored transpose: one product with the bias as its start value.
fn linear_fwd(x: &[f32], w: View, b: &[f32], rows: usize) -> Vec<f32> {
    let x = View::rows(x, rows, w.rows);
    if let Some(y) = crate::sgemm::linear(x, w, b) {
        return y;
    }
    let mut y = repeat_rows(b, rows);
    gemm_into(&mut y, true, x, w);
    y
}

/// y = x·w + b for x (rows, ins) and w (ins, outs), both row-major: the f32 product the
/// low-precision paths fall back to (`lowp`).
pub(crate) fn linear_rows(x: &[f32], w: &[f32], b: &[f32], rows: usize, ins: usize, outs: usize) -> Vec<f32> {
    linear_fwd(x, View::rows(w, ins, outs), b, rows)
}

/// C (m, n) = A·B with A (m, k) and B (k, n), each stored row-major or, `*_transposed`, as
/// its transpose: the layouts the model's products read (for `xner bench --gemm`).
pub fn matmul_f32(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_transposed: bool,
    b: &[f32],
    b_transposed: bool,
) -> Vec<f32> {
    let view =
        |data, rows, cols, t: bool| if t { View::rows(data, cols, rows).t() } else { View::rows(data, rows, cols) };
    matmul_new(view(a, m, k, a_transposed), view(b, k, n, b_transposed))
}

/// dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy: two products (no transposed copies) and a column sum.
fn linear_bwd(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (rows, ins, outs): (usize, usize, usize),
    bf16: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (dx, dw) = if bf16 {
        let dy_m = View::rows(dy, rows, outs);
        let dx = matmul_bf16(dy_m, View::rows(w, outs, ins), None);
        let dw = matmul_bf16(dy_m.t(), View::rows(x, rows, ins), None);
        (dx, dw)
    } else {
        let dy_m = View::rows(dy, rows, outs);
        (matmul_new(dy_m, View::rows(w, outs, ins)), matmul_new(dy_m.t(), View::rows(x, rows, ins)))
    };
    let partials: Vec<Vec<f32>> = dy
        .par_chunks(outs * ROWS_PER_TASK)
        .map(|rows| {
            let mut acc = vec![0f32; outs];
            for row in rows.chunks(outs) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect();
    (dx, dw, sum_in_order(partials, outs))
}

/// Σ of per-task partial sums, added in task order. rayon's `reduce` would add them in an
/// order that depends on work stealing, so f32 gradients (and a whole run) would differ
/// between runs of the same seed.
fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for part in partials {
        total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    total
}

/// Checks x (…, ins), W (outs, ins), b (outs,); returns (rows, ins, outs) and y's shape.
fn linear_dims(xl: &Layout, wl: &Layout, bl: &Layout) -> CResult<(usize, usize, usize, Shape)> {
    let (outs, ins) = wl.shape().dims2()?;
    if bl.shape().elem_count() != outs || xl.dims().last() != Some(&ins) {
        candle_core::bail!("linear: input {:?}, weight {:?}, bias {:?}", xl.dims(), wl.dims(), bl.dims())
    }
    let mut dims = xl.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = outs;
    Ok((xl.shape().elem_count() / ins.max(1), ins, outs, Shape::from(dims)))
}

/// `torch.nn.Linear`, optionally followed by exact GELU in the same pass over the output.
struct Linear {
    gelu: bool,
    /// Products in bf16 (operands rounded, f32 sums), forward and backward: `train --bf16`.
    bf16: bool,
    /// Whether backward can run (an input is tracked): only then is `pre` kept.
    save: bool,
    /// With `gelu`: the pre-activation x Wᵀ + b, kept for backward.
    pre: std::sync::Mutex<Vec<f32>>,
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        if self.gelu {
            "fused-linear-gelu"
        } else {
            "fused-linear"
        }
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
        let (rows, ins, outs, shape) = linear_dims(xl, wl, bl)?;
        let mut pre = if self.bf16 {
            matmul_bf16(View::rows(x, rows, ins), View::rows(w, outs, ins).t(), Some(b))
        } else {
            linear_fwd(x, View::rows(w, outs, ins).t(), b, rows)
        };
        if !self.gelu {
            return Ok((CpuStorage::F32(pre), shape));
        }
        if !self.save {
            pre.par_chunks_mut(4096).for_each(gelu_in_place);
            return Ok((CpuStorage::F32(pre), shape));
        }
        let mut y = vec![0f32; pre.len()];
        y.par_chunks_mut(4096).zip(pre.par_chunks(4096)).for_each(|(y, x)| gelu_fwd(x, y));
        *saved(&self.pre, self.name())? = pre;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, ins, outs, _) = linear_dims(x.layout(), w.layout(), b.layout())?;
        let (dx, dw, db) = with_data(dy, |dy| {
            with_data(x, |x| {
                with_data(w, |w| {
                    if !self.gelu {
                        return Ok(linear_bwd(x, w, dy, (rows, ins, outs), self.bf16));
                    }
                    let pre = saved(&self.pre, self.name())?;
                    if pre.len() != dy.len() {
                        candle_core::bail!("linear-gelu: backward without its forward pass")
                    }
                    let mut dpre = vec![0f32; dy.len()];
                    dpre.par_chunks_mut(4096)
                        .zip(pre.par_chunks(4096).zip(dy.par_chunks(4096)))
                        .for_each(|(dx, (x, dy))| gelu_bwd(x, dy, dx));
                    Ok(linear_bwd(x, w, &dpre, (rows, ins, outs), self.bf16))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, b.shape(), dev)?),
        ))
    }
}

/// y = x Wᵀ + b over the last dimension of `x`; `w` is (out, in), `b` (out,).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(w, b, Linear { gelu: false, bf16: false, save: false, pre: Default::default() })
}

/// GELU(x Wᵀ + b) (BERT's intermediate layer) in one op: the activation is applied as the
/// product's output is read, and backward needs no separate GELU node.
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let save = x.track_op() || w.track_op() || b.track_op();
    x.contiguous()?.apply_op3(w, b, Linear { gelu: true, bf16: false, save, pre: Default::default() })
}

/// `linear` with its products in bf16, forward and backward (mixed precision: the weights,
/// their gradients and everything else stay f32).
pub fn linear_bf16(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(w, b, Linear { gelu: false, bf16: true, save: false, pre: Default::default() })
}

/// `linear_gelu` with its products in bf16, forward and backward.
pub fn linear_gelu_bf16(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let save = x.track_op() || w.track_op() || b.track_op();
    x.contiguous()?.apply_op3(w, b, Linear { gelu: true, bf16: true, save, pre: Default::default() })
}

/// Inference only: act(x·W + b) with W packed in bf16 or int8 (`lowp`), act GELU with `gelu`.
pub fn linear_packed(x: &Tensor, w: &crate::lowp::Packed, b: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
    linear_with(x, (w.ins(), w.outs()), b, |x, rows, b| w.linear(x, rows, b, gelu))
}

/// Inference only: act(x·W + b) with W (in, out) packed once for the f32 product (`sgemm`).
pub fn linear_packed_f32(
    x: &Tensor,
    w: &crate::sgemm::PackedF32,
    b: &Tensor,
    gelu: bool,
) -> candle_core::Result<Tensor> {
    linear_with(x, (w.ins(), w.outs()), b, |x, rows, b| w.linear(x, rows, b, gelu))
}

/// A linear layer over the last dimension of `x` by `product(x, rows, bias)` (a packed
/// weight's), its shapes checked first.
fn linear_with(
    x: &Tensor,
    (ins, outs): (usize, usize),
    b: &Tensor,
    product: impl FnOnce(&[f32], usize, &[f32]) -> Vec<f32>,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    if x.dims().last() != Some(&ins) || b.elem_count() != outs {
        candle_core::bail!("linear: input {:?}, packed weight ({ins}, {outs}), bias {:?}", x.dims(), b.dims())
    }
    let rows = x.elem_count() / ins.max(1);
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = outs;
    let y = with_data(&x, |x| with_data(b, |b| Ok(product(x, rows, b))))?;
    Tensor::from_vec(y, dims, x.device())
}

/// Inference only: GELU(x·wt + b) or x·wt + b with the weight stored transposed, `wt` (in, out)
/// contiguous. gemm runs this product up to 1.4× faster than x·Wᵀ with W (out, in) when the
/// output is narrow (it then packs W transposed on every call); the model keeps such copies
/// for inference (see `model::InferenceWeights`). No backward: the inputs are not tracked.
pub fn linear_transposed(x: &Tensor, wt: &Tensor, b: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
    if x.track_op() || wt.track_op() || b.track_op() {
        candle_core::bail!("linear_transposed is for inference: its inputs must not be tracked")
    }
    let (ins, outs) = wt.dims2()?;
    let x = x.contiguous()?;
    let rows = x.elem_count() / ins.max(1);
    if x.dims().last() != Some(&ins) || b.elem_count() != outs {
        candle_core::bail!("linear: input {:?}, transposed weight {:?}, bias {:?}", x.dims(), wt.dims(), b.dims())
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = outs;
    let mut y =
        with_data(&x, |x| with_data(wt, |wt| with_data(b, |b| Ok(linear_fwd(x, View::rows(wt, ins, outs), b, rows)))))?;
    if gelu {
        y.par_chunks_mut(4096).for_each(gelu_in_place);
    }
    Tensor::from_vec(y, dims, x.device())
}

// ---- dropout + residual ----------------------------------------------------------------------

/// y = branch · keep + residual (a sub-layer's output dropout and its skip connection).
struct ResidualDropout {
    keep: Option<Arc<Vec<f32>>>,
}

impl CustomOp2 for ResidualDropout {
    fn name(&self) -> &'static str {
        "fused-residual-dropout"
    }

    fn cpu_fwd(&self, bs: &CpuStorage, bl: &Layout, rs: &CpuStorage, rl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (branch, residual) = (slice(bs, bl, self.name())?, slice(rs, rl, self.name())?);
        if bl.dims() != rl.dims() || self.keep.as_ref().is_some_and(|k| k.len() != branch.len()) {
            candle_core::bail!("residual: branch {:?}, residual {:?}", bl.dims(), rl.dims())
        }
        let mut y = vec![0f32; branch.len()];
        y.par_chunks_mut(4096).zip(branch.par_chunks(4096).zip(residual.par_chunks(4096))).enumerate().for_each(
            |(c, (y, (b, r)))| match &self.keep {
                Some(k) => {
                    let k = &k[c * 4096..][..y.len()];
                    for i in 0..y.len() {
                        y[i] = b[i] * k[i] + r[i];
                    }
                }
                None => {
                    for i in 0..y.len() {
                        y[i] = b[i] + r[i];
                    }
                }
            },
        );
        Ok((CpuStorage::F32(y), bl.shape().clone()))
    }

    fn bwd(&self, branch: &Tensor, _r: &Tensor, _y: &Tensor, dy: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let d_branch = match &self.keep {
            Some(k) => with_data(dy, |dy| {
                let d: Vec<f32> = dy.par_iter().zip(k.par_iter()).map(|(d, k)| d * k).collect();
                Tensor::from_vec(d, branch.shape(), branch.device())
            })?,
            None => dy.clone(),
        };
        Ok((Some(d_branch), Some(dy.clone())))
    }
}

/// `branch · keep + residual`, with `keep` the dropout mask (none in evaluation).
pub fn residual_dropout(
    branch: &Tensor,
    residual: &Tensor,
    keep: Option<Arc<Vec<f32>>>,
) -> candle_core::Result<Tensor> {
    branch.contiguous()?.apply_op2(&residual.contiguous()?, ResidualDropout { keep })
}

// ---- attention: scores, key mask, softmax, dropout, weighted sum -----------------------------

/// Multi-head self-attention after the projections, over packed sentences: for each sentence
/// (its `lens[i]` rows, one after another, no padding) and head, p = softmax(scale · q kᵀ),
/// context = (p · dropout) v. The input is the packed projection (tokens, 3·hidden) — q, k, v
/// side by side, as one product makes them — with head `h` in columns h·d..(h+1)·d of each
/// third, read in place (no transposed copies); the context is (tokens, hidden). One task per
/// sentence, the small per-head products on gemm's kernels in that task.
struct Attention {
    heads: usize,
    scale: f32,
    /// Tokens of each sentence; they sum to the input's rows.
    lens: Arc<Vec<usize>>,
    /// Keep/scale values, per sentence (heads, t, t), sentences one after another, in training.
    dropout: Option<Arc<Vec<f32>>>,
    /// Whether backward can run (the input is tracked): only then are `probs` kept.
    save: bool,
    /// Softmax probabilities from the forward pass, laid out as `dropout`, for backward.
    probs: std::sync::Mutex<Vec<f32>>,
}

/// Splits `data` into consecutive mutable pieces of the given sizes.
fn split_sizes(mut data: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = vec![];
    for n in sizes {
        let (head, rest) = std::mem::take(&mut data).split_at_mut(n);
        out.push(head);
        data = rest;
    }
    out
}

impl Attention {
    /// (tokens, hidden, head width) of a packed (tokens, 3·hidden) input.
    fn dims(&self, l: &Layout) -> CResult<(usize, usize, usize)> {
        let (n, h3) = l.shape().dims2()?;
        let h = h3 / 3;
        if h3 % 3 != 0 || h % self.heads != 0 || self.lens.iter().sum::<usize>() != n {
            candle_core::bail!(
                "attention: packed width {h3} with {} heads, {n} rows for sentences {:?}",
                self.heads,
                self.lens
            )
        }
        if self.dropout.as_ref().is_some_and(|m| m.len() != self.probs_len()) {
            candle_core::bail!("attention: dropout mask does not match the sentences")
        }
        Ok((n, h, h / self.heads))
    }

    fn probs_len(&self) -> usize {
        self.heads * self.lens.iter().map(|t| t * t).sum::<usize>()
    }

    /// Per sentence: (first row, its tokens, offset of its probabilities).
    fn sentences(&self) -> Vec<(usize, usize, usize)> {
        let (mut row, mut at) = (0, 0);
        self.lens
            .iter()
            .map(|&t| {
                let s = (row, t, at);
                row += t;
                at += self.heads * t * t;
                s
            })
            .collect()
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let qkv = slice(s, l, self.name())?;
        let (n, h, d) = self.dims(l)?;
        let heads = self.heads;
        let mut out = vec![0f32; n * h];
        if !self.save && self.dropout.is_none() && crate::attention::supports(d) {
            // Inference: nothing to save for a backward pass, so no probabilities to keep.
            let outs = split_sizes(&mut out, self.lens.iter().map(|t| t * h));
            outs.into_par_iter().zip(self.sentences()).for_each(|(out, (row, t, _))| {
                crate::attention::sentence(&qkv[row * 3 * h..][..t * 3 * h], t, h, heads, self.scale, out)
            });
            return Ok((CpuStorage::F32(out), Shape::from((n, h))));
        }
        let mut probs = vec![0f32; self.probs_len()];
        let outs = split_sizes(&mut out, self.lens.iter().map(|t| t * h));
        let prob_parts = split_sizes(&mut probs, self.lens.iter().map(|t| heads * t * t));
        outs.into_par_iter().zip(prob_parts).zip(self.sentences()).for_each(|((out, probs), (row, t, at))| {
            let x = &qkv[row * 3 * h..][..t * 3 * h];
            let (mut kept, mut ctx) = (vec![0f32; t * t], vec![0f32; t * d]);
            for head in 0..heads {
                let col = head * d;
                let (q, k, v) = qkv_heads(x, col, t, d, h);
                let p = &mut probs[head * t * t..][..t * t];
                gemm_local(p, false, q, k.t());
                softmax_rows(p, t, self.scale);
                let keep = self.dropout.as_ref().map(|m| &m[at + head * t * t..][..t * t]);
                let p = with_keep(&mut kept, p, keep);
                gemm_local(&mut ctx, false, View::rows(p, t, t), v);
                scatter_head(out, &ctx, col, h, d);
            }
        });
        if self.save {
            *saved(&self.probs, self.name())? = probs;
        }
        Ok((CpuStorage::F32(out), Shape::from((n, h))))
    }

    /// With p' = p · keep: dv = p'ᵀ dc; dp = (dc vᵀ) · keep; ds = p · (dp − Σ dp · p);
    /// dq = scale · ds k; dk = scale · dsᵀ q. Returned packed as the input.
    fn bwd(&self, qkv: &Tensor, _out: &Tensor, dc: &Tensor) -> CResult<Option<Tensor>> {
        let (n, h, d) = self.dims(qkv.layout())?;
        let heads = self.heads;
        let probs = saved(&self.probs, self.name())?;
        if probs.len() != self.probs_len() {
            candle_core::bail!("attention: backward without its forward pass")
        }
        let mut dqkv = vec![0f32; n * 3 * h];
        with_data(qkv, |qkv| {
            with_data(dc, |dc| {
                let parts = split_sizes(&mut dqkv, self.lens.iter().map(|t| t * 3 * h));
                parts.into_par_iter().zip(self.sentences()).for_each(|(dx, (row, t, at))| {
                    let x = &qkv[row * 3 * h..][..t * 3 * h];
                    let dc = &dc[row * h..][..t * h];
                    let (mut kept, mut ds, mut grad) = (vec![0f32; t * t], vec![0f32; t * t], vec![0f32; t * d]);
                    for head in 0..heads {
                        let col = head * d;
                        let (q, k, v) = qkv_heads(x, col, t, d, h);
                        let dch = head_view(dc, col, t, d, h);
                        let p = &probs[at + head * t * t..][..t * t];
                        let keep = self.dropout.as_ref().map(|m| &m[at + head * t * t..][..t * t]);
                        let kept = with_keep(&mut kept, p, keep);
                        // dv = p'ᵀ dc
                        gemm_local(&mut grad, false, View::rows(kept, t, t).t(), dch);
                        scatter_head(dx, &grad, 2 * h + col, 3 * h, d);
                        // dp' = dc vᵀ, then ds in place.
                        gemm_local(&mut ds, false, dch, v.t());
                        for i in 0..t {
                            let row = &mut ds[i * t..][..t];
                            let pr = &p[i * t..][..t];
                            if let Some(m) = keep {
                                row.iter_mut().zip(&m[i * t..][..t]).for_each(|(g, m)| *g *= m);
                            }
                            let dot: f32 = row.iter().zip(pr).map(|(g, p)| g * p).sum();
                            row.iter_mut().zip(pr).for_each(|(g, p)| *g = self.scale * p * (*g - dot));
                        }
                        // dq = ds k, dk = dsᵀ q
                        gemm_local(&mut grad, false, View::rows(&ds, t, t), k);
                        scatter_head(dx, &grad, col, 3 * h, d);
                        gemm_local(&mut grad, false, View::rows(&ds, t, t).t(), q);
                        scatter_head(dx, &grad, h + col, 3 * h, d);
                    }
                });
                Ok(())
            })
        })?;
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?))
    }
}

multiversion! {
    /// Each row of width t of `p` becomes softmax(scale · row), in place (scale > 0, so the
    /// row's max scaled is the max of the scaled row).
    fn softmax_rows(p: &mut [f32], t: usize, scale: f32) {
        for row in p.chunks_mut(t) {
            let shift = lane_max(row) * scale;
            for v in row.iter_mut() {
                *v = exp(*v * scale - shift);
            }
            let inv = 1.0 / lane_sum(row, |v| v);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Columns col..col + d of a (t, width) matrix: one head, read in place.
fn head_view(x: &[f32], col: usize, t: usize, d: usize, width: usize) -> View<'_> {
    View { data: &x[col..], rows: t, cols: d, rs: width, cs: 1 }
}

/// Head columns col..col + d of q, k and v in a packed (t, 3·h) projection.
fn qkv_heads(x: &[f32], col: usize, t: usize, d: usize, h: usize) -> (View<'_>, View<'_>, View<'_>) {
    (head_view(x, col, t, d, 3 * h), head_view(x, h + col, t, d, 3 * h), head_view(x, 2 * h + col, t, d, 3 * h))
}

/// The probabilities after dropout: `p · keep` written into `buf`, or `p` itself in evaluation.
fn with_keep<'a>(buf: &'a mut [f32], p: &'a [f32], keep: Option<&[f32]>) -> &'a [f32] {
    match keep {
        Some(m) => {
            buf.iter_mut().zip(p.iter().zip(m)).for_each(|(o, (p, m))| *o = p * m);
            buf
        }
        None => p,
    }
}

/// Writes a (t, d) block into columns col..col + d of a (t, width) matrix.
fn scatter_head(dst: &mut [f32], block: &[f32], col: usize, width: usize, d: usize) {
    for (i, row) in block.chunks(d).enumerate() {
        dst[i * width + col..][..d].copy_from_slice(row);
    }
}

/// Self-attention of packed sentences: `qkv` is (tokens, 3·hidden), q, k, v side by side,
/// the sentences' rows one after another (`lens` tokens each, no padding), split into `heads`:
/// scaled scores, softmax within each sentence, `dropout` (per sentence heads·t·t keep/scale
/// values) in training, weighted sum of v. Returns the context (tokens, hidden).
pub fn attention(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    lens: Arc<Vec<usize>>,
    dropout: Option<Arc<Vec<f32>>>,
) -> candle_core::Result<Tensor> {
    let save = qkv.track_op();
    let op = Attention { heads, scale: scale as f32, lens, dropout, save, probs: Default::default() };
    qkv.contiguous()?.apply_op1(op)
}

// ---- GELU (exact, erf) -----------------------------------------------------------------------

/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, < 1e-6 in f32): branch-light,
/// where libm's `erff` took 8% of a training step in the profile.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Φ(x), the standard normal CDF.
#[inline(always)]
pub(crate) fn gelu_cdf(x: f32) -> f32 {
    (erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5
}

multiversion! {
    /// y = x·Φ(x), elementwise.
    fn gelu_fwd(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * gelu_cdf(x);
        }
    }
}

multiversion! {
    /// x = x·Φ(x), elementwise, in place (inference: no pre-activation to keep).
    pub(crate) fn gelu_in_place(x: &mut [f32]) {
        for x in x.iter_mut() {
            *x *= gelu_cdf(*x);
        }
    }
}

multiversion! {
    /// dx = dy · (Φ(x) + x·φ(x)), elementwise.
    fn gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for (dx, (&x, &dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
            let pdf = INV_SQRT_2PI * exp(-0.5 * x * x);
            *dx = dy * (gelu_cdf(x) + x * pdf);
        }
    }
}

// ---- dropout by a precomputed mask -----------------------------------------------------------

/// SplitMix64's output for counter `i` of the stream `key`: a counter-based generator, so any
/// part of a mask can be drawn without the parts before it (in parallel, in any order).
#[inline(always)]
fn splitmix64(key: u64, i: u64) -> u64 {
    let mut z = key.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

multiversion! {
    /// Keep/scale values for `out`, whose first element is decision `2·first_pair` of the
    /// stream: two decisions per 64-bit output (24 bits each, from each half).
    fn mask_pairs(out: &mut [f32], key: u64, first_pair: u64, threshold: u32, keep: f32) {
        let decide = |bits: u64| if (bits as u32) & 0xFF_FFFF >= threshold { keep } else { 0.0 };
        let mut pairs = out.chunks_exact_mut(2);
        let mut i = first_pair;
        for pair in &mut pairs {
            let r = splitmix64(key, i);
            pair[0] = decide(r);
            pair[1] = decide(r >> 32);
            i += 1;
        }
        if let [last] = pairs.into_remainder() {
            *last = decide(splitmix64(key, i));
        }
    }
}

/// Dropout's keep/scale values for `n` elements of stream `key`: 0 with probability `p` (to
/// 2⁻²⁴), else 1/(1 − p). The same values whatever the number of threads.
pub fn dropout_mask(key: u64, n: usize, p: f64) -> Vec<f32> {
    const CHUNK: usize = 1 << 14; // even: chunks start on a pair
    let keep = 1.0 / (1.0 - p) as f32;
    let threshold = (p * (1u64 << 24) as f64) as u32;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        mask_pairs(chunk, key, (c * CHUNK / 2) as u64, threshold, keep);
    });
    mask
}

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
        let dx: Vec<f32> =
            with_data(dy, |dy| Ok(dy.par_iter().zip(self.mask.par_iter()).map(|(d, m)| d * m).collect()))?;
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
    use crate::composed;
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

    /// Two versions of one op agree: values differ by less than `tol.0`, and the gradient of
    /// each input (through `weighted_sum(·, seed)`) by less than `tol.1`; a tolerance of 0 asks
    /// for the same bits.
    fn assert_same_values_and_gradients(
        fused: &Tensor,
        composed: &Tensor,
        inputs: &[(&str, &Var)],
        seed: u64,
        tol: (f32, f32),
    ) {
        let within = |d: f32, tol: f32| d < tol || d == 0.0;
        let d = max_diff(fused, composed);
        assert!(within(d, tol.0), "values differ by {d}");
        let gf = weighted_sum(fused, seed).backward().unwrap();
        let gc = weighted_sum(composed, seed).backward().unwrap();
        for (name, v) in inputs {
            let d = max_diff(gf.get(v).unwrap(), gc.get(v).unwrap());
            assert!(within(d, tol.1), "d{name} differs by {d}");
        }
    }

    #[test]
    fn layer_norm_matches_the_composed_version_values_and_gradients() {
        let (x, w, b) = (var(&[3, 5, 48], 1), var(&[48], 2), var(&[48], 3));
        let eps = 1e-5;
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), eps).unwrap();
        let composed = composed::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), eps).unwrap();
        assert_same_values_and_gradients(&fused, &composed, &[("x", &x), ("w", &w), ("b", &b)], 9, (1e-5, 1e-4));
    }

    #[test]
    fn attention_matches_the_padded_composed_version_values_and_gradients() {
        let (bsz, heads, t, d) = (2, 3, 7, 8);
        let h = heads * d;
        let lens = [7usize, 5]; // the second sentence has two padded slots
        let (q, k, v) = (var(&[bsz, t, h], 4), var(&[bsz, t, h], 14), var(&[bsz, t, h], 24));
        let mut bias = vec![0f32; bsz * t];
        bias[t + 5] = f32::MIN;
        bias[t + 6] = f32::MIN;
        let real: Vec<u32> = (0..bsz * t).filter(|&i| bias[i] == 0.0).map(|i| i as u32).collect();
        let real_index = Tensor::from_vec(real.clone(), real.len(), &Device::Cpu).unwrap();
        let keep_padded: Vec<f32> =
            random(bsz * heads * t * t, 5).iter().map(|r| if *r > -1.0 { 1.0 / 0.75 } else { 0.0 }).collect();
        // The same keep values, laid out per sentence (heads, len, len).
        let mut keep_packed = vec![];
        for (n, &len) in lens.iter().enumerate() {
            for head in 0..heads {
                for i in 0..len {
                    let at = ((n * heads + head) * t + i) * t;
                    keep_packed.extend_from_slice(&keep_padded[at..at + len]);
                }
            }
        }
        let scale = 1.0 / (d as f64).sqrt();
        for (packed_keep, padded_keep) in [(None, None), (Some(Arc::new(keep_packed)), Some(keep_padded))] {
            let qkv = Tensor::cat(&[q.as_tensor(), k.as_tensor(), v.as_tensor()], 2).unwrap();
            let qkv = qkv.reshape((bsz * t, 3 * h)).unwrap().index_select(&real_index, 0).unwrap();
            let fused = attention(&qkv, heads, scale, Arc::new(lens.to_vec()), packed_keep.clone()).unwrap();
            // The model's own composed version (other devices) pads the packed rows itself.
            let composed_packed =
                composed::attention(&qkv, heads, scale, Arc::new(lens.to_vec()), packed_keep).unwrap();
            // Written out here from the padded inputs, as transformers computes it.
            let composed = {
                let split = |x: &Var| x.as_tensor().reshape((bsz, t, heads, d)).unwrap().transpose(1, 2).unwrap();
                let (qs, ks, vs) = (split(&q), split(&k), split(&v));
                let s = qs.contiguous().unwrap().matmul(&ks.t().unwrap().contiguous().unwrap()).unwrap();
                let m = Tensor::from_vec(bias.clone(), (bsz, 1, 1, t), &Device::Cpu).unwrap();
                let z = (s * scale).unwrap().broadcast_add(&m).unwrap();
                let max = z.max_keepdim(D::Minus1).unwrap().detach();
                let e = z.broadcast_sub(&max).unwrap().exp().unwrap();
                let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
                let p = match &padded_keep {
                    Some(k) => p.mul(&Tensor::from_vec(k.to_vec(), p.shape(), &Device::Cpu).unwrap()).unwrap(),
                    None => p,
                };
                let c = p.matmul(&vs.contiguous().unwrap()).unwrap();
                c.transpose(1, 2).unwrap().reshape((bsz * t, h)).unwrap().index_select(&real_index, 0).unwrap()
            };
            assert_eq!(fused.dims(), &[12, h]);
            assert!(max_diff(&fused, &composed) < 1e-5);
            assert!(max_diff(&composed_packed, &composed) < 1e-5);
            let gf = weighted_sum(&fused, 8).backward().unwrap();
            let gc = weighted_sum(&composed, 8).backward().unwrap();
            let gp = weighted_sum(&composed_packed, 8).backward().unwrap();
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let d = max_diff(gf.get(x).unwrap(), gc.get(x).unwrap());
                assert!(d < 1e-4, "d{name} differs by {d}");
                let d = max_diff(gp.get(x).unwrap(), gc.get(x).unwrap());
                assert!(d < 1e-4, "composed d{name} differs by {d}");
            }
        }
    }

    #[test]
    fn linear_matches_matmul_plus_bias_values_and_gradients() {
        let (x, w, b) = (var(&[3, 5, 12], 31), var(&[7, 12], 32), var(&[7], 33));
        let fused = linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let composed = composed::linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        assert_eq!(composed.dims(), &[3, 5, 7]);
        assert_eq!(fused.dims(), &[3, 5, 7]);
        assert_same_values_and_gradients(&fused, &composed, &[("x", &x), ("w", &w), ("b", &b)], 34, (1e-5, 1e-4));
    }

    #[test]
    fn bf16_training_linear_stays_close_to_f32_values_and_gradients() {
        // `train --bf16`'s op: its three products (x·Wᵀ, dy·W, dyᵀ·x) on bf16 operands, sized
        // for whole tiles and ragged edges alike (k = 70 and 40 rows: pairs and chunks cut).
        let (x, w, b) = (var(&[2, 35, 70], 61), var(&[45, 70], 62), var(&[45], 63));
        for gelu in [false, true] {
            let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
            let low = if gelu { linear_gelu_bf16(xt, wt, bt) } else { linear_bf16(xt, wt, bt) }.unwrap();
            let full = if gelu { linear_gelu(xt, wt, bt) } else { linear(xt, wt, bt) }.unwrap();
            assert_eq!(low.dims(), &[2, 35, 45]);
            // bf16 keeps 8 bits of each operand: a sum of 70 products of values in ±2 (about
            // ±17) moves by ~0.03 typically, ~0.1 at the largest of 3,150; an operand packed
            // wrongly moves it by whole units.
            assert_same_values_and_gradients(&low, &full, &[("x", &x), ("w", &w), ("b", &b)], 64, (0.25, 0.5));
            assert!(max_diff(&low, &full) > 0.0, "the products ran in f32");
        }
    }

    #[test]
    fn inference_linear_on_transposed_weights_matches_the_training_op() {
        let (x, w, b) = (var(&[3, 5, 12], 41), var(&[40, 12], 42), var(&[40], 43));
        let (x, w, b) = (x.as_tensor().detach(), w.as_tensor().detach(), b.as_tensor().detach());
        let wt = w.t().unwrap().contiguous().unwrap();
        for gelu in [false, true] {
            let want = if gelu { linear_gelu(&x, &w, &b) } else { linear(&x, &w, &b) }.unwrap();
            let got = linear_transposed(&x, &wt, &b, gelu).unwrap();
            assert_eq!(got.dims(), &[3, 5, 40]);
            assert!(max_diff(&got, &want) < 1e-5, "gelu {gelu}");
            let composed = composed::linear_transposed(&x, &wt, &b, gelu).unwrap();
            assert!(max_diff(&composed, &want) < 2e-5, "composed, gelu {gelu}");
        }
        // It has no backward, so it refuses tracked inputs instead of cutting the graph.
        let tracked = var(&[2, 12], 44);
        assert!(linear_transposed(tracked.as_tensor(), &wt, &b, false).is_err());
    }

    #[test]
    fn backward_sums_are_the_same_bits_every_time() {
        // Partial sums over row blocks must be added in a fixed order: a seeded run repeats.
        let (x, w, b) = (var(&[4096, 64], 51), var(&[64], 52), var(&[64], 53));
        let lw = var(&[48, 64], 54);
        let grads = || {
            let y = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
            let y = linear(&y, lw.as_tensor(), &b.as_tensor().narrow(0, 0, 48).unwrap()).unwrap();
            let g = weighted_sum(&y, 55).backward().unwrap();
            [&w, &b, &lw].map(|v| g.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let first = grads();
        for _ in 0..20 {
            assert!(grads() == first, "a backward pass gave other bits");
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
    fn exp_is_within_3e7_relative_of_libm() {
        let worst = (-87_000..=88_000)
            .map(|i| i as f32 / 1000.0)
            .map(|x| ((exp(x) - x.exp()) / x.exp()).abs())
            .fold(0f32, f32::max);
        assert!(worst < 3e-7, "exp differs by {worst}");
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn linear_gelu_matches_candle_values_and_gradients() {
        let (x, w, b) = (var(&[2, 9, 16], 6), var(&[40, 16], 16), var(&[40], 26));
        let fused = linear_gelu(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let composed = composed::linear_gelu(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        assert_same_values_and_gradients(&fused, &composed, &[("x", &x), ("w", &w), ("b", &b)], 7, (2e-5, 2e-4));
    }

    #[test]
    fn residual_dropout_matches_candle() {
        let (branch, residual) = (var(&[3, 5000], 41), var(&[3, 5000], 42));
        let keep: Vec<f32> = (0..15000).map(|i| if i % 7 == 0 { 0.0 } else { 1.0 / 0.9 }).collect();
        for keep in [None, Some(Arc::new(keep))] {
            let fused = residual_dropout(branch.as_tensor(), residual.as_tensor(), keep.clone()).unwrap();
            let composed = composed::residual_dropout(branch.as_tensor(), residual.as_tensor(), keep).unwrap();
            let inputs = [("branch", &branch), ("residual", &residual)];
            assert_same_values_and_gradients(&fused, &composed, &inputs, 43, (0.0, 0.0));
        }
    }

    #[test]
    fn dropout_matches_candle() {
        let x = var(&[4, 33], 6);

        let mask: Vec<f32> = (0..132).map(|i| if i % 3 == 0 { 0.0 } else { 1.5 }).collect();
        let fused = mask_mul(x.as_tensor(), Arc::new(mask.clone())).unwrap();
        let composed = composed::mask_mul(x.as_tensor(), Arc::new(mask)).unwrap();
        // A mask of the wrong size is an error, not a broadcast.
        assert!(composed::mask_mul(x.as_tensor(), Arc::new(vec![1.0; 131])).is_err());
        assert_same_values_and_gradients(&fused, &composed, &[("x", &x)], 3, (0.0, 0.0));
    }
}
