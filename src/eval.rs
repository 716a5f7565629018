//! Predictions and entity-level evaluation: forward passes in length-sorted batches (little
//! padding; long sentences windowed, `crate::window`), per-word loss and confidence at
//! first-subword positions, seqeval's report.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::align::{AlignedCorpus, IGNORE_INDEX};
use crate::data::LabelSet;
use crate::error::Result;
use crate::metrics::{self, Mode, Report};
use crate::model::TokenClassifier;
use crate::window::{Sequence, WindowOptions};

/// A progress bar on stderr (hidden when not wanted or not a terminal).
pub fn progress(len: usize, what: &str, show: bool) -> ProgressBar {
    let bar = if show { ProgressBar::new(len as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// The model's view of one sentence at its labelled (first-subword) positions.
#[derive(Clone, Debug, Default)]
pub struct SentencePrediction {
    /// Subword position of each labelled word.
    pub positions: Vec<usize>,
    pub gold: Vec<usize>,
    pub pred: Vec<usize>,
    /// Cross-entropy of the gold label, −log p(gold).
    pub loss: Vec<f32>,
    /// Probability of the predicted label.
    pub confidence: Vec<f32>,
}

/// Runs the model (evaluation mode) over every sentence, windowed where longer than
/// `window.max_len`; results in corpus order, one per word (at its first subword).
pub fn predict(
    model: &TokenClassifier,
    corpus: &AlignedCorpus,
    window: WindowOptions,
    batch_size: usize,
    show_progress: bool,
) -> Result<Vec<SentencePrediction>> {
    let sequences: Vec<Sequence> = corpus.sentences.iter().map(|s| s.sequence()).collect();
    let bar = progress(sequences.len(), "eval", show_progress);
    let log_probs = crate::window::log_probs(model, &sequences, window, batch_size, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let out = corpus
        .sentences
        .iter()
        .zip(log_probs)
        .map(|(s, rows)| {
            let mut p = SentencePrediction::default();
            for j in s.first_subwords() {
                let (gold, lp) = (s.label_ids[j], &rows[j]);
                if gold == IGNORE_INDEX {
                    continue;
                }
                let (best, best_lp) = crate::window::best_label(lp);
                p.positions.push(j);
                p.gold.push(gold as usize);
                p.pred.push(best);
                p.loss.push(-lp[gold as usize]);
                p.confidence.push(best_lp.exp());
            }
            p
        })
        .collect();
    Ok(out)
}

/// Entity-level evaluation of a model on aligned sentences.
pub struct Evaluation {
    /// Mean cross-entropy over all labelled tokens.
    pub loss: f64,
    pub report: Report,
    /// Gold and predicted tags at first-subword positions, per sentence, in corpus order.
    pub gold: Vec<Vec<String>>,
    pub pred: Vec<Vec<String>>,
    pub predictions: Vec<SentencePrediction>,
    pub seconds: f64,
    /// Subword tokens processed (special tokens included, padding not).
    pub tokens: usize,
}

impl Evaluation {
    pub fn f1(&self) -> f64 {
        self.report.micro.f1
    }

    /// The scores as `xner eval --json` prints them (and the Python binding returns them):
    /// seqeval's default and strict reports, loss, counts and speed.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let strict = metrics::classification_report(&self.gold, &self.pred, Mode::Strict)?;
        let words: usize = self.gold.iter().map(Vec::len).sum();
        Ok(serde_json::json!({"f1": self.f1(), "strict_f1": strict.micro.f1, "loss": self.loss,
            "sentences": self.gold.len(), "words_scored": words, "report": self.report, "strict_report": strict,
            "seconds": self.seconds, "tokens": self.tokens}))
    }
}

/// Predicts and scores with seqeval's default mode.
pub fn evaluate(
    model: &TokenClassifier,
    corpus: &AlignedCorpus,
    labels: &LabelSet,
    window: WindowOptions,
    batch_size: usize,
    show_progress: bool,
) -> Result<Evaluation> {
    let start = Instant::now();
    let predictions = predict(model, corpus, window, batch_size, show_progress)?;
    let names = |ids: &[usize]| ids.iter().map(|&i| labels.name(i).to_string()).collect::<Vec<_>>();
    let gold: Vec<Vec<String>> = predictions.iter().map(|p| names(&p.gold)).collect();
    let pred: Vec<Vec<String>> = predictions.iter().map(|p| names(&p.pred)).collect();
    let report = metrics::classification_report(&gold, &pred, Mode::Default)?;
    let (loss_sum, n) =
        predictions.iter().flat_map(|p| &p.loss).fold((0f64, 0usize), |(s, n), &l| (s + l as f64, n + 1));
    Ok(Evaluation {
        loss: if n > 0 { loss_sum / n as f64 } else { f64::NAN },
        report,
        gold,
        pred,
        predictions,
        seconds: start.elapsed().as_secs_f64(),
        tokens: corpus.sentences.iter().map(|s| s.len()).sum(),
    })
}
