//! What the HTTP emulators (Excelleris, IHA POI, RingCentral) share: an accept loop serving
//! HTTP/1.1 with hyper, over TLS (OpenSSL, optionally requiring a client certificate) or
//! plain TCP, and query-string parsing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openssl::ssl::{Ssl, SslAcceptor};
use tokio::net::TcpListener;

/// A response carrying this header is not sent: the connection is closed instead (an
/// emulated outage or a dropped connection).
pub const DROP_CONNECTION: &str = "x-emu-drop-connection";

/// The query string's pairs, decoded, in order (repeated keys kept).
pub fn query_pairs<B>(req: &Request<B>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Serves every connection of `listener` with `handler`, behind `tls` when given;
/// `on_tls_refused` is called for each failed TLS handshake.
pub fn serve<H, Fut>(
    listener: TcpListener,
    tls: Option<Arc<SslAcceptor>>,
    on_tls_refused: Arc<dyn Fn() + Send + Sync>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, refused, handler) = (tls.clone(), on_tls_refused.clone(), handler.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move {
                        let resp = handler(req).await;
                        // A handler emulating an outage marks its response: the connection
                        // is closed without an answer instead.
                        if resp.headers().contains_key(DROP_CONNECTION) {
                            return Err(std::io::Error::other("dropped by the emulator"));
                        }
                        Ok(resp)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(acceptor) => {
                        let ssl = Ssl::new(acceptor.context()).unwrap();
                        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                        if Pin::new(&mut stream).accept().await.is_err() {
                            refused();
                            return;
                        }
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
}
