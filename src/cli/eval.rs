//! `xner eval`: entity F1 and seqeval's classification report of a trained model, on PAN-X
//! languages or on corpus files (`--file`), in seqeval's default and strict (IOB2) modes.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use super::{read_corpus_file, CorpusArgs, DataArgs, PrecisionArgs, WindowArgs};
use xner::eval::Evaluation;
use xner::experiments::Evaluator;
use xner::lowp::Precision;

#[derive(Args)]
pub struct EvalArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    #[arg(long)]
    pub model: String,
    /// Corpus files to score (any format `xner train --train` reads) instead of PAN-X
    /// languages; repeat for several.
    #[arg(long)]
    pub file: Vec<PathBuf>,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value = "de", value_delimiter = ',')]
    pub langs: Vec<String>,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Keep only the first N sentences of each language or file.
    #[arg(long, value_parser = super::count(1, u32::MAX as u64))]
    pub max_samples: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = super::count(1, 65_536))]
    pub batch_size: usize,
    /// Print JSON (F1 and report per language).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EvalArgs, device: &Device) -> Result<()> {
    args.window.validate()?;
    let model_dir = xner::hub::resolve_model(&args.model)?;
    let precision = args.precision.chosen();
    let settings = args.window.eval_settings(args.batch_size, !args.json, device, precision);
    // Which code ran the low-precision products: the same model reads differently per CPU.
    let engine = match precision {
        Precision::F32 => String::new(),
        p => format!(", {p} on {}", p.engine()),
    };
    let evals: Vec<(String, Evaluation)> = if args.file.is_empty() {
        let panx = args.data.panx()?;
        xner::experiments::evaluate_languages(&model_dir, &panx, &args.langs, &args.split, args.max_samples, &settings)?
    } else {
        let evaluator = Evaluator::load(&model_dir, &settings)?;
        let options = evaluator.read_options(&args.corpus.read_options()?);
        let mut out = vec![];
        for path in &args.file {
            let corpus = read_corpus_file(path, &options, args.json, args.max_samples)?;
            out.push((path.display().to_string(), evaluator.evaluate(&corpus)?));
        }
        out
    };
    let split = if args.file.is_empty() { format!(" {}", args.split) } else { String::new() };
    let mut results = serde_json::Map::new();
    let mut strict_f1 = vec![];
    for (name, eval) in &evals {
        let mut json = eval.to_json()?;
        if let Some(fields) = json.as_object_mut() {
            // What ran the products, for scripts comparing machines or engines.
            fields.insert("precision".into(), precision.name().into());
            fields.insert("engine".into(), precision.engine().into());
        }
        strict_f1.push(json["strict_f1"].as_f64().unwrap_or(f64::NAN));
        if !args.json {
            let words: usize = eval.gold.iter().map(Vec::len).sum();
            println!(
                "{name}{split} ({} sentences, {words} words scored, {:.0} tokens/s{engine})",
                eval.gold.len(),
                eval.tokens as f64 / eval.seconds
            );
            println!("{}", eval.report.to_text());
        }
        results.insert(name.clone(), json);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        let header: Vec<&str> = std::iter::once("").chain(evals.iter().map(|(n, _)| n.as_str())).collect();
        let row = |name: &str, values: Vec<f64>| -> Vec<String> {
            std::iter::once(name.to_string()).chain(values.iter().map(|f| format!("{f:.4}"))).collect()
        };
        let rows = [row("F1", evals.iter().map(|(_, e)| e.f1()).collect()), row("F1 strict (IOB2)", strict_f1)];
        print!("{}", xner::table::columns(&header, &rows));
    }
    Ok(())
}
