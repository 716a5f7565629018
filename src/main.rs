//! The `xner` command line: argument parsing and printing over the `xner` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

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
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit status of a failed command (the README lists them): 2 for what the user can fix
/// in the command or its input (a flag, a file's content, a missing file; clap's own usage
/// errors are 2 as well), 130 for training stopped by Ctrl-C or SIGTERM (the shell's code for
/// an interrupted command), 1 for anything else (a full disk, a failed computation).
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        match cause.downcast_ref::<xner::Error>() {
            Some(xner::Error::Interrupted { .. }) => return 130,
            Some(xner::Error::Parse { .. } | xner::Error::Invalid { .. } | xner::Error::Usage(_)) => return 2,
            Some(xner::Error::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory | std::io::ErrorKind::InvalidData
                ) =>
            {
                return 2
            }
            _ => {}
        }
    }
    1
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

    #[test]
    fn error_text_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = anyhow::Error::new(xner::Error::io(std::path::Path::new("/run/optimizer.safetensors"), io))
            .context("saving a checkpoint");
        assert_eq!(error_text(&e), "saving a checkpoint: /run/optimizer.safetensors: No space left on device");
    }
}
