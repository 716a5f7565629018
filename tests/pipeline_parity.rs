//! Entities with scores as transformers' token-classification pipeline gives them, for every
//! aggregation strategy: a small trained model (made here the same way each time) against the
//! pipeline's output on the same model (tests/fixtures/pipeline/entities.json, written by
//! scripts/pipeline_fixtures.py). Labels and offsets must be identical, scores within 1e-4.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use xner::infer::Tagger;
use xner::pipeline::Aggregation;

/// The texts: the first 150 sentences of PAN-X de validation.tsv (words joined by spaces), then
/// free text with punctuation (in the fixture).
fn texts(fixture: &serde_json::Value) -> Vec<String> {
    let path = common::panx_dir().join("de/validation.tsv");
    let corpus = xner::data::read_corpus(&path, &xner::data::ReadOptions::panx()).unwrap();
    let n = fixture["panx_sentences"].as_u64().unwrap() as usize;
    let mut out: Vec<String> = corpus.sentences[..n].iter().map(|s| s.words.join(" ")).collect();
    out.extend(fixture["free_texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()));
    out
}

/// Writes the model for scripts/pipeline_fixtures.py: `XNER_PIPELINE_MODEL=DIR cargo test
/// --release --test pipeline_parity -- --ignored`.
#[test]
#[ignore]
fn write_the_fixture_model() {
    let dir = PathBuf::from(std::env::var("XNER_PIPELINE_MODEL").expect("XNER_PIPELINE_MODEL=DIR"));
    let model = common::trained_tiny_model(&dir);
    println!("{}", model.display());
}

#[test]
fn entities_match_the_transformers_pipeline_for_every_strategy() {
    let fixture_path = common::fixtures().join("pipeline/entities.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixture_path).unwrap()).unwrap();
    let tmp = common::tempdir();
    let model = common::trained_tiny_model(tmp.path());
    let tagger = Tagger::load(&model, &Device::Cpu, None, 128, xner::lowp::Precision::F32).unwrap();
    let texts = texts(&fixture);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut compared = 0;
    for (name, strategy) in [
        ("none", Aggregation::None),
        ("simple", Aggregation::Simple),
        ("first", Aggregation::First),
        ("average", Aggregation::Average),
        ("max", Aggregation::Max),
    ] {
        let ours = tagger.tag(&refs, strategy, 16).unwrap();
        let theirs = fixture["entities"][name].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            let b = b.as_array().unwrap();
            let ours_spans: Vec<(String, u64, u64)> =
                a.entities.iter().map(|e| (e.label.clone(), e.start as u64, e.end as u64)).collect();
            let their_spans: Vec<(String, u64, u64)> = b
                .iter()
                .map(|e| {
                    (e["label"].as_str().unwrap().to_string(), e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap())
                })
                .collect();
            assert_eq!(ours_spans, their_spans, "{name}, text {i}: {:?}", texts[i]);
            for (e, f) in a.entities.iter().zip(b) {
                let score = f["score"].as_f64().unwrap();
                assert!((e.score as f64 - score).abs() < 1e-4, "{name}, text {i}: score {} vs {score}", e.score);
                if strategy == Aggregation::None {
                    assert_eq!(e.index.map(|i| i as u64), f["index"].as_u64());
                }
            }
            compared += a.entities.len();
        }
    }
    assert!(compared > 1000, "the fixture has entities to compare ({compared})");
}
