//! Redis connections whose replies are capped in size.
//!
//! The redis crate buffers a reply whole, whatever its size, before handing it over: a server that
//! answers `INFO` with 300 MB makes the client hold all of it (and more while it grows). It has no
//! setting for a limit, but it runs over any stream, so tierguard opens the socket itself (TCP,
//! TLS with rustls as the crate would, or a Unix socket) and wraps it in [`ReplyLimit`]: once
//! more than the limit has been read since the last request was written, the read fails, the
//! connection closes, and the command fails with a message naming the limit. Requests on one
//! connection are few and answered in order, so "read since the last write" bounds what is
//! buffered for one reply.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisConnectionInfo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

/// The largest `INFO` or `CLUSTER NODES` reply read (a real one is a few kilobytes).
pub const MAX_INFO_REPLY_BYTES: usize = 1 << 20;
/// The largest reply of a remediation or audit command (a SCAN page of long keys, a GET).
pub const MAX_COMMAND_REPLY_BYTES: usize = 16 << 20;

/// What the read error says when a reply passes the limit.
pub fn too_large(limit: usize) -> String {
    format!("Redis sent a reply larger than {limit} bytes; the connection was closed")
}

/// A stream that fails its reads once more than `limit` bytes arrived since the last write.
pub struct ReplyLimit<S> {
    inner: S,
    limit: usize,
    read_since_write: usize,
}

impl<S> ReplyLimit<S> {
    pub fn new(inner: S, limit: usize) -> Self {
        ReplyLimit {
            inner,
            limit,
            read_since_write: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReplyLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read_since_write > self.limit {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                too_large(self.limit),
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        self.read_since_write = self.read_since_write.saturating_add(read);
        if self.read_since_write > self.limit {
            // What was just read is dropped with the connection.
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                too_large(self.limit),
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReplyLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, data))?;
        if written > 0 {
            self.read_since_write = 0;
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a bounded connection behaves.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest reply read.
    pub max_reply_bytes: usize,
    /// Connecting (TCP, TLS and the AUTH/SELECT handshake) and each reply must finish within this.
    pub timeout: Duration,
}

/// Open a multiplexed connection to the Redis of `info` over a socket whose replies are capped at
/// `limits.max_reply_bytes`. The connection does not reconnect by itself. Errors are the redis
/// crate's (they may hold the host, never the password: callers scrub them anyway).
pub async fn connect(
    info: &ConnectionInfo,
    limits: Limits,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limits.timeout))
        .set_response_timeout(Some(limits.timeout));
    let settings = info.redis_settings();
    let limit = limits.max_reply_bytes;
    let opening = async {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let tcp = tcp(host, *port).await?;
                over(settings, ReplyLimit::new(tcp, limit), config).await
            }
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            } => {
                if tls_params.is_some() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "client certificates are not supported; use a rediss:// URL",
                    )));
                }
                let tcp = tcp(host, *port).await?;
                let tls = tls(host, *insecure, tcp).await?;
                over(settings, ReplyLimit::new(tls, limit), config).await
            }
            ConnectionAddr::Unix(path) => {
                let unix = unix(path).await?;
                over(settings, ReplyLimit::new(unix, limit), config).await
            }
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "unsupported Redis address",
            ))),
        }
    };
    match tokio::time::timeout(limits.timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {:?}", limits.timeout),
        ))),
    }
}

async fn over<S>(
    settings: &RedisConnectionInfo,
    stream: S,
    config: AsyncConnectionConfig,
) -> redis::RedisResult<MultiplexedConnection>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (connection, driver) =
        MultiplexedConnection::new_with_config(settings, stream, config).await?;
    // The driver ends when the connection closes (every handle dropped, or an error).
    tokio::spawn(driver);
    Ok(connection)
}

async fn tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn unix(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path).await
}

async fn tls(
    host: &str,
    insecure: bool,
    tcp: TcpStream,
) -> redis::RedisResult<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = tls_config(insecure).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "TLS set-up failed",
            e,
        ))
    })?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "invalid TLS server name",
            e.to_string(),
        ))
    })?;
    Ok(TlsConnector::from(config).connect(name, tcp).await?)
}

/// The verified rustls configuration (the system's roots), for other TLS clients.
pub fn verified_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    tls_config(false)
}

/// The rustls configurations, built once: verified against the system's roots (as the redis crate
/// does), or, for a URL ending in `#insecure`, accepting any certificate.
fn tls_config(insecure: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    static VERIFIED: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    static INSECURE: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    crate::install_crypto_provider();
    if insecure {
        return INSECURE
            .get_or_init(|| {
                let provider = rustls::crypto::CryptoProvider::get_default()
                    .ok_or("no crypto provider installed")?
                    .clone();
                let mut config = rustls::ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                        supported: provider.signature_verification_algorithms,
                    }))
                    .with_no_client_auth();
                config.enable_sni = false;
                Ok(Arc::new(config))
            })
            .clone();
    }
    VERIFIED
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A certificate the store cannot use is skipped, as the redis crate does.
                let _ = roots.add(cert);
            }
            Ok(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        })
        .clone()
}

/// `#insecure`: any certificate is accepted (self-signed test set-ups); signatures are still
/// checked so the handshake is with the holder of the certificate's key.
#[derive(Debug)]
struct AnyCertificate {
    supported: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.supported)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.supported)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.supported.supported_schemes()
    }
}
