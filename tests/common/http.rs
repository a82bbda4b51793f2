//! The loopback HTTP/1.1 server of the tests, on 127.0.0.1 and a port the
//! system picks, until the test process exits: the files of a folder (the
//! test base a build downloads), whole or cut short; and the pieces a fake
//! API reads requests and answers with. Hand-written on a std
//! `TcpListener` rather than a server crate, so that a test can misbehave
//! byte for byte (announce a length, send less, close).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How the server misbehaves, to test the client's error paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Announce the full Content-Length, send half, close.
    Truncate,
}

pub struct Server {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
}

impl Server {
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// Serve the files of `dir` on 127.0.0.1 (a random port) until the test
/// process exits.
pub fn serve(dir: &Path, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let dir = dir.to_path_buf();
    let counter = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let dir = dir.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &dir, mode);
            });
        }
    });
    Server { port, requests }
}

fn handle(mut stream: TcpStream, dir: &Path, mode: Mode) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/');
    let file = dir.join(name);
    if name.contains("..") || !file.is_file() {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut f = std::fs::File::open(&file)?;
    let len = f.metadata()?.len();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )?;
    let limit = if mode == Mode::Truncate { len / 2 } else { len };
    let mut taken = (&mut f).take(limit);
    std::io::copy(&mut taken, &mut stream)?;
    stream.flush()?;
    Ok(())
}

/// One HTTP/1.1 request, as a fake server in a test reads it.
pub struct Request {
    pub method: String,
    pub target: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
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
    })
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
