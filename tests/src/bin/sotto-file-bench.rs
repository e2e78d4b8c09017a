//! `sotto-file-bench`: file transfer figures for docs/BENCHMARKS.md
//! (issue 21). Not run by `cargo test`; run it on a quiet machine:
//!
//! ```text
//! cargo run --release -p sotto-tests --bin sotto-file-bench -- [MIB] [RSS_MIB] [ROUNDS]
//! ```
//!
//! The relay (sled, fsync on, tokens off, every limit raised for files
//! this big) runs in a child process (this binary with `--relay-child`),
//! so this process is the client alone: its memory is the client's.
//! It measures:
//!
//! 1. In each of ROUNDS rounds (default 3): raw QUIC throughput on loopback: one quinn connection writes MIB MiB
//!    (default 100) on one stream to a sink in this process, the baseline.
//! 2. In each round too: upload, then download, of a MIB MiB file through `sotto_core`'s file
//!    transfer to the relay over real QUIC: MB/s of each and their ratio
//!    to the raw figure of the same round (goal ≥ 50 %).
//! 3. First of all (before any transfer), peak RSS above idle of the
//!    sender while uploading, then of the receiver while downloading, a
//!    RSS_MIB MiB file (default 200; goal ≤ 64 MiB above idle). The file
//!    is generated as it is read and the download goes to a cache on
//!    disk, so neither side ever holds it whole. Peaks come from
//!    `VmHWM`, reset before each phase through `/proc/self/clear_refs`;
//!    idle is the RSS after one connection, before any transfer.
//!
//! Each file is deleted from the relay after its round, so the relay's
//! disk stays small.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use sotto_core::{FileCache, RelayAddr, RelayConnection, delete_file, download_file, upload_file};
use sotto_relay::testing::TestRelay;

const MIB: u64 = 1024 * 1024;

/// `len` bytes of a pattern, produced as they are read.
struct Generated {
    left: u64,
    counter: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for byte in &mut buf[..n] {
            self.counter = self
                .counter
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1);
            *byte = (self.counter >> 56) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn proc_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak() {
    // "5" resets VmHWM to the current RSS (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

async fn raw_quinn(bytes: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let (cert, _) = sotto_relay::RelayCert::load_or_create(dir.path())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())?;
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls)?,
    ));
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let sink = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")?.await?;
        let mut stream = conn.accept_uni().await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while let Some(n) = stream.read(&mut buf).await? {
            got += n as u64;
        }
        conn.close(0u32.into(), b"done");
        anyhow::Ok(got)
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.clone())?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_config);
    let conn = client.connect(addr, sotto_core::RELAY_SERVER_NAME)?.await?;
    let started = Instant::now();
    let mut stream = conn.open_uni().await?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        stream.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    stream.finish()?;
    let got = sink.await??;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(got == sent, "the sink got {got} of {sent} bytes");
    Ok(mb_per_s(sent, secs))
}

/// Runs the relay for the parent: prints `ADDR FINGERPRINT`, serves
/// until stdin closes.
async fn relay_child() -> anyhow::Result<()> {
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = false;
        c.limits.mailbox_max_bytes = 4096 * MIB;
        c.limits.mailbox_max_blobs = 100_000;
        c.limits.disk_budget_bytes = 64 * 1024 * MIB;
    })
    .await;
    println!("{} {}", relay.addr, hex::encode(relay.fingerprint));
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    relay.stop().await;
    Ok(())
}

/// Starts the relay child; returns it and where it listens.
fn spawn_relay() -> anyhow::Result<(std::process::Child, RelayAddr)> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--relay-child")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let (addr, fingerprint) = line
        .trim()
        .split_once(' ')
        .context("the relay child printed no address")?;
    let fingerprint: [u8; 32] = hex::decode(fingerprint)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad fingerprint"))?;
    Ok((
        child,
        RelayAddr {
            addr: addr.parse()?,
            fingerprint,
        },
    ))
}

/// Uploads then downloads `bytes`; returns (upload MB/s, download MB/s,
/// upload peak KiB above `idle`, download peak KiB above `idle`).
async fn transfer(addr: &RelayAddr, bytes: u64, idle: u64) -> anyhow::Result<(f64, f64, u64, u64)> {
    let conn = RelayConnection::connect(addr, None).await?;
    reset_peak();
    let mut reader = Generated {
        left: bytes,
        counter: 1,
    };
    let mut noop = |_| {};
    let started = Instant::now();
    let info = upload_file(&conn, &mut reader, bytes, 0, 0, &mut noop).await?;
    let up = mb_per_s(bytes, started.elapsed().as_secs_f64());
    let up_peak = proc_kib("VmHWM:").saturating_sub(idle);
    conn.close().await;

    let cache_dir = tempfile::tempdir()?;
    let cache = FileCache::new(cache_dir.path());
    let conn = RelayConnection::connect(addr, None).await?;
    reset_peak();
    let started = Instant::now();
    download_file(&conn, &cache, "bench", &info, &mut noop).await?;
    let down = mb_per_s(bytes, started.elapsed().as_secs_f64());
    let down_peak = proc_kib("VmHWM:").saturating_sub(idle);
    delete_file(&conn, &info).await?;
    conn.close().await;
    Ok((up, down, up_peak, down_peak))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--relay-child") {
        return relay_child().await;
    }
    let mut number = |default: u64| -> anyhow::Result<u64> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let size = number(100)? * MIB;
    let rss_size = number(200)? * MIB;
    let rounds = number(3)?;
    let (mut relay, addr) = spawn_relay()?;
    // Memory first, in a process that has moved no file yet: idle is the
    // RSS after one connection, before any transfer (the allocator keeps
    // what a transfer freed, so a later idle would hide its peak). The
    // receiver's peak is measured after the sender's in the same process,
    // so it may include pages the upload left: an upper bound.
    let warm = RelayConnection::connect(&addr, None).await?;
    warm.close().await;
    let idle = proc_kib("VmRSS:");
    let (_, _, up_peak, down_peak) = transfer(&addr, rss_size, idle).await?;
    println!(
        "peak RSS above idle ({:.1} MiB), {} MiB file: sender {:.1} MiB, receiver {:.1} MiB (client process only)",
        idle as f64 / 1024.0,
        rss_size / MIB,
        up_peak as f64 / 1024.0,
        down_peak as f64 / 1024.0
    );
    for round in 1..=rounds {
        let raw = raw_quinn(size).await?;
        let (up, down, _, _) = transfer(&addr, size, 0).await?;
        println!(
            "round {round}: raw quinn {raw:.1} MB/s; {} MiB file: upload {up:.1} MB/s ({:.0} % of raw), download {down:.1} MB/s ({:.0} % of raw)",
            size / MIB,
            up / raw * 100.0,
            down / raw * 100.0
        );
    }
    drop(relay.stdin.take());
    relay.wait()?;
    Ok(())
}
