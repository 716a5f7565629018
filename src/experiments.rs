//! The second half of the book's chapter as functions: fine-tuning jobs that find their own
//! finished or interrupted runs, cross-lingual transfer, F1 against the number of
//! target-language samples, the de / each / all table, and a report that gathers it all.
//!
//! Every experiment writes its numbers as JSON and CSV (and plots as SVG) into its directory;
//! a run directory holding `model.safetensors` is finished and reused, one holding
//! `checkpoint-N` is resumed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::align::Aligner;
use crate::data::{self, Corpus, LabelSet, PanxDir, ReadOptions};
use crate::error::{Error, Result};
use crate::eval::{self, Evaluation};
use crate::lowp::Precision;
use crate::model::{Kernels, TokenClassifier};
use crate::shuffle;
use crate::train::{self, Checkpoints, EpochRow, Run, TrainOptions};
use crate::window::WindowOptions;

/// How sentences become model inputs: the window (`--max-length`, default the model's
/// limit; `--stride`) and which subwords carry labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alignment {
    pub max_len: Option<usize>,
    pub stride: usize,
    /// Label every subword of a word (run_ner.py's `label_all_tokens`), not only the first.
    pub label_all_subwords: bool,
}

impl Default for Alignment {
    fn default() -> Self {
        Alignment { max_len: None, stride: DEFAULT_STRIDE, label_all_subwords: false }
    }
}

impl Alignment {
    /// The window and stride fit together, checked before any model is loaded (without a
    /// `max_len`, against 512; the model's own limit is checked once it is loaded).
    pub fn check(&self) -> Result<()> {
        crate::window::WindowOptions::checked(self.max_len.unwrap_or(512), self.stride).map(|_| ())
    }
}

/// Tokens two consecutive windows share (a quarter of XLM-R's 512).
pub const DEFAULT_STRIDE: usize = 128;

/// A fine-tuning job. The label set is the training corpus's; the validation corpus must be
/// read with it.
pub struct FineTune {
    /// A model directory or hub id.
    pub model: String,
    pub train: Corpus,
    pub validation: Corpus,
    pub options: TrainOptions,
    pub alignment: Alignment,
    pub out: PathBuf,
    /// Resume from this run directory or checkpoint.
    pub resume: Option<PathBuf>,
    pub show_progress: bool,
    pub halt_after_steps: Option<usize>,
    /// What is being trained, for the log line.
    pub describe: String,
    /// Where the model trains.
    pub device: Device,
    /// The composed ops and optimizer (what other devices run) on any device.
    pub composed: bool,
    /// The linear layers' products in bf16 (mixed precision, `train --bf16`).
    pub bf16: bool,
    pub checkpoints: Checkpoints,
}

/// The tokenizer of a model directory, aligning as `alignment` says.
fn aligner_for(model_dir: &Path, labels: &LabelSet, alignment: &Alignment) -> Result<Aligner> {
    let aligner = Aligner::from_file(&model_dir.join("tokenizer.json"))?;
    Ok(if alignment.label_all_subwords { aligner.label_all_subwords(labels) } else { aligner })
}

/// Runs a fine-tuning job: tokenizes and aligns, loads (or resumes), trains, saves.
pub fn fine_tune(job: &FineTune) -> Result<Vec<EpochRow>> {
    let model_dir = crate::hub::resolve_model(&job.model)?;
    let tokenizer_json = model_dir.join("tokenizer.json");
    let labels = job.train.labels.clone();
    if job.validation.labels != labels {
        return Err(Error::Usage(format!(
            "the validation corpus's labels ({}) differ from the training corpus's ({})",
            job.validation.labels.names().join(" "),
            labels.names().join(" ")
        )));
    }
    let aligner = aligner_for(&model_dir, &labels, &job.alignment)?;
    let whole_train = aligner.align_corpus(&job.train)?;
    let validation = aligner.align_corpus(&job.validation)?;
    let seed = job.options.seed;
    let (mut model, resume) = match &job.resume {
        Some(path) => {
            let ckpt = train::find_checkpoint(path)?;
            let model = TokenClassifier::load(&ckpt, Some(labels.names()), seed, &job.device)?;
            let state = train::load_training_state(&ckpt, &model)?;
            if job.show_progress {
                eprintln!("resuming from {} (step {})", ckpt.display(), state.1.global_step);
            }
            (model, Some(state))
        }
        None => (TokenClassifier::load(&model_dir, Some(labels.names()), seed, &job.device)?, None),
    };
    let window = WindowOptions::new(&model, job.alignment.max_len, job.alignment.stride)?;
    let (train_set, split) = whole_train.windows(window);
    if job.show_progress && split > 0 {
        eprintln!(
            "{split} training sentences longer than {} tokens became {} windows (stride {})",
            window.max_len,
            train_set.sentences.len() - (whole_train.sentences.len() - split),
            window.stride
        );
    }
    if job.show_progress && validation.longer_than(window.max_len) > 0 {
        eprintln!(
            "{} validation sentences longer than {} tokens are evaluated in windows",
            validation.longer_than(window.max_len),
            window.max_len
        );
    }
    if job.show_progress {
        eprintln!(
            "training {} ({} parameters) on {}: {} sentences, {} validation sentences, {} labels, {} epochs of {} steps",
            job.model,
            model.num_parameters(),
            job.describe,
            train_set.sentences.len(),
            validation.sentences.len(),
            labels.len(),
            job.options.epochs,
            train_set.sentences.len().div_ceil(job.options.batch_size)
        );
    }
    if job.composed {
        model.set_kernels(Kernels::Composed)?;
    }
    if job.bf16 {
        // Evaluation too, as the Trainer's autocast evaluates under bf16=True.
        model.set_kernels(Kernels::FusedBf16)?;
        model.set_precision(Precision::Bf16)?;
    }
    let mut run = Run {
        model,
        labels,
        train: &train_set,
        validation: &validation,
        window,
        out: job.out.clone(),
        tokenizer_json,
        show_progress: job.show_progress,
        halt_after_steps: job.halt_after_steps,
        checkpoints: job.checkpoints,
    };
    train::train(&mut run, &job.options, resume)
}

/// Runs `job` unless its directory already holds a finished model; resumes a checkpointed one.
pub fn fine_tune_once(mut job: FineTune) -> Result<PathBuf> {
    if job.out.join("model.safetensors").exists() {
        if job.show_progress {
            eprintln!("reusing the finished run in {}", job.out.display());
        }
        return Ok(job.out);
    }
    if !train::list_checkpoints(&job.out)?.is_empty() {
        job.resume = Some(job.out.clone());
    }
    fine_tune(&job)?;
    Ok(job.out)
}

/// How an evaluation runs.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    pub batch_size: usize,
    pub show_progress: bool,
    pub device: Device,
    /// The window (`max_len`, `stride`); `label_all_subwords` plays no part in scoring.
    pub alignment: Alignment,
    /// The linear layers' number format.
    pub precision: Precision,
}

impl EvalSettings {
    pub fn new(batch_size: usize, show_progress: bool, device: Device) -> Self {
        EvalSettings { batch_size, show_progress, device, alignment: Alignment::default(), precision: Precision::F32 }
    }
}

/// A trained model with its labels, tokenizer and window, ready to score corpora.
pub struct Evaluator {
    pub model: TokenClassifier,
    pub labels: LabelSet,
    pub aligner: Aligner,
    pub window: WindowOptions,
    pub settings: EvalSettings,
}

impl Evaluator {
    pub fn load(model_dir: &Path, settings: &EvalSettings) -> Result<Self> {
        let mut model = TokenClassifier::load(model_dir, None, 0, &settings.device)?;
        model.set_precision(settings.precision)?;
        // The weights' inference layout is part of loading (outside `seconds`, as ONNX Runtime's
        // session makes its own before the timed runs).
        model.prepare_inference()?;
        let labels = LabelSet::new(model.config.labels().unwrap_or_default());
        let aligner = Aligner::from_file(&model_dir.join("tokenizer.json"))?;
        let window = WindowOptions::new(&model, settings.alignment.max_len, settings.alignment.stride)?;
        Ok(Evaluator { model, labels, aligner, window, settings: settings.clone() })
    }

    /// Scores a corpus read with this model's label set.
    pub fn evaluate(&self, corpus: &Corpus) -> Result<Evaluation> {
        let aligned = self.aligner.align_corpus(corpus)?;
        let long = aligned.longer_than(self.window.max_len);
        if self.settings.show_progress && long > 0 {
            eprintln!("{long} sentences longer than {} tokens are evaluated in windows", self.window.max_len);
        }
        eval::evaluate(
            &self.model,
            &aligned,
            &self.labels,
            self.window,
            self.settings.batch_size,
            self.settings.show_progress,
        )
    }

    /// How corpus files must be read for this model: with its labels.
    pub fn read_options(&self, base: &ReadOptions) -> ReadOptions {
        ReadOptions { labels: Some(self.labels.clone()), ..base.clone() }
    }
}

/// Evaluates a model directory on the `split` of each language.
pub fn evaluate_languages(
    model_dir: &Path,
    panx: &PanxDir,
    langs: &[String],
    split: &str,
    max_samples: Option<usize>,
    settings: &EvalSettings,
) -> Result<Vec<(String, Evaluation)>> {
    let evaluator = Evaluator::load(model_dir, settings)?;
    langs
        .iter()
        .map(|lang| {
            let corpus = data::load_languages(panx, std::slice::from_ref(lang), split, 0, max_samples)?;
            Ok((lang.clone(), evaluator.evaluate(&corpus)?))
        })
        .collect()
}

/// What every experiment shares: the base model, data, training options and sample limits.
#[derive(Clone, Debug)]
pub struct Setup {
    pub model: String,
    pub panx: PanxDir,
    pub options: TrainOptions,
    pub max_train_samples: Option<usize>,
    pub max_eval_samples: Option<usize>,
    pub max_test_samples: Option<usize>,
    pub show_progress: bool,
    pub device: Device,
    /// Of each run (a series of runs keeps only finished models by default).
    pub checkpoints: Checkpoints,
}

impl Setup {
    fn job(&self, train: Corpus, validation: Corpus, out: PathBuf, describe: String) -> FineTune {
        FineTune {
            model: self.model.clone(),
            train,
            validation,
            options: self.options.clone(),
            alignment: Alignment::default(),
            out,
            resume: None,
            show_progress: self.show_progress,
            halt_after_steps: None,
            describe,
            device: self.device.clone(),
            composed: false,
            bf16: false,
            checkpoints: self.checkpoints,
        }
    }

    /// Fine-tunes on the training splits of `langs` (concatenated and shuffled when several),
    /// validating on their validation splits, in `out` (reused or resumed when there).
    pub fn train_on(&self, langs: &[String], out: PathBuf) -> Result<PathBuf> {
        let seed = self.options.seed;
        let train = data::load_languages(&self.panx, langs, "train", seed, self.max_train_samples)?;
        let validation = data::load_languages(&self.panx, langs, "validation", seed, self.max_eval_samples)?;
        fine_tune_once(self.job(train, validation, out, langs.join("+")))
    }

    /// Test F1 of a model directory for each language.
    pub fn test_f1(&self, model_dir: &Path, langs: &[String]) -> Result<BTreeMap<String, f64>> {
        let settings = EvalSettings::new(32, self.show_progress, self.device.clone());
        let evals = evaluate_languages(model_dir, &self.panx, langs, "test", self.max_test_samples, &settings)?;
        Ok(evals.into_iter().map(|(l, e)| (l, e.f1())).collect())
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    crate::checkpoint::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let v = serde_json::to_value(value).map_err(|e| Error::Json { context: path.display().to_string(), source: e })?;
    crate::checkpoint::write_json(path, &v)
}

// ---- cross-lingual transfer ------------------------------------------------------------------

/// Zero-shot transfer: trained on one language, test F1 on each.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub train_lang: String,
    pub f1: BTreeMap<String, f64>,
    pub model: PathBuf,
}

/// Fine-tunes on `train_lang` (in `out/model`) and scores the test split of each language.
pub fn transfer(setup: &Setup, train_lang: &str, langs: &[String], out: &Path) -> Result<Transfer> {
    let model = setup.train_on(&[train_lang.to_string()], out.join("model"))?;
    let result = Transfer { train_lang: train_lang.into(), f1: setup.test_f1(&model, langs)?, model };
    write_json(&out.join("transfer.json"), &result)?;
    let mut csv = String::from("train_lang,eval_lang,f1\n");
    for (l, f) in &result.f1 {
        csv += &format!("{train_lang},{l},{f:.6}\n");
    }
    write_file(&out.join("transfer.csv"), &csv)?;
    Ok(result)
}

// ---- F1 against the number of target-language samples -----------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurvePoint {
    pub samples: usize,
    pub f1: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Curve {
    pub target: String,
    pub points: Vec<CurvePoint>,
    /// Test F1 of the zero-shot model on the target language, if one was given.
    pub zero_shot: Option<f64>,
}

/// The book's `train_on_subset`: the target's training split shuffled with seed 42 (as
/// `dataset.shuffle(seed=42)`), its first `samples` rows; trained, then scored on the test split.
pub fn curve(setup: &Setup, target: &str, sizes: &[usize], zero_shot_from: Option<&Path>, out: &Path) -> Result<Curve> {
    let full = setup.panx.load(target, "train")?;
    let order = shuffle::permutation(42, full.len());
    let validation = data::load_languages(&setup.panx, &[target.to_string()], "validation", 0, setup.max_eval_samples)?;
    let mut points = vec![];
    for &n in sizes {
        if n > full.len() {
            return Err(Error::Usage(format!(
                "--sizes: {n} is more than the {} {target} training sentences",
                full.len()
            )));
        }
        let train = full.select(&order[..n]);
        let dir = out.join(format!("{target}-{n}"));
        let model = fine_tune_once(setup.job(train, validation.clone(), dir, format!("{n} {target} sentences")))?;
        let f1 = setup.test_f1(&model, &[target.to_string()])?[target];
        points.push(CurvePoint { samples: n, f1 });
    }
    let zero_shot = match zero_shot_from {
        Some(dir) => Some(setup.test_f1(dir, &[target.to_string()])?[target]),
        None => None,
    };
    let result = Curve { target: target.into(), points, zero_shot };
    write_json(&out.join("curve.json"), &result)?;
    let mut csv = String::from("samples,f1\n");
    for p in &result.points {
        csv += &format!("{},{:.6}\n", p.samples, p.f1);
    }
    write_file(&out.join("curve.csv"), &csv)?;
    write_file(&out.join("curve.svg"), &curve_svg(&result))?;
    Ok(result)
}

/// F1 against samples on a log axis, the zero-shot F1 as a dashed line (the book's plot).
pub fn curve_svg(c: &Curve) -> String {
    let (w, h, left, right, top, bottom) = (560.0, 360.0, 60.0, 20.0, 30.0, 50.0);
    let xs: Vec<f64> = c.points.iter().map(|p| (p.samples.max(1) as f64).log10()).collect();
    let (xmin, xmax) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let span = if xmax > xmin { xmax - xmin } else { 1.0 };
    let px = |x: f64| left + (x - xmin) / span * (w - left - right);
    let py = |f: f64| top + (1.0 - f) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">F1 on {} test against training samples</text>\n",
        w / 2.0,
        c.target
    );
    for tick in [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] {
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick:.1}</text>\n",
            w - right,
            left - 6.0,
            py(tick) + 4.0,
            y = py(tick)
        );
    }
    let path: Vec<String> = c.points.iter().zip(&xs).map(|(p, &x)| format!("{:.1},{:.1}", px(x), py(p.f1))).collect();
    svg += &format!("<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n", path.join(" "));
    for (p, &x) in c.points.iter().zip(&xs) {
        svg += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(x),
            py(p.f1),
            px(x),
            h - bottom + 18.0,
            p.samples
        );
    }
    if let Some(z) = c.zero_shot {
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#d62728\">zero-shot from de: {z:.3}</text>\n",
            w - right,
            w - right,
            py(z) - 6.0,
            y = py(z)
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">training samples (log scale)</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">F1</text>\n</svg>\n",
        w / 2.0,
        h - 8.0,
        h / 2.0,
        h / 2.0
    );
    svg
}

// ---- the book's final table ------------------------------------------------------------------

/// Rows "de" (trained on German), "each" (each language on itself), "all" (all at once);
/// columns: test F1 per language.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table {
    pub langs: Vec<String>,
    pub rows: BTreeMap<String, BTreeMap<String, f64>>,
    /// The model directory behind each row (per language for "each").
    pub models: BTreeMap<String, BTreeMap<String, PathBuf>>,
}

/// Fills the table from the runs under `dir` (`de/`, `each-<lang>/`, `all/`), training the
/// missing ones.
pub fn table(setup: &Setup, langs: &[String], dir: &Path) -> Result<Table> {
    let first = langs.first().ok_or_else(|| Error::Usage("--langs is empty".into()))?.clone();
    let mut rows = BTreeMap::new();
    let mut models = BTreeMap::new();
    let de_model = setup.train_on(std::slice::from_ref(&first), dir.join(&first))?;
    rows.insert(first.clone(), setup.test_f1(&de_model, langs)?);
    models.insert(first.clone(), langs.iter().map(|l| (l.clone(), de_model.clone())).collect());
    let mut each = BTreeMap::new();
    let mut each_models = BTreeMap::new();
    for lang in langs {
        let model = if *lang == first {
            de_model.clone()
        } else {
            setup.train_on(std::slice::from_ref(lang), dir.join(format!("each-{lang}")))?
        };
        each.insert(lang.clone(), setup.test_f1(&model, std::slice::from_ref(lang))?[lang]);
        each_models.insert(lang.clone(), model);
    }
    rows.insert("each".into(), each);
    models.insert("each".into(), each_models);
    let all_model = setup.train_on(langs, dir.join("all"))?;
    rows.insert("all".into(), setup.test_f1(&all_model, langs)?);
    models.insert("all".into(), langs.iter().map(|l| (l.clone(), all_model.clone())).collect());
    let t = Table { langs: langs.to_vec(), rows, models };
    write_json(&dir.join("table.json"), &t)?;
    write_file(&dir.join("table.csv"), &table_csv(&t))?;
    write_file(&dir.join("table.md"), &table_markdown(&t))?;
    Ok(t)
}

fn row_order(t: &Table) -> Vec<String> {
    let first = t.langs.first().cloned().unwrap_or_default();
    [first, "each".into(), "all".into()].into_iter().filter(|r| t.rows.contains_key(r)).collect()
}

pub fn table_csv(t: &Table) -> String {
    let mut out = format!("train,{}\n", t.langs.join(","));
    for r in row_order(t) {
        let cells: Vec<String> =
            t.langs.iter().map(|l| t.rows[&r].get(l).map(|f| format!("{f:.6}")).unwrap_or_default()).collect();
        out += &format!("{r},{}\n", cells.join(","));
    }
    out
}

pub fn table_markdown(t: &Table) -> String {
    let mut out = format!("| trained on | {} |\n|---|{}\n", t.langs.join(" | "), "---|".repeat(t.langs.len()));
    for r in row_order(t) {
        let cells: Vec<String> =
            t.langs.iter().map(|l| t.rows[&r].get(l).map(|f| format!("{f:.4}")).unwrap_or_default()).collect();
        out += &format!("| {r} | {} |\n", cells.join(" | "));
    }
    out
}

// ---- report ----------------------------------------------------------------------------------

/// One Markdown page from the experiment outputs found under `dir` (recursively): tables,
/// transfer rows, curves (with their SVG), error analyses (with the confusion matrix).
pub fn report(dir: &Path) -> Result<String> {
    let mut files = vec![];
    collect_files(dir, &mut files)?;
    files.sort();
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io(p, e));
    let mut out = format!("# xner report: {}\n\n", dir.display());
    let mut found = 0;
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let parse = |text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| Error::invalid(f, format!("invalid JSON: {e}")))
        };
        match name.as_str() {
            "table.json" => {
                let t: Table =
                    serde_json::from_value(parse(&read(f)?)?).map_err(|e| Error::invalid(f, e.to_string()))?;
                out += &format!("## Test F1 by training language ({})\n\n{}\n", rel(f), table_markdown(&t));
                found += 1;
            }
            "transfer.json" => {
                let t: Transfer =
                    serde_json::from_value(parse(&read(f)?)?).map_err(|e| Error::invalid(f, e.to_string()))?;
                let langs: Vec<String> = t.f1.keys().cloned().collect();
                let cells: Vec<String> = t.f1.values().map(|v| format!("{v:.4}")).collect();
                out += &format!(
                    "## Zero-shot transfer from {} ({})\n\n| trained on | {} |\n|---|{}\n| {} | {} |\n\n",
                    t.train_lang,
                    rel(f),
                    langs.join(" | "),
                    "---|".repeat(langs.len()),
                    t.train_lang,
                    cells.join(" | ")
                );
                found += 1;
            }
            "curve.json" => {
                let c: Curve =
                    serde_json::from_value(parse(&read(f)?)?).map_err(|e| Error::invalid(f, e.to_string()))?;
                out += &format!(
                    "## F1 on {} against training samples ({})\n\n| samples | F1 |\n|---|---|\n",
                    c.target,
                    rel(f)
                );
                for p in &c.points {
                    out += &format!("| {} | {:.4} |\n", p.samples, p.f1);
                }
                if let Some(z) = c.zero_shot {
                    out += &format!("| zero-shot | {z:.4} |\n");
                }
                out += &format!("\n![curve]({})\n\n", rel(&f.with_file_name("curve.svg")));
                found += 1;
            }
            "analysis.json" => {
                let a = parse(&read(f)?)?;
                out += &format!("## Error analysis ({})\n\n{} labelled tokens.\n\n", rel(f), a["tokens"]);
                out += "| label | count | mean loss | total loss |\n|---|---|---|---|\n";
                for g in a["by_label"].as_array().into_iter().flatten() {
                    out += &format!(
                        "| {} | {} | {:.3} | {:.1} |\n",
                        g["key"].as_str().unwrap_or(""),
                        g["count"],
                        g["mean"].as_f64().unwrap_or(0.0),
                        g["sum"].as_f64().unwrap_or(0.0)
                    );
                }
                out += &format!("\n![confusion matrix]({})\n\n", rel(&f.with_file_name("confusion.svg")));
                found += 1;
            }
            _ => {}
        }
    }
    if found == 0 {
        return Err(Error::invalid(
            dir,
            "no experiment outputs (table.json, transfer.json, curve.json, analysis.json) found",
        ));
    }
    Ok(out)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() && !name.starts_with("checkpoint-") && !name.starts_with('.') {
            collect_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    Ok(())
}
