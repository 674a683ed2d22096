//! herald-bench: Herald's load tool, and the floor server it is measured against.
//!
//! Exit codes: 0 when the run was clean, 1 when a notification was lost, duplicated,
//! misrouted or reordered (or a publish or connection failed), 2 on a usage or setup error.

mod amqp;
mod cli;
mod client;
mod clock;
mod email;
mod error;
mod floor;
mod histogram;
mod modes;
mod peer;
mod plan;
mod publish;
mod report;
mod rss;
mod server_url;
mod share;
mod tally;
mod token;
mod topic;
mod workers;

use std::process::ExitCode;

use clap::Parser;

/// The allocator Herald uses, so the floor is measured on equal terms (and the tool stays light).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use cli::{Cli, Command};
use error::BenchError;
use plan::RunPlan;

const EXIT_FAILED_RUN: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every process here may hold as many files as the hard limit allows (20,000 on these
    // machines), but starts with a far lower soft limit.
    let open_files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|e| {
        eprintln!("herald-bench: cannot raise the open-files limit: {e}");
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
    });
    // One multi-threaded runtime per process, as many threads as cores.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald-bench: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli.command, open_files)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald-bench: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(command: Command, open_files: u64) -> Result<ExitCode, BenchError> {
    match command {
        Command::Floor(args) => floor::serve(args, open_files).await?,
        Command::Worker => workers::worker_main().await?,
        Command::Email(args) => {
            let quiet = args.quiet;
            let report = email::run(args).await?;
            println!("{}", report.json_line());
            if !quiet {
                eprint!("{}", report.table());
            }
            if !report.ok() {
                return Ok(ExitCode::from(EXIT_FAILED_RUN));
            }
        }
        mode => {
            let Some(plan) = RunPlan::from_command(&mode)? else {
                return Ok(ExitCode::SUCCESS);
            };
            let quiet = plan.quiet;
            let report = modes::run(plan).await?;
            println!("{}", report.json_line());
            if !quiet {
                eprint!("{}", report.table());
            }
            if !report.ok {
                return Ok(ExitCode::from(EXIT_FAILED_RUN));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
