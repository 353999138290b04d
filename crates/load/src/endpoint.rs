//! Where members connect: `ws://` or `wss://` URLs, their host name resolved again for every
//! connection (so DNS round robin and a moved balancer are followed, as real browsers would),
//! and the TLS client that `wss://` needs (the platform's roots, or a CA file).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::LoadError;

/// A server (or balancer) to connect to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as given, to which `?token=…` is appended.
    pub base: String,
    /// Host name or address literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `Some` for `wss://`: the name the server's certificate must carry.
    pub tls_name: Option<ServerName<'static>>,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, LoadError> {
        let bad = |why: String| LoadError::Config(format!("--url {url:?}: {why}"));
        let uri: Uri = url.parse().map_err(|e| bad(format!("not a URL ({e})")))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad("use ws://host:port/path or wss://host/path".into())),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tls_name = if tls {
            Some(
                ServerName::try_from(host.clone())
                    .map_err(|e| bad(format!("{host:?} is not a TLS server name: {e}")))?,
            )
        } else {
            None
        };
        let path = uri.path_and_query().map_or("/ws", |p| p.as_str());
        let path = if path == "/" && !url.ends_with('/') {
            "/ws"
        } else {
            path
        };
        let authority = uri.authority().map_or(String::new(), |a| a.to_string());
        let scheme = if tls { "wss" } else { "ws" };
        Ok(Self {
            base: format!("{scheme}://{authority}{path}"),
            host,
            port,
            tls_name,
        })
    }

    /// The addresses the host name stands for right now (a literal address needs no lookup).
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", self.host),
            ));
        }
        Ok(addrs)
    }
}

/// The TLS client for `wss://` URLs.
#[derive(Clone)]
pub struct Tls(pub TlsConnector);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// The TLS client for `wss://` URLs: trusts the certificates of `ca_file` (PEM, one or more), or
/// the platform's roots without one.
pub fn tls_connector(ca_file: Option<&Path>) -> Result<Tls, LoadError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let file_error = |message: String| LoadError::File {
                path: path.display().to_string(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| file_error(format!("cannot read the CA file: {e}")))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error(format!("not a PEM certificate file: {e}")))?;
            if certs.is_empty() {
                return Err(file_error("holds no PEM certificate".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| file_error(format!("a certificate is not usable: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A platform store may hold certificates rustls cannot use; skip those.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(LoadError::Config(
                    "wss:// needs trusted roots: the platform has none readable; give --ca-file"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls(TlsConnector::from(Arc::new(config))))
}

/// TCP connect to one of `addrs` (trying them in turn from `first`), from `source` if set.
pub async fn connect_tcp(
    addrs: &[SocketAddr],
    first: usize,
    source: Option<IpAddr>,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for i in 0..addrs.len() {
        let Some(&addr) = addrs.get((first + i) % addrs.len()) else {
            continue;
        };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source
            && ip.is_ipv4() == addr.is_ipv4()
        {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A member's byte stream: plain TCP, or TLS over it (boxed: it is large, and rare in runs of
/// tens of thousands of loopback sockets).
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_ws_and_wss_urls() {
        let e = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls_name.is_none()),
            ("127.0.0.1", 8080, true)
        );
        assert_eq!(e.base, "ws://127.0.0.1:8080/ws");
        let e = Endpoint::parse("wss://class.example.edu/live/ws?x=1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("class.example.edu", 443));
        assert!(e.tls_name.is_some());
        assert_eq!(e.base, "wss://class.example.edu/live/ws?x=1");
        let e = Endpoint::parse("ws://[::1]:9000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(e.base, "ws://[::1]:9000/ws");
        for bad in ["http://x/ws", "x:80", "ws://", "wss://:443/ws"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = tls_connector(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = tls_connector(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
