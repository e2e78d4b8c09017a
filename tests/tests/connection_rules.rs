//! DESIGN §2 connection rules, checked on both sides with real QUIC on
//! loopback (issue 18 item 14): nothing at the transport links two
//! connections of one device. No TLS session tickets or resumption, no
//! 0-RTT, no reuse of a QUIC address-validation token.
//!
//! Each side is checked against an *eager* counterpart that would do all of
//! it if allowed: an eager client (ticket store, early data, token store)
//! against the real relay, and the real client against an eager server
//! (tickets, early data, validation tokens that it accepts back). A control
//! run of the eager client against the eager server shows that the
//! recorders see tickets, resumption and token reuse when they happen.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sotto_core::{RelayAddr, RelayConnection};
use sotto_proto::ALPN;
use sotto_relay::testing::TestRelay;
use sotto_relay::{RELAY_SERVER_NAME, RelayCert};

/// Accepts any certificate (the eager client only probes the rules).
#[derive(Debug)]
struct AnyCert(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A client ticket store that counts the tickets it is given.
#[derive(Debug)]
struct Tickets {
    inner: rustls::client::ClientSessionMemoryCache,
    received: AtomicUsize,
}

impl rustls::client::ClientSessionStore for Tickets {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.received.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// A client token store that keeps and counts address-validation tokens.
#[derive(Default)]
struct Tokens {
    inner: quinn::TokenMemoryCache,
    received: AtomicUsize,
}

impl quinn::TokenStore for Tokens {
    fn insert(&self, name: &str, token: Bytes) {
        self.received.fetch_add(1, Ordering::SeqCst);
        self.inner.insert(name, token)
    }
    fn take(&self, name: &str) -> Option<Bytes> {
        self.inner.take(name)
    }
}

/// An eager client endpoint: keeps tickets and tokens, offers early data.
fn eager_client() -> (quinn::Endpoint, Arc<Tickets>, Arc<Tokens>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let tickets = Arc::new(Tickets {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        received: AtomicUsize::new(0),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(algorithms)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = true;
    tls.resumption = rustls::client::Resumption::store(tickets.clone());
    let tokens = Arc::new(Tokens::default());
    let mut config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    config.token_store(tokens.clone());
    let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    endpoint.set_default_client_config(config);
    (endpoint, tickets, tokens)
}

/// Connects, says hello (so every post-handshake message has arrived when
/// the reply does), and closes. Returns whether 0-RTT was possible.
async fn eager_round_trip(endpoint: &quinn::Endpoint, addr: SocketAddr) -> bool {
    let connecting = endpoint.connect(addr, RELAY_SERVER_NAME).unwrap();
    let (conn, zero_rtt) = match connecting.into_0rtt() {
        Ok((conn, _accepted)) => (conn, true),
        Err(connecting) => (connecting.await.unwrap(), false),
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = sotto_proto::wire::ClientFrame {
        id: 1,
        request: Some(sotto_proto::wire::client_frame::Request::Hello(
            sotto_proto::wire::Hello {
                version: sotto_proto::PROTOCOL_VERSION,
                access_token: Bytes::new(),
            },
        )),
    };
    let mut frame = bytes::BytesMut::new();
    sotto_proto::encode_frame(&hello, &mut frame);
    send.write_all(&frame).await.unwrap();
    let mut header = [0u8; 4];
    // The eager server below answers nothing; the relay answers Welcome.
    let _ = tokio::time::timeout(Duration::from_secs(2), recv.read_exact(&mut header)).await;
    // NEW_TOKEN and tickets follow the handshake; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    zero_rtt
}

#[tokio::test]
async fn the_relay_sends_no_ticket_and_no_address_token_and_allows_no_0rtt() {
    let relay = TestRelay::start().await;
    let addr = relay.server().local_addr();
    let (endpoint, tickets, tokens) = eager_client();
    assert!(
        !eager_round_trip(&endpoint, addr).await,
        "no 0-RTT at first"
    );
    assert!(
        !eager_round_trip(&endpoint, addr).await,
        "0-RTT on a second connection"
    );
    assert_eq!(tickets.received.load(Ordering::SeqCst), 0, "TLS tickets");
    assert_eq!(tokens.received.load(Ordering::SeqCst), 0, "QUIC NEW_TOKEN");
    endpoint.wait_idle().await;
    relay.stop().await;
}

/// A server session store that counts issued sessions and lookups.
#[derive(Debug)]
struct Sessions {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    issued: AtomicUsize,
    looked_up: AtomicUsize,
}

impl rustls::server::StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.issued.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.looked_up.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.looked_up.fetch_add(1, Ordering::SeqCst);
        self.inner.take(key)
    }
    fn can_cache(&self) -> bool {
        true
    }
}

/// Accepts every address-validation token it issued.
struct AcceptTokens;

impl quinn::TokenLog for AcceptTokens {
    fn check_and_insert(
        &self,
        _: u128,
        _: SystemTime,
        _: Duration,
    ) -> Result<(), quinn::TokenReuseError> {
        Ok(())
    }
}

struct EagerServer {
    addr: SocketAddr,
    fingerprint: [u8; 32],
    sessions: Arc<Sessions>,
    /// Connections that arrived with a valid address-validation token.
    validated: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

/// A server on the relay's name and ALPN that sends TLS tickets (stateful,
/// so every resumption attempt is a lookup), allows 0-RTT and sends and
/// accepts address-validation tokens.
fn eager_server() -> (EagerServer, quinn::Endpoint) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = RelayCert::load_or_create(dir.path()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = u32::MAX;
    tls.send_tls13_tickets = 2;
    let sessions = Arc::new(Sessions {
        inner: rustls::server::ServerSessionMemoryCache::new(64),
        issued: AtomicUsize::new(0),
        looked_up: AtomicUsize::new(0),
    });
    tls.session_storage = sessions.clone();
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
    ));
    let mut validation = quinn::ValidationTokenConfig::default();
    validation.sent(2).log(Arc::new(AcceptTokens));
    server.validation_token_config(validation);
    let endpoint = quinn::Endpoint::server(server, ([127, 0, 0, 1], 0).into()).unwrap();
    let validated = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = endpoint.clone();
    let (v, a) = (validated.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Some(incoming) = listener.accept().await {
            if incoming.remote_address_validated() {
                v.fetch_add(1, Ordering::SeqCst);
            }
            let a = a.clone();
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    a.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.closed().await;
                }
            });
        }
    });
    (
        EagerServer {
            addr: endpoint.local_addr().unwrap(),
            fingerprint: cert.fingerprint(),
            sessions,
            validated,
            accepted,
            _dir: dir,
        },
        endpoint,
    )
}

#[tokio::test]
async fn the_client_resumes_nothing_sends_no_early_data_and_reuses_no_address_token() {
    let (server, endpoint) = eager_server();

    // Control: an eager client against the eager server gets tickets and
    // tokens, and resumes with both on its second connection.
    let (client, tickets, tokens) = eager_client();
    eager_round_trip(&client, server.addr).await;
    assert!(
        tickets.received.load(Ordering::SeqCst) > 0,
        "control: tickets"
    );
    assert!(
        tokens.received.load(Ordering::SeqCst) > 0,
        "control: tokens"
    );
    assert!(
        eager_round_trip(&client, server.addr).await,
        "control: 0-RTT possible"
    );
    assert!(
        server.sessions.looked_up.load(Ordering::SeqCst) > 0,
        "control: resumption"
    );
    assert_eq!(
        server.validated.load(Ordering::SeqCst),
        1,
        "control: token reuse"
    );
    client.wait_idle().await;

    // The real client: two connections, nothing carried from one to the
    // other although the server offered all of it.
    let issued = server.sessions.issued.load(Ordering::SeqCst);
    let looked_up = server.sessions.looked_up.load(Ordering::SeqCst);
    let accepted = server.accepted.load(Ordering::SeqCst);
    let relay = RelayAddr {
        addr: server.addr,
        fingerprint: server.fingerprint,
    };
    for _ in 0..2 {
        let conn = RelayConnection::connect_without_hello(&relay)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close().await;
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), accepted + 2);
    assert!(
        server.sessions.issued.load(Ordering::SeqCst) > issued,
        "the server did offer tickets to the real client"
    );
    assert_eq!(
        server.sessions.looked_up.load(Ordering::SeqCst),
        looked_up,
        "the real client offered a session to resume"
    );
    assert_eq!(
        server.validated.load(Ordering::SeqCst),
        1,
        "the real client presented an address-validation token"
    );
    endpoint.close(0u32.into(), b"done");
}
