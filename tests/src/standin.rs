//! Local HTTP stand-ins for third-party APIs (providers' admin APIs, chat webhooks): a real
//! HTTP server on 127.0.0.1 that records every request and answers as told.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode};

/// A loopback port that refuses every connection for as long as the socket is kept: bound, so
/// no other server of the suite can be given the port, but never listening.
pub fn refusing_port() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind a loopback port");
    let address = socket.local_addr().expect("its address");
    (socket, address)
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status the stand-in answered with (0 while the answer is pending).
    pub answered: u16,
}

impl Received {
    /// Answered with a 2xx: the sender's message was accepted.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Values of a query parameter, decoded.
    pub fn query_values(&self, name: &str) -> Vec<String> {
        url_pairs(&self.query)
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the stand-in answers.
#[derive(Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Wait this long before answering (without blocking the server).
    pub delay: Option<std::time::Duration>,
    /// Answer only once this gate lets a request through (a test holds an answer back).
    pub hold: Option<Arc<tokio::sync::Semaphore>>,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: None,
            hold: None,
        }
    }
}

type Responder = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// A running stand-in. `responder` gets each request and how many came before it.
pub struct StandIn {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl StandIn {
    pub async fn start(
        responder: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> StandIn {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let responder: Arc<Responder> = Arc::new(responder);
        let log = received.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let log = log.clone();
            let responder = responder.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = to_bytes(body, 4 * 1024 * 1024).await.unwrap_or_default();
                let r = Received {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                        .collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    answered: 0,
                };
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(r.clone());
                    log.len() - 1
                };
                let reply = responder(&r, n);
                if let Some(d) = reply.delay {
                    tokio::time::sleep(d).await;
                }
                if let Some(gate) = &reply.hold {
                    let _through = gate.acquire().await;
                }
                log.lock().unwrap()[n].answered = reply.status;
                let mut response =
                    Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
                for (k, v) in reply.headers {
                    response = response.header(k, v);
                }
                response.body(Body::from(reply.body)).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stand-in server");
        });
        StandIn {
            url,
            received,
            server,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}
