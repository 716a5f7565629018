//! The f32 product of inference's linear layers, y = act(x·W + b), with W packed once per model
//! (AVX-512).
//!
//! This is gemm's own blocking (the `gemm` crate, which every other f32 product here runs on)
//! re-done around a weight that is already packed: tiles of 64 output features × 6 tokens,
//! k-blocks of at most 512, each tile's k-block summed in order from zero and added to what the
//! tile held, the first block onto the bias. So the sums are the same, in the same order, and
//! the values are gemm's to the bit on this CPU. What changes is the work around them: gemm
//! packed W on every call (9 % of an f32 evaluation), the bias was copied into every output row
//! before the product (5 %) and GELU was a pass of its own over a product that had left the
//! cache (4 %). Here W is packed when the model's inference weights are made, the bias is the
//! first block's start value, and GELU runs on each finished tile while it is in L1.

use rayon::prelude::*;

use crate::kernels::gelu_in_place;
use crate::lowp::Lines;

/// Output features per panel: four 16-lane vectors.
const PANEL: usize = 64;
/// 16-lane vectors per panel row.
const VECS: usize = PANEL / 16;
/// Tokens per tile: 6 × 4 accumulators and 4 weight vectors take 28 of the 32 vector registers.
const ROWS: usize = 6;
/// The longest k-block, as gemm blocks k for f32 on this CPU (its floor, 512, since a block
/// of W then fills about half of L2).
const MAX_KC: usize = 512;
/// Panels swept per k-block before moving to the next tokens: 512 features × 512 k is 1 MB,
/// within a core's L2, while the tokens' rows stay in L1.
const BLOCK_PANELS: usize = 8;

/// Whether this CPU runs the packed product (AVX-512 F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A linear layer's weight (ins, outs), packed in panels of 64 output features: panel p holds,
/// for each k, W[k][64p .. 64p + 64] on one 256-byte run of whole cache lines (zeros past outs).
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
        let mut panels = Lines::zeroed(outs.div_ceil(PANEL) * ins * PANEL);
        if ins > 0 {
            panels.par_chunks_mut(ins * PANEL).enumerate().for_each(|(p, panel)| {
                let first = p * PANEL;
                let width = PANEL.min(outs - first);
                for (k, run) in panel.chunks_exact_mut(PANEL).enumerate() {
                    run[..width].copy_from_slice(&wt[k * outs + first..][..width]);
                }
            });
        }
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
        let n = rows * outs;
        let mut y = Vec::with_capacity(n);
        if n == 0 {
            return y;
        }
        let out = Out(y.spare_capacity_mut().as_mut_ptr() as *mut f32);
        if ins == 0 {
            // No sums: every row is the bias.
            // SAFETY: rows · outs elements of capacity, written here once each.
            let y_rows = unsafe { std::slice::from_raw_parts_mut(out.0, n) };
            y_rows.chunks_exact_mut(outs).for_each(|row| row.copy_from_slice(bias));
        } else {
            let panels = outs.div_ceil(PANEL);
            self.jobs(rows, panels).into_par_iter().for_each(|job| {
                // SAFETY: the jobs' (rows × panels) rectangles are disjoint and cover y; each
                // writes its own rectangle's elements (k-block 0 writes all of them first).
                unsafe { self.run(job, x, bias, gelu, &out) }
            });
        }
        // SAFETY: the jobs (or the bias copy) wrote all rows · outs elements.
        unsafe { y.set_len(n) };
        y
    }

    /// The output cut into one rectangle per thread: by panels first (each core then reads only
    /// its share of W), by rows where there are more threads than panels.
    fn jobs(&self, rows: usize, panels: usize) -> Vec<Job> {
        let threads = rayon::current_num_threads().max(1);
        let by_panels = panels.min(threads);
        let by_rows = threads.div_ceil(by_panels).min(rows.div_ceil(ROWS)).max(1);
        let mut jobs = Vec::with_capacity(by_panels * by_rows);
        for p in 0..by_panels {
            for r in 0..by_rows {
                let row_groups = rows.div_ceil(ROWS);
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

    /// One job's rectangle of y, k-block by k-block as gemm orders the sums.
    ///
    /// # Safety
    /// `out` points at rows · outs writable f32; no other job writes this job's rectangle.
    unsafe fn run(&self, job: Job, x: &[f32], bias: &[f32], gelu: bool, out: &Out) {
        let (ins, outs) = (self.ins, self.outs);
        let blocks = ins.div_ceil(MAX_KC);
        let kc_full = ins.div_ceil(blocks);
        let mut k0 = 0;
        while k0 < ins {
            let kc = kc_full.min(ins - k0);
            let (first, last) = (k0 == 0, k0 + kc == ins);
            let mut p0 = job.panels.start;
            while p0 < job.panels.end {
                let p1 = (p0 + BLOCK_PANELS).min(job.panels.end);
                let mut row = job.rows.start;
                while row < job.rows.end {
                    let r = ROWS.min(job.rows.end - row);
                    for p in p0..p1 {
                        let col = p * PANEL;
                        let cols = PANEL.min(outs - col);
                        let tile = Tile {
                            x: x.as_ptr().add(row * ins + k0),
                            ldx: ins,
                            w: self.panels.as_ptr().add(p * ins * PANEL + k0 * PANEL),
                            kc,
                            y: out.0.add(row * outs + col),
                            ldy: outs,
                            cols,
                            bias: if first { Some(bias.as_ptr().add(col)) } else { None },
                        };
                        tile.run(r);
                        if gelu && last {
                            for i in 0..r {
                                gelu_in_place(std::slice::from_raw_parts_mut(tile.y.add(i * outs), cols));
                            }
                        }
                    }
                    row += r;
                }
                p0 = p1;
            }
            k0 += kc;
        }
    }
}

/// A job's rectangle: rows of y, and panels of 64 of its columns.
struct Job {
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
}

/// y's memory, written by the jobs in disjoint rectangles.
struct Out(*mut f32);
// SAFETY: the jobs write disjoint elements through it (see `PackedF32::linear`).
unsafe impl Sync for Out {}

/// One tile: up to 6 rows of x against one panel, over one k-block.
struct Tile {
    /// x[row][k0]; rows `ldx` apart.
    x: *const f32,
    ldx: usize,
    /// The panel's run for k0; runs of 64, one per k.
    w: *const f32,
    kc: usize,
    /// y[row][col]; rows `ldy` apart, `cols` (≤ 64) of them written.
    y: *mut f32,
    ldy: usize,
    cols: usize,
    /// The first k-block starts from the bias; later ones from what y holds.
    bias: Option<*const f32>,
}

impl Tile {
    /// # Safety
    /// The pointers cover `rows` (≤ 6) rows of kc values of x, kc runs of the panel, `rows`
    /// rows of `cols` values of y (and of bias), and the CPU has AVX-512 F.
    unsafe fn run(&self, rows: usize) {
        #[cfg(target_arch = "x86_64")]
        match rows {
            12 => avx512::tile::<12>(self),
            11 => avx512::tile::<11>(self),
            10 => avx512::tile::<10>(self),
            9 => avx512::tile::<9>(self),
            8 => avx512::tile::<8>(self),
            7 => avx512::tile::<7>(self),
            6 => avx512::tile::<6>(self),
            5 => avx512::tile::<5>(self),
            4 => avx512::tile::<4>(self),
            3 => avx512::tile::<3>(self),
            2 => avx512::tile::<2>(self),
            1 => avx512::tile::<1>(self),
            _ => unreachable!("a tile has 1 to 6 rows"),
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("PackedF32 is made only where AVX-512 is available ({rows} rows)")
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, PANEL, VECS};
    use std::arch::x86_64::*;

    /// R rows × 64 columns: per k, four weight vectors and R broadcast x values, 4R fused
    /// multiply-adds into accumulators that stay in registers; then y = start + sums, with
    /// the columns past `cols` masked off.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const R: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); VECS]; R];
        let mut xr = [t.x; R];
        for (r, xr) in xr.iter_mut().enumerate() {
            *xr = t.x.add(r * t.ldx);
        }
        // Four k-steps per iteration: the loop's own instructions would otherwise compete
        // with the multiply-adds for their two ports.
        let step = |k: usize, acc: &mut [[__m512; VECS]; R]| {
            let w = t.w.add(k * PANEL);
            let mut wv = [_mm512_setzero_ps(); VECS];
            for (v, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_load_ps(w.add(16 * v));
            }
            for (acc, xr) in acc.iter_mut().zip(&xr) {
                let a = _mm512_set1_ps(*xr.add(k));
                for v in 0..VECS {
                    acc[v] = _mm512_fmadd_ps(wv[v], a, acc[v]);
                }
            }
        };
        let mut k = 0;
        while k + 4 <= t.kc {
            step(k, &mut acc);
            step(k + 1, &mut acc);
            step(k + 2, &mut acc);
            step(k + 3, &mut acc);
            k += 4;
        }
        while k < t.kc {
            step(k, &mut acc);
            k += 1;
        }
        for (r, acc) in acc.iter().enumerate() {
            let y = t.y.add(r * t.ldy);
            for (v, &sums) in acc.iter().enumerate() {
                let col = 16 * v;
                if col >= t.cols {
                    break;
                }
                let mask: __mmask16 = if t.cols - col >= 16 { u16::MAX } else { (1u16 << (t.cols - col)) - 1 };
                let start = match t.bias {
                    Some(b) => _mm512_maskz_loadu_ps(mask, b.add(col)),
                    None => _mm512_maskz_loadu_ps(mask, y.add(col)),
                };
                _mm512_mask_storeu_ps(y.add(col), mask, _mm512_add_ps(start, sums));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::linear_rows;

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
    /// multiple of 6, columns not a multiple of 64. The sums are gemm's, in gemm's order; where
    /// k fits one block (≤ 512) that order is fixed on every CPU and the values must be
    /// identical to the bit, and within rounding where gemm's block size depends on the caches.
    #[test]
    fn product_equals_gemm_with_bias_and_gelu() {
        for &(rows, ins, outs) in
            &[(1, 1, 1), (7, 33, 70), (13, 384, 384), (50, 384, 1152), (23, 1536, 384), (6, 700, 100)]
        {
            let x = values(rows * ins, 2);
            let wt = values(ins * outs, 3);
            let bias = values(outs, 4);
            let Some(packed) = PackedF32::new(&wt, ins, outs) else { return assert!(!available()) };
            for gelu in [false, true] {
                let mut expected = linear_rows(&x, &wt, &bias, rows, ins, outs);
                if gelu {
                    gelu_in_place(&mut expected);
                }
                let got = packed.linear(&x, rows, &bias, gelu);
                assert_eq!(got.len(), expected.len());
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    if ins <= MAX_KC && rows > 1 {
                        assert_eq!(g.to_bits(), e.to_bits(), "({rows}, {ins}, {outs}) gelu {gelu} at {i}: {g} vs {e}");
                    } else {
                        assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "({rows}, {ins}, {outs}) at {i}: {g} vs {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn no_inputs_gives_the_bias() {
        let Some(packed) = PackedF32::new(&[], 0, 3) else { return assert!(!available()) };
        assert_eq!(packed.linear(&[], 2, &[1.0, -2.0, 0.5], false), vec![1.0, -2.0, 0.5, 1.0, -2.0, 0.5]);
        assert!(packed.linear(&[], 0, &[1.0, -2.0, 0.5], false).is_empty());
    }
}
