//! The `xner` command line: arguments parsed into typed values, one file per command, each a
//! thin layer over the library.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};

use xner::data::PanxDir;
use xner::data::{Format, LabelSet, ReadOptions, Scheme, UnknownLabels};
use xner::experiments::{Alignment, EvalSettings, Setup};
use xner::lowp::Precision;
use xner::train::{Checkpoints, TrainOptions};

pub mod align;
pub mod analyze;
pub mod bench;
pub mod curve;
pub mod data;
pub mod eval;
pub mod import;
pub mod quantize;
pub mod report;
pub mod score;
pub mod serve;
pub mod table;
pub mod tag;
pub mod tokenize;
pub mod train;
pub mod transfer;

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
pub struct Cli {
    /// Threads for every parallel part (default: all cores).
    #[arg(long, global = true, value_parser = count(1, 4096))]
    pub threads: Option<usize>,
    /// Where the model runs: cpu (fused kernels), or cuda / cuda:N with an xner built with
    /// `--features cuda`.
    #[arg(long, global = true, env = "XNER_DEVICE", default_value = "cpu")]
    pub device: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Look at the PAN-X corpus: split sizes, entity counts, single examples.
    #[command(subcommand)]
    Data(DataCommand),
    /// Tokenize a text with a tokenizer.json (XLM-R SentencePiece), optionally beside BERT WordPiece.
    Tokenize(tokenize::TokenizeArgs),
    /// Show how one sentence's word labels are aligned to subword tokens (-100 shown as IGN).
    Align(align::AlignArgs),
    /// Entity-level precision/recall/F1 of a `token gold pred` file, as seqeval computes them.
    Score(score::ScoreArgs),
    /// Fine-tune a token classifier on PAN-X and print the epoch table (loss, validation loss, F1).
    Train(train::TrainArgs),
    /// Entity F1 per language and the seqeval classification report of a trained model.
    Eval(eval::EvalArgs),
    /// Tag a text: subword tokens with predicted tags, and the entities with character offsets.
    Tag(tag::TagArgs),
    /// Zero-shot cross-lingual transfer: fine-tune on one language, test F1 on each.
    Transfer(transfer::TransferArgs),
    /// F1 against the number of target-language training samples, with the zero-shot F1 as a line.
    Curve(curve::CurveArgs),
    /// The book's final table: test F1 when trained on German, on each language, on all at once.
    Table(table::TableArgs),
    /// Gather the experiment outputs under a directory into one Markdown page.
    Report(report::ReportArgs),
    /// Error analysis: per-token losses grouped by token and label, worst sentences, confusion
    /// matrix (text and SVG), and the sentences whose gold labels the model most contradicts.
    Analyze(analyze::AnalyzeArgs),
    /// Time a training step's phases (forward, backward, optimizer) and inference on synthetic batches.
    Bench(bench::BenchArgs),
    /// An HTTP NER service: POST /v1/ner, dynamic batching, /health, /v1/model, /metrics and a
    /// page at / that highlights entities.
    Serve(serve::ServeArgs),
    /// Write an int8 copy of a trained model directory (the encoder's linear weights, one scale
    /// per output channel), for `--precision int8`.
    Quantize(quantize::QuantizeArgs),
    /// Turn a model shipped in another format into a Hugging Face model directory.
    #[command(subcommand)]
    Import(import::ImportCommand),
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Rows per split and entities per type (counted on B- tags) for each language.
    Stats(data::StatsArgs),
    /// One example as a tokens/tags table.
    Show(data::ShowArgs),
}

/// A whole number in `min..=max` as a `usize` (clap says the range when it is not).
pub fn count(min: u64, max: u64) -> impl clap::builder::TypedValueParser<Value = usize> {
    clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(min..=max), |v| v as usize)
}

/// A finite number above zero (a learning rate).
pub fn positive(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number above 0")),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

/// A finite number of at least zero (a weight decay).
pub fn non_negative(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number of at least 0")),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

/// Where PAN-X lives and how the Swiss corpus is sampled from it.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// PAN-X directory holding <lang>/{train,validation,test}.tsv.
    #[arg(long, env = "XNER_DATA", default_value = "../shared/data/panx")]
    pub data: PathBuf,
    /// Share of each language's splits kept after shuffling (the book's Swiss corpus);
    /// languages not named keep everything.
    #[arg(long, default_value = "de=0.629,fr=0.229,it=0.084,en=0.059")]
    pub fracs: String,
    /// Seed of the shuffle before sampling (datasets' `shuffle(seed=...)`; the book's is 0).
    #[arg(long, default_value_t = 0)]
    pub sample_seed: u64,
    /// Use the whole split, without Swiss sampling.
    #[arg(long)]
    pub full: bool,
}

impl DataArgs {
    pub fn panx(&self) -> Result<PanxDir> {
        let mut panx = PanxDir::new(&self.data);
        panx.fracs = if self.full { vec![] } else { xner::data::parse_fracs(&self.fracs)? };
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

/// The book's fine-tuning hyperparameters (the transformers Trainer's defaults otherwise).
#[derive(Args, Clone)]
pub struct HyperArgs {
    /// Passes over the training sentences.
    #[arg(long, default_value_t = 3, value_parser = count(1, 100_000))]
    pub epochs: usize,
    /// Sentences per step (padded to the longest of the batch).
    #[arg(long, default_value_t = 24, value_parser = count(1, 65_536))]
    pub batch_size: usize,
    /// Peak learning rate of AdamW, decayed linearly to 0.
    #[arg(long, default_value_t = 5e-5, value_parser = positive)]
    pub lr: f64,
    /// AdamW's decoupled weight decay (not on biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01, value_parser = non_negative)]
    pub weight_decay: f64,
    /// Seed of the head's initialisation, the epoch shuffles, dropout, and multilingual mixing.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Batches of random sentences instead of length-grouped ones (more padding, slower).
    #[arg(long)]
    pub no_group_by_length: bool,
}

impl HyperArgs {
    pub fn options(&self, save_steps: usize) -> TrainOptions {
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

/// How corpus files (`--train`, `--validation`, `--test`, `--file`, `data stats FILE`) are read.
#[derive(Args, Clone, Default)]
pub struct CorpusArgs {
    /// The files' format; default: from the extension (.parquet, .jsonl/.json) and content.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Column files: the 1-based column holding the token (default: the first).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub token_column: Option<u16>,
    /// Column files: the 1-based column holding the tag (default: the last).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub tag_column: Option<u16>,
    /// The files' tagging scheme; default: detected (and said). Every scheme is read into IOB2.
    #[arg(long, value_enum)]
    pub scheme: Option<Scheme>,
    /// The label set, in order: comma-separated, or a file (a JSON list or one label a line).
    /// For training it is the model's label set (default: read from the training file, O first,
    /// then B-/I- of each type); it also names integer tags (JSON Lines, Parquet).
    #[arg(long)]
    pub labels: Option<String>,
    /// A validation or test label the model does not know: `error` (naming file, line and
    /// label) or `as-o` (read as O, and counted).
    #[arg(long, value_enum, default_value_t = UnknownLabels::Error)]
    pub unknown_labels: UnknownLabels,
    /// Make the warnings about a file errors: tags that break their scheme's rules (an I- after
    /// O in IOB2, a lone E- in BIOES) and labels read as O.
    #[arg(long)]
    pub strict_data: bool,
}

impl CorpusArgs {
    /// The reading options these flags give (the label list read and checked once, here).
    pub fn read_options(&self) -> Result<ReadOptions> {
        let labels = match &self.labels {
            Some(arg) => Some(xner::data::parse_label_list(arg)?),
            None => None,
        };
        let fixed = match &labels {
            Some(names) => Some(LabelSet::from_names(names.clone(), "--labels")?),
            None => None,
        };
        Ok(ReadOptions {
            format: self.format,
            token_column: self.token_column.map(usize::from),
            tag_column: self.tag_column.map(usize::from),
            scheme: self.scheme,
            labels: fixed,
            unknown: self.unknown_labels,
            tag_names: labels,
            strict: self.strict_data,
        })
    }
}

/// Reads a corpus file, keeping its first `limit` sentences, and says on stderr what was found
/// there (format, scheme, problems).
pub fn read_corpus_file(
    path: &Path,
    options: &ReadOptions,
    quiet: bool,
    limit: Option<usize>,
) -> Result<xner::data::Corpus> {
    let (mut corpus, report) = xner::data::read_corpus_with_report(path, options)?;
    if let Some(n) = limit {
        corpus.sentences.truncate(n);
    }
    if !quiet {
        print_read(&report, corpus.len());
    }
    Ok(corpus)
}

/// What reading a file found, on stderr, with a warning where tags broke the scheme or were
/// unknown.
pub fn print_read(report: &xner::data::ReadReport, sentences: usize) {
    eprintln!("{}", describe_read(report, sentences));
    if report.violations > 0 || report.unknown_as_o > 0 {
        eprintln!("warning: {}: see above (--strict-data makes this an error)", report.path.display());
    }
}

/// One line on what reading a file found.
pub fn describe_read(report: &xner::data::ReadReport, sentences: usize) -> String {
    let mut line = format!(
        "{}: {sentences} sentences, {}, {} tags{}",
        report.path.display(),
        format_name(report.format),
        report.scheme.name(),
        if report.scheme_detected { " (detected; --scheme to say otherwise)" } else { "" }
    );
    if report.violations > 0 {
        line += &format!(
            "; {} tags break {}'s rules, first at {}",
            report.violations,
            report.scheme.name(),
            report.first_violation.as_deref().unwrap_or("?")
        );
    }
    if report.unknown_as_o > 0 {
        line += &format!("; {} tags read as O ({})", report.unknown_as_o, report.unknown_labels.join(" "));
    }
    line
}

/// A format as its `--format` value names it.
pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Columns => "columns",
        Format::Jsonl => "jsonl",
        Format::Parquet => "parquet",
    }
}

/// Windows for sentences and texts longer than the model takes.
#[derive(Args, Clone)]
pub struct WindowArgs {
    /// The longest model input in tokens, special tokens included (default: the model's limit,
    /// 512 for XLM-R and BERT). Longer sentences are never truncated: they run as overlapping
    /// windows, and each word takes its prediction from the window where it is most central.
    #[arg(long, value_parser = clap::value_parser!(u32).range(8..=100_000))]
    pub max_length: Option<u32>,
    /// Tokens shared by consecutive windows (transformers' `stride`).
    #[arg(long, default_value_t = xner::experiments::DEFAULT_STRIDE, value_parser = count(0, 100_000))]
    pub stride: usize,
}

impl WindowArgs {
    /// The window and stride fit together (checked before any model is loaded; the model's own
    /// limit, when --max-length is not given, is checked once it is).
    pub fn validate(&self) -> Result<()> {
        Ok(self.alignment(false).check()?)
    }

    /// How a trained model is scored in this window.
    pub fn eval_settings(
        &self,
        batch_size: usize,
        show_progress: bool,
        device: &Device,
        precision: Precision,
    ) -> EvalSettings {
        EvalSettings {
            alignment: self.alignment(false),
            precision,
            ..EvalSettings::new(batch_size, show_progress, device.clone())
        }
    }

    pub fn alignment(&self, label_all_subwords: bool) -> Alignment {
        Alignment { max_len: self.max_length.map(|n| n as usize), stride: self.stride, label_all_subwords }
    }
}

/// The number format of inference.
#[derive(Args, Clone, Copy)]
pub struct PrecisionArgs {
    /// The encoder's linear layers in f32, bf16 or int8 (bf16 and int8 run on the AMX tile
    /// unit where the CPU has one; int8 on AVX-512 VNNI elsewhere, then portable code; the rest
    /// of the model stays f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

impl PrecisionArgs {
    /// The precision asked for, with a note on stderr where this CPU runs it slowly.
    pub fn chosen(&self) -> Precision {
        note_caveat(&format!("--precision {}", self.precision), self.precision);
        self.precision
    }
}

/// Says on stderr, after `flag`, what `precision` costs on this CPU, where that is worth saying.
pub fn note_caveat(flag: &str, precision: Precision) {
    if let Some(caveat) = precision.caveat() {
        eprintln!("note: {flag}: {caveat}");
    }
}

/// The training settings every experiment shares.
#[derive(Args, Clone)]
pub struct ExperimentArgs {
    /// The pretrained body: a model directory or a Hugging Face hub id.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Keep only the first N training sentences of each run.
    #[arg(long, value_parser = count(1, u32::MAX as u64))]
    pub max_train_samples: Option<usize>,
    /// Keep only the first N validation sentences.
    #[arg(long, value_parser = count(1, u32::MAX as u64))]
    pub max_eval_samples: Option<usize>,
    /// Keep only the first N test sentences of each language.
    #[arg(long, value_parser = count(1, u32::MAX as u64))]
    pub max_test_samples: Option<usize>,
    /// Output directory: runs, JSON, CSV and plots.
    #[arg(long)]
    pub out: PathBuf,
    /// What each run keeps of its checkpoints: `keep` the newest, `while-training` (until its
    /// final model is saved), `none` (an interrupted run starts over).
    #[arg(long, value_enum, default_value_t = Checkpoints::WhileTraining)]
    pub checkpoints: Checkpoints,
}

impl ExperimentArgs {
    pub fn setup(&self, device: &Device) -> Result<Setup> {
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

/// Terminal width for wrapped tables.
pub fn term_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100)
}

/// A tokenizer path may name the file or the model directory holding it.
pub fn tokenizer_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        // candle's matrix products read RAYON_NUM_THREADS; the rest runs on rayon's pool.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let device = xner::device::parse(&cli.device)?;
    if matches!(cli.command, Command::Train(_) | Command::Transfer(_) | Command::Curve(_) | Command::Table(_)) {
        stop_training_on_signals();
    }
    if let Command::Serve(_) = &cli.command {
        // The server's own threads call into rayon's global pool.
        if let Some(n) = cli.threads {
            rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("--threads")?;
        }
        return dispatch(&cli, &device);
    }
    // The command itself runs on one of the pool's threads, not beside the pool. From outside,
    // each parallel op hands its work to the pool and sleeps until a worker wakes it, and it
    // waits for a sleeping worker to wake first; on a VM each wake-up is an interrupt to
    // another virtual CPU. From inside, the calling thread works on its share at once and takes
    // back what no other thread has started. Training on 2 cores: 1-5 % faster, the same bits.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.unwrap_or(0))
        // The main thread's stack, not a worker's 2 MiB: candle's backward pass recurses.
        .stack_size(8 << 20)
        .thread_name(|i| format!("xner-{i}"))
        .build()
        .context("--threads")?;
    pool.install(|| dispatch(&cli, &device))
}

fn dispatch(cli: &Cli, device: &Device) -> Result<()> {
    match &cli.command {
        Command::Train(a) => train::run(a, device),
        Command::Eval(a) => eval::run(a, device),
        Command::Tag(a) => tag::run(a, device),
        Command::Analyze(a) => analyze::run(a, device),
        Command::Transfer(a) => transfer::run(a, device),
        Command::Curve(a) => curve::run(a, device),
        Command::Table(a) => table::run(a, device),
        Command::Report(a) => report::run(a),
        Command::Bench(a) => bench::run(a, device),
        Command::Serve(a) => serve::run(a, device),
        Command::Quantize(a) => quantize::run(a),
        Command::Data(DataCommand::Stats(a)) => data::stats(a),
        Command::Data(DataCommand::Show(a)) => data::show(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Align(a) => align::run(a),
        Command::Score(a) => score::run(a),
        Command::Import(c) => import::run(c),
    }
}

/// Ctrl-C or SIGTERM while training: the first asks training to stop after its current step
/// and save a checkpoint (an epoch of work is otherwise lost); a second ends the process at once.
fn stop_training_on_signals() {
    #[cfg(unix)]
    {
        extern "C" fn on_signal(_: libc::c_int) {
            if xner::train::request_stop() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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

    /// The message clap gives for a rejected command line.
    fn rejected(args: &[&str]) -> String {
        match Cli::try_parse_from(args) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn train_with(flags: &[&str]) -> Vec<&'static str> {
        let mut v = vec!["xner", "train", "--model", "m", "--out", "o"];
        v.extend(flags.iter().map(|f| -> &'static str { Box::leak(f.to_string().into_boxed_str()) }));
        v
    }

    #[test]
    fn batch_size_zero_is_rejected_with_the_range() {
        assert!(rejected(&train_with(&["--batch-size", "0"])).contains("0 is not in 1..=65536"));
        assert!(rejected(&["xner", "eval", "--model", "m", "--batch-size", "0"]).contains("1..=65536"));
        assert!(rejected(&["xner", "tag", "--model", "m", "--batch-size", "0", "x"]).contains("1..=4096"));
        assert!(rejected(&["xner", "analyze", "--model", "m", "--batch-size", "0"]).contains("1..=65536"));
        assert!(rejected(&["xner", "bench", "--model", "m", "--batch-size", "0"]).contains("1..=65536"));
    }

    #[test]
    fn epochs_zero_is_rejected() {
        assert!(rejected(&train_with(&["--epochs", "0"])).contains("0 is not in 1..=100000"));
    }

    #[test]
    fn learning_rate_must_be_a_finite_number_above_zero() {
        for lr in ["--lr=0", "--lr=-1e-5", "--lr=nan", "--lr=inf"] {
            assert!(rejected(&train_with(&[lr])).contains("not a finite number above 0"), "{lr}");
        }
        assert!(rejected(&train_with(&["--lr", "fast"])).contains("invalid float"));
    }

    #[test]
    fn weight_decay_must_not_be_negative() {
        assert!(rejected(&train_with(&["--weight-decay=-0.1"])).contains("at least 0"));
    }

    #[test]
    fn sample_limits_threads_and_sizes_start_at_one() {
        assert!(rejected(&train_with(&["--max-train-samples", "0"])).contains("1..="));
        assert!(rejected(&["xner", "--threads", "0", "data", "stats"]).contains("1..=4096"));
        assert!(rejected(&["xner", "curve", "--model", "m", "--out", "o", "--sizes", "250,0"]).contains("0 is not in"));
        assert!(rejected(&["xner", "data", "stats", "f.conll", "--tag-column", "0"]).contains("0 is not in 1.."));
    }

    #[test]
    fn max_length_below_eight_is_rejected() {
        assert!(rejected(&train_with(&["--max-length", "4"])).contains("4 is not in 8..=100000"));
    }

    #[test]
    fn stride_must_leave_windows_room_to_advance() {
        let cli = Cli::parse_from(train_with(&["--max-length", "64", "--stride", "31"]));
        let Command::Train(t) = cli.command else { panic!("not train") };
        let err = t.window.validate().unwrap_err().to_string();
        assert!(err.contains("--stride 31") && err.contains("--max-length 64"), "{err}");
        let cli = Cli::parse_from(train_with(&["--max-length", "64", "--stride", "30"]));
        let Command::Train(t) = cli.command else { panic!("not train") };
        assert!(t.window.validate().is_ok());
    }

    #[test]
    fn save_steps_cannot_go_with_checkpoints_none() {
        let cli = Cli::parse_from(train_with(&["--save-steps", "10", "--checkpoints", "none"]));
        let Command::Train(t) = cli.command else { panic!("not train") };
        let err = train::validate(&t).unwrap_err().to_string();
        assert!(err.contains("--save-steps") && err.contains("--checkpoints none"), "{err}");
    }

    #[test]
    fn serve_limits_have_ranges() {
        let serve = |flags: &[&str]| -> String {
            let mut v = vec!["xner", "serve", "--model", "m"];
            v.extend_from_slice(flags);
            rejected(&v)
        };
        assert!(serve(&["--queue", "0"]).contains("1..="));
        assert!(serve(&["--max-batch-tokens", "8"]).contains("16..="));
        assert!(serve(&["--port", "70000"]).contains("70000"));
        assert!(serve(&["--timeout", "0"]).contains("1..="));
        assert!(serve(&["--aggregation", "sideways"]).contains("possible values"));
    }
}
