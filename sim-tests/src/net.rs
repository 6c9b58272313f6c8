//! Tonic over turmoil's simulated TCP: the node's listener and a [`Dialer`] for its peers and
//! the workload's clients.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use ledge_consensus::Dialer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// The port every simulated node listens on.
pub const PORT: u16 = 7700;

/// A turmoil TCP stream that tonic's server accepts.
pub struct SimStream(pub turmoil::net::TcpStream);

impl Connected for SimStream {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The stream of connections accepted on `listener`.
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = io::Result<SimStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| SimStream(stream));
        Some((accepted, listener))
    })
}

/// Dials simulated hosts (`host:port`) over turmoil TCP.
#[derive(Debug, Clone)]
pub struct SimDialer {
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for SimDialer {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_millis(500) }
    }
}

impl Dialer for SimDialer {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let endpoint =
            Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("bad address {addr:?}: {e}"))?;
        let connector = tower::service_fn(|uri: Uri| async move {
            let host = uri.host().ok_or_else(|| io::Error::other("address has no host"))?.to_string();
            let port = uri.port_u16().unwrap_or(PORT);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        });
        // Keepalives notice a connection whose packets were lost (turmoil's TCP, like a real
        // partition, can leave it silent), so the channel reconnects instead of hanging.
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_millis(500))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_with_connector_lazy(connector))
    }
}
