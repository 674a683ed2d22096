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
use crate::peer::{Channel, ChannelError, Peer};
use crate::rss::RssProbe;
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
    #[error("{mode} mode cannot run against --peer {peer}: {why}")]
    Unsupported { mode: &'static str, peer: Peer, why: &'static str },
    #[error("--peer nchan has no batch endpoint: publish with --batch 1 (got --batch {0})")]
    NchanBatch(u64),
    #[error("--topic: {0}")]
    Channel(#[from] ChannelError),
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
    /// Where to publish, when not to the server the users are connected to (another node of a cluster).
    #[serde(default)]
    pub publish_to: Option<ServerUrl>,
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
        /// nchan: the topic's channel (the name with ':' as '-'); `None` against Herald.
        #[serde(default)]
        channel: Option<Channel>,
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
    #[serde(default)]
    pub peer: Peer,
    pub jwt_secret: Secret,
    pub api_key: Secret,
    pub first_user: u64,
    pub users: u64,
    pub sources: Vec<Ipv4Addr>,
    pub connect_concurrency: usize,
    /// Whether a connect slot is released at the upgrade (true) or once the hello has arrived.
    #[serde(default)]
    pub burst: bool,
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

    /// nchan: the channel of global user number `n`.
    pub fn user_channel(&self, n: u64) -> Result<Channel, ChannelError> {
        Channel::for_user(&self.user_id(n))
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
    pub peer: Peer,
    /// Where the server's memory is read, with --server-pid.
    pub rss: Option<RssProbe>,
    /// Connections asked for, over all shares.
    pub connections: u64,
    /// The mode's sizes, echoed into the report.
    pub params: serde_json::Value,
    /// Idle mode: how long to hold before reading the server's RSS.
    pub hold: Option<Duration>,
    /// Idle mode with --settle-secs: how long after the connections closed to read the RSS again.
    pub settle: Option<Duration>,
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
            Command::Floor(_) | Command::Worker | Command::Email(_) => return Ok(None),
        };
        Ok(Some(plan))
    }
}

fn idle(args: &IdleArgs, run_id: String) -> Result<RunPlan, PlanError> {
    let smoke = args.common.smoke;
    let conns = size(args.conns, smoke, 50, 1000, "--conns")?;
    let hold = seconds(args.hold.unwrap_or(if smoke { 0.5 } else { 3.0 }), "--hold")?;
    let settle = args.settle_secs.map(|s| seconds(s, "--settle-secs")).transpose()?;
    let params = json!({
        "conns": conns, "hold_s": hold.as_secs_f64(), "burst": args.burst,
        "settle_s": settle.map(|s| s.as_secs_f64()),
    });
    let mut plan = split(&args.common, "idle", run_id, conns, params, Some(hold), |_, _| ModePlan::Idle)?;
    plan.settle = settle;
    Ok(with_burst(plan, args.burst))
}

/// Sets every share to release its connect slots at the upgrade.
fn with_burst(mut plan: RunPlan, burst: bool) -> RunPlan {
    for share in &mut plan.shares {
        share.burst = burst;
    }
    plan
}

/// Refuses a mode that nchan cannot take part in.
fn herald_only(common: &CommonArgs, mode: &'static str, why: &'static str) -> Result<(), PlanError> {
    match common.peer {
        Peer::Herald => Ok(()),
        peer => Err(PlanError::Unsupported { mode, peer, why }),
    }
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
    if args.common.peer == Peer::Nchan && args.batch > 1 {
        return Err(PlanError::NchanBatch(args.batch));
    }
    let params = json!({
        "users": users, "notifications": notifications, "concurrency": concurrency,
        "batch": args.batch, "rate": rate, "publish_to": args.publish_to.as_ref().map(ServerUrl::to_string),
    });
    split(&args.common, "targeted", run_id, users, params, None, |share, of| {
        ModePlan::Targeted(UserLoad {
            notifications: portion(notifications, share, of),
            concurrency: concurrency.div_ceil(of.count),
            batch: args.batch,
            rate: rate.map(|r| r * share.users as f64 / of.total as f64),
            publish_to: args.publish_to.clone(),
        })
    })
}

fn amqp(args: &AmqpArgs, run_id: String) -> Result<RunPlan, PlanError> {
    herald_only(&args.common, "amqp", "nchan has no AMQP consumer")?;
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
    let channel = match args.common.peer {
        Peer::Herald => None,
        Peer::Nchan => Some(Channel::for_topic(&topic)?),
    };
    let rate = rate(args.rate)?;
    let concurrency = at_least_one(args.concurrency, "--concurrency")?;
    let params = json!({
        "subscribers": subscribers, "events": events, "topic": topic,
        "channel": channel.as_ref().map(Channel::as_str), "concurrency": concurrency, "rate": rate,
    });
    split(&args.common, "broadcast", run_id, subscribers, params, None, |share, _| ModePlan::Broadcast {
        topic: topic.clone(),
        channel: channel.clone(),
        events,
        concurrency,
        rate,
        publisher: share.index == 0,
    })
}

fn reconnect(args: &ReconnectArgs, run_id: String) -> Result<RunPlan, PlanError> {
    herald_only(
        &args.common,
        "reconnect",
        "nchan resumes by message id (Last-Event-ID), not by Herald's `since`, and the bench cannot see its ids",
    )?;
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
        "drop_after_s": drop_after.as_millis() as f64 / 1000.0, "burst": args.burst,
    });
    let plan = split(&args.common, "reconnect", run_id, users, params, None, |share, of| ModePlan::Reconnect {
        load: UserLoad {
            notifications: portion(notifications, share, of),
            concurrency: concurrency.div_ceil(of.count),
            batch: args.batch,
            rate: Some(rate_per_s * share.users as f64 / of.total as f64),
            publish_to: None,
        },
        drop_after_ms: drop_after.as_millis() as u64,
    })?;
    Ok(with_burst(plan, args.burst))
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
                peer: common.peer,
                jwt_secret: Secret(common.jwt_secret.clone().unwrap_or_else(|| PLACEHOLDER_SECRET.to_owned())),
                api_key: Secret(common.api_key.clone().unwrap_or_default()),
                first_user: first,
                users: slice.users,
                sources: sources.clone(),
                connect_concurrency: common.connect_concurrency.div_ceil(count).max(1),
                burst: false,
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
        peer: common.peer,
        rss: common.server_pid.map(|pid| RssProbe::new(pid, common.server_children)),
        connections,
        params,
        hold,
        settle: None,
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

    fn plan_error(args: &[&str]) -> PlanError {
        let cli = Cli::try_parse_from(args).expect("valid arguments");
        match RunPlan::from_command(&cli.command) {
            Err(e) => e,
            Ok(_) => panic!("{args:?} should not plan"),
        }
    }

    #[test]
    fn nchan_refuses_batches_reconnect_and_amqp() {
        let server = ["--server", "http://127.0.0.1:1", "--peer", "nchan"];
        let with = |mode: &'static str, extra: &[&'static str]| {
            let mut args = vec!["hb", mode];
            args.extend(server);
            args.extend(extra);
            args
        };
        assert!(matches!(plan_error(&with("targeted", &["-b", "100"])), PlanError::NchanBatch(100)));
        let e = plan_error(&with("reconnect", &[]));
        assert!(matches!(e, PlanError::Unsupported { mode: "reconnect", peer: Peer::Nchan, .. }), "{e}");
        assert!(e.to_string().contains("--peer nchan"), "{e}");
        assert!(matches!(plan_error(&with("amqp", &[])), PlanError::Unsupported { mode: "amqp", .. }));
        // A topic name that is valid for Herald but not as an nchan channel id.
        assert!(matches!(plan_error(&with("broadcast", &["--topic", "news:eu.1"])), PlanError::Channel(_)));

        let run = plan(&with("targeted", &["-b", "1", "--smoke"]));
        assert_eq!(run.peer, Peer::Nchan);
        assert!(run.shares.iter().all(|s| s.peer == Peer::Nchan));
        assert_eq!(run.shares[0].user_channel(3).expect("valid").as_str(), format!("u-hb-{}-3", run.run_id));
        plan(&with("idle", &["--smoke", "--burst"]));
        // Herald takes what nchan does not.
        plan(&["hb", "targeted", "--server", "http://127.0.0.1:1", "-b", "100"]);
        plan(&["hb", "reconnect", "--server", "http://127.0.0.1:1", "--smoke"]);
    }

    #[test]
    fn nchan_broadcast_uses_the_topic_as_channel() {
        let args = ["hb", "broadcast", "--server", "http://127.0.0.1:1", "--peer", "nchan", "--topic", "news:eu-1"];
        let run = plan(&args);
        match &run.shares[0].mode {
            ModePlan::Broadcast { topic, channel: Some(channel), .. } => {
                assert_eq!(topic, "news:eu-1");
                assert_eq!(channel.as_str(), "news-eu-1");
            }
            other => panic!("unexpected {other:?}"),
        }
        let run = plan(&["hb", "broadcast", "--server", "http://127.0.0.1:1", "--peer", "nchan", "--smoke"]);
        assert_eq!(run.params["channel"], format!("bench-hb-{}", run.run_id));
        let run = plan(&["hb", "broadcast", "--server", "http://127.0.0.1:1", "--smoke"]);
        assert!(matches!(run.shares[0].mode, ModePlan::Broadcast { channel: None, .. }));
    }

    #[test]
    fn burst_settle_and_children_reach_the_plan() {
        let run = plan(&["hb", "idle", "--server", "http://127.0.0.1:1", "-n", "30000", "--burst"]);
        assert!(run.shares.len() == 2 && run.shares.iter().all(|s| s.burst));
        assert_eq!(run.params["burst"], true);
        assert!(run.settle.is_none() && run.rss.is_none());
        let run = plan(&[
            "hb",
            "idle",
            "--server",
            "http://127.0.0.1:1",
            "--server-pid",
            "7",
            "--server-children",
            "--settle-secs",
            "15",
        ]);
        assert!(!run.shares[0].burst);
        assert_eq!(run.settle, Some(Duration::from_secs(15)));
        assert!(matches!(run.rss, Some(RssProbe { pid: 7, children: true })));
        let run = plan(&["hb", "reconnect", "--server", "http://127.0.0.1:1", "--smoke", "--burst"]);
        assert!(run.shares[0].burst);
        // --settle-secs and --server-children mean nothing without a pid to read.
        assert!(Cli::try_parse_from(["hb", "idle", "--settle-secs", "15"]).is_err());
        assert!(Cli::try_parse_from(["hb", "idle", "--server-children"]).is_err());
        assert!(matches!(
            plan_error(&["hb", "idle", "--server", "http://127.0.0.1:1", "--server-pid", "7", "--settle-secs=-1"]),
            PlanError::BadSeconds("--settle-secs")
        ));
    }

    #[test]
    fn worker_plans_keep_peer_burst_and_channel() {
        let run = plan(&["hb", "broadcast", "--server", "http://127.0.0.1:1", "--peer", "nchan", "--smoke"]);
        let line = serde_json::to_string(&run.shares[0]).expect("serialize");
        let back: SharePlan = serde_json::from_str(&line).expect("deserialize");
        assert_eq!(back.peer, Peer::Nchan);
        assert!(matches!(back.mode, ModePlan::Broadcast { channel: Some(_), .. }));
        // A plan from before --peer existed is a Herald plan.
        let mut value: serde_json::Value = serde_json::from_str(&line).expect("json");
        value.as_object_mut().expect("object").remove("peer");
        let old: SharePlan = serde_json::from_value(value).expect("deserialize");
        assert_eq!(old.peer, Peer::Herald);
        assert!(!old.burst);
    }

    #[test]
    fn rejects_bad_topics() {
        assert!(valid_topic("news:eu-1").is_ok());
        assert!(valid_topic("a/b").is_err());
        assert!(valid_topic("").is_err());
    }
}
