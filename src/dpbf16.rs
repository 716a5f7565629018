//! bf16 products on AVX512-BF16 (`vdpbf16ps`): `--precision bf16` and `train --bf16` on CPUs
//! that multiply bf16 pairs but have no AMX (AMD Zen 4 and 5, Intel Cooper Lake).
//!
//! It reads the weights as `lowp::Bf16Weights` packs them for the tile unit: per 32-column
//! panel and 32-k chunk, two 1 KiB tiles of 16 k-pairs × 16 columns × 2 bf16. A tile row is
//! `vdpbf16ps`'s operand as it is — 16 columns' pair (k, k + 1), one 32-bit lane each — so one
//! packing serves both units, as int8's does for VNNI (`vnni.rs`).
//!
//! Where the CPU lacks the instruction, the same kernel runs with it emulated on AVX-512 F: two
//! fused multiply-adds per pair, the odd element first, as the instruction's definition orders
//! them (each product of two bf16 values is exact in f32, so each step rounds once, to nearest
//! even). The emulation gives the instruction's bits wherever no operand or sum is subnormal
//! (the instruction flushes those to zero); it is slower than f32 and runs only where asked
//! (`XNER_DPBF16=emulate`): it is how the path is tested on CPUs without the instruction.

/// Columns of one call: two panels of 32.
pub const COLUMNS: usize = 64;
/// bf16 values of one panel's chunk: two tiles of 16 × 32.
const CHUNK_VALUES: usize = 1024;

/// Whether bf16 products run here: natively, or emulated where `XNER_DPBF16=emulate` asks for
/// it on a CPU with AVX-512 F.
pub fn available() -> bool {
    native() || emulation_asked()
}

/// Whether this CPU has AVX-512 F and BF16. `XNER_NO_DPBF16=1` turns it off, so that the
/// portable path can be run on the same machine.
pub fn native() -> bool {
    static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NATIVE.get_or_init(|| detect() && std::env::var_os("XNER_NO_DPBF16").is_none())
}

fn emulation_asked() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| crate::sgemm::has_avx512() && std::env::var("XNER_DPBF16").is_ok_and(|v| v == "emulate"))
}

fn detect() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The f32 sums of rows 0..rows of bf16 activations against one panel (`pair` false: 32
/// columns) or two adjacent ones (64 columns), each column's sum started from `start`:
/// out[r · 64 + j] = start[j] + Σ_k a[r][k] · w[k][j], k in pairs, with the instruction
/// (`native`) or its emulation.
///
/// # Safety
/// The CPU has AVX-512 F, and BF16 where `native`; `a` holds `rows` rows of 32 · chunks bf16,
/// `a_stride` values apart; `panel` the packed panel (chunks × 1,024 values), followed by the
/// next one where `pair`; `start` 64 values (32 without `pair`); `out` is 64-byte aligned with
/// `rows` rows of 64 f32 (of which 32 are written without `pair`).
#[allow(clippy::too_many_arguments)]
pub unsafe fn sums(
    a: *const u16,
    a_stride: usize,
    rows: usize,
    panel: *const u16,
    pair: bool,
    chunks: usize,
    start: *const f32,
    out: *mut f32,
    native: bool,
) {
    let mut first = 0;
    while first < rows {
        // Groups of 6 rows (24 accumulators and 4 weight vectors take 28 of the 32 registers;
        // the emulation's 8 weight halves borrow from the row's broadcasts); 7 or 8 left split
        // in two groups of 4, not 6 + 1 or 6 + 2.
        let left = rows - first;
        let take = match left {
            7 | 8 => 4,
            l => l.min(6),
        };
        let block = Block { a: a.add(first * a_stride), a_stride, panel, chunks, start, out: out.add(first * COLUMNS) };
        #[cfg(target_arch = "x86_64")]
        {
            macro_rules! dispatch {
                ($($r:literal),*) => {
                    match (take, pair, native) {
                        $(
                            ($r, true, true) => avx512::native::<$r, 4>(&block),
                            ($r, false, true) => avx512::native::<$r, 2>(&block),
                            ($r, true, false) => avx512::emulated::<$r, 4>(&block),
                            ($r, false, false) => avx512::emulated::<$r, 2>(&block),
                        )*
                        _ => unreachable!("a group has 1 to 6 rows"),
                    }
                };
            }
            dispatch!(1, 2, 3, 4, 5, 6);
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("dpbf16 runs only where available() ({block:p})", block = block.a);
        first += take;
    }
}

/// Up to 6 rows against one or two panels, all chunks.
struct Block {
    a: *const u16,
    a_stride: usize,
    panel: *const u16,
    chunks: usize,
    start: *const f32,
    out: *mut f32,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Block, CHUNK_VALUES, COLUMNS};
    use std::arch::x86_64::*;

    /// R rows × 16·V columns: per k-pair, V weight vectors (one tile row each) and R broadcast
    /// pairs of A, R·V pair products into accumulators that stay in registers. One body for
    /// both kernels, so that they differ only in how a weight vector is held (`$hold`, from
    /// the tile row `$row`) and in the product of a pair (`$dot`). No closures: they would not
    /// share the function's target features.
    macro_rules! kernel {
        (
            $(#[$attr:meta])* $name:ident,
            hold($row:ident) = $hold:expr, empty = $empty:expr,
            dot($acc:ident, $pair:ident, $held:ident) = $dot:expr
        ) => {
            $(#[$attr])*
            pub(super) unsafe fn $name<const R: usize, const V: usize>(b: &Block) {
                let mut acc = [[_mm512_setzero_ps(); V]; R];
                for row in acc.iter_mut() {
                    for (v, sums) in row.iter_mut().enumerate() {
                        *sums = _mm512_loadu_ps(b.start.add(16 * v));
                    }
                }
                // Vector v's tile: the first or second (v % 2) of panel v / 2.
                let panel_values = b.chunks * CHUNK_VALUES;
                let mut tiles = [b.panel; V];
                for (v, tile) in tiles.iter_mut().enumerate() {
                    *tile = b.panel.add((v / 2) * panel_values + (v % 2) * 512);
                }
                for c in 0..b.chunks {
                    for q in 0..16 {
                        let mut held = [$empty; V];
                        for (v, h) in held.iter_mut().enumerate() {
                            let $row = _mm512_load_si512(tiles[v].add(c * CHUNK_VALUES + 32 * q) as *const __m512i);
                            *h = $hold;
                        }
                        let k = 32 * c + 2 * q;
                        for (r, row) in acc.iter_mut().enumerate() {
                            let $pair = (b.a.add(r * b.a_stride + k) as *const u32).read_unaligned();
                            for ($acc, $held) in row.iter_mut().zip(&held) {
                                *$acc = $dot;
                            }
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    for (v, &sums) in row.iter().enumerate() {
                        _mm512_store_ps(b.out.add(r * COLUMNS + 16 * v), sums);
                    }
                }
            }
        };
    }

    kernel!(
        #[target_feature(enable = "avx512f,avx512bf16")]
        native,
        hold(row) = std::mem::transmute::<__m512i, __m512bh>(row),
        empty = std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()),
        dot(acc, pair, w) = {
            let a = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair as i32));
            _mm512_dpbf16_ps(*acc, a, *w)
        }
    );

    kernel!(
        /// `vdpbf16ps` on AVX-512 F: lane j += odd(a)·odd(w_j), then += even(a)·even(w_j), each a
        /// fused multiply-add (a bf16 value is the high half of its f32). The weight row is
        /// split once for all R rows.
        #[target_feature(enable = "avx512f")]
        emulated,
        hold(row) = (
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(row)),
            _mm512_castsi512_ps(_mm512_and_si512(row, _mm512_set1_epi32(0xffff_0000u32 as i32))),
        ),
        empty = (_mm512_setzero_ps(), _mm512_setzero_ps()),
        dot(acc, pair, w) = {
            let odd = _mm512_set1_ps(f32::from_bits(pair & 0xffff_0000));
            let even = _mm512_set1_ps(f32::from_bits(pair << 16));
            _mm512_fmadd_ps(even, w.0, _mm512_fmadd_ps(odd, w.1, *acc))
        }
    );
}
