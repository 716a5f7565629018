//! int8 products on AVX-512 VNNI (`vpdpbusd`): `--precision int8` on CPUs without AMX (Ice
//! Lake and Cascade Lake servers, AMD Zen 4 and 5, virtual machines that hide the tile unit).
//!
//! It reads the weights as `lowp::Int8Weights` packs them for the tile unit: per 32-column
//! panel and 64-k chunk, two 1 KiB tiles of 16 k-quads × 16 columns × 4 bytes. A tile row is
//! `vpdpbusd`'s operand as it is — 16 columns' four consecutive k values, one 32-bit lane
//! each — so one packing serves both units. Sums of u8 × i8 products are exact in i32, in any
//! order: they equal the tile unit's and the portable code's to the bit.

/// Rows of one VNNI block: the tile unit's 32-row block (`amx::BLOCK`), so that both units
/// fill the same scratch.
pub const MAX_ROWS: usize = 32;
/// Columns of one call: two panels of 32.
pub const COLUMNS: usize = 64;
/// Bytes of one panel's chunk: two 1 KiB tiles.
const CHUNK_BYTES: usize = 2048;

/// Whether this CPU has AVX-512 F and VNNI. `XNER_NO_VNNI=1` turns it off, so that the
/// portable code can be run on the same machine.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| detect() && std::env::var_os("XNER_NO_VNNI").is_none())
}

fn detect() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The i32 sums of rows 0..rows of quantized activations against one panel (`pair` false: 32
/// columns) or two adjacent ones (64 columns): out[r · 64 + j] = Σ_k a[r][k] · w[k][j].
///
/// # Safety
/// `available()`; `a` holds `rows` (≤ 32) rows of 64 · chunks bytes, `a_stride` bytes apart;
/// `panel` the packed panel (chunks × 2 KiB), followed by the next one where `pair`; `out` is
/// 64-byte aligned with `rows` rows of 64 i32 (of which 32 are written without `pair`).
pub unsafe fn sums(
    a: *const u8,
    a_stride: usize,
    rows: usize,
    panel: *const i8,
    pair: bool,
    chunks: usize,
    out: *mut i32,
) {
    assert!(rows <= MAX_ROWS, "vnni::sums: {rows} rows");
    let out_stride = COLUMNS;
    let mut first = 0;
    while first < rows {
        // Groups of 6 rows (24 accumulators and 4 weight vectors take 28 of the 32 registers);
        // 7 or 8 left split in two groups of 4, not 6 + 1 or 6 + 2.
        let left = rows - first;
        let take = match left {
            7 | 8 => 4,
            l => l.min(6),
        };
        let block =
            Block { a: a.add(first * a_stride), a_stride, panel, chunks, out: out.add(first * out_stride), out_stride };
        #[cfg(target_arch = "x86_64")]
        match (take, pair) {
            (6, true) => avx512::rows::<6, 4>(&block),
            (5, true) => avx512::rows::<5, 4>(&block),
            (4, true) => avx512::rows::<4, 4>(&block),
            (3, true) => avx512::rows::<3, 4>(&block),
            (2, true) => avx512::rows::<2, 4>(&block),
            (1, true) => avx512::rows::<1, 4>(&block),
            (6, false) => avx512::rows::<6, 2>(&block),
            (5, false) => avx512::rows::<5, 2>(&block),
            (4, false) => avx512::rows::<4, 2>(&block),
            (3, false) => avx512::rows::<3, 2>(&block),
            (2, false) => avx512::rows::<2, 2>(&block),
            (1, false) => avx512::rows::<1, 2>(&block),
            _ => unreachable!("a group has 1 to 6 rows"),
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("vnni runs only where available() ({block:p})", block = block.a);
        first += take;
    }
}

/// Up to 6 rows against one or two panels, all chunks.
struct Block {
    a: *const u8,
    a_stride: usize,
    panel: *const i8,
    chunks: usize,
    out: *mut i32,
    out_stride: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Block, CHUNK_BYTES};
    use std::arch::x86_64::*;

    /// R rows × 16·V columns: per k-quad, V weight vectors (one tile row each) and R broadcast
    /// quads of A, R·V `vpdpbusd` into accumulators that stay in registers.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn rows<const R: usize, const V: usize>(b: &Block) {
        let mut acc = [[_mm512_setzero_si512(); V]; R];
        // Vector v's tile: the panel's first or second (v % 2) of the panel v / 2.
        let panel_bytes = b.chunks * CHUNK_BYTES;
        let mut tiles = [b.panel; V];
        for (v, tile) in tiles.iter_mut().enumerate() {
            *tile = b.panel.add((v / 2) * panel_bytes + (v % 2) * 1024);
        }
        for c in 0..b.chunks {
            for q in 0..16 {
                let mut w = [_mm512_setzero_si512(); V];
                for (v, w) in w.iter_mut().enumerate() {
                    *w = _mm512_load_si512(tiles[v].add(c * CHUNK_BYTES + 64 * q) as *const __m512i);
                }
                let k = 64 * c + 4 * q;
                for (r, acc) in acc.iter_mut().enumerate() {
                    let quad = (b.a.add(r * b.a_stride + k) as *const i32).read_unaligned();
                    let a = _mm512_set1_epi32(quad);
                    for v in 0..V {
                        acc[v] = _mm512_dpbusd_epi32(acc[v], a, w[v]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &sums) in acc.iter().enumerate() {
                _mm512_store_si512(b.out.add(r * b.out_stride + 16 * v) as *mut __m512i, sums);
            }
        }
    }
}
