//! GGUF headers as candle's [`Content`], read only after the shared structural check.
//!
//! `runanywhere-formats` walks the header first (every length, count, offset and the
//! alignment checked against the file, tensor data inside the file): candle's own
//! reader trusts a few header values (a `general.alignment` of 0 divides by zero), and
//! model loaders index tensors by what the metadata claims. Only a file that passes is
//! handed to candle's `Content::read`. The metadata getters here accept any integer type
//! a writer may have chosen for a key, since converters disagree (`u32` vs `i32`, `f32`
//! vs `f64`).

use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};

use crate::error::ConvertError;

/// A parsed GGUF header: metadata and tensor descriptions (the data stays on disk).
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    file_size: u64,
    content: Content,
}

impl GgufFile {
    /// Reads and checks the header of the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<Self, ConvertError> {
        use runanywhere_formats::FileError;
        let summary = runanywhere_formats::gguf::check_file(path).map_err(|e| match e {
            FileError::Invalid { source, .. } => {
                ConvertError::invalid(path, format!("not a valid GGUF file: {source}"))
            }
            other => ConvertError::invalid(path, other.to_string()),
        })?;
        let file =
            runanywhere_formats::fs::open_regular(path).map_err(|e| ConvertError::io(path, e))?;
        let content = Content::read(&mut BufReader::new(file)).map_err(|e| {
            ConvertError::invalid(path, format!("cannot read the GGUF header: {e}"))
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: summary.version,
            file_size: summary.file_size,
            content,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The file size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The checked header as candle's type (for `ModelWeights::from_gguf` and friends).
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// Takes the header out, as candle's loaders consume it.
    pub fn into_content(self) -> Content {
        self.content
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A metadata string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// A metadata integer of any width that fits a `u64` (negative values do not).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        value_u64(self.get(key)?)
    }

    /// A metadata integer that fits a `u32`.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get_u64(key).and_then(|v| u32::try_from(v).ok())
    }

    /// A metadata number (integer or float) as `f64`.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::F32(v) => Some(f64::from(*v)),
            Value::F64(v) => Some(*v),
            other => value_u64(other).map(|v| v as f64),
        }
    }

    /// A metadata boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => value_u64(other).map(|v| v != 0),
        }
    }

    /// A metadata array.
    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        match self.get(key)? {
            Value::Array(items) => Some(items.as_slice()),
            _ => None,
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The description of a tensor.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.content.tensor_infos.get(name)
    }

    /// An `Invalid` error about this file.
    pub fn invalid(&self, problem: impl Into<String>) -> ConvertError {
        ConvertError::invalid(&self.path, problem)
    }
}

/// An integer value of any width as `u64`; `None` for negative or non-integer values.
fn value_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(u64::from(x)),
        Value::U16(x) => Some(u64::from(x)),
        Value::U32(x) => Some(u64::from(x)),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }

    /// A tiny file: one u32 and one string array of metadata, one F32 tensor of 4.
    fn tiny(alignment: Option<u32>) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        let kvs = 2 + u64::from(alignment.is_some());
        b.extend_from_slice(&kvs.to_le_bytes());
        put_str(&mut b, "llama.block_count");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes());
        put_str(&mut b, "tokenizer.ggml.tokens");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        put_str(&mut b, "a");
        put_str(&mut b, "b");
        if let Some(a) = alignment {
            put_str(&mut b, "general.alignment");
            b.extend_from_slice(&4u32.to_le_bytes());
            b.extend_from_slice(&a.to_le_bytes());
        }
        put_str(&mut b, "t");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend_from_slice(&[0u8; 16]);
        b
    }

    fn open(bytes: &[u8]) -> Result<GgufFile, ConvertError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, bytes).unwrap();
        GgufFile::open(&path)
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let f = open(&tiny(None)).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.get_u32("llama.block_count"), Some(5));
        assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 2);
        let t = f.tensor_info("t").unwrap();
        assert_eq!(t.shape.dims(), &[4]);
        assert_eq!(f.content().tensor_data_offset % 32, 0);
    }

    #[test]
    fn every_truncation_and_bad_alignment_is_an_error() {
        let bytes = tiny(None);
        for cut in 0..bytes.len() {
            let err = open(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, ConvertError::Invalid { .. }),
                "cut {cut}: {err}"
            );
        }
        for a in [0, 3] {
            let err = open(&tiny(Some(a))).unwrap_err();
            assert!(err.to_string().contains("power of two"), "{err}");
        }
        let mut wrong = tiny(None);
        wrong[0] = b'X';
        assert!(open(&wrong).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn huge_counts_fail_before_allocating() {
        let mut bytes = tiny(None);
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(open(&bytes).is_err());
        let mut bytes = tiny(None);
        bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(open(&bytes).is_err());
    }
}
