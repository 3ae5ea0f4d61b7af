//! A bounds-checked little-endian reader that tracks its position in the file.
//!
//! Every read first checks that the bytes exist ([`Reader::need`]), so a length or count
//! read from the file is never trusted before it is compared with what is left.

use std::io::{self, Read, Seek, SeekFrom};

use crate::error::FormatError;

/// Skips up to this size are done by reading through the buffer rather than seeking.
const SKIP_BY_READING: u64 = 64 * 1024;

/// Reads a file of `len` bytes from its start.
pub(crate) struct Reader<R> {
    inner: R,
    /// Bytes consumed so far; never more than `len`.
    pub(crate) pos: u64,
    /// Size of the file.
    pub(crate) len: u64,
}

impl<R: Read + Seek> Reader<R> {
    /// A reader over `inner`, positioned at the start of a file of `len` bytes.
    pub(crate) fn new(inner: R, len: u64) -> Self {
        Reader { inner, pos: 0, len }
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// An error at the current position.
    pub(crate) fn fail(&self, problem: impl Into<String>) -> FormatError {
        FormatError {
            offset: self.pos,
            problem: problem.into(),
        }
    }

    /// Fails unless `n` more bytes are left in the file.
    pub(crate) fn need(&self, n: u64, what: &str) -> Result<(), FormatError> {
        if n > self.remaining() {
            Err(self.fail(format!(
                "{what} needs {n} bytes but only {} remain in the file (truncated or corrupt)",
                self.remaining()
            )))
        } else {
            Ok(())
        }
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FormatError> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        let result = self.inner.read_exact(&mut buf);
        result.map_err(|e| self.fail(format!("cannot read {what}: {e}")))?;
        self.pos += N as u64;
        Ok(buf)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        self.array::<1>(what).map(|[b]| b)
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }

    /// Reads `n` bytes, which must be left in the file.
    pub(crate) fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, FormatError> {
        self.need(n, what)?;
        let size = usize::try_from(n).map_err(|_| self.fail(format!("{what} is too long")))?;
        let mut buf = vec![0u8; size];
        let result = self.inner.read_exact(&mut buf);
        result.map_err(|e| self.fail(format!("cannot read {what}: {e}")))?;
        self.pos += n;
        Ok(buf)
    }

    /// Skips `n` bytes, failing if the file has fewer left.
    pub(crate) fn skip(&mut self, n: u64, what: &str) -> Result<(), FormatError> {
        self.need(n, what)?;
        if n <= SKIP_BY_READING {
            let result = io::copy(&mut (&mut self.inner).take(n), &mut io::sink());
            let copied = result.map_err(|e| self.fail(format!("cannot read {what}: {e}")))?;
            if copied != n {
                return Err(self.fail(format!("{what}: unexpected end of file")));
            }
        } else {
            let delta = i64::try_from(n).map_err(|_| self.fail(format!("{what} is too long")))?;
            let result = self.inner.seek(SeekFrom::Current(delta));
            result.map_err(|e| self.fail(format!("cannot seek past {what}: {e}")))?;
        }
        self.pos += n;
        Ok(())
    }
}
