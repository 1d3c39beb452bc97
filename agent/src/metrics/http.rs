//! `GET /metrics` over HTTP/1.1 (hyper's server), on TCP or a Unix socket. One request per
//! connection, with the control socket's time limits: the request head within
//! `HELLO_TIMEOUT`, the whole exchange within that and `WRITE_TIMEOUT`, so a scraper that
//! sends nothing or reads slowly holds one slot for a bounded time. Scrapers have slots of
//! their own (`MAX_SCRAPERS`), apart from the control clients', and take turns at the
//! supervisor (see `Tally::scrape`), so a flood of scrapes leaves procctl served.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Tally;
use super::address::Bound;
use crate::server::{HELLO_TIMEOUT, WRITE_TIMEOUT};
use crate::supervisor::Handle;

/// Scrape connections served at once; past it a connection is closed at once.
pub const MAX_SCRAPERS: usize = 64;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until dropped.
pub async fn serve(bound: Bound, sup: Handle, tally: Arc<Tally>) {
    let open = Arc::new(AtomicUsize::new(0));
    let serve_one = |stream, open: Arc<AtomicUsize>| {
        let (sup, tally) = (sup.clone(), tally.clone());
        async move {
            if open.fetch_add(1, Ordering::Relaxed) < MAX_SCRAPERS {
                connection(stream, sup, tally).await;
            }
            open.fetch_sub(1, Ordering::Relaxed);
        }
    };
    match bound {
        Bound::Tcp(listener) => {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return log!("cannot serve the metrics address");
            };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_one(Stream::Tcp(stream), open.clone()));
                    }
                    Err(e) => backoff(e).await,
                }
            }
        }
        Bound::Unix(listener, _) => {
            let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
                return log!("cannot serve the metrics socket");
            };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_one(Stream::Unix(stream), open.clone()));
                    }
                    Err(e) => backoff(e).await,
                }
            }
        }
    }
}

/// EMFILE and friends: back off a little instead of spinning.
async fn backoff(error: std::io::Error) {
    log!("metrics: accept failed: {error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn connection(stream: Stream, sup: Handle, tally: Arc<Tally>) {
    match stream {
        Stream::Tcp(stream) => exchange(stream, sup, tally).await,
        Stream::Unix(stream) => exchange(stream, sup, tally).await,
    }
}

async fn exchange<S>(stream: S, sup: Handle, tally: Arc<Tally>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let (sup, tally) = (sup.clone(), tally.clone());
        async move { Ok::<_, Infallible>(answer(&request, &sup, &tally).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HELLO_TIMEOUT).keep_alive(false);
    let exchange = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(HELLO_TIMEOUT + WRITE_TIMEOUT, exchange).await;
}

async fn answer(request: &Request<Incoming>, sup: &Handle, tally: &Tally) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(kind) = kind.parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, kind);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, text, "not found: the metrics are at /metrics\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, text, "only GET is served\n".into());
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match tally.scrape(sup).await {
        Ok(metrics) => reply(StatusCode::OK, OPENMETRICS, metrics),
        Err(error) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("{error}\n")),
    }
}
