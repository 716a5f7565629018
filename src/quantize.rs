//! `xner quantize`: a model directory with the encoder's linear weights stored in int8 — one
//! scale per output channel, as `--precision int8` quantizes them on the fly — so the copy on
//! disk is smaller and loads without the quantization pass.
//!
//! The layout: `model.safetensors` holds each encoder linear weight (torch's (out, in)) as I8
//! under its transformers name, with its scales (out,) as F32 under `<name>_scale`; every other
//! tensor stays F32. config.json says so under `xner_quantization`. transformers cannot load
//! such a directory (it has no int8 Linear of this form); xner loads it at any precision
//! (in f32 and bf16 from the dequantized weights, w = scale·q; in int8 the same integers again).

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::checkpoint::{self, Int8Tensor, NamedTensor};
use crate::error::{Error, Result};
use crate::lowp::{int8_scale, int8_value};
use crate::model::TokenClassifier;

/// The config.json key of a quantized directory.
pub const CONFIG_KEY: &str = "xner_quantization";
const SCALE_SUFFIX: &str = "_scale";

/// Whether `name` is one of the linear weights int8 inference quantizes: q, k, v, the
/// attention output, the intermediate and output dense layers of each encoder layer.
pub fn is_encoder_linear(name: &str) -> bool {
    let Some((_, rest)) = name.split_once("encoder.layer.") else { return false };
    let Some((_, layer_part)) = rest.split_once('.') else { return false };
    matches!(
        layer_part,
        "attention.self.query.weight"
            | "attention.self.key.weight"
            | "attention.self.value.weight"
            | "attention.output.dense.weight"
            | "intermediate.dense.weight"
            | "output.dense.weight"
    )
}

/// Whether the directory's config.json marks it quantized.
pub fn is_quantized(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|config| config.get(CONFIG_KEY).is_some())
}

/// What `quantize_dir` wrote.
#[derive(Debug, serde::Serialize)]
pub struct QuantizeReport {
    pub quantized_tensors: usize,
    pub quantized_parameters: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Writes the int8 copy of the model directory `src` (a token classifier) to `out`.
pub fn quantize_dir(src: &Path, out: &Path) -> Result<QuantizeReport> {
    if is_quantized(src) {
        return Err(Error::invalid(&src.join("config.json"), "this model directory is quantized already"));
    }
    let model = TokenClassifier::load(src, None, 0, &Device::Cpu)?;
    let mut kept = vec![];
    let mut int8 = vec![];
    let mut parameters = 0;
    for tensor in model.named_tensors()? {
        if !is_encoder_linear(&tensor.name) {
            kept.push(tensor);
            continue;
        }
        let (outs, ins) = (tensor.shape[0], tensor.shape[1]);
        let mut scales = Vec::with_capacity(outs);
        let mut data = Vec::with_capacity(outs * ins);
        for row in tensor.data.chunks(ins) {
            let scale = int8_scale(row.iter().fold(0f32, |m, v| m.max(v.abs())));
            let inverse = 1.0 / scale;
            data.extend(row.iter().map(|&w| int8_value(w, inverse)));
            scales.push(scale);
        }
        parameters += data.len();
        kept.push(NamedTensor { name: format!("{}{SCALE_SUFFIX}", tensor.name), shape: vec![outs], data: scales });
        int8.push(Int8Tensor { name: tensor.name, shape: tensor.shape, data });
    }
    if int8.is_empty() {
        return Err(Error::invalid(src, "no encoder linear weights to quantize"));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // The tokenizer and whatever else describes the model, as they are.
    for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let path = entry.map_err(|e| Error::io(src, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let weights = ["model.safetensors", "pytorch_model.bin", "config.json"].contains(&name.as_str());
        if path.is_file() && !weights && !name.starts_with('.') {
            std::fs::copy(&path, out.join(&name)).map_err(|e| Error::io(&path, e))?;
        }
    }
    let quantized_tensors = int8.len();
    checkpoint::write_safetensors_with(&out.join("model.safetensors"), &kept, &int8)?;
    let mut config = model.config_json()?;
    config[CONFIG_KEY] = serde_json::json!({
        "weights": "int8, symmetric, one scale per output channel",
        "activations": "uint8, one scale and zero point per token, computed at inference",
        "layers": "the encoder's linear layers (q, k, v, attention output, intermediate, output)",
        "scale_suffix": SCALE_SUFFIX,
    });
    checkpoint::write_json(&out.join("config.json"), &config)?;
    checkpoint::sync_dir(out);
    let size = |dir: &Path| -> u64 {
        ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
            .map(|m| m.len())
            .sum()
    };
    Ok(QuantizeReport {
        quantized_tensors,
        quantized_parameters: parameters,
        bytes_before: size(src),
        bytes_after: size(out),
    })
}

/// A quantized `model.safetensors` as f32 tensors: each int8 weight times its scales.
pub fn read_dequantized(path: &Path, device: &Device) -> Result<std::collections::HashMap<String, Tensor>> {
    use candle_core::safetensors::Load;
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(path, format!("cannot read safetensors: {e}")))?;
    let mut tensors = std::collections::HashMap::new();
    for (name, view) in file.tensors() {
        if name.ends_with(SCALE_SUFFIX) && is_encoder_linear(name.trim_end_matches(SCALE_SUFFIX)) {
            continue;
        }
        let tensor = if view.dtype() == Dtype::I8 {
            let bad = |m: &str| Error::invalid(path, format!("tensor {name}: {m}"));
            let shape = view.shape().to_vec();
            let [outs, ins] = shape[..] else { return Err(bad("an int8 tensor must be a matrix")) };
            let scales_name = format!("{name}{SCALE_SUFFIX}");
            let scales = file.tensor(&scales_name).map_err(|_| bad(&format!("no {scales_name}")))?;
            if scales.dtype() != Dtype::F32 || scales.shape() != [outs] {
                return Err(bad(&format!("{scales_name} must be F32 of shape [{outs}]")));
            }
            let scales: Vec<f32> =
                scales.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let data: Vec<f32> =
                view.data().iter().enumerate().map(|(i, &q)| q as i8 as f32 * scales[i / ins.max(1)]).collect();
            Tensor::from_vec(data, (outs, ins), device)?
        } else {
            view.load(device).map_err(|e| Error::invalid(path, format!("tensor {name}: {e}")))?
        };
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_linear_weights_are_named() {
        for name in [
            "bert.encoder.layer.0.attention.self.query.weight",
            "roberta.encoder.layer.11.attention.output.dense.weight",
            "encoder.layer.3.intermediate.dense.weight",
            "bert.encoder.layer.3.output.dense.weight",
        ] {
            assert!(is_encoder_linear(name), "{name}");
        }
        for name in [
            "bert.encoder.layer.0.attention.self.query.bias",
            "bert.encoder.layer.0.attention.output.LayerNorm.weight",
            "bert.embeddings.word_embeddings.weight",
            "classifier.weight",
            "bert.pooler.dense.weight",
        ] {
            assert!(!is_encoder_linear(name), "{name}");
        }
    }
}
