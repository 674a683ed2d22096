//! `herald sync verify --from users.jsonl [--fix] [--delete-extra]`: the graph against a source export (see
//! `workers::sync::verify`). Prints a summary and each difference; exits 1 while differences remain.

use std::io::{BufReader, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;

use crate::config::Settings;
use crate::workers::sync::falkordb::FalkorGraph;
use crate::workers::sync::verify::{self, Options, Progress};

pub struct VerifyArgs {
    pub from: PathBuf,
    pub fix: bool,
    pub delete_extra: bool,
}

/// A progress line on stderr when it is a terminal; nothing otherwise (logs stay clean).
fn progress_bar() -> impl FnMut(Progress) {
    let tty = std::io::stderr().is_terminal();
    move |p| {
        if !tty {
            return;
        }
        let line = match p {
            Progress::Reading(n) => format!("reading the source: {n} lines"),
            Progress::Comparing { done, of } => {
                let width = 30usize;
                let filled = (done.min(of) * width as u64).checked_div(of).map_or(width, |f| f as usize);
                format!("[{}{}] {done}/{of} users compared", "=".repeat(filled), " ".repeat(width - filled))
            }
        };
        let _ = write!(std::io::stderr(), "\r{line:<70}");
    }
}

/// Returns whether the graph matches the source (after repairs).
pub async fn verify(settings: Settings, args: VerifyArgs) -> anyhow::Result<bool> {
    let sync = settings.sync.context("no graph database is configured: set HERALD_GRAPH_URL (graph_url)")?;
    let graph = FalkorGraph::new(sync.graph_url.expose(), &sync.graph_name)?;
    let file = std::fs::File::open(&args.from).with_context(|| format!("opening {}", args.from.display()))?;
    let options = Options { fix: args.fix, delete_extra: args.delete_extra };
    let mut progress = progress_bar();
    let drift = verify::verify(&graph, &sync.fields, BufReader::new(file), options, &mut progress).await?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "source: {} users ({} malformed lines); graph: {} users",
        drift.source_users,
        drift.malformed.len(),
        drift.graph_users
    )?;
    writeln!(
        out,
        "missing from the graph: {}; only in the graph: {}; different: {}",
        drift.missing.len(),
        drift.extra.len(),
        drift.different.len()
    )?;
    for id in &drift.missing {
        writeln!(out, "missing  {id}")?;
    }
    for id in &drift.extra {
        writeln!(out, "extra    {id}")?;
    }
    for (id, fields) in &drift.different {
        writeln!(out, "differs  {id}: {}", fields.join(", "))?;
    }
    for (line, why) in &drift.malformed {
        writeln!(out, "malformed line {line}: {why}")?;
    }
    if args.fix || args.delete_extra {
        writeln!(out, "repaired: {} users written, {} removed", drift.repaired, drift.deleted)?;
    }
    Ok(drift.clean(options))
}
