//! GFLOP/s of gemm on the shapes of an e5-small training step (rows = 24×32 tokens).
use std::time::Instant;

fn run(m: usize, n: usize, k: usize, a_t: bool, b_t: bool) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
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
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
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
        println!("{name:24} {:6.1} GFLOP/s", run(m, n, k, at, bt));
    }
}
