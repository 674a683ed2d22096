use std::process::ExitCode;

use clap::Parser;

/// jemalloc, not the system allocator: frames and notifications are allocated on one thread and freed on
/// another all the time, which glibc's malloc handles poorly (a profile showed it at ~15% of the server's
/// CPU under load). Measured in BENCHMARKS.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = herald::cli::Cli::parse();
    match herald::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}
