//! Low-precision inference for the encoder's linear layers: `--precision bf16|int8`.
//!
//! - **bf16**: weights stored in bfloat16, activations rounded to bfloat16 as they enter the
//!   product, sums in f32 (AMX `tdpbf16ps`); bias, GELU, LayerNorm, softmax in f32.
//! - **int8**: dynamic quantization as ONNX Runtime's `quantize_dynamic` does it, finer:
//!   weights symmetric int8 per output column, activations asymmetric uint8 per token
//!   (scale and zero point from each row's range), sums exact in i32 (AMX `tdpbusd`).
//!
//! Weights are packed once per model into the tile layout `amx` reads. Without AMX (or with
//! `XNER_NO_AMX=1`) the same numbers come from other code (`Engine`): int8 on AVX-512 VNNI
//! from the same packed weights (`vnni`), else on AVX2 or plain loops over i16 k-pairs
//! (`portable_sums`; all exact, so equal to the tile unit's to the bit); bf16 through the f32
//! GEMM on the rounded operands (products of bf16 values are exact in f32, so only the order of
//! the sums differs), on rounded weights packed once per model where the CPU has AVX-512.
//!
//! Embeddings, the attention products and the classifier stay in f32.

use rayon::prelude::*;

use crate::amx::{self, Start, Tiles, BLOCK, TILE_BYTES};
use crate::kernels::{gelu_cdf, gelu_in_place, multiversion, View};
use crate::{dpbf16, vnni};
use std::mem::MaybeUninit;

/// The number format of the encoder's linear layers at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (what training computes)
    #[default]
    F32,
    /// bf16 weights and products, f32 sums
    Bf16,
    /// dynamic quantization: int8 weights per output column, uint8 activations per token, i32 sums
    Int8,
}

impl Precision {
    pub const NAMES: [&'static str; 3] = ["f32", "bf16", "int8"];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// How the products run on this machine, for logs and benchmarks.
    pub fn engine(self) -> &'static str {
        match (self, Engine::for_precision(self)) {
            (Precision::F32, _) => "f32 GEMM",
            (_, Engine::Tiles) => "AMX tiles",
            (_, Engine::Vnni) => "AVX-512 VNNI",
            (_, Engine::Dpbf16) if dpbf16::native() => "AVX512-BF16 (vdpbf16ps)",
            (_, Engine::Dpbf16) => "vdpbf16ps emulated on AVX-512 F",
            (Precision::Bf16, Engine::Portable) => "f32 GEMM on bf16-rounded operands",
            (Precision::Int8, Engine::Portable) if has_avx2() => "AVX2 (vpmaddwd)",
            (Precision::Int8, Engine::Portable) => "portable loops",
        }
    }

    /// What a user should know before choosing this precision on this CPU: None where its
    /// products run on hardware made for them.
    pub fn caveat(self) -> Option<&'static str> {
        match (self, Engine::for_precision(self)) {
            (Precision::Bf16, Engine::Portable) => Some(
                "this CPU has neither AMX nor AVX512-BF16: bf16 products run in f32 on bf16-rounded \
                 operands, no faster than f32 (int8 has its own kernels here)",
            ),
            (Precision::Bf16, Engine::Dpbf16) if !dpbf16::native() => Some(
                "XNER_DPBF16=emulate: vdpbf16ps is emulated on AVX-512 F, slower than f32 (it is \
                 there to test that path on CPUs without the instruction)",
            ),
            _ => None,
        }
    }
}

/// Which code runs a low-precision product. All give the same int8 values to the bit; bf16's
/// differ only in the order and rounding of f32 sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// AMX's tile unit (`tdpbf16ps`, `tdpbusd`).
    Tiles,
    /// AVX-512 VNNI's `vpdpbusd` (int8 only).
    Vnni,
    /// AVX512-BF16's `vdpbf16ps` (bf16 only), or its emulation where `XNER_DPBF16=emulate`.
    Dpbf16,
    /// Without the above: bf16 through the f32 GEMM on rounded operands, int8 on AVX2 k-pairs
    /// (or plain loops).
    Portable,
}

impl Engine {
    /// The fastest this CPU has for `precision`.
    pub fn for_precision(precision: Precision) -> Engine {
        if amx::available() {
            Engine::Tiles
        } else if precision == Precision::Int8 && vnni::available() {
            Engine::Vnni
        } else if precision == Precision::Bf16 && dpbf16::available() {
            Engine::Dpbf16
        } else {
            Engine::Portable
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!("unknown precision {s:?} (expected one of {})", Precision::NAMES.join(", "))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A linear layer's weight (ins, outs) packed for a low-precision product.
pub enum Packed {
    Bf16(Bf16Weights),
    Int8(Int8Weights),
}

impl Packed {
    /// Packs `w`, row-major (ins, outs) — the transpose of torch's (outs, ins).
    pub fn new(precision: Precision, w: &[f32], ins: usize, outs: usize) -> Option<Packed> {
        match precision {
            Precision::F32 => None,
            Precision::Bf16 => {
                let mut packed = Bf16Weights::new(w, ins, outs);
                if Engine::for_precision(precision) == Engine::Portable {
                    packed.pack_rounded_f32();
                }
                Some(Packed::Bf16(packed))
            }
            Precision::Int8 => {
                let mut packed = Int8Weights::new(w, ins, outs);
                if Engine::for_precision(precision) == Engine::Portable {
                    packed.keep_pairs();
                }
                Some(Packed::Int8(packed))
            }
        }
    }

    pub fn ins(&self) -> usize {
        match self {
            Packed::Bf16(w) => w.ins,
            Packed::Int8(w) => w.ins,
        }
    }

    pub fn outs(&self) -> usize {
        match self {
            Packed::Bf16(w) => w.outs,
            Packed::Int8(w) => w.outs,
        }
    }

    /// Bytes the packed weight holds.
    pub fn bytes(&self) -> usize {
        match self {
            Packed::Bf16(w) => 2 * w.data.len() + w.rounded_f32.as_ref().map_or(0, |p| p.bytes()),
            Packed::Int8(w) => w.data.len() + 8 * w.outs + 2 * w.pairs.as_ref().map_or(0, Vec::len),
        }
    }

    /// y = act(x·W + b) for x (rows, ins), y (rows, outs); act GELU with `gelu`, applied to
    /// each block of rows while it is in cache.
    pub fn linear(&self, x: &[f32], rows: usize, bias: &[f32], gelu: bool) -> Vec<f32> {
        match self {
            Packed::Bf16(w) => w.linear(x, rows, bias, Engine::for_precision(Precision::Bf16), gelu),
            Packed::Int8(w) => w.linear(x, rows, bias, Engine::for_precision(Precision::Int8), gelu),
        }
    }
}

/// Rounds to nearest even, as torch's `.to(torch.bfloat16)` does; NaN stays NaN. Branch-free,
/// so that the loops over it vectorise.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let quiet_nan = (b >> 16) | 0x40;
    (if b & 0x7fff_ffff > 0x7f80_0000 { quiet_nan } else { rounded }) as u16
}

multiversion! {
    /// `dst[i] = bf16_bits(src[i])`.
    fn to_bf16(src: &[f32], dst: &mut [u16]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = bf16_bits(v);
        }
    }
}

#[inline(always)]
fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Values on whole 64-byte cache lines. Every buffer the tile unit loads from or stores to is
/// one: a 64-byte tile row that straddles two lines costs two loads, and with the allocator's
/// 16-byte alignment most did (the bf16 products ran 20–25 % slower).
pub(crate) struct Lines<T> {
    lines: Vec<Line>,
    len: usize,
    _values: std::marker::PhantomData<T>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Plain numbers: every bit pattern, all zeros included, is a value, and alignment ≤ 64.
///
/// # Safety
/// Only for types of which that holds.
pub(crate) unsafe trait Plain: Copy {}
// SAFETY: integers of one and two bytes; f32 below.
unsafe impl Plain for u8 {}
unsafe impl Plain for i8 {}
unsafe impl Plain for u16 {}
// SAFETY: every bit pattern of four bytes is an f32 (NaNs included).
unsafe impl Plain for f32 {}

impl<T: Plain> Lines<T> {
    pub(crate) const fn new() -> Self {
        Lines { lines: Vec::new(), len: 0, _values: std::marker::PhantomData }
    }

    pub(crate) fn zeroed(len: usize) -> Self {
        let mut lines = Lines::new();
        lines.resize(len);
        lines
    }

    /// `len` values; the ones beyond the old length are zeros or earlier contents.
    pub(crate) fn resize(&mut self, len: usize) {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).expect("buffer size overflows");
        let needed = bytes.div_ceil(64);
        if needed > self.lines.len() {
            self.lines.resize(needed, Line([0; 64]));
        }
        self.len = len;
    }
}

impl<T: Plain> Default for Lines<T> {
    fn default() -> Self {
        Lines::new()
    }
}

impl<T: Plain> std::ops::Deref for Lines<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least len · size_of::<T>() initialised bytes, aligned to
        // 64 ≥ align_of::<T>(), and any bytes are a valid T (`Plain`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for Lines<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }
}

/// A 32 × 32 block of sums on whole cache lines, for the tiles to store into.
#[repr(C, align(64))]
struct SumsBlock<T>([T; BLOCK * BLOCK]);

/// A 32 × 64 block of bf16 products' sums (two panels), for `dpbf16::sums` to store into.
#[repr(C, align(64))]
struct PairF32([f32; BLOCK * dpbf16::COLUMNS]);

/// A 32 × 64 block of int8 sums (two panels), for `vnni::sums` to store into.
#[repr(C, align(64))]
struct PairSums([i32; BLOCK * vnni::COLUMNS]);

/// A new (rows × outs) output, made in tasks of whole 32-row blocks, each handed to
/// `block(first_row, rows, y)`, which must write every element of its rows: the output is not
/// zeroed first (zeroing it was 3 % of an int8 evaluation).
fn collect_row_blocks(
    rows: usize,
    outs: usize,
    block: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut y = Vec::with_capacity(rows * outs);
    if outs > 0 {
        let blocks = y.spare_capacity_mut()[..rows * outs].par_chunks_mut(BLOCK * outs);
        blocks.enumerate().for_each(|(i, y)| block(i * BLOCK, y.len() / outs, y));
    }
    // SAFETY: the capacity holds rows · outs elements, every one of them written by `block`.
    unsafe { y.set_len(rows * outs) };
    y
}

// ---- bf16 ------------------------------------------------------------------------------------

thread_local! {
    /// A thread's block of activations in bf16 (or uint8), kept between calls: zeroing a fresh
    /// one for each 32-row block cost more than the conversion.
    static BF16_ROWS: std::cell::Cell<Lines<u16>> = const { std::cell::Cell::new(Lines::new()) };
    static U8_ROWS: std::cell::Cell<Lines<u8>> = const { std::cell::Cell::new(Lines::new()) };
    /// A thread's last B packed for `matmul_bf16`.
    static PACKED_B: std::cell::Cell<Lines<u16>> = const { std::cell::Cell::new(Lines::new()) };
    /// A thread's last transposed A converted whole for `matmul_bf16`.
    static A_ROWS: std::cell::Cell<Lines<u16>> = const { std::cell::Cell::new(Lines::new()) };
}

/// The thread's scratch buffer, `len` long (contents unspecified: the caller writes all of it).
pub(crate) fn take_scratch<T: Plain + 'static>(
    key: &'static std::thread::LocalKey<std::cell::Cell<Lines<T>>>,
    len: usize,
) -> Lines<T> {
    let mut v = key.take();
    v.resize(len);
    v
}

pub(crate) fn put_scratch<T: 'static>(key: &'static std::thread::LocalKey<std::cell::Cell<Lines<T>>>, v: Lines<T>) {
    key.set(v);
}

multiversion! {
    /// y = act(row_scale·w_scale·(Σ q_x·q_w − zero_point·Σ q_w) + b), act GELU with `gelu`: an
    /// int8 product's sums back to f32 for a block of rows (their zero points and scales; row
    /// r's sums at `sums[r · sums_stride..]`, its output at `y[r · y_stride..]`) and a run of
    /// columns (their column sums, scales and biases). One call a 32 × 32 block: a call per
    /// row cost as much as the arithmetic.
    fn dequantize(
        y: &mut [MaybeUninit<f32>],
        y_stride: usize,
        sums: &[i32],
        sums_stride: usize,
        rows: (&[i32], &[f32]),
        columns: (&[i32], &[f32], &[f32]),
        gelu: bool,
    ) {
        let ((zero_point, row_scale), (column_sums, scales, bias)) = (rows, columns);
        let width = column_sums.len();
        for (r, (&zp, &rs)) in zero_point.iter().zip(row_scale).enumerate() {
            let y = &mut y[r * y_stride..r * y_stride + width];
            let sums = &sums[r * sums_stride..r * sums_stride + width];
            let cols = column_sums.iter().zip(scales).zip(bias);
            for ((d, &acc), ((&cs, &ws), &b)) in y.iter_mut().zip(sums).zip(cols) {
                d.write(dequantized(acc, (zp, rs), (cs, ws, b), gelu));
            }
        }
    }
}

/// One sum of an int8 product back to f32, act(row_scale · w_scale · (Σ q_x·q_w −
/// zero_point · Σ q_w) + b): one function for `dequantize` and `dequantize_in_place`, so that a
/// row's values do not depend on which of the two made them.
#[inline(always)]
fn dequantized(
    acc: i32,
    (zero_point, row_scale): (i32, f32),
    (column_sum, scale, bias): (i32, f32, f32),
    gelu: bool,
) -> f32 {
    let v = (acc - zero_point * column_sum) as f32 * (row_scale * scale) + bias;
    if gelu {
        v * gelu_cdf(v)
    } else {
        v
    }
}

/// `dequantize` in place: y's rows (`stride` apart) hold, in their first `columns.0.len()`
/// elements, the i32 sums of the tiles, which become their f32 outputs.
///
/// # Safety
/// Those elements must have been written (with i32 sums).
unsafe fn dequantize_in_place(
    y: &mut [MaybeUninit<f32>],
    stride: usize,
    rows: (&[i32], &[f32]),
    columns: (&[i32], &[f32], &[f32]),
    gelu: bool,
) {
    multiversion! {
        fn pass(y: &mut [MaybeUninit<f32>], stride: usize, rows: (&[i32], &[f32]), columns: (&[i32], &[f32], &[f32]), gelu: bool) {
            let ((zero_point, row_scale), (column_sums, scales, bias)) = (rows, columns);
            for (r, (&zp, &rs)) in zero_point.iter().zip(row_scale).enumerate() {
                let y = &mut y[r * stride..r * stride + column_sums.len()];
                let cols = column_sums.iter().zip(scales).zip(bias);
                for (d, ((&cs, &ws), &b)) in y.iter_mut().zip(cols) {
                    // SAFETY (the caller's): the element holds an i32 sum, of the same size.
                    let acc = unsafe { d.assume_init() }.to_bits() as i32;
                    d.write(dequantized(acc, (zp, rs), (cs, ws, b), gelu));
                }
            }
        }
    }
    pass(y, stride, rows, columns, gelu)
}

multiversion! {
    /// y's rows r < n, columns 0..width (rows `y_stride` apart) = act(a block's sums, rows
    /// `sums_stride` apart), act GELU with `gelu`.
    fn block_rows(sums: &[f32], sums_stride: usize, n: usize, width: usize, y: &mut [MaybeUninit<f32>], y_stride: usize, gelu: bool) {
        for (r, sums) in sums.chunks_exact(sums_stride).take(n).enumerate() {
            for (d, &v) in y[r * y_stride..r * y_stride + width].iter_mut().zip(sums) {
                d.write(if gelu { v * gelu_cdf(v) } else { v });
            }
        }
    }
}

/// W (ins, outs) in bf16, in 32-column panels of 32-k chunks, each chunk two 1 KiB tiles of
/// 16 k-pairs × 16 columns × 2 (the pair order `tdpbf16ps` multiplies); zeros pad both ends.
pub struct Bf16Weights {
    ins: usize,
    outs: usize,
    chunks: usize,
    data: Lines<u16>,
    /// Without AMX: the rounded weights in f32, packed for `sgemm` (`pack_rounded_f32`).
    rounded_f32: Option<crate::sgemm::PackedF32>,
}

const BF16_PER_TILE: usize = TILE_BYTES / 2;

impl Bf16Weights {
    pub fn new(w: &[f32], ins: usize, outs: usize) -> Self {
        assert_eq!(w.len(), ins * outs, "bf16 pack: weight shape");
        Self::pack_view(View::rows(w, ins, outs))
    }

    /// Packs W (ins, outs) from f32, row-major or a transpose (torch's (out, in) Linear weight
    /// read as W = Mᵀ). A tile row holds, for each of 16 columns, the pair (k, k + 1) as one
    /// 32-bit word: from a row-major W two rows are read along memory and interleaved; from a
    /// transpose each column's pairs are adjacent, so 16 × 16 words are made along memory and
    /// transposed. Each step in one pass over the operand: converting it first, then
    /// interleaving, cost as much as the tile unit's product.
    fn pack_view(w: View) -> Self {
        Self::pack_view_into(w, Lines::new())
    }

    /// `pack_view` into `data`, whatever it holds: every tile is written whole (zeros past the
    /// operand's edges), so a buffer kept from an earlier call serves without zeroing.
    fn pack_view_into(w: View, mut data: Lines<u16>) -> Self {
        let (ins, outs) = (w.rows, w.cols);
        assert!(w.cs == 1 || w.rs == 1, "bf16 pack: a view with neither stride 1");
        let chunks = ins.div_ceil(32);
        let panels = outs.div_ceil(BLOCK);
        data.resize(panels * chunks * 2 * BF16_PER_TILE);
        data.par_chunks_mut(chunks * 2 * BF16_PER_TILE)
            .enumerate()
            .for_each(|(p, panel)| pack_panels_by_tiles(w, p, 1, chunks, panel));
        Bf16Weights { ins, outs, chunks, data, rounded_f32: None }
    }

    /// Keeps the rounded weights in f32 too, packed once for `sgemm` (where the CPU has
    /// AVX-512): the portable path's operand, which it otherwise unpacks on every call.
    fn pack_rounded_f32(&mut self) {
        self.rounded_f32 = crate::sgemm::PackedF32::new(&self.unpack(), self.ins, self.outs);
    }

    /// W back in f32 (ins, outs): the fallback's operand, and the tests' reference.
    pub fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.ins * self.outs];
        for (i, &v) in self.data.iter().enumerate() {
            let p = i / (self.chunks * 2 * BF16_PER_TILE);
            let i = i % (self.chunks * 2 * BF16_PER_TILE);
            let (c, t, r, j, e) = (i / 1024, (i / 512) % 2, (i / 32) % 16, (i / 2) % 16, i % 2);
            let (k, n) = (c * 32 + 2 * r + e, p * BLOCK + t * 16 + j);
            if k < self.ins && n < self.outs {
                w[k * self.outs + n] = bf16_value(v);
            }
        }
        w
    }

    /// y = act(x·W + b), act GELU with `gelu`: on the tile unit with `Engine::Tiles`, by
    /// `vdpbf16ps` with `Engine::Dpbf16`, else through the f32 GEMM on the rounded operands (the
    /// same bits on packed weights as on unpacked ones: `sgemm` sums as gemm does).
    pub fn linear(&self, x: &[f32], rows: usize, bias: &[f32], engine: Engine, gelu: bool) -> Vec<f32> {
        let (ins, outs) = (self.ins, self.outs);
        assert!(x.len() == rows * ins && bias.len() == outs, "bf16 linear: shapes");
        if !matches!(engine, Engine::Tiles | Engine::Dpbf16) {
            let rounded: Vec<f32> = x.par_iter().map(|&v| bf16_value(bf16_bits(v))).collect();
            if let Some(packed) = &self.rounded_f32 {
                return packed.linear(&rounded, rows, bias, gelu);
            }
            let mut y = crate::kernels::linear_rows(&rounded, &self.unpack(), bias, rows, ins, outs);
            if gelu {
                y.par_chunks_mut(4096).for_each(gelu_in_place);
            }
            return y;
        }
        let rows_of = |first, n, a: &mut [u16], stride| rows_to_bf16(View::rows(x, rows, ins), first, n, a, stride);
        self.product(rows, Some(bias), gelu, ARows::Convert(rows_of), engine)
    }

    /// y = act(A·W + b) on the tile unit (`Engine::Tiles`) or by `vdpbf16ps` (`Engine::Dpbf16`:
    /// the instruction where the CPU has it, else its emulation), A's rows from `a_rows`.
    fn product<F: Fn(usize, usize, &mut [u16], usize) + Sync>(
        &self,
        rows: usize,
        bias: Option<&[f32]>,
        gelu: bool,
        a_rows: ARows<'_, F>,
        engine: Engine,
    ) -> Vec<f32> {
        let (ins, outs) = (self.ins, self.outs);
        let native_dot = dpbf16::native();
        match engine {
            Engine::Tiles => assert!(amx::available(), "bf16 product: this CPU has no AMX"),
            Engine::Dpbf16 => assert!(native_dot || crate::sgemm::has_avx512(), "bf16 product: no AVX-512"),
            _ => panic!("bf16 product: the {engine:?} engine does not multiply bf16"),
        }
        let kp = self.chunks * 32;
        if let ARows::Ready(all, stride) = a_rows {
            assert!(stride >= kp && all.len() >= rows.div_ceil(BLOCK) * BLOCK * stride, "bf16 product: A's rows");
        }
        // The bias (zeros without one) on whole cache lines, 32 per panel: the start of each
        // block's sums, read by the tile unit 64 bytes a row (from the caller's slice, rows
        // straddled two lines: 8 % of the product).
        let mut starts = Lines::<f32>::zeroed(outs.div_ceil(BLOCK) * BLOCK);
        if let Some(bias) = bias {
            starts[..outs].copy_from_slice(bias);
        }
        collect_row_blocks(rows, outs, |first, n, y| {
            let mut scratch = None;
            let (a, a_stride) = match &a_rows {
                ARows::Convert(block_of) => {
                    // This block's rows in bf16, k padded with zeros, 32 rows (zeros past the end).
                    let mut a = take_scratch(&BF16_ROWS, BLOCK * kp);
                    block_of(first, n, &mut a, kp);
                    for (r, row) in a.chunks_exact_mut(kp).enumerate() {
                        row[if r < n { ins } else { 0 }..].fill(0);
                    }
                    (scratch.insert(a).as_ptr(), kp)
                }
                ARows::Ready(all, stride) => (all[first * stride..].as_ptr(), *stride),
            };
            let panels = outs.div_ceil(BLOCK);
            let panel = |p: usize| &self.data[p * self.chunks * 2 * BF16_PER_TILE..];
            if engine == Engine::Dpbf16 {
                // Two panels (64 columns) a call: 24 accumulators for 6 rows, started from the
                // bias (padded with zeros to whole panels), as the tiles' blocks are.
                let mut out = PairF32([0f32; BLOCK * dpbf16::COLUMNS]);
                let mut p = 0;
                while p < panels {
                    let pair = p + 1 < panels;
                    let starts = starts[p * BLOCK..].as_ptr();
                    // SAFETY: AVX-512 F (and BF16 where `native_dot`) asserted above; `a` holds
                    // n ≤ 32 rows of kp = 32·chunks bf16, a_stride apart; panel p (and p + 1
                    // where `pair`) chunks × 1,024 values; `starts` 32 per panel; `out` 32
                    // aligned rows of 64 f32.
                    unsafe {
                        let out = out.0.as_mut_ptr();
                        dpbf16::sums(a, a_stride, n, panel(p).as_ptr(), pair, self.chunks, starts, out, native_dot)
                    };
                    let columns = p * BLOCK..((p + 1 + pair as usize) * BLOCK).min(outs);
                    block_rows(&out.0, dpbf16::COLUMNS, n, columns.len(), &mut y[columns.start..], outs, gelu);
                    p += 1 + pair as usize;
                }
            } else {
                let tiles = Tiles::configure().expect("AMX checked by the caller");
                // Every block's sums start from the bias (padded with zeros to 32): a row's values do
                // not depend on whether it falls in a whole block or an edge one, and so not on how
                // many rows a call has (inference splits a batch's sentences among the threads).
                let start_of = |p: usize| Start::Row(starts[p * BLOCK..][..BLOCK].as_ptr());
                // Whole 32 × 32 blocks go straight into y, the sums started from the bias.
                let whole = if n == BLOCK { outs / BLOCK } else { 0 };
                for p in 0..whole {
                    let y = y[p * BLOCK..].as_mut_ptr() as *mut f32;
                    // SAFETY: `a` holds 32 rows of kp bf16 (2·a_stride bytes apart, 64·chunks bytes
                    // each), panel p chunks × 2 tiles, y's 32 rows (4·outs bytes apart) columns
                    // p·32.. + 32; the start 32 values.
                    unsafe {
                        tiles.bf16_block(start_of(p), a, 2 * a_stride, panel(p).as_ptr(), self.chunks, y, 4 * outs)
                    };
                }
                if gelu && whole > 0 {
                    for row in y.chunks_mut(outs) {
                        // SAFETY: the tiles wrote the row's first whole·32 values just above.
                        gelu_in_place(unsafe {
                            std::slice::from_raw_parts_mut(row.as_mut_ptr() as *mut f32, whole * BLOCK)
                        });
                    }
                }
                // The edges (the last rows, the last columns) through an aligned scratch block.
                let mut out = SumsBlock([0f32; BLOCK * BLOCK]);
                for p in whole..panels {
                    // SAFETY: as above; `out` 32 rows of 128 bytes.
                    unsafe {
                        tiles.bf16_block(
                            start_of(p),
                            a,
                            2 * a_stride,
                            panel(p).as_ptr(),
                            self.chunks,
                            out.0.as_mut_ptr(),
                            128,
                        )
                    };
                    block_rows(&out.0, BLOCK, n, BLOCK.min(outs - p * BLOCK), &mut y[p * BLOCK..], outs, gelu);
                }
                drop(tiles);
            }
            if let Some(a) = scratch {
                put_scratch(&BF16_ROWS, a);
            }
        })
    }
}

/// Where a bf16 product's rows of A come from.
enum ARows<'a, F> {
    /// Made block by block: `F(first, n, a, stride)` writes rows first..first + n in bf16 at
    /// `a`, `stride` apart (their first `ins` elements).
    Convert(F),
    /// All of them in bf16 already, rows `stride` apart, k padded with zeros, and zero rows
    /// up to a whole 32-row block.
    Ready(&'a [u16], usize),
}

/// A whole B tile (`pack_tile`) of a transposed operand with AVX-512: column j's 32 values
/// (`columns[j·cs..][..32]`, along memory) rounded to bf16 as `bf16_bits` does and narrowed to
/// 16 words in two vectors, then the 16 × 16 words transposed in registers into the tile's
/// rows. (Element by element, this was a third of `train --bf16`'s forward product.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transposed_tile_avx512(columns: &[f32], cs: usize, tile: &mut [u16]) {
    use std::arch::x86_64::*;
    assert!(columns.len() >= 15 * cs + 32 && tile.len() >= BF16_PER_TILE, "transposed block outside its operand");
    // bf16_bits on 16 lanes: round to nearest even, NaN made quiet.
    let bits = |v: __m512i| -> __m256i { _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(rounded_high(v))) };
    let mut rows = [_mm512_setzero_si512(); 16];
    for (j, row) in rows.iter_mut().enumerate() {
        let src = columns.as_ptr().add(j * cs);
        let low = bits(_mm512_loadu_si512(src as *const _));
        let high = bits(_mm512_loadu_si512(src.add(16) as *const _));
        *row = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high);
    }
    for (r, v) in transpose_words(rows).into_iter().enumerate() {
        _mm512_storeu_si512(tile.as_mut_ptr().add(32 * r) as *mut _, v);
    }
}

/// `bf16_bits` on 16 lanes, the result left in each lane's high half: round to nearest even,
/// NaN made quiet.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rounded_high(v: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
    let sum = _mm512_add_epi32(v, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
    let magnitude = _mm512_and_si512(v, _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epu32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
    _mm512_mask_blend_epi32(nan, sum, _mm512_or_si512(v, _mm512_set1_epi32(0x0040_0000)))
}

/// 16 words of 16 lanes from 32 rows of 16 values (`rows[k·rs..][..16]`, k = 0..32): word r,
/// lane j is the pair (rows 2r, 2r + 1) of column j in bf16, the even row in the low half —
/// a tile row of B, or a column of A's words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn paired_rows(rows: &[f32], rs: usize) -> [std::arch::x86_64::__m512i; 16] {
    use std::arch::x86_64::*;
    assert!(rows.len() >= 31 * rs + 16, "paired rows outside their operand");
    let mut words = [_mm512_setzero_si512(); 16];
    for (r, word) in words.iter_mut().enumerate() {
        let even = rounded_high(_mm512_loadu_si512(rows.as_ptr().add(2 * r * rs) as *const _));
        let odd = rounded_high(_mm512_loadu_si512(rows.as_ptr().add((2 * r + 1) * rs) as *const _));
        *word = _mm512_or_si512(_mm512_srli_epi32::<16>(even), _mm512_and_si512(odd, _mm512_set1_epi32(-65536)));
    }
    words
}

/// The transpose of 16 × 16 32-bit words in registers: pairs and quads interleaved within
/// each 128-bit lane, then the lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_words(rows: [std::arch::x86_64::__m512i; 16]) -> [std::arch::x86_64::__m512i; 16] {
    use std::arch::x86_64::*;
    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved by 32-bit values.
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
    }
    // u[4i + c], lane l: rows 4i..4i + 4 of column 4l + c.
    let mut u = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // Column 4l + c is lane l of u[c], u[4 + c], u[8 + c], u[12 + c]: a 4 × 4 lane transpose.
    let mut columns = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]);
        columns[c] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        columns[4 + c] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
        columns[8 + c] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        columns[12 + c] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
    }
    columns
}

/// 16 rows × 32 k of A in bf16 from a transposed operand (A's 16 rows along memory at each k:
/// `source[k·rs..][..16]`, k = 0..32) into `out`'s 16 rows (`stride` u16 apart): each pair
/// (k, k + 1) rounded as `bf16_bits` does into one word per row, then the 16 × 16 words
/// transposed, so that each row is one 64-byte store. (Word by word this conversion was
/// two fifths of `train --bf16`'s dW product.)
///
/// # Safety
/// AVX-512 F; `out` writable for 32 u16 at each of 16 rows `stride` apart (a pointer: tasks
/// write disjoint columns of the same rows).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transposed_rows_avx512(source: &[f32], rs: usize, out: *mut u16, stride: usize) {
    use std::arch::x86_64::*;
    for (j, row) in transpose_words(paired_rows(source, rs)).into_iter().enumerate() {
        _mm512_storeu_si512(out.add(j * stride) as *mut _, row);
    }
}

/// Two bf16 as the 32-bit word a tile row holds: k even in the low half.
#[inline(always)]
fn bf16_pair(even: f32, odd: f32) -> u32 {
    bf16_bits(even) as u32 | (bf16_bits(odd) as u32) << 16
}

/// The 16 × 16 words of `w` at (k0, n0): row r, column j is the pair (k0 + 2r, k0 + 2r + 1) of
/// column n0 + j; zeros outside `w`. From a row-major `w` two rows are read along memory and
/// interleaved; from a transpose each column's pairs are adjacent, so the block is made along
/// memory and then transposed.
#[inline(always)]
fn words_block(w: View, k0: usize, n0: usize) -> [[u32; 16]; 16] {
    let mut words = [[0u32; 16]; 16];
    let whole = k0 + 32 <= w.rows && n0 + 16 <= w.cols;
    if whole && w.cs == 1 {
        for (r, row) in words.iter_mut().enumerate() {
            let even = &w.data[(k0 + 2 * r) * w.rs + n0..][..16];
            let odd = &w.data[(k0 + 2 * r + 1) * w.rs + n0..][..16];
            for ((d, &e), &o) in row.iter_mut().zip(even).zip(odd) {
                *d = bf16_pair(e, o);
            }
        }
    } else if whole {
        for (r, row) in words.iter_mut().enumerate() {
            for (j, d) in row.iter_mut().enumerate() {
                let pair = &w.data[(n0 + j) * w.cs + k0 + 2 * r..][..2];
                *d = bf16_pair(pair[0], pair[1]);
            }
        }
    } else {
        let at = |k: usize, n: usize| if k < w.rows && n < w.cols { w.data[k * w.rs + n * w.cs] } else { 0.0 };
        for (r, row) in words.iter_mut().enumerate() {
            for (j, d) in row.iter_mut().enumerate() {
                *d = bf16_pair(at(k0 + 2 * r, n0 + j), at(k0 + 2 * r + 1, n0 + j));
            }
        }
    }
    words
}

multiversion! {
    /// One B tile (16 k-pairs × 16 columns) of `w` at (k0, n0).
    fn pack_tile(w: View, k0: usize, n0: usize, tile: &mut [u16]) {
        #[cfg(target_arch = "x86_64")]
        if k0 + 32 <= w.rows && n0 + 16 <= w.cols && crate::sgemm::has_avx512() {
            assert!(tile.len() >= BF16_PER_TILE, "bf16 pack: a short tile");
            // SAFETY: AVX-512 F is here, the tile holds 16 rows of 64 bytes, and the block is
            // inside w: row k0 + k's 16 values from n0 are at (k0 + k)·rs + n0, column n0 + j's
            // 32 values from k0 at (n0 + j)·cs + k0.
            unsafe {
                if w.cs == 1 {
                    let words = paired_rows(&w.data[k0 * w.rs + n0..], w.rs);
                    for (r, word) in words.into_iter().enumerate() {
                        std::arch::x86_64::_mm512_storeu_si512(tile.as_mut_ptr().add(32 * r) as *mut _, word);
                    }
                } else {
                    transposed_tile_avx512(&w.data[n0 * w.cs + k0..], w.cs, tile);
                }
            }
            return;
        }
        let words = words_block(w, k0, n0);
        for (dst, &word) in tile.chunks_exact_mut(2).zip(words.as_flattened()) {
            dst[0] = word as u16;
            dst[1] = (word >> 16) as u16;
        }
    }
}

multiversion! {
    /// Rows i0..i0 + n of a transposed view `m` (rs = 1) in bf16 into `out`, rows `stride`
    /// apart: blocks of 16 rows × 32 columns are B-tile words of `mᵀ` (row-major), transposed.
    fn transposed_rows_to_bf16(m: View, i0: usize, n: usize, out: &mut [u16], stride: usize) {
        let cols = m.cols;
        let source = m.t();
        for b0 in (0..n).step_by(16) {
            for k0 in (0..cols).step_by(32) {
                #[cfg(target_arch = "x86_64")]
                if k0 + 32 <= cols && b0 + 16 <= n && crate::sgemm::has_avx512() {
                    // SAFETY: AVX-512 F is here; rows i0 + b0.. + 16 at k0..k0 + 32 lie inside
                    // m (source (k, i) at k·rs + i), and out holds 16 rows from b0 of `stride`.
                    let rows = &mut out[b0 * stride + k0..][..15 * stride + 32];
                    unsafe { transposed_rows_avx512(&source.data[k0 * source.rs + i0 + b0..], source.rs, rows.as_mut_ptr(), stride) };
                    continue;
                }
                let words = words_block(source, k0, i0 + b0);
                let width = 32.min(cols - k0);
                for (j, out_row) in out[b0 * stride..].chunks_mut(stride).take(16.min(n - b0)).enumerate() {
                    let dst = &mut out_row[k0..k0 + width];
                    if width == 32 {
                        for (d, row) in dst.chunks_exact_mut(2).zip(&words) {
                            d[0] = row[j] as u16;
                            d[1] = (row[j] >> 16) as u16;
                        }
                    } else {
                        for (c, d) in dst.iter_mut().enumerate() {
                            *d = (words[c / 2][j] >> (16 * (c % 2))) as u16;
                        }
                    }
                }
            }
        }
    }
}

/// Rows first..first + n of `m` in bf16 at `out`, `stride` apart; `m` is row-major or a
/// transpose (one of its strides is 1), and a transpose is read along memory in blocks
/// (element by element it was as slow as the tile unit's product it fed).
fn rows_to_bf16(m: View, first: usize, n: usize, out: &mut [u16], stride: usize) {
    if m.cs == 1 {
        for (r, row) in out.chunks_mut(stride).take(n).enumerate() {
            to_bf16(&m.data[(first + r) * m.rs..][..m.cols], &mut row[..m.cols]);
        }
    } else {
        assert_eq!(m.rs, 1, "bf16 rows: a view with neither stride 1");
        transposed_rows_to_bf16(m, first, n, out, stride);
    }
}

/// A transposed view `m` (rs = 1) in bf16, row-major with rows `stride` apart (k padded with
/// zeros to `stride`), into `out`; in tasks of 32 of m's columns, each reading 32 rows of
/// memory along them.
fn transposed_to_bf16_rows(m: View, stride: usize, mut out: Lines<u16>) -> Lines<u16> {
    assert!(m.rs == 1 && stride >= m.cols && stride.is_multiple_of(32), "bf16 rows of a transposed view: layout");
    let rows = m.rows.div_ceil(BLOCK) * BLOCK;
    out.resize(rows * stride);
    out[m.rows * stride..].fill(0);
    // Tasks write disjoint columns of every row.
    struct Shared(*mut u16);
    // SAFETY: each task writes only its own columns k0..k0 + 32 of the rows.
    unsafe impl Sync for Shared {}
    let shared = Shared(out.as_mut_ptr());
    let shared = &shared;
    (0..stride / 32).into_par_iter().for_each(|block| {
        let k0 = block * 32;
        // SAFETY: out holds m.rows rows of `stride`; this task's columns are its own.
        let write = |i: usize, col: usize, v: u16| unsafe { *shared.0.add(i * stride + col) = v };
        let source = m.t();
        let mut i0 = 0;
        #[cfg(target_arch = "x86_64")]
        if k0 + 32 <= m.cols && crate::sgemm::has_avx512() {
            while i0 + 16 <= m.rows {
                // SAFETY: AVX-512 F is here; source rows k0..k0 + 32 hold columns i0.. + 16;
                // the 16 output rows from i0 hold columns k0.. + 32 (this task's).
                unsafe {
                    transposed_rows_avx512(
                        &source.data[k0 * source.rs + i0..],
                        source.rs,
                        shared.0.add(i0 * stride + k0),
                        stride,
                    )
                };
                i0 += 16;
            }
        }
        for i in i0..m.rows {
            for col in k0..k0 + 32 {
                write(i, col, if col < m.cols { bf16_bits(source.data[col * source.rs + i]) } else { 0 });
            }
        }
    });
    out
}

/// `m` in bf16, row-major (rows × cols), in tasks of 32 rows.
fn bf16_rows(m: View) -> Vec<u16> {
    let mut out = vec![0u16; m.rows * m.cols];
    if m.cols > 0 {
        out.par_chunks_mut(32 * m.cols)
            .enumerate()
            .for_each(|(block, rows)| rows_to_bf16(m, 32 * block, rows.len() / m.cols, rows, m.cols));
    }
    out
}

/// The k above which `matmul_bf16` converts a transposed A whole before the product: at
/// 2,048 tokens dW ran 18-45 % faster so, at 1,024 the same or up to 15 % slower, at 512 up to
/// 24 % slower (the block-by-block conversion's rows still in L1 when the tiles read them).
const WHOLE_TRANSPOSED_A_FROM_K: usize = 1024;

/// The k (tokens) from which a dW by `vdpbf16ps` runs `dpbf16_by_panels`. On Zen 4 it was
/// 5-11 % faster than the row blocks for 384 × k × 1,536 at k = 512 and 1,024 (12-25 % at
/// 2,048) and within 2 % for m = 1,536, n = 384; below 512 it lost 2-8 % where m ≥ n.
const DPBF16_BY_PANELS_FROM_K: usize = 512;

/// C = A·B (+ bias on each row) with both operands rounded to bf16 and f32 sums: the products
/// of `train --bf16`, forward and backward, as torch's autocast computes them. B is packed for
/// the tile unit (or `vdpbf16ps`, which reads the same packing) on each call (weights change
/// every step); without either, the f32 GEMM runs on the rounded operands.
pub fn matmul_bf16(a: View, b: View, bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "matmul_bf16: inner dimensions");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let engine = Engine::for_precision(Precision::Bf16);
    // dW's A (dyᵀ over the tokens) is a transposed view.
    let transposed_a = a.cs != 1 && m >= 2 * BLOCK;
    if engine == Engine::Dpbf16 && transposed_a && k >= DPBF16_BY_PANELS_FROM_K {
        // A converted whole, then B packed 64 columns at a time inside the tasks.
        return with_whole_transposed_a(a, |rows, stride| dpbf16_by_panels(rows, stride, m, b, bias));
    }
    if matches!(engine, Engine::Tiles | Engine::Dpbf16) {
        // B is packed into the thread's buffer of the last call (fresh pages for each product
        // cost 10-20 % of it); A's rows are converted block by block into the product's
        // scratch, never whole.
        let packed = Bf16Weights::pack_view_into(b, take_scratch(&PACKED_B, 0));
        let y = if transposed_a && k > WHOLE_TRANSPOSED_A_FROM_K {
            // A long transposed A is converted whole first: block by block, each block's rows
            // were 32 strided columns read across all of memory's rows (a third of the product).
            with_whole_transposed_a(a, |rows, stride| {
                let ready = ARows::<fn(usize, usize, &mut [u16], usize)>::Ready(rows, stride);
                packed.product(m, bias, false, ready, engine)
            })
        } else {
            let rows_of = |first, n, dst: &mut [u16], stride| rows_to_bf16(a, first, n, dst, stride);
            packed.product(m, bias, false, ARows::Convert(rows_of), engine)
        };
        put_scratch(&PACKED_B, packed.data);
        return y;
    }
    // Without the tile unit B is rounded in place of its layout: packing it only to unpack it
    // again gave the same values.
    let rounded = |m: View| -> Vec<f32> { bf16_rows(m).into_par_iter().map(bf16_value).collect() };
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = vec![0f32; n];
            &zeros
        }
    };
    crate::kernels::linear_rows(&rounded(a), &rounded(b), bias, m, k, n)
}

/// `f(rows, stride)` on a transposed A (rs = 1) converted whole to bf16 rows, `stride` apart
/// with k padded with zeros, in the thread's scratch; 32 of its columns (32 rows of memory) at
/// a time. The rows are a cache line longer than k: 4 KiB apart, at k = 2,048, they would fall
/// into the same L1 sets.
fn with_whole_transposed_a<R>(a: View, f: impl FnOnce(&[u16], usize) -> R) -> R {
    let stride = a.cols.div_ceil(32) * 32 + 32;
    let rows = transposed_to_bf16_rows(a, stride, take_scratch(&A_ROWS, 0));
    let result = f(&rows, stride);
    put_scratch(&A_ROWS, rows);
    result
}

/// Panels p..p + count of B (k × n) packed as `pack_tile` packs them, into `out`.
fn pack_panels(b: View, p: usize, count: usize, chunks: usize, out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if b.cs == 1 && crate::sgemm::has_avx512() {
        // SAFETY: AVX-512 F is here, B is row-major; `out`'s length is asserted inside.
        return unsafe { pack_panels_by_row_pairs(b, p, count, chunks, out) };
    }
    pack_panels_by_tiles(b, p, count, chunks, out);
}

/// Panels p..p + count of B, tile by tile (`pack_tile`), into `out`.
fn pack_panels_by_tiles(b: View, p: usize, count: usize, chunks: usize, out: &mut [u16]) {
    for (i, tile) in out.chunks_mut(BF16_PER_TILE).take(count * chunks * 2).enumerate() {
        let (q, c, t) = (i / (2 * chunks), (i / 2) % chunks, i % 2);
        pack_tile(b, c * 32, (p + q) * BLOCK + t * 16, tile);
    }
}

/// Panels p..p + count of a row-major B (its rows k, columns n) packed as `pack_tile` packs
/// them, made along B's rows: a tile row is 16 columns of rows k and k + 1, rounded as
/// `bf16_bits` rounds and interleaved (k in each lane's low half), so each pair of rows is
/// read once, along memory. Tile by tile (32 rows of 64 bytes each, 6 KiB apart in a dW's
/// activations) the packing took 40 % of the product.
///
/// # Safety
/// The CPU has AVX-512 F; `b.cs == 1`; `out` holds count · chunks · 1,024 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_panels_by_row_pairs(b: View, p: usize, count: usize, chunks: usize, out: &mut [u16]) {
    const AHEAD: usize = 16;
    use std::arch::x86_64::*;
    assert!(b.cs == 1 && out.len() >= count * chunks * 2 * BF16_PER_TILE, "bf16 pack by rows: layout");
    // Macros, not closures: a closure would not share the function's target features.
    macro_rules! rounded {
        ($x:expr) => {{
            let bits = _mm512_castps_si512($x);
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
            let magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epu32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
            let quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000));
            _mm512_mask_blend_epi32(nan, rounded, quiet)
        }};
    }
    macro_rules! row {
        ($k:expr, $n0:expr, $mask:expr) => {
            if $k < b.rows && $mask != 0 {
                _mm512_maskz_loadu_ps($mask, b.data.as_ptr().wrapping_add($k * b.rs + $n0))
            } else {
                _mm512_setzero_ps()
            }
        };
    }
    // Row pair by row pair, all of the panels' columns (up to 256 bytes of each row) at once.
    for c in 0..chunks {
        for r in 0..16 {
            let k = 32 * c + 2 * r;
            // Rows 6 KiB apart defeat the prefetchers: ask for the pair AHEAD rows on.
            for ahead in [k + AHEAD, k + AHEAD + 1] {
                if ahead < b.rows {
                    let line = b.data.as_ptr().wrapping_add(ahead * b.rs + p * BLOCK) as *const i8;
                    for l in 0..2 * count {
                        _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(64 * l));
                    }
                }
            }
            for q in 0..count {
                for t in 0..2 {
                    let n0 = (p + q) * BLOCK + t * 16;
                    let valid = b.cols.saturating_sub(n0).min(16);
                    let mask = ((1u32 << valid) - 1) as __mmask16;
                    let even = _mm512_srli_epi32::<16>(rounded!(row!(k, n0, mask)));
                    let odd =
                        _mm512_and_si512(rounded!(row!(k + 1, n0, mask)), _mm512_set1_epi32(0xffff_0000u32 as i32));
                    let tile = out.as_mut_ptr().add((q * chunks + c) * 2 * BF16_PER_TILE + t * BF16_PER_TILE);
                    _mm512_storeu_si512(tile.add(32 * r) as *mut __m512i, _mm512_or_si512(even, odd));
                }
            }
        }
    }
}

/// `matmul_bf16` by `vdpbf16ps` for a dW (A = dyᵀ over k ≥ 512 tokens, in bf16 rows
/// `a_stride` apart, k padded with zeros): each task packs one pair of B's panels (64 columns,
/// k × 64 of activations) into its thread's buffer and runs all of A's rows against it while
/// it is in L2. Packing the whole of B first wrote it out and read it back: at 384 × 2,048 ×
/// 1,536 that was a fifth of the product. The same kernel over the same k order: the same bits.
fn dpbf16_by_panels(a: &[u16], a_stride: usize, m: usize, b: View, bias: Option<&[f32]>) -> Vec<f32> {
    let (k, n) = (b.rows, b.cols);
    let chunks = k.div_ceil(32);
    assert!(a_stride >= chunks * 32 && a.len() >= m * a_stride, "bf16 product by panels: A's rows");
    let panels = n.div_ceil(BLOCK);
    let native = dpbf16::native();
    let mut y = Vec::<f32>::with_capacity(m * n);
    // Tasks write disjoint columns of every row.
    struct Output(*mut f32);
    // SAFETY: each task writes only its own 64 (or fewer) columns.
    unsafe impl Sync for Output {}
    let output = Output(y.as_mut_ptr());
    let output = &output;
    (0..panels.div_ceil(2)).into_par_iter().for_each(|pair_index| {
        let p = 2 * pair_index;
        let pair = p + 1 < panels;
        let count = 1 + pair as usize;
        let mut packed = take_scratch(&PACKED_B, count * chunks * 2 * BF16_PER_TILE);
        pack_panels(b, p, count, chunks, &mut packed);
        let columns = p * BLOCK..((p + count) * BLOCK).min(n);
        let mut starts = [0f32; dpbf16::COLUMNS];
        if let Some(bias) = bias {
            starts[..columns.len()].copy_from_slice(&bias[columns.clone()]);
        }
        let mut sums = PairF32([0f32; BLOCK * dpbf16::COLUMNS]);
        for first in (0..m).step_by(BLOCK) {
            let rows = BLOCK.min(m - first);
            // SAFETY: AVX-512 F (and BF16 where `native`): `Engine::Dpbf16` was chosen; `a`
            // holds m rows of chunks·32 values, a_stride apart (asserted); `packed` this
            // pair's panels; `starts` 64 values; `sums` 32 aligned rows of 64.
            unsafe {
                dpbf16::sums(
                    a.as_ptr().add(first * a_stride),
                    a_stride,
                    rows,
                    packed.as_ptr(),
                    pair,
                    chunks,
                    starts.as_ptr(),
                    sums.0.as_mut_ptr(),
                    native,
                )
            };
            for (r, row) in sums.0.chunks_exact(dpbf16::COLUMNS).take(rows).enumerate() {
                // SAFETY: y has capacity m·n; row first + r, this task's columns.
                unsafe {
                    let to = output.0.add((first + r) * n + columns.start);
                    std::ptr::copy_nonoverlapping(row.as_ptr(), to, columns.len());
                }
            }
        }
        put_scratch(&PACKED_B, packed);
    });
    // SAFETY: the tasks wrote every column of every row.
    unsafe { y.set_len(m * n) };
    y
}

// ---- int8 ------------------------------------------------------------------------------------

/// The scale of a group of weights whose largest magnitude is `max_abs`: symmetric, ±127.
pub fn int8_scale(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / 127.0
    } else {
        1.0
    }
}

/// `w` in units of a scale (given as its inverse), rounded to even, clamped to ±127.
#[inline(always)]
pub fn int8_value(w: f32, inverse_scale: f32) -> i8 {
    (w * inverse_scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// W (ins, outs) as int8 with one scale per output column (symmetric: w ≈ scale·q, |q| ≤ 127),
/// in 32-column panels of 64-k chunks, each chunk two 1 KiB tiles of 16 k-quads × 16
/// columns × 4 (the order `tdpbusd` multiplies); zeros pad both ends.
pub struct Int8Weights {
    ins: usize,
    outs: usize,
    chunks: usize,
    data: Lines<i8>,
    scales: Vec<f32>,
    /// Σ_k q[k][n]: the zero point's share of each column, subtracted after the product.
    column_sums: Vec<i32>,
    /// Without VNNI and AMX: the values as the portable code reads them (`pair_panels`),
    /// made once (`keep_pairs`).
    pairs: Option<Vec<i16>>,
}

impl Int8Weights {
    pub fn new(w: &[f32], ins: usize, outs: usize) -> Self {
        assert_eq!(w.len(), ins * outs, "int8 pack: weight shape");
        let scales: Vec<f32> = (0..outs)
            .into_par_iter()
            .map(|n| int8_scale((0..ins).map(|k| w[k * outs + n].abs()).fold(0f32, f32::max)))
            .collect();
        let inverse: Vec<f32> = scales.iter().map(|s| 1.0 / s).collect();
        let mut q = vec![0i8; ins * outs];
        q.par_chunks_mut(outs.max(1)).zip(w.par_chunks(outs.max(1))).for_each(|(q, w)| {
            for ((q, &w), &inv) in q.iter_mut().zip(w).zip(&inverse) {
                *q = int8_value(w, inv);
            }
        });
        Self::from_quantized(ins, outs, scales, &q)
    }

    /// From int8 values `q` (ins, outs) and their column scales (a quantized checkpoint's).
    pub fn from_quantized(ins: usize, outs: usize, scales: Vec<f32>, q: &[i8]) -> Self {
        assert!(q.len() == ins * outs && scales.len() == outs, "int8 pack: shapes");
        let q = |k: usize, n: usize| q[k * outs + n];
        let chunks = ins.div_ceil(64);
        let panels = outs.div_ceil(BLOCK);
        let mut data = Lines::zeroed(panels * chunks * 2 * TILE_BYTES);
        data.par_chunks_mut(chunks * 2 * TILE_BYTES).enumerate().for_each(|(p, panel)| {
            for (i, v) in panel.iter_mut().enumerate() {
                let (c, t, r, j, e) = (i / 2048, (i / 1024) % 2, (i / 64) % 16, (i / 4) % 16, i % 4);
                let (k, n) = (c * 64 + 4 * r + e, p * BLOCK + t * 16 + j);
                if k < ins && n < outs {
                    *v = q(k, n);
                }
            }
        });
        let mut column_sums = vec![0i32; outs];
        for k in 0..ins {
            column_sums.iter_mut().enumerate().for_each(|(n, s)| *s += q(k, n) as i32);
        }
        Int8Weights { ins, outs, chunks, data, scales, column_sums, pairs: None }
    }

    /// The values in the portable code's layout.
    fn pair_panels(&self) -> Vec<i16> {
        pair_panels(&self.unpack().0, self.ins, self.outs)
    }

    /// Keeps the values in the portable code's layout, which it otherwise makes on every call.
    fn keep_pairs(&mut self) {
        self.pairs = Some(self.pair_panels());
    }

    /// The int8 values (ins, outs) and the column scales: what a quantized checkpoint stores.
    pub fn unpack(&self) -> (Vec<i8>, Vec<f32>) {
        let mut q = vec![0i8; self.ins * self.outs];
        for (i, &v) in self.data.iter().enumerate() {
            let p = i / (self.chunks * 2 * TILE_BYTES);
            let i = i % (self.chunks * 2 * TILE_BYTES);
            let (c, t, r, j, e) = (i / 2048, (i / 1024) % 2, (i / 64) % 16, (i / 4) % 16, i % 4);
            let (k, n) = (c * 64 + 4 * r + e, p * BLOCK + t * 16 + j);
            if k < self.ins && n < self.outs {
                q[k * self.outs + n] = v;
            }
        }
        (q, self.scales.clone())
    }

    /// y = act(x·W + b), x quantized per row, act GELU with `gelu`: on the tile unit, on
    /// VNNI, or by portable integer dot products, as `engine` says (the same i32 sums, so the
    /// same bits).
    pub fn linear(&self, x: &[f32], rows: usize, bias: &[f32], engine: Engine, gelu: bool) -> Vec<f32> {
        let (ins, outs) = (self.ins, self.outs);
        assert!(x.len() == rows * ins && bias.len() == outs, "int8 linear: shapes");
        assert!(engine != Engine::Vnni || vnni::available(), "int8 linear: this CPU has no AVX-512 VNNI");
        assert!(engine != Engine::Dpbf16, "int8 linear: vdpbf16ps multiplies bf16");
        let kp = self.chunks * 64;
        // The portable code's weights: kept from packing, or made for this call.
        let made;
        let pairs = match (&self.pairs, engine) {
            (Some(pairs), _) => Some(pairs),
            (None, Engine::Portable) => {
                made = self.pair_panels();
                Some(&made)
            }
            (None, _) => None,
        };
        collect_row_blocks(rows, outs, |first, n, y| {
            let mut a = take_scratch(&U8_ROWS, BLOCK * kp);
            let mut row_scale = [0f32; BLOCK];
            let mut zero_point = [0i32; BLOCK];
            for r in 0..BLOCK {
                let row = &mut a[r * kp..(r + 1) * kp];
                if r < n {
                    let src = &x[(first + r) * ins..(first + r + 1) * ins];
                    (row_scale[r], zero_point[r]) = quantize_row(src, &mut row[..ins]);
                    row[ins..].fill(0);
                } else {
                    row.fill(0);
                }
            }
            let (zero_point, row_scale) = (&zero_point[..n], &row_scale[..n]);
            let panel = |p: usize| self.data[p * self.chunks * 2 * TILE_BYTES..].as_ptr();
            let per_column = |columns: std::ops::Range<usize>| {
                (&self.column_sums[columns.clone()], &self.scales[columns.clone()], &bias[columns])
            };
            match engine {
                Engine::Tiles => {
                    let tiles = Tiles::configure().expect("AMX checked by the caller");
                    // Whole 32 × 32 blocks: the i32 sums stored from the tiles straight into
                    // y's (4-byte) elements, then turned into f32 in one pass over the rows
                    // (regular stores between the tile unit's blocks stall it).
                    let whole = if n == BLOCK { outs / BLOCK } else { 0 };
                    for p in 0..whole {
                        // SAFETY: `a` holds 32 rows of kp bytes (64·chunks); panel p holds
                        // chunks × 2 tiles; y's 32 rows (4·outs bytes apart) columns p·32.. + 32.
                        let sums = y[p * BLOCK..].as_mut_ptr() as *mut i32;
                        unsafe { tiles.u8i8_block(a.as_ptr(), kp, panel(p), self.chunks, sums, 4 * outs) };
                    }
                    if whole > 0 {
                        let columns = per_column(0..whole * BLOCK);
                        // SAFETY: the tiles wrote these elements' i32 sums just above.
                        unsafe { dequantize_in_place(y, outs, (zero_point, row_scale), columns, gelu) };
                    }
                    // The edges (the last rows, the last columns) through a scratch block.
                    let mut out = SumsBlock([0i32; BLOCK * BLOCK]);
                    for p in whole..outs.div_ceil(BLOCK) {
                        // SAFETY: as above; `out` 32 rows of 128 bytes.
                        unsafe { tiles.u8i8_block(a.as_ptr(), kp, panel(p), self.chunks, out.0.as_mut_ptr(), 128) };
                        let columns = p * BLOCK..(p * BLOCK + BLOCK).min(outs);
                        let (zp, rs) = (zero_point, row_scale);
                        dequantize(&mut y[columns.start..], outs, &out.0, BLOCK, (zp, rs), per_column(columns), gelu);
                    }
                    drop(tiles);
                }
                Engine::Vnni => {
                    // Two panels (64 columns) a call: 24 accumulators for 6 rows.
                    let mut out = PairSums([0i32; BLOCK * vnni::COLUMNS]);
                    let panels = outs.div_ceil(BLOCK);
                    let mut p = 0;
                    while p < panels {
                        let pair = p + 1 < panels;
                        // SAFETY: VNNI is here (asserted above); `a` holds n ≤ 32 rows
                        // of kp = 64·chunks bytes; panel p (and p + 1 where `pair`) chunks × 2
                        // KiB; `out` 32 aligned rows of 64 i32.
                        unsafe { vnni::sums(a.as_ptr(), kp, n, panel(p), pair, self.chunks, out.0.as_mut_ptr()) };
                        let columns = p * BLOCK..((p + 1 + pair as usize) * BLOCK).min(outs);
                        let (zp, rs) = (zero_point, row_scale);
                        dequantize(
                            &mut y[columns.start..],
                            outs,
                            &out.0,
                            vnni::COLUMNS,
                            (zp, rs),
                            per_column(columns),
                            gelu,
                        );
                        p += 1 + pair as usize;
                    }
                }
                Engine::Portable | Engine::Dpbf16 => {
                    let pairs = pairs.expect("made for the portable engine");
                    let mut sums = vec![0i32; n * outs];
                    portable_sums(&a, kp, ins, pairs, outs, &mut sums, has_avx2());
                    let (cs, ws) = (&self.column_sums[..], &self.scales[..]);
                    dequantize(y, outs, &sums, outs, (zero_point, row_scale), (cs, ws, bias), gelu);
                }
            }
            put_scratch(&U8_ROWS, a);
        })
    }
}

/// Columns per panel of the portable layout (`Int8Weights::pairs`): two AVX2 vectors of 8 i32.
const PAIR_PANEL: usize = 16;

/// q (ins, outs) as i16 in panels of 16 columns, k in pairs: panel p, pair kk, column j holds
/// (q[2kk][16p + j], q[2kk + 1][16p + j]) — the operand of `vpmaddwd`, which multiplies and adds
/// such pairs exactly (u8 × i8 products fit i16, their pair sums i32). Zeros past the edges.
fn pair_panels(q: &[i8], ins: usize, outs: usize) -> Vec<i16> {
    let pairs = ins.div_ceil(2);
    let mut panels = vec![0i16; outs.div_ceil(PAIR_PANEL) * pairs * PAIR_PANEL * 2];
    for (i, v) in panels.iter_mut().enumerate() {
        let (p, kk, j, e) = (i / (pairs * 32), (i / 32) % pairs, (i / 2) % 16, i % 2);
        let (k, n) = (2 * kk + e, p * PAIR_PANEL + j);
        if k < ins && n < outs {
            *v = q[k * outs + n] as i16;
        }
    }
    panels
}

/// sums[r · outs + c] = Σ_k a[r · a_stride + k] · q[k][c] for the `sums.len() / outs` rows of a
/// block, from the pair panels of q (`pair_panels`): int8 sums without VNNI or AMX. A panel at a
/// time against every row, so that it stays in L1; with `avx2` (`has_avx2`), 6 rows × 16
/// columns of `vpmaddwd` per k-pair. Exact integer sums: the same values on either path. `a`'s
/// rows hold zeros from `ins` to an even length.
fn portable_sums(a: &[u8], a_stride: usize, ins: usize, panels: &[i16], outs: usize, sums: &mut [i32], avx2: bool) {
    let pairs = ins.div_ceil(2);
    let rows = sums.len() / outs.max(1);
    assert!(rows == 0 || (a.len() >= (rows - 1) * a_stride + 2 * pairs && a_stride >= 2 * pairs), "int8 sums: A");
    assert!(panels.len() == outs.div_ceil(PAIR_PANEL) * pairs * 2 * PAIR_PANEL, "int8 sums: panels");
    // Each row's k-pairs as the 32-bit lanes `vpmaddwd` reads: (a[2kk], a[2kk + 1]) as i16.
    let mut a_pairs = vec![0u32; rows * pairs];
    for (r, row) in a_pairs.chunks_exact_mut(pairs.max(1)).enumerate().take(rows) {
        let a = &a[r * a_stride..][..2 * pairs];
        for (v, two) in row.iter_mut().zip(a.chunks_exact(2)) {
            *v = two[0] as u32 | (two[1] as u32) << 16;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if avx2 && has_avx2() {
        for (p, panel) in panels.chunks_exact((pairs * 2 * PAIR_PANEL).max(1)).enumerate() {
            let cols = PAIR_PANEL.min(outs - p * PAIR_PANEL);
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(6);
                let group = PairRows { a: &a_pairs[r * pairs..(r + take) * pairs], pairs, panel, cols };
                let sums = &mut sums[r * outs + p * PAIR_PANEL..];
                // SAFETY: AVX2 is here; the group holds `take` rows of `pairs` lanes, the panel
                // pairs × 16 columns, and `sums` `take` rows (outs apart) of `cols` values.
                unsafe {
                    match take {
                        6 => avx2_pairs::<6>(&group, sums, outs),
                        5 => avx2_pairs::<5>(&group, sums, outs),
                        4 => avx2_pairs::<4>(&group, sums, outs),
                        3 => avx2_pairs::<3>(&group, sums, outs),
                        2 => avx2_pairs::<2>(&group, sums, outs),
                        _ => avx2_pairs::<1>(&group, sums, outs),
                    }
                }
                r += take;
            }
        }
        return;
    }
    for (p, panel) in panels.chunks_exact((pairs * 2 * PAIR_PANEL).max(1)).enumerate() {
        for c in 0..PAIR_PANEL.min(outs - p * PAIR_PANEL) {
            for r in 0..rows {
                let mut sum = 0i32;
                for (kk, &two) in a_pairs[r * pairs..(r + 1) * pairs].iter().enumerate() {
                    let w = &panel[(kk * PAIR_PANEL + c) * 2..][..2];
                    sum += (two & 0xffff) as i32 * w[0] as i32 + (two >> 16) as i32 * w[1] as i32;
                }
                sums[r * outs + p * PAIR_PANEL + c] = sum;
            }
        }
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Up to 6 rows of A's k-pairs against one panel of `pair_panels`.
#[cfg(target_arch = "x86_64")]
struct PairRows<'a> {
    a: &'a [u32],
    pairs: usize,
    panel: &'a [i16],
    /// Columns of the panel that exist (≤ 16).
    cols: usize,
}

/// R rows × 16 columns: per k-pair, the panel's two vectors and R broadcast pairs of A, 2R
/// `vpmaddwd` added into accumulators that stay in registers.
///
/// # Safety
/// The CPU has AVX2; `g.a` holds R rows of `g.pairs` lanes, `g.panel` pairs × 32 values, and
/// `sums` R rows, `stride` apart, of `g.cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_pairs<const R: usize>(g: &PairRows, sums: &mut [i32], stride: usize) {
    use std::arch::x86_64::*;
    assert!(g.a.len() >= R * g.pairs && g.panel.len() >= g.pairs * 32, "int8 pairs: operands");
    assert!(sums.len() >= (R - 1) * stride + g.cols && g.cols <= PAIR_PANEL, "int8 pairs: sums");
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let (a, w) = (g.a.as_ptr(), g.panel.as_ptr());
    for kk in 0..g.pairs {
        let w0 = _mm256_loadu_si256(w.add(kk * 32) as *const __m256i);
        let w1 = _mm256_loadu_si256(w.add(kk * 32 + 16) as *const __m256i);
        for (r, acc) in acc.iter_mut().enumerate() {
            let two = _mm256_set1_epi32(*a.add(r * g.pairs + kk) as i32);
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(two, w0));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(two, w1));
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let mut row = [0i32; PAIR_PANEL];
        _mm256_storeu_si256(row.as_mut_ptr() as *mut __m256i, acc[0]);
        _mm256_storeu_si256(row.as_mut_ptr().add(8) as *mut __m256i, acc[1]);
        sums[r * stride..][..g.cols].copy_from_slice(&row[..g.cols]);
    }
}

/// One row to uint8 with its own scale and zero point: x ≈ scale·(q − zero_point), the range
/// widened to hold 0 (so that padding and zeros are exact); ties round to even, as ONNX's
/// QuantizeLinear does.
fn quantize_row(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = row_range(x);
    let scale = if hi > lo && (hi - lo).is_finite() { (hi - lo) / 255.0 } else { 1.0 };
    let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    quantize_into(x, q, 1.0 / scale, zero_point);
    (scale, zero_point as i32)
}

/// (min(0, min x), max(0, max x)).
fn row_range(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { row_range_avx512(x) };
    }
    x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `row_range` 16 lanes at a time: the compiler keeps `f32::min`'s NaN rule scalar.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_range_avx512(x: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        // SAFETY: c holds 16 floats.
        let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    rest.iter().fold((lo, hi), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

multiversion! {
    /// q = clamp(round(x / scale) + zero_point, 0, 255), ties to even.
    fn quantize_into(x: &[f32], q: &mut [u8], inverse_scale: f32, zero_point: f32) {
        for (d, &v) in q.iter_mut().zip(x) {
            // max/min (not clamp) also map NaN to a bound, so the unchecked conversion is always
            // in range (`as u8` converts lane by lane).
            #[allow(clippy::manual_clamp)]
            let v = (v * inverse_scale + zero_point).round_ties_even().max(0.0).min(255.0);
            // SAFETY: v is finite and in 0..=255.
            *d = unsafe { v.to_int_unchecked::<i32>() } as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    fn f32_linear(x: &[f32], w: &[f32], b: &[f32], rows: usize, ins: usize, outs: usize) -> Vec<f64> {
        let mut y = vec![0f64; rows * outs];
        for r in 0..rows {
            for n in 0..outs {
                y[r * outs + n] =
                    b[n] as f64 + (0..ins).map(|k| x[r * ins + k] as f64 * w[k * outs + n] as f64).sum::<f64>();
            }
        }
        y
    }

    // Odd sizes: every padding path (rows, k and columns not multiples of the tiles).
    const SHAPES: [(usize, usize, usize); 5] =
        [(1, 7, 5), (33, 70, 45), (13, 200, 70), (70, 384, 1152), (5, 1536, 384)];

    /// Values where rounding to bf16 is delicate: ties (to even, up and down), a denormal,
    /// infinities and NaNs.
    const SPECIAL: [f32; 9] = [
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        -f32::from_bits(0x3f80_8001),
        f32::from_bits(0x0000_8123),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0xff80_0001),
        f32::from_bits(0x7f7f_ffff),
    ];

    #[test]
    fn a_transposed_operand_converts_to_the_bits_of_its_rows() {
        // A (rows × cols) read from its transpose gives the bits A's own rows give, for whole
        // 16 × 32 blocks (converted in registers) and the ragged edges, delicate values included.
        let (rows, cols) = (53, 101);
        let mut a = random(rows * cols, 9);
        let len = a.len();
        for (i, &v) in SPECIAL.iter().cycle().take(40).enumerate() {
            a[(i * 7919) % len] = v;
        }
        let stored: Vec<f32> =
            (0..cols).flat_map(|k| (0..rows).map(move |i| (i, k))).map(|(i, k)| a[i * cols + k]).collect();
        let (plain, transposed) = (View::rows(&a, rows, cols), View::rows(&stored, cols, rows).t());
        let stride = cols + 27;
        for (first, n) in [(0, 32), (32, 21), (5, 16)] {
            let (mut expected, mut got) = (vec![0u16; n * stride], vec![1u16; n * stride]);
            rows_to_bf16(plain, first, n, &mut expected, stride);
            rows_to_bf16(transposed, first, n, &mut got, stride);
            for r in 0..n {
                assert_eq!(got[r * stride..][..cols], expected[r * stride..][..cols], "row {}", first + r);
            }
        }
    }

    #[test]
    fn packing_round_trips() {
        for &(_, ins, outs) in &SHAPES {
            let plain = random(ins * outs, 1);
            let mut w = plain.clone();
            for (i, &v) in SPECIAL.iter().enumerate() {
                let at = (i * 7919) % w.len();
                w[at] = v;
            }
            let packed = Bf16Weights::new(&w, ins, outs);
            let rounded: Vec<f32> = w.iter().map(|&v| bf16_value(bf16_bits(v))).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&packed.unpack()), bits(&rounded));
            // The same W read as the transpose of torch's (out, in) layout packs the same.
            let stored: Vec<f32> =
                (0..outs).flat_map(|n| (0..ins).map(move |k| (k, n))).map(|(k, n)| w[k * outs + n]).collect();
            let transposed = Bf16Weights::pack_view(View::rows(&stored, outs, ins).t());
            assert_eq!(transposed.data[..], packed.data[..], "{ins}x{outs}");
            let q = Int8Weights::new(&plain, ins, outs);
            let (values, scales) = q.unpack();
            for k in 0..ins {
                for n in 0..outs {
                    assert!(
                        (values[k * outs + n] as f32 * scales[n] - plain[k * outs + n]).abs() <= scales[n] * 0.5 + 1e-7
                    );
                }
            }
        }
    }

    #[test]
    fn low_precision_products_are_close_to_f32_and_the_paths_agree() {
        for &(rows, ins, outs) in &SHAPES {
            let (x, w, b) = (random(rows * ins, 2), random(ins * outs, 3), random(outs, 4));
            let exact = f32_linear(&x, &w, &b, rows, ins, outs);
            let scale = (ins as f64).sqrt() / 3.0;
            let mut bf16 = Bf16Weights::new(&w, ins, outs);
            let mut int8 = Int8Weights::new(&w, ins, outs);
            let bf16_portable = bf16.linear(&x, rows, &b, Engine::Portable, false);
            let int8_portable = int8.linear(&x, rows, &b, Engine::Portable, false);
            let with_gelu = |y: &[f32]| {
                let mut y = y.to_vec();
                gelu_in_place(&mut y);
                y
            };
            for (i, e) in exact.iter().enumerate() {
                // bf16 keeps 8 bits of each operand; int8 about 7 of each.
                assert!((bf16_portable[i] as f64 - e).abs() < 0.02 * scale, "bf16 {rows}x{ins}x{outs} at {i}");
                assert!((int8_portable[i] as f64 - e).abs() < 0.05 * scale, "int8 {rows}x{ins}x{outs} at {i}");
            }
            // GELU applied as the sums are made: the bits of GELU after the product.
            let shape = format!("{rows}x{ins}x{outs}");
            let int8_gelu = int8.linear(&x, rows, &b, Engine::Portable, true);
            assert_eq!(int8_gelu, with_gelu(&int8_portable), "int8 + GELU {shape}");
            assert_eq!(bf16.linear(&x, rows, &b, Engine::Portable, true), with_gelu(&bf16_portable), "bf16 {shape}");
            // The rounded weights packed once for sgemm: gemm's bits on the unpacked ones.
            bf16.pack_rounded_f32();
            if bf16.rounded_f32.is_some() {
                assert_eq!(bf16.linear(&x, rows, &b, Engine::Portable, false), bf16_portable, "bf16 {shape}");
                let gelu = bf16.linear(&x, rows, &b, Engine::Portable, true);
                assert_eq!(gelu, with_gelu(&bf16_portable), "bf16 + GELU {shape}");
            }
            // The portable layout kept from packing: the same sums.
            int8.keep_pairs();
            assert_eq!(int8.linear(&x, rows, &b, Engine::Portable, true), int8_gelu, "int8 kept columns {shape}");
            // Integer sums are exact: VNNI and the tile unit agree with the portable code to the
            // bit.
            if vnni::available() {
                assert_eq!(int8.linear(&x, rows, &b, Engine::Vnni, false), int8_portable, "int8 VNNI {shape}");
                assert_eq!(int8.linear(&x, rows, &b, Engine::Vnni, true), int8_gelu, "int8 VNNI + GELU {shape}");
            }
            // vdpbf16ps (emulated where the CPU lacks it) sums in its own order: close to the
            // portable sums, and GELU applied to its block's sums is GELU after the product.
            if crate::sgemm::has_avx512() {
                let bf16_dot = bf16.linear(&x, rows, &b, Engine::Dpbf16, false);
                for (d, p) in bf16_dot.iter().zip(&bf16_portable) {
                    assert!((d - p).abs() <= 1e-4 * (1.0 + p.abs()), "bf16 vdpbf16ps {d} portable {p} {shape}");
                }
                let gelu = bf16.linear(&x, rows, &b, Engine::Dpbf16, true);
                assert_eq!(gelu, with_gelu(&bf16_dot), "bf16 vdpbf16ps + GELU {shape}");
            }
            if amx::available() {
                let bf16_tiles = bf16.linear(&x, rows, &b, Engine::Tiles, false);
                for (t, p) in bf16_tiles.iter().zip(&bf16_portable) {
                    assert!((t - p).abs() <= 1e-4 * (1.0 + p.abs()), "bf16 tiles {t} portable {p}");
                }
                // Whole blocks get GELU in a pass of their own, the edges as they leave the
                // scratch block: both the bits of GELU after the product.
                let gelu = bf16.linear(&x, rows, &b, Engine::Tiles, true);
                assert_eq!(gelu, with_gelu(&bf16_tiles), "bf16 + GELU {shape}");
                assert_eq!(int8.linear(&x, rows, &b, Engine::Tiles, false), int8_portable, "int8 tiles {shape}");
                assert_eq!(int8.linear(&x, rows, &b, Engine::Tiles, true), int8_gelu, "int8 tiles + GELU {shape}");
            }
        }
    }

    /// `dpbf16::sums` against the instruction's definition, one lane at a time: from the start
    /// value, per k-pair, + odd·odd then + even·even, each a fused multiply-add. The emulation
    /// runs on any CPU with AVX-512 F; the instruction itself where the CPU has it. Bits equal:
    /// no operand or sum here is subnormal, where the instruction would flush it.
    #[test]
    fn dpbf16_sums_follow_the_instructions_definition() {
        if !crate::sgemm::has_avx512() {
            eprintln!("no AVX-512 F: the vdpbf16ps kernels do not run on this CPU");
            return;
        }
        // 3 chunks with k ragged (70 of 96), 4 panels with the last ragged (100 of 128).
        let (rows, ins, outs) = (13, 70, 100);
        let packed = Bf16Weights::new(&random(ins * outs, 5), ins, outs);
        let w = packed.unpack();
        let kp = packed.chunks * 32;
        let mut a = vec![0u16; rows * kp];
        for (r, row) in a.chunks_mut(kp).enumerate() {
            for (d, v) in row[..ins].iter_mut().zip(random(ins, 6 + r as u64)) {
                *d = bf16_bits(v);
            }
        }
        let starts: Vec<f32> = random(128, 7);
        let mut kernels = vec![false];
        if dpbf16::native() {
            kernels.push(true);
        }
        for native in kernels {
            for (p, pair) in [(0, true), (2, true), (3, false), (1, false)] {
                let mut out = PairF32([f32::NAN; BLOCK * dpbf16::COLUMNS]);
                let panel = packed.data[p * packed.chunks * 2 * BF16_PER_TILE..].as_ptr();
                let start = starts[p * BLOCK..].as_ptr();
                // SAFETY: AVX-512 F checked (BF16 where `native`); a holds 13 rows of kp; the
                // panels and starts as `sums` reads them; `out` 32 aligned rows of 64.
                unsafe {
                    dpbf16::sums(a.as_ptr(), kp, rows, panel, pair, packed.chunks, start, out.0.as_mut_ptr(), native)
                };
                for r in 0..rows {
                    for j in 0..if pair { 64 } else { 32 } {
                        let col = p * BLOCK + j;
                        let weight = |k: usize| if k < ins && col < outs { w[k * outs + col] } else { 0.0 };
                        let mut acc = starts[col];
                        for kk in 0..kp / 2 {
                            let (even, odd) = (bf16_value(a[r * kp + 2 * kk]), bf16_value(a[r * kp + 2 * kk + 1]));
                            acc = odd.mul_add(weight(2 * kk + 1), acc);
                            acc = even.mul_add(weight(2 * kk), acc);
                        }
                        let got = out.0[r * dpbf16::COLUMNS + j];
                        assert_eq!(got.to_bits(), acc.to_bits(), "native {native} panel {p} row {r} column {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_transposed_view_converts_to_its_transpose() {
        // Sizes across several blocks of 16 rows × 32 columns with ragged edges, and a single
        // row and column.
        for (rows, cols) in [(130, 200), (1, 77), (77, 1), (64, 64)] {
            let data = random(rows * cols, 11);
            let view = View::rows(&data, cols, rows).t();
            let expected: Vec<u16> =
                (0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))).map(|(i, j)| bf16_bits(view.at(i, j))).collect();
            assert_eq!(bf16_rows(view), expected, "{rows}x{cols}");
        }
    }

    #[test]
    fn the_training_product_reads_transposed_operands() {
        // C (m, n) = A·B with A and B stored transposed, against the rounded operands in f64;
        // A is converted whole first from 64 rows and a long k (ragged blocks of rows and of k
        // included), block by block below.
        for (m, k, n) in [(37, 70, 45), (75, 70, 45), (75, WHOLE_TRANSPOSED_A_FROM_K + 45, 45)] {
            transposed_operands_product(m, k, n);
        }
    }

    #[test]
    fn a_long_dw_by_panels_packs_and_sums_as_the_row_blocks_do() {
        // dW's layout: A = dyᵀ (dy stored tokens × m), B = x row-major (tokens × n). Odd k and
        // ragged last panels (45 = 32 + 13 columns; 100 = 3 · 32 + 4), NaN and infinities.
        if !crate::sgemm::has_avx512() {
            eprintln!("skipped: the by-panels path runs on AVX-512 only");
            return;
        }
        for (m, k, n) in [(75, 1069, 45), (64, 1101, 100)] {
            let at = random(k * m, 8);
            let mut bt = random(k * n, 9);
            let a = View::rows(&at, k, m).t();
            let b = View::rows(&bt, k, n);
            let stride = k.div_ceil(32) * 32 + 32;
            let rows = transposed_to_bf16_rows(a, stride, Lines::new());
            let whole = Bf16Weights::pack_view_into(b, Lines::new());
            let bias = random(n, 10);
            let by_rows = ARows::<fn(usize, usize, &mut [u16], usize)>::Ready(&rows, stride);
            let expected = whole.product(m, Some(&bias), false, by_rows, Engine::Dpbf16);
            let got = dpbf16_by_panels(&rows, stride, m, b, Some(&bias));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&expected), "{m}x{k}x{n}");
            // The packing alone, special values included, against pack_tile's.
            for (i, v) in
                [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE / 4.0].into_iter().enumerate()
            {
                bt[i * 37 % (k * n)] = v;
            }
            bt[k * n - 1] = f32::from_bits(0x7f80_0001); // a signalling NaN
            let b = View::rows(&bt, k, n);
            let whole = Bf16Weights::pack_view_into(b, Lines::new());
            let panel_values = whole.chunks * 2 * BF16_PER_TILE;
            let panels = n.div_ceil(BLOCK);
            for p in (0..panels).step_by(2) {
                let count = (panels - p).min(2);
                let mut out = vec![0xdead_u16; count * panel_values];
                pack_panels(b, p, count, whole.chunks, &mut out);
                assert_eq!(&out[..], &whole.data[p * panel_values..][..count * panel_values], "{m}x{k}x{n} panel {p}");
            }
        }
    }

    fn transposed_operands_product(m: usize, k: usize, n: usize) {
        let (at, bt) = (random(k * m, 5), random(n * k, 6));
        let a = View::rows(&at, k, m).t();
        let b = View::rows(&bt, n, k).t();
        let bias = random(n, 7);
        let round = |v: f32| bf16_value(bf16_bits(v)) as f64;
        for bias in [None, Some(&bias[..])] {
            let c = matmul_bf16(a, b, bias);
            for i in 0..m {
                for j in 0..n {
                    let exact = (0..k).map(|l| round(a.at(i, l)) * round(b.at(l, j))).sum::<f64>()
                        + bias.map_or(0.0, |b| b[j] as f64);
                    assert!((c[i * n + j] as f64 - exact).abs() < 1e-4, "{m}x{k}x{n} at ({i}, {j})");
                }
            }
        }
    }

    /// The portable int8 sums, with AVX2 and without, against a plain triple loop: every row
    /// count of a group, odd k, a last panel of fewer than 16 columns.
    #[test]
    fn portable_int8_sums_are_exact_with_and_without_avx2() {
        for &(rows, ins, outs) in &[(1usize, 1usize, 1usize), (7, 33, 17), (13, 70, 45), (32, 384, 64)] {
            let mut s = 7u32;
            let mut byte = || {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8
            };
            let kp = ins.div_ceil(64) * 64;
            let mut a = vec![0u8; rows * kp];
            for r in 0..rows {
                a[r * kp..r * kp + ins].iter_mut().for_each(|v| *v = byte());
            }
            let q: Vec<i8> = (0..ins * outs).map(|_| (byte() as i8).max(-127)).collect();
            let mut expected = vec![0i32; rows * outs];
            for r in 0..rows {
                for c in 0..outs {
                    expected[r * outs + c] = (0..ins).map(|k| a[r * kp + k] as i32 * q[k * outs + c] as i32).sum();
                }
            }
            let panels = pair_panels(&q, ins, outs);
            for avx2 in [false, true] {
                let mut sums = vec![0i32; rows * outs];
                portable_sums(&a, kp, ins, &panels, outs, &mut sums, avx2);
                assert_eq!(sums, expected, "{rows}x{ins}x{outs} avx2 {avx2}");
            }
        }
    }

    #[test]
    fn a_row_of_zeros_and_a_constant_row_quantize_exactly() {
        let mut q = [0u8; 4];
        assert_eq!(quantize_row(&[0.0; 4], &mut q), (1.0, 0));
        assert_eq!(q, [0; 4]);
        let (scale, zp) = quantize_row(&[2.0, 2.0, 0.0, -1.0], &mut q);
        assert_eq!(zp, 85);
        assert!((scale * (q[0] as i32 - zp) as f32 - 2.0).abs() < 1e-6);
    }

    #[test]
    fn bf16_rounding_is_torchs() {
        // half's conversion is the reference: nearest even, ties included; NaN stays NaN.
        let specials = [0.0, -0.0, 1.0, f32::MAX, f32::MIN_POSITIVE, 1e-40, f32::INFINITY, -f32::INFINITY];
        let ties = [f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000), f32::from_bits(0x3f80_8001)];
        for v in specials.into_iter().chain(ties).chain(random(10_000, 9).into_iter().map(|v| v * 1e3)) {
            assert_eq!(bf16_bits(v), half::bf16::from_f32(v).to_bits(), "{v:e}");
        }
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
    }

    #[test]
    fn precision_names_parse() {
        for name in Precision::NAMES {
            assert_eq!(name.parse::<Precision>().map(|p| p.name()), Ok(name));
        }
        assert!("fp16".parse::<Precision>().unwrap_err().contains("f32, bf16, int8"));
    }
}
