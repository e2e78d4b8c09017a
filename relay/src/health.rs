//! `sotto-relay health`: a real client's check of a running relay — a QUIC
//! handshake against the pinned certificate, `Hello`, `Ping`, `Pong` —
//! for monitoring and container health checks.
//!
//! The relay crate does not depend on the client library, so this holds a
//! minimal client of its own: one pinned-certificate verifier (TLS 1.3, no
//! resumption, no 0-RTT, like every sotto client) and two requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sotto_proto::Message as _;
use sotto_proto::wire::{self, client_frame::Request, response::Result as Reply};
use sotto_proto::{ALPN, FrameDecoder, PROTOCOL_VERSION, encode_frame};

use crate::cert::RELAY_SERVER_NAME;

/// Why a relay is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No QUIC handshake: nothing listening, UDP blocked, or timed out.
    #[error("no QUIC handshake with {addr}: {reason}")]
    Unreachable {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The relay presented another certificate than the pinned one.
    #[error("the relay at {addr} presented a certificate that does not match the fingerprint")]
    FingerprintMismatch {
        /// Where.
        addr: SocketAddr,
    },
    /// The handshake worked but Hello/Ping did not get their answers.
    #[error("the relay at {addr} did not answer Hello and Ping: {reason}")]
    NoPong {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The check could not be set up here.
    #[error("cannot run the check: {0}")]
    Setup(String),
}

/// Accepts exactly the certificate whose SHA-256 is the pin.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    mismatch: Arc<AtomicBool>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if crate::cert::fingerprint(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            self.mismatch.store(true, Ordering::SeqCst);
            Err(rustls::Error::General(
                "relay certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not used by sotto".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Proves the relay holds the pinned certificate's private key.
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn client_config(
    fingerprint: [u8; 32],
) -> Result<(quinn::ClientConfig, Arc<AtomicBool>), HealthError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = Arc::new(AtomicBool::new(false));
    let verifier = Pinned {
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
        mismatch: mismatch.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HealthError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| HealthError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.token_store(Arc::new(quinn::NoneTokenStore));
    Ok((config, mismatch))
}

fn frame(id: u64, request: Request) -> BytesMut {
    let mut out = BytesMut::new();
    encode_frame(
        &wire::ClientFrame {
            id,
            request: Some(request),
        },
        &mut out,
    );
    out
}

/// Connects to the relay at `addr` pinned to `fingerprint`, says Hello and
/// pings; returns how long the whole check took. Everything must finish
/// within `timeout`.
pub async fn check(
    addr: SocketAddr,
    fingerprint: [u8; 32],
    timeout: Duration,
) -> Result<Duration, HealthError> {
    let started = Instant::now();
    let (config, mismatch) = client_config(fingerprint)?;
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|e| HealthError::Setup(format!("UDP socket: {e}")))?;
    endpoint.set_default_client_config(config);
    let unreachable = |reason: String| HealthError::Unreachable { addr, reason };
    let connecting = endpoint
        .connect(addr, RELAY_SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(_)) if mismatch.load(Ordering::SeqCst) => {
            return Err(HealthError::FingerprintMismatch { addr });
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} s (is the relay running and UDP open?)",
                timeout.as_secs_f32()
            )));
        }
    };
    let result = tokio::time::timeout_at(deadline, hello_and_ping(&conn))
        .await
        .unwrap_or_else(|_| Err(format!("no Pong within {} s", timeout.as_secs_f32())));
    conn.close(0u32.into(), b"health check done");
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    result.map_err(|reason| HealthError::NoPong { addr, reason })?;
    Ok(started.elapsed())
}

async fn hello_and_ping(conn: &quinn::Connection) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut out = frame(
        1,
        Request::Hello(wire::Hello {
            version: PROTOCOL_VERSION,
            access_token: Default::default(),
        }),
    );
    out.extend_from_slice(&frame(2, Request::Ping(wire::Ping {})));
    send.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(64 * 1024);
    let (mut welcomed, mut ponged) = (false, false);
    while !(welcomed && ponged) {
        let chunk = recv
            .read_chunk(64 * 1024, true)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the relay closed the stream")?;
        decoder.push(&chunk.bytes);
        while let Some(bytes) = decoder.next_frame().map_err(|e| e.to_string())? {
            let frame = wire::ServerFrame::decode(bytes).map_err(|e| e.to_string())?;
            let Some(wire::server_frame::Frame::Response(response)) = frame.frame else {
                continue;
            };
            match (response.id, response.result) {
                (1, Some(Reply::Welcome(_))) => welcomed = true,
                (2, Some(Reply::Pong(_))) => ponged = true,
                (_, Some(Reply::Error(error))) => {
                    return Err(format!("refused: {}", error.message));
                }
                (id, _) => return Err(format!("unexpected answer to request {id}")),
            }
        }
    }
    let _ = send.finish();
    Ok(())
}
