//! A small HTTP gateway on loopback, standing in for what sits in front of PostgREST in a
//! real deployment: a reverse proxy serving the frontend's static files and the API under
//! one origin (nginx's `location /api/ { proxy_pass ...; proxy_set_header Host $host; }`),
//! or Supabase's API gateway, which serves PostgREST under `/rest/v1`.
//!
//! Requests whose path starts with the prefix go to the upstream with the prefix removed,
//! headers as the client sent them (`Host` included, as a proxy that passes it through);
//! every other path is a file of the static folder (`/` is `index.html`). One request per
//! connection; bodies up to 64 KiB. Loopback only, both ways.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{read_request, respond};

/// What the gateway serves.
#[derive(Clone, Debug)]
pub struct Routes {
    /// Path prefix proxied to `upstream`, e.g. `/api` or `/rest/v1`.
    pub prefix: String,
    /// PostgREST's address (loopback).
    pub upstream: Option<SocketAddr>,
    /// Folder of static files for every other path.
    pub static_dir: Option<PathBuf>,
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
}

impl Gateway {
    /// Bind `addr` (port 0 for any free port) and serve in background threads.
    pub fn start(addr: &str, routes: Routes) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let loopback = |a: &SocketAddr| a.ip().is_loopback();
        if !loopback(&addr) || routes.upstream.as_ref().is_some_and(|u| !loopback(u)) {
            return Err(std::io::Error::other(
                "the gateway serves and forwards on loopback addresses only",
            ));
        }
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = routes.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &routes);
                });
            }
        });
        Ok(Gateway { addr })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Hop-by-hop headers a proxy does not forward (RFC 9110 7.6.1), and the length it sets.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
];

fn serve(stream: TcpStream, routes: &Routes) -> std::io::Result<()> {
    let req = read_request(&stream)?;
    let under_prefix = req
        .path
        .strip_prefix(routes.prefix.as_str())
        .filter(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
    match (under_prefix, routes.upstream) {
        (Some(rest), Some(upstream)) => {
            let path = if rest.is_empty() || rest.starts_with('?') {
                format!("/{rest}")
            } else {
                rest.to_string()
            };
            let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
            up.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut head = format!("{} {path} HTTP/1.1\r\n", req.method);
            for (k, v) in &req.headers {
                if !HOP_BY_HOP.contains(&k.as_str()) {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
            }
            head.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                req.body.len()
            ));
            up.write_all(head.as_bytes())?;
            up.write_all(&req.body)?;
            // The upstream closes after its answer (Connection: close): relay it verbatim.
            let mut answer = Vec::new();
            up.take(16 << 20).read_to_end(&mut answer)?;
            let mut out = &stream;
            out.write_all(&answer)?;
            out.flush()
        }
        _ => serve_file(&stream, routes, &req.path),
    }
}

fn serve_file(stream: &TcpStream, routes: &Routes, path: &str) -> std::io::Result<()> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let name = match path.trim_start_matches('/') {
        "" => "index.html",
        n => n,
    };
    let ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    let file = routes
        .static_dir
        .as_ref()
        .filter(|_| ok)
        .and_then(|d| std::fs::read(d.join(name)).ok());
    match file {
        Some(body) => {
            let ctype = match name.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            respond(
                stream,
                200,
                &[
                    ("Content-Type", ctype.into()),
                    ("Cache-Control", "no-store".into()),
                ],
                &body,
            )
        }
        None => respond(stream, 404, &[], b"not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url_addr: SocketAddr, path: &str, extra: &str) -> String {
        let mut s = TcpStream::connect(url_addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: app.example.test:8080\r\n{extra}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn proxies_the_prefix_with_the_clients_host_and_serves_files() {
        // An upstream that echoes the request line and headers it got.
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = up.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in up.incoming().flatten() {
                let req = read_request(&s).unwrap();
                let body = format!("{} {} {:?}", req.method, req.path, req.headers);
                respond(&s, 200, &[], body.as_bytes()).unwrap();
            }
        });
        let dir = std::env::temp_dir().join(format!("gw-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<h1>app</h1>").unwrap();
        let gw = Gateway::start(
            "127.0.0.1:0",
            Routes {
                prefix: "/rest/v1".into(),
                upstream: Some(up_addr),
                static_dir: Some(dir.clone()),
            },
        )
        .unwrap();
        let r = get(gw.addr, "/rest/v1/todos?select=id", "Origin: http://x\r\n");
        assert!(r.contains("GET /todos?select=id"), "{r}");
        assert!(r.contains("(\"host\", \"app.example.test:8080\")"), "{r}");
        assert!(r.contains("(\"origin\", \"http://x\")"), "{r}");
        assert!(get(gw.addr, "/rest/v1?x", "").contains("GET /?x"));
        // Not under the prefix: a file, or 404; never a path outside the folder.
        assert!(get(gw.addr, "/", "").contains("<h1>app</h1>"));
        assert!(get(gw.addr, "/rest/v10", "").starts_with("HTTP/1.1 404"));
        assert!(get(gw.addr, "/../Cargo.toml", "").starts_with("HTTP/1.1 404"));
        assert!(get(gw.addr, "/.hidden", "").starts_with("HTTP/1.1 404"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_other_than_loopback() {
        let routes = Routes {
            prefix: "/api".into(),
            upstream: Some("10.0.0.1:3000".parse().unwrap()),
            static_dir: None,
        };
        assert!(Gateway::start("127.0.0.1:0", routes).is_err());
    }
}
