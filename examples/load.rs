//! A bounded, closed-loop HTTP load generator for `xner serve` and its Python peer (used by
//! scripts/bench_serve.sh): `concurrency` clients each send POST requests back to back, the
//! bodies taken in turn from a file of JSON lines, until `requests` have been sent or
//! `max_seconds` have passed; then it prints one JSON line: requests, failures, requests/s,
//! texts/s and latency percentiles. Loopback addresses only.
//!
//!   cargo run --release --example load -- URL BODIES.jsonl CONCURRENCY REQUESTS [MAX_SECONDS]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: load URL BODIES.jsonl CONCURRENCY REQUESTS [MAX_SECONDS]");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let host = url.trim_start_matches("http://").split(['/', ':']).next().unwrap_or("");
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        eprintln!("load: {url} is not a loopback address; this tool sends traffic to this machine only");
        std::process::exit(2);
    }
    let bodies: Vec<String> = std::fs::read_to_string(&args[2])
        .unwrap_or_else(|e| panic!("{}: {e}", args[2]))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let texts_per_body: Vec<usize> = bodies
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
            v["texts"].as_array().map_or(1, |t| t.len())
        })
        .collect();
    let concurrency: usize = args[3].parse().expect("CONCURRENCY");
    let total: usize = args[4].parse().expect("REQUESTS");
    let max_seconds: f64 = args.get(5).map_or(600.0, |s| s.parse().expect("MAX_SECONDS"));
    let bodies = Arc::new(bodies);
    let texts_per_body = Arc::new(texts_per_body);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let failures = Arc::new(AtomicUsize::new(0));
    let texts = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(max_seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (url, bodies, tpb, next, latencies, failures, texts) = (
                url.clone(),
                bodies.clone(),
                texts_per_body.clone(),
                next.clone(),
                latencies.clone(),
                failures.clone(),
                texts.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total || Instant::now() > deadline {
                        break;
                    }
                    let k = i % bodies.len();
                    let t0 = Instant::now();
                    let ok = agent
                        .post(&url)
                        .set("content-type", "application/json")
                        .send_string(&bodies[k])
                        .map(|r| r.into_string().is_ok())
                        .unwrap_or(false);
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    if ok {
                        texts.fetch_add(tpb[k], Ordering::Relaxed);
                        latencies.lock().unwrap().push(ms);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    let ok = lat.len();
    let out = serde_json::json!({
        "concurrency": concurrency, "requests": ok + failures.load(Ordering::Relaxed), "ok": ok,
        "failed": failures.load(Ordering::Relaxed), "seconds": seconds, "requests_per_s": ok as f64 / seconds,
        "texts_per_s": texts.load(Ordering::Relaxed) as f64 / seconds,
        "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
    });
    println!("{out}");
}
