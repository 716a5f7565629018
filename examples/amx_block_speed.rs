//! One thread's GFLOP/s of the AMX bf16 block (`amx::Tiles::bf16_block`) over the panels of a
//! 2,048 × 384 × 1,536 product, with what happens to each 32 × 32 block of sums between
//! blocks: why `lowp` stores the tiles straight into the output.
//!
//!     cargo run --release --example amx_block_speed
//!
//! - `tiles`: the sums stored into one 4 KB scratch block (the products alone);
//! - `copy`: then copied into the output with regular loads and stores (what `lowp` did);
//! - `straight`: tile-stored straight into the output (what it does);
//! - `l1 stores`: as `tiles`, plus 4 KB of regular stores into L1-resident lines per block;
//! - `batched`: the same stores, all after each row of blocks.
use xner::amx::{Start, Tiles};

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

const K: usize = 384;
const PANELS: usize = 48;
const ROW_BLOCKS: usize = 64;

fn main() {
    let Some(tiles) = Tiles::configure() else {
        println!("no AMX on this CPU (or XNER_NO_AMX is set)");
        return;
    };
    let chunks = K / 32;
    let outs = PANELS * 32;
    // A and B: bf16 bit patterns of ordinary values (1.0 ± a little).
    let a = vec![Line([0x3f; 64]); 32 * K * 2 / 64];
    let b = vec![Line([0x3f; 64]); PANELS * chunks * 2048 / 64];
    let mut scratch = vec![Line([0; 64]); 32 * 128 / 64];
    let mut y_lines = vec![Line([0; 64]); ROW_BLOCKS * 32 * outs * 4 / 64];
    let mut l1 = vec![0f32; 1024];
    let source = vec![1f32; 1024];
    for mode in ["tiles", "copy", "straight", "l1 stores", "batched"] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            for block in 0..ROW_BLOCKS {
                let y = &mut y_lines[block * 32 * outs * 4 / 64..];
                let y = y.as_mut_ptr() as *mut f32;
                for p in 0..PANELS {
                    let (a, b) = (a.as_ptr() as *const u16, b[p * chunks * 2048 / 64..].as_ptr() as *const u16);
                    let sums = scratch.as_mut_ptr() as *mut f32;
                    // SAFETY: a holds 32 rows of K bf16, b this panel's chunks × 2 tiles, the
                    // scratch 32 rows of 128 bytes, y 32 rows of `outs` f32 from this block.
                    unsafe {
                        if mode == "straight" {
                            tiles.bf16_block(Start::Zero, a, 2 * K, b, chunks, y.add(p * 32), 4 * outs);
                            continue;
                        }
                        tiles.bf16_block(Start::Zero, a, 2 * K, b, chunks, sums, 128);
                        match mode {
                            "copy" => {
                                for r in 0..32 {
                                    std::ptr::copy_nonoverlapping(sums.add(32 * r), y.add(r * outs + p * 32), 32);
                                }
                            }
                            "l1 stores" => add_one(&mut l1, &source),
                            "batched" if p == PANELS - 1 => (0..PANELS).for_each(|_| add_one(&mut l1, &source)),
                            _ => {}
                        }
                    }
                }
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        let flop = 2.0 * (32 * 32 * K * PANELS * ROW_BLOCKS) as f64;
        println!("{mode:>10}: {:5.0} GFLOP/s", flop / best / 1e9);
    }
}

/// 4 KB of regular stores into L1-resident lines.
#[inline(never)]
fn add_one(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s + 1.0;
    }
    std::hint::black_box(dst);
}
