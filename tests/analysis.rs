//! Error analysis: consistency of its outputs with independent recomputation.

mod common;

use candle_core::Device;
use xner::align::Aligner;
use xner::analysis;
use xner::batch::collate;
use xner::data::{self, LabelSet, PanxDir};
use xner::model::{token_loss, TokenClassifier};

/// XLM-R's window, with transformers' overflow stride of 128.
const WINDOW: xner::window::WindowOptions = xner::window::WindowOptions { max_len: 512, stride: 128 };

#[test]
fn analysis_is_consistent_with_recomputed_losses() {
    let tmp = common::tempdir();
    let dir = common::tiny_xlmr(&tmp.path().join("tiny"));
    let labels = LabelSet::panx();
    let model = TokenClassifier::load(&dir, Some(labels.names()), 11, &Device::Cpu).unwrap();
    let panx = PanxDir::new(common::panx_dir());
    let corpus = data::load_languages(&panx, &["de".into()], "validation", 0, Some(40)).unwrap();
    let aligned = Aligner::from_file(&dir.join("tokenizer.json")).unwrap().align_corpus(&corpus).unwrap();
    let eval = xner::eval::evaluate(&model, &aligned, &labels, WINDOW, 8, false).unwrap();
    let rows = analysis::token_rows(&corpus, &aligned, &eval.predictions, &labels);
    let a = analysis::analyze(&rows, &eval.predictions, &labels, 5);

    // Every labelled word counted once, in the groups and in the matrix.
    let words: usize = corpus.sentences.iter().map(|s| s.words.len()).sum();
    assert_eq!(a.tokens, words);
    assert_eq!(a.by_label.iter().map(|g| g.count).sum::<usize>(), words);
    assert_eq!(a.confusion_counts.iter().flatten().sum::<usize>(), words);
    for (row, counts) in a.confusion.iter().zip(&a.confusion_counts) {
        let total: f64 = row.iter().sum();
        if counts.iter().sum::<usize>() > 0 {
            assert!((total - 1.0).abs() < 1e-9, "row sums to {total}");
        }
    }
    for g in &a.by_label {
        assert!((g.mean * g.count as f64 - g.sum).abs() < 1e-6);
    }

    // Worst list: sorted, and each total equals the loss recomputed on the sentence alone.
    assert_eq!(a.worst.len(), 5);
    assert!(a.worst.windows(2).all(|w| w[0].score >= w[1].score));
    for s in &a.worst {
        let sentence = &aligned.sentences[s.index];
        let batch = collate(&model, &[sentence], &Device::Cpu).unwrap();
        let logits = model.forward(&batch, None).unwrap();
        let mean = token_loss(&logits, &batch.labels).unwrap().unwrap().to_scalar::<f32>().unwrap() as f64;
        let labelled = sentence.label_ids.iter().filter(|&&l| l != -100).count() as f64;
        assert!((mean * labelled - s.score).abs() < 1e-3 * s.score.max(1.0), "sentence {}", s.index);
        assert_eq!(s.tokens.len(), corpus.sentences[s.index].words.len());
        assert_eq!(s.tokens.iter().map(|t| t.word.clone()).collect::<Vec<_>>(), corpus.sentences[s.index].words);
    }
    // The worst sentence is the one with the largest total over the whole split.
    let max_total = eval.predictions.iter().map(|p| p.loss.iter().map(|&l| l as f64).sum::<f64>()).fold(0.0, f64::max);
    assert!((a.worst[0].score - max_total).abs() < 1e-9);
    // Label noise: sorted by the confidence of a contradicting prediction.
    assert!(a.label_noise.windows(2).all(|w| w[0].score >= w[1].score));
    for s in &a.label_noise {
        let best = s.tokens.iter().filter(|t| t.gold != t.pred).map(|t| t.confidence as f64).fold(0.0, f64::max);
        assert_eq!(best, s.score);
    }
}

#[test]
fn analyze_command_writes_its_files() {
    let tmp = common::tempdir();
    let dir = common::tiny_xlmr(&tmp.path().join("tiny"));
    // A model directory with a head: save the tiny body with a fresh head.
    let labels = LabelSet::panx();
    let model = TokenClassifier::load(&dir, Some(labels.names()), 1, &Device::Cpu).unwrap();
    let with_head = tmp.path().join("with-head");
    xner::train::save_model_dir(&model, &dir.join("tokenizer.json"), &with_head).unwrap();
    let out = tmp.path().join("analysis");
    let status = common::xner()
        .args(["analyze", "--max-samples", "30", "--model"])
        .arg(&with_head)
        .arg("--out")
        .arg(&out)
        .env("XNER_DATA", common::panx_dir())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("Normalized confusion matrix") && stdout.contains("highest total loss"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analysis.json")).unwrap()).unwrap();
    assert_eq!(json["labels"].as_array().unwrap().len(), 7);
    let svg = std::fs::read_to_string(out.join("confusion.svg")).unwrap();
    assert_eq!(svg.matches("<rect x=").count(), 49);
    let csv = std::fs::read_to_string(out.join("tokens.csv")).unwrap();
    assert_eq!(csv.lines().count() - 1, json["tokens"].as_u64().unwrap() as usize);
}
