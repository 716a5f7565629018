//! `xner analyze`: error analysis of a trained model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;

use super::*;
use xner::experiments::Evaluator;
use xner::lowp::Precision;

#[derive(Args)]
pub struct AnalyzeArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    #[arg(long)]
    pub model: String,
    /// A corpus file to analyse (any format `xner train --train` reads) instead of PAN-X.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value = "de")]
    pub lang: String,
    #[arg(long, default_value = "validation")]
    pub split: String,
    /// Keep only the first N sentences.
    #[arg(long, value_parser = super::count(1, u32::MAX as u64))]
    pub max_samples: Option<usize>,
    /// Rows of each ranked list.
    #[arg(long, default_value_t = 10, value_parser = super::count(1, 1_000_000))]
    pub top: usize,
    #[arg(long, default_value_t = 32, value_parser = super::count(1, 65_536))]
    pub batch_size: usize,
    /// Write analysis.json, tokens.csv, confusion.txt and confusion.svg into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &AnalyzeArgs, device: &Device) -> Result<()> {
    use xner::analysis;
    args.window.validate()?;
    let model_dir = xner::hub::resolve_model(&args.model)?;
    let settings = args.window.eval_settings(args.batch_size, !args.json, device, Precision::F32);
    let evaluator = Evaluator::load(&model_dir, &settings)?;
    let labels = evaluator.labels.clone();
    let (corpus, name) = match &args.file {
        Some(path) => {
            let options = evaluator.read_options(&args.corpus.read_options()?);
            (read_corpus_file(path, &options, args.json, args.max_samples)?, path.display().to_string())
        }
        None => {
            let panx = args.data.panx()?;
            let langs = std::slice::from_ref(&args.lang);
            let corpus = xner::data::load_languages(&panx, langs, &args.split, 0, args.max_samples)?;
            (corpus, format!("{} {}", args.lang, args.split))
        }
    };
    let aligned = evaluator.aligner.align_corpus(&corpus)?;
    let eval =
        xner::eval::evaluate(&evaluator.model, &aligned, &labels, evaluator.window, args.batch_size, !args.json)?;
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
        xner::table::columns(&header, &rows)
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
        "{}: {} sentences, {} labelled tokens, F1 {:.4}, loss {:.4}\n",
        name,
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
        print!("{}", xner::table::columns(&[title, "count", "mean", "sum"], &rows));
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
            println!("{}", xner::table::rows(&named, term_width()));
        }
    };
    show("highest total loss", &a.worst);
    show("gold contradicted with confidence", &a.label_noise);
    Ok(())
}
