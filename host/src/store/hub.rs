//! A Hugging Face Hub client: file metadata, folder listings and resumable, verified
//! downloads, over the Hub's protocol as it really is.
//!
//! * `HEAD {endpoint}/{repo}/resolve/{revision}/{path}` (redirects not followed) answers
//!   a redirect to the CDN for large (LFS) files, with `X-Linked-Etag` (the file's
//!   SHA-256, quoted), `X-Linked-Size` and `X-Repo-Commit`; small files answer `200`
//!   with an `ETag` that is their git blob SHA-1.
//! * `GET {endpoint}/api/models/{repo}/tree/{revision}/{folder}` lists a folder.
//! * The download `GET`s the CDN URL with `Range: bytes=N-` when a `.partial` file
//!   already holds N bytes, and hashes while it writes.
//!
//! Transient failures (connection refused or cut, timeouts, 5xx, 429) are retried with
//! exponential backoff; each retry resumes where the last one stopped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};
use ureq::http::{HeaderMap, Response};
use ureq::Agent;

use super::digest::{feed, hex};
use super::PullProgress;

/// Environment variable with the Hub endpoint.
pub const ENDPOINT_ENV: &str = "HF_ENDPOINT";
/// The Hub endpoint used when [`ENDPOINT_ENV`] is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Environment variable with an access token for gated or private repositories.
pub const TOKEN_ENV: &str = "HF_TOKEN";

/// Why a Hub request failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The Hub has no such repository, revision or file.
    #[error("not found on the Hub: {what} ({url} answered 404{})", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    NotFound {
        /// What was asked for.
        what: String,
        /// The URL.
        url: String,
        /// The Hub's `X-Error-Code`, e.g. `EntryNotFound`.
        code: Option<String>,
    },
    /// The Hub refused access.
    #[error("the Hub refused access to {url} (HTTP {status}): the repository may be gated or private; accept its terms on the Hub and set {TOKEN_ENV}")]
    Unauthorized {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// An unexpected HTTP status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The network failed on every attempt.
    #[error("cannot reach {url} after {attempts} attempt(s): {message}; check the network connection (or {ENDPOINT_ENV})")]
    Network {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// The Hub's answer is not what the protocol promises.
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The server sent more bytes than the file can have: more than its advertised size,
    /// or, when no size was advertised, more than the cap the store set (the free disk
    /// space). The download was stopped before writing past the limit.
    #[error("{url} sent more than {limit} bytes ({}), {}; the download was stopped", crate::store::human_bytes(*limit), if *advertised { "its advertised size" } else { "the cap for a file of unknown size (the free disk space)" })]
    TooLarge {
        /// The URL.
        url: String,
        /// The most bytes the file may have.
        limit: u64,
        /// Whether the limit is the size the Hub advertised (else the free disk space).
        advertised: bool,
    },
    /// Whoever asked for the pull stopped it ([`PullProgress::cancelled`]); what had
    /// arrived is kept, and the next pull of the same file resumes from there.
    #[error("the download of {url} was cancelled at byte {at}; pull again to resume")]
    Cancelled {
        /// The URL.
        url: String,
        /// Bytes written so far.
        at: u64,
    },
    /// The partial download could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What the Hub says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The repository, `OWNER/NAME`.
    pub repo: String,
    /// The revision asked for.
    pub revision: String,
    /// The path in the repository.
    pub path: String,
    /// Where the bytes are (the CDN for large files).
    pub download_url: String,
    /// Size in bytes, when reported.
    pub size: Option<u64>,
    /// SHA-256, for large (LFS) files.
    pub sha256: Option<String>,
    /// Git blob SHA-1, for small files.
    pub git_sha1: Option<String>,
    /// The raw ETag (identifies the content, for resuming).
    pub etag: Option<String>,
    /// The commit the revision resolved to.
    pub commit: Option<String>,
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    /// Path in the repository.
    pub(crate) path: String,
    /// Whether it is a file (not a folder).
    pub(crate) is_file: bool,
}

/// Digests of a finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Downloaded {
    /// SHA-256.
    pub(crate) sha256: String,
    /// Git blob SHA-1.
    pub(crate) git_sha1: String,
    /// Bytes.
    pub(crate) size: u64,
}

/// The Hub client.
#[derive(Debug, Clone)]
pub struct HubClient {
    endpoint: String,
    token: Option<String>,
    /// Does not follow redirects (for `resolve`).
    meta_agent: Agent,
    /// Follows redirects (downloads, listings).
    agent: Agent,
    retries: u32,
    backoff: Duration,
}

/// How one attempt failed.
enum Failure {
    /// Worth retrying.
    Transient(String),
    /// Not worth retrying.
    Fatal(HubError),
}

impl From<HubError> for Failure {
    fn from(e: HubError) -> Self {
        Failure::Fatal(e)
    }
}

impl HubClient {
    /// A client for `endpoint` (e.g. `https://huggingface.co`), retrying 4 times from a
    /// 500 ms backoff, without a token.
    pub fn new(endpoint: &str) -> HubClient {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        // Never send loopback traffic (tests, local mirrors) through a proxy.
        let loopback = ["://127.0.0.1", "://localhost", "://[::1]"]
            .iter()
            .any(|h| endpoint.contains(h));
        let agent = |redirects: u32| -> Agent {
            let mut config = Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .timeout_connect(Some(Duration::from_secs(20)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .timeout_per_read(Some(Duration::from_secs(60)))
                .user_agent(concat!("runanywhere/", env!("CARGO_PKG_VERSION")));
            if loopback {
                config = config.proxy(None);
            }
            config.build().new_agent()
        };
        HubClient {
            endpoint,
            token: None,
            meta_agent: agent(0),
            agent: agent(5),
            retries: 4,
            backoff: Duration::from_millis(500),
        }
    }

    /// A client for [`ENDPOINT_ENV`] (default [`DEFAULT_ENDPOINT`]) with the token in
    /// [`TOKEN_ENV`], if any.
    pub fn from_env() -> HubClient {
        let endpoint = std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubClient::new(&endpoint)
            .with_token(std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()))
    }

    /// Sets the access token.
    pub fn with_token(mut self, token: Option<String>) -> HubClient {
        self.token = token;
        self
    }

    /// Sets how often a transient failure is retried, and the first backoff (doubled on
    /// each retry, at most 30 s).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> HubClient {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The resolve URL of a file.
    fn resolve_url(&self, repo: &str, revision: &str, path: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            encode(revision, false),
            encode(path, true)
        )
    }

    /// Lists the entries of `folder` ("" for the root) at `revision`.
    pub(crate) fn list_folder(
        &self,
        repo: &str,
        revision: &str,
        folder: &str,
        progress: &mut dyn PullProgress,
    ) -> Result<Vec<TreeEntry>, HubError> {
        let url = format!(
            "{}/api/models/{repo}/tree/{}/{}",
            self.endpoint,
            encode(revision, false),
            encode(folder, true)
        );
        let what = format!("folder '{folder}' of {repo} at {revision}");
        self.retrying(&url, progress, |_| {
            let response = self.send(self.agent.get(&url), &url, true)?;
            check_status(&response, &url, &what)?;
            let mut body = response.into_body();
            let text = body
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| Failure::Transient(e.to_string()))?;
            parse_tree(&text).map_err(|message| {
                Failure::Fatal(HubError::Protocol {
                    url: url.clone(),
                    message,
                })
            })
        })
    }

    /// Asks the Hub where a file is, how large it is and what its checksum is.
    pub fn resolve(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        progress: &mut dyn PullProgress,
    ) -> Result<RemoteFile, HubError> {
        let url = self.resolve_url(repo, revision, path);
        let what = format!("file '{path}' in {repo} at revision {revision}");
        self.retrying(&url, progress, |_| {
            // A renamed repository answers a relative redirect to its new resolve URL
            // first; the CDN redirect (with the file's metadata) comes after it.
            let mut at = url.clone();
            let mut hops = 0;
            let response = loop {
                let response = self.send(self.meta_agent.head(&at), &at, true)?;
                let relative = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .filter(|l| l.starts_with('/'))
                    .map(|l| absolute(&self.endpoint, l));
                let metadata = response.headers().contains_key("x-linked-etag");
                match relative {
                    Some(next) if response.status().is_redirection() && !metadata && hops < 5 => {
                        at = next;
                        hops += 1;
                    }
                    _ => break response,
                }
            };
            let status = response.status().as_u16();
            let headers = response.headers();
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            let download_url = if (300..400).contains(&status) {
                let location = header("location").ok_or_else(|| {
                    Failure::Fatal(HubError::Protocol {
                        url: at.clone(),
                        message: format!("a {status} redirect without a Location header"),
                    })
                })?;
                absolute(&self.endpoint, &location)
            } else {
                check_status(&response, &at, &what)?;
                at.clone()
            };
            let etag = header("x-linked-etag").or_else(|| header("etag"));
            let digest = etag.as_deref().map(unquote);
            let is_hex =
                |d: &str, n: usize| d.len() == n && d.bytes().all(|b| b.is_ascii_hexdigit());
            let size = header("x-linked-size")
                .or_else(|| {
                    if status == 200 {
                        header("content-length")
                    } else {
                        None
                    }
                })
                .and_then(|s| s.parse().ok());
            Ok(RemoteFile {
                repo: repo.to_string(),
                revision: revision.to_string(),
                path: path.to_string(),
                download_url,
                size,
                sha256: digest
                    .filter(|d| is_hex(d, 64))
                    .map(str::to_ascii_lowercase),
                git_sha1: digest
                    .filter(|d| is_hex(d, 40))
                    .map(str::to_ascii_lowercase),
                commit: header("x-repo-commit"),
                etag,
            })
        })
    }

    /// Downloads `remote` into `partial`, continuing after the bytes it already holds,
    /// and returns the digests of the whole file. A server that ignores `Range` makes
    /// the download start over.
    ///
    /// Never writes more than the file's advertised size, or `unsized_cap` bytes when
    /// the Hub advertised none: a server that streams an endless body gets
    /// [`HubError::TooLarge`] as soon as it passes the limit, not a full disk.
    pub(crate) fn download(
        &self,
        remote: &RemoteFile,
        partial: &Path,
        unsized_cap: u64,
        progress: &mut dyn PullProgress,
    ) -> Result<Downloaded, HubError> {
        let (limit, advertised) = match remote.size {
            Some(size) => (size, true),
            None => (unsized_cap, false),
        };
        let io = |action: &'static str| {
            move |source| HubError::Io {
                action,
                path: partial.to_path_buf(),
                source,
            }
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(io("cannot open"))?;
        // Hash what an earlier run left.
        let mut state = HashState::new(remote.size);
        let have = feed(&mut file, |b| state.update(b)).map_err(io("cannot read"))?;
        if remote.size.is_some_and(|size| have > size) {
            state = restart(&mut file, remote.size).map_err(io("cannot truncate"))?;
        }
        let name = remote
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&remote.path)
            .to_string();
        progress.start(&name, remote.size, state.len);
        if state.len > 0 {
            progress.note(&format!("{name}: resuming at byte {}", state.len));
        }
        let url = remote.download_url.clone();
        let same_host = within_endpoint(&self.endpoint, &url);
        self.retrying(&url, progress, |progress| {
            if remote.size == Some(state.len) {
                return Ok(());
            }
            let mut request = self.agent.get(&url);
            if state.len > 0 {
                request = request.header("Range", format!("bytes={}-", state.len));
            }
            let response = self.send(request, &url, same_host)?;
            let status = response.status().as_u16();
            match status {
                206 => {
                    let start = content_range_start(response.headers());
                    if start != Some(state.len) {
                        state = restart(&mut file, remote.size)
                            .map_err(|e| Failure::Fatal(io("cannot truncate")(e)))?;
                        progress.start(&name, remote.size, 0);
                        return Err(Failure::Transient(format!(
                            "the server resumed at byte {start:?}, not where the partial file ends"
                        )));
                    }
                }
                200 => {
                    if state.len > 0 {
                        progress.note(&format!(
                            "{name}: the server does not resume downloads; starting over"
                        ));
                        state = restart(&mut file, remote.size)
                            .map_err(|e| Failure::Fatal(io("cannot truncate")(e)))?;
                        progress.start(&name, remote.size, 0);
                    }
                }
                416 => {
                    state = restart(&mut file, remote.size)
                        .map_err(|e| Failure::Fatal(io("cannot truncate")(e)))?;
                    progress.start(&name, remote.size, 0);
                    return Err(Failure::Transient(
                        "the server refused the resume range".into(),
                    ));
                }
                _ => check_status(
                    &response,
                    &url,
                    &format!("file '{}' in {}", remote.path, remote.repo),
                )
                .map(|_| ())?,
            }
            let too_large = || {
                Failure::Fatal(HubError::TooLarge {
                    url: url.clone(),
                    limit,
                    advertised,
                })
            };
            // A body announced longer than the file can be is refused before a byte of it
            // is written.
            let announced = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if announced.is_some_and(|n| state.len.saturating_add(n) > limit) {
                return Err(too_large());
            }
            file.seek(SeekFrom::End(0))
                .map_err(|e| Failure::Fatal(io("cannot seek")(e)))?;
            let mut body = response.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        return Err(Failure::Transient(format!(
                            "the connection broke at byte {} ({e})",
                            state.len
                        )))
                    }
                };
                if state.len.saturating_add(n as u64) > limit {
                    return Err(too_large());
                }
                file.write_all(&buf[..n])
                    .map_err(|e| Failure::Fatal(io("cannot write")(e)))?;
                state.update(&buf[..n]);
                progress.advance(n as u64);
                if progress.cancelled() {
                    return Err(Failure::Fatal(HubError::Cancelled {
                        url: url.clone(),
                        at: state.len,
                    }));
                }
            }
            match remote.size {
                Some(size) if state.len < size => Err(Failure::Transient(format!(
                    "the connection closed at byte {} of {size}",
                    state.len
                ))),
                _ => Ok(()),
            }
        })?;
        file.sync_all().map_err(io("cannot flush"))?;
        progress.finish();
        Ok(state.finish())
    }

    /// Sends a request, with the token when `authorize` (only ever to the endpoint).
    fn send(
        &self,
        mut request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        url: &str,
        authorize: bool,
    ) -> Result<Response<ureq::Body>, Failure> {
        if let (Some(token), true) = (
            &self.token,
            authorize && within_endpoint(&self.endpoint, url),
        ) {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request.call().map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_) => Failure::Transient(e.to_string()),
            other => Failure::Fatal(HubError::Protocol {
                url: url.to_string(),
                message: other.to_string(),
            }),
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or has failed transiently
    /// `1 + retries` times.
    fn retrying<T>(
        &self,
        url: &str,
        progress: &mut dyn PullProgress,
        mut attempt: impl FnMut(&mut dyn PullProgress) -> Result<T, Failure>,
    ) -> Result<T, HubError> {
        let mut delay = self.backoff;
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt(progress) {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(message)) if tries > self.retries => {
                    return Err(HubError::Network {
                        url: url.to_string(),
                        attempts: tries,
                        message,
                    })
                }
                Err(Failure::Transient(message)) => {
                    progress.note(&format!(
                        "{message}; retrying in {} ms (attempt {} of {})",
                        delay.as_millis(),
                        tries + 1,
                        self.retries + 1
                    ));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Running digests of a download.
struct HashState {
    sha256: Sha256,
    sha1: Sha1,
    len: u64,
}

impl HashState {
    /// Git hashes a blob as `"blob {size}\0"` followed by its bytes; without the size,
    /// the SHA-1 is not comparable (and not compared).
    fn new(size: Option<u64>) -> Self {
        let mut sha1 = Sha1::new();
        sha1.update(format!("blob {}\0", size.unwrap_or(0)).as_bytes());
        HashState {
            sha256: Sha256::new(),
            sha1,
            len: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.sha1.update(bytes);
        self.len += bytes.len() as u64;
    }

    fn finish(self) -> Downloaded {
        Downloaded {
            sha256: hex(&self.sha256.finalize()),
            git_sha1: hex(&self.sha1.finalize()),
            size: self.len,
        }
    }
}

/// Empties the partial file and starts the digests over.
fn restart(file: &mut File, size: Option<u64>) -> std::io::Result<HashState> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(HashState::new(size))
}

/// Maps a response status to a failure: 2xx passes, 404 and 401/403 are final, 5xx and
/// 429 are worth retrying.
fn check_status(response: &Response<ureq::Body>, url: &str, what: &str) -> Result<(), Failure> {
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        404 => Err(Failure::Fatal(HubError::NotFound {
            what: what.to_string(),
            url: url.to_string(),
            code: response
                .headers()
                .get("x-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        })),
        401 | 403 => Err(Failure::Fatal(HubError::Unauthorized {
            url: url.to_string(),
            status,
        })),
        429 | 500..=599 => Err(Failure::Transient(format!("{url} answered HTTP {status}"))),
        _ => Err(Failure::Fatal(HubError::Status {
            url: url.to_string(),
            status,
        })),
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get("content-range")?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

/// Whether `url` lies under `endpoint`: equal to it, or continuing it with a `/`, so
/// that `https://huggingface.co.evil.example/` is not taken for `https://huggingface.co`.
fn within_endpoint(endpoint: &str, url: &str) -> bool {
    let endpoint = endpoint.trim_end_matches('/');
    match url.strip_prefix(endpoint) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A `Location` made absolute against the endpoint (the Hub answers relative ones for
/// renamed repositories).
fn absolute(endpoint: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    // The endpoint's scheme and authority.
    let origin_end = endpoint
        .find("://")
        .and_then(|i| endpoint[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(endpoint.len());
    let origin = &endpoint[..origin_end];
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        format!("{origin}/{location}")
    }
}

/// An ETag without `W/` and quotes.
fn unquote(etag: &str) -> &str {
    etag.trim().trim_start_matches("W/").trim_matches('"')
}

/// Percent-encodes a path (keeping `/` when `keep_slash`) for a URL.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Parses the Hub's folder listing: `[{"type": "file"|"directory", "path": ...}, ...]`.
fn parse_tree(text: &str) -> Result<Vec<TreeEntry>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the folder listing is not JSON: {e}"))?;
    let items = value
        .as_array()
        .ok_or("the folder listing is not a JSON array")?;
    items
        .iter()
        .map(|item| {
            let path = item
                .get("path")
                .and_then(|p| p.as_str())
                .ok_or("a listing entry has no path")?;
            Ok(TreeEntry {
                path: path.to_string(),
                is_file: item.get("type").and_then(|t| t.as_str()) == Some("file"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_and_made_absolute() {
        let hub = HubClient::new("http://127.0.0.1:9/");
        assert_eq!(hub.endpoint(), "http://127.0.0.1:9");
        assert_eq!(
            hub.resolve_url("a/b", "refs/pr/1", "dir/my file.gguf"),
            "http://127.0.0.1:9/a/b/resolve/refs%2Fpr%2F1/dir/my%20file.gguf"
        );
        assert_eq!(absolute("https://hf.co", "/x/y"), "https://hf.co/x/y");
        assert_eq!(absolute("http://h:1/mirror", "/x"), "http://h:1/x");
        assert_eq!(absolute("https://hf.co", "https://cdn/x"), "https://cdn/x");
        assert_eq!(unquote("W/\"abc\""), "abc");
    }

    #[test]
    fn the_token_goes_only_to_the_endpoint_itself() {
        let hf = "https://huggingface.co";
        assert!(within_endpoint(hf, "https://huggingface.co"));
        assert!(within_endpoint(
            hf,
            "https://huggingface.co/a/b/resolve/main/x"
        ));
        assert!(within_endpoint(
            "https://huggingface.co/",
            "https://huggingface.co/x"
        ));
        assert!(!within_endpoint(
            hf,
            "https://huggingface.co.evil.example/x"
        ));
        assert!(!within_endpoint(hf, "https://huggingface.com/x"));
        assert!(!within_endpoint(hf, "https://huggingface.co:8443/x"));
        assert!(!within_endpoint(hf, "https://cdn-lfs.huggingface.co/x"));
        assert!(!within_endpoint(hf, "http://huggingface.co/x"));
        assert!(within_endpoint("http://h:1/mirror", "http://h:1/mirror/a"));
        assert!(!within_endpoint(
            "http://h:1/mirror",
            "http://h:1/mirror2/a"
        ));
    }

    #[test]
    fn listings_and_ranges_parse() {
        let tree = parse_tree(
            r#"[{"type":"file","path":"a.json","size":3},{"type":"directory","path":"onnx"}]"#,
        )
        .unwrap();
        assert_eq!(tree.len(), 2);
        assert!(tree[0].is_file && !tree[1].is_file);
        assert!(parse_tree("{}").is_err());
        let mut headers = HeaderMap::new();
        headers.insert("content-range", "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&headers), Some(100));
    }
}
