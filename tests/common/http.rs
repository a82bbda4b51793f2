//! The one loopback HTTP/1.1 server of the tests, on 127.0.0.1 and a port
//! the system picks, until the test process exits. Three ways to answer:
//!
//! - `serve(dir, mode)`: the files of a folder (the test base a build
//!   downloads), whole or cut short;
//! - `Server::routes`: fixed answers per path, each one a way a real
//!   mirror behaves or misbehaves (`Behaviour`: ranges honoured or not,
//!   a body cut short, failures before success, a slow or silent body),
//!   for the fetcher's error paths;
//! - `Server::handler`: a closure answers each request (a fake Ironic API
//!   keeping state, with `respond` for its JSON answers).
//!
//! Hand-written on a std `TcpListener` rather than a server crate, so that
//! a test can misbehave byte for byte (announce a length, send less, close)
//! and count what was asked of it. Every server, whatever answers, logs the
//! requests it read, so a test asks the same questions of each: `hits`,
//! `ranges`, `total_hits`. Each connection carries one request and is
//! closed after the answer (`Connection: close`): a client never waits on
//! a kept-alive connection, and one request is one log entry.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How `serve` misbehaves, to test the client's error paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Announce the full Content-Length, send half, close.
    Truncate,
}

/// What `Server::routes` answers at one path: how a mirror behaves.
#[derive(Clone)]
pub enum Behaviour {
    /// 200 with the body, honouring `Range: bytes=N-` with a 206.
    Serve(Vec<u8>),
    /// 200 without Range support (always the whole body).
    ServeNoRange(Vec<u8>),
    /// The first request announces the full length but the connection is
    /// closed after `cut` bytes; later requests behave like `Serve`.
    TruncateFirst { body: Vec<u8>, cut: usize },
    /// Announces `Content-Length` of the full body, sends `cut` bytes, closes.
    Truncate { body: Vec<u8>, cut: usize },
    /// The first `times` requests are answered with HTTP `status` (and a
    /// `Retry-After` header when given); later ones like `Serve`.
    FailFirst {
        status: u16,
        times: usize,
        retry_after: Option<&'static str>,
        body: Vec<u8>,
    },
    /// An HTML folder listing (any request), as a mirror's autoindex.
    Listing(String),
    /// 200 with the full `Content-Length`, then `chunk` bytes every
    /// `every`: a slow mirror (no Range support).
    Dribble {
        body: Vec<u8>,
        chunk: usize,
        every: Duration,
    },
    /// 200 with the full `Content-Length`, then nothing: the connection
    /// stays open and silent (longer than any test runs).
    Stall(Vec<u8>),
}

/// One HTTP/1.1 request, as the server read it.
pub struct Request {
    pub method: String,
    pub target: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// 1 for the first request for this target, 2 for the next, ...:
    /// counted when the request is logged, so two requests at once never
    /// get the same number (what `FailFirst` and `TruncateFirst` go by).
    pub nth: usize,
}

impl Request {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a server was asked, shared by its connection threads and the test.
#[derive(Default)]
struct Log {
    /// (target, Range header if any) per request, in order.
    requests: Vec<(String, Option<String>)>,
    /// Answers whose headers have gone out before a slow body (`Dribble`,
    /// `Stall`): the moment a client starts waiting on the body.
    headers_sent: usize,
}

pub struct Server {
    pub port: u16,
    log: Arc<Mutex<Log>>,
}

impl Server {
    /// Fixed answers per request target (`/path`); any other target is
    /// a 404.
    pub fn routes(routes: Vec<(&str, Behaviour)>) -> Server {
        let routes: HashMap<String, Behaviour> = routes
            .into_iter()
            .map(|(p, b)| (p.to_string(), b))
            .collect();
        listen(move |req, out, log| match routes.get(&req.target) {
            Some(b) => behave(b, req, out, log),
            None => not_found(out),
        })
    }

    /// `answer` answers each request, on a thread of its own; the
    /// connection is closed when it returns.
    pub fn handler(answer: impl Fn(&Request, &TcpStream) + Send + Sync + 'static) -> Server {
        listen(move |req, out, _| answer(req, out))
    }

    /// `http://127.0.0.1:PORT/name`; `name` with or without its leading
    /// slash (the file server's callers name files, the route tables'
    /// callers name targets).
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, trim(name))
    }

    /// How many requests for `path` came.
    pub fn hits(&self, path: &str) -> usize {
        self.ranges(path).len()
    }

    /// The Range header of each request for `path`, in order.
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        let log = self.log.lock().unwrap();
        log.requests
            .iter()
            .filter(|(p, _)| trim(p) == trim(path))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// How many requests came, for any path.
    pub fn total_hits(&self) -> usize {
        self.log.lock().unwrap().requests.len()
    }

    /// How many slow answers (`Dribble`, `Stall`) have sent their headers.
    pub fn headers_sent(&self) -> usize {
        self.log.lock().unwrap().headers_sent
    }
}

fn trim(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Serve the files of `dir` on 127.0.0.1 (a random port) until the test
/// process exits.
pub fn serve(dir: &Path, mode: Mode) -> Server {
    let dir = dir.to_path_buf();
    listen(move |req, out, _| {
        let _ = send_file(out, &dir, &req.target, mode);
    })
}

/// The server itself: accepts on 127.0.0.1, reads one request per
/// connection, logs it, has `answer` answer it (given the log too, for
/// answers that note their progress in it), closes.
fn listen(answer: impl Fn(&Request, &TcpStream, &Mutex<Log>) + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = Arc::clone(&log);
    let answer = Arc::new(answer);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (answer, log) = (Arc::clone(&answer), Arc::clone(&shared));
            thread::spawn(move || {
                // A client that hangs up before its request is complete
                // asked nothing.
                let Ok(mut req) = read_request(&stream) else {
                    return;
                };
                req.nth = {
                    let mut log = log.lock().unwrap();
                    let range = req.header("range").map(str::to_string);
                    log.requests.push((req.target.clone(), range));
                    log.requests
                        .iter()
                        .filter(|(p, _)| *p == req.target)
                        .count()
                };
                answer(&req, &stream, &log);
                let _ = stream.shutdown(Shutdown::Both);
            });
        }
    });
    Server { port, log }
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        target,
        headers,
        body,
        nth: 0,
    })
}

/// The head of an answer with a body of `len` bytes; `extra` is more
/// header lines, each ending in CRLF.
fn head(mut out: &TcpStream, status: &str, extra: &str, len: usize) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

fn not_found(mut out: &TcpStream) {
    let _ = head(out, "404 Not Found", "", 9).and_then(|()| out.write_all(b"not found"));
}

/// A file of `dir` named by `target`, the whole of it, or (`Truncate`) the
/// full length announced and half sent. Range is ignored: a resumed
/// download gets the whole (again cut) file.
fn send_file(mut out: &TcpStream, dir: &Path, target: &str, mode: Mode) -> std::io::Result<()> {
    let name = trim(target);
    let file = dir.join(name);
    if name.contains("..") || !file.is_file() {
        not_found(out);
        return Ok(());
    }
    // Streamed from the file, not read whole: the test base is large.
    let mut f = std::fs::File::open(&file)?;
    let len = f.metadata()?.len();
    head(
        out,
        "200 OK",
        "Content-Type: application/octet-stream\r\n",
        len as usize,
    )?;
    let limit = if mode == Mode::Truncate { len / 2 } else { len };
    std::io::copy(&mut (&mut f).take(limit), &mut out)?;
    out.flush()
}

/// `body`, from the start of `Range: bytes=N-` when `honour_range` (206,
/// or 416 past the end), else whole.
fn send_body(mut out: &TcpStream, req: &Request, body: &[u8], honour_range: bool) {
    let start = req
        .header("range")
        .filter(|_| honour_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let len = body.len();
    let _ = match start {
        Some(s) if s >= len => head(
            out,
            "416 Range Not Satisfiable",
            &format!("Content-Range: bytes */{len}\r\n"),
            0,
        ),
        Some(s) => head(
            out,
            "206 Partial Content",
            &format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1),
            len - s,
        )
        .and_then(|()| out.write_all(&body[s..])),
        None => head(out, "200 OK", "", len).and_then(|()| out.write_all(body)),
    };
}

/// The full length of `body` announced, `cut` bytes sent.
fn send_cut(mut out: &TcpStream, body: &[u8], cut: usize) {
    let _ = head(out, "200 OK", "", body.len())
        .and_then(|()| out.write_all(&body[..cut]))
        .and_then(|()| out.flush());
}

/// The head of a `Dribble` or `Stall` answer, flushed and logged.
fn slow_head(mut out: &TcpStream, len: usize, log: &Mutex<Log>) {
    let _ = head(out, "200 OK", "", len).and_then(|()| out.flush());
    log.lock().unwrap().headers_sent += 1;
}

fn behave(behaviour: &Behaviour, req: &Request, mut out: &TcpStream, log: &Mutex<Log>) {
    match behaviour {
        Behaviour::Serve(body) => send_body(out, req, body, true),
        Behaviour::ServeNoRange(body) => send_body(out, req, body, false),
        Behaviour::Truncate { body, cut } => send_cut(out, body, *cut),
        Behaviour::TruncateFirst { body, cut } => {
            if req.nth == 1 {
                send_cut(out, body, *cut)
            } else {
                send_body(out, req, body, true)
            }
        }
        Behaviour::FailFirst {
            status,
            times,
            retry_after,
            body,
        } => {
            if req.nth <= *times {
                let extra = retry_after
                    .map(|r| format!("Retry-After: {r}\r\n"))
                    .unwrap_or_default();
                let _ = head(out, &format!("{status} Oops"), &extra, 4)
                    .and_then(|()| out.write_all(b"oops"));
            } else {
                send_body(out, req, body, true)
            }
        }
        Behaviour::Listing(html) => {
            let _ = head(out, "200 OK", "Content-Type: text/html\r\n", html.len())
                .and_then(|()| out.write_all(html.as_bytes()));
        }
        Behaviour::Dribble { body, chunk, every } => {
            slow_head(out, body.len(), log);
            for piece in body.chunks(*chunk) {
                if out.write_all(piece).and_then(|()| out.flush()).is_err() {
                    break;
                }
                thread::sleep(*every);
            }
        }
        Behaviour::Stall(body) => {
            slow_head(out, body.len(), log);
            thread::sleep(Duration::from_secs(600));
        }
    }
}

/// A JSON answer in the shape of Ironic's (its version headers), closing
/// the connection.
pub fn respond(mut stream: &TcpStream, status: &str, body: &serde_json::Value) {
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         X-OpenStack-Ironic-API-Minimum-Version: 1.1\r\n\
         X-OpenStack-Ironic-API-Maximum-Version: 1.96\r\n\
         X-OpenStack-Ironic-API-Version: 1.96\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}
