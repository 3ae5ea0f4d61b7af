//! safetensors files: a little-endian `u64` header length N, N bytes of JSON, then the
//! tensor data. The check follows the format's own rules: the header is a JSON object
//! mapping tensor names to `{dtype, shape, data_offsets}` (plus an optional
//! `__metadata__` object of strings); every tensor's byte range matches its shape and
//! dtype; and the ranges tile the data section exactly, with no gap and no overlap.

use std::io::{Read, Seek};

use serde_json::{Map, Value};

use crate::error::FormatError;
use crate::facts::{Facts, Tally};
use crate::reader::Reader;

/// The reference implementation refuses headers larger than this.
pub const MAX_HEADER_LEN: u64 = 100_000_000;
const METADATA_KEY: &str = "__metadata__";

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsSummary {
    /// Bytes of JSON header.
    pub header_len: u64,
    /// Number of tensors.
    pub tensors: u64,
    /// Sum of the tensors' element counts.
    pub parameters: u64,
    /// The dtype holding the most bytes, e.g. `BF16`.
    pub dominant_dtype: Option<String>,
}

/// Bits per element of a safetensors dtype; `None` for an unknown one.
pub fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Checks a safetensors file of `len` bytes read from `inner`, recording the parameter
/// count, tensor count and dominant dtype (as the quantization) in `facts`.
pub fn check<R: Read + Seek>(
    inner: R,
    len: u64,
    facts: &mut Facts,
) -> Result<SafetensorsSummary, FormatError> {
    let mut r = Reader::new(inner, len);
    let header_len = r.u64("the header length")?;
    if header_len > MAX_HEADER_LEN {
        return Err(r.fail(format!(
            "the header claims {header_len} bytes; at most {MAX_HEADER_LEN} are allowed"
        )));
    }
    let header = r.bytes(header_len, "the JSON header")?;
    let data_start = r.pos;
    let data_len = len - data_start;
    let fail = |problem: String| FormatError { offset: 8, problem };
    if header.first() != Some(&b'{') {
        return Err(fail("the header is not a JSON object".into()));
    }
    let map: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|e| fail(format!("the header is not valid JSON: {e}")))?;
    facts.detail("safetensors.header_bytes", header_len);

    let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(map.len());
    let mut parameters = 0u64;
    let mut dtypes = Tally::default();
    for (name, value) in &map {
        if name == METADATA_KEY {
            let Value::Object(meta) = value else {
                return Err(fail("__metadata__ is not an object".into()));
            };
            if let Some((key, _)) = meta.iter().find(|(_, v)| !v.is_string()) {
                return Err(fail(format!("__metadata__.{key} is not a string")));
            }
            if let Some(Value::String(format)) = meta.get("format") {
                facts.detail("safetensors.format", format);
            }
            continue;
        }
        let info = tensor_info(name, value).map_err(fail)?;
        if info.end > data_len {
            return Err(FormatError {
                offset: data_start.saturating_add(info.begin),
                problem: format!(
                    "tensor '{name}' ends at byte {} of the data section, which has only \
                     {data_len} bytes (truncated download?)",
                    info.end
                ),
            });
        }
        parameters = parameters.saturating_add(info.elements);
        dtypes.add(info.dtype, info.end - info.begin);
        ranges.push((info.begin, info.end, name));
    }

    // The tensors must tile the data section.
    ranges.sort_unstable();
    let mut covered = 0u64;
    for &(begin, end, name) in &ranges {
        if begin != covered {
            let what = if begin < covered {
                "overlaps the tensor before it"
            } else {
                "leaves a gap before it"
            };
            return Err(FormatError {
                offset: data_start.saturating_add(begin),
                problem: format!(
                    "tensor '{name}' starts at byte {begin} of the data section and {what} \
                     (the previous tensor ends at byte {covered})"
                ),
            });
        }
        covered = end;
    }
    if covered != data_len {
        return Err(FormatError {
            offset: data_start.saturating_add(covered),
            problem: format!(
                "the tensors cover {covered} bytes but the data section has {data_len}"
            ),
        });
    }

    let tensors = ranges.len() as u64;
    facts.add_tensors(tensors);
    facts.add_parameters(parameters);
    let dominant_dtype = dtypes.dominant();
    if facts.quantization.is_none() {
        facts.quantization = dominant_dtype.clone();
    }
    Ok(SafetensorsSummary {
        header_len,
        tensors,
        parameters,
        dominant_dtype,
    })
}

/// One tensor entry of the header.
struct TensorEntry<'a> {
    dtype: &'a str,
    elements: u64,
    begin: u64,
    end: u64,
}

fn tensor_info<'a>(name: &str, value: &'a Value) -> Result<TensorEntry<'a>, String> {
    let Value::Object(entry) = value else {
        return Err(format!("the entry of tensor '{name}' is not an object"));
    };
    let dtype = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("tensor '{name}' has no dtype string"))?;
    let bits =
        dtype_bits(dtype).ok_or_else(|| format!("tensor '{name}' has unknown dtype '{dtype}'"))?;
    let shape = entry
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("tensor '{name}' has no shape array"))?;
    let elements = shape.iter().try_fold(1u64, |acc, d| {
        let d = d
            .as_u64()
            .ok_or_else(|| format!("tensor '{name}' has a shape entry {d} that is not a size"))?;
        acc.checked_mul(d)
            .ok_or_else(|| format!("tensor '{name}' has a shape whose element count overflows"))
    })?;
    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("tensor '{name}' has no data_offsets array"))?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => b.as_u64().zip(e.as_u64()),
        _ => None,
    }
    .ok_or_else(|| format!("tensor '{name}' needs data_offsets [begin, end]"))?;
    if begin > end {
        return Err(format!(
            "tensor '{name}' has data_offsets [{begin}, {end}]: the end is before the start"
        ));
    }
    let bytes = elements
        .checked_mul(bits)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| format!("tensor '{name}' has a byte size that overflows"))?;
    if end - begin != bytes {
        return Err(format!(
            "tensor '{name}' ({dtype}, {} elements) needs {bytes} bytes but its data_offsets \
             [{begin}, {end}] span {}",
            elements,
            end - begin
        ));
    }
    Ok(TensorEntry {
        dtype,
        elements,
        begin,
        end,
    })
}

/// Builders for small safetensors files.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    /// A file holding the given `(name, dtype, shape)` tensors back to back, zero-filled.
    pub fn file(tensors: &[(&str, &str, &[u64])]) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut offset = 0u64;
        for (name, dtype, shape) in tensors {
            let elements: u64 = shape.iter().product();
            let bits = super::dtype_bits(dtype).unwrap_or(8);
            let bytes = (elements * bits).div_ceil(8);
            entries.push(format!(
                "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}}",
                offset + bytes
            ));
            offset += bytes;
        }
        entries.push("\"__metadata__\":{\"format\":\"pt\"}".into());
        let mut header = format!("{{{}}}", entries.join(","));
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + offset as usize, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn run(bytes: &[u8]) -> Result<SafetensorsSummary, FormatError> {
        check(
            Cursor::new(bytes),
            bytes.len() as u64,
            &mut Facts::default(),
        )
    }

    fn problem(bytes: &[u8]) -> String {
        match run(bytes) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.problem,
        }
    }

    /// A file with a hand-written header and `data` bytes of data.
    fn raw(header: &str, data: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data, 0);
        out
    }

    #[test]
    fn a_valid_file_gives_its_facts() {
        let bytes = testing::file(&[("a", "BF16", &[4, 8]), ("b", "F32", &[3])]);
        let mut facts = Facts::default();
        let s = check(Cursor::new(&bytes), bytes.len() as u64, &mut facts).expect("valid");
        assert_eq!(s.tensors, 2);
        assert_eq!(s.parameters, 35);
        assert_eq!(s.dominant_dtype.as_deref(), Some("BF16"));
        assert_eq!(facts.quantization.as_deref(), Some("BF16"));
        assert_eq!(facts.details["safetensors.format"], "pt");
        // No tensors at all is fine too.
        assert_eq!(run(&raw("{}", 0)).expect("valid").tensors, 0);
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(problem(&[1, 2, 3]).contains("needs 8 bytes"));
        assert!(problem(&raw("[1]", 0)).contains("not a JSON object"));
        assert!(problem(&raw("{\"a\":", 0)).contains("not valid JSON"));
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(problem(&huge).contains("at most"));
        let p = problem(&raw(
            r#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        ));
        assert!(p.contains("unknown dtype 'Q7'"), "{p}");
        let p = problem(&raw(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            4,
        ));
        assert!(p.contains("needs 8 bytes"), "{p}");
        let p = problem(&raw(
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            4,
        ));
        assert!(p.contains("not a size"), "{p}");
        let p = problem(&raw(r#"{"__metadata__":{"x":1}}"#, 0));
        assert!(p.contains("not a string"), "{p}");
    }

    #[test]
    fn offsets_must_tile_the_data() {
        let gap = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}"#;
        assert!(problem(&raw(gap, 5)).contains("gap"));
        let overlap = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#;
        assert!(problem(&raw(overlap, 3)).contains("overlaps"));
        let one = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
        assert!(problem(&raw(one, 3)).contains("cover 2 bytes"));
        assert!(problem(&raw(one, 1)).contains("truncated"));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = testing::file(&[("a", "F16", &[4]), ("b", "I8", &[3])]);
        for cut in 0..bytes.len() {
            assert!(run(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
