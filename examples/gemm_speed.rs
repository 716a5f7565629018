//! GFLOP/s of gemm on the shapes of an e5-small training step (rows = 24×32 tokens).
use std::time::Instant;

fn run(m: usize, n: usize, k: usize, a_t: bool, b_t: bool) -> (f64, f64) {
    // 24 distinct operand sets, as 12 layers' activations and weights: later calls find
    // nothing of theirs in the 2 MiB L2.
    let sets: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        (0..24).map(|s| (vec![0.5 + s as f32; m * k], vec![0.25f32; k * n], vec![0f32; m * n])).collect();
    let a = &sets[0].0;
    let b = &sets[0].1;
    let mut c = vec![0f32; m * n];
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let reps = 20;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
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
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let hot = 2.0 * (m * n * k) as f64 / best / 1e9;
    let t = Instant::now();
    let mut sets = sets;
    for _ in 0..4 {
        for (a, b, c) in sets.iter_mut() {
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
                );
            }
        }
    }
    let cold = 2.0 * (m * n * k) as f64 * 96.0 / t.elapsed().as_secs_f64() / 1e9;
    (hot, cold)
}

fn par() -> gemm::Parallelism {
    match std::env::var("GEMM_THREADS").ok().and_then(|v| v.parse().ok()) {
        Some(1) => gemm::Parallelism::None,
        Some(n) => gemm::Parallelism::Rayon(n),
        None => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    }
}

fn main() {
    let r = 768;
    for (name, m, n, k, at, bt) in [
        ("fwd x·Wᵀ 384→384", r, 384, 384, false, true),
        ("fwd x·Wᵀ 384→1536", r, 1536, 384, false, true),
        ("fwd x·Wᵀ 1536→384", r, 384, 1536, false, true),
        ("dx = dy·W 1536→384", r, 384, 1536, false, false),
        ("dW = dyᵀ·x 1536x384", 1536, 384, r, true, false),
        ("dW = dyᵀ·x 384x1536", 384, 1536, r, true, false),
        ("dW = dyᵀ·x 384x384", 384, 384, r, true, false),
    ] {
        let (hot, cold) = run(m, n, k, at, bt);
        println!("{name:24} {hot:6.1} GFLOP/s hot, {cold:6.1} GFLOP/s over 24 operand sets");
    }
}
