//! Two replicas of the server on one database behind a round-robin TCP proxy, as behind a load
//! balancer: a token issued by one replica opens a channel on the other, and a real daemon whose
//! replica is killed mid-stream reconnects through the proxy to the other one and loses and
//! doubles nothing.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use atlasbridge_protocol::cloud::Envelope;
use atlasbridge_protocol::cloud::messages::{
    Challenge, Hello, PROTOCOL_VERSION, Stream, Welcome, kind,
};
use atlasbridge_protocol::trace::checkpoint::{encode_public_key, encode_signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::{scrape, value};
use crate::support::agent::Agent;
use crate::support::daemon::TestDaemon;
use crate::support::runtime::{identity, open, token};
use crate::support::{DEADLINE, ServerOptions, TestDb, TestServer, eventually};

/// A round-robin TCP proxy on 127.0.0.1, standing in for the load balancer: each new connection
/// goes to the next backend, and to the one after it when that one refuses (as a balancer's
/// passive health check would). A backend that dies takes its client connections with it.
struct RoundRobinProxy {
    address: SocketAddr,
    stopped: Arc<AtomicBool>,
    accepter: Option<JoinHandle<()>>,
}

impl RoundRobinProxy {
    fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let stopped = Arc::new(AtomicBool::new(false));
        let next = AtomicUsize::new(0);
        let stop = Arc::clone(&stopped);
        let accepter = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let first = next.fetch_add(1, Ordering::Relaxed);
                let backend = (0..backends.len()).find_map(|i| {
                    let target = backends[(first + i) % backends.len()];
                    TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()
                });
                match backend {
                    Some(backend) => splice(client, backend),
                    None => drop(client),
                }
            }
        });
        Self {
            address,
            stopped,
            accepter: Some(accepter),
        }
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

/// Copies both ways until either side ends, then closes both, so that a client whose backend
/// died sees its connection end at once.
fn splice(client: TcpStream, backend: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        if to.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        })
    };
    match (client.try_clone(), backend.try_clone()) {
        (Ok(client_reader), Ok(backend_reader)) => {
            pipe(client_reader, backend);
            pipe(backend_reader, client);
        }
        _ => {
            let _ = client.shutdown(Shutdown::Both);
            let _ = backend.shutdown(Shutdown::Both);
        }
    }
}

/// Replicas share the database, the token secret (every test config has the same one) and the
/// server's signing key: `with` gets `from`'s key file before it starts.
fn share_signing_key(from: &TestServer, with: &TestServer) {
    std::fs::copy(
        from.dir.path().join("server.key"),
        with.dir.path().join("server.key"),
    )
    .expect("copy the signing key");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_envelope(socket: &mut Socket) -> Envelope {
    loop {
        let frame = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("an answer in time")
            .expect("the channel is open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return Envelope::parse(text.as_str()).expect("an envelope");
        }
    }
}

/// A runtime takes a token from `issuer` and opens its channel on `server` with it: the
/// handshake must end in a welcome signed by the shared server key.
async fn handshake_across(issuer: &TestServer, server: &TestServer, org: &str, api_key: &str) {
    let key = identity();
    let runtime_id = encode_public_key(&key.verifying_key());
    let token = token(issuer, org, api_key, &runtime_id).await;
    let mut socket = open(server, &token)
        .await
        .expect("the other replica accepts the token");
    let challenge = next_envelope(&mut socket).await;
    let server_key =
        atlasbridge_protocol::trace::checkpoint::decode_public_key(&issuer.public_key())
            .expect("the server key");
    challenge
        .verify(&server_key)
        .expect("signed by the key the replicas share");
    let challenge: Challenge = challenge.payload_as().expect("a challenge");
    let nonce = URL_SAFE_NO_PAD.decode(challenge.nonce).expect("a nonce");
    let hello = Hello {
        agent_version: "test".to_owned(),
        protocol: PROTOCOL_VERSION,
        edition: "enterprise".to_owned(),
        nonce_signature: encode_signature(&key.sign(&nonce)),
        trace_head: None,
        audit_head: None,
    };
    let envelope = Envelope::new(
        kind::HELLO,
        org,
        &runtime_id,
        1,
        serde_json::to_value(&hello).expect("hello"),
    )
    .signed(&key);
    socket
        .send(Message::text(envelope.to_text()))
        .await
        .expect("send the hello");
    let welcome = next_envelope(&mut socket).await;
    assert_eq!(welcome.kind, kind::WELCOME, "{:?}", welcome.payload);
    welcome.verify(&server_key).expect("a signed welcome");
    let _: Welcome = welcome.payload_as().expect("a welcome");
}

/// The runtime channels open on `server` (its metrics).
async fn channels_open(server: &TestServer) -> f64 {
    value(&scrape(server).await, "atlasbridge_runtime_channels_open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_fails_over_to_the_other_replica_and_nothing_is_lost_or_doubled() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let options = ServerOptions {
        heartbeat_s: 1,
        ..ServerOptions::default()
    };
    let first = TestServer::start(&db, options.clone());
    let mut replicas = [first, TestServer::unstarted(&db, options.clone())];
    share_signing_key(&replicas[0], &replicas[1]);
    replicas[1].launch();
    let key = replicas[0].org_with_key("org-a");

    // A token from either replica opens a channel on the other.
    handshake_across(&replicas[0], &replicas[1], "org-a", &key).await;
    handshake_across(&replicas[1], &replicas[0], "org-a", &key).await;

    // The daemon knows one endpoint, the proxy's, and the replicas' shared key.
    let proxy = RoundRobinProxy::start(replicas.iter().map(|r| r.address).collect());
    let mut front = TestServer::unstarted(&db, options);
    share_signing_key(&replicas[0], &front);
    front.address = proxy.address;
    let daemon = TestDaemon::start(&front, "org-a", &key);
    let runtime_id = daemon.runtime_id();
    let agent = Agent::start(&daemon, "s1");

    // Mid-stream: the server holds part of the trace and more is on its way.
    eventually("entries flow in through the proxy", || {
        let (db, id) = (&db, runtime_id.clone());
        async move { db.entries("org-a", &id, Stream::Trace).await.len() >= 20 }
    })
    .await;
    eventually("the daemon's channel is open on one replica", || {
        let replicas = &replicas;
        async move { channels_open(&replicas[0]).await + channels_open(&replicas[1]).await == 1.0 }
    })
    .await;
    let on = if channels_open(&replicas[0]).await == 1.0 {
        0
    } else {
        1
    };
    let other = 1 - on;
    let connections_before = daemon.cloud_status()["connections"].as_u64().unwrap_or(0);
    replicas[on].kill();

    // The daemon reconnects through the proxy, which now reaches only the other replica.
    agent.decides(30).await;
    eventually(
        "the daemon is connected again, to the other replica",
        || {
            let (daemon, replicas) = (&daemon, &replicas);
            async move {
                let status = daemon.cloud_status();
                status["state"] == "connected"
                    && status["connections"].as_u64().unwrap_or(0) > connections_before
                    && channels_open(&replicas[other]).await == 1.0
            }
        },
    )
    .await;
    agent.decides(30).await;
    assert!(agent.stop() > 60);

    // Everything the daemon wrote is held exactly once: the same seqs and hashes, no doubles.
    let local = daemon.local_chain(Stream::Trace);
    db.wait_for_exactly("org-a", &runtime_id, &local).await;
    // Moving between replicas is not a rewind or a fork to the witness.
    let record = db
        .runtime("org-a", &runtime_id, 1)
        .await
        .expect("registered");
    assert_eq!(
        record.witness_status,
        "ok",
        "{:?}",
        db.flags("org-a", &runtime_id).await
    );
    let last_error = daemon.cloud_status()["last_error"].clone();
    assert!(
        !last_error.to_string().contains("HEAD_REFUSED"),
        "{last_error}"
    );
    drop(proxy);
}
