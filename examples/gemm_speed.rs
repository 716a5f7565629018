//! GFLOP/s of `gemm` (the crate candle and xner's kernels call) on the shapes of an e5-small
//! training step (rows = 24×32 tokens): operands hot in cache, and cycling through 24 operand
//! sets as 12 layers do. `GEMM_THREADS=1` for one thread.
//!
//!     cargo run --release --example gemm_speed
use std::time::Instant;

fn par() -> gemm::Parallelism {
    match std::env::var("GEMM_THREADS").ok().and_then(|v| v.parse().ok()) {
        Some(1) => gemm::Parallelism::None,
        Some(n) => gemm::Parallelism::Rayon(n),
        None => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    }
}

/// c (m×n, row-major) = a·b with a (m×k) and b (k×n), either stored transposed.
fn product(c: &mut [f32], a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize), a_t: bool, b_t: bool) {
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    assert!(c.len() == m * n && a.len() == m * k && b.len() == k * n);
    // SAFETY: the strides above address exactly the asserted lengths.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par(),
        )
    }
}

fn run(m: usize, n: usize, k: usize, a_t: bool, b_t: bool) -> (f64, f64) {
    // 24 distinct operand sets: later calls find nothing of theirs in the 2 MiB L2.
    let mut sets: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        (0..24).map(|s| (vec![0.5 + s as f32; m * k], vec![0.25f32; k * n], vec![0f32; m * n])).collect();
    let flop = 2.0 * (m * n * k) as f64;
    let mut best = f64::MAX;
    for _ in 0..20 {
        let (a, b, c) = &mut sets[0];
        let t = Instant::now();
        product(c, a, b, (m, n, k), a_t, b_t);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    for _ in 0..4 {
        for (a, b, c) in sets.iter_mut() {
            product(c, a, b, (m, n, k), a_t, b_t);
        }
    }
    (flop / best / 1e9, flop * 96.0 / t.elapsed().as_secs_f64() / 1e9)
}

fn main() {
    let r = 768;
    for (name, m, n, k, at, bt) in [
        ("fwd x·Wᵀ 384→384", r, 384, 384, false, true),
        ("fwd x·Wᵀ 384→1536", r, 1536, 384, false, true),
        ("fwd x·Wᵀ 1536→384", r, 384, 1536, false, true),
        ("fwd x·Wᵀ 384→1152", r, 1152, 384, false, true),
        // The same products with W stored transposed (in, out), as inference keeps it.
        ("fwd x·Wt 384→384 (Wᵀ stored)", r, 384, 384, false, false),
        ("fwd x·Wt 384→1536 (Wᵀ stored)", r, 1536, 384, false, false),
        ("fwd x·Wt 1536→384 (Wᵀ stored)", r, 384, 1536, false, false),
        ("fwd x·Wt 384→1152 (Wᵀ stored)", r, 1152, 384, false, false),
        ("dx = dy·W 1536→384", r, 384, 1536, false, false),
        ("dW = dyᵀ·x 1536x384", 1536, 384, r, true, false),
        ("dW = dyᵀ·x 384x1536", 384, 1536, r, true, false),
        ("dW = dyᵀ·x 384x384", 384, 384, r, true, false),
    ] {
        let (hot, cold) = run(m, n, k, at, bt);
        println!("{name:32} {hot:6.1} GFLOP/s hot, {cold:6.1} GFLOP/s over 24 operand sets");
    }
}
