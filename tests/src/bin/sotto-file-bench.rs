//! `sotto-file-bench`: file transfer figures for docs/BENCHMARKS.md
//! (issue 21). Not run by `cargo test`; run it on a quiet machine:
//!
//! ```text
//! cargo run --release -p sotto-tests --bin sotto-file-bench -- [MIB] [RSS_MIB]
//! ```
//!
//! 1. Raw QUIC throughput on loopback: one quinn connection writes MIB MiB
//!    (default 100) on one stream to an in-process sink, the baseline.
//! 2. Upload and download of a MIB MiB file through `sotto_core`'s file
//!    transfer to an in-process relay (sled, fsync on, tokens off) over
//!    real QUIC: MB/s of each and their ratio to the raw figure (goal ≥ 50 %).
//! 3. Peak RSS above idle while uploading, then while downloading, a
//!    RSS_MIB MiB file (default 200; goal ≤ 64 MiB above idle). The file is
//!    generated as it is read and the download is written to a temp cache,
//!    so neither side ever holds it whole. Peaks come from `VmHWM`, reset
//!    between phases through `/proc/self/clear_refs`.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use sotto_core::{FileCache, RelayAddr, RelayConnection, download_file, upload_file};
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

/// Uploads then downloads `bytes`; returns (upload MB/s, download MB/s,
/// upload peak KiB above idle, download peak KiB above idle).
async fn transfer(relay: &TestRelay, bytes: u64) -> anyhow::Result<(f64, f64, u64, u64)> {
    let addr = RelayAddr {
        addr: relay.addr,
        fingerprint: relay.fingerprint,
    };
    let conn = RelayConnection::connect(&addr, None).await?;
    let idle = proc_kib("VmRSS:");
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
    let conn = RelayConnection::connect(&addr, None).await?;
    let idle = proc_kib("VmRSS:");
    reset_peak();
    let started = Instant::now();
    download_file(&conn, &cache, "bench", &info, &mut noop).await?;
    let down = mb_per_s(bytes, started.elapsed().as_secs_f64());
    let down_peak = proc_kib("VmHWM:").saturating_sub(idle);
    conn.close().await;
    Ok((up, down, up_peak, down_peak))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let size = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100u64)
        * MIB;
    let rss_size = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200u64)
        * MIB;
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = false;
        c.limits.mailbox_max_bytes = 4096 * MIB;
        c.limits.mailbox_max_blobs = 100_000;
    })
    .await;

    let raw = raw_quinn(size).await?;
    println!("raw quinn, one stream, {} MiB: {raw:.1} MB/s", size / MIB);
    let (up, down, _, _) = transfer(&relay, size).await?;
    println!(
        "file upload {} MiB: {up:.1} MB/s ({:.0} % of raw); download: {down:.1} MB/s ({:.0} % of raw)",
        size / MIB,
        up / raw * 100.0,
        down / raw * 100.0
    );
    let (_, _, up_peak, down_peak) = transfer(&relay, rss_size).await?;
    println!(
        "peak RSS above idle, {} MiB file: upload {:.1} MiB, download {:.1} MiB (the relay runs in this process too)",
        rss_size / MIB,
        up_peak as f64 / 1024.0,
        down_peak as f64 / 1024.0
    );
    relay.stop().await;
    Ok(())
}
