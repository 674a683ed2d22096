//! `herald dlq list | replay | purge`: the operator's view of the dead-letter queues.

use std::collections::HashSet;
use std::io::{BufRead, Write};

use anyhow::{bail, Context};

use crate::config::{AmqpSettings, Settings};
use crate::ingest::amqp::dlq::{self, Selection};

pub enum Action {
    List { queue: Option<String>, limit: usize, json: bool },
    Replay { queue: Option<String>, all: bool, ids: Vec<String> },
    Purge { queue: Option<String>, yes: bool },
}

/// The queues an action is about: the one named, or every configured consumer's.
fn queues(amqp: &AmqpSettings, named: Option<String>) -> anyhow::Result<Vec<String>> {
    Ok(match named {
        Some(queue) => vec![dlq::work_queue(&queue)?.to_owned()],
        None => amqp.consumers.iter().map(|c| c.queue.clone()).collect(),
    })
}

pub async fn run(settings: Settings, action: Action) -> anyhow::Result<()> {
    let amqp = settings.amqp.as_ref().context("no AMQP broker is configured (set HERALD_AMQP_URL or [amqp] url)")?;
    let connection = dlq::connect(&amqp.url).await?;
    let mut out = std::io::stdout().lock();
    match action {
        Action::List { queue, limit, json } => {
            for queue in queues(amqp, queue)? {
                let listing = dlq::list(&connection, &queue, limit).await?;
                if json {
                    writeln!(out, "{}", serde_json::to_string(&listing)?)?;
                    continue;
                }
                writeln!(out, "{}: {} message(s)", listing.queue, listing.count)?;
                for e in &listing.entries {
                    writeln!(
                        out,
                        "  {}  attempts={}  at={}  reason={}\n      {} bytes: {}",
                        e.id.as_deref().unwrap_or("-"),
                        e.attempts.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                        e.dead_lettered_at.as_deref().unwrap_or("-"),
                        e.reason.as_deref().unwrap_or("-"),
                        e.bytes,
                        e.body,
                    )?;
                }
                if (listing.count as usize) > listing.entries.len() {
                    writeln!(out, "  … {} more (--limit)", listing.count as usize - listing.entries.len())?;
                }
            }
        }
        Action::Replay { queue, all, ids } => {
            let selection = if all { Selection::All } else { Selection::Ids(ids.into_iter().collect::<HashSet<_>>()) };
            let mut missing: Option<Vec<String>> = None;
            for queue in queues(amqp, queue)? {
                let report = dlq::replay(&connection, &queue, &selection, |done, total| {
                    if total > 0 {
                        eprint!("\r{queue}: replayed {done} of {total}");
                    }
                })
                .await?;
                eprintln!();
                writeln!(out, "{queue}: replayed {}, kept {}", report.replayed, report.kept)?;
                // An id is missing only if no queue had it.
                missing = Some(match missing {
                    None => report.missing,
                    Some(before) => before.into_iter().filter(|id| report.missing.contains(id)).collect(),
                });
            }
            if let Some(missing) = missing.filter(|m| !m.is_empty()) {
                bail!("not found in any dead-letter queue: {}", missing.join(", "));
            }
        }
        Action::Purge { queue, yes } => {
            let queues = queues(amqp, queue)?;
            if !yes {
                let names: Vec<String> = queues.iter().map(|q| format!("{q}.dlq")).collect();
                eprint!("Delete every message in {}? [y/N] ", names.join(", "));
                std::io::stderr().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("not purged");
                }
            }
            for queue in queues {
                let purged = dlq::purge(&connection, &queue).await?;
                writeln!(out, "{queue}.dlq: purged {purged}")?;
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
