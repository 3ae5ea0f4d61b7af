//! Model file formats: telling them apart from their content, and checking their
//! structure without trusting any length, count or offset they contain.
//!
//! * [`sniff_file`] / [`sniff_dir`] tell a format from a file's first bytes (and size) or
//!   a folder's file names; routing uses them.
//! * [`verify_path`] runs the structural check of a file or folder and reports what it
//!   found ([`Facts`]: architecture, parameters, quantization, context length, ...) and
//!   the first problem, if any. [`verify_bytes`] does the same on bytes in memory.
//! * [`gguf`], [`safetensors`], [`onnx`] and [`llama2c`] hold the per-format checks.
//!
//! Nothing here panics on any input, and nothing allocates more than the input could
//! justify: every length read from a file is checked against the bytes actually left
//! before it is used (the `fuzz/` target and the mutation tests hold the crate to that).

mod error;
mod facts;
mod flatbuffer;
mod folder;
pub mod fs;
pub mod gguf;
pub mod hparams;
pub mod llama2c;
pub mod onnx;
pub mod pte;
mod reader;
#[cfg(test)]
mod robustness;
pub mod safetensors;
pub mod tflite;
mod verify;

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

pub use error::{FileError, FormatError};
pub use facts::{Facts, Problem, Verification};
pub use verify::{verify_bytes, verify_path};

/// A model format, named as in engine manifests' `formats`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// llama.cpp's GGUF.
    Gguf,
    /// A safetensors file, or a Hugging Face folder (`config.json` + `*.safetensors`).
    Safetensors,
    /// An ONNX file, or a folder with one (ONNX Runtime GenAI or Optimum layout).
    Onnx,
    /// A llama2.c checkpoint (`.bin`).
    Llama2c,
    /// An ExecuTorch program (`.pte`).
    Pte,
    /// A TFLite / LiteRT model (`.tflite`).
    Tflite,
}

impl ModelFormat {
    /// Every format.
    pub const ALL: [ModelFormat; 6] = [
        ModelFormat::Gguf,
        ModelFormat::Safetensors,
        ModelFormat::Onnx,
        ModelFormat::Llama2c,
        ModelFormat::Pte,
        ModelFormat::Tflite,
    ];

    /// The manifest name of the format.
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
            ModelFormat::Onnx => "onnx",
            ModelFormat::Llama2c => "llama2c",
            ModelFormat::Pte => "pte",
            ModelFormat::Tflite => "tflite",
        }
    }

    /// The format for a manifest name.
    pub fn from_name(name: &str) -> Option<ModelFormat> {
        ModelFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The name used in messages, e.g. `GGUF`.
    pub fn display_name(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "GGUF",
            ModelFormat::Safetensors => "safetensors",
            ModelFormat::Onnx => "ONNX",
            ModelFormat::Llama2c => "llama2.c",
            ModelFormat::Pte => "ExecuTorch",
            ModelFormat::Tflite => "TFLite",
        }
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tells the format of a file of `size` bytes from its first bytes `head` (32 are
/// enough) and its extension: the GGUF magic, a safetensors header length that fits the
/// file followed by `{`, a llama2.c header that predicts the size exactly, or an `.onnx`
/// file that starts like a `ModelProto` (field 1, `ir_version`).
pub fn sniff_file(head: &[u8], size: u64, extension: Option<&str>) -> Option<ModelFormat> {
    if head.starts_with(b"GGUF") {
        return Some(ModelFormat::Gguf);
    }
    if pte::sniff(head) {
        return Some(ModelFormat::Pte);
    }
    if tflite::sniff(head) {
        return Some(ModelFormat::Tflite);
    }
    if is_safetensors_header(head, size) {
        return Some(ModelFormat::Safetensors);
    }
    if llama2c::expected_size(head).is_some_and(|sizes| sizes.contains(&size)) {
        return Some(ModelFormat::Llama2c);
    }
    let onnx_ext = extension.is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if onnx_ext && head.first() == Some(&0x08) {
        return Some(ModelFormat::Onnx);
    }
    None
}

/// Tells the format of a folder from the names of its files: `genai_config.json` or any
/// `*.onnx` is ONNX; `config.json` with `*.safetensors` is a Hugging Face folder.
pub fn sniff_dir<S: AsRef<str>>(names: &[S]) -> Option<ModelFormat> {
    let has = |pred: &dyn Fn(&str) -> bool| names.iter().any(|n| pred(n.as_ref()));
    if has(&|n| n == "genai_config.json") || has(&|n| n.ends_with(".onnx")) {
        return Some(ModelFormat::Onnx);
    }
    if has(&|n| n == "config.json") && has(&|n| n.ends_with(".safetensors")) {
        return Some(ModelFormat::Safetensors);
    }
    None
}

/// How many leading bytes [`sniff_file`] needs.
pub const HEAD_LEN: usize = 32;

/// Reads the first [`HEAD_LEN`] bytes (all of a shorter file).
pub fn read_head(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; HEAD_LEN];
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// What a file that is not a model starts with, for messages: `the file is empty` or
/// `first bytes 07 00 00 00 ...`.
pub fn describe_head(head: &[u8], size: u64) -> String {
    if size == 0 {
        return "the file is empty".into();
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("first bytes {}", hex.join(" "))
}

/// safetensors: u64 little-endian header length, then a JSON object within the file.
fn is_safetensors_header(head: &[u8], size: u64) -> bool {
    let Some(len) = head.get(..8) else {
        return false;
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(len);
    let header_len = u64::from_le_bytes(le);
    header_len >= 2 && header_len.saturating_add(8) <= size && head.get(8) == Some(&b'{')
}

/// The size of the regular, non-empty file at `path`.
pub(crate) fn regular_file_len(path: &Path, format: &'static str) -> Result<u64, FileError> {
    let meta = std::fs::metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            FileError::NotFound(path.to_path_buf())
        } else {
            FileError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    if meta.is_dir() {
        return Err(FileError::Directory {
            path: path.to_path_buf(),
            format,
        });
    }
    if !meta.is_file() {
        return Err(FileError::NotAFile(path.to_path_buf()));
    }
    if meta.len() == 0 {
        return Err(FileError::Empty(path.to_path_buf()));
    }
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_sniffed_from_content() {
        assert_eq!(
            sniff_file(b"GGUF\x03\0\0\0", 100, None),
            Some(ModelFormat::Gguf)
        );
        let mut st = 4u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}  ");
        assert_eq!(sniff_file(&st, 12, None), Some(ModelFormat::Safetensors));
        assert_eq!(sniff_file(&st, 11, None), None);
        let bin = llama2c::testing::checkpoint([64, 172, 5, 8, 4, 512, 512]);
        assert_eq!(
            sniff_file(&bin[..32], bin.len() as u64, Some("bin")),
            Some(ModelFormat::Llama2c)
        );
        assert_eq!(sniff_file(&bin[..32], 1000, Some("bin")), None);
        assert_eq!(
            sniff_file(b"\x08\x07", 2, Some("ONNX")),
            Some(ModelFormat::Onnx)
        );
        assert_eq!(sniff_file(b"\x08\x07", 2, Some("pb")), None);
        assert_eq!(
            sniff_dir(&["config.json", "model.safetensors"]),
            Some(ModelFormat::Safetensors)
        );
        assert_eq!(sniff_dir(&["genai_config.json"]), Some(ModelFormat::Onnx));
        assert_eq!(sniff_dir(&["config.json"]), None);
    }

    #[test]
    fn format_names_round_trip() {
        for f in ModelFormat::ALL {
            assert_eq!(ModelFormat::from_name(f.name()), Some(f));
        }
        assert_eq!(ModelFormat::from_name("mock"), None);
        assert_eq!(
            serde_json::to_string(&ModelFormat::Llama2c).unwrap_or_default(),
            "\"llama2c\""
        );
    }
}
