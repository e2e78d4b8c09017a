//! Issue 20's figures for the desktop client, measured on the real window
//! (`Shell`, driven headless by egui_kittest as `tests/window.rs` does)
//! over real profiles: a relay on loopback, real sled stores in a temp
//! dir. Run with `cargo bench -p sotto-desktop --bench figures`.
//!
//! The history is written straight into the store
//! (`Engine::bench_import_history`: history entries, message index and
//! status records, exactly what receiving and sending would file), not sent
//! through the relay, so a profile of 100,000 messages takes seconds.
//!
//! Two profiles: carol holds one conversation of 100,000 messages (with
//! alice); bob holds 10 conversations of 10,000 (with m0..m9). Each
//! measurement runs in a fresh process (this binary again, with
//! `SOTTO_FIGURES_CHILD` set), so what a run allocated or cached never
//! flatters the next; the relay stays in the parent.
//!
//! - **open**: carol's window is up and idle; the clock starts at the
//!   click's call (`Desktop::open_named("alice")`) and stops when a frame
//!   has drawn the conversation's newest message (its last page loaded).
//!   The window is polled every millisecond without drawing meanwhile
//!   (the real window repaints when woken or every 50 ms while busy).
//! - **cold start**: `Shell::new` on bob's closed profile until a frame
//!   has drawn the 10 conversations in the side list. The first run after
//!   the import is given apart (it may build what an old profile lacks).
//! - **scroll**: carol's 100k conversation open, the mouse wheel scrolls
//!   up 240 points a frame at 60 frames a second; every 40 frames
//!   (about a page's height), "Show earlier" / "Load earlier messages" is
//!   pressed (a page loaded from the store), until 5,500 lines are drawn. Frame time = egui's whole frame (layout and
//!   the AccessKit tree) plus tessellation, on the CPU; no GPU.
//! - **rss**: `VmRSS`/`VmHWM` of a fresh process before the window, with
//!   the window up, and after opening each of bob's 10 conversations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use sotto_core::{App, KeySource, RelayTarget, system_clock};
use sotto_desktop::{Desktop, Shell};

/// Messages in carol's one long conversation.
const BIG: usize = 100_000;
/// Bob's conversations, and the messages in each.
const CONVERSATIONS: usize = 10;
const EACH: usize = 10_000;
/// Fresh processes per figure.
const OPEN_RUNS: usize = 5;
const COLD_RUNS: usize = 5;
/// Everything a run waits for must come within this.
const PATIENCE: Duration = Duration::from_secs(120);
/// 2026-01-01, where the imported histories start.
const START_MS: u64 = 1_767_225_600_000;

fn main() {
    match std::env::var("SOTTO_FIGURES_CHILD").ok().as_deref() {
        Some(mode) => {
            let home = PathBuf::from(std::env::var("SOTTO_FIGURES_HOME").expect("home"));
            match mode {
                "open" => child_open(&home),
                "cold" => child_cold(&home),
                "scroll" => child_scroll(&home),
                "rss" => child_rss(&home),
                other => panic!("unknown child mode {other}"),
            }
        }
        None => parent(),
    }
}

// ---------------------------------------------------------------- parent

fn parent() {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let _server = runtime.block_on(setup(dir.path()));
    println!(
        "setup: profiles written in {:.1} s ({BIG} messages for carol, {CONVERSATIONS} x {EACH} for bob)",
        started.elapsed().as_secs_f64()
    );
    let carol = dir.path().join("carol");
    let bob = dir.path().join("bob");

    // SOTTO_FIGURES_RUNS=N: N runs of open and cold start instead.
    let runs = |default: usize| {
        std::env::var("SOTTO_FIGURES_RUNS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let open: Vec<f64> = (0..runs(OPEN_RUNS))
        .map(|_| single(&child("open", &carol), "open_ms"))
        .collect();
    let cold: Vec<f64> = (0..runs(COLD_RUNS))
        .map(|_| single(&child("cold", &bob), "cold_ms"))
        .collect();
    // SOTTO_FIGURES_PERF=DIR: one more open and cold start each under
    // `perf record`, to see where the time goes; nothing else.
    if let Ok(out) = std::env::var("SOTTO_FIGURES_PERF") {
        for (mode, home) in [("open", &carol), ("cold", &bob)] {
            let status = Command::new("perf")
                .args(["record", "-F", "999", "-g", "-o"])
                .arg(Path::new(&out).join(format!("{mode}.data")))
                .arg(std::env::current_exe().unwrap())
                .env("SOTTO_FIGURES_CHILD", mode)
                .env("SOTTO_FIGURES_HOME", home)
                .status()
                .unwrap();
            println!("perf record {mode}: {status}");
        }
        return;
    }
    let scroll = child("scroll", &carol);
    let rss = child("rss", &bob);

    println!();
    println!("== figures ==");
    println!(
        "open {BIG} messages, first run after import: {:.1} ms",
        open[0]
    );
    println!("open {BIG} messages, later runs: {}", summary(&open[1..]));
    println!(
        "cold start to the conversation list, first run after import: {:.1} ms",
        cold[0]
    );
    println!("cold start, later runs: {}", summary(&cold[1..]));
    for line in scroll.iter().chain(rss.iter()) {
        println!("{line}");
    }
}

/// Median, then the range, of `values` in ms.
fn summary(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "median {:.1} ms, range {:.1}-{:.1} ms over {} runs",
        percentile(&sorted, 0.5),
        sorted[0],
        sorted[sorted.len() - 1],
        sorted.len()
    )
}

/// The `q` quantile of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs this binary as a child in `mode` on `home`; its `FIG` lines.
fn child(mode: &str, home: &Path) -> Vec<String> {
    let output = Command::new(std::env::current_exe().unwrap())
        .env("SOTTO_FIGURES_CHILD", mode)
        .env("SOTTO_FIGURES_HOME", home)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert!(
        output.status.success(),
        "{mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FIG "))
        .map(str::to_owned)
        .collect()
}

/// The value of `name` in a child's `FIG name value` lines.
fn single(lines: &[String], name: &str) -> f64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
}

/// The relay, the team (alice, bob, carol, m0..m9) and the two profiles'
/// histories. Returns the relay, which must outlive the children.
async fn setup(dir: &Path) -> sotto_relay::Server {
    let server = sotto_relay::Server::start(sotto_relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("relay"),
        ..sotto_relay::Config::default()
    })
    .await
    .unwrap();
    let relay = RelayTarget {
        addr: server.local_addr().to_string(),
        fingerprint: server.fingerprint(),
    };
    let bootstrap = server.new_bootstrap_code().unwrap().to_owned();
    let home = dir.join("alice");
    let mut alice = App::create_team(
        &home,
        KeySource::key_file_in(&home),
        relay,
        &bootstrap,
        "acme",
        "alice",
        system_clock(),
    )
    .await
    .unwrap();
    let mut bob = join(&mut alice, dir, "bob").await;
    let mut carol = join(&mut alice, dir, "carol").await;
    let peers: Vec<String> = (0..CONVERSATIONS).map(|i| format!("m{i}")).collect();
    for peer in &peers {
        drop(join(&mut alice, dir, peer).await);
    }
    // A first message makes each a contact, with a session: what a real
    // conversation starts with.
    for peer in &peers {
        bob.send(peer, "hi").await.unwrap();
    }
    carol.send("alice", "hi").await.unwrap();
    for (i, peer) in peers.iter().enumerate() {
        bob.client()
            .engine_mut()
            .bench_import_history(peer, EACH, (i as u128 + 1) << 64, START_MS)
            .unwrap();
    }
    carol
        .client()
        .engine_mut()
        .bench_import_history("alice", BIG, 1 << 96, START_MS)
        .unwrap();
    server
}

/// `handle` invited by `admin` and joined, in `dir/handle`.
async fn join(admin: &mut App, dir: &Path, handle: &str) -> App {
    let code = admin.invite(handle, 3600).await.unwrap();
    let home = dir.join(handle);
    App::join(&home, KeySource::key_file_in(&home), &code, system_clock())
        .await
        .unwrap()
}

// ---------------------------------------------------------------- children

/// A window on `home` as the real one is built, and what wakes it.
fn window(home: &Path) -> (Harness<'static, Shell>, Arc<tokio::runtime::Runtime>) {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let shell = Shell::new(home.to_owned(), runtime.clone(), Arc::new(|| {}));
    (harness(shell), runtime)
}

fn harness(shell: Shell) -> Harness<'static, Shell> {
    Harness::builder()
        .with_size(egui::vec2(1000.0, 700.0))
        .build_ui_state(|ui, shell: &mut Shell| shell.ui(ui), shell)
}

fn desktop<'a>(harness: &'a mut Harness<'static, Shell>) -> &'a mut Desktop {
    harness
        .state_mut()
        .desktop_mut()
        .expect("the profile opened")
}

/// Draws one frame and tessellates it, as the real window would before
/// handing it to the GPU; how long that took.
fn frame(harness: &mut Harness<'static, Shell>) -> Duration {
    let started = Instant::now();
    harness.step();
    let shapes = harness.output().shapes.clone();
    let ppp = harness.output().pixels_per_point;
    std::hint::black_box(harness.ctx.tessellate(shapes, ppp));
    started.elapsed()
}

/// Polls the window's session every millisecond (drawing nothing) until
/// `done`, then draws a frame.
fn poll_until(harness: &mut Harness<'static, Shell>, what: &str, done: impl Fn(&Desktop) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let desktop = desktop(harness);
        desktop.poll();
        if done(desktop) {
            break;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    frame(harness);
}

/// Waits until the side list shows every conversation with history.
fn list_drawn(harness: &mut Harness<'static, Shell>, names: &[&str]) {
    poll_until(harness, "the conversation list", |d| {
        let rows = d.session().conversations();
        names.iter().all(|n| rows.iter().any(|r| r.label == *n))
    });
}

/// The last line of the open conversation, if it is a message.
fn newest(desktop: &Desktop) -> Option<String> {
    let session = desktop.session();
    match session.line(session.lines().checked_sub(1)?)? {
        sotto_cli::Line::Message { text, .. } => Some(text.to_owned()),
        sotto_cli::Line::Notice(_) => None,
    }
}

/// Opens `peer`'s conversation and waits for a frame with its newest
/// message `count - 1`.
fn open(harness: &mut Harness<'static, Shell>, peer: &str, count: usize) -> Duration {
    let expected = format!("message {}:", count - 1);
    let started = Instant::now();
    assert!(desktop(harness).open_named(peer));
    poll_until(harness, "the last page", |d| {
        newest(d).is_some_and(|t| t.starts_with(&expected))
    });
    started.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Closes the profile; an owner that ended with an error is reported
/// (a figure taken before it is still a figure).
fn close(mut harness: Harness<'static, Shell>) {
    if let Err(error) = harness.state_mut().close_blocking() {
        println!("the owner ended with an error: {error}");
    }
}

fn child_open(home: &Path) {
    let (mut harness, _runtime) = window(home);
    list_drawn(&mut harness, &["alice"]);
    // The first sync and the directory settle before the clock starts.
    desktop(&mut harness).settle(PATIENCE);
    frame(&mut harness);
    let took = open(&mut harness, "alice", BIG);
    println!("FIG open_ms {:.2}", ms(took));
    close(harness);
}

fn child_cold(home: &Path) {
    let started = Instant::now();
    let (mut harness, _runtime) = window(home);
    frame(&mut harness);
    let names: Vec<String> = (0..CONVERSATIONS).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    list_drawn(&mut harness, &names);
    println!("FIG cold_ms {:.2}", ms(started.elapsed()));
    close(harness);
}

fn child_scroll(home: &Path) {
    let (mut harness, _runtime) = window(home);
    list_drawn(&mut harness, &["alice"]);
    desktop(&mut harness).settle(PATIENCE);
    open(&mut harness, "alice", BIG);
    let center = egui::pos2(600.0, 350.0);
    harness.hover_at(center);
    let mut frames = Vec::new();
    let mut pages = 0;
    // Frames before the first press: the last page only (500 lines).
    let mut first_page = 0;
    let deadline = Instant::now() + PATIENCE;
    // Until ten more pages of 500 are loaded and shown (5,500 lines
    // drawn each frame) and at least 300 frames, at most 900 frames.
    while (desktop(&mut harness).session().lines() < 5_500 || frames.len() < 300)
        && frames.len() < 900
    {
        assert!(Instant::now() < deadline, "timed out scrolling");
        harness.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: egui::vec2(0.0, 240.0),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Unknown,
            modifiers: egui::Modifiers::NONE,
        });
        frames.push(ms(frame(&mut harness)));
        let button = harness
            .query_by_label_contains("Show earlier")
            .or_else(|| harness.query_by_label_contains("Load earlier messages"));
        // Every 40 frames (about 10,000 points of scrolling, a page's
        // height), the button at the top is pressed.
        if frames.len() % 40 == 0
            && let Some(button) = button
        {
            if pages == 0 {
                first_page = frames.len();
            }
            button.click_accesskit();
            pages += 1;
        }
        std::thread::sleep(Duration::from_millis(16));
    }
    let mut last_page: Vec<f64> = frames[1..first_page.max(2)].to_vec();
    last_page.sort_by(f64::total_cmp);
    println!(
        "FIG scroll, last page only (500 lines drawn): {} frames, frame median {:.2} ms, p95 {:.2} ms",
        last_page.len(),
        percentile(&last_page, 0.5),
        percentile(&last_page, 0.95),
    );
    let lines = desktop(&mut harness).session().lines();
    let mut sorted = frames.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "FIG scroll: {} frames, {pages} presses of the earlier button ({lines} lines loaded): frame median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        frames.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.95),
        sorted[sorted.len() - 1],
    );
    close(harness);
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn child_rss(home: &Path) {
    let (before, _) = rss();
    let (mut harness, _runtime) = window(home);
    let names: Vec<String> = (0..CONVERSATIONS).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    list_drawn(&mut harness, &names);
    desktop(&mut harness).settle(PATIENCE);
    let (window_up, _) = rss();
    for name in &names {
        // bob's own "hi" came before the import: the newest is the last
        // imported message.
        open(&mut harness, name, EACH);
        desktop(&mut harness).settle(PATIENCE);
    }
    frame(&mut harness);
    let (after, peak) = rss();
    println!(
        "FIG rss: {before:.1} MiB before the window, {window_up:.1} MiB with it up, {after:.1} MiB after opening {CONVERSATIONS} conversations of {EACH} (peak {peak:.1} MiB)"
    );
    close(harness);
}
