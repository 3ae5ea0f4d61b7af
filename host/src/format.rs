//! Model format detection from content, not only the file name.
//!
//! Routing needs to know what a path holds before any engine sees it. Detection reads
//! at most a few bytes of the file (and lists a directory), so it is cheap and never
//! trusts an extension alone: a GGUF file is recognised by its magic, a llama2.c
//! checkpoint by a header whose shape predicts the file size exactly.

use std::path::{Path, PathBuf};

use runanywhere_formats::fs::open_regular;
use runanywhere_formats::{describe_head, read_head};

pub use runanywhere_formats::llama2c::expected_size as llama2c_expected_size;
pub use runanywhere_formats::ModelFormat;

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
         file or Hugging Face folder, an ONNX file or folder, an ExecuTorch .pte program, a TFLite \
         model or a llama2.c .bin checkpoint"
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
    let head = read_head(&mut open_regular(path).map_err(io)?).map_err(io)?;
    let size = meta.len();
    let ext = path.extension().and_then(|e| e.to_str());
    if let Some(format) = runanywhere_formats::sniff_file(&head, size, ext) {
        return Ok(format);
    }
    Err(DetectError::Unknown {
        path: path.to_path_buf(),
        detail: describe_head(&head, size),
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
    if let Some(format) = runanywhere_formats::sniff_dir(&names) {
        return Ok(format);
    }
    Err(DetectError::Unknown {
        path: path.to_path_buf(),
        detail: format!(
            "a directory without config.json + *.safetensors or *.onnx (holds {} entries)",
            names.len()
        ),
    })
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
        let pte = write(
            d,
            "m.pte",
            &runanywhere_formats::pte::testing::program(&["forward"], 0),
        );
        assert_eq!(detect(&pte).unwrap(), ModelFormat::Pte);
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
