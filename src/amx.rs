//! Intel AMX tile kernels: the bf16 and int8 matrix products of `lowp`, on the tile unit
//! Sapphire Rapids and later CPUs have (`amx_bf16`, `amx_int8` in /proc/cpuinfo).
//!
//! Why assembly: Rust's AMX intrinsics are unstable, and these are six instructions. LLVM never
//! allocates the tile registers itself, so no compiled code can clobber them between the `asm!`
//! blocks of one kernel call; each call configures the tiles on its own thread first (the
//! configuration is per thread) and releases them at the end.
//!
//! One tile configuration serves both kernels: all eight tiles are 16 rows × 64 bytes.
//! tmm0–3 accumulate a 32 × 32 block of the output, tmm4–5 hold two 16-row slices of A,
//! tmm6–7 two 16-column slices of B, stored as `lowp` packs them (k in pairs for bf16, in
//! quads for int8, each tile 1 KiB contiguous).

use std::arch::asm;
use std::sync::OnceLock;

/// Output rows and columns one kernel call computes.
pub const BLOCK: usize = 32;
/// Bytes of one tile: 16 rows of 64.
pub const TILE_BYTES: usize = 1024;

#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Palette 1 has eight tiles; the entries of the other eight must be zero.
static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Whether this CPU has AMX with bf16 and int8 and the kernel lets this process use the tile
/// data (Linux asks each process to request it: `arch_prctl(ARCH_REQ_XCOMP_PERM)`).
/// `XNER_NO_AMX=1` turns it off, so that the fallback can be run on the same machine.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var_os("XNER_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID.(EAX=7, ECX=0):EDX bit 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8.
    if std::arch::x86_64::__cpuid(0).eax < 7 {
        return false;
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    let has = |bit: u32| edx & (1 << bit) != 0;
    if !(has(22) && has(24) && has(25)) {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; failure is reported by its return value.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// What a block's f32 sums start from.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    Zero,
    /// The same 32 values (one per column) on every row: a bias, added without a pass of its
    /// own, so that the tiles can be stored straight into the output. (Regular stores between
    /// the tile unit's blocks stalled it: copying each block out of a scratch block and adding
    /// the bias there cost a third of the product.) Best on a 64-byte line: each of the 16
    /// loads of a row that straddles two is two loads.
    Row(*const f32),
}

/// The tiles, configured on this thread for as long as the value lives (so not `Send`).
pub struct Tiles(std::marker::PhantomData<*const ()>);

impl Tiles {
    /// Configures the tiles on this thread; `None` without AMX.
    pub fn configure() -> Option<Tiles> {
        if !available() {
            return None;
        }
        // SAFETY: AMX is present and permitted (checked above); CONFIG is a valid palette-1
        // configuration, 64-byte aligned.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) &CONFIG as *const TileConfig, options(nostack)) };
        Some(Tiles(std::marker::PhantomData))
    }

    /// A 32 × 32 block of C = S + A · B for bf16 A and B over `chunks` chunks of 32 k, f32
    /// sums started from S (`start`), written at `out` (rows `out_stride` bytes apart).
    ///
    /// A: 32 rows of bf16 from `a`, `a_stride` bytes apart; chunk c is bytes 64c..64c+64 of
    /// each row. B: `chunks` × 2 tiles at `b`, each 16 k-pairs × 16 columns × 2 bf16. Each
    /// tile row should lie on one cache line (64-byte aligned addresses): one that straddles
    /// two costs two loads.
    ///
    /// # Safety
    /// `a` must be readable for 32 rows of `64 * chunks` bytes at `a_stride`, `b` for
    /// `chunks * 2 * TILE_BYTES` bytes, `out` writable for 32 rows of 128 bytes at
    /// `out_stride`, and `start`'s pointer readable as it says.
    #[allow(clippy::too_many_arguments)] // one block's operands, each with its layout
    pub unsafe fn bf16_block(
        &self,
        start: Start,
        a: *const u16,
        a_stride: usize,
        b: *const u16,
        chunks: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        match start {
            Start::Zero => asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack)),
            // A zero stride loads the same 64 bytes into each of a tile's 16 rows.
            Start::Row(row) => asm!(
                "tileloadd tmm0, [{s0} + {zero} * 1]",
                "tileloadd tmm1, [{s1} + {zero} * 1]",
                "tileloadd tmm2, [{s0} + {zero} * 1]",
                "tileloadd tmm3, [{s1} + {zero} * 1]",
                s0 = in(reg) row, s1 = in(reg) row.add(16), zero = in(reg) 0usize,
                options(nostack, readonly),
            ),
        }
        let a = a as *const u8;
        let b = b as *const u8;
        for c in 0..chunks {
            let a0 = a.add(64 * c);
            let a1 = a0.add(16 * a_stride);
            let b0 = b.add(2 * TILE_BYTES * c);
            let b1 = b0.add(TILE_BYTES);
            asm!(
                "tileloadd tmm4, [{a0} + {sa} * 1]",
                "tileloadd tmm5, [{a1} + {sa} * 1]",
                "tileloadd tmm6, [{b0} + {sb} * 1]",
                "tileloadd tmm7, [{b1} + {sb} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                sa = in(reg) a_stride, sb = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        self.store(out as *mut u8, out_stride);
    }

    /// A 32 × 32 block of C = A · B for u8 A and i8 B over `chunks` chunks of 64 k (i32 sums,
    /// exact), written at `out` (rows `out_stride` bytes apart). A as in `bf16_block` (64 u8 a
    /// chunk); B: `chunks` × 2 tiles of 16 k-quads × 16 columns × 4 i8.
    ///
    /// # Safety
    /// As `bf16_block`.
    pub unsafe fn u8i8_block(
        &self,
        a: *const u8,
        a_stride: usize,
        b: *const i8,
        chunks: usize,
        out: *mut i32,
        out_stride: usize,
    ) {
        let b = b as *const u8;
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack));
        for c in 0..chunks {
            let a0 = a.add(64 * c);
            let a1 = a0.add(16 * a_stride);
            let b0 = b.add(2 * TILE_BYTES * c);
            let b1 = b0.add(TILE_BYTES);
            asm!(
                "tileloadd tmm4, [{a0} + {sa} * 1]",
                "tileloadd tmm5, [{a1} + {sa} * 1]",
                "tileloadd tmm6, [{b0} + {sb} * 1]",
                "tileloadd tmm7, [{b1} + {sb} * 1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                sa = in(reg) a_stride, sb = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        self.store(out as *mut u8, out_stride);
    }

    /// The four accumulators into a 32 × 32 block of 4-byte values, rows `stride` bytes apart:
    /// tmm0 top left, tmm1 top right, tmm2 bottom left, tmm3 bottom right.
    unsafe fn store(&self, out: *mut u8, stride: usize) {
        asm!(
            "tilestored [{o0} + {s} * 1], tmm0",
            "tilestored [{o1} + {s} * 1], tmm1",
            "tilestored [{o2} + {s} * 1], tmm2",
            "tilestored [{o3} + {s} * 1], tmm3",
            o0 = in(reg) out, o1 = in(reg) out.add(64), o2 = in(reg) out.add(16 * stride),
            o3 = in(reg) out.add(16 * stride + 64), s = in(reg) stride,
            options(nostack),
        );
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured on this thread by `configure`.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
