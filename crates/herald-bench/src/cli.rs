//! Command-line interface: one subcommand per mode, plus the `floor` server and the hidden
//! `worker` entry point that the tool re-executes itself as.
//!
//! Sizes are `Option`s so that `--smoke` can supply tiny defaults while a size given
//! explicitly still wins.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::peer::Peer;
use crate::server_url::ServerUrl;

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Load tool for Herald, the real-time notification hub, and its `floor` baseline server.",
    long_about = "Load tool for Herald, the real-time notification hub.\n\n\
        Every mode prints one JSON line of results on stdout and a table on stderr, and exits \
        1 when a notification was lost, duplicated, misrouted or reordered (2 on a usage or \
        setup error), so CI can run it as a check. Run each mode against `herald serve` and \
        against `herald-bench floor`; the ratio between the two is the cost of Herald's features."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold N idle connections as N distinct users; report accepted/refused, connect time and
    /// the server's memory per connection (with --server-pid).
    Idle(IdleArgs),
    /// Connect U users, publish M notifications to random ones over the HTTP API, and measure
    /// publish→deliver latency, throughput, and lost/duplicated notifications.
    Targeted(TargetedArgs),
    /// Connect U users, publish M notifications to random ones through RabbitMQ with publisher
    /// confirms, and measure what the server's AMQP consumer stores and delivers: throughput,
    /// publish→deliver latency, lost and duplicated notifications.
    Amqp(AmqpArgs),
    /// S subscribers on one topic, M events published to it: each subscriber opens `/ws` and
    /// sends `subscribe`; events are posted to `/api/v1/topics/{name}/events`.
    Broadcast(BroadcastArgs),
    /// Connect U users, publish at a steady rate, drop every connection at once and reconnect
    /// with `since`; report the time until every user has caught up, and lost notifications.
    Reconnect(ReconnectArgs),
    /// Post M email requests to `POST /api/v1/emails` and receive them on this tool's own SMTP sink
    /// (point Herald's HERALD_SMTP_HOST/PORT at --smtp-listen, HERALD_SMTP_TLS=none); report requests
    /// and emails per second, request → arrival latency, SMTP connections used, lost and duplicated.
    Email(EmailArgs),
    /// Run the floor server: the same HTTP and WebSocket shape as Herald with nothing else (no
    /// auth, no storage, an in-memory fanout), to measure against.
    Floor(FloorArgs),
    /// Internal: one worker process of a run, driven over stdin/stdout by its parent.
    #[command(hide = true)]
    Worker,
}

/// Options every client mode shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Base URL of the server under test: Herald, the floor, or nchan (with --peer nchan).
    #[arg(long, env = "HERALD_BENCH_SERVER", default_value = "http://127.0.0.1:8004")]
    pub server: ServerUrl,

    /// Which protocol the server speaks: `herald` (Herald and the floor: `/ws`, hello, the publish API) or
    /// `nchan` (nginx's push module: WebSocket `/sub/{channel}`, `POST /pub/{channel}`, raw bodies; idle,
    /// targeted with single publishes, and broadcast).
    #[arg(long, value_enum, default_value_t = Peer::Herald)]
    pub peer: Peer,

    /// HS256 secret used to mint user tokens (claims `sub`, `exp`). Required against Herald;
    /// the floor accepts any token.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Publisher API key, sent as `Authorization: Bearer`. Required against Herald.
    #[arg(long, env = "HERALD_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// PID of the server process: its VmRSS is read before connecting and after the run.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Count the memory of --server-pid's descendants too (their VmRSS added up), for a server that runs
    /// as a master and workers, as nginx does.
    #[arg(long, requires = "server_pid")]
    pub server_children: bool,

    /// Processes holding connections. 0 chooses ceil(connections / --conns-per-worker); 1 keeps
    /// everything in this process; more re-executes this binary as that many workers.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,

    /// Most connections one process holds when --workers is 0. A process may hold at most
    /// 20,000 open files on these machines, and publishers need a few.
    #[arg(long, default_value_t = 18_000)]
    pub conns_per_worker: u64,

    /// Loopback source addresses to spread connections over (127.0.0.2, 127.0.0.3, …), each
    /// with its own ephemeral-port range. 0 chooses one per 16,000 connections. Only used when
    /// the server is on an IPv4 loopback address.
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,

    /// WebSocket handshakes in flight at once (split over the workers). At most the server's
    /// accept backlog (128 with tokio's `TcpListener::bind`): a larger burst overflows it, and
    /// the dropped SYNs cost their clients a one-second retransmit.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,

    /// Seconds one connection attempt (TCP, upgrade and hello frame) may take, from its TCP connect.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Seconds to wait for outstanding deliveries once nothing new has arrived.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,

    /// Tiny sizes that finish in a few seconds, for CI; sizes given explicitly still win.
    #[arg(long)]
    pub smoke: bool,

    /// Print only the JSON line (no table, no progress).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Connections to open, one user each [default: 1000; 50 with --smoke].
    #[arg(long, short = 'n')]
    pub conns: Option<u64>,

    /// Seconds to hold the connections once all are open, before the server's RSS is read
    /// [default: 3; 0.5 with --smoke].
    #[arg(long)]
    pub hold: Option<f64>,

    /// Release a connect slot as soon as the WebSocket upgrade (HTTP 101) completes, instead of when the
    /// hello frame has arrived, as clients that do not wait (browsers reconnecting after a deploy) do: then
    /// thousands of connections can be waiting for their hello at once. The hello must still arrive within
    /// --connect-timeout, and connect time is still TCP connect to hello. RSS is read once every hello is in.
    #[arg(long)]
    pub burst: bool,

    /// Once the connections have closed, wait this many seconds and read the server's RSS again
    /// (`rss_settled_kb`): what the server keeps of a run after it (needs --server-pid).
    #[arg(long, requires = "server_pid")]
    pub settle_secs: Option<f64>,
}

/// The sizes of a mode that publishes to random connected users (targeted, amqp).
#[derive(Debug, Clone, Args)]
pub struct UserSizes {
    /// Connected users, one connection each [default: 1000; 20 with --smoke].
    #[arg(long, short = 'u')]
    pub users: Option<u64>,

    /// Notifications to publish, each to a random connected user [default: 10000; 500 with
    /// --smoke].
    #[arg(long, short = 'm', visible_alias = "messages")]
    pub notifications: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct TargetedArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub sizes: UserSizes,

    /// HTTP requests in flight at once, each on its own kept-alive connection.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,

    /// Notifications per request: 1 uses `POST /api/v1/notifications`, more uses the batch
    /// endpoint (at most 1000).
    #[arg(long, short = 'b', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,

    /// Publish through this server instead of --server (another node of the same cluster): every
    /// notification then crosses the cluster broker to reach its user.
    #[arg(long)]
    pub publish_to: Option<ServerUrl>,

    /// Target publish rate in notifications per second; 0 publishes as fast as the server
    /// answers.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

/// The queue Herald declares and consumes when `HERALD_AMQP_URL` is set, and the floor's too.
pub const DEFAULT_AMQP_QUEUE: &str = "herald.notifications";

#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Users, and notifications published as one message each.
    #[command(flatten)]
    pub sizes: UserSizes,

    /// The broker, with credentials and the virtual host (URL-encoded: `%2f` is `/`).
    #[arg(
        long,
        env = "HERALD_BENCH_AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// Queue to publish to, through the default exchange (routing key = queue name). The server
    /// under test must consume it: the bench waits up to 10 s for it to exist and have a consumer.
    #[arg(long, default_value = DEFAULT_AMQP_QUEUE)]
    pub queue: String,

    /// Publishes whose confirm has not arrived yet, at most (split over the worker processes).
    #[arg(long, default_value_t = 1000)]
    pub in_flight: usize,

    /// Target publish rate in messages per second; 0 publishes as fast as the broker confirms.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Publish transient messages (delivery mode 1), which the broker confirms without writing them to
    /// disk: takes the broker's own disk out of the figure, to show what the server under test can take.
    #[arg(long)]
    pub transient: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Subscribers on the topic, one user each [default: 1000; 20 with --smoke].
    #[arg(long, short = 's')]
    pub subscribers: Option<u64>,

    /// Events to publish to the topic [default: 1000; 100 with --smoke].
    #[arg(long, short = 'm')]
    pub events: Option<u64>,

    /// Topic name, namespace:id [default: bench:hb-RUN, unique per run].
    #[arg(long)]
    pub topic: Option<String>,

    /// Publish requests in flight at once.
    #[arg(long, short = 'c', default_value_t = 4)]
    pub concurrency: usize,

    /// Target publish rate in events per second; 0 publishes as fast as the server answers.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ReconnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Connected users, one connection each [default: 1000; 20 with --smoke].
    #[arg(long, short = 'u')]
    pub users: Option<u64>,

    /// Notifications to publish, each to a random user [default: 20000; 600 with --smoke].
    #[arg(long, short = 'm')]
    pub notifications: Option<u64>,

    /// Publish rate in notifications per second, so that publishing goes on across the drop
    /// [default: 10000; 2000 with --smoke].
    #[arg(long)]
    pub rate: Option<f64>,

    /// HTTP requests in flight at once.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,

    /// Notifications per request (1 = single endpoint, more = batch endpoint).
    #[arg(long, short = 'b', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,

    /// Seconds after publishing starts at which every connection drops [default: a third of
    /// the publishing time, notifications ÷ rate ÷ 3].
    #[arg(long)]
    pub drop_after: Option<f64>,

    /// Release a connect slot at the WebSocket upgrade rather than at the hello frame, for the first
    /// connections and the reconnects alike (see idle's --burst): every dropped user is then waiting for
    /// its backlog at once, not --connect-concurrency of them.
    #[arg(long)]
    pub burst: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Address to listen on; port 0 picks a free port. The first line on stdout is
    /// `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// Per-user in-memory replay depth served to `since` reconnects; 0 makes `since` give an
    /// empty backlog. Without it a reconnect run against the floor would always lose what was
    /// published during the gap. A user's buffer is forgotten 60 s after its newest
    /// notification once the user has no connection.
    #[arg(long, default_value_t = 128)]
    pub replay: usize,

    /// Frames queued for one connection before it is closed as a slow consumer (code 4008).
    #[arg(long, default_value_t = 8192)]
    pub queue_cap: usize,

    /// WebSocket read buffer per connection, in bytes.
    #[arg(long, default_value_t = 256)]
    pub read_buffer: usize,

    /// Open connections before upgrades are refused with HTTP 503 [default: the open-files
    /// limit less 64].
    #[arg(long)]
    pub max_connections: Option<usize>,

    /// Also consume notifications from RabbitMQ at this URL, as Herald does with
    /// `HERALD_AMQP_URL`: each message is a publish body, pushed live, then acknowledged.
    #[arg(long)]
    pub amqp_url: Option<String>,

    /// The queue to declare (durable) and consume with --amqp-url.
    #[arg(long, default_value = DEFAULT_AMQP_QUEUE)]
    pub amqp_queue: String,

    /// Unacknowledged messages the broker may send the floor's consumer at once.
    #[arg(long, default_value_t = 500)]
    pub amqp_prefetch: u16,
}

#[derive(Debug, Clone, Args)]
pub struct EmailArgs {
    /// Base URL of the Herald under test.
    #[arg(long, env = "HERALD_BENCH_SERVER", default_value = "http://127.0.0.1:8004")]
    pub server: ServerUrl,

    /// Publisher API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "HERALD_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Where the SMTP sink listens: Herald's HERALD_SMTP_HOST and HERALD_SMTP_PORT.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub smtp_listen: SocketAddr,

    /// Email requests to post [default: 5000; 50 with --smoke].
    #[arg(long, short = 'm')]
    pub emails: Option<u64>,

    /// HTTP requests in flight at once, each on its own kept-alive connection.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,

    /// Target request rate per second; 0 posts as fast as Herald answers.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Milliseconds the sink waits before accepting each message (250), to stand in for a real relay.
    #[arg(long, default_value_t = 0)]
    pub sink_delay_ms: u64,

    /// The sink acknowledges each message body at once (TCP_QUICKACK), taking out of the figure the 40 ms
    /// a client with Nagle on waits for a delayed ACK before its final `.` line (lettre 0.11's stall).
    #[arg(long)]
    pub quickack: bool,

    /// Seconds to wait for outstanding emails once nothing new has arrived.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,

    /// Tiny sizes that finish in a few seconds, for CI; sizes given explicitly still win.
    #[arg(long)]
    pub smoke: bool,

    /// Print only the JSON line.
    #[arg(long, short)]
    pub quiet: bool,
}
