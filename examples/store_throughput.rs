//! Measures the SQLite store alone: how many notifications per second it commits, with concurrent
//! publishers sharing group commits. A profiling aid for the writer, not a test.
//!
//! `cargo run --release --example store_throughput -- [publishers] [batch] [total] [full|normal]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::Synchronous;
use herald::domain::{NewNotification, NotificationInput};
use herald::store::sqlite::Sqlite;
use herald::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let publishers: usize = args.get(1).map_or(Ok(32), |a| a.parse())?;
    let batch: usize = args.get(2).map_or(Ok(1000), |a| a.parse())?;
    let total: usize = args.get(3).map_or(Ok(200_000), |a| a.parse())?;
    let sync = if args.get(4).map(String::as_str) == Some("normal") { Synchronous::Normal } else { Synchronous::Full };

    let dir = tempfile::tempdir()?;
    let (feed, mut events) = tokio::sync::mpsc::channel(1024);
    let store = Arc::new(Sqlite::open(&dir.path().join("herald.db"), sync, feed)?);
    let drain = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(group) = events.recv().await {
            n += group.len();
        }
        n
    });
    let started = Instant::now();
    let per_publisher = total / publishers / batch;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..per_publisher {
                let items = (0..batch)
                    .map(|i| {
                        let input: NotificationInput = serde_json::from_value(serde_json::json!({
                            "user_id": format!("user-{}", (p * 7919 + b * 31 + i) % 10_000),
                            "type": "bench",
                            "message": "hello",
                            "data": {"seq": i},
                        }))
                        .expect("valid input");
                        NewNotification::parse(input, Instant::now()).expect("valid notification")
                    })
                    .collect();
                store.insert(items).await.expect("insert");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed();
    store.shutdown().await;
    drop(store);
    let delivered = tokio::time::timeout(Duration::from_secs(10), drain).await??;
    let stored = publishers * per_publisher * batch;
    println!(
        "{stored} notifications ({publishers} publishers × batches of {batch}, {sync:?}) in {:.2}s: {:.0}/s; {delivered} events",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
