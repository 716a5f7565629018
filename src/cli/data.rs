//! `xner data stats` and `xner data show`: the corpus's sizes, entities and single examples.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::*;
use xner::align::Aligner;
use xner::data::stats::{FileStats, SubwordStats};

#[derive(Args)]
pub struct StatsArgs {
    /// Corpus files (column/CoNLL, JSON Lines, Parquet) to describe instead of PAN-X: sentences,
    /// words, entities per type, label set, scheme and its violations.
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// A tokenizer.json or model directory: also each file's sentence lengths in subwords, and
    /// how many exceed the window (--max-length, default 512).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The window the subword lengths are compared with.
    #[arg(long, default_value_t = 512, value_parser = super::count(1, 1_000_000))]
    pub max_length: usize,
    #[command(flatten)]
    pub data: DataArgs,
    /// Comma-separated languages.
    #[arg(long, default_value = "de,fr,it,en", value_delimiter = ',')]
    pub langs: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value = "de")]
    pub lang: String,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Row of the (sampled) split.
    #[arg(long, default_value_t = 0)]
    pub index: usize,
}

pub fn stats(args: &StatsArgs) -> Result<()> {
    if !args.files.is_empty() {
        return file_stats(args);
    }
    let panx = args.data.panx()?;
    let stats = xner::data::split_stats(&panx, &args.langs)?;
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
        println!("{}", xner::table::columns(&header, &body));
    }
    Ok(())
}

pub fn show(args: &ShowArgs) -> Result<()> {
    let corpus = args.data.panx()?.load(&args.lang, &args.split)?;
    let sentence = corpus.sentences.get(args.index).with_context(|| {
        format!("--index {} is out of range: {} {} has {} rows", args.index, args.lang, args.split, corpus.len())
    })?;
    let named = [("Tokens", sentence.words.clone()), ("Tags", corpus.tags(sentence))];
    print!("{}", xner::table::rows(&named, term_width()));
    Ok(())
}

/// `xner data stats FILE...`.
fn file_stats(args: &StatsArgs) -> Result<()> {
    let options = args.corpus.read_options()?;
    let aligner = args.tokenizer.as_deref().map(|t| Aligner::from_file(&tokenizer_file(t))).transpose()?;
    let mut all = vec![];
    for path in &args.files {
        let (corpus, report) = xner::data::read_corpus_with_report(path, &options)?;
        let subwords = match &aligner {
            Some(a) => {
                let lengths: Vec<usize> = a.align_corpus(&corpus)?.sentences.iter().map(|s| s.len()).collect();
                Some(SubwordStats::of(&lengths, args.max_length))
            }
            None => None,
        };
        all.push(FileStats::of(&corpus, report, subwords));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut types: Vec<String> = all.iter().flat_map(|f| f.entities.keys().cloned()).collect();
    types.sort();
    types.dedup();
    let mut header = vec!["file", "sentences", "words"];
    header.extend(types.iter().map(String::as_str));
    let body: Vec<Vec<String>> = all
        .iter()
        .map(|f| {
            let mut row = vec![f.read.path.display().to_string(), f.sentences.to_string(), f.words.to_string()];
            row.extend(types.iter().map(|t| f.entities.get(t).copied().unwrap_or(0).to_string()));
            row
        })
        .collect();
    println!("{}", xner::table::columns(&header, &body));
    for f in &all {
        println!("{}", describe_read(&f.read, f.sentences));
        println!("  labels: {}", f.labels.join(" "));
        let w = &f.words_per_sentence;
        println!(
            "  words per sentence: min {} median {} mean {:.1} p95 {} max {}",
            w.min, w.median, w.mean, w.p95, w.max
        );
        if let Some(s) = &f.subwords {
            let m = &s.summary;
            println!(
                "  subwords per sentence: min {} median {} mean {:.1} p95 {} max {}; {} longer than {} (windowed)",
                m.min, m.median, m.mean, m.p95, m.max, s.longer_than_window, s.window
            );
            let buckets: Vec<String> = s
                .histogram
                .iter()
                .map(|(b, n)| if *b == usize::MAX { format!(">512: {n}") } else { format!("<={b}: {n}") })
                .collect();
            println!("  {}", buckets.join("  "));
        }
    }
    Ok(())
}
