//! Model format detection from content, not only the file name.
//!
//! Routing needs to know what a path holds before any engine sees it. Detection reads
//! at most a few bytes of the file (and lists a directory), so it is cheap and never
//! trusts an extension alone: a GGUF file is recognised by its magic, a llama2.c
//! checkpoint by a header whose shape predicts the file size exactly.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A model format, named as in manifests' `formats`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFormat {
    /// llama.cpp's GGUF.
    Gguf,
    /// A safetensors file, or a Hugging Face folder (`config.json` + `*.safetensors`).
    Safetensors,
    /// An ONNX file, or a folder with one (ONNX Runtime GenAI or Optimum layout).
    Onnx,
    /// A llama2.c checkpoint (`.bin`).
    Llama2c,
}

impl ModelFormat {
    /// The manifest name of the format.
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
            ModelFormat::Onnx => "onnx",
            ModelFormat::Llama2c => "llama2c",
        }
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a format could not be detected.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Nothing at the path.
    #[error("model not found: {0}")]
    NotFound(PathBuf),
    /// The path exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The model path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Readable, but no known format.
    #[error(
        "{path}: unrecognised model format ({detail}); expected a GGUF file, a safetensors \
         file or Hugging Face folder, an ONNX file or folder, or a llama2.c .bin checkpoint"
    )]
    Unknown {
        /// The model path.
        path: PathBuf,
        /// What was seen.
        detail: String,
    },
}

/// Detects the format of the model at `path`.
pub fn detect(path: &Path) -> Result<ModelFormat, DetectError> {
    let io = |source| DetectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DetectError::NotFound(path.to_path_buf()))
        }
        Err(e) => return Err(io(e)),
    };
    if meta.is_dir() {
        return detect_dir(path);
    }
    let mut head = [0u8; 32];
    let mut file = File::open(path).map_err(io)?;
    let n = read_up_to(&mut file, &mut head).map_err(io)?;
    let head = &head[..n];
    let size = meta.len();
    if head.starts_with(b"GGUF") {
        return Ok(ModelFormat::Gguf);
    }
    if is_safetensors_header(head, size) {
        return Ok(ModelFormat::Safetensors);
    }
    if llama2c_expected_size(head).is_some_and(|sizes| sizes.contains(&size)) {
        return Ok(ModelFormat::Llama2c);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("onnx") && head.first() == Some(&0x08) {
        return Ok(ModelFormat::Onnx);
    }
    Err(DetectError::Unknown {
        path: path.to_path_buf(),
        detail: if size == 0 {
            "the file is empty".into()
        } else {
            format!("first bytes {}", hex(&head[..head.len().min(8)]))
        },
    })
}

fn detect_dir(path: &Path) -> Result<ModelFormat, DetectError> {
    let entries = std::fs::read_dir(path).map_err(|source| DetectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    let has = |pred: &dyn Fn(&str) -> bool| names.iter().any(|n| pred(n));
    if has(&|n| n == "genai_config.json") || has(&|n| n.ends_with(".onnx")) {
        return Ok(ModelFormat::Onnx);
    }
    if has(&|n| n == "config.json") && has(&|n| n.ends_with(".safetensors")) {
        return Ok(ModelFormat::Safetensors);
    }
    Err(DetectError::Unknown {
        path: path.to_path_buf(),
        detail: format!(
            "a directory without config.json + *.safetensors or *.onnx (holds {} entries)",
            names.len()
        ),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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

/// llama2.c: seven i32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
/// seq_len; a negative vocab_size means an unshared classifier). Returns the file sizes
/// this header predicts (with and without the legacy freq_cis tables), or `None` when
/// the header is not plausible.
pub fn llama2c_expected_size(head: &[u8]) -> Option<[u64; 2]> {
    let field = |i: usize| -> Option<i64> {
        let b = head.get(i * 4..i * 4 + 4)?;
        Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
    };
    let (dim, hidden, layers, heads, kv_heads, vocab, seq) = (
        field(0)?,
        field(1)?,
        field(2)?,
        field(3)?,
        field(4)?,
        field(5)?,
        field(6)?,
    );
    let plausible = (1..=65536).contains(&dim)
        && (1..=1 << 20).contains(&hidden)
        && (1..=1024).contains(&layers)
        && (1..=1024).contains(&heads)
        && (1..=heads).contains(&kv_heads)
        && dim % heads == 0
        && (1..=1 << 22).contains(&vocab.abs())
        && (1..=1 << 22).contains(&seq);
    if !plausible {
        return None;
    }
    let shared = vocab > 0;
    let vocab = vocab.abs();
    let head_size = dim / heads;
    let kv_dim = dim * kv_heads / heads;
    let floats = vocab * dim
        + layers * dim * 2
        + layers * dim * (2 * dim + 2 * kv_dim)
        + layers * dim * hidden * 3
        + dim
        + if shared { 0 } else { vocab * dim };
    let freq = seq * head_size;
    let header = 28;
    Some([
        (header + 4 * (floats + freq)) as u64,
        (header + 4 * floats) as u64,
    ])
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn llama2c_header(fields: [i32; 7]) -> Vec<u8> {
        fields.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn detects_each_format_from_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let gguf = write(d, "model.bin", b"GGUF\x03\x00\x00\x00rest");
        assert_eq!(detect(&gguf).unwrap(), ModelFormat::Gguf);

        let mut st = 4u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}  ");
        let st = write(d, "x", &st);
        assert_eq!(detect(&st).unwrap(), ModelFormat::Safetensors);

        // stories260K's shape: the predicted size (with freq_cis) is 1,056,540 bytes.
        let header = llama2c_header([64, 172, 5, 8, 4, 512, 512]);
        assert_eq!(llama2c_expected_size(&header).unwrap()[0], 1_056_540);
        let mut bin = header.clone();
        bin.resize(1_056_540, 0);
        let bin = write(d, "stories.bin", &bin);
        assert_eq!(detect(&bin).unwrap(), ModelFormat::Llama2c);
        // A wrong size is not a llama2.c file.
        let mut short = header;
        short.resize(1000, 0);
        let short = write(d, "short.bin", &short);
        assert!(matches!(detect(&short), Err(DetectError::Unknown { .. })));

        let onnx = write(d, "m.onnx", b"\x08\x07\x12\x04test");
        assert_eq!(detect(&onnx).unwrap(), ModelFormat::Onnx);
    }

    #[test]
    fn detects_folders() {
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        write(&hf, "config.json", b"{}");
        write(&hf, "model.safetensors", b"");
        assert_eq!(detect(&hf).unwrap(), ModelFormat::Safetensors);
        let onnx = dir.path().join("onnx");
        std::fs::create_dir(&onnx).unwrap();
        write(&onnx, "genai_config.json", b"{}");
        assert_eq!(detect(&onnx).unwrap(), ModelFormat::Onnx);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(detect(&empty), Err(DetectError::Unknown { .. })));
    }

    #[test]
    fn unknown_empty_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "e.gguf", b"");
        let err = detect(&empty).unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
        let junk = write(dir.path(), "j", b"hello world, not a model");
        assert!(matches!(detect(&junk), Err(DetectError::Unknown { .. })));
        assert!(matches!(
            detect(&dir.path().join("nope")),
            Err(DetectError::NotFound(_))
        ));
    }
}
