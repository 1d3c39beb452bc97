//! Running one probe: a TCP connect, or an HTTP GET that must be answered 2xx (hyper's
//! client, HTTP/1.1, no TLS). Each is cut at its timeout and never blocks the supervisor:
//! it runs in a task of its own and reports with the run it was for. `exec` probes go
//! through the spawner and the reaper like any child; `log` probes watch the output capture.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use procctl_proto::duration::human;
use tokio::net::TcpStream;

/// Passes when a connection to `addr` is accepted within `timeout`.
pub async fn tcp(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
        Err(_) => Err(format!("tcp {addr}: no connection within {}", human(timeout))),
    }
}

/// Passes when a GET of `url` is answered with a 2xx status within `timeout`.
pub async fn http(url: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, get(url)).await {
        Ok(result) => result.map_err(|e| format!("http {url}: {e}")),
        Err(_) => Err(format!("http {url}: no answer within {}", human(timeout))),
    }
}

async fn get(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port)).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let authority = uri.authority().map_or(host, |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "procctl-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string());
    driver.abort();
    let status = response?.status();
    if status.is_success() { Ok(()) } else { Err(format!("answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot HTTP server on loopback answering `status`; returns its port.
    fn serve_once(status: &'static str) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = write!(conn, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            }
        });
        port
    }

    #[tokio::test(flavor = "current_thread")]
    async fn http_passes_on_2xx_and_fails_otherwise() {
        let ok = serve_once("204 No Content");
        assert_eq!(http(&format!("http://127.0.0.1:{ok}/health"), Duration::from_secs(5)).await, Ok(()));
        let bad = serve_once("503 Service Unavailable");
        let error = http(&format!("http://127.0.0.1:{bad}/"), Duration::from_secs(5)).await.unwrap_err();
        assert!(error.contains("503"), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_that_never_answers_is_cut_at_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        let error = http(&format!("http://127.0.0.1:{port}/"), Duration::from_millis(200)).await.unwrap_err();
        assert!(error.contains("no answer within 200ms"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).await, Ok(()), "tcp only needs accept");
        drop(listener);
        assert!(tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).await.is_err());
    }
}
