//! Self-attention in inference on AVX-512: per sentence and head, the scores, their softmax and
//! the weighted sum of v for eight query rows at a time, in registers and a few lines of L1.
//!
//! Why: through gemm's general products (two calls per head and sentence, on sentences of
//! 10–40 tokens) and a softmax pass of its own, attention took 8 % of an f32 evaluation for
//! 1 % of its multiply-adds (docs/BENCHMARKS.md). Training keeps that path: its backward pass
//! reads the probabilities the forward pass saves, and its sums stay gemm's to the bit. Here
//! the sums run in another order, so values differ from that path by rounding only.

/// Whether `sentence` runs heads of width `d` on this CPU: AVX-512, and d = 16, 32 or 64 (one
/// to four vectors: e5-small has 32, BERT-base and XLM-R 64).
pub fn supports(d: usize) -> bool {
    crate::sgemm::available() && matches!(d, 16 | 32 | 64)
}

/// One sentence's context rows: `x` holds its `t` rows of q, k and v side by side (width
/// 3·h, `heads` heads of width h / heads each), `out` its t rows of width h. Each score is
/// q·k · `scale` before the softmax.
///
/// # Panics
/// Where `supports(h / heads)` is false or the slices do not fit t rows.
pub fn sentence(x: &[f32], t: usize, h: usize, heads: usize, scale: f32, out: &mut [f32]) {
    assert!(heads > 0 && h.is_multiple_of(heads), "attention::sentence: {h} columns in {heads} heads");
    let d = h / heads;
    assert!(supports(d), "attention::sentence: heads of width {d} are not supported here");
    assert!(x.len() >= t * 3 * h && out.len() >= t * h, "attention::sentence: {t} rows do not fit");
    if t == 0 {
        return;
    }
    // Keys per row of scores, rounded up to whole vectors.
    let padded = t.div_ceil(16) * 16;
    let block = rows_per_block(d);
    // kᵀ of one head, (d, padded), zeros past t; and a block's rows of scores.
    let mut keys = vec![0f32; d * padded];
    let mut scores = vec![0f32; block * padded];
    for head in 0..heads {
        let args = Head {
            x: x.as_ptr(),
            width: 3 * h,
            col: head * d,
            h,
            t,
            padded,
            scale,
            keys: keys.as_mut_ptr(),
            scores: scores.as_mut_ptr(),
            out: out.as_mut_ptr(),
        };
        // SAFETY (both blocks): `supports` checked AVX-512 and d; x holds t rows of 3·h values
        // (checked), out t rows of h, keys d · padded and scores block · padded values; the
        // offsets j · 3·h of a gather fit its 32-bit lanes (checked).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            assert!(t * 3 * h <= i32::MAX as usize, "attention::sentence: {t} rows too long to gather");
            avx512::transpose_keys(&args, d);
        }
        let mut i = 0;
        while i < t {
            let rows = block.min(t - i);
            #[cfg(target_arch = "x86_64")]
            unsafe {
                macro_rules! by_rows {
                    ($dv:literal: $($r:literal)*) => {
                        match rows {
                            $($r => avx512::rows::<$r, $dv>(&args, i),)*
                            _ => unreachable!("1 to {block} rows"),
                        }
                    };
                }
                match d {
                    16 => by_rows!(1: 1 2 3 4 5 6 7 8),
                    32 => by_rows!(2: 1 2 3 4 5 6 7 8),
                    _ => by_rows!(4: 1 2 3 4),
                }
            }
            i += rows;
        }
    }
}

/// Query rows per block: enough sums to fill the multiply-add pipes while each key's values
/// serve several rows, within 16 accumulators (8 rows × 2 vectors at d = 32, 4 × 4 at 64).
fn rows_per_block(d: usize) -> usize {
    if d > 32 {
        4
    } else {
        8
    }
}

/// One head of one sentence, as the kernel reads it.
struct Head {
    /// The sentence's packed q, k, v rows, `width` = 3·h apart; this head's q at `col`, its k
    /// at h + col, its v at 2·h + col.
    x: *const f32,
    width: usize,
    col: usize,
    h: usize,
    t: usize,
    /// t rounded up to a multiple of 16.
    padded: usize,
    scale: f32,
    /// kᵀ, (d, padded), zeros past t.
    keys: *mut f32,
    /// A block's rows of `padded` scores.
    scores: *mut f32,
    /// Context rows, h apart; this head's at `col`.
    out: *mut f32,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Head;
    use std::arch::x86_64::*;

    /// eˣ on 16 lanes, as `kernels::exp` computes it (x = n·ln2 + r, a degree-6 polynomial
    /// in r, 2ⁿ from the exponent bits); 0 below −87.3.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3)), _mm512_set1_ps(88.7));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            xc,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r =
            _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), xc));
        let mut p = _mm512_set1_ps(0.001_388_889);
        for c in [0.008_333_334, 0.041_666_668, 0.166_666_67, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let two_n = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
        let y = _mm512_mul_ps(p, _mm512_castsi512_ps(two_n));
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.3)), y)
    }

    /// Lanes below `left` of a 16-lane vector.
    #[inline]
    fn lanes(left: usize) -> __mmask16 {
        if left >= 16 {
            u16::MAX
        } else {
            (1u16 << left) - 1
        }
    }

    /// This head's kᵀ into `a.keys`: for each of its d columns, the t keys' values by 16-lane
    /// gathers (zeros past t).
    ///
    /// # Safety
    /// As `Head` describes; the offsets j · width for j < t fit in i32; the CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_keys(a: &Head, d: usize) {
        let k = a.x.add(a.h + a.col);
        let step = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(a.width as i32),
        );
        for chunk in (0..a.padded).step_by(16) {
            let m = lanes(a.t - chunk);
            let rows = k.add(chunk * a.width);
            for c in 0..d {
                let values = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m, step, rows.add(c));
                _mm512_storeu_ps(a.keys.add(c * a.padded + chunk), values);
            }
        }
    }

    /// Query rows i0..i0 + R of one head: scores against every key, softmax, and the context,
    /// DV vectors wide (d = 16·DV).
    ///
    /// # Safety
    /// As `Head` describes, with rows i0..i0 + R < t; the CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows<const R: usize, const DV: usize>(a: &Head, i0: usize) {
        let d = 16 * DV;
        let q = |r: usize| a.x.add((i0 + r) * a.width + a.col);
        // Scores, 16 keys at a time: R sums of d multiply-adds each.
        for chunk in (0..a.padded).step_by(16) {
            let mut acc = [_mm512_setzero_ps(); R];
            for c in 0..d {
                let k = _mm512_loadu_ps(a.keys.add(c * a.padded + chunk));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*q(r).add(c)), k, *acc);
                }
            }
            for (r, &acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(a.scores.add(r * a.padded + chunk), acc);
            }
        }
        // Softmax over the t real keys of each row, left unnormalised: the context is divided
        // by the row's sum instead (d divisions, not t).
        let scale = _mm512_set1_ps(a.scale);
        let mut inverse = [0f32; R];
        for (r, inverse) in inverse.iter_mut().enumerate() {
            let row = a.scores.add(r * a.padded);
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for chunk in (0..a.padded).step_by(16) {
                let m = lanes(a.t - chunk);
                max = _mm512_mask_max_ps(max, m, max, _mm512_loadu_ps(row.add(chunk)));
            }
            // scale > 0: the largest scaled score is the scaled largest.
            let shift = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(max)), scale);
            let mut sum = _mm512_setzero_ps();
            for chunk in (0..a.padded).step_by(16) {
                let m = lanes(a.t - chunk);
                let e = _mm512_maskz_mov_ps(m, exp16(_mm512_fmsub_ps(_mm512_loadu_ps(row.add(chunk)), scale, shift)));
                _mm512_storeu_ps(row.add(chunk), e);
                sum = _mm512_add_ps(sum, e);
            }
            *inverse = 1.0 / _mm512_reduce_add_ps(sum);
        }
        // Context: Σ_j p_j · v_j, R × DV sums.
        let mut acc = [[_mm512_setzero_ps(); DV]; R];
        for j in 0..a.t {
            let v = a.x.add(j * a.width + 2 * a.h + a.col);
            let mut vv = [_mm512_setzero_ps(); DV];
            for (k, vv) in vv.iter_mut().enumerate() {
                *vv = _mm512_loadu_ps(v.add(16 * k));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*a.scores.add(r * a.padded + j));
                for (acc, &vv) in acc.iter_mut().zip(&vv) {
                    *acc = _mm512_fmadd_ps(p, vv, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = a.out.add((i0 + r) * a.h + a.col);
            let inverse = _mm512_set1_ps(inverse[r]);
            for (k, &acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add(16 * k), _mm512_mul_ps(acc, inverse));
            }
        }
        debug_assert!(d <= a.h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention in f64, the plain way.
    fn reference(x: &[f32], t: usize, h: usize, heads: usize, scale: f32) -> Vec<f64> {
        let d = h / heads;
        let mut out = vec![0f64; t * h];
        for head in 0..heads {
            let col = head * d;
            for i in 0..t {
                let q = &x[i * 3 * h + col..][..d];
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        let k = &x[j * 3 * h + h + col..][..d];
                        q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for (j, e) in e.iter().enumerate() {
                    let v = &x[j * 3 * h + 2 * h + col..][..d];
                    for c in 0..d {
                        out[i * h + col + c] += e / total * v[c] as f64;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u64, spread: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * spread
            })
            .collect()
    }

    /// Every supported width, sentences of 1 to 70 tokens (partial last vectors of keys, partial
    /// last blocks of rows), and scores large enough that an unshifted softmax would overflow.
    #[test]
    fn matches_softmax_attention_in_f64() {
        for (h, heads) in [(64, 4), (384, 12), (128, 2)] {
            let d = h / heads;
            if !supports(d) {
                return assert!(!crate::sgemm::available());
            }
            for t in [1, 2, 5, 15, 16, 17, 33, 70] {
                for spread in [1.0, 12.0] {
                    let x = values(t * 3 * h, (t * h) as u64, spread);
                    let scale = 1.0 / (d as f32).sqrt();
                    let mut out = vec![f32::NAN; t * h];
                    sentence(&x, t, h, heads, scale, &mut out);
                    let expected = reference(&x, t, h, heads, scale);
                    for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
                        let err = (got as f64 - want).abs();
                        assert!(err <= 2e-5 * spread as f64, "h {h}, t {t}, spread {spread}, at {i}: {got} vs {want}");
                    }
                }
            }
        }
    }

    /// Scores far below zero (−2,880 and −3,200): the softmax is shifted by the row's largest
    /// real score (not by the zeros that pad its last vector), so nothing underflows.
    #[test]
    fn a_key_far_above_the_rest_takes_all_the_weight() {
        let (t, h, heads) = (20, 32, 1);
        if !supports(h) {
            return assert!(!crate::sgemm::available());
        }
        let mut x = vec![0f32; t * 3 * h];
        for j in 0..t {
            // q = 1 everywhere, k of key 7 = −90, the others −100; v = the key's index.
            x[j * 3 * h..][..h].fill(1.0);
            x[j * 3 * h + h..][..h].fill(if j == 7 { -90.0 } else { -100.0 });
            x[j * 3 * h + 2 * h..][..h].fill(j as f32);
        }
        let mut out = vec![0f32; t * h];
        sentence(&x, t, h, heads, 1.0, &mut out);
        assert!(out.iter().all(|&v| v == 7.0), "{:?}", &out[..h]);
    }
}
