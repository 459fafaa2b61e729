//! The `profscope` command line: parse, make one library call, print.
//!
//! Exit codes: 0 on success (and when stdout is closed early, as by
//! `| head`), 1 on an error (printed as one `profscope: …` line), 2 on a
//! usage error.

mod cli;

// jemalloc with heap profiling: `profscope demo` serves heap profiles of the
// service it runs in this process.
#[cfg(feature = "demo")]
profscope_agent::jemalloc_profiling!();

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(e) => {
            // Help and version are "errors" that exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!(
                "profscope: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
