//! `xner tag`: entities in a text, in every line of a file, or in a whole document of any
//! length (long inputs run as overlapping windows; offsets point into the input).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;

use super::{term_width, PrecisionArgs, WindowArgs};
use xner::infer::{Tagged, Tagger};
use xner::pipeline::Aggregation;

#[derive(Args)]
pub struct TagArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    #[arg(long)]
    pub model: String,
    /// Print JSON (with --file: one JSON object per input line).
    #[arg(long)]
    pub json: bool,
    /// Tag every line of this file ("-": standard input) instead of TEXT; prints one row per
    /// entity: line number, label, text, start and end character.
    #[arg(long, conflicts_with_all = ["text", "document"])]
    pub file: Option<PathBuf>,
    /// Tag this file ("-": standard input) as one document, whatever its length; prints one row
    /// per entity: label, text, start and end character in the document.
    #[arg(long, conflicts_with = "text")]
    pub document: Option<PathBuf>,
    /// Texts per forward pass (batches are formed in order of length).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// How subword predictions become entities: `words` (the tokenizer's words, each labelled
    /// by its first subword) or one of transformers' pipeline strategies, with its semantics
    /// exactly: `simple`, `first`, `average`, `max`, `none` (one entry per subword).
    #[arg(long, value_enum, default_value_t = Aggregation::Words)]
    pub aggregation: Aggregation,
    /// The text to tag.
    #[arg(required_unless_present_any = ["file", "document"])]
    pub text: Vec<String>,
}

/// A file's text, or standard input's for "-".
fn read_text(path: &Path) -> Result<String> {
    let mut content = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut content).context("reading standard input")?;
    } else {
        content = std::fs::read_to_string(path).map_err(|e| xner::Error::io(path, e))?;
    }
    Ok(content)
}

pub fn run(args: &TagArgs, device: &Device) -> Result<()> {
    args.window.validate()?;
    let model_dir = xner::hub::resolve_model(&args.model)?;
    let alignment = args.window.alignment(false);
    let tagger = Tagger::load(&model_dir, device, alignment.max_len, alignment.stride, args.precision.chosen())?;
    if let Some(path) = &args.file {
        return tag_file(&tagger, path, args);
    }
    let document = args.document.as_deref().map(read_text).transpose()?;
    let text = document.unwrap_or_else(|| args.text.join(" "));
    let start = std::time::Instant::now();
    let tagged = tagger.tag(&[&text], args.aggregation, args.batch_size as usize)?.remove(0);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tagged)?);
        return Ok(());
    }
    if args.document.is_some() {
        print_document(&tagged)?;
        eprintln!(
            "tagged {} characters ({} tokens) in {:.2} s",
            text.chars().count(),
            tagged.tokens.len(),
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    print!("{}", xner::table::rows(&[("Tokens", tagged.tokens.clone()), ("Tags", tagged.tags.clone())], term_width()));
    println!();
    let body: Vec<Vec<String>> = tagged
        .entities
        .iter()
        .map(|e| {
            vec![e.label.clone(), e.text.clone(), e.start.to_string(), e.end.to_string(), format!("{:.3}", e.score)]
        })
        .collect();
    print!("{}", xner::table::columns(&["entity", "text", "start", "end", "score"], &body));
    Ok(())
}

/// One row per entity of a document: label, text, start, end.
fn print_document(tagged: &Tagged) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in &tagged.entities {
        writeln!(out, "{}\t{}\t{}\t{}\t{:.4}", e.label, e.text, e.start, e.end, e.score)?;
    }
    out.flush()?;
    Ok(())
}

/// One line's JSON with `--file --json`.
#[derive(serde::Serialize)]
struct Line<'a> {
    line: usize,
    #[serde(flatten)]
    tagged: &'a Tagged,
}

/// `xner tag --file`: every line of a file (or stdin) in length-sorted batches.
pub fn tag_file(tagger: &Tagger, path: &Path, args: &TagArgs) -> Result<()> {
    let name = path.display().to_string();
    let content = read_text(path)?;
    let lines: Vec<&str> = content.lines().collect();
    // Timed from tokenization on, as a pipeline call is: loading excluded.
    let start = std::time::Instant::now();
    let encoded: Vec<(&str, tokenizers::Encoding)> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| Ok((*line, tagger.encode(line).with_context(|| format!("{name}:{}", i + 1))?)))
        .collect::<Result<_>>()?;
    let tagged = tagger.tag_encoded(&encoded, args.aggregation, args.batch_size as usize, true)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, t) in tagged.iter().enumerate() {
        if args.json {
            // Serialized from the structs (not through `json!`), so scores print as `tag --json`'s do.
            serde_json::to_writer(&mut out, &Line { line: i + 1, tagged: t })?;
            writeln!(out)?;
        } else {
            for e in &t.entities {
                writeln!(out, "{}\t{}\t{}\t{}\t{}\t{:.4}", i + 1, e.label, e.text, e.start, e.end, e.score)?;
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
