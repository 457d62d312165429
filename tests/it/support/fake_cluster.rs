//! A hostile Redis Cluster seed: a small RESP server on loopback whose `CLUSTER NODES` answer
//! lists whatever the test says (thousands of masters, masters at addresses a tier must not
//! reach). No real Redis can be made to answer that, which is the point. Also plain TCP listeners
//! that only count the connections made to them, to stand for the nodes listed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The seed: answers `CLUSTER NODES` with `listing`, `INFO` with a healthy node, and anything
/// else (AUTH, CLIENT SETINFO, SELECT) with `+OK`.
pub struct FakeSeed {
    pub addr: SocketAddr,
}

const INFO: &str = "# Server\r\nrun_id:fake0seed\r\nuptime_in_seconds:100\r\n# Memory\r\nused_memory:1000\r\nmaxmemory:100000\r\n# Stats\r\nevicted_keys:0\r\nkeyspace_hits:1\r\nkeyspace_misses:1\r\n";

impl FakeSeed {
    pub async fn start(listing: String) -> FakeSeed {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listing = Arc::new(listing);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, listing.clone()));
            }
        });
        FakeSeed { addr }
    }

    pub fn url(&self) -> String {
        format!("redis://:tenant-password@{}/0", self.addr)
    }
}

async fn serve(stream: TcpStream, listing: Arc<String>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    loop {
        let Some(command) = read_command(&mut lines).await else {
            return;
        };
        let upper: Vec<String> = command.iter().map(|a| a.to_ascii_uppercase()).collect();
        let reply = match upper
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["CLUSTER", "NODES", ..] => bulk(&listing),
            ["INFO", ..] => bulk(INFO),
            ["PING", ..] => "+PONG\r\n".to_owned(),
            _ => "+OK\r\n".to_owned(),
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn bulk(text: &str) -> String {
    format!("${}\r\n{text}\r\n", text.len())
}

/// One RESP command (an array of bulk strings), or None at the end of the stream.
async fn read_command(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<Vec<String>> {
    let mut line = String::new();
    lines.read_line(&mut line).await.ok()?;
    let count: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        lines.read_line(&mut line).await.ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut data = vec![0u8; len + 2];
        tokio::io::AsyncReadExt::read_exact(lines, &mut data)
            .await
            .ok()?;
        data.truncate(len);
        args.push(String::from_utf8_lossy(&data).into_owned());
    }
    Some(args)
}

/// A `CLUSTER NODES` line of a master at `addr` serving `slots`.
pub fn master_line(index: usize, addr: SocketAddr, slots: &str) -> String {
    format!(
        "{index:040x} {}:{}@{} master - 0 0 {index} connected {slots}\n",
        addr.ip(),
        addr.port(),
        addr.port() as u32 + 10000
    )
}

/// A listener that counts the connections made to it (and answers nothing).
pub struct Counting {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Counting {
    pub async fn start(ip: IpAddr) -> Counting {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Counting { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
