//! `xner bench` on a tiny random model: real sentences in training's batches, the padding
//! they carry, the real tokens counted, and the report's fields.

mod common;

use candle_core::Device;
use xner::align::Aligner;
use xner::data::{self, LabelSet, PanxDir};
use xner::model::TokenClassifier;

#[test]
fn bench_counts_real_tokens_and_the_padding_of_training_batches() {
    let tmp = common::tempdir();
    let dir = common::tiny_xlmr(&tmp.path().join("tiny"));
    let model = TokenClassifier::load(&dir, Some(LabelSet::panx().names()), 0, &Device::Cpu).unwrap();
    let panx = PanxDir::new(common::panx_dir());
    let corpus = data::load_languages(&panx, &["de".into()], "train", 0, Some(100)).unwrap();
    let aligned = Aligner::from_file(&dir.join("tokenizer.json")).unwrap().align_corpus(&corpus).unwrap();
    let batches = xner::bench::real_batches(&model, &aligned.sentences, 24).unwrap();
    assert_eq!(batches.len(), 5); // 100 sentences in batches of 24
    let t = xner::bench::time_batches(&model, &batches).unwrap();
    let (real, padded) = xner::bench::padding_of(&aligned.sentences, 24);
    assert_eq!(real, aligned.sentences.iter().map(|s| s.len()).sum::<usize>());
    assert_eq!((t.steps, t.tokens, t.padded_tokens), (5, real, padded));
    // 100 sentences make mega-batches of one batch: little grouping, much padding.
    assert!(t.padding_fraction() > 0.2 && t.padding_fraction() < 0.9, "{}", t.padding_fraction());
    assert!(t.forward > 0.0 && t.backward > 0.0 && t.optimizer > 0.0 && t.inference > 0.0);
    assert!(xner::bench::peak_memory().is_some_and(|b| b > 1 << 20));
}

#[test]
fn bench_command_reports_padding_throughput_and_peak_memory() {
    let tmp = common::tempdir();
    let dir = common::tiny_xlmr(&tmp.path().join("tiny"));
    let out = common::xner()
        .args(["bench", "--model", dir.to_str().unwrap(), "--sentences", "48", "--json"])
        .env("XNER_DATA", common::panx_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["xner"]["steps"], 2);
    assert!(json["xner"]["tokens"].as_u64().unwrap() < json["xner"]["padded_tokens"].as_u64().unwrap());
    assert!(json["xner_peak_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(json["workload"].as_str().unwrap().contains("48 de training sentences"));
}

#[test]
fn bench_gemm_times_every_product_of_the_model_at_each_precision() {
    let tmp = common::tempdir();
    let dir = common::tiny_xlmr(&tmp.path().join("tiny"));
    let out = common::xner()
        .args(["bench", "--model", dir.to_str().unwrap(), "--gemm", "--gemm-tokens", "40"])
        .args(["--gemm-rounds", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let products = report["products"].as_array().unwrap();
    // Four linear layers, each forward for inference, forward for training, dx and dW.
    assert_eq!(products.len(), 16, "{report}");
    for product in products {
        let shape = &product["shape"];
        // The 40 tokens are the rows of a forward product or dx, the depth of dW.
        assert!(shape["m"] == 40 || shape["k"] == 40, "{shape}");
        let inference = shape["inference"].as_bool().unwrap();
        for precision in ["f32", "bf16", "int8"] {
            let timed = product[precision]["xner"].as_f64();
            if precision == "int8" && !inference {
                assert!(timed.is_none(), "{product}");
            } else {
                assert!(timed.is_some_and(|g| g > 0.0), "{precision}: {product}");
                // No --python: no torch column.
                assert!(product[precision]["torch"].is_null(), "{product}");
            }
        }
    }
    // Rounds are counted from one.
    let zero = common::xner()
        .args(["bench", "--model", dir.to_str().unwrap(), "--gemm", "--gemm-rounds", "0"])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2), "{}", String::from_utf8_lossy(&zero.stderr));
}

/// The torch side as `bench --gemm` drives it: one process per round, one shape a line, both
/// sides of a shape timed back to back. A stand-in "python" answers as scripts/bench_gemm.py
/// does (its torch version, then one line per shape, GFLOP/s growing with each round), so the
/// protocol and the best-of-rounds are checked without torch; one that dies says so.
#[test]
fn bench_gemm_drives_the_torch_script_one_shape_at_a_time() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = common::tempdir();
    let dir = common::tiny_xlmr(&tmp.path().join("tiny"));
    let rounds = tmp.path().join("rounds");
    let fake = tmp.path().join("python");
    let script = format!(
        "#!/bin/sh\necho x >> {rounds}\nround=$(wc -l < {rounds})\necho '{{\"torch\": \"stand-in\"}}'\n\
         while read -r shape; do echo \"{{\\\"f32\\\": $round, \\\"bf16\\\": 0.5}}\"; done\n",
        rounds = rounds.display()
    );
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::xner()
        .args(["bench", "--model", dir.to_str().unwrap(), "--gemm", "--gemm-tokens", "40"])
        .args(["--gemm-rounds", "3", "--json", "--python", fake.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["torch"], "stand-in", "{report}");
    assert_eq!(std::fs::read_to_string(&rounds).unwrap().lines().count(), 3, "a process per round");
    let products = report["products"].as_array().unwrap();
    assert_eq!(products.len(), 16, "{report}");
    for product in products {
        // The best of the three rounds' answers.
        assert_eq!(product["f32"]["torch"], 3.0, "{product}");
        assert_eq!(product["bf16"]["torch"], 0.5, "{product}");
        assert!(product["f32"]["xner"].as_f64().is_some_and(|g| g > 0.0), "{product}");
    }
    // A peer that stops: the command fails and says which script.
    std::fs::write(&fake, "#!/bin/sh\necho 'no torch here' >&2\nexit 3\n").unwrap();
    let out = common::xner()
        .args(["bench", "--model", dir.to_str().unwrap(), "--gemm", "--gemm-tokens", "40"])
        .args(["--python", fake.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bench_gemm.py") && stderr.contains("no torch here"), "{stderr}");
}
