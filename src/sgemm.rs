//! f32 matrix products on AVX-512: the linear layers' weights packed once per model for
//! inference (`PackedF32`), and the training products with B packed per call (`matmul`).
//!
//! This is gemm's own blocking (the `gemm` crate, which the other f32 products here run on)
//! re-done: tiles of 64 output columns × 6 rows, gemm's k-blocks (`block_depth`), each tile's
//! k-block summed in order from zero and then added to what the tile held (the first block to
//! the bias, or to nothing). So the sums are gemm's, in gemm's order, and the values are
//! gemm's to the bit. What changes is the work around them:
//! - inference: gemm packed W on every call (9 % of an f32 evaluation), the bias was copied
//!   into every output row before the product (5 %), and GELU was a pass of its own over a
//!   product that had left the cache (4 %). Here W is packed when the model's inference weights
//!   are made, the bias is the first block's start value, and GELU runs on each finished
//!   block of rows (6 × up to 512 columns) while it is in L1 or L2;
//! - everywhere: the tile's loop runs four k-steps per iteration on fixed row pointers, where
//!   gemm's loop instructions took issue slots from the multiply-adds (single-threaded, 190–200
//!   GFLOP/s against gemm's 130–165, of this core's 214).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::kernels::{gelu_in_place, View};
use crate::lowp::{put_scratch, take_scratch, Lines};

/// Output columns per panel: four 16-lane vectors.
const PANEL: usize = 64;
/// 16-lane vectors per panel row.
const VECS: usize = PANEL / 16;
/// Rows per tile: 6 × 4 accumulators and 4 weight vectors take 28 of the 32 vector registers.
const ROWS: usize = 6;
/// Panels swept per k-block before moving to the next rows: 512 columns × 512 k is 1 MB,
/// within a core's L2, while the rows of A stay in L1.
const BLOCK_PANELS: usize = 8;

/// Whether this CPU runs these products (AVX-512 F). `XNER_NO_AVX512=1` turns them off, so
/// that gemm's path, the one CPUs without AVX-512 take, can be run on the same machine.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| has_avx512() && std::env::var_os("XNER_NO_AVX512").is_none())
}

/// Whether the CPU has AVX-512 F (whatever `XNER_NO_AVX512` says).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The depth of gemm's k-blocks for C (m × n, row-major) = A (m × k)·B (k × n). gemm computes
/// Cᵀ = Bᵀ·Aᵀ (its rows are C's columns), with blocks of `kernel_params` for its f32 AVX-512
/// kernels (64 × 6), or of up to 512 when both sides are at most 64.
fn block_depth(m: usize, n: usize, k: usize) -> usize {
    if n <= 64 && m <= 64 {
        k.min(512)
    } else {
        gemm_common::cache::kernel_params(n, m, k, PANEL, ROWS, 4).kc.max(1)
    }
}

/// B (k × n) in panels of 64 columns: panel p holds, for each k, B[k][64p .. 64p + 64] as one
/// 256-byte run on whole cache lines (zeros past n).
fn pack_panels(b: View, panels: &mut Lines<f32>) {
    panels.resize(b.cols.div_ceil(PANEL) * b.rows * PANEL);
    if b.rows > 0 {
        panels.par_chunks_mut(b.rows * PANEL).enumerate().for_each(|(p, panel)| pack_panel(b, p, 0..b.rows, panel));
    }
}

/// The runs `ks` of panel p of B (`pack_panels`) into `panel`, k · 64 values.
fn pack_panel(b: View, p: usize, ks: std::ops::Range<usize>, panel: &mut [f32]) {
    let first = p * PANEL;
    let width = PANEL.min(b.cols - first);
    let runs = panel[ks.start * PANEL..ks.end * PANEL].chunks_exact_mut(PANEL);
    for (kk, run) in ks.clone().zip(runs) {
        let at = kk * b.rs + first * b.cs;
        if b.cs == 1 && width == PANEL {
            // A fixed length: four vector moves, not a call to memcpy.
            run.copy_from_slice(&b.data[at..][..PANEL]);
        } else if b.cs == 1 {
            run[..width].copy_from_slice(&b.data[at..][..width]);
        } else if b.rs == 1 && width == PANEL && gather_run(b, at, run) {
            // A transposed operand (torch's (out, in) weight): each run is a column of its
            // storage, gathered 16 values at a time.
        } else {
            for (j, v) in run[..width].iter_mut().enumerate() {
                *v = b.data[at + j * b.cs];
            }
        }
        run[width..].fill(0.0);
    }
}

/// run[j] = b.data[at + j·b.cs] for the 64 values of a run, by AVX-512 gathers. False (nothing
/// written) where the offsets do not fit the gather's 32-bit indices.
fn gather_run(b: View, at: usize, run: &mut [f32]) -> bool {
    let last = at + (PANEL - 1) * b.cs;
    if run.len() != PANEL || last >= b.data.len() || (PANEL - 1) * b.cs > i32::MAX as usize || !available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX-512 is here, and every gathered offset, at + j·cs for j < 64, is at
        // most `last`, inside b.data; run holds 64 values.
        unsafe { avx512::gather_run(b.data.as_ptr().add(at), b.cs, run.as_mut_ptr()) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A linear layer's weight (ins, outs) packed for inference (`pack_panels`).
pub struct PackedF32 {
    ins: usize,
    outs: usize,
    panels: Lines<f32>,
}

impl PackedF32 {
    /// Packs `wt`, row-major (ins, outs). None where the CPU lacks AVX-512 (callers keep the
    /// gemm path there).
    pub fn new(wt: &[f32], ins: usize, outs: usize) -> Option<PackedF32> {
        assert_eq!(wt.len(), ins * outs, "PackedF32: weight of {} values for ({ins}, {outs})", wt.len());
        if !available() {
            return None;
        }
        let mut panels = Lines::new();
        pack_panels(View::rows(wt, ins, outs), &mut panels);
        Some(PackedF32 { ins, outs, panels })
    }

    pub fn ins(&self) -> usize {
        self.ins
    }

    pub fn outs(&self) -> usize {
        self.outs
    }

    /// Bytes of the packed weight.
    pub fn bytes(&self) -> usize {
        4 * self.panels.len()
    }

    /// The weight back, (ins, outs) row-major (tests).
    pub fn unpack(&self) -> Vec<f32> {
        let mut wt = vec![0f32; self.ins * self.outs];
        if self.ins == 0 {
            return wt;
        }
        for (p, panel) in self.panels.chunks(self.ins * PANEL).enumerate() {
            let first = p * PANEL;
            let width = PANEL.min(self.outs - first);
            for (k, run) in panel.chunks_exact(PANEL).enumerate() {
                wt[k * self.outs + first..][..width].copy_from_slice(&run[..width]);
            }
        }
        wt
    }

    /// act(x·W + b) for x (rows, ins) row-major; act is GELU with `gelu`. Row-major (rows, outs).
    pub fn linear(&self, x: &[f32], rows: usize, bias: &[f32], gelu: bool) -> Vec<f32> {
        let (ins, outs) = (self.ins, self.outs);
        assert!(x.len() == rows * ins && bias.len() == outs, "PackedF32::linear: shapes do not fit");
        new_output(rows * outs, |y| {
            if ins == 0 {
                // No sums: every row is the bias.
                for row in y.chunks_exact_mut(outs) {
                    for (y, &b) in row.iter_mut().zip(bias) {
                        y.write(if gelu { b * crate::kernels::gelu_cdf(b) } else { b });
                    }
                }
                return;
            }
            let a = Lhs { data: x.as_ptr(), rs: ins, cs: 1 };
            let shape = Shape { m: rows, k: ins, n: outs };
            // SAFETY: x holds rows · ins values, the panels ins · 64 per panel, bias outs, and
            // y rows · outs; AVX-512 is here (`new`).
            unsafe { product(a, shape, Rhs::Packed(&self.panels), Start::Bias(bias.as_ptr()), gelu, y) }
        })
    }
}

/// a·b as a new (a.rows × b.cols) row-major output, with B packed for this call. None where
/// gemm must run it instead: without AVX-512, for A stored other than row-major or
/// transposed, and for the shapes gemm sends to other kernels (a single row or column, k ≤ 2,
/// at most 256 outputs), whose order of sums differs.
pub fn matmul(a: View, b: View) -> Option<Vec<f32>> {
    packing_b(a, b, Start::Zero)
}

/// x·w + b as a new (x.rows, w.cols) output, with w packed for this call (the training
/// forward pass); None where `matmul` would decline.
pub fn linear(x: View, w: View, bias: &[f32]) -> Option<Vec<f32>> {
    assert_eq!(bias.len(), w.cols, "sgemm::linear: bias does not fit");
    packing_b(x, w, Start::Bias(bias.as_ptr()))
}

/// start + a·b as a new output, B packed into the calling thread's buffer (fresh pages for each
/// product's panels would cost more than packing them); None where `matmul` would decline.
/// A `Start::Bias` covers b.cols values.
fn packing_b(a: View, b: View, start: Start) -> Option<Vec<f32>> {
    let shape = Shape { m: a.rows, k: a.cols, n: b.cols };
    let Shape { m, k, n } = shape;
    if !(available() && (a.cs == 1 || a.rs == 1) && a.fits() && m > 1 && n > 1 && k > 2 && m * n > 256) {
        return None;
    }
    assert!(b.rows == k, "sgemm: inner dimensions do not fit");
    let lhs = Lhs { data: a.data.as_ptr(), rs: a.rs, cs: a.cs };
    let mut panels = take_scratch(&PANELS, 0);
    // SAFETY: a fits its storage (checked) and is m × k, B is checked by `product`, the bias
    // covers n (the callers'), and AVX-512 is here (`available`).
    let y = new_output(m * n, |y| unsafe { product(lhs, shape, Rhs::Pack(b, &mut panels), start, false, y) });
    put_scratch(&PANELS, panels);
    Some(y)
}

thread_local! {
    /// The calling thread's packed B, kept between calls.
    static PANELS: std::cell::Cell<Lines<f32>> = const { std::cell::Cell::new(Lines::new()) };
}

/// A new output of `n` values, every one of which `fill` writes.
fn new_output(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut y = Vec::with_capacity(n);
    fill(&mut y.spare_capacity_mut()[..n]);
    // SAFETY: `fill` wrote all n values.
    unsafe { y.set_len(n) };
    y
}

#[derive(Clone, Copy)]
struct Shape {
    m: usize,
    k: usize,
    n: usize,
}

/// A, read in place: A[i][k] at data + i·rs + k·cs, with rs = 1 or cs = 1.
#[derive(Clone, Copy)]
struct Lhs {
    data: *const f32,
    rs: usize,
    cs: usize,
}

/// What a tile's first k-block adds its sums to.
#[derive(Clone, Copy)]
enum Start {
    /// Nothing: y = sums.
    Zero,
    /// y as it is.
    Dst,
    /// The bias, one value per column.
    Bias(*const f32),
}

/// B for a product: packed already, or to be packed into a buffer.
enum Rhs<'a> {
    Packed(&'a [f32]),
    Pack(View<'a>, &'a mut Lines<f32>),
}

/// y (m × n) = start + A·B, act GELU with `gelu`, over the rayon pool.
///
/// # Safety
/// `a` covers m × k values, B is (k × n), a `Start::Bias` covers n values, and y is m · n long
/// (initialised where `start` is `Dst`); the CPU has AVX-512 F.
unsafe fn product(a: Lhs, shape: Shape, rhs: Rhs, start: Start, gelu: bool, y: &mut [MaybeUninit<f32>]) {
    let Shape { m, k, n } = shape;
    let panel_count = n.div_ceil(PANEL);
    assert!(y.len() == m * n, "sgemm: output does not fit");
    if m == 0 || n == 0 {
        return;
    }
    let jobs = jobs(m, panel_count);
    // Each job packs its own panels where no other job reads them (the jobs then meet once, not
    // twice); otherwise all are packed first.
    let (panels, pack) = match rhs {
        Rhs::Packed(panels) => (panels.as_ptr(), None),
        Rhs::Pack(b, buffer) => {
            assert!(b.rows == k && b.cols == n && b.fits(), "sgemm: B does not fit");
            if jobs.iter().all(|job| job.rows == (0..m)) {
                buffer.resize(panel_count * k * PANEL);
                (buffer.as_ptr(), Some(b))
            } else {
                pack_panels(b, buffer);
                (buffer.as_ptr(), None)
            }
        }
    };
    let task = Task { a, shape, panels, pack, start, gelu, y: y.as_mut_ptr() as *mut f32 };
    jobs.into_par_iter().for_each(|job| {
        // SAFETY: the jobs' rectangles of y are disjoint, and so are their panels where they
        // pack them; each writes its own, k-block 0 first.
        unsafe { task.run(job) }
    });
}

/// The output cut into one rectangle per thread: by panels first (each core then reads only
/// its share of B), by rows where there are more threads than panels.
fn jobs(rows: usize, panels: usize) -> Vec<Job> {
    let threads = rayon::current_num_threads().max(1);
    let by_panels = panels.min(threads);
    let row_groups = rows.div_ceil(ROWS);
    let by_rows = threads.div_ceil(by_panels).min(row_groups).max(1);
    let mut jobs = Vec::with_capacity(by_panels * by_rows);
    for p in 0..by_panels {
        for r in 0..by_rows {
            let (g0, g1) = (row_groups * r / by_rows, row_groups * (r + 1) / by_rows);
            let job = Job {
                rows: g0 * ROWS..(g1 * ROWS).min(rows),
                panels: panels * p / by_panels..panels * (p + 1) / by_panels,
            };
            if !job.rows.is_empty() && !job.panels.is_empty() {
                jobs.push(job);
            }
        }
    }
    jobs
}

/// A job's rectangle: rows of y, and panels of 64 of its columns.
struct Job {
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
}

/// One product's operands, shared by its jobs.
struct Task<'a> {
    a: Lhs,
    shape: Shape,
    panels: *const f32,
    /// B, where each job packs its panels into `panels`, a k-block at a time, as it reaches them.
    pack: Option<View<'a>>,
    start: Start,
    gelu: bool,
    y: *mut f32,
}

// SAFETY: the jobs read a, the panels and the bias, and write disjoint elements of y.
unsafe impl Sync for Task<'_> {}

impl Task<'_> {
    /// One job's rectangle of y, k-block by k-block as gemm orders the sums.
    ///
    /// # Safety
    /// As `product`'s; no other job writes this job's rectangle.
    unsafe fn run(&self, job: Job) {
        let Shape { m, k, n } = self.shape;
        let depth = block_depth(m, n, k);
        let mut k0 = 0;
        while k0 < k {
            let kc = depth.min(k - k0);
            let last = k0 + kc == k;
            let start = if k0 == 0 { self.start } else { Start::Dst };
            let mut p0 = job.panels.start;
            while p0 < job.panels.end {
                let p1 = (p0 + BLOCK_PANELS).min(job.panels.end);
                if let Some(b) = self.pack {
                    // This k-block of these panels, packed just before its rows read it: it
                    // stays in L2 (a whole large B, packed first, went out to L3).
                    for p in p0..p1 {
                        let panel = self.panels.add(p * k * PANEL) as *mut f32;
                        pack_panel(b, p, k0..k0 + kc, std::slice::from_raw_parts_mut(panel, k * PANEL));
                    }
                }
                let mut row = job.rows.start;
                while row < job.rows.end {
                    let rows = ROWS.min(job.rows.end - row);
                    for p in p0..p1 {
                        let col = p * PANEL;
                        let cols = PANEL.min(n - col);
                        let tile = Tile {
                            a: self.a.data.add(row * self.a.rs + k0 * self.a.cs),
                            a_step: if self.a.cs == 1 { self.a.rs } else { self.a.cs },
                            w: self.panels.add(p * k * PANEL + k0 * PANEL),
                            kc,
                            y: self.y.add(row * n + col),
                            ldy: n,
                            cols,
                            start: match start {
                                Start::Bias(b) => Start::Bias(b.add(col)),
                                s => s,
                            },
                        };
                        tile.run(rows, self.a.cs != 1);
                    }
                    if self.gelu && last {
                        // The rows' finished columns of these panels, still in L1 or L2: one
                        // call per row over up to 512 columns, not one per 64.
                        let (col, end) = (p0 * PANEL, (p1 * PANEL).min(n));
                        for i in row..row + rows {
                            gelu_in_place(std::slice::from_raw_parts_mut(self.y.add(i * n + col), end - col));
                        }
                    }
                    row += rows;
                }
                p0 = p1;
            }
            k0 += kc;
        }
    }
}

/// One tile: up to 6 rows of A against one panel, over one k-block.
struct Tile {
    /// A[row][k0]. Row-major A: rows `a_step` apart, k contiguous; transposed A: k-steps
    /// `a_step` apart, the rows' values at one k contiguous.
    a: *const f32,
    a_step: usize,
    /// The panel's run for k0; runs of 64, one per k.
    w: *const f32,
    kc: usize,
    /// y[row][col]; rows `ldy` apart, `cols` (≤ 64) of them written.
    y: *mut f32,
    ldy: usize,
    cols: usize,
    start: Start,
}

impl Tile {
    /// # Safety
    /// The pointers cover `rows` (≤ 6) rows of kc values of A, kc runs of the panel, `rows`
    /// rows of `cols` values of y (and of a bias), and the CPU has AVX-512 F.
    unsafe fn run(&self, rows: usize, a_transposed: bool) {
        #[cfg(target_arch = "x86_64")]
        match (rows, a_transposed) {
            (6, false) => avx512::tile::<6, false>(self),
            (5, false) => avx512::tile::<5, false>(self),
            (4, false) => avx512::tile::<4, false>(self),
            (3, false) => avx512::tile::<3, false>(self),
            (2, false) => avx512::tile::<2, false>(self),
            (1, false) => avx512::tile::<1, false>(self),
            (6, true) => avx512::tile::<6, true>(self),
            (5, true) => avx512::tile::<5, true>(self),
            (4, true) => avx512::tile::<4, true>(self),
            (3, true) => avx512::tile::<3, true>(self),
            (2, true) => avx512::tile::<2, true>(self),
            (1, true) => avx512::tile::<1, true>(self),
            _ => unreachable!("a tile has 1 to 6 rows"),
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("sgemm runs only where AVX-512 is available ({rows} rows, {a_transposed})")
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Start, Tile, PANEL, VECS};
    use std::arch::x86_64::*;
    /// How many k-steps ahead a transposed A's values are prefetched (8, 12 and 16 ran alike).
    const PREFETCH_STEPS: usize = 8;

    /// run[j] = src[j · stride] for j < 64.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_run(src: *const f32, stride: usize, run: *mut f32) {
        let stride = stride as i32;
        let lanes = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(stride),
        );
        for v in 0..VECS {
            let values = _mm512_i32gather_ps::<4>(lanes, src.add(16 * v * stride as usize));
            _mm512_store_ps(run.add(16 * v), values);
        }
    }

    /// R rows × 64 columns: per k, four vectors of the panel and R broadcast values of A,
    /// 4R fused multiply-adds into accumulators that stay in registers; then y = start + sums,
    /// the columns past `cols` masked off.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const R: usize, const A_TRANSPOSED: bool>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); VECS]; R];
        let mut rows = [t.a; R];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = t.a.add(r * t.a_step);
        }
        // One k-step. A macro, not a closure: through a closure's `&mut` LLVM kept the
        // accumulators in memory (2.3× slower).
        macro_rules! step {
            ($k:expr) => {{
                let k = $k;
                let w = t.w.add(k * PANEL);
                let mut wv = [_mm512_setzero_ps(); VECS];
                for (v, wv) in wv.iter_mut().enumerate() {
                    *wv = _mm512_load_ps(w.add(16 * v));
                }
                let at_k = t.a.add(k * t.a_step);
                if A_TRANSPOSED {
                    // The values of k-steps ahead: each k-step's are on a line of its own, a
                    // row of memory apart (dW's dyᵀ: 6 KiB for ffn-up), past the reach of the
                    // hardware's prefetcher, which stays within a 4 KiB page. Without this,
                    // ffn-up's dW over 2,048 tokens ran at 183-217 GFLOP/s, with it 290-320.
                    _mm_prefetch::<_MM_HINT_T0>(at_k.wrapping_add(PREFETCH_STEPS * t.a_step) as *const i8);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(if A_TRANSPOSED { *at_k.add(r) } else { *rows[r].add(k) });
                    for v in 0..VECS {
                        acc[v] = _mm512_fmadd_ps(wv[v], a, acc[v]);
                    }
                }
            }};
        }
        // Four k-steps per iteration: the loop's own instructions would otherwise take issue
        // slots from the multiply-adds.
        let mut k = 0;
        while k + 4 <= t.kc {
            step!(k);
            step!(k + 1);
            step!(k + 2);
            step!(k + 3);
            k += 4;
        }
        while k < t.kc {
            step!(k);
            k += 1;
        }
        // Each vector's mask of the columns to write (none past `cols`).
        let mut masks = [0 as __mmask16; VECS];
        for (v, mask) in masks.iter_mut().enumerate() {
            let left = t.cols.saturating_sub(16 * v);
            *mask = if left >= 16 { u16::MAX } else { (1u16 << left) - 1 };
        }
        for (r, acc) in acc.iter().enumerate() {
            let y = t.y.add(r * t.ldy);
            for (v, (&mask, &sums)) in masks.iter().zip(acc).enumerate() {
                let col = 16 * v;
                let out = match t.start {
                    Start::Zero => sums,
                    Start::Dst => _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y.add(col)), sums),
                    Start::Bias(b) => _mm512_add_ps(_mm512_maskz_loadu_ps(mask, b.add(col)), sums),
                };
                _mm512_mask_storeu_ps(y.add(col), mask, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm_into as gemm_reference;

    /// gemm's x·w + b: the bias rows, then the product added.
    fn gemm_linear(x: View, w: View, bias: &[f32]) -> Vec<f32> {
        let mut y: Vec<f32> = (0..x.rows).flat_map(|_| bias.iter().copied()).collect();
        gemm_reference(&mut y, true, x, w);
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A fixed LCG: reproducible inputs in [-1, 1).
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn assert_same_bits(got: &[f32], expected: &[f32], what: &str) {
        assert_eq!(got.len(), expected.len(), "{what}");
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "{what} at {i}: {g} vs {e}");
        }
    }

    #[test]
    fn packing_round_trips_ragged_widths() {
        for (ins, outs) in [(3, 5), (17, 64), (9, 130), (0, 7)] {
            let wt = values(ins * outs, 1);
            let Some(packed) = PackedF32::new(&wt, ins, outs) else { return assert!(!available()) };
            assert_eq!(packed.unpack(), wt, "({ins}, {outs})");
            assert_eq!(packed.bytes(), 4 * outs.div_ceil(64) * 64 * ins);
        }
    }

    /// Against gemm's product on ragged shapes: k over one and several blocks, rows not a
    /// multiple of 6, columns not a multiple of 64. Same sums in the same order: the same bits.
    #[test]
    fn inference_product_is_gemms_with_bias_and_gelu() {
        let shapes = [(2, 3, 300), (7, 33, 70), (13, 384, 384), (50, 384, 1152), (23, 1536, 384), (70, 700, 100)];
        for &(rows, ins, outs) in &shapes {
            let (x, wt, bias) = (values(rows * ins, 2), values(ins * outs, 3), values(outs, 4));
            let Some(packed) = PackedF32::new(&wt, ins, outs) else { return assert!(!available()) };
            for gelu in [false, true] {
                let mut expected = gemm_linear(View::rows(&x, rows, ins), View::rows(&wt, ins, outs), &bias);
                if gelu {
                    gelu_in_place(&mut expected);
                }
                let got = packed.linear(&x, rows, &bias, gelu);
                assert_same_bits(&got, &expected, &format!("({rows}, {ins}, {outs}) gelu {gelu}"));
            }
        }
    }

    /// The training products — x·Wᵀ with torch's (out, in) weight, dy·W, dyᵀ·x — against
    /// gemm's, with and without a bias: the same bits.
    #[test]
    fn training_products_are_gemms() {
        for &(m, k, n) in &[(12, 40, 70), (37, 384, 1152), (130, 1536, 384), (384, 600, 100)] {
            let (a, b) = (values(m * k, 5), values(k * n, 6));
            let a_views = [View::rows(&a, m, k), View::rows(&a, k, m).t()];
            let b_views = [View::rows(&b, k, n), View::rows(&b, n, k).t()];
            for (ai, a) in a_views.iter().enumerate() {
                for (bi, b) in b_views.iter().enumerate() {
                    let mut expected = vec![0f32; m * n];
                    gemm_reference(&mut expected, false, *a, *b);
                    let Some(got) = matmul(*a, *b) else { return assert!(!available()) };
                    assert_same_bits(&got, &expected, &format!("({m}, {k}, {n}) a{ai} b{bi}"));
                }
                let bias = values(n, 8);
                let expected = gemm_linear(*a, b_views[1], &bias);
                let got = linear(*a, b_views[1], &bias).expect("taken where matmul is");
                assert_same_bits(&got, &expected, &format!("linear ({m}, {k}, {n}) a{ai}"));
            }
        }
    }

    #[test]
    fn declines_what_gemm_runs_otherwise() {
        let (a, b) = (values(3 * 10, 1), values(10 * 4, 2));
        // 12 outputs: gemm's kernel for small products sums in another order.
        assert!(matmul(View::rows(&a, 3, 10), View::rows(&b, 10, 4)).is_none());
        // k = 2: gemm's outer-product kernel.
        let (a, b) = (values(40 * 2, 1), values(2 * 40, 2));
        assert!(matmul(View::rows(&a, 40, 2), View::rows(&b, 2, 40)).is_none());
    }

    #[test]
    fn no_inputs_gives_the_bias() {
        let Some(packed) = PackedF32::new(&[], 0, 3) else { return assert!(!available()) };
        assert_eq!(packed.linear(&[], 2, &[1.0, -2.0, 0.5], false), vec![1.0, -2.0, 0.5, 1.0, -2.0, 0.5]);
        assert!(packed.linear(&[], 0, &[1.0, -2.0, 0.5], false).is_empty());
    }
}
