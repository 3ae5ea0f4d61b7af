//! [`verify_path`] and [`verify_bytes`]: the structural check of a model, whatever its
//! format.

use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;

use crate::error::FormatError;
use crate::facts::{Facts, Verification};
use crate::{
    describe_head, folder, gguf, llama2c, onnx, pte, read_head, safetensors, sniff_file, tflite,
    ModelFormat, HEAD_LEN,
};

/// Verifies the model file or folder at `path`. Never fails: an unreadable path is a
/// problem like any other.
pub fn verify_path(path: &Path) -> Verification {
    let mut v = Verification::new(path.to_path_buf());
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => folder::verify_dir(path, &mut v),
        Ok(_) => verify_file(path, &mut v),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let problem = if std::fs::symlink_metadata(path).is_ok() {
                "a symbolic link to nothing (its target does not exist)"
            } else {
                "nothing exists at this path"
            };
            v.problem(path, None, problem.into());
        }
        Err(e) => v.problem(path, None, format!("cannot read: {e}")),
    }
    v
}

/// Verifies a model file held in memory. `file_name` is used for its extension (which
/// helps tell ONNX and truncated files apart) and in messages. External files (ONNX
/// external data) are not checked.
pub fn verify_bytes(bytes: &[u8], file_name: &str) -> Verification {
    let path = Path::new(file_name);
    let mut v = Verification::new(path.to_path_buf());
    let len = bytes.len() as u64;
    v.size = len;
    v.files.push(path.to_path_buf());
    let head = &bytes[..bytes.len().min(HEAD_LEN)];
    let Some(format) = guess_format(head, len, path) else {
        v.problem(path, None, unrecognised(head, len));
        return v;
    };
    v.format = Some(format);
    if let Err(e) = check_content(Cursor::new(bytes), head, len, format, &mut v.facts) {
        v.problem(path, Some(e.offset), e.problem);
    }
    v
}

/// Verifies one file, adding it to `v` (a folder's verification calls this per file).
pub(crate) fn verify_file(path: &Path, v: &mut Verification) {
    let mut file = match crate::fs::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return v.problem(path, None, e.to_string())
        }
        Err(e) => return v.problem(path, None, format!("cannot open: {e}")),
    };
    let len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return v.problem(path, None, "not a regular file".into()),
        Err(e) => return v.problem(path, None, format!("cannot read: {e}")),
    };
    v.size = v.size.saturating_add(len);
    v.files.push(path.to_path_buf());
    let head = match read_head(&mut file).and_then(|h| file.rewind().map(|_| h)) {
        Ok(h) => h,
        Err(e) => return v.problem(path, None, format!("cannot read: {e}")),
    };
    let head = head.as_slice();
    let Some(format) = guess_format(head, len, path) else {
        return v.problem(path, None, unrecognised(head, len));
    };
    v.format.get_or_insert(format);
    match check_content(BufReader::new(file), head, len, format, &mut v.facts) {
        Err(e) => v.problem(path, Some(e.offset), e.problem),
        Ok(external) if !external.is_empty() => {
            let dir = path.parent().unwrap_or(Path::new("."));
            if let Err(message) = onnx::check_external(dir, &external) {
                v.problem(path, None, message);
            }
            for e in &external {
                let data = dir.join(&e.location);
                if !v.files.contains(&data) {
                    v.size = v.size.saturating_add(file_len(&data));
                    v.files.push(data);
                }
            }
        }
        Ok(_) => {}
    }
}

/// The format of a file: from its content, or else from its extension, so that a
/// damaged file of a known kind gets that format's check (and a precise problem).
fn guess_format(head: &[u8], len: u64, path: &Path) -> Option<ModelFormat> {
    let ext = path.extension().and_then(|e| e.to_str());
    if let Some(f) = sniff_file(head, len, ext) {
        return Some(f);
    }
    match ext.map(str::to_ascii_lowercase).as_deref() {
        Some("gguf") => Some(ModelFormat::Gguf),
        Some("safetensors") => Some(ModelFormat::Safetensors),
        Some("onnx") => Some(ModelFormat::Onnx),
        Some("pte") => Some(ModelFormat::Pte),
        Some("tflite") => Some(ModelFormat::Tflite),
        Some("bin") if llama2c::Header::parse(head).is_some() => Some(ModelFormat::Llama2c),
        _ => None,
    }
}

/// Runs the format's check; returns the ONNX external-data references to check.
fn check_content<R: Read + Seek>(
    reader: R,
    head: &[u8],
    len: u64,
    format: ModelFormat,
    facts: &mut Facts,
) -> Result<Vec<onnx::ExternalData>, FormatError> {
    match format {
        ModelFormat::Gguf => gguf::inspect(reader, len, facts).map(|_| Vec::new()),
        ModelFormat::Safetensors => safetensors::check(reader, len, facts).map(|_| Vec::new()),
        ModelFormat::Onnx => onnx::check(reader, len, facts).map(|s| s.external),
        ModelFormat::Llama2c => llama2c::check(head, len, facts).map(|_| Vec::new()),
        ModelFormat::Pte => pte::check(reader, len, facts).map(|_| Vec::new()),
        ModelFormat::Tflite => tflite::check(reader, len, facts).map(|_| Vec::new()),
    }
}

fn unrecognised(head: &[u8], len: u64) -> String {
    format!(
        "unrecognised model format ({}); expected a GGUF, safetensors, ONNX, ExecuTorch (.pte), TFLite or llama2.c file",
        describe_head(head, len)
    )
}

/// The size of a file, or 0 when it cannot be read.
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
