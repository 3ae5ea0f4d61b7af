//! SHA-256 of files, as lowercase hex.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use runanywhere_formats::fs::open_regular;

use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds everything `reader` yields to `hasher`; returns the byte count.
pub(crate) fn feed(reader: &mut impl Read, mut hasher: impl FnMut(&[u8])) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher(&buf[..n]);
        total += n as u64;
    }
}

/// The SHA-256 of the file at `path`, with its size.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = feed(&mut open_regular(path)?, |b| hasher.update(b))?;
    Ok((hex(&hasher.finalize()), size))
}

/// Copies `src` to a new file `dst`, hashing on the way; returns the SHA-256 and size.
pub(crate) fn copy_hashing(src: &Path, dst: &Path) -> std::io::Result<(String, u64)> {
    let mut out = File::create(dst)?;
    let mut hasher = Sha256::new();
    let mut write_error = None;
    let size = feed(&mut open_regular(src)?, |b| {
        hasher.update(b);
        if write_error.is_none() {
            if let Err(e) = std::io::Write::write_all(&mut out, b) {
                write_error = Some(e);
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    out.sync_all()?;
    Ok((hex(&hasher.finalize()), size))
}
