//! TFLite / LiteRT models (`.tflite`): a FlatBuffer with the file identifier `TFL3` at
//! byte 4.
//!
//! The check walks the model's FlatBuffer far enough to list its signatures
//! (`signature_defs[*].signature_key`: `prefill_32`, `decode`, ...) and subgraphs, and
//! checks every weight buffer's bounds (inline `data` vectors, and `offset`/`size` for
//! buffers stored after the FlatBuffer in large models), so a truncated file is refused.
//! Every offset is checked before it is followed; the runtime interprets the rest.

use std::io::Read;

use crate::error::FormatError;
use crate::facts::Facts;
use crate::flatbuffer::FlatBuffer;

/// The FlatBuffer file identifier of TFLite models (schema version 3).
pub const FILE_IDENTIFIER: &[u8; 4] = b"TFL3";
/// Files larger than this are only sniffed, not walked (they are read whole).
const MAX_WALKED: u64 = 512 << 20;
/// Entries of any vector looked at, at most.
const MAX_ENTRIES: u32 = 1 << 20;

/// Whether `head` starts like a TFLite model.
pub fn sniff(head: &[u8]) -> bool {
    head.get(4..8) == Some(FILE_IDENTIFIER.as_slice())
}

/// What the check read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The signature keys, in file order.
    pub signatures: Vec<String>,
    /// Number of subgraphs.
    pub subgraphs: u32,
}

/// Checks the model of `len` bytes read from `reader`, recording facts.
pub fn check(mut reader: impl Read, len: u64, facts: &mut Facts) -> Result<Summary, FormatError> {
    if len > MAX_WALKED {
        let mut head = [0u8; 8];
        reader
            .read_exact(&mut head)
            .map_err(|e| problem(0, format!("cannot read: {e}")))?;
        if !sniff(&head) {
            return Err(problem(
                0,
                "not a TFLite model (no TFL3 identifier at byte 4)",
            ));
        }
        return Ok(Summary {
            signatures: Vec::new(),
            subgraphs: 0,
        });
    }
    let mut bytes = Vec::new();
    reader
        .take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| problem(0, format!("cannot read: {e}")))?;
    check_bytes(&bytes, facts)
}

fn check_bytes(bytes: &[u8], facts: &mut Facts) -> Result<Summary, FormatError> {
    if bytes.len() < 8 {
        return Err(problem(
            0,
            format!(
                "only {} bytes: too short for a TFLite model (truncated?)",
                bytes.len()
            ),
        ));
    }
    if !sniff(bytes) {
        return Err(problem(
            0,
            "not a TFLite model (no TFL3 identifier at byte 4)",
        ));
    }
    let fb = FlatBuffer { bytes };
    let root = fb.table(fb.u32(0)? as usize)?;
    let version = match fb.field(root, 0)? {
        Some(at) => fb.u32(at)?,
        None => 0,
    };
    let subgraphs = match fb.field(root, 2)? {
        Some(at) => bounded(&fb, at)?.1,
        None => 0,
    };
    if subgraphs == 0 {
        return Err(problem(root as u64, "the model has no subgraphs"));
    }
    // Weight buffers: inline data must fit, and out-of-FlatBuffer ones must end inside
    // the file.
    let mut weight_bytes = 0u64;
    if let Some(at) = fb.field(root, 4)? {
        let (start, count) = bounded(&fb, at)?;
        for i in 0..count as usize {
            let buffer = fb.table(fb.follow(start + 4 * i)?)?;
            if let Some(data) = fb.field(buffer, 0)? {
                let (first, n) = fb.vector_bytes(data)?;
                let _ = first;
                weight_bytes = weight_bytes.saturating_add(u64::from(n));
            }
            let offset = fb
                .field(buffer, 1)?
                .map(|a| fb.u64(a))
                .transpose()?
                .unwrap_or(0);
            let size = fb
                .field(buffer, 2)?
                .map(|a| fb.u64(a))
                .transpose()?
                .unwrap_or(0);
            if offset > 1 || size > 0 {
                let end = offset.checked_add(size);
                if end.is_none_or(|e| e > bytes.len() as u64) {
                    return Err(problem(
                        buffer as u64,
                        format!(
                            "buffer {i} spans bytes {offset}..{} but the file has {} (truncated?)",
                            end.map_or_else(|| "overflow".into(), |e| e.to_string()),
                            bytes.len()
                        ),
                    ));
                }
                weight_bytes = weight_bytes.saturating_add(size);
            }
        }
    }
    let mut signatures = Vec::new();
    if let Some(at) = fb.field(root, 7)? {
        let (start, count) = bounded(&fb, at)?;
        for i in 0..count as usize {
            let def = fb.table(fb.follow(start + 4 * i)?)?;
            let key = match fb.field(def, 2)? {
                Some(at) => fb.string(at)?,
                None => String::new(),
            };
            signatures.push(key);
        }
    }
    facts.detail("tflite.schema_version", version);
    facts.detail("tflite.subgraphs", subgraphs);
    facts.detail("tflite.signatures", signatures.join(","));
    facts.detail("tflite.buffer_bytes", weight_bytes);
    if signatures.iter().any(|s| s == "decode")
        && signatures.iter().any(|s| s.starts_with("prefill"))
    {
        facts
            .architecture
            .get_or_insert_with(|| "decoder (litert-torch)".to_string());
    }
    Ok(Summary {
        signatures,
        subgraphs,
    })
}

/// A vector of tables at `at`, its length capped.
fn bounded(fb: &FlatBuffer<'_>, at: usize) -> Result<(usize, u32), FormatError> {
    let (start, count) = fb.vector(at)?;
    if count > MAX_ENTRIES {
        return Err(problem(
            at as u64,
            format!("a vector claims {count} entries"),
        ));
    }
    Ok((start, count))
}

fn problem(offset: u64, problem: impl Into<String>) -> FormatError {
    FormatError {
        offset,
        problem: problem.into(),
    }
}
