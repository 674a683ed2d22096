use std::process::ExitCode;

use clap::Parser;

/// jemalloc, not the system allocator: frames and notifications are allocated on one thread and freed on
/// another all the time, which glibc's malloc handles poorly (a profile showed it at ~15% of the server's
/// CPU under load). Measured in BENCHMARKS.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (the `malloc_conf` symbol, prefixed as tikv-jemallocator builds it).
/// `background_thread`: a jemalloc thread returns freed pages to the OS after the decay time (10 s) even while
/// the server allocates nothing; without it the memory a reconnect burst used was kept for as long as the
/// server stayed idle (57 MB after 19,000 connections had closed). Purging at once (`dirty_decay_ms:0`)
/// instead slowed the burst by half.
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
#[allow(non_upper_case_globals)]
pub static malloc_conf: Option<&'static std::ffi::c_char> = {
    const CONF: &[u8] = b"background_thread:true,max_background_threads:1\0";
    // SAFETY: CONF is a NUL-terminated static string; jemalloc reads it as a C string and never writes it.
    Some(unsafe { &*CONF.as_ptr().cast::<std::ffi::c_char>() })
};

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
