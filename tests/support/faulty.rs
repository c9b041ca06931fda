//! Real servers on 127.0.0.1 that misbehave in one precise way:
//!
//! - [`BlackHole`]: accepts connections and never reads or answers;
//! - [`CutShort`]: answers a response head promising more body than it
//!   sends, then closes the connection;
//! - [`Streaming`]: a hyper server whose response bodies the test feeds,
//!   chunk by chunk, and ends when it chooses.
//!
//! Each binds port 0 and keeps its listener, and stops when dropped.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::{JoinHandle, JoinSet};

async fn bind() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// A server that accepts every connection and then does nothing: it never
/// reads the request, never answers, never closes. Accepted sockets are
/// kept open until the server is dropped.
#[derive(Debug)]
pub struct BlackHole {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> io::Result<Self> {
        let (listener, addr) = bind().await?;
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            // Owned by the task: aborting it closes them all.
            let mut open: Vec<TcpStream> = Vec::new();
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        open.push(stream);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(Self {
            addr,
            accepted,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How [`CutShort`] ends a connection after its partial body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// An orderly close (FIN): the client reads the head and the partial
    /// body, then the end of the stream, short of the promised length.
    Fin,
    /// A reset (RST, linger 0) right after the partial body.
    Reset,
}

/// A server that reads each request's head, answers
/// `HTTP/1.1 200 OK` with `Content-Length: {declared}` and only `sent`
/// bytes of body, then closes the connection.
#[derive(Debug)]
pub struct CutShort {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CutShort {
    pub async fn start(declared: usize, sent: usize, close: Close) -> io::Result<Self> {
        assert!(
            sent < declared,
            "a cut-short body sends less than it promises"
        );
        let (listener, addr) = bind().await?;
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let counter = counter.clone();
                            conns.spawn(cut_short(stream, declared, sent, close, counter));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, hits, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered (cut short) so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for CutShort {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection of [`CutShort`]: one request, one broken answer.
async fn cut_short(
    mut stream: TcpStream,
    declared: usize,
    sent: usize,
    close: Close,
    hits: Arc<AtomicU64>,
) {
    let _ = stream.set_nodelay(true);
    // Read the request head (a GET: no body), so closing leaves nothing
    // unread behind (unread data would turn a FIN into a RST).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    hits.fetch_add(1, Ordering::Relaxed);
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n").into_bytes();
    answer.extend(std::iter::repeat_n(b'x', sent));
    if stream.write_all(&answer).await.is_err() {
        return;
    }
    let _ = stream.flush().await;
    if close == Close::Reset {
        let _ = stream.set_zero_linger();
    }
    drop(stream);
}

/// A response body fed by the test through a channel: each `Bytes` sent is
/// one data frame; the body ends when every sender is dropped.
pub struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// A hyper server that answers every request at once with a `200` head and
/// a chunked body the test writes: for each request it hands the test a
/// [`mpsc::Sender`] (see [`Streaming::next_request`]); each chunk sent is
/// written to the client, and dropping the sender ends the body.
pub struct Streaming {
    addr: SocketAddr,
    requests: Mutex<mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>>,
    task: JoinHandle<()>,
}

impl Streaming {
    pub async fn start() -> io::Result<Self> {
        let (listener, addr) = bind().await?;
        let (senders, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let senders = senders.clone();
                            conns.spawn(async move {
                                let service = service_fn(move |_request: hyper::Request<Incoming>| {
                                    let (tx, chunks) = mpsc::channel(16);
                                    let _ = senders.send(tx);
                                    std::future::ready(Ok::<_, Infallible>(hyper::Response::new(
                                        ChannelBody { chunks },
                                    )))
                                });
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self {
            addr,
            requests: Mutex::new(requests),
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The body sender of the next request the server receives (panics if
    /// none arrives within [`super::WAIT`]).
    pub async fn next_request(&self) -> mpsc::Sender<Bytes> {
        let mut requests = self.requests.lock().await;
        super::bounded("a request reaches the streaming server", requests.recv())
            .await
            .expect("the streaming server is running")
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.task.abort();
    }
}
