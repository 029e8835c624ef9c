//! pBFT frames over TCP: one outbound connection per peer replica, kept open
//! and re-dialled when it breaks; inbound connections deliver frames to the
//! engine. Frames are one-way (nothing is answered on the same connection):
//! the protocol's own messages are the acknowledgements, and what a broken
//! connection lost the protocol retransmits.
//!
//! Frame: `u32 length (big-endian) | 'P' | version | postcard Wire`. The
//! node's accept loop recognises the `'P'` and hands the connection to
//! [`serve_connection`]. Connections are not authenticated: every message
//! that counts is signed, so a stranger can only send noise, which is
//! counted (undecodable or refused) and dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::engine::{MAX_FRAME_BYTES, PbftOrdering, Transport};

/// Frames queued for one peer before new ones are dropped (a peer that is
/// down must not make this node hold an unbounded backlog).
const QUEUE: usize = 16_384;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait before dialling a peer again after a failure.
const REDIAL_AFTER: Duration = Duration::from_millis(100);

/// Finds a node's address by its name (from the membership view, or a
/// fixed table).
pub type Resolver = Arc<dyn Fn(&str) -> Option<SocketAddr> + Send + Sync>;

/// The TCP [`Transport`].
pub struct TcpTransport {
    resolve: Resolver,
    peers: Mutex<HashMap<String, mpsc::Sender<Arc<Vec<u8>>>>>,
    /// Frames dropped because a peer's queue was full.
    dropped: std::sync::atomic::AtomicU64,
}

impl TcpTransport {
    /// A transport that finds peers' addresses with `resolve` and dials
    /// each on its first frame.
    pub fn new(resolve: Resolver) -> Arc<Self> {
        Arc::new(TcpTransport {
            resolve,
            peers: Mutex::new(HashMap::new()),
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: &str, frame: Arc<Vec<u8>>) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let tx = peers.entry(to.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(writer(to.to_string(), self.resolve.clone(), rx));
            tx
        });
        // Full: the peer is slow or away; the protocol sends again.
        if tx.try_send(frame).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Writes one peer's frames, dialling when needed; frames that arrive while
/// the peer cannot be reached are dropped.
async fn writer(to: String, resolve: Resolver, mut rx: mpsc::Receiver<Arc<Vec<u8>>>) {
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Some(frame) = rx.recv().await {
        if conn.as_ref().is_some_and(|w| closed(w.get_ref())) {
            conn = None;
        }
        if conn.is_none() {
            conn = dial(&to, &resolve).await;
            if conn.is_none() {
                tokio::time::sleep(REDIAL_AFTER).await;
                // What queued meanwhile is stale; drop it.
                while rx.try_recv().is_ok() {}
                continue;
            }
        }
        let Some(w) = conn.as_mut() else { continue };
        let mut ok = w.write_all(&frame).await.is_ok();
        // Write what else is queued before one flush.
        while ok && let Ok(more) = rx.try_recv() {
            ok = w.write_all(&more).await.is_ok();
        }
        if !ok || w.flush().await.is_err() {
            conn = None;
        }
    }
}

/// Whether the peer closed this connection (it restarted, say). Nothing is
/// ever sent back on it, so the only news it can bring is its end; without
/// this check the first frames after a peer's restart go into the dead
/// connection (the write succeeds locally) and are lost.
fn closed(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match s.try_read(&mut byte) {
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => true, // the end (0), or bytes a pBFT peer never sends
    }
}

async fn dial(to: &str, resolve: &Resolver) -> Option<BufWriter<TcpStream>> {
    let addr = resolve(to)?;
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = s.set_nodelay(true);
    Some(BufWriter::with_capacity(256 * 1024, s))
}

/// Reads frames from an accepted connection into the engine until it closes
/// or sends a frame that is not pBFT's.
pub async fn serve_connection(engine: PbftOrdering, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut r = tokio::io::BufReader::with_capacity(256 * 1024, stream);
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(2..=MAX_FRAME_BYTES).contains(&len) {
            return;
        }
        let mut buf = vec![0u8; len];
        if r.read_exact(&mut buf).await.is_err() || buf[0] != super::engine::MAGIC {
            return;
        }
        if !engine.deliver(buf).await {
            return;
        }
    }
}
