//! Operating the relay, through the real binary: what its log holds,
//! metrics, health checks and reloads.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sotto_core::{RelayAddr, RelayConnection};

#[path = "relay_support/mod.rs"]
mod support;

use support::relay_bin;
use support::{Owner, blob};

/// A `sotto-relay` process whose stderr goes to a file.
struct Relay {
    child: Child,
    addr: RelayAddr,
    /// `metrics: ADDR` from stdout, when the metrics listener is on.
    metrics: Option<std::net::SocketAddr>,
    /// `bootstrap code: …` from stdout on a first start.
    bootstrap_code: Option<String>,
    stderr: PathBuf,
}

impl Relay {
    /// Starts the binary on 127.0.0.1:0 in `data` with `config` (TOML),
    /// extra `args` and `SOTTO_LOG=log`.
    fn start(data: &Path, config: &str, args: &[&str], log: &str) -> Self {
        let config_file = data.join("relay.toml");
        std::fs::write(&config_file, config).unwrap();
        let stderr = data.join("stderr.log");
        let mut child = Command::new(relay_bin())
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--config")
            .arg(&config_file)
            // Not the listen address: the first-start banner prints it.
            .args(["--public-addr", "relay.example.org:7443"])
            .args(args)
            .env("SOTTO_LOG", log)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut listen, mut fingerprint, mut metrics, mut bootstrap_code) =
            (None, None, None, None);
        loop {
            let line = lines.next().expect("relay printed its address").unwrap();
            if let Some(addr) = line.strip_prefix("listen: ") {
                listen = Some(addr.parse().unwrap());
            }
            if let Some(hex) = line.strip_prefix("fingerprint: ") {
                fingerprint = Some(hex::decode(hex).unwrap().try_into().unwrap());
            }
            if let Some(addr) = line.strip_prefix("metrics: ") {
                metrics = Some(addr.parse().unwrap());
            }
            if let Some(code) = line.strip_prefix("bootstrap code: ") {
                bootstrap_code = Some(code.to_owned());
            }
            // `data:` is the last line of the start-up block but the code.
            if line.starts_with("data: ") {
                break;
            }
        }
        // On a first start the code follows `data:`; it is in its file too.
        if bootstrap_code.is_none() {
            bootstrap_code = std::fs::read_to_string(data.join("bootstrap-code"))
                .ok()
                .map(|code| code.trim().to_owned());
        }
        Self {
            child,
            addr: RelayAddr {
                addr: listen.unwrap(),
                fingerprint: fingerprint.unwrap(),
            },
            metrics,
            bootstrap_code,
            stderr,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, wait for the exit, and return everything it logged.
    fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the relay exited with {status}");
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    /// Waits until the log contains `needle` (or fails after 10 s).
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client session: connect, put, fetch, ack, disconnect.
async fn some_traffic(addr: &RelayAddr) {
    let conn = RelayConnection::connect(addr, None).await.unwrap();
    conn.ping().await.unwrap();
    let owner = Owner::new(7);
    conn.put(&owner.mailbox(), &blob(1), 0).await.unwrap();
    let page = conn.fetch(&owner, 0, 0).await.unwrap();
    assert_eq!(page.blobs.len(), 1);
    conn.ack(&owner, vec![page.blobs[0].seq]).await.unwrap();
    conn.close().await;
}

const NO_TOKENS: &str = "[tokens]\nrequire_tokens = false\n";

// ------------------------------------------------------------------ logs

/// Issue 18 item 13: with the most verbose filter there is, a client's
/// connection leaves no peer address in the relay's log (quinn and rustls
/// log them at debug and trace level).
#[tokio::test]
async fn a_trace_log_names_no_peer_address() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), NO_TOKENS, &[], "trace");
    some_traffic(&relay.addr).await;
    let log = relay.stop();
    assert!(
        log.contains("relay stopped"),
        "the relay's own events are logged:\n{log}"
    );
    assert!(
        !log.contains("127.0.0.1"),
        "a peer address in the log:\n{log}"
    );
    // Naming the dependencies in the filter lets nothing of theirs through.
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        NO_TOKENS,
        &[],
        "quinn=trace,quinn_proto=trace,quinn_udp=trace,rustls=trace,trace",
    );
    some_traffic(&relay.addr).await;
    let log = relay.stop();
    assert!(!log.contains("127.0.0.1"), "{log}");
    assert!(!log.contains("quinn"), "{log}");
}

/// The explicit opt-in does let the libraries' events, and the addresses
/// in them, through: the test above would see them if the filter broke.
#[tokio::test]
async fn log_peer_addresses_lets_the_libraries_events_through() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), NO_TOKENS, &["--log-peer-addresses"], "trace");
    some_traffic(&relay.addr).await;
    let log = relay.stop();
    assert!(log.contains("quinn"), "{log}");
    assert!(log.contains("127.0.0.1"), "{log}");
}

/// Issue 24 item 8: `--log-format json` writes one JSON object a line, the
/// same events, and keeps the bootstrap code out of the log.
#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), NO_TOKENS, &["--log-format", "json"], "debug");
    let code = relay.bootstrap_code.clone().expect("a first start");
    some_traffic(&relay.addr).await;
    let log = relay.stop();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["fields"]["message"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
    }
    assert!(log.contains("\"relay stopped\""), "{log}");
    assert!(!log.contains(&code), "the bootstrap code is not logged");
    assert!(!log.contains("127.0.0.1"), "{log}");

    // The config key does the same.
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        &format!("log_format = \"json\"\n{NO_TOKENS}"),
        &[],
        "info",
    );
    let log = relay.stop();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

// --------------------------------------------------------------- metrics

/// One HTTP/1.1 request over loopback: (status, content type, body).
async fn http(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the listener answers in time")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// The value of the sample `name` (with its labels, if any) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// `promtool check metrics` on `text`, or a printed skip when promtool is
/// not installed (`.ci/run` installs it, so CI never skips).
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI (.ci/run installs the prometheus package)"
        );
        eprintln!("SKIPPED promtool check: promtool not installed (apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The example alert rules shipped in packaging/ load in Prometheus.
#[test]
fn the_example_alert_rules_pass_promtool() {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/prometheus/sotto-relay.rules.yml"
    );
    let Ok(out) = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI (.ci/run installs the prometheus package)"
        );
        eprintln!(
            "SKIPPED promtool check rules: promtool not installed (apt-get install prometheus)"
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

/// Issue 24 item 2: after real puts, a refusal, a fetch and an ack, the
/// scraped numbers moved by exactly that; the output passes promtool and
/// names no mailbox or address.
#[tokio::test]
async fn metrics_count_real_traffic_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("metrics_listen = \"127.0.0.1:0\"\n[limits]\nmailbox_max_blobs = 1\n{NO_TOKENS}");
    let relay = Relay::start(dir.path(), &config, &[], "warn");
    let metrics = relay
        .metrics
        .expect("the relay printed its metrics address");

    let (status, content_type, before) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_eq!(sample(&before, "sotto_puts_total"), 0.0);
    assert_eq!(sample(&before, "sotto_stored_blobs"), 0.0);

    let conn = RelayConnection::connect(&relay.addr, None).await.unwrap();
    let owner = Owner::new(9);
    conn.put(&owner.mailbox(), &blob(1), 0).await.unwrap();
    assert_eq!(
        support::code_of(conn.put(&owner.mailbox(), &blob(2), 0).await),
        sotto_proto::wire::ErrorCode::QuotaExceeded
    );
    let page = conn.fetch(&owner, 0, 0).await.unwrap();
    let (_, _, during) = get(metrics, "/metrics").await;
    assert_eq!(sample(&during, "sotto_connections_open"), 1.0);
    assert_eq!(sample(&during, "sotto_connections_accepted_total"), 1.0);
    assert_eq!(sample(&during, "sotto_puts_total"), 1.0);
    assert_eq!(sample(&during, "sotto_fetches_total"), 1.0);
    assert_eq!(
        sample(&during, "sotto_refusals_total{reason=\"quota\"}"),
        1.0
    );
    assert_eq!(
        sample(&during, "sotto_refusals_total{reason=\"rate\"}"),
        0.0
    );
    assert_eq!(sample(&during, "sotto_stored_blobs"), 1.0);
    assert!(sample(&during, "sotto_stored_bytes") >= 1024.0);
    assert_eq!(sample(&during, "sotto_mailboxes"), 1.0);
    assert!(sample(&during, "sotto_fsyncs_total") >= 1.0);
    assert!(sample(&during, "sotto_fsync_duration_seconds_count") >= 1.0);
    assert!(sample(&during, "sotto_fsync_duration_seconds_bucket{le=\"+Inf\"}") >= 1.0);

    conn.ack(&owner, vec![page.blobs[0].seq]).await.unwrap();
    conn.close().await;
    let (_, _, after) = get(metrics, "/metrics").await;
    assert_eq!(sample(&after, "sotto_acked_blobs_total"), 1.0);
    assert_eq!(sample(&after, "sotto_stored_blobs"), 0.0);

    // Counts, never names: no address, no mailbox ID, one label name.
    let mailbox_hex = hex::encode(owner.mailbox().as_bytes());
    for text in [&before, &during, &after] {
        assert!(!text.contains("127.0.0.1"));
        assert!(!text.contains(&mailbox_hex[..8]));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((_, labels)) = line.split_once('{') {
                assert!(
                    labels.starts_with("reason=\"") || labels.starts_with("le=\""),
                    "unexpected label in {line}"
                );
            }
        }
    }
    promtool_check_metrics(&after);

    // Scrapers that accept OpenMetrics get it.
    let (status, content_type, om) = http(
        metrics,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE sotto_puts counter\n"), "{om}");
    relay.stop();
}

/// The listener answers only what it serves, and bad requests get a clear
/// status, never a hang.
#[tokio::test]
async fn the_metrics_listener_refuses_what_it_does_not_serve() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        NO_TOKENS,
        &["--metrics-listen", "127.0.0.1:0"],
        "warn",
    );
    let metrics = relay.metrics.unwrap();
    assert_eq!(
        get(metrics, "/healthz").await,
        (200, "text/plain; charset=utf-8".into(), "ok\n".into())
    );
    assert_eq!(get(metrics, "/admin").await.0, 404);
    assert_eq!(
        http(metrics, b"DELETE /metrics HTTP/1.1\r\n\r\n").await.0,
        405
    );
    assert_eq!(http(metrics, b"\x16\x03\x01garbage\r\n\r\n").await.0, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http(metrics, huge.as_bytes()).await.0, 431);
    // A client that sends half a request and waits is cut off.
    let started = Instant::now();
    assert_eq!(http(metrics, b"GET /metrics HTTP/1.1\r\n").await.0, 408);
    assert!(started.elapsed() < Duration::from_secs(9));
    // Off unless configured.
    let dir = tempfile::tempdir().unwrap();
    let quiet = Relay::start(dir.path(), NO_TOKENS, &[], "warn");
    assert!(quiet.metrics.is_none());
    relay.stop();
}

/// A real Prometheus server (Debian's `prometheus`) scrapes the relay on
/// loopback until it reports the target up and a sotto metric stored.
/// Takes a few seconds (Prometheus's start and its first scrapes).
#[tokio::test]
async fn a_real_prometheus_scrapes_the_relay() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is missing in CI (.ci/run installs the prometheus package)"
        );
        eprintln!("SKIPPED real scrape: prometheus not installed (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        NO_TOKENS,
        &["--metrics-listen", "127.0.0.1:0"],
        "warn",
    );
    let metrics = relay.metrics.unwrap();
    some_traffic(&relay.addr).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sotto-relay\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(prom_dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut up, mut stored) = (false, false);
    while !(up && stored) {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report the relay (up: {up}, metric stored: {stored}); its log:\n{}",
            std::fs::read_to_string(prom_dir.join("log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        if tokio::net::TcpStream::connect(api).await.is_err() {
            continue;
        }
        let (_, _, targets) = get(api, "/api/v1/targets").await;
        if let Ok(targets) = serde_json::from_str::<serde_json::Value>(&targets) {
            up = targets["data"]["activeTargets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["health"] == "up"));
        }
        let (_, _, query) = get(api, "/api/v1/query?query=sotto_puts_total").await;
        if let Ok(query) = serde_json::from_str::<serde_json::Value>(&query) {
            stored = query["data"]["result"]
                .as_array()
                .and_then(|r| r.first())
                .is_some_and(|r| r["value"][1] == "1");
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    relay.stop();
}

// ----------------------------------------------------------------- reload

/// Issue 24 item 7: SIGHUP applies a new limit to a connection that stays
/// open, names the settings that need a restart, and a broken config file
/// changes nothing.
#[tokio::test]
async fn sighup_applies_new_limits_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        &format!("[limits]\nmailbox_max_blobs = 10\n{NO_TOKENS}"),
        &[],
        "info",
    );
    let conn = RelayConnection::connect(&relay.addr, None).await.unwrap();
    let owner = Owner::new(3);
    for tag in 0..2 {
        conn.put(&owner.mailbox(), &blob(tag), 0).await.unwrap();
    }
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!("udp_buffer_bytes = 0\n[limits]\nmailbox_max_blobs = 2\n{NO_TOKENS}"),
    )
    .unwrap();
    relay.signal("HUP");
    relay.wait_for_log("config reloaded").await;
    assert!(
        relay.log().contains("udp_buffer_bytes"),
        "a setting that needs a restart is named:\n{}",
        relay.log()
    );
    assert_eq!(
        support::code_of(conn.put(&owner.mailbox(), &blob(3), 0).await),
        sotto_proto::wire::ErrorCode::QuotaExceeded,
        "the new limit holds on the connection opened before the reload"
    );
    conn.ping().await.unwrap();
    assert_eq!(conn.fetch(&owner, 0, 0).await.unwrap().blobs.len(), 2);

    // A config that does not load leaves everything as it was.
    std::fs::write(&config, "[limits]\nmailbox_max_blobs = \"many\"\n").unwrap();
    relay.signal("HUP");
    relay.wait_for_log("nothing changed").await;
    conn.ping().await.unwrap();
    assert_eq!(
        support::code_of(conn.put(&owner.mailbox(), &blob(4), 0).await),
        sotto_proto::wire::ErrorCode::QuotaExceeded
    );
    conn.close().await;
    relay.stop();
}

// ----------------------------------------------------------------- health

fn health(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(relay_bin())
        .arg("health")
        .args(args)
        .env("SOTTO_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code() == Some(0),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 24 item 3: `sotto-relay health` does a real handshake and Ping
/// (here on a relay that requires access tokens, as in production) and
/// exits 0; a wrong pin or nothing listening exit 1 with one clear line.
#[tokio::test]
async fn health_checks_a_running_relay_like_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), "", &[], "warn");
    let addr = relay.addr.addr.to_string();
    let data = dir.path().to_str().unwrap();

    let (ok, stdout, _) = health(&["--addr", &addr, "--data", data]);
    assert!(ok, "{stdout}");
    assert!(stdout.starts_with("healthy: "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
    let pin = hex::encode(relay.addr.fingerprint);
    let (ok, _, _) = health(&["--addr", &addr, "--fingerprint", &pin]);
    assert!(ok);

    let wrong = "ab".repeat(32);
    let (ok, _, stderr) = health(&["--addr", &addr, "--fingerprint", &wrong]);
    assert!(!ok);
    assert!(
        stderr.contains("does not match the fingerprint"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let (ok, _, stderr) = health(&[
        "--addr",
        &silent_addr,
        "--fingerprint",
        &pin,
        "--timeout",
        "1",
    ]);
    assert!(!ok);
    assert!(
        stderr.starts_with("unhealthy: no QUIC handshake"),
        "{stderr}"
    );

    let (ok, _, stderr) = health(&["--addr", &addr, "--fingerprint", "xyz"]);
    assert!(!ok);
    assert!(stderr.contains("64 hex digits"), "{stderr}");
    relay.stop();
}

/// A config file with an unknown key or an out-of-range value stops the
/// start with exit code 1 and one line naming the problem.
#[test]
fn a_bad_config_file_is_refused_with_exit_code_1() {
    for (config, expected) in [
        ("[limits]\nmailbox_max_blob = 5\n", "mailbox_max_blob"),
        (
            "[limits]\nmax_fetch_blobs = 0\n",
            "max_fetch_blobs must be at least 1",
        ),
        ("metrics_listen = \"not an address\"\n", "metrics_listen"),
        ("log_format = \"xml\"\n", "log_format"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, config).unwrap();
        let out = Command::new(relay_bin())
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{config}: {stderr}");
        assert!(stderr.contains(expected), "{config}: {stderr}");
        assert!(!dir.path().join("data").exists(), "nothing was created");
    }
}

/// The token and purge metrics move with real registration, issuance,
/// redemption and purge passes (in-process relay, real QUIC).
#[tokio::test]
async fn token_and_purge_metrics_count_real_events() {
    use support::{DAY, T0, TestRelay};
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = true;
        c.purge_interval_secs = 1;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics = relay.server().metrics_addr().unwrap();
    let (issuer, admin) = support::bootstrapped(&relay).await;
    let registration =
        sotto_core::mint_registrations(&admin, &support::admin_key(), 1, T0 + 7 * DAY)
            .await
            .unwrap()
            .remove(0);
    let account = sotto_core::IssuanceAccount::generate().unwrap();
    let bare = support::connect(&relay).await;
    sotto_core::register(&bare, &registration, &account)
        .await
        .unwrap();
    let tokens = sotto_core::refill(&bare, &account, &issuer, 3)
        .await
        .unwrap();
    assert_eq!(
        support::code_of(bare.put(&Owner::new(1).mailbox(), &blob(1), 0).await),
        sotto_proto::wire::ErrorCode::TokenRequired
    );
    let _admitted = support::with_token(&relay, &tokens[0]).await.unwrap();

    let (_, _, text) = get(metrics, "/metrics").await;
    assert_eq!(sample(&text, "sotto_registrations_total"), 1.0);
    assert_eq!(
        sample(&text, "sotto_tokens_issued_total"),
        tokens.len() as f64
    );
    assert_eq!(sample(&text, "sotto_tokens_redeemed_total"), 1.0);
    assert_eq!(sample(&text, "sotto_refusals_total{reason=\"auth\"}"), 1.0);
    // The purge loop runs every second here.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, text) = get(metrics, "/metrics").await;
        if sample(&text, "sotto_purge_runs_total") >= 1.0 {
            assert_eq!(sample(&text, "sotto_purge_failures_total"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no purge run counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.stop().await;
}
