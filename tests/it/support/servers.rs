//! Real servers for tests: `redis-server` and `prometheus` from Debian's packages, started on free
//! loopback ports in temporary directories and stopped when dropped.
//!
//! If a binary is missing the test fails with a message naming the set-up command; it is never
//! skipped silently.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Find a program on PATH or fail the test with the set-up instructions.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed. The tests need real redis-server, prometheus and \
         redis_exporter servers: run `scripts/test` (the README's test command), which installs \
         them with apt-get."
    );
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a tiny race with other processes is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not become ready within {timeout:?}");
}

fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // SIGTERM first so the server shuts down cleanly, then make sure it is gone.
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A real redis-server on a free loopback port.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Start a redis-server with no persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start with extra configuration, e.g. `&["--maxmemory", "2mb", "--requirepass", "s3cret"]`.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = require_binary("redis-server");
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let port = self.port;
        let password = self.password();
        wait_until("redis-server", Duration::from_secs(10), || {
            redis_ping(port, password.as_deref())
        });
    }

    fn password(&self) -> Option<String> {
        self.extra_args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.extra_args.get(i + 1).cloned())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/` (with the password when one is configured).
    pub fn url(&self) -> String {
        match self.password() {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stop the server (its data is gone: there is no persistence).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Kill the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop and start again on the same port: a cold start with a new run_id and an empty cache.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A synchronous client for test set-up and assertions.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis-server")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).into_bytes());
        out.extend(a.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

fn redis_ping(port: u16, password: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok();
    let mut out = Vec::new();
    if let Some(p) = password {
        out.extend(resp(&["AUTH", p]));
    }
    out.extend(resp(&["PING"]));
    if stream.write_all(&out).is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(5).any(|w| w == b"+PONG") {
            return true;
        }
        if got.starts_with(b"-") {
            return false;
        }
    }
    false
}

/// A real Prometheus server scraping the given targets.
pub struct PrometheusServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrometheusServer {
    /// Start Prometheus scraping `targets` ("127.0.0.1:PORT", path /metrics) every `scrape_interval`.
    pub fn start(targets: &[String], scrape_interval: Duration) -> Self {
        Self::start_jobs(&[("app", targets)], scrape_interval)
    }

    /// Start Prometheus scraping each job's targets every `scrape_interval`; the `app` job's
    /// series carry `app="clinic-backend"`.
    pub fn start_jobs(jobs: &[(&str, &[String])], scrape_interval: Duration) -> Self {
        let interval = format!("{}ms", scrape_interval.as_millis().max(100));
        let mut config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nscrape_configs:\n"
        );
        for (job, targets) in jobs {
            let target_list = targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let labels = if *job == "app" {
                "\n        labels:\n          app: clinic-backend"
            } else {
                ""
            };
            config.push_str(&format!(
                "  - job_name: {job}\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n    \
                 static_configs:\n      - targets: [{target_list}]{labels}\n"
            ));
        }
        Self::start_with_config(&config, &[])
    }

    /// Start Prometheus with this configuration; `files` (name, content) are written next to it
    /// first, so the configuration can name them (e.g. `rule_files`) by their bare names.
    pub fn start_with_config(config: &str, files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write a Prometheus file");
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        let mut server = PrometheusServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// Start the process on the server's port, configuration and data.
    fn spawn(&mut self) {
        let binary = require_binary("prometheus");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prometheus.log"))
            .expect("log file");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        self.child = Some(child);
        let port = self.port;
        wait_until("prometheus", Duration::from_secs(30), || {
            http_get_ok(port, "/-/ready")
        });
    }

    /// Start Prometheus on history: `openmetrics` (OpenMetrics text with timestamps, ending with
    /// `# EOF`) is turned into TSDB blocks with `promtool tsdb create-blocks-from openmetrics`,
    /// and a Prometheus that scrapes nothing serves them. Keep the history within the last year
    /// (the retention set here).
    pub fn with_history(openmetrics: &str) -> Self {
        let promtool = require_binary("promtool");
        let binary = require_binary("prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("history.om");
        std::fs::write(&input, openmetrics).expect("write the OpenMetrics history");
        let data = dir.path().join("data");
        let built = Command::new(promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            // One block per week rather than one per two hours: fewer, larger blocks load and
            // query faster.
            .arg("--max-block-duration=168h")
            .arg(&input)
            .arg(&data)
            .output()
            .expect("run promtool");
        assert!(
            built.status.success(),
            "promtool tsdb create-blocks-from openmetrics failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        std::fs::remove_file(&input).ok();
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, "global:\n  scrape_interval: 1m\n")
            .expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=400d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("spawn prometheus");
        let server = PrometheusServer {
            port,
            dir,
            child: Some(child),
        };
        wait_until("prometheus", Duration::from_secs(30), || {
            http_get_ok(port, "/-/ready")
        });
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop the server (SIGTERM, then wait for it to exit).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Kill the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data (after [`PrometheusServer::kill`] or `stop`).
    pub fn restart(&mut self) {
        self.kill();
        // A killed TSDB leaves its lock; Prometheus takes it over at start-up.
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A real redis_exporter (Debian's `prometheus-redis-exporter`) reading one Redis, for
/// Prometheus to scrape.
pub struct RedisExporter {
    port: u16,
    child: Option<Child>,
}

impl RedisExporter {
    /// Export the Redis at `redis_url` on a free loopback port.
    pub fn start(redis_url: &str) -> Self {
        let binary = require_binary("prometheus-redis-exporter");
        let port = free_port();
        let child = Command::new(binary)
            .args(["-redis.addr", redis_url])
            .args(["-web.listen-address", &format!("127.0.0.1:{port}")])
            // Only Redis's metrics, not the exporter's own Go runtime.
            .arg("-redis-only-metrics")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus-redis-exporter");
        let exporter = RedisExporter {
            port,
            child: Some(child),
        };
        wait_until("redis_exporter", Duration::from_secs(10), || {
            http_get_ok(port, "/metrics")
        });
        exporter
    }

    /// `127.0.0.1:PORT`, as Prometheus's targets name it.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisExporter {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A plain HTTP/1.0 GET on loopback; true on a 2xx answer.
pub fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

/// The superuser's password of a [`PostgresServer`].
pub const POSTGRES_PASSWORD: &str = "tierguard-test-superuser";

/// The newest PostgreSQL server binary directory (`/usr/lib/postgresql/<version>/bin`) holding
/// `name`, or fail the test with the set-up instructions.
pub fn postgres_binary(name: &str) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let path = e.path().join("bin").join(name);
            path.is_file().then_some((version, path))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's `{name}` is not installed under /usr/lib/postgresql/*/bin. The tests need a \
             real PostgreSQL server: run `scripts/setup` (it installs the Debian package)."
        )
    })
}

/// A real PostgreSQL server on a free loopback port, its cluster in a temporary directory.
/// PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user
/// (the Debian package creates it) through `setpriv`. Password authentication (SCRAM) over TCP.
pub struct PostgresServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the server's user.
fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown the cluster's directory");
            assert!(
                status.success(),
                "chown to postgres failed (is the Debian package installed?)"
            );
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, POSTGRES_PASSWORD).unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile)
                .status();
        }
        let data = dir.path().join("data");
        let out = as_postgres_user(&postgres_binary("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = as_postgres_user(&postgres_binary("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=60",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let ready = postgres_binary("pg_isready");
        let port = self.port;
        wait_until("postgres", Duration::from_secs(30), || {
            Command::new(&ready)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/DB?sslmode=disable`.
    pub fn url_for(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The superuser's URL.
    pub fn url(&self) -> String {
        self.url_for("postgres", POSTGRES_PASSWORD, "postgres")
    }

    /// Run SQL as the superuser (statements separated by `;`), failing the test on an error.
    pub async fn exec(&self, sql: &str) {
        let client = self.client().await;
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e:?}\n{sql}"));
    }

    /// A superuser connection for set-up and assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test postgres");
        tokio::spawn(async move { drop(connection.await) });
        client
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stop at once (fast shutdown: open connections are ended).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
