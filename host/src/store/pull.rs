//! `runanywhere pull`: a catalog model or a Hub file/folder into the store.
//!
//! 1. Under the model's lock (a second pull of the same model waits, then finds it
//!    installed), the wanted files are listed (patterns expanded through the Hub's folder
//!    listing) and resolved: size, SHA-256 and commit as the Hub reports them, checked
//!    against the catalog's pins.
//! 2. The free disk space is checked against what is left to download.
//! 3. Each file is downloaded into `downloads/<id>/<name>.partial`, resuming what an
//!    earlier run left when the Hub still serves the same content (the ETag recorded next
//!    to the partial file), and hashed while it streams. A size or checksum mismatch
//!    deletes the partial file and stops.
//! 4. The files are moved into a staging folder, verified, and installed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hub::{HubClient, HubError, RemoteFile, TreeEntry};
use super::index::{FileRecord, ModelEntry};
use super::install::Install;
use super::lock::FileLock;
use super::{disk, id_from_name, validate_id, CatalogFile, PullSpec, Store, StoreError};
use crate::registry::Registry;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The id to install under (default: the catalog id, or the file's stem / the
    /// folder's name).
    pub id: Option<String>,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// Downloaded, verified and registered.
    Pulled(ModelEntry),
    /// The same model was already installed under this id.
    AlreadyPresent(ModelEntry),
}

impl PullOutcome {
    /// The registered model.
    pub fn entry(&self) -> &ModelEntry {
        match self {
            PullOutcome::Pulled(e) | PullOutcome::AlreadyPresent(e) => e,
        }
    }
}

/// Receives download progress.
pub trait PullProgress {
    /// A file's download starts, or starts over; `done` bytes are already there.
    fn start(&mut self, file: &str, total: Option<u64>, done: u64);
    /// `bytes` more arrived.
    fn advance(&mut self, bytes: u64);
    /// The file is complete.
    fn finish(&mut self);
    /// Something worth telling (resuming, retrying, waiting for a lock).
    fn note(&mut self, message: &str);
    /// Whether to stop now (asked after every chunk): the pull then fails with
    /// [`HubError::Cancelled`](super::HubError::Cancelled), keeping the partial file
    /// for the next pull to resume. A server cancels when its client hangs up.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere (notes go to the log).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn start(&mut self, _file: &str, _total: Option<u64>, _done: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
    fn note(&mut self, message: &str) {
        tracing::info!("{message}");
    }
}

/// Files of a Hub folder that a folder-shaped model needs: weights, configs and
/// tokenizers (not READMEs, images, or other formats' weights).
fn needed(name: &str) -> bool {
    const SUFFIXES: [&str; 8] = [
        ".safetensors",
        ".onnx",
        ".onnx_data",
        ".onnx.data",
        ".data",
        ".json",
        ".model",
        ".txt",
    ];
    SUFFIXES.iter().any(|s| name.ends_with(s)) && !name.eq_ignore_ascii_case("README.txt")
}

/// `*` wildcards (any run of characters) against a whole name.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A file to pull, with what the catalog pins about it.
#[derive(Debug, Clone)]
struct Wanted {
    path: String,
    pinned: Option<(u64, String)>,
}

impl Wanted {
    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// What the Hub served when a partial download was started.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartialMeta {
    etag: Option<String>,
    size: Option<u64>,
    source: String,
}

/// Everything a spec says to pull.
struct Plan {
    repo: String,
    revision: String,
    /// (pattern, pins, whether to keep only `needed` files).
    patterns: Vec<(CatalogFile, bool)>,
    default_id: String,
    model_file: Option<String>,
    tokenizer: Option<String>,
}

fn plan(spec: &PullSpec) -> Plan {
    match spec {
        PullSpec::Catalog(e) => Plan {
            repo: e.repo.clone(),
            revision: e.revision.clone(),
            patterns: e.files.iter().map(|f| (f.clone(), false)).collect(),
            default_id: e.id.clone(),
            model_file: e.model_file.clone(),
            tokenizer: e.tokenizer.clone(),
        },
        PullSpec::Hub(r) => {
            let (pattern, filter, name) = if r.is_file() {
                let name = r.path.rsplit('/').next().unwrap_or(&r.path).to_string();
                (r.path.clone(), false, name)
            } else if r.path.is_empty() {
                let repo_name = r.repo.rsplit('/').next().unwrap_or(&r.repo).to_string();
                ("*".to_string(), true, repo_name)
            } else {
                let folder = r.path.rsplit('/').next().unwrap_or(&r.path).to_string();
                (format!("{}/*", r.path), true, folder)
            };
            Plan {
                repo: r.repo.clone(),
                revision: r.revision.clone(),
                patterns: vec![(CatalogFile::Pattern(pattern), filter)],
                default_id: id_from_name(&name),
                model_file: None,
                tokenizer: None,
            }
        }
    }
}

impl Store {
    /// Pulls `spec` into the store. `engines` says which engines read the model.
    pub fn pull(
        &self,
        spec: &PullSpec,
        hub: &HubClient,
        options: &PullOptions,
        engines: &Registry,
        progress: &mut dyn PullProgress,
    ) -> Result<PullOutcome, StoreError> {
        let plan = plan(spec);
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| plan.default_id.clone());
        validate_id(&id)?;
        let source = spec.source();
        let _lock = FileLock::acquire(&self.lock_path(&format!("model-{id}")), || {
            progress.note(&format!("waiting for another pull of `{id}` to finish"));
        })?;
        if let Some(existing) = self.get(&id)? {
            if existing.source == source && self.model_path(&existing).exists() {
                return Ok(PullOutcome::AlreadyPresent(existing));
            }
            return Err(StoreError::IdTaken {
                id,
                source_of: existing.source,
            });
        }

        let wanted = self.expand(hub, &plan, progress)?;
        let mut names = HashSet::new();
        for w in &wanted {
            if !names.insert(w.name().to_string()) {
                return Err(StoreError::DuplicateName(w.name().to_string()));
            }
        }
        let mut remotes = Vec::with_capacity(wanted.len());
        for w in &wanted {
            let remote = hub.resolve(&plan.repo, &plan.revision, &w.path, progress)?;
            check_pins(w, &remote)?;
            remotes.push(remote);
        }

        // Keep partial downloads of the same content; count what is left to fetch.
        let downloads = self.home.join("downloads").join(&id);
        std::fs::create_dir_all(&downloads)
            .map_err(|e| StoreError::io("cannot create", &downloads, e))?;
        let fetched = self.fetch(hub, &plan, &wanted, &remotes, &downloads, progress);
        let records = match fetched {
            Ok(records) => records,
            Err(e) => {
                // Whatever failed, only resumable partial files (a valid prefix of
                // content the Hub identified) are kept for the next pull, and no download
                // folder of this id is left empty.
                for (w, remote) in wanted.iter().zip(&remotes) {
                    let (partial, meta_path) = partial_paths(&downloads, w.name());
                    let keep = partial.exists() && resumable(remote);
                    if !keep {
                        for path in [&partial, &meta_path] {
                            if let Err(rm) = remove_if_present(path) {
                                tracing::warn!("{rm}");
                            }
                        }
                    }
                }
                if let Err(err) = std::fs::remove_dir(&downloads) {
                    tracing::debug!("keeping {}: {err}", downloads.display());
                }
                return Err(e);
            }
        };

        let staging = self.staging_dir(&id)?;
        for w in &wanted {
            let (partial, _) = partial_paths(&downloads, w.name());
            let target = staging.join(w.name());
            std::fs::rename(&partial, &target)
                .map_err(|e| StoreError::io("cannot move the download to", &target, e))?;
        }
        if let Err(e) = std::fs::remove_dir_all(&downloads) {
            tracing::debug!("cannot remove {}: {e}", downloads.display());
        }
        let spec = Install {
            id,
            source,
            origin: PathBuf::from(format!("hf.co/{}", plan.repo)),
            model_file: plan.model_file,
            tokenizer: plan.tokenizer,
            files: records,
            linked: false,
            revision: remotes.iter().find_map(|r| r.commit.clone()),
        };
        self.install(&staging, spec, engines)
            .map(PullOutcome::Pulled)
    }

    /// Downloads every wanted file into `downloads`, after checking the disk has room for
    /// what is left, and returns their records. A failed file's partial download is
    /// deleted unless it can be resumed: the connection broke (not the content) and the
    /// Hub gave both its size and an ETag to check the next attempt against.
    fn fetch(
        &self,
        hub: &HubClient,
        plan: &Plan,
        wanted: &[Wanted],
        remotes: &[RemoteFile],
        downloads: &Path,
        progress: &mut dyn PullProgress,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let mut left = 0u64;
        for (w, remote) in wanted.iter().zip(remotes) {
            let (partial, meta_path) = partial_paths(downloads, w.name());
            let meta = PartialMeta {
                etag: remote.etag.clone(),
                size: remote.size,
                source: format!("{}/{}@{}", plan.repo, w.path, plan.revision),
            };
            let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let kept = std::fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<PartialMeta>(&b).ok())
                .is_some_and(|old| old == meta && resumable(remote))
                && remote.size.is_some_and(|size| have <= size);
            if !kept {
                remove_if_present(&partial)?;
                let json = serde_json::to_vec(&meta).map_err(|e| {
                    StoreError::io("cannot write", &meta_path, std::io::Error::other(e))
                })?;
                std::fs::write(&meta_path, json)
                    .map_err(|e| StoreError::io("cannot write", &meta_path, e))?;
            }
            let have = if kept { have } else { 0 };
            left = left.saturating_add(remote.size.unwrap_or(0).saturating_sub(have));
        }
        disk::ensure_space(&self.home, left)?;
        // Files of unknown size may take, together, what the known ones leave free.
        let mut unsized_cap = disk::available_space(&self.home)?.saturating_sub(left);

        let mut records = Vec::with_capacity(wanted.len());
        for (w, remote) in wanted.iter().zip(remotes) {
            let (partial, meta_path) = partial_paths(downloads, w.name());
            let got = hub
                .download(remote, &partial, unsized_cap, progress)
                .map_err(StoreError::from)
                .and_then(|got| check_download(w, remote, &got).map(|()| got));
            let got = match got {
                Ok(got) => got,
                Err(e) => {
                    let keep = matches!(
                        e,
                        StoreError::Hub(HubError::Network { .. } | HubError::Cancelled { .. })
                    );
                    if !(keep && resumable(remote)) {
                        // The download's own error is the one to report.
                        for path in [&partial, &meta_path] {
                            if let Err(rm) = remove_if_present(path) {
                                tracing::warn!("{rm}");
                            }
                        }
                    }
                    return Err(e);
                }
            };
            if remote.size.is_none() {
                unsized_cap = unsized_cap.saturating_sub(got.size);
            }
            if remote.sha256.is_none() && remote.git_sha1.is_none() && w.pinned.is_none() {
                progress.note(&format!(
                    "{}: the Hub published no checksum; only the size was checked",
                    w.path
                ));
            }
            records.push(FileRecord {
                name: w.name().to_string(),
                size: got.size,
                sha256: got.sha256,
            });
        }
        Ok(records)
    }

    /// The files the plan's patterns name, listing folders on the Hub for `*` patterns.
    fn expand(
        &self,
        hub: &HubClient,
        plan: &Plan,
        progress: &mut dyn PullProgress,
    ) -> Result<Vec<Wanted>, StoreError> {
        let mut listings: BTreeMap<String, Vec<TreeEntry>> = BTreeMap::new();
        let mut wanted: Vec<Wanted> = Vec::new();
        for (file, filter) in &plan.patterns {
            let pinned = match file {
                CatalogFile::Pinned { size, sha256, .. } => {
                    Some((*size, sha256.to_ascii_lowercase()))
                }
                CatalogFile::Pattern(_) => None,
            };
            let pattern = file.path();
            if !pattern.contains('*') {
                wanted.push(Wanted {
                    path: pattern.to_string(),
                    pinned,
                });
                continue;
            }
            let (folder, glob) = pattern.rsplit_once('/').unwrap_or(("", pattern));
            if !listings.contains_key(folder) {
                let listing = hub.list_folder(&plan.repo, &plan.revision, folder, progress)?;
                listings.insert(folder.to_string(), listing);
            }
            let before = wanted.len();
            for entry in listings.get(folder).into_iter().flatten() {
                let name = entry.path.rsplit('/').next().unwrap_or(&entry.path);
                if entry.is_file
                    && glob_match(glob, name)
                    && (!filter || needed(name))
                    && !wanted.iter().any(|w| w.path == entry.path)
                {
                    wanted.push(Wanted {
                        path: entry.path.clone(),
                        pinned: None,
                    });
                }
            }
            if wanted.len() == before {
                return Err(StoreError::NoMatch {
                    repo: plan.repo.clone(),
                    revision: plan.revision.clone(),
                    pattern: pattern.to_string(),
                });
            }
        }
        Ok(wanted)
    }
}

/// Whether a partial download of `remote` can be resumed later: only when the Hub said
/// how large the file is and identified its content.
fn resumable(remote: &RemoteFile) -> bool {
    remote.size.is_some() && remote.etag.is_some()
}

fn partial_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.partial")),
        dir.join(format!("{name}.partial.json")),
    )
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("cannot remove", path, e)),
    }
}

/// The Hub and the catalog must agree before anything is downloaded.
fn check_pins(w: &Wanted, remote: &RemoteFile) -> Result<(), StoreError> {
    let Some((size, sha256)) = &w.pinned else {
        return Ok(());
    };
    let mismatch = |what, hub: String, pinned: String| StoreError::PinMismatch {
        file: w.path.clone(),
        what,
        hub,
        pinned,
    };
    if let Some(hub_size) = remote.size.filter(|s| s != size) {
        return Err(mismatch("size", hub_size.to_string(), size.to_string()));
    }
    if let Some(hub_sha) = remote.sha256.as_ref().filter(|s| *s != sha256) {
        return Err(mismatch("sha256", hub_sha.clone(), sha256.clone()));
    }
    Ok(())
}

/// The downloaded bytes must have the expected size and checksums.
fn check_download(
    w: &Wanted,
    remote: &RemoteFile,
    got: &super::hub::Downloaded,
) -> Result<(), StoreError> {
    let mismatch = |what, expected: String, actual: String| StoreError::ChecksumMismatch {
        file: w.path.clone(),
        what,
        expected,
        actual,
    };
    let expected_size = w.pinned.as_ref().map(|p| p.0).or(remote.size);
    if let Some(size) = expected_size.filter(|s| *s != got.size) {
        return Err(mismatch("size", size.to_string(), got.size.to_string()));
    }
    let expected_sha = w
        .pinned
        .as_ref()
        .map(|p| p.1.clone())
        .or(remote.sha256.clone());
    if let Some(sha) = expected_sha.filter(|s| *s != got.sha256) {
        return Err(mismatch("sha256", sha, got.sha256.clone()));
    }
    if remote.size.is_some() {
        if let Some(sha1) = remote.git_sha1.as_ref().filter(|s| **s != got.git_sha1) {
            return Err(mismatch("git sha1", sha1.clone(), got.git_sha1.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("*.json", "config.json"));
        assert!(glob_match("model.onnx*", "model.onnx"));
        assert!(glob_match("model.onnx*", "model.onnx_data"));
        assert!(!glob_match("model.onnx*", "model_fp16.onnx"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("*.json", "config.json.bak"));
    }

    #[test]
    fn folder_pulls_keep_model_files() {
        for name in [
            "model.safetensors",
            "config.json",
            "tokenizer.model",
            "merges.txt",
            "m.onnx.data",
        ] {
            assert!(needed(name), "{name}");
        }
        for name in [
            "README.md",
            ".gitattributes",
            "pytorch_model.bin",
            "x.gguf",
            "logo.png",
        ] {
            assert!(!needed(name), "{name}");
        }
    }
}
