//! `xner tokenize`: XLM-R SentencePiece beside BERT WordPiece.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::*;
use xner::align::Aligner;

#[derive(Args)]
pub struct TokenizeArgs {
    /// A tokenizer.json, or a model directory holding one.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// A WordPiece vocab.txt (e.g. ../shared/vocab/bert-base-cased-vocab.txt) to compare with.
    #[arg(long)]
    pub compare_vocab: Option<PathBuf>,
    /// The text to tokenize.
    #[arg(required = true)]
    pub text: Vec<String>,
}

pub fn run(args: &TokenizeArgs) -> Result<()> {
    let text = args.text.join(" ");
    let xlmr = Aligner::from_file(&tokenizer_file(&args.tokenizer))?;
    let mut named = vec![];
    if let Some(vocab) = &args.compare_vocab {
        let bert = xner::align::wordpiece_from_vocab(vocab)?;
        let enc = bert.encode(text.as_str(), true).map_err(|e| anyhow::anyhow!("WordPiece: {e}"))?;
        named.push(("BERT", enc.get_tokens().to_vec()));
    }
    named.push(("XLM-R", xlmr.tokens_of_text(&text)?));
    print!("{}", xner::table::rows(&named, term_width()));
    Ok(())
}
