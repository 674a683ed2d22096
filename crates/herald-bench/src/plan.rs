//! What a run does, worked out once from the command line: its sizes (with `--smoke`
//! defaults), how it is split over worker processes and source addresses, and the plan each
//! share of it receives.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{AmqpArgs, BroadcastArgs, Command, CommonArgs, IdleArgs, ReconnectArgs, TargetedArgs, UserSizes};
use crate::client::socket::loopback_sources;
use crate::server_url::ServerUrl;

/// One source address per this many connections, well inside the ~28,000 ephemeral ports
/// each address has towards one server.
const CONNS_PER_SOURCE: u64 = 16_000;

/// Without `--jwt-secret` tokens are signed with this; only the floor will accept them.
const PLACEHOLDER_SECRET: &str = "herald-bench-floor";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{0} must be a finite number of seconds ≥ 0")]
    BadSeconds(&'static str),
    #[error("--rate must be finite and ≥ 0")]
    BadRate,
    #[error("--queue must be 1 to 255 bytes (got {0})")]
    BadQueue(usize),
    #[error("topic names may hold only letters, digits, '.', '_' and '-' (got {0:?})")]
    BadTopic(String),
    #[error("--workers {workers} is more than the {connections} connections to share")]
    TooManyWorkers { workers: usize, connections: u64 },
}

/// A secret that never prints. It is serialized only into a worker's stdin.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Publishing to users: how many notifications, how many requests in flight, how many per
/// request, and at what rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserLoad {
    pub notifications: u64,
    pub concurrency: usize,
    pub batch: u64,
    pub rate: Option<f64>,
}

/// Publishing to users through RabbitMQ: how many messages, how many unconfirmed at once, at
/// what rate, and where to. The URL is a secret: it holds the broker's credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AmqpLoad {
    pub messages: u64,
    pub in_flight: usize,
    pub rate: Option<f64>,
    pub url: Secret,
    pub queue: String,
    /// Delivery mode 1 instead of 2: the broker keeps the messages in memory only.
    #[serde(default)]
    pub transient: bool,
}

/// The mode-specific part of a share's plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ModePlan {
    Idle,
    Targeted(UserLoad),
    Amqp(AmqpLoad),
    Broadcast {
        topic: String,
        events: u64,
        concurrency: usize,
        rate: Option<f64>,
        /// Exactly one share publishes the events; every share's subscribers receive them.
        publisher: bool,
    },
    Reconnect {
        load: UserLoad,
        drop_after_ms: u64,
    },
}

/// What one share — this process, or one worker process — is asked to do: hold users
/// `first_user .. first_user + users` and, in the user modes, publish to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharePlan {
    pub index: usize,
    pub run_id: String,
    pub server: ServerUrl,
    pub jwt_secret: Secret,
    pub api_key: Secret,
    pub first_user: u64,
    pub users: u64,
    pub sources: Vec<Ipv4Addr>,
    pub connect_concurrency: usize,
    pub connect_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub progress: bool,
    pub mode: ModePlan,
}

impl SharePlan {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// The user id of global user number `n`: unique per run, so that nothing stored by an
    /// earlier run (Herald keeps notifications) shows up in this one's backlogs.
    pub fn user_id(&self, n: u64) -> String {
        user_id(&self.run_id, n)
    }
}

pub fn user_id(run_id: &str, n: u64) -> String {
    format!("hb-{run_id}-{n}")
}

/// The whole run, as the parent sees it.
#[derive(Debug)]
pub struct RunPlan {
    pub mode: &'static str,
    pub run_id: String,
    pub server: ServerUrl,
    pub server_pid: Option<u32>,
    /// Connections asked for, over all shares.
    pub connections: u64,
    /// The mode's sizes, echoed into the report.
    pub params: serde_json::Value,
    /// Idle mode: how long to hold before reading the server's RSS.
    pub hold: Option<Duration>,
    /// Whether the shares run as worker processes (true) or inside this one.
    pub processes: bool,
    pub shares: Vec<SharePlan>,
    pub quiet: bool,
}

impl RunPlan {
    /// Plans a client mode. Returns `None` for the subcommands that are not runs.
    pub fn from_command(command: &Command) -> Result<Option<Self>, PlanError> {
        let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let plan = match command {
            Command::Idle(args) => idle(args, run_id)?,
            Command::Targeted(args) => targeted(args, run_id)?,
            Command::Amqp(args) => amqp(args, run_id)?,
            Command::Broadcast(args) => broadcast(args, run_id)?,
            Command::Reconnect(args) => reconnect(args, run_id)?,
            Command::Floor(_) | Command::Worker => return Ok(None),
        };
        Ok(Some(plan))
    }
}

fn idle(args: &IdleArgs, run_id: String) -> Result<RunPlan, PlanError> {
    let smoke = args.common.smoke;
    let conns = size(args.conns, smoke, 50, 1000, "--conns")?;
    let hold = seconds(args.hold.unwrap_or(if smoke { 0.5 } else { 3.0 }), "--hold")?;
    let params = json!({ "conns": conns, "hold_s": hold.as_secs_f64() });
    split(&args.common, "idle", run_id, conns, params, Some(hold), |_, _| ModePlan::Idle)
}

/// Users and notifications of targeted and amqp, with their `--smoke` defaults.
fn user_sizes(sizes: &UserSizes, smoke: bool) -> Result<(u64, u64), PlanError> {
    let users = size(sizes.users, smoke, 20, 1000, "--users")?;
    Ok((users, sizes.notifications.unwrap_or(if smoke { 500 } else { 10_000 })))
}

fn targeted(args: &TargetedArgs, run_id: String) -> Result<RunPlan, PlanError> {
    let (users, notifications) = user_sizes(&args.sizes, args.common.smoke)?;
    let rate = rate(args.rate)?;
    let concurrency = at_least_one(args.concurrency, "--concurrency")?;
    let params = json!({
        "users": users, "notifications": notifications, "concurrency": concurrency,
        "batch": args.batch, "rate": rate,
    });
    split(&args.common, "targeted", run_id, users, params, None, |share, of| {
        ModePlan::Targeted(UserLoad {
            notifications: portion(notifications, share, of),
            concurrency: concurrency.div_ceil(of.count),
            batch: args.batch,
            rate: rate.map(|r| r * share.users as f64 / of.total as f64),
        })
    })
}

fn amqp(args: &AmqpArgs, run_id: String) -> Result<RunPlan, PlanError> {
    let (users, messages) = user_sizes(&args.sizes, args.common.smoke)?;
    let rate = rate(args.rate)?;
    let in_flight = at_least_one(args.in_flight, "--in-flight")?;
    // An AMQP short string: the routing key and the queue name are at most 255 bytes.
    if args.queue.is_empty() || args.queue.len() > 255 {
        return Err(PlanError::BadQueue(args.queue.len()));
    }
    // The URL stays out of the report: it holds the broker's password.
    let params = json!({
        "users": users, "messages": messages, "in_flight": in_flight, "rate": rate,
        "queue": args.queue, "transient": args.transient,
    });
    split(&args.common, "amqp", run_id, users, params, None, |share, of| {
        ModePlan::Amqp(AmqpLoad {
            messages: portion(messages, share, of),
            in_flight: in_flight.div_ceil(of.count),
            rate: rate.map(|r| r * share.users as f64 / of.total as f64),
            url: Secret(args.amqp_url.clone()),
            queue: args.queue.clone(),
            transient: args.transient,
        })
    })
}

fn broadcast(args: &BroadcastArgs, run_id: String) -> Result<RunPlan, PlanError> {
    let smoke = args.common.smoke;
    let subscribers = size(args.subscribers, smoke, 20, 1000, "--subscribers")?;
    let events = args.events.unwrap_or(if smoke { 100 } else { 1000 });
    let topic = match &args.topic {
        Some(topic) => valid_topic(topic)?,
        None => format!("bench:hb-{run_id}"),
    };
    let rate = rate(args.rate)?;
    let concurrency = at_least_one(args.concurrency, "--concurrency")?;
    let params = json!({
        "subscribers": subscribers, "events": events, "topic": topic,
        "concurrency": concurrency, "rate": rate,
    });
    split(&args.common, "broadcast", run_id, subscribers, params, None, |share, _| ModePlan::Broadcast {
        topic: topic.clone(),
        events,
        concurrency,
        rate,
        publisher: share.index == 0,
    })
}

fn reconnect(args: &ReconnectArgs, run_id: String) -> Result<RunPlan, PlanError> {
    let smoke = args.common.smoke;
    let users = size(args.users, smoke, 20, 1000, "--users")?;
    let notifications = args.notifications.unwrap_or(if smoke { 600 } else { 20_000 });
    let rate_per_s = args.rate.unwrap_or(if smoke { 2000.0 } else { 10_000.0 });
    if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
        return Err(PlanError::BadRate);
    }
    let drop_after = seconds(args.drop_after.unwrap_or(notifications as f64 / rate_per_s / 3.0), "--drop-after")?;
    let concurrency = at_least_one(args.concurrency, "--concurrency")?;
    let params = json!({
        "users": users, "notifications": notifications, "rate": rate_per_s,
        "concurrency": concurrency, "batch": args.batch,
        "drop_after_s": drop_after.as_millis() as f64 / 1000.0,
    });
    split(&args.common, "reconnect", run_id, users, params, None, |share, of| ModePlan::Reconnect {
        load: UserLoad {
            notifications: portion(notifications, share, of),
            concurrency: concurrency.div_ceil(of.count),
            batch: args.batch,
            rate: Some(rate_per_s * share.users as f64 / of.total as f64),
        },
        drop_after_ms: drop_after.as_millis() as u64,
    })
}

/// A share's slice of the users, as `mode_plan` sees it.
struct Slice {
    index: usize,
    first: u64,
    users: u64,
}

/// The split as a whole.
struct Split {
    count: usize,
    total: u64,
}

/// `total` spread over the shares in proportion to their users.
fn portion(total: u64, share: &Slice, of: &Split) -> u64 {
    let upto = |users: u64| (total as u128 * users as u128 / of.total as u128) as u64;
    upto(share.first + share.users) - upto(share.first)
}

fn split(
    common: &CommonArgs,
    mode: &'static str,
    run_id: String,
    connections: u64,
    params: serde_json::Value,
    hold: Option<Duration>,
    mode_plan: impl Fn(&Slice, &Split) -> ModePlan,
) -> Result<RunPlan, PlanError> {
    let per_worker = common.conns_per_worker.max(1);
    let count = match common.workers {
        0 => connections.div_ceil(per_worker).max(1) as usize,
        n if n as u64 > connections => return Err(PlanError::TooManyWorkers { workers: n, connections }),
        n => n,
    };
    let sources = if common.server.is_ipv4_loopback() {
        let wanted = match common.source_ips {
            0 => connections.div_ceil(CONNS_PER_SOURCE).max(1) as usize,
            n => n,
        };
        loopback_sources(wanted)
    } else {
        Vec::new()
    };
    let of = Split { count, total: connections };
    let shares = (0..count)
        .map(|index| {
            let first = connections * index as u64 / count as u64;
            let next = connections * (index as u64 + 1) / count as u64;
            let slice = Slice { index, first, users: next - first };
            SharePlan {
                index,
                run_id: run_id.clone(),
                server: common.server.clone(),
                jwt_secret: Secret(common.jwt_secret.clone().unwrap_or_else(|| PLACEHOLDER_SECRET.to_owned())),
                api_key: Secret(common.api_key.clone().unwrap_or_default()),
                first_user: first,
                users: slice.users,
                sources: sources.clone(),
                connect_concurrency: common.connect_concurrency.div_ceil(count).max(1),
                connect_timeout_ms: (common.connect_timeout.max(0.001) * 1000.0) as u64,
                drain_timeout_ms: (common.drain_timeout.max(0.0) * 1000.0) as u64,
                progress: !common.quiet,
                mode: mode_plan(&slice, &of),
            }
        })
        .collect();
    Ok(RunPlan {
        mode,
        run_id,
        server: common.server.clone(),
        server_pid: common.server_pid,
        connections,
        params,
        hold,
        processes: count > 1,
        shares,
        quiet: common.quiet,
    })
}

fn size(
    given: Option<u64>,
    smoke: bool,
    smoke_default: u64,
    default: u64,
    name: &'static str,
) -> Result<u64, PlanError> {
    let n = given.unwrap_or(if smoke { smoke_default } else { default });
    if n == 0 {
        return Err(PlanError::Zero(name));
    }
    Ok(n)
}

fn at_least_one(n: usize, name: &'static str) -> Result<usize, PlanError> {
    if n == 0 {
        return Err(PlanError::Zero(name));
    }
    Ok(n)
}

fn seconds(s: f64, name: &'static str) -> Result<Duration, PlanError> {
    Duration::try_from_secs_f64(s).map_err(|_| PlanError::BadSeconds(name))
}

fn rate(r: f64) -> Result<Option<f64>, PlanError> {
    if !r.is_finite() || r < 0.0 {
        return Err(PlanError::BadRate);
    }
    Ok((r > 0.0).then_some(r))
}

fn valid_topic(topic: &str) -> Result<String, PlanError> {
    if crate::topic::is_valid(topic) {
        Ok(topic.to_owned())
    } else {
        Err(PlanError::BadTopic(topic.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn plan(args: &[&str]) -> RunPlan {
        let cli = Cli::try_parse_from(args).expect("valid arguments");
        RunPlan::from_command(&cli.command).expect("valid plan").expect("a run")
    }

    #[test]
    fn small_runs_stay_in_process() {
        let run = plan(&["hb", "targeted", "--server", "http://127.0.0.1:1", "--smoke"]);
        assert!(!run.processes);
        assert_eq!(run.shares.len(), 1);
        assert_eq!(run.shares[0].users, 20);
        assert_eq!(run.shares[0].sources, vec![Ipv4Addr::new(127, 0, 0, 2)]);
        match &run.shares[0].mode {
            ModePlan::Targeted(load) => assert_eq!(load.notifications, 500),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn large_runs_split_over_workers_and_sources() {
        let run = plan(&["hb", "targeted", "--server", "http://127.0.0.1:1", "-u", "40000", "-m", "100001"]);
        assert!(run.processes);
        assert_eq!(run.shares.len(), 3);
        assert_eq!(run.shares.iter().map(|s| s.users).sum::<u64>(), 40_000);
        assert_eq!(run.shares[0].sources.len(), 3);
        let sent: u64 = run
            .shares
            .iter()
            .map(|s| match &s.mode {
                ModePlan::Targeted(load) => load.notifications,
                _ => 0,
            })
            .sum();
        assert_eq!(sent, 100_001);
    }

    #[test]
    fn only_the_first_broadcast_share_publishes() {
        let run = plan(&["hb", "broadcast", "--server", "http://127.0.0.1:1", "-s", "10", "--workers", "2"]);
        let publishers: Vec<bool> =
            run.shares.iter().map(|s| matches!(s.mode, ModePlan::Broadcast { publisher, .. } if publisher)).collect();
        assert_eq!(publishers, vec![true, false]);
    }

    #[test]
    fn secrets_do_not_print() {
        let run = plan(&["hb", "idle", "--server", "http://127.0.0.1:1", "--jwt-secret", "hunter2"]);
        assert!(!format!("{run:?}").contains("hunter2"));
        let url = "amqp://bench:hunter2@127.0.0.1:5672/%2f";
        let run = plan(&["hb", "amqp", "--server", "http://127.0.0.1:1", "--amqp-url", url, "--smoke"]);
        assert!(!format!("{run:?}").contains("hunter2"));
    }

    #[test]
    fn amqp_shares_split_messages_and_window() {
        let run = plan(&["hb", "amqp", "--server", "http://127.0.0.1:1", "-u", "10", "-m", "1001", "--workers", "2"]);
        let loads: Vec<&AmqpLoad> = run
            .shares
            .iter()
            .filter_map(|s| match &s.mode {
                ModePlan::Amqp(load) => Some(load),
                _ => None,
            })
            .collect();
        assert_eq!(loads.len(), 2);
        assert_eq!(loads.iter().map(|l| l.messages).sum::<u64>(), 1001);
        assert!(loads.iter().all(|l| l.in_flight == 500 && l.queue == "herald.notifications"));
    }

    #[test]
    fn rejects_bad_topics() {
        assert!(valid_topic("news:eu-1").is_ok());
        assert!(valid_topic("a/b").is_err());
        assert!(valid_topic("").is_err());
    }
}
