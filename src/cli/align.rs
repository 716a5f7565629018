//! `xner align`: one sentence's word ids and aligned labels.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::*;
use xner::align::{Aligner, IGNORE_INDEX};

#[derive(Args)]
pub struct AlignArgs {
    /// A tokenizer.json, or a model directory holding one.
    #[arg(long)]
    pub tokenizer: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value = "de")]
    pub lang: String,
    #[arg(long, default_value = "train")]
    pub split: String,
    #[arg(long, default_value_t = 0)]
    pub index: usize,
}

pub fn run(args: &AlignArgs) -> Result<()> {
    let corpus = args.data.panx()?.load(&args.lang, &args.split)?;
    let sentence = corpus.sentences.get(args.index).with_context(|| {
        format!("--index {} is out of range: {} {} has {} rows", args.index, args.lang, args.split, corpus.len())
    })?;
    let aligner = Aligner::from_file(&tokenizer_file(&args.tokenizer))?;
    let a = aligner.align(sentence)?;
    let word_ids = a.word_ids.iter().map(|w| w.map(|w| w.to_string()).unwrap_or_default()).collect();
    let label_ids = a.label_ids.iter().map(|l| l.to_string()).collect();
    let labels = a
        .label_ids
        .iter()
        .map(|&l| if l == IGNORE_INDEX { "IGN".to_string() } else { corpus.labels.name(l as usize).to_string() })
        .collect();
    let named = [("Tokens", a.tokens.clone()), ("Word IDs", word_ids), ("Label IDs", label_ids), ("Labels", labels)];
    print!("{}", xner::table::rows(&named, term_width()));
    Ok(())
}
