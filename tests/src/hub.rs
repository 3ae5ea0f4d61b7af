//! A loopback server that behaves like the Hugging Face Hub, for the model-store tests.
//!
//! It listens on `127.0.0.1:0` in a thread, speaks plain HTTP/1.1 (one request per
//! connection), and stops when dropped or after [`LIFETIME`] at the latest.
//!
//! * `HEAD|GET /{owner}/{repo}/resolve/{rev}/{path}`: for a large (LFS) file, `302` to
//!   `/cdn/{id}` on itself with `X-Linked-Etag` (the quoted SHA-256), `X-Linked-Size` and
//!   `X-Repo-Commit`; for a small file, `200` with its git blob SHA-1 as `ETag` (and the
//!   bytes, for GET); `404` with `X-Error-Code: EntryNotFound` otherwise.
//! * `GET /api/models/{owner}/{repo}/tree/{rev}/{folder}`: the folder listing as JSON.
//! * `GET /cdn/{id}`: the bytes, honouring `Range: bytes=N-` with `206`.
//!
//! Faults: cut a CDN response after N body bytes (the next K times), lie about a
//! file's SHA-256, slow the CDN down (to make concurrent pulls overlap), and stream an
//! endless CDN body (without a `Content-Length`, or with one past the advertised size,
//! optionally advertising no size at all). Every request is logged with its `Range`
//! header.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The server stops by itself after this long.
pub const LIFETIME: Duration = Duration::from_secs(300);
/// An endless body stops after this many bytes (or when the client hangs up).
pub const ENDLESS_LIMIT: usize = 512 << 20;
/// The commit every revision resolves to.
pub const COMMIT: &str = "def3e2dd0000000000000000000000000000cafe";

/// A logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

#[derive(Debug, Clone)]
struct File {
    /// Its CDN id.
    id: usize,
    bytes: Arc<Vec<u8>>,
    lfs: bool,
    /// Whether resolve advertises the size (`X-Linked-Size`).
    advertise_size: bool,
    /// Serve an endless body from the CDN.
    endless: Option<Endless>,
    /// What X-Linked-Etag claims (the real SHA-256 unless a fault says otherwise).
    claimed_sha256: String,
}

/// How an endless CDN body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endless {
    /// No `Content-Length`; the body ends when the connection closes (never, unless the
    /// client hangs up).
    NoLength,
    /// A `Content-Length` of this many bytes, larger than the advertised size.
    Length(u64),
}

#[derive(Debug, Default)]
struct State {
    /// (repo, path) → file.
    files: BTreeMap<(String, String), File>,
    /// CDN id → (cut after this many body bytes, this many more times).
    cuts: BTreeMap<usize, (usize, u32)>,
    /// Pause after each 64 KiB chunk of a CDN body.
    chunk_delay: Duration,
    /// Old repository name → new one (answered with a relative redirect).
    renamed: BTreeMap<String, String>,
    log: Vec<Request>,
}

/// The running server.
#[derive(Debug)]
pub struct HubServer {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl HubServer {
    /// Starts a server with no files.
    pub fn start() -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || serve(listener, port, &state, &stop))
        };
        HubServer {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The endpoint to put in `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn add(&self, repo: &str, path: &str, bytes: Vec<u8>, lfs: bool) {
        let claimed_sha256 = sha256_hex(&bytes);
        let mut state = lock(&self.state);
        let id = state.files.len();
        state.files.insert(
            (repo.to_string(), path.to_string()),
            File {
                id,
                bytes: Arc::new(bytes),
                lfs,
                advertise_size: true,
                endless: None,
                claimed_sha256,
            },
        );
    }

    /// Serves a large (LFS) file: resolve redirects to the CDN.
    pub fn add_lfs_file(&self, repo: &str, path: &str, bytes: Vec<u8>) {
        self.add(repo, path, bytes, true);
    }

    /// Serves a small file: resolve answers it directly, with a git blob SHA-1 ETag.
    pub fn add_small_file(&self, repo: &str, path: &str, bytes: Vec<u8>) {
        self.add(repo, path, bytes, false);
    }

    /// Makes `X-Linked-Etag` claim the SHA-256 of `other` bytes for this file.
    pub fn claim_wrong_sha256(&self, repo: &str, path: &str, other: &[u8]) {
        if let Some(f) = lock(&self.state)
            .files
            .get_mut(&(repo.to_string(), path.to_string()))
        {
            f.claimed_sha256 = sha256_hex(other);
        }
    }

    /// Makes the CDN stream an endless body for this file (`X-Linked-Size` still claims
    /// its real size unless `advertise_size` is false).
    pub fn serve_endless(&self, repo: &str, path: &str, mode: Endless, advertise_size: bool) {
        if let Some(f) = lock(&self.state)
            .files
            .get_mut(&(repo.to_string(), path.to_string()))
        {
            f.endless = Some(mode);
            f.advertise_size = advertise_size;
        }
    }

    /// The next `times` CDN responses for this file close the connection after `after`
    /// body bytes (having promised the full length).
    pub fn cut_after(&self, repo: &str, path: &str, after: usize, times: u32) {
        let mut state = lock(&self.state);
        let id = state
            .files
            .get(&(repo.to_string(), path.to_string()))
            .expect("the file is served")
            .id;
        state.cuts.insert(id, (after, times));
    }

    /// Makes `old` a former name of `new`: resolving a file of `old` answers a relative
    /// `307` redirect to the same file of `new`, as the Hub does for renamed repositories.
    pub fn rename(&self, old: &str, new: &str) {
        lock(&self.state)
            .renamed
            .insert(old.to_string(), new.to_string());
    }

    /// Pauses after each 64 KiB of every CDN body.
    pub fn slow_down(&self, per_chunk: Duration) {
        lock(&self.state).chunk_delay = per_chunk;
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state).log.clone()
    }

    /// The CDN requests so far.
    pub fn cdn_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/cdn/"))
            .collect()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, port: u16, state: &Arc<Mutex<State>>, stop: &AtomicBool) {
    let deadline = Instant::now() + LIFETIME;
    let mut workers = Vec::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = Arc::clone(state);
                workers.push(std::thread::spawn(move || {
                    let _ = handle(stream, port, &state);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

fn handle(mut stream: TcpStream, port: u16, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    lock(state).log.push(Request {
        method: method.clone(),
        path: path.clone(),
        range: range.clone(),
    });
    let head = method == "HEAD";
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["cdn", id] => cdn(
            &mut stream,
            state,
            id.parse().unwrap_or(usize::MAX),
            range.as_deref(),
            head,
        ),
        ["api", "models", owner, repo, "tree", _rev, folder @ ..] => {
            let repo = format!("{owner}/{repo}");
            let folder = folder.join("/");
            let body = listing(state, &repo, folder.trim_end_matches('/'));
            match body {
                Some(body) => respond(
                    &mut stream,
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    body.as_bytes(),
                    head,
                ),
                None => not_found(&mut stream, "EntryNotFound", head),
            }
        }
        [owner, repo, "resolve", rev, file @ ..] => {
            let renamed = lock(state).renamed.get(&format!("{owner}/{repo}")).cloned();
            if let Some(new) = renamed {
                let location = format!("/{new}/resolve/{rev}/{}", file.join("/"));
                return respond(
                    &mut stream,
                    "307 Temporary Redirect",
                    &[("Location", location)],
                    b"",
                    head,
                );
            }
            let key = (format!("{owner}/{repo}"), file.join("/"));
            let found = lock(state).files.get(&key).cloned();
            let Some(f) = found else {
                return not_found(&mut stream, "EntryNotFound", head);
            };
            if f.lfs {
                let mut headers = vec![
                    ("Location", format!("http://127.0.0.1:{port}/cdn/{}", f.id)),
                    ("X-Linked-Etag", format!("\"{}\"", f.claimed_sha256)),
                    ("X-Repo-Commit", COMMIT.to_string()),
                    ("ETag", format!("\"{}\"", f.claimed_sha256)),
                ];
                if f.advertise_size {
                    headers.push(("X-Linked-Size", f.bytes.len().to_string()));
                }
                respond(&mut stream, "302 Found", &headers, b"", head)
            } else {
                let headers = [
                    ("ETag", format!("\"{}\"", git_sha1_hex(&f.bytes))),
                    ("X-Repo-Commit", COMMIT.to_string()),
                ];
                respond(&mut stream, "200 OK", &headers, &f.bytes, head)
            }
        }
        _ => not_found(&mut stream, "RepoNotFound", head),
    }
}

/// The entries directly inside `folder` of `repo`, as the Hub lists them.
fn listing(state: &Mutex<State>, repo: &str, folder: &str) -> Option<String> {
    let s = lock(state);
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let mut items = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for ((r, path), f) in &s.files {
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        if r != repo {
            continue;
        }
        match rest.split_once('/') {
            None => items.push(format!(
                "{{\"type\":\"file\",\"path\":\"{path}\",\"size\":{}}}",
                f.bytes.len()
            )),
            Some((dir, _)) => {
                dirs.insert(format!("{prefix}{dir}"));
            }
        }
    }
    if items.is_empty() && dirs.is_empty() {
        return None;
    }
    items.extend(
        dirs.iter()
            .map(|d| format!("{{\"type\":\"directory\",\"path\":\"{d}\"}}")),
    );
    Some(format!("[{}]", items.join(",")))
}

fn cdn(
    stream: &mut TcpStream,
    state: &Mutex<State>,
    id: usize,
    range: Option<&str>,
    head: bool,
) -> std::io::Result<()> {
    let (file, cut, delay) = {
        let mut s = lock(state);
        let file = s.files.values().find(|f| f.id == id).cloned();
        let cut = match s.cuts.get_mut(&id) {
            Some((after, times)) if *times > 0 => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        };
        (file, cut, s.chunk_delay)
    };
    let Some(file) = file else {
        return not_found(stream, "EntryNotFound", head);
    };
    if let Some(mode) = file.endless {
        return endless(stream, mode, head);
    }
    let len = file.bytes.len();
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    let (status, start, mut headers) = match start {
        Some(s) if s >= len => {
            return respond(
                stream,
                "416 Range Not Satisfiable",
                &[("Content-Range", format!("bytes */{len}"))],
                b"",
                head,
            );
        }
        Some(s) => (
            "206 Partial Content",
            s,
            vec![("Content-Range", format!("bytes {s}-{}/{len}", len - 1))],
        ),
        None => ("200 OK", 0, Vec::new()),
    };
    headers.push(("Accept-Ranges", "bytes".into()));
    let body = &file.bytes[start..];
    write_head(stream, status, &headers, body.len())?;
    if head {
        return Ok(());
    }
    let limit = cut.map_or(body.len(), |c| c.min(body.len()));
    for chunk in body[..limit].chunks(64 * 1024) {
        stream.write_all(chunk)?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
    stream.flush()?;
    if cut.is_some() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    Ok(())
}

/// Streams zeros until the client hangs up or [`ENDLESS_LIMIT`] bytes are out.
fn endless(stream: &mut TcpStream, mode: Endless, head: bool) -> std::io::Result<()> {
    let mut text = String::from("HTTP/1.1 200 OK\r\nConnection: close\r\n");
    if let Endless::Length(n) = mode {
        text.push_str(&format!("Content-Length: {n}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes())?;
    if head {
        return Ok(());
    }
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < ENDLESS_LIMIT {
        stream.write_all(&chunk)?;
        sent += chunk.len();
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

fn not_found(stream: &mut TcpStream, code: &str, head: bool) -> std::io::Result<()> {
    respond(
        stream,
        "404 Not Found",
        &[("X-Error-Code", code.to_string())],
        b"Entry not found",
        head,
    )
}

fn write_head(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    write_head(stream, status, headers, body.len())?;
    if !head {
        stream.write_all(body)?;
    }
    stream.flush()?;
    // Drain anything left of the request so closing does not reset the connection.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.read(&mut [0u8; 1024]);
    Ok(())
}
