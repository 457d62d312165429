//! Peers that answer as a hostile or broken environment would, on loopback: an HTTP server whose
//! bodies are huge (streamed as they are sent, never held by the test), slow or malformed, and a
//! Redis that speaks the protocol but answers `INFO` with hundreds of megabytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What one path answers.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    /// Sent first.
    pub head: Vec<u8>,
    /// Then `repeat` is sent `times` times, each `{n}` in it replaced by the repetition's
    /// number (distinct lines, e.g. distinct series)...
    pub repeat: Vec<u8>,
    pub times: usize,
    /// ...then this.
    pub tail: Vec<u8>,
    /// Announce the length (Content-Length) or stream it chunked without one.
    pub announce_length: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Answer {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            head: body.into(),
            repeat: Vec::new(),
            times: 0,
            tail: Vec::new(),
            announce_length: true,
            delay: Duration::ZERO,
        }
    }

    /// `head`, then `repeat` as often as it takes to reach about `bytes`, then `tail`.
    pub fn huge(
        status: u16,
        head: impl Into<Vec<u8>>,
        repeat: impl Into<Vec<u8>>,
        tail: impl Into<Vec<u8>>,
        bytes: usize,
    ) -> Answer {
        let repeat = repeat.into();
        Answer {
            status,
            content_type: "application/json",
            head: head.into(),
            times: bytes / repeat.len().max(1),
            repeat,
            tail: tail.into(),
            announce_length: false,
            delay: Duration::ZERO,
        }
    }

    pub fn text(mut self) -> Answer {
        self.content_type = "text/plain; version=0.0.4";
        self
    }

    pub fn with_length(mut self) -> Answer {
        self.announce_length = true;
        self
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.repeat.len() * self.times + self.tail.len()
    }
}

#[derive(Default)]
struct Paths {
    answers: Mutex<HashMap<String, Answer>>,
    hits: Mutex<HashMap<String, usize>>,
}

/// The hostile HTTP server; it stops when the test's runtime ends.
pub struct HostileHttp {
    addr: SocketAddr,
    paths: Arc<Paths>,
}

impl HostileHttp {
    pub async fn start() -> HostileHttp {
        let paths = Arc::new(Paths::default());
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(paths.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HostileHttp { addr, paths }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every request to `path` so.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.paths
            .answers
            .lock()
            .unwrap()
            .insert(path.to_owned(), answer);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.paths
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn answer(State(paths): State<Arc<Paths>>, uri: Uri) -> Response {
    *paths
        .hits
        .lock()
        .unwrap()
        .entry(uri.path().to_owned())
        .or_default() += 1;
    let Some(a) = paths.answers.lock().unwrap().get(uri.path()).cloned() else {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    };
    tokio::time::sleep(a.delay).await;
    let length = a.len();
    let status = StatusCode::from_u16(a.status).unwrap();
    let numbered = a.repeat.windows(3).any(|w| w == b"{n}");
    let template = String::from_utf8_lossy(&a.repeat).into_owned();
    let (head, repeat, tail, times) = (a.head, a.repeat, a.tail, a.times);
    // Chunks of about 64 KiB, made as they are sent.
    let per_chunk = (64 * 1024 / repeat.len().max(1)).max(1);
    let body_chunks = (0..times.div_ceil(per_chunk)).map(move |c| {
        let from = c * per_chunk;
        let to = (from + per_chunk).min(times);
        if numbered {
            let mut chunk = String::new();
            for n in from..to {
                chunk.push_str(&template.replace("{n}", &n.to_string()));
            }
            Bytes::from(chunk)
        } else {
            Bytes::from(repeat.repeat(to - from))
        }
    });
    let chunks = std::iter::once(Bytes::from(head))
        .chain(body_chunks)
        .chain(std::iter::once(Bytes::from(tail)))
        .map(Ok::<_, std::convert::Infallible>);
    let body = Body::from_stream(futures::stream::iter(chunks));
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, a.content_type);
    if a.announce_length {
        response = response.header(header::CONTENT_LENGTH, length);
    }
    response.body(body).unwrap()
}

/// A TCP server speaking enough RESP for a client to connect, which answers `INFO` with a bulk
/// string of `info_bytes` bytes (made as it is sent) and every other command with `+OK`.
pub struct HostileRedis {
    addr: SocketAddr,
}

impl HostileRedis {
    pub async fn start(info_bytes: usize) -> HostileRedis {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_redis(socket, info_bytes));
            }
        });
        HostileRedis { addr }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }
}

async fn serve_redis(socket: tokio::net::TcpStream, info_bytes: usize) {
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    loop {
        let Some(command) = read_command(&mut read).await else {
            return;
        };
        let name = command
            .first()
            .map(|c| c.to_ascii_uppercase())
            .unwrap_or_default();
        let ok = if name == "INFO" {
            let header = format!("${info_bytes}\r\n");
            let mut sent = write.write_all(header.as_bytes()).await.is_ok();
            // "a:b\r\n" lines, like INFO's own, 64 KiB at a time.
            let line = b"padding_field:0123456789012345678901234567890123456789\r\n";
            let chunk = line.repeat(64 * 1024 / line.len());
            let mut left = info_bytes;
            while sent && left > 0 {
                let n = left.min(chunk.len());
                sent = write.write_all(&chunk[..n]).await.is_ok();
                left -= n;
            }
            sent && write.write_all(b"\r\n").await.is_ok()
        } else {
            write.write_all(b"+OK\r\n").await.is_ok()
        };
        if !ok {
            return;
        }
    }
}

/// One command of RESP arrays of bulk strings (what clients send).
async fn read_command<R: AsyncBufReadExt + AsyncReadExt + Unpin>(
    read: &mut R,
) -> Option<Vec<String>> {
    let mut line = String::new();
    if read.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let count: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        read.read_line(&mut line).await.ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut data = vec![0u8; len + 2];
        read.read_exact(&mut data).await.ok()?;
        data.truncate(len);
        parts.push(String::from_utf8_lossy(&data).into_owned());
    }
    Some(parts)
}

/// Run `tierguard ARGS` under `/usr/bin/time` and return its exit code, output and peak RSS
/// (the kernel's high-water mark of the child, in KiB) and how long it ran.
pub struct Measured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub max_rss_kib: u64,
    pub elapsed: Duration,
}

pub async fn run_measured(args: &[&str], env: &[(&str, &str)]) -> Measured {
    let time = crate::support::servers::require_binary("time");
    let mut cmd = tokio::process::Command::new(time);
    cmd.arg("-f")
        .arg("tierguard-max-rss-kib=%M")
        .arg(env!("CARGO_BIN_EXE_tierguard"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let out = cmd
        .output()
        .await
        .expect("run tierguard under /usr/bin/time");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let max_rss_kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("tierguard-max-rss-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{stderr}"));
    Measured {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        max_rss_kib,
        elapsed,
    }
}
