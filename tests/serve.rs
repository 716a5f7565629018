//! `xner serve` as a client sees it: the real server on an ephemeral loopback port, answers
//! equal to `xner tag`'s, many concurrent clients each getting their own results, every bad
//! request answered with its status and a JSON message (and the server answering afterwards),
//! a full queue refused with Retry-After, a timeout, SIGTERM draining queued requests, and
//! /metrics counting what was sent. Every loop here is bounded in count and time.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `xner serve`; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(model: &Path, flags: &[&str]) -> Server {
        let mut child = common::xner()
            .args(["serve", "--model", model.to_str().unwrap(), "--host", "127.0.0.1", "--port", "0", "--quiet"])
            .args(flags)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("server printed its address").unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_string();
            }
        };
        // Keep reading stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let server = Server { child, url };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/health").0 != 200 {
            assert!(Instant::now() < deadline, "the server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
    }

    fn get(&self, path: &str) -> (u16, String) {
        match Self::agent().get(&format!("{}{path}", self.url)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// (status, Retry-After, body) of a POST to /v1/ner.
    fn post_bytes(&self, body: &[u8]) -> (u16, Option<String>, String) {
        let request = Self::agent().post(&format!("{}/v1/ner", self.url)).set("content-type", "application/json");
        match request.send_bytes(body) {
            Ok(r) => (r.status(), None, r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => {
                let retry = r.header("retry-after").map(String::from);
                (code, retry, r.into_string().unwrap())
            }
            Err(e) => (0, None, e.to_string()),
        }
    }

    fn post(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, _, text) = self.post_bytes(body.to_string().as_bytes());
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn model(tmp: &Path) -> PathBuf {
    common::trained_tiny_model(tmp)
}

/// The first `n` German validation sentences as texts.
fn sentences(n: usize) -> Vec<String> {
    let panx = xner::data::PanxDir::new(common::panx_dir());
    let corpus = xner::data::load_languages(&panx, &["de".to_string()], "validation", 0, Some(n)).unwrap();
    corpus.sentences.iter().map(|s| s.words.join(" ")).collect()
}

/// (label, start, end) of each entity, and the scores.
fn spans(entities: &serde_json::Value) -> (Vec<(String, u64, u64)>, Vec<f64>) {
    let list = entities.as_array().unwrap();
    let spans = list
        .iter()
        .map(|e| (e["label"].as_str().unwrap().to_string(), e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap()))
        .collect();
    (spans, list.iter().map(|e| e["score"].as_f64().unwrap()).collect())
}

fn assert_same_entities(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let (sa, ca) = spans(a);
    let (sb, cb) = spans(b);
    assert_eq!(sa, sb, "{what}");
    // Other batch-mates pad differently: the same numbers up to rounding.
    for (x, y) in ca.iter().zip(&cb) {
        assert!((x - y).abs() < 1e-4, "{what}: score {x} vs {y}");
    }
}

#[test]
fn answers_equal_xner_tag_and_each_concurrent_client_gets_its_own() {
    let tmp = common::tempdir();
    let model = model(tmp.path());
    let texts = sentences(60);
    let file = tmp.path().join("lines.txt");
    std::fs::write(&file, texts.join("\n")).unwrap();
    let out = common::xner()
        .args(["tag", "--model", model.to_str().unwrap(), "--json", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let expected: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();

    let server = Server::start(&model, &["--max-wait-ms", "20"]);
    // One text a request, and all of them in one request.
    for (i, text) in texts.iter().enumerate() {
        let (status, body) = server.post(&serde_json::json!({"text": text}));
        assert_eq!(status, 200, "{body}");
        assert_same_entities(&body["entities"], &expected[i]["entities"], &format!("text {i}"));
    }
    let (status, body) = server.post(&serde_json::json!({"texts": texts, "tokens": true}));
    assert_eq!(status, 200);
    for (i, r) in body["results"].as_array().unwrap().iter().enumerate() {
        assert_same_entities(&r["entities"], &expected[i]["entities"], &format!("batch text {i}"));
        assert_eq!(r["tags"], expected[i]["tags"], "text {i}");
    }

    // 16 clients, 240 requests in all, each text a different sentence: batched together by the
    // server, every answer must be its own text's.
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (url, texts, expected) = (server.url.clone(), texts.clone(), expected.clone());
            std::thread::spawn(move || {
                let agent = Server::agent();
                for k in 0..15 {
                    let i = (c * 7 + k * 13) % texts.len();
                    let body = serde_json::json!({"text": texts[i]}).to_string();
                    let r = agent.post(&format!("{url}/v1/ner")).send_string(&body).unwrap();
                    let got: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
                    assert_same_entities(&got["entities"], &expected[i]["entities"], &format!("client {c}, text {i}"));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (_, metrics) = server.get("/metrics");
    assert!(metrics.contains(&format!("xner_requests_total{{status=\"200\"}} {}", 60 + 1 + 240)), "{metrics}");
    // Batching happened: fewer batches than requests.
    let batches: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("xner_batches_total ")).and_then(|v| v.parse().ok()).unwrap();
    assert!(batches < 301, "{batches} batches for 301 requests");
    let (status, page) = server.get("/");
    assert!(status == 200 && page.contains("<title>xner"));
    let (status, info) = server.get("/v1/model");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!((status, info["labels"].as_array().unwrap().len(), info["max_length"].as_u64()), (200, 7, Some(512)));
}

#[test]
fn bad_requests_get_their_status_and_the_server_goes_on() {
    let tmp = common::tempdir();
    let model = model(tmp.path());
    let server = Server::start(&model, &["--max-body-bytes", "2048", "--max-texts", "4"]);
    let cases: Vec<(&[u8], u16, &str)> = vec![
        (b"{\"text\": ", 400, "expected {\"text\""),
        (b"{\"text\": 3}", 400, "invalid type: integer"),
        (b"{\"texts\": []}", 400, "\"texts\" is empty"),
        (b"{\"texts\": [\"a\", 2]}", 400, "invalid type"),
        (b"{\"texts\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "5 texts in one request; at most 4"),
        (b"{\"text\": \"a\", \"texts\": [\"b\"]}", 400, "not both"),
        (b"{}", 400, "no \"text\""),
        (b"{\"text\": \"a\", \"aggregation\": \"sideways\"}", 400, "unknown variant"),
        (b"{\"text\": \"a\", \"colour\": 1}", 400, "unknown field"),
        (b"[1, 2]", 400, "expected"),
        (b"\xff\xfe{}", 400, "not UTF-8"),
    ];
    for (body, status, message) in &cases {
        let (got, _, text) = server.post_bytes(body);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON error body: {text}"));
        assert_eq!(got, *status, "{}: {text}", String::from_utf8_lossy(body));
        assert!(json["error"].as_str().unwrap().contains(message), "{}: {text}", String::from_utf8_lossy(body));
    }
    let big = serde_json::json!({"text": "Wort ".repeat(1000)}).to_string();
    let (got, _, text) = server.post_bytes(big.as_bytes());
    assert_eq!(got, 413, "{text}");
    // Still serving.
    let (status, body) = server.post(&serde_json::json!({"text": "Angela Merkel besuchte Paris"}));
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = server.get("/metrics");
    assert!(metrics.contains(&format!("xner_requests_total{{status=\"400\"}} {}", cases.len())), "{metrics}");
    assert!(metrics.contains("xner_requests_total{status=\"413\"} 1"), "{metrics}");
}

/// POSTs `body` to `url`/v1/ner: (status, Retry-After, body).
fn post_to(url: &str, body: &str) -> (u16, Option<String>, String) {
    match Server::agent().post(&format!("{url}/v1/ner")).send_string(body) {
        Ok(r) => (r.status(), None, r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => {
            (code, r.header("retry-after").map(String::from), r.into_string().unwrap())
        }
        Err(e) => (0, None, e.to_string()),
    }
}

#[test]
fn a_full_queue_is_refused_with_retry_after_and_a_slow_answer_times_out() {
    let tmp = common::tempdir();
    let model = model(tmp.path());
    // The model thread busy with a long document in 64-token windows, one per forward pass;
    // the queue holds 2 requests: of 12 sent meanwhile, the rest are refused at once.
    let server = Server::start(
        &model,
        &["--queue", "2", "--max-wait-ms", "0", "--max-length", "64", "--stride", "8", "--forward-batch", "1"],
    );
    let document = sentences(2000).join(" ");
    let url = server.url.clone();
    let long = std::thread::spawn(move || post_to(&url, &serde_json::json!({"text": document}).to_string()));
    std::thread::sleep(Duration::from_millis(400));
    let results: Vec<(u16, Option<String>, String)> = (0..12)
        .map(|i| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                post_to(&url, &serde_json::json!({"text": format!("Satz {i} in Berlin")}).to_string())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(long.join().unwrap().0, 200);
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(!refused.is_empty(), "{results:?}");
    assert!(refused.iter().all(|r| r.1.as_deref() == Some("1") && r.2.contains("queue is full")), "{refused:?}");
    assert!(results.iter().all(|r| r.0 == 503 || r.0 == 200), "{results:?}");
    assert!(results.iter().any(|r| r.0 == 200), "the queued ones are answered");

    // A batch that waits 1.5 s for company, past a 1 s timeout: 504, and the server goes on.
    let slow = Server::start(&model, &["--max-wait-ms", "1500", "--timeout", "1"]);
    let (status, _, body) = post_to(&slow.url, r#"{"text": "Angela Merkel besuchte Paris"}"#);
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("not answered within 1 s"), "{body}");
    let (_, metrics) = slow.get("/metrics");
    assert!(metrics.contains("xner_requests_total{status=\"504\"} 1"), "{metrics}");
}

#[test]
fn sigterm_stops_accepting_and_answers_what_is_queued() {
    let tmp = common::tempdir();
    let model = model(tmp.path());
    let mut server = Server::start(&model, &["--max-wait-ms", "1500"]);
    let pending: Vec<_> = (0..6)
        .map(|i| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let body = serde_json::json!({"text": format!("Anfrage {i} aus Hamburg")}).to_string();
                Server::agent().post(&format!("{url}/v1/ner")).send_string(&body).map(|r| r.status()).unwrap_or(0)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let statuses: Vec<u16> = pending.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses, vec![200; 6], "every queued request answered");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(ureq::get(&format!("{}/health", server.url)).call().is_err(), "no longer accepting");
}
