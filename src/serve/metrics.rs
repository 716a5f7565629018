//! The server's counters in Prometheus' text format (`GET /metrics`): requests by status,
//! request latency and batch sizes as histograms, queue depth, texts and tokens tagged and the
//! time the model spent on them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A cumulative histogram with fixed upper bounds (`le`), as Prometheus reads them.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram { bounds: bounds.to_vec(), counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *b {
                *c += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            self.count, self.sum, self.count
        );
    }
}

#[derive(Debug)]
struct Counters {
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    batch_texts: Histogram,
    texts: u64,
    tokens: u64,
    compute_seconds: f64,
    batches: u64,
}

/// Shared by the handlers and the inference thread.
#[derive(Debug)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Default for Metrics {
    fn default() -> Self {
        let latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
        Metrics {
            counters: Mutex::new(Counters {
                requests: BTreeMap::new(),
                latency: Histogram::new(&latency),
                batch_texts: Histogram::new(&sizes),
                texts: 0,
                tokens: 0,
                compute_seconds: 0.0,
                batches: 0,
            }),
        }
    }
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        // A panic elsewhere while the lock was held leaves counts that are still counts.
        let mut guard = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    pub fn record_request(&self, status: u16, seconds: f64) {
        self.with(|c| {
            *c.requests.entry(status).or_default() += 1;
            c.latency.observe(seconds);
        });
    }

    pub fn record_batch(&self, texts: usize, tokens: usize, seconds: f64) {
        self.with(|c| {
            c.batch_texts.observe(texts as f64);
            c.texts += texts as u64;
            c.tokens += tokens as u64;
            c.compute_seconds += seconds;
            c.batches += 1;
        });
    }

    /// Requests answered with `status` so far.
    pub fn requests(&self, status: u16) -> u64 {
        self.with(|c| c.requests.get(&status).copied().unwrap_or(0))
    }

    pub fn render(&self, queue_depth: usize) -> String {
        self.with(|c| {
            let mut out = String::new();
            let _ = writeln!(out, "# HELP xner_requests_total HTTP requests to /v1/ner by status.\n# TYPE xner_requests_total counter");
            for (status, n) in &c.requests {
                let _ = writeln!(out, "xner_requests_total{{status=\"{status}\"}} {n}");
            }
            c.latency.render(&mut out, "xner_request_duration_seconds", "Time from receiving a /v1/ner request to answering it.");
            c.batch_texts.render(&mut out, "xner_batch_texts", "Texts per batch the model ran.");
            let _ = writeln!(out, "# HELP xner_queue_depth Requests waiting for the model.\n# TYPE xner_queue_depth gauge\nxner_queue_depth {queue_depth}");
            let _ = writeln!(out, "# HELP xner_texts_total Texts tagged.\n# TYPE xner_texts_total counter\nxner_texts_total {}", c.texts);
            let _ = writeln!(out, "# HELP xner_tokens_total Tokens tagged (special tokens included).\n# TYPE xner_tokens_total counter\nxner_tokens_total {}", c.tokens);
            let _ = writeln!(out, "# HELP xner_batches_total Batches the model ran.\n# TYPE xner_batches_total counter\nxner_batches_total {}", c.batches);
            let _ = writeln!(out, "# HELP xner_compute_seconds_total Time the model spent on batches.\n# TYPE xner_compute_seconds_total counter\nxner_compute_seconds_total {}", c.compute_seconds);
            let rate = if c.compute_seconds > 0.0 { c.tokens as f64 / c.compute_seconds } else { 0.0 };
            let _ = writeln!(out, "# HELP xner_tokens_per_second Tokens per second of model time, over the server's life.\n# TYPE xner_tokens_per_second gauge\nxner_tokens_per_second {rate}");
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.record_request(200, 0.003);
        m.record_request(200, 0.2);
        m.record_request(400, 0.001);
        m.record_batch(3, 42, 0.5);
        let text = m.render(7);
        assert!(text.contains("xner_requests_total{status=\"200\"} 2"), "{text}");
        assert!(text.contains("xner_request_duration_seconds_bucket{le=\"0.005\"} 2"), "{text}");
        assert!(text.contains("xner_request_duration_seconds_bucket{le=\"0.25\"} 3"), "{text}");
        assert!(text.contains("xner_request_duration_seconds_count 3"), "{text}");
        assert!(text.contains("xner_queue_depth 7") && text.contains("xner_tokens_total 42"), "{text}");
        assert!(text.contains("xner_tokens_per_second 84"), "{text}");
    }
}
