//! `--precision bf16|int8` against f32 on multilingual-e5-small fine-tuned briefly on German
//! PAN-X (a head with real margins, as users run): the logits' error stays bounded and the
//! predicted labels stay the same on real batches; each path gives the same numbers on any
//! number of threads; `xner quantize` writes a directory that runs exactly as quantizing on the
//! fly does; the CLI's flags reach the model.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use xner::align::Aligner;
use xner::data::PanxDir;
use xner::lowp::Precision;
use xner::model::TokenClassifier;

/// e5-small fine-tuned for one epoch on 800 German sentences (validation F1 ≈ 0.3: the head
/// separates O from entities with real margins).
fn fine_tuned(root: &Path) -> PathBuf {
    let out = root.join("e5-de");
    let status = common::xner()
        .args(["train", "--model", common::e5_small().to_str().unwrap(), "--train-langs", "de"])
        .args(["--max-train-samples", "800", "--max-eval-samples", "16", "--epochs", "1", "--batch-size", "16"])
        .args(["--lr", "3e-4", "--checkpoints", "none", "--out", out.to_str().unwrap()])
        .env("XNER_DATA", common::panx_dir())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    out
}

/// Per real token: the logits of `model` on `batches`.
fn logits(model: &TokenClassifier, batches: &[xner::model::Batch]) -> Vec<Vec<f32>> {
    let mut rows = vec![];
    for batch in batches {
        let out = model.forward(batch, None).unwrap().to_vec3::<f32>().unwrap();
        let mask = batch.attention_mask.to_vec2::<u32>().unwrap();
        for (sentence, mask) in out.into_iter().zip(mask) {
            rows.extend(sentence.into_iter().zip(mask).filter(|(_, m)| *m != 0).map(|(r, _)| r));
        }
    }
    rows
}

fn argmax(row: &[f32]) -> usize {
    xner::window::best_label(row).0
}

fn json_of(cmd: &mut std::process::Command) -> serde_json::Value {
    let out = cmd.env("XNER_DATA", common::panx_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bf16_and_int8_stay_close_to_f32_and_a_quantized_directory_runs_as_on_the_fly() {
    let tmp = common::tempdir();
    let dir = fine_tuned(tmp.path());
    let mut model = TokenClassifier::load(&dir, None, 0, &Device::Cpu).unwrap();
    let panx = PanxDir::new(common::panx_dir());
    let corpus = xner::data::load_languages(&panx, &["de".to_string()], "validation", 0, Some(240)).unwrap();
    let aligned = Aligner::from_file(&dir.join("tokenizer.json")).unwrap().align_corpus(&corpus).unwrap();
    let batches = xner::bench::real_batches(&model, &aligned.sentences, 24).unwrap();
    let reference = logits(&model, &batches);
    assert!(reference.len() > 4000, "{} tokens", reference.len());
    // Inference runs a batch's sentences in groups, one per thread: the same numbers, to the
    // bit, for any number of threads (1: one group; 3: three groups over the 24 sentences).
    let in_pool = |threads: usize, model: &TokenClassifier| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| logits(model, &batches))
    };
    assert_eq!(in_pool(1, &model), reference, "f32 on one thread");
    assert_eq!(in_pool(3, &model), reference, "f32 on three threads");
    for (precision, max_relative_error) in [(Precision::Bf16, 0.02), (Precision::Int8, 0.05)] {
        model.set_precision(precision).unwrap();
        let ours = logits(&model, &batches);
        assert_eq!(in_pool(1, &model), ours, "{precision} on one thread");
        let (mut err, mut norm, mut agree) = (0f64, 0f64, 0usize);
        for (a, b) in ours.iter().zip(&reference) {
            err += a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>();
            norm += b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>();
            agree += (argmax(a) == argmax(b)) as usize;
        }
        let relative = (err / norm).sqrt();
        let agreement = agree as f64 / reference.len() as f64;
        eprintln!(
            "{precision}: relative error {relative:.4}, same label on {:.2} % of {} tokens",
            100.0 * agreement,
            reference.len()
        );
        assert!(relative < max_relative_error, "{precision}: relative error {relative}");
        assert!(agreement >= 0.99, "{precision}: same label on {agreement}");
        // Not the f32 numbers: the low-precision path really ran.
        assert!(relative > 1e-5, "{precision}: identical to f32");
    }
    model.set_precision(Precision::F32).unwrap();
    assert_eq!(logits(&model, &batches), reference, "back to f32, the f32 numbers exactly");

    // The quantized directory: smaller, and at int8 the same predictions as quantizing on the fly.
    let quantized = tmp.path().join("e5-de-int8");
    let report =
        json_of(common::xner().args(["quantize", dir.to_str().unwrap(), quantized.to_str().unwrap(), "--json"]));
    assert_eq!(report["quantized_tensors"], 72, "{report}");
    assert!(report["bytes_after"].as_u64() < report["bytes_before"].as_u64(), "{report}");
    // `eval` of 300 validation sentences, with the environment's switches to other engines:
    // `XNER_NO_AVX512` for gemm's path (as on CPUs without AVX-512) instead of the AVX-512
    // products, `XNER_NO_AMX` and `XNER_NO_VNNI` for int8 on VNNI or portable code,
    // `XNER_NO_DPBF16` and `XNER_DPBF16=emulate` for bf16 without or with vdpbf16ps.
    let eval_on = |model: &Path, precision: &str, switches: &[&str]| {
        let mut cmd = common::xner();
        cmd.args(["eval", "--model", model.to_str().unwrap(), "--langs", "de", "--split", "validation"]).args([
            "--max-samples",
            "300",
            "--precision",
            precision,
            "--json",
        ]);
        for switch in switches {
            let (name, value) = switch.split_once('=').unwrap_or((switch, "1"));
            cmd.env(name, value);
        }
        json_of(&mut cmd)["de"].clone()
    };
    let eval = |model: &Path, precision: &str| eval_on(model, precision, &[]);
    let (f32_eval, int8_eval, int8_file) = (eval(&dir, "f32"), eval(&dir, "int8"), eval(&quantized, "int8"));
    // The AVX-512 products sum in gemm's order (their unit tests check the bits), but attention
    // on AVX-512 sums in its own: the same predictions, and the loss within rounding.
    let gemm_eval = eval_on(&dir, "f32", &["XNER_NO_AVX512"]);
    for key in ["f1", "report"] {
        assert_eq!(gemm_eval[key], f32_eval[key], "{key}");
    }
    let (gemm_loss, f32_loss) = (gemm_eval["loss"].as_f64().unwrap(), f32_eval["loss"].as_f64().unwrap());
    assert!((gemm_loss - f32_loss).abs() <= 1e-6 * f32_loss, "loss {gemm_loss} with gemm, {f32_loss} on AVX-512");
    // int8's sums are exact on every engine: the tile unit (where the CPU has one), VNNI (where
    // it has that) and the portable dot products evaluate to the last digit alike.
    let int8_vnni = eval_on(&dir, "int8", &["XNER_NO_AMX"]);
    let int8_portable = eval_on(&dir, "int8", &["XNER_NO_AMX", "XNER_NO_VNNI"]);
    for key in ["f1", "loss", "report"] {
        assert_eq!(int8_vnni[key], int8_eval[key], "VNNI {key}");
        assert_eq!(int8_portable[key], int8_eval[key], "portable {key}");
    }
    // bf16 on each engine this CPU can run: the tile unit, vdpbf16ps (emulated on AVX-512 F
    // where the CPU lacks it), the f32 GEMM on rounded operands. Their sums differ only in
    // order and rounding: each close to f32, and the engine named is the one asked for.
    let mut bf16_runs = vec![eval_on(&dir, "bf16", &["XNER_NO_AMX", "XNER_NO_DPBF16"])];
    assert_eq!(bf16_runs[0]["engine"], "f32 GEMM on bf16-rounded operands");
    if xner::sgemm::available() {
        let dot = eval_on(&dir, "bf16", &["XNER_NO_AMX", "XNER_DPBF16=emulate"]);
        let engine = dot["engine"].as_str().unwrap_or_default().to_string();
        assert!(engine.contains("vdpbf16ps"), "{engine}");
        bf16_runs.push(dot);
    }
    bf16_runs.push(eval(&dir, "bf16"));
    for run in &bf16_runs {
        let (a, b) = (f32_eval["f1"].as_f64().unwrap(), run["f1"].as_f64().unwrap());
        assert!((a - b).abs() < 0.02, "f32 F1 {a}, bf16 on {} {b}", run["engine"]);
        assert_eq!(run["precision"], "bf16");
    }
    assert_eq!(int8_eval["f1"], int8_file["f1"]);
    assert_eq!(int8_eval["loss"], int8_file["loss"]);
    let (a, b) = (f32_eval["f1"].as_f64().unwrap(), int8_eval["f1"].as_f64().unwrap());
    assert!((a - b).abs() < 0.02, "f32 F1 {a}, int8 {b}");
    let tag = |model: &Path, precision: &str| {
        json_of(
            common::xner()
                .args(["tag", "--model", model.to_str().unwrap(), "--precision", precision, "--json"])
                .arg("Angela Merkel besuchte am Montag das Werk von Siemens in Erlangen ."),
        )
    };
    assert_eq!(tag(&dir, "int8"), tag(&quantized, "int8"));
    // A quantized directory is not quantized twice.
    let again = common::xner()
        .args(["quantize", quantized.to_str().unwrap(), tmp.path().join("x").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("quantized already"));
}

#[test]
fn an_unknown_precision_is_refused_with_the_choices() {
    let out = common::xner().args(["tag", "--model", "x", "--precision", "fp16", "hello"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("f32") && err.contains("bf16") && err.contains("int8"), "{err}");
}
