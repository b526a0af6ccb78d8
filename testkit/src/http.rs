//! An HTTP server on loopback (HTTP/1.1, HTTP/2 with prior knowledge, or either over TLS)
//! answering from a closure, on the caller's tokio runtime.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Which HTTP the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only, as nginx `listen ... http2` in cleartext (h2c with prior knowledge) or
    /// after ALPN `h2` over TLS.
    Http2,
    /// Either, as the client chooses (ALPN over TLS, the preface in cleartext), as nginx with
    /// `http2 on` does.
    Auto,
}

/// A response body of any kind (full, streamed, endless).
pub type Body = BoxBody<Bytes, Infallible>;

/// The response a [`serve_async`] handler promises.
pub type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// How the server answers a request, when the answer takes its time or reads the body.
pub type Handler = dyn Fn(Request<Incoming>) -> Reply + Send + Sync;

/// A response with this status and body.
pub fn response(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status code");
    r
}

/// Serves on 127.0.0.1 (a port the kernel picks) until the runtime ends, answering with
/// `handler`; `tls` wraps every connection. Returns the address.
pub async fn serve(
    tls: Option<Arc<rustls::ServerConfig>>,
    version: Version,
    handler: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> SocketAddr {
    serve_async(tls, version, move |req| {
        let r = handler(&req).map(BodyExt::boxed);
        Box::pin(async move { r })
    })
    .await
}

/// The same with a handler that owns the request and answers in its own time.
pub async fn serve_async(
    tls: Option<Arc<rustls::ServerConfig>>,
    version: Version,
    handler: impl Fn(Request<Incoming>) -> Reply + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handler: Arc<Handler> = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            connection(TokioIo::new(s), version, handler).await;
                        }
                    }
                    None => connection(TokioIo::new(stream), version, handler).await,
                }
            });
        }
    });
    addr
}

async fn connection<I>(io: I, version: Version, handler: Arc<Handler>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let reply = handler(req);
        async move { Ok::<_, Infallible>(reply.await) }
    });
    // The connection's end, failed or not, is the peer's business: a test asserts on what
    // the probe saw.
    match version {
        Version::Http1 => {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        }
        Version::Http2 => {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        }
        Version::Auto => {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        }
    }
}
