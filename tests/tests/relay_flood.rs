//! Flooding and fairness, over real QUIC on loopback: a flooder on many
//! connections, clients that stop reading, handshakes and hellos that
//! stall. In each case a polite client keeps working and the relay's
//! memory stays bounded.
//!
//! Oversize frames (typed `FRAME_TOO_LARGE`, then close) and a single
//! connection's rate limit are covered in `relay.rs`
//! (`bad_input_gets_typed_errors_and_hurts_nobody`,
//! `a_flooding_connection_is_rate_limited_then_closed`).
//!
//! The flood test gives the relay, the flooder and the polite client a
//! runtime each, as if they were three processes: with one shared runtime
//! the flooder's tasks would delay the polite client's own, and the test
//! would measure the test. Memory is the test process's `VmRSS`, which
//! includes the clients; tests that read it take [`MEASURING`] so they do
//! not count each other.
//!
//! `cargo test --release -p sotto-tests --test relay_flood -- --ignored --nocapture`
//! runs the longer measurement whose figures are in `docs/SECURITY.md`.
#![allow(clippy::unwrap_used)]

#[path = "relay_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use prost::Message;
use sotto_core::{MailboxSigner, RelayAddr, RelayConnection};
use sotto_proto::wire::{self, client_frame::Request};
use sotto_proto::{Bucket, Challenge, FrameDecoder, encode_frame};
use sotto_relay::{ManualClock, OUT_BYTES, RelayCert, SledStorage};
use support::{Owner, TestRelay, addr, blob, connect, tag_of, tagged_blob};

/// Held by the tests that read the process's memory.
static MEASURING: Mutex<()> = Mutex::new(());

fn measuring() -> std::sync::MutexGuard<'static, ()> {
    MEASURING.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// Resident memory of process `pid` in KiB.
fn rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of this process in KiB.
fn rss_kib() -> u64 {
    rss_kib_of(std::process::id())
}

type Relay = Arc<sotto_relay::Relay<SledStorage>>;

fn counter(relay: &Relay, pick: fn(&sotto_relay::Stats) -> &AtomicU64) -> u64 {
    pick(relay.stats()).load(Ordering::Relaxed)
}

/// Polls `done` every 10 ms until it holds or `within` passes; there is no
/// event for "the relay has settled" to wait on.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// The relay's rate limiter reads the relay's clock; in the flood it must
/// refill as in production, so the manual clock follows the wall clock.
async fn follow_wall_clock(clock: ManualClock) {
    let start = Instant::now();
    let mut advanced = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    loop {
        tick.tick().await;
        let now = start.elapsed().as_millis() as u64;
        clock.advance_millis(now - advanced);
        advanced = now;
    }
}

// ---------------------------------------------------------------------------
// A raw QUIC client: the relay's own certificate as the only trust anchor,
// and no transport (RelayConnection reads everything it is sent).

fn raw_endpoint(relay: &TestRelay, stream_window: u32) -> quinn::Endpoint {
    let (cert, _) = RelayCert::load_or_create(relay.dir.path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![sotto_proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(stream_window));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

async fn raw_connect(endpoint: &quinn::Endpoint, relay: &TestRelay) -> quinn::Connection {
    endpoint
        .connect(relay.addr, sotto_relay::RELAY_SERVER_NAME)
        .unwrap()
        .await
        .unwrap()
}

fn frame(id: u64, request: Request) -> BytesMut {
    let mut bytes = BytesMut::new();
    encode_frame(
        &wire::ClientFrame {
            id,
            request: Some(request),
        },
        &mut bytes,
    );
    bytes
}

fn hello() -> Request {
    Request::Hello(wire::Hello {
        version: sotto_proto::PROTOCOL_VERSION,
        access_token: Bytes::new(),
    })
}

/// Says hello on a raw connection and returns its stream and challenge.
async fn raw_hello(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream, Challenge) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(1, hello())).await.unwrap();
    let mut decoder = FrameDecoder::new(sotto_proto::PROTOCOL_MAX_FRAME);
    loop {
        let chunk = recv.read_chunk(64 * 1024, true).await.unwrap().unwrap();
        decoder.push(&chunk.bytes);
        if let Some(bytes) = decoder.next_frame().unwrap() {
            let reply = wire::ServerFrame::decode(bytes).unwrap();
            let Some(wire::server_frame::Frame::Response(wire::Response {
                result: Some(wire::response::Result::Welcome(welcome)),
                ..
            })) = reply.frame
            else {
                panic!("expected a welcome, got {reply:?}");
            };
            return (
                send,
                recv,
                Challenge::from_slice(&welcome.challenge).unwrap(),
            );
        }
    }
}

fn owner_request(challenge: &Challenge, owner: &Owner, op: wire::mailbox_op::Op) -> Request {
    let body = wire::MailboxOp { op: Some(op) }.encode_to_vec();
    let signature = owner.sign(&sotto_proto::request_signing_message(challenge, &body));
    Request::Mailbox(wire::MailboxRequest {
        mailbox_id: owner.mailbox().as_bytes().to_vec().into(),
        blinded_key: owner.blinded_key().to_vec().into(),
        body: body.into(),
        signature: signature.to_vec().into(),
    })
}

// ---------------------------------------------------------------------------
// (a) a flood from many connections against a polite client.

/// How long and how hard to flood.
struct FloodPlan {
    /// Flooding connections.
    connections: usize,
    /// Put→push samples of the polite client, unloaded and again flooded.
    samples: usize,
    /// The flood stops after this even if the samples are not all taken.
    max_flood: Duration,
}

/// Latencies, sorted.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn at(&self, quantile: f64) -> Duration {
        let i = ((self.0.len() as f64 * quantile).ceil() as usize).clamp(1, self.0.len());
        self.0[i - 1]
    }
    fn p50(&self) -> Duration {
        self.at(0.50)
    }
    fn p99(&self) -> Duration {
        self.at(0.99)
    }
    fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} samples, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.0.len(),
            self.p50().as_secs_f64() * 1e3,
            self.p99().as_secs_f64() * 1e3,
            self.max().as_secs_f64() * 1e3
        )
    }
}

/// What the flood test saw.
struct FloodFigures {
    unloaded: Latencies,
    flooded: Latencies,
    /// Frames the flooder wrote.
    flood_frames: u64,
    /// How long the flood ran.
    flood_secs: f64,
    /// Times the relay stopped reading a flooding connection for a while.
    rate_pauses: u64,
    /// Times the relay closed a flooding connection.
    flood_disconnects: u64,
    /// Requests the relay refused while flooded.
    refused: u64,
    /// Requests the relay answered while flooded (puts stored, etc.).
    flood_puts: u64,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    peak_open_connections: u64,
    peak_queued_bytes: u64,
    /// Datagrams the kernel dropped for full UDP receive buffers during the
    /// flood, machine-wide: on loopback each is a QUIC packet lost.
    udp_drops: u64,
}

/// `RcvbufErrors` of `/proc/net/snmp`.
fn udp_receive_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors");
    column
        .and_then(|c| values.split_whitespace().nth(c)?.parse().ok())
        .unwrap_or(0)
}

/// A polite client: a sender, and a receiver subscribed to its mailbox.
struct Polite {
    sender: RelayConnection,
    _receiver: RelayConnection,
    pushes: tokio::sync::mpsc::Receiver<sotto_core::Pushed>,
    owner: Owner,
    next_tag: u64,
}

impl Polite {
    async fn connect(relay: &RelayAddr) -> Self {
        let owner = Owner::new(1);
        let receiver = RelayConnection::connect(relay, None).await.unwrap();
        let pushes = receiver.take_pushes().unwrap();
        receiver.subscribe(&owner, 0).await.unwrap();
        Self {
            sender: RelayConnection::connect(relay, None).await.unwrap(),
            _receiver: receiver,
            pushes,
            owner,
            next_tag: 0,
        }
    }

    /// `samples` put→push latencies, one put every 4 ms at most (a chatty
    /// client, well inside its rate limit).
    async fn measure(&mut self, samples: usize, until: Option<Instant>) -> Latencies {
        let mut tick = tokio::time::interval(Duration::from_millis(4));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut latencies = Vec::with_capacity(samples);
        while latencies.len() < samples && until.is_none_or(|until| Instant::now() < until) {
            tick.tick().await;
            let tag = self.next_tag;
            self.next_tag += 1;
            let (mailbox, blob) = (self.owner.mailbox(), blob(tag));
            let start = Instant::now();
            let put = self.sender.put(&mailbox, &blob, 0);
            let push = tokio::time::timeout(Duration::from_secs(10), self.pushes.recv());
            let (put, push) = tokio::join!(put, push);
            put.unwrap();
            let pushed = push.expect("the push arrives").unwrap();
            latencies.push(start.elapsed());
            assert_eq!(tag_of(&pushed.blob), tag, "pushes arrive in order");
        }
        latencies.sort();
        Latencies(latencies)
    }
}

/// One flooding connection's batch of 64 frames, written back to back:
/// garbage (a valid length, a body that does not decode), pings, slot
/// reads, and one 1 KiB put to a mailbox of its own. Writes are few on
/// purpose: what admitted puts cost everyone is the disk's fsync time,
/// which quotas and the disk budget govern, not fairness.
fn flood_batch(seed: u8) -> Bytes {
    let mut batch = BytesMut::new();
    let mailbox = Owner::new(100 + seed).mailbox();
    for i in 0..64u64 {
        let id = 1_000_000 + i;
        match i % 4 {
            _ if i == 63 => batch.extend_from_slice(&frame(
                id,
                Request::Put(wire::Put {
                    mailbox_id: mailbox.as_bytes().to_vec().into(),
                    blob: blob(i).into_bytes(),
                    ttl_secs: 0,
                }),
            )),
            0 => {
                batch.put_u32(7);
                batch.put_slice(&[0xff; 7]);
            }
            1 | 3 => batch.extend_from_slice(&frame(id, Request::Ping(wire::Ping {}))),
            _ => batch.extend_from_slice(&frame(
                id,
                Request::SlotGet(wire::SlotGet {
                    slot_id: vec![seed; 32].into(),
                }),
            )),
        }
    }
    batch.freeze()
}

/// Floods from `connections` connections until `stop`, counting the frames
/// it writes; each connection reconnects when the relay closes it. Returns
/// how many times the relay closed one.
async fn flood(
    relay: RelayAddr,
    connections: usize,
    stop: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
) -> u64 {
    let disconnects = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 0..connections {
        let (stop, frames, disconnects) = (stop.clone(), frames.clone(), disconnects.clone());
        tasks.spawn(async move {
            let batch = flood_batch(seed as u8);
            while !stop.load(Ordering::Relaxed) {
                // The relay may refuse while it is closing this
                // connection's predecessor; try again.
                let Ok(conn) = RelayConnection::connect(&relay, None).await else {
                    tokio::task::yield_now().await;
                    continue;
                };
                while !stop.load(Ordering::Relaxed) {
                    if conn.send_raw(&batch).await.is_err() {
                        disconnects.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    frames.fetch_add(64, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    disconnects.load(Ordering::Relaxed)
}

/// The limits of the flood tests: short, so the flooder meets them within
/// seconds. Each connection may send 300 requests/s with bursts of 100 and
/// is closed after 100 refusals in a row.
const FLOOD_LIMITS: (u32, u32, u32) = (300, 100, 100);

/// Where the flood goes: the relay's address, its counters when it runs in
/// this process, and the process whose memory is the relay's.
struct FloodTarget {
    addr: RelayAddr,
    counters: Option<Relay>,
    pid: u32,
}

/// An in-process relay on its own runtime, with the flood limits and a
/// clock that follows the wall clock.
fn in_process_relay() -> (tokio::runtime::Runtime, TestRelay) {
    let relay_rt = runtime("relay", 2);
    let relay = relay_rt.block_on(TestRelay::start_with(|c| {
        (
            c.limits.requests_per_sec,
            c.limits.request_burst,
            c.limits.max_rate_violations,
        ) = FLOOD_LIMITS;
        c.limits.mailbox_max_blobs = 1_000_000;
    }));
    relay_rt.spawn(follow_wall_clock(relay.clock.clone()));
    (relay_rt, relay)
}

fn run_flood(plan: &FloodPlan, target: &FloodTarget) -> FloodFigures {
    let read = |pick: fn(&sotto_relay::Stats) -> &AtomicU64| {
        target
            .counters
            .as_ref()
            .map_or(0, |relay| counter(relay, pick))
    };
    let client_rt = runtime("polite", 1);
    let flood_rt = runtime("flood", 1);

    let mut polite = client_rt.block_on(Polite::connect(&target.addr));
    // Warm up (first sled writes, first pushes), then the baseline.
    client_rt.block_on(polite.measure(20, None));
    let unloaded = client_rt.block_on(polite.measure(plan.samples, None));

    let rss_before_kib = rss_kib_of(target.pid);
    let drops_before = udp_receive_drops();
    let refused_before = read(|s| &s.refused);
    let pauses_before = read(|s| &s.rate_pauses);
    let puts_before = read(|s| &s.puts);
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, counters, pid) = (stop.clone(), target.counters.clone(), target.pid);
        std::thread::spawn(move || {
            let (mut rss, mut open, mut queued) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                let now = rss_kib_of(pid);
                rss = rss.max(now);
                if let Some(relay) = &counters {
                    open = open.max(counter(relay, |s| &s.open_connections));
                    queued = queued.max(counter(relay, |s| &s.queued_bytes));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (rss, open, queued)
        })
    };
    let flood_started = Instant::now();
    let flooder = flood_rt.spawn(flood(
        target.addr,
        plan.connections,
        stop.clone(),
        frames.clone(),
    ));
    // Measure once the flood is under way.
    let started = client_rt.block_on(eventually(Duration::from_secs(5), || {
        frames.load(Ordering::Relaxed) > 10_000
    }));
    assert!(started, "the flood never got going");
    let flooded =
        client_rt.block_on(polite.measure(plan.samples, Some(Instant::now() + plan.max_flood)));
    stop.store(true, Ordering::Relaxed);
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let flood_disconnects = flood_rt.block_on(flooder).unwrap();
    let udp_drops = udp_receive_drops() - drops_before;
    let (rss_peak_kib, peak_open_connections, peak_queued_bytes) = sampler.join().unwrap();
    drop(polite);
    drop(flood_rt);
    drop(client_rt);
    FloodFigures {
        unloaded,
        flooded,
        flood_frames: frames.load(Ordering::Relaxed),
        flood_secs,
        rate_pauses: read(|s| &s.rate_pauses) - pauses_before,
        flood_disconnects,
        refused: read(|s| &s.refused) - refused_before,
        flood_puts: read(|s| &s.puts) - puts_before,
        rss_before_kib,
        rss_peak_kib,
        peak_open_connections,
        peak_queued_bytes,
        udp_drops,
    }
}

fn report(figures: &FloodFigures) {
    eprintln!("unloaded: {}", figures.unloaded);
    eprintln!("flooded:  {}", figures.flooded);
    eprintln!(
        "flood: {} frames written in {:.1} s, {} refused, {} read pauses, {} puts stored, \
         {} disconnects; RSS {} -> peak {} KiB; peak {} open connections, {} queued bytes; \
         {} UDP drops",
        figures.flood_frames,
        figures.flood_secs,
        figures.refused,
        figures.rate_pauses,
        figures.flood_puts,
        figures.flood_disconnects,
        figures.rss_before_kib,
        figures.rss_peak_kib,
        figures.peak_open_connections,
        figures.peak_queued_bytes,
        figures.udp_drops
    );
}

/// "3× the unloaded p99" is measured against at least this. Under the
/// flood a put→push crosses five busy tasks (reader, commit waiter,
/// flusher, pusher, writer), each waiting its turn behind the flooder's; on
/// a shared 2-core machine running a debug build that is tens of
/// milliseconds of scheduling whatever the relay does, while an unloaded
/// p99 can be a few.
const LATENCY_FLOOR: Duration = Duration::from_millis(20);

#[test]
fn a_flood_from_many_connections_is_throttled_and_a_polite_client_keeps_its_latency() {
    let _measuring = measuring();
    // Latency on a shared machine has bursts of its own (other builds, the
    // disk's fsync), so a flood that misses the bound once gets a second
    // run: unfairness in the relay fails both, a neighbour's burst does not.
    for attempt in 1..=2 {
        let figures = flood_once();
        let bound = 3 * figures.unloaded.p99().max(LATENCY_FLOOR);
        if figures.flooded.p99() <= bound {
            return;
        }
        assert!(
            attempt < 2,
            "flooded p99 {:?} is above 3× the unloaded p99 ({:?}), twice",
            figures.flooded.p99(),
            figures.unloaded.p99()
        );
    }
}

/// One flood against a fresh relay, with every check but the latency one.
fn flood_once() -> FloodFigures {
    let (relay_rt, relay) = in_process_relay();
    let target = FloodTarget {
        addr: addr(&relay),
        counters: Some(relay.server().relay().clone()),
        pid: std::process::id(),
    };
    let figures = run_flood(
        &FloodPlan {
            connections: 16,
            samples: 400,
            max_flood: Duration::from_secs(6),
        },
        &target,
    );
    relay_rt.block_on(relay.stop());
    report(&figures);
    assert!(
        figures.flooded.0.len() >= 200,
        "the polite client took only {} samples during the flood",
        figures.flooded.0.len()
    );
    // The flooder was refused and held back: after each refusal the relay
    // stops reading that connection until its next token, so QUIC flow
    // control caps what the flooder can even write (unthrottled, it wrote
    // about 6 million frames a second; see docs/SECURITY.md).
    assert!(figures.refused > 1_000, "refused");
    assert!(figures.rate_pauses > 1_000, "held back");
    let written_per_sec = figures.flood_frames as f64 / figures.flood_secs;
    assert!(
        written_per_sec < 500_000.0,
        "the flooder wrote {written_per_sec:.0} frames/s"
    );
    // The relay's connections and queues stay within their caps.
    assert!(figures.peak_open_connections <= 16 + 2);
    assert!(figures.peak_queued_bytes <= 18 * OUT_BYTES as u64);
    // A backstop: this process's memory includes the flooder's (a few
    // hundred MiB of quinn endpoints, one per reconnect), but a queue that
    // grew like the old 128 MiB per connection would cross it.
    let growth_mib = figures.rss_peak_kib.saturating_sub(figures.rss_before_kib) / 1024;
    assert!(
        growth_mib < 512,
        "RSS grew by {growth_mib} MiB in the flood"
    );
    figures
}

/// The figures in docs/SECURITY.md: the real `sotto-relay` binary in its
/// own process (so its memory is its own), a longer flood, more samples.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn measure_polite_latency_and_relay_memory_under_flood() {
    let _measuring = measuring();
    for connections in [16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let (rate, burst, violations) = FLOOD_LIMITS;
        let mut relay = support::spawn_relay(
            dir.path(),
            &format!(
                "[tokens]\nrequire_tokens = false\n[limits]\nrequests_per_sec = {rate}\n\
                 request_burst = {burst}\nmax_rate_violations = {violations}\n\
                 mailbox_max_blobs = 1000000\n"
            ),
        );
        let target = FloodTarget {
            addr: relay.addr,
            counters: None,
            pid: relay.child.id(),
        };
        let figures = run_flood(
            &FloodPlan {
                connections,
                samples: 2_000,
                max_flood: Duration::from_secs(20),
            },
            &target,
        );
        eprintln!(
            "--- {connections} flooding connections, relay process {}",
            target.pid
        );
        report(&figures);
        relay.child.kill().unwrap();
        relay.child.wait().unwrap();
    }
}

// ---------------------------------------------------------------------------
// (b) clients that open streams and never read.

/// Regression: the writer's queue was bounded in frames only, so a client
/// that asked for 512 KiB fetch pages and never read made the relay hold
/// 256 of them (128 MiB) per connection.
#[test]
fn clients_that_never_read_hold_a_bounded_amount_of_relay_memory() {
    let _measuring = measuring();
    runtime("never-read", 2).block_on(clients_that_never_read());
}

async fn clients_that_never_read() {
    let relay = TestRelay::start().await;
    let shared: Relay = relay.server().relay().clone();
    let owner = Owner::new(7);
    let filler = connect(&relay).await;
    for tag in 0..8 {
        filler
            .put(&owner.mailbox(), &tagged_blob(Bucket::K64, tag), 0)
            .await
            .unwrap();
    }
    let rss_before = rss_kib();
    let fetches_before = counter(&shared, |s| &s.fetches);

    // A small receive window: the relay's writer blocks at once.
    let endpoint = raw_endpoint(&relay, 16 * 1024);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let conn = raw_connect(&endpoint, &relay).await;
        let (mut send, recv, challenge) = raw_hello(&conn).await;
        // The relay grants one bidirectional stream and no unidirectional
        // ones: more cannot even be opened.
        assert!(conn.open_bi().now_or_never().is_none(), "a second stream");
        assert!(conn.open_uni().now_or_never().is_none(), "a uni stream");
        let mut requests = BytesMut::new();
        for id in 0..300 {
            let fetch = wire::mailbox_op::Op::Fetch(wire::Fetch { after: 0, limit: 0 });
            requests.extend_from_slice(&frame(10 + id, owner_request(&challenge, &owner, fetch)));
        }
        send.write_all(&requests).await.unwrap();
        stalled.push((conn, send, recv));
    }
    // Wait until the relay stops serving them: it is blocked on them.
    let mut last = u64::MAX;
    let settled = eventually(Duration::from_secs(10), || {
        let now = counter(&shared, |s| &s.fetches);
        std::mem::replace(&mut last, now) == now
    })
    .await;
    assert!(settled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = counter(&shared, |s| &s.fetches) - fetches_before;
    let queued = counter(&shared, |s| &s.queued_bytes);
    let growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    eprintln!("served {served} pages of 1200, {queued} bytes queued, RSS +{growth_mib} MiB");
    // Each page is ~512 KiB: about two fit in a connection's budget, one
    // waits for room and a few sit in quinn's windows.
    assert!(
        served <= 4 * 8,
        "{served} pages served to clients that do not read"
    );
    assert!(queued <= 4 * OUT_BYTES as u64);
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB");

    // Everyone else is served.
    let polite = connect(&relay).await;
    let other = Owner::new(8);
    polite.put(&other.mailbox(), &blob(1), 0).await.unwrap();
    assert_eq!(polite.fetch(&other, 0, 0).await.unwrap().blobs.len(), 1);
    assert_eq!(polite.fetch(&owner, 0, 0).await.unwrap().blobs.len(), 8);

    // Their queues go when they do.
    for (conn, _, _) in &stalled {
        conn.close(0u32.into(), b"");
    }
    drop(stalled);
    assert!(
        eventually(Duration::from_secs(5), || {
            counter(&shared, |s| &s.queued_bytes) == 0
                && counter(&shared, |s| &s.open_connections) == 2
        })
        .await,
        "queued bytes and connections are released"
    );
    relay.stop().await;
}

// ---------------------------------------------------------------------------
// (c) slowloris: stalled handshakes, silent connections.

#[tokio::test]
async fn connections_that_never_say_hello_are_closed_at_the_hello_timeout() {
    let relay = TestRelay::start_with(|c| c.limits.hello_timeout_ms = 300).await;
    let polite = connect(&relay).await;
    let endpoint = raw_endpoint(&relay, 1024 * 1024);
    // One opens no stream; one sends half a Hello and stalls.
    let silent = raw_connect(&endpoint, &relay).await;
    let half = raw_connect(&endpoint, &relay).await;
    let (mut send, _recv) = half.open_bi().await.unwrap();
    let hello = frame(1, hello());
    send.write_all(&hello[..hello.len() - 1]).await.unwrap();

    let start = Instant::now();
    for conn in [&silent, &half] {
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("closed well before the idle timeout");
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, 1u32.into(), "a protocol close");
            }
            other => panic!("expected the relay to close, got {other}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    // A client that said hello in time is not affected.
    polite.ping().await.unwrap();
    relay.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_at_the_idle_timeout() {
    let relay = TestRelay::start_with(|c| c.limits.idle_timeout_secs = 1).await;
    let shared: Relay = relay.server().relay().clone();
    let endpoint = raw_endpoint(&relay, 1024 * 1024);
    let conn = raw_connect(&endpoint, &relay).await;
    let _stream = raw_hello(&conn).await;
    let start = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("dropped at the idle timeout");
    assert!(
        matches!(reason, quinn::ConnectionError::TimedOut),
        "{reason}"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), || counter(&shared, |s| &s
            .open_connections)
            == 0)
        .await,
        "the relay let the connection go"
    );
    relay.stop().await;
}

/// Makes a real quinn client send its first Initial to a socket of ours
/// and returns that datagram: a handshake start the relay will accept.
async fn captured_initial(relay: &TestRelay) -> Vec<u8> {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let endpoint = raw_endpoint(relay, 1024 * 1024);
    let connecting = endpoint
        .connect(trap.local_addr().unwrap(), sotto_relay::RELAY_SERVER_NAME)
        .unwrap();
    let mut datagram = vec![0u8; 2048];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), trap.recv_from(&mut datagram))
        .await
        .unwrap()
        .unwrap();
    drop(connecting);
    endpoint.close(0u32.into(), b"");
    datagram.truncate(len);
    datagram
}

/// Regression: a peer that sends one Initial and never answers the relay
/// holds a connection slot until the handshake gives up, which was the
/// idle timeout (60 s by default). Now the hello timeout covers the
/// handshake too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_lose_their_slot_at_the_hello_timeout() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_connections = 4;
        c.limits.hello_timeout_ms = 500;
        c.limits.idle_timeout_secs = 30;
    })
    .await;
    let polite = connect(&relay).await;
    // Three stalled handshakes from three sockets fill the other slots.
    let mut stalls = Vec::new();
    for _ in 0..3 {
        let initial = captured_initial(&relay).await;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&initial, relay.addr).await.unwrap();
        stalls.push(socket);
    }
    let start = Instant::now();
    // Garbage that looks like nothing, too: dropped, holds nothing.
    stalls[0].send_to(&[0xc0; 1200], relay.addr).await.unwrap();
    assert!(
        RelayConnection::connect(&addr(&relay), None).await.is_err(),
        "the stalled handshakes hold every free slot"
    );
    // The connected client is unaffected.
    polite.ping().await.unwrap();
    polite
        .put(&Owner::new(1).mailbox(), &blob(1), 0)
        .await
        .unwrap();
    // The slots come back at the hello timeout, long before the idle one.
    let newcomer = loop {
        match RelayConnection::connect(&addr(&relay), None).await {
            Ok(conn) => break conn,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("still refused after {:?}: {error}", start.elapsed()),
        }
    };
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "slots came back after {waited:?}"
    );
    newcomer.ping().await.unwrap();
    drop(stalls);
    relay.stop().await;
}
