//! A structural check of GGUF files.
//!
//! llama.cpp's own GGUF reader is careful, but not every inconsistency in a model file
//! ends in a clean error further down its loader: some end in a `GGML_ASSERT`, which
//! aborts the whole process. So the file's header is walked in Rust first, and anything
//! malformed is refused with a message that names the problem:
//!
//! * the magic `GGUF` and a version of 2 or 3 (version 1 and byte-swapped, i.e.
//!   big-endian, files are refused, as llama.cpp does);
//! * the tensor and metadata counts, checked against what the file could possibly hold
//!   before anything is looped over;
//! * every metadata key/value: each string length and array count is checked against
//!   the bytes left in the file *before* anything is skipped or allocated (arrays of
//!   strings and nested arrays included, nesting up to [`MAX_ARRAY_DEPTH`]);
//! * `general.alignment`, which must be a power-of-two `uint32` (default 32);
//! * every tensor info (name, at most 4 dimensions, ggml type, offset) and the end of
//!   the data section: no tensor's bytes may lie past the end of the file;
//! * the hyperparameters and vocabulary facts llama.cpp asserts on (layer count, head
//!   counts, widths, epsilons, experts, duplicate or missing tokens): see [`crate::hparams`].
//!
//! Only the header is read (a few megabytes at most, for large vocabularies); the
//! tensor data is never touched. Tensor types missing from [`ggml_type`] (newer
//! quantisations) are not size-checked, so they still reach llama.cpp, which decides.
//!
//! On the way, the check collects the [`Facts`] `runanywhere verify` prints:
//! `general.architecture`, `general.name`, `{arch}.context_length`, the quantization
//! (`general.file_type`, else the tensor type holding most bytes), the parameter count
//! (the sum of the tensors' element counts) and the KV-cache size per token.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use crate::error::{FileError, FormatError};
use crate::facts::{kv_bytes_per_token, Facts, Tally};
use crate::hparams::{self, Hparams, TokenScan, Want};
use crate::reader::Reader;

const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const ALIGNMENT_KEY: &[u8] = b"general.alignment";
/// `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// llama.cpp refuses names of `GGML_MAX_NAME` (64) bytes or more.
const MAX_TENSOR_NAME: u64 = 63;
/// The GGUF spec limits keys to 2^16 - 1 bytes.
const MAX_KEY_LEN: u64 = 65_535;
/// llama.cpp's `GGUF_MAX_STRING_LENGTH`.
const MAX_STRING_LEN: u64 = 1 << 30;
/// How deeply arrays of arrays may nest (llama.cpp itself reads none).
const MAX_ARRAY_DEPTH: u32 = 8;
/// String values longer than this are skipped rather than kept as facts.
const MAX_FACT_LEN: u64 = 4096;
/// llama.cpp keeps the KV cache in F16 by default.
const KV_ELEMENT_BYTES: u64 = 2;

// GGUF metadata value types.
const T_UINT32: u32 = 4;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// String metadata kept as facts.
const FACT_STRINGS: [&str; 2] = ["general.architecture", "general.name"];
/// Integer metadata kept as facts: `general.file_type`, and these suffixes of
/// `{arch}.` keys.
const FACT_INT_SUFFIXES: [&str; 7] = [
    ".context_length",
    ".block_count",
    ".embedding_length",
    ".attention.head_count",
    ".attention.head_count_kv",
    ".attention.key_length",
    ".attention.value_length",
];
const FILE_TYPE_KEY: &str = "general.file_type";

/// Facts gathered by a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufSummary {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Number of metadata key/value pairs.
    pub kv_count: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
    /// What the metadata and tensor infos say about the model.
    pub facts: Facts,
}

/// Checks the model file at `path`: it must exist, be a non-empty regular file and have a
/// well-formed GGUF header whose tensors lie within the file.
pub fn check_file(path: &Path) -> Result<GgufSummary, FileError> {
    let len = crate::regular_file_len(path, "GGUF")?;
    let file = crate::fs::open_regular(path).map_err(|source| FileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    validate(BufReader::new(file), len).map_err(|source| FileError::Invalid {
        path: path.to_path_buf(),
        format: "GGUF",
        source,
    })
}

/// Walks the GGUF header read from `inner`, a file of `len` bytes positioned at its start.
pub fn validate<R: Read + Seek>(inner: R, len: u64) -> Result<GgufSummary, FormatError> {
    let mut facts = Facts::default();
    inspect(inner, len, &mut facts).map(|(version, tensor_count, kv_count)| GgufSummary {
        version,
        tensor_count,
        kv_count,
        file_size: len,
        facts,
    })
}

/// Like [`validate`], but records facts in `facts` as they are read, so a file that fails
/// still tells what was read before the problem. Returns the version, tensor count and
/// metadata count.
pub fn inspect<R: Read + Seek>(
    inner: R,
    len: u64,
    facts: &mut Facts,
) -> Result<(u32, u64, u64), FormatError> {
    let mut r = Reader::new(inner, len);
    if len == 0 {
        return Err(r.fail("the file is empty"));
    }

    // Magic and version.
    let magic = r.array::<4>("the GGUF magic")?;
    if magic != MAGIC {
        return Err(FormatError {
            offset: 0,
            problem: format!(
                "the file does not start with the GGUF magic \"GGUF\" (found {})",
                show_bytes(&magic)
            ),
        });
    }
    let version = r.u32("the GGUF version")?;
    match version {
        2 | 3 => {}
        0 => return Err(r.fail("GGUF version 0 is invalid")),
        1 => {
            return Err(r.fail(
                "GGUF version 1 is no longer supported by llama.cpp; re-convert the model",
            ))
        }
        v if v & 0xFFFF == 0 => {
            return Err(r.fail(format!(
                "GGUF version field {v:#010x} looks byte-swapped: big-endian GGUF files are not supported"
            )))
        }
        v => {
            return Err(r.fail(format!(
                "unsupported GGUF version {v} (llama.cpp reads versions 2 and 3)"
            )))
        }
    }
    facts.detail("gguf.version", version);

    // Counts. A key/value pair takes at least 13 bytes (key length, value type, a
    // one-byte value) and a tensor info at least 24 (name length, dimension count,
    // type, offset): counts that cannot fit are refused before anything loops over them.
    let tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the metadata count")?;
    let min_bytes = kv_count
        .checked_mul(13)
        .zip(tensor_count.checked_mul(24))
        .and_then(|(a, b)| a.checked_add(b));
    if !matches!(min_bytes, Some(n) if n <= r.remaining()) {
        return Err(r.fail(format!(
            "the header claims {tensor_count} tensors and {kv_count} metadata entries, \
             more than a {len}-byte file can hold"
        )));
    }
    facts.detail("gguf.metadata_entries", kv_count);

    // Metadata.
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut seen_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut ints: HashMap<String, u64> = HashMap::new();
    let mut hparams = Hparams::default();
    for i in 0..kv_count {
        let key = r.gguf_string(MAX_KEY_LEN, &format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(r.fail(format!("metadata key #{i} is empty")));
        }
        let name = String::from_utf8_lossy(&key).into_owned();
        let what = format!("the value of metadata key '{name}'");
        let ty = r.u32(&what)?;
        if key == ALIGNMENT_KEY {
            if ty != T_UINT32 {
                return Err(r.fail(format!(
                    "general.alignment must be a uint32 (GGUF type {T_UINT32}) but has type {ty}"
                )));
            }
            let a = r.u32(&what)?;
            if !a.is_power_of_two() {
                return Err(r.fail(format!("general.alignment is {a}, not a power of two")));
            }
            alignment = u64::from(a);
        } else if ty == T_STRING && FACT_STRINGS.contains(&name.as_str()) {
            if let Some(value) = r.short_string(&what)? {
                match name.as_str() {
                    "general.architecture" => facts.architecture = Some(value),
                    _ => facts.name = Some(value),
                }
            }
        } else if let Some(want) = hparams::wanted(&name) {
            let at = r.pos;
            match (want, ty) {
                (Want::Tokens, T_ARRAY) => hparams.tokens = Some(r.token_list(&what)?),
                (Want::Text, T_STRING) => {
                    if let Some(text) = r.short_string(&what)? {
                        if name == "tokenizer.ggml.model" {
                            facts.detail("gguf.tokenizer_model", &text);
                        }
                        hparams.insert(&name, at, hparams::Value::Str(text));
                    }
                }
                (Want::Number, _) => {
                    if let Some(value) = r.number(ty, &what)? {
                        if let hparams::Value::Int(v) = value {
                            if let (true, Ok(v)) = (is_fact_int(&name), u64::try_from(v)) {
                                ints.insert(name.clone(), v);
                            }
                        }
                        hparams.insert(&name, at, value);
                    }
                }
                _ => r.skip_value(ty, &what)?,
            }
        } else if is_fact_int(&name) && int_size(ty).is_some() {
            if let Some(value) = r.int_value(ty, &what)? {
                ints.insert(name.clone(), value);
            }
        } else {
            r.skip_value(ty, &what)?;
        }
        if !seen_keys.insert(key) {
            return Err(r.fail(format!("metadata key '{name}' appears twice")));
        }
    }
    facts.detail("gguf.alignment", alignment);
    metadata_facts(facts, &ints);

    // Tensor infos.
    let mut tensors = Vec::with_capacity(usize::try_from(tensor_count.min(4096)).unwrap_or(0));
    let mut seen_names: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..tensor_count {
        let name_bytes = r.gguf_string(MAX_TENSOR_NAME, &format!("the name of tensor #{i}"))?;
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        if !seen_names.insert(name_bytes) {
            return Err(r.fail(format!("tensor name '{name}' appears twice")));
        }
        let what = format!("the info of tensor '{name}'");
        let n_dims = r.u32(&what)?;
        if n_dims > MAX_DIMS {
            return Err(r.fail(format!(
                "tensor '{name}' has {n_dims} dimensions; at most {MAX_DIMS} are allowed"
            )));
        }
        let mut dims = [1u64; MAX_DIMS as usize];
        for dim in dims.iter_mut().take(n_dims as usize) {
            let d = r.u64(&what)?;
            if i64::try_from(d).is_err() {
                return Err(r.fail(format!(
                    "tensor '{name}' has a negative dimension ({})",
                    d as i64
                )));
            }
            *dim = d;
        }
        let ty = r.u32(&what)?;
        let offset = r.u64(&what)?;
        // ggml.c: GGML_ASSERT(c->type == GGML_TYPE_F32) for the rope frequency factors.
        if (name.starts_with("rope_freqs") || name.starts_with("rope_factors")) && ty != 0 {
            return Err(r.fail(format!(
                "tensor '{name}' has ggml type {ty}; rope frequency tensors must be F32 (0)"
            )));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            n_dims,
            ty,
            offset,
        });
    }
    facts.tensors = Some(tensor_count);

    // The data section starts at the next multiple of the alignment (when there are
    // tensors); tensor offsets are relative to it.
    let header_end = r.pos;
    let data_start = if tensor_count > 0 {
        align_up(header_end, alignment)
            .ok_or_else(|| r.fail("the data section offset overflows"))?
    } else {
        header_end
    };
    if data_start > len {
        return Err(r.fail(format!(
            "the tensor data would start at byte {data_start}, past the end of the {len}-byte file"
        )));
    }
    let mut parameters = 0u64;
    let mut types = Tally::default();
    for t in &tensors {
        let at = |problem: String| FormatError {
            offset: header_end,
            problem,
        };
        if t.offset % alignment != 0 {
            return Err(at(format!(
                "tensor '{}' has data offset {}, not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        let start = data_start
            .checked_add(t.offset)
            .ok_or_else(|| at(format!("the data offset of tensor '{}' overflows", t.name)))?;
        let elements = element_count(&t.dims)
            .map_err(|problem| at(format!("tensor '{}' {problem}", t.name)))?;
        let bytes = tensor_bytes(&t.dims, elements, t.ty)
            .map_err(|problem| at(format!("tensor '{}' {problem}", t.name)))?;
        let end = start
            .checked_add(bytes.unwrap_or(0))
            .ok_or_else(|| at(format!("the data of tensor '{}' overflows", t.name)))?;
        if end > len {
            return Err(at(format!(
                "the data of tensor '{}' (ggml type {}, shape {:?}) ends at byte {end}, \
                 but the file has only {len} bytes (truncated download?)",
                t.name,
                t.ty,
                &t.dims[..t.n_dims as usize]
            )));
        }
        parameters = parameters.saturating_add(elements);
        let type_name = ggml_type(t.ty).map_or("unknown", |g| g.name);
        types.add(type_name, bytes.unwrap_or(elements));
    }
    if tensor_count > 0 {
        facts.parameters = Some(parameters);
    }
    if facts.quantization.is_none() {
        facts.quantization = types.dominant();
    }
    hparams.check(facts.architecture.as_deref())?;
    Ok((version, tensor_count, kv_count))
}

/// Facts from the integer metadata gathered while walking the header.
fn metadata_facts(facts: &mut Facts, ints: &HashMap<String, u64>) {
    if let Some(&ft) = ints.get(FILE_TYPE_KEY) {
        if let Some(name) = u32::try_from(ft).ok().and_then(file_type_name) {
            facts.quantization = Some(name.to_string());
        }
    }
    let Some(arch) = facts.architecture.clone() else {
        return;
    };
    let get = |suffix: &str| ints.get(&format!("{arch}{suffix}")).copied();
    facts.context_length = get(".context_length");
    let heads = get(".attention.head_count").filter(|&h| h > 0);
    let head_dim = get(".embedding_length").zip(heads).map(|(e, h)| e / h);
    let key_dim = get(".attention.key_length").or(head_dim);
    let value_dim = get(".attention.value_length").or(key_dim);
    let kv_heads = get(".attention.head_count_kv").or(heads);
    if let (Some(layers), Some(kv_heads), Some(k), Some(v)) =
        (get(".block_count"), kv_heads, key_dim, value_dim)
    {
        facts.kv_bytes_per_token = kv_bytes_per_token(layers, kv_heads, k, v, KV_ELEMENT_BYTES);
    }
}

fn is_fact_int(key: &str) -> bool {
    key == FILE_TYPE_KEY || FACT_INT_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// One tensor info from the header.
struct TensorInfo {
    name: String,
    dims: [u64; MAX_DIMS as usize],
    n_dims: u32,
    ty: u32,
    offset: u64,
}

/// A ggml tensor type: its name and block layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    /// The type's name, e.g. `Q4_K`.
    pub name: &'static str,
    /// Elements per block.
    pub block: u64,
    /// Bytes per block.
    pub block_bytes: u64,
}

/// The ggml tensor type `ty`, from `type_traits` in llama.cpp's `ggml.c` (block structs in
/// `ggml-common.h`). `None` for types this table does not know, including removed ones
/// (llama.cpp itself refuses those).
pub fn ggml_type(ty: u32) -> Option<GgmlType> {
    let (name, block, block_bytes) = match ty {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        40 => ("NVFP4", 64, 36),
        41 => ("Q1_0", 128, 18),
        42 => ("Q2_0", 64, 18),
        _ => return None,
    };
    Some(GgmlType {
        name,
        block,
        block_bytes,
    })
}

/// The name of a `general.file_type` (`llama_ftype`) value.
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    // Bit 1024 (LLAMA_FTYPE_GUESSED) marks a type llama.cpp inferred.
    Some(match file_type & !1024 {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

/// The number of elements of a tensor of shape `dims`.
fn element_count(dims: &[u64; MAX_DIMS as usize]) -> Result<u64, String> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("has a shape {dims:?} whose element count overflows"))
}

/// Size in bytes of a tensor's data; `Ok(None)` for a type of unknown layout.
fn tensor_bytes(
    dims: &[u64; MAX_DIMS as usize],
    elements: u64,
    ty: u32,
) -> Result<Option<u64>, String> {
    let Some(GgmlType {
        block, block_bytes, ..
    }) = ggml_type(ty)
    else {
        return Ok(None);
    };
    if dims[0] % block != 0 {
        return Err(format!(
            "has {} elements per row, not a multiple of the block size {block} of ggml type {ty}",
            dims[0]
        ));
    }
    (elements / block)
        .checked_mul(block_bytes)
        .map(Some)
        .ok_or_else(|| format!("has a shape {dims:?} whose byte size overflows"))
}

/// Size of a scalar metadata value type, `None` for strings, arrays and unknown types.
fn scalar_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1), // uint8, int8, bool
        2 | 3 => Some(2),     // uint16, int16
        4..=6 => Some(4),     // uint32, int32, float32
        10..=12 => Some(8),   // uint64, int64, float64
        _ => None,
    }
}

/// Size of an integer metadata value type (signed or not), `None` for anything else.
fn int_size(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 => Some(1),
        2 | 3 => Some(2),
        4 | 5 => Some(4),
        10 | 11 => Some(8),
        _ => None,
    }
}

fn align_up(n: u64, alignment: u64) -> Option<u64> {
    let rem = n % alignment;
    if rem == 0 {
        Some(n)
    } else {
        n.checked_add(alignment - rem)
    }
}

fn show_bytes(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("\"{}\"", String::from_utf8_lossy(bytes))
    } else {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// GGUF values on the shared reader.
impl<R: Read + Seek> Reader<R> {
    /// Reads a GGUF string (u64 length, then bytes) of at most `max` bytes.
    fn gguf_string(&mut self, max: u64, what: &str) -> Result<Vec<u8>, FormatError> {
        let n = self.u64(what)?;
        if n > max {
            return Err(self.fail(format!(
                "{what} claims a length of {n} bytes; at most {max} are allowed"
            )));
        }
        self.bytes(n, what)
    }

    /// Reads a string value, or skips it (returning `None`) when it is longer than
    /// [`MAX_FACT_LEN`].
    fn short_string(&mut self, what: &str) -> Result<Option<String>, FormatError> {
        let n = self.u64(what)?;
        if n > MAX_STRING_LEN {
            return Err(self.fail(format!(
                "{what} contains a string of {n} bytes; at most {MAX_STRING_LEN} are allowed"
            )));
        }
        if n > MAX_FACT_LEN {
            self.skip(n, what)?;
            return Ok(None);
        }
        let bytes = self.bytes(n, what)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Reads an integer value of type `ty`; `None` for a negative one.
    fn int_value(&mut self, ty: u32, what: &str) -> Result<Option<u64>, FormatError> {
        let value = match ty {
            0 => Some(u64::from(self.u8(what)?)),
            1 => u64::try_from(self.u8(what)? as i8).ok(),
            2 => Some(u64::from(u16::from_le_bytes(self.array::<2>(what)?))),
            3 => u64::try_from(i16::from_le_bytes(self.array::<2>(what)?)).ok(),
            4 => Some(u64::from(self.u32(what)?)),
            5 => u64::try_from(self.u32(what)? as i32).ok(),
            10 => Some(self.u64(what)?),
            11 => u64::try_from(self.u64(what)? as i64).ok(),
            other => return Err(self.fail(format!("{what} is not an integer (type {other})"))),
        };
        Ok(value)
    }

    /// Reads a number of type `ty` for the hyperparameter checks: an integer of any
    /// width and sign, a float, or an array of integers (per-layer values). `None` (the
    /// value skipped) for other types, which llama.cpp refuses by itself.
    fn number(&mut self, ty: u32, what: &str) -> Result<Option<hparams::Value>, FormatError> {
        use hparams::Value;
        Ok(Some(match ty {
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array::<4>(what)?))),
            12 => Value::Float(f64::from_le_bytes(self.array::<8>(what)?)),
            T_ARRAY => {
                let elem = self.u32(what)?;
                let count = self.u64(what)?;
                // Per-layer arrays have one entry per layer (at most 512 in llama.cpp).
                if int_size(elem).is_none() || count > 4096 {
                    self.skip_array_body(elem, count, 0, what)?;
                    return Ok(None);
                }
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    values.push(self.signed_int(elem, what)?);
                }
                Value::Ints(values)
            }
            ty if int_size(ty).is_some() => Value::Int(self.signed_int(ty, what)?),
            _ => {
                self.skip_value(ty, what)?;
                return Ok(None);
            }
        }))
    }

    /// Reads an integer of type `ty`, keeping its sign.
    fn signed_int(&mut self, ty: u32, what: &str) -> Result<i128, FormatError> {
        Ok(match ty {
            0 => i128::from(self.u8(what)?),
            1 => i128::from(self.u8(what)? as i8),
            2 => i128::from(u16::from_le_bytes(self.array::<2>(what)?)),
            3 => i128::from(i16::from_le_bytes(self.array::<2>(what)?)),
            4 => i128::from(self.u32(what)?),
            5 => i128::from(self.u32(what)? as i32),
            10 => i128::from(self.u64(what)?),
            11 => i128::from(self.u64(what)? as i64),
            other => return Err(self.fail(format!("{what} is not an integer (type {other})"))),
        })
    }

    /// Reads the token list (an array of strings), scanning it for the vocabulary
    /// checks. An array of anything else is skipped (llama.cpp refuses it).
    fn token_list(&mut self, what: &str) -> Result<TokenScan, FormatError> {
        let offset = self.pos;
        let elem = self.u32(what)?;
        let count = self.u64(what)?;
        let mut scan = TokenScan::new(offset);
        if elem != T_STRING {
            self.skip_array_body(elem, count, 0, what)?;
            return Ok(scan);
        }
        if count > hparams::MAX_TOKENS {
            return Err(self.fail(format!(
                "{what} lists {count} tokens, more than any model has (at most {})",
                hparams::MAX_TOKENS
            )));
        }
        let min_total = count
            .checked_mul(8)
            .ok_or_else(|| self.fail(format!("{what} claims {count} elements, which overflows")))?;
        self.need(min_total, what)?;
        for _ in 0..count {
            let token = self.gguf_string(MAX_STRING_LEN, what)?;
            scan.add(token);
        }
        Ok(scan)
    }

    /// Skips a GGUF string (u64 length, then bytes).
    fn skip_string(&mut self, what: &str) -> Result<(), FormatError> {
        let n = self.u64(what)?;
        if n > MAX_STRING_LEN {
            return Err(self.fail(format!(
                "{what} contains a string of {n} bytes; at most {MAX_STRING_LEN} are allowed"
            )));
        }
        self.skip(n, what)
    }

    /// Skips a metadata value of type `ty`.
    fn skip_value(&mut self, ty: u32, what: &str) -> Result<(), FormatError> {
        if let Some(size) = scalar_size(ty) {
            return self.skip(size, what);
        }
        match ty {
            T_STRING => self.skip_string(what),
            T_ARRAY => self.skip_array(0, what),
            other => Err(self.fail(format!("{what} has unknown GGUF value type {other}"))),
        }
    }

    /// Skips an array: element type, element count, elements. `depth` counts the arrays
    /// this one is nested in.
    fn skip_array(&mut self, depth: u32, what: &str) -> Result<(), FormatError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.fail(format!(
                "{what} nests arrays more than {MAX_ARRAY_DEPTH} deep"
            )));
        }
        let elem = self.u32(what)?;
        let count = self.u64(what)?;
        self.skip_array_body(elem, count, depth, what)
    }

    /// Skips the elements of an array whose element type and count were read.
    fn skip_array_body(
        &mut self,
        elem: u32,
        count: u64,
        depth: u32,
        what: &str,
    ) -> Result<(), FormatError> {
        if let Some(size) = scalar_size(elem) {
            let total = count.checked_mul(size).ok_or_else(|| {
                self.fail(format!("{what} claims {count} elements, which overflows"))
            })?;
            return self.skip(total, what);
        }
        // Strings take at least 8 bytes (their length), nested arrays at least 12 (type and
        // count): a count that cannot fit fails here, before any looping.
        let min_size = match elem {
            T_STRING => 8,
            T_ARRAY => 12,
            other => {
                return Err(self.fail(format!(
                    "{what} is an array of unknown GGUF value type {other}"
                )))
            }
        };
        let min_total = count
            .checked_mul(min_size)
            .ok_or_else(|| self.fail(format!("{what} claims {count} elements, which overflows")))?;
        self.need(min_total, what)?;
        for _ in 0..count {
            if elem == T_STRING {
                self.skip_string(what)?;
            } else {
                self.skip_array(depth + 1, what)?;
            }
        }
        Ok(())
    }
}

/// Builders for small GGUF files, for tests (here and, with the `testing` feature, in
/// other crates).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    /// A metadata value to write.
    pub enum Value<'a> {
        /// A `uint32`.
        U32(u32),
        /// A string.
        Str(&'a str),
        /// An array of strings.
        StrArray(&'a [&'a str]),
        /// Any type code followed by raw bytes (to write malformed values).
        Raw(u32, Vec<u8>),
    }

    /// A tensor info to write.
    pub struct TensorSpec<'a> {
        /// The tensor's name.
        pub name: &'a str,
        /// Its shape.
        pub dims: &'a [u64],
        /// Its ggml type.
        pub ty: u32,
        /// Its data offset, relative to the data section.
        pub offset: u64,
    }

    /// Appends a little-endian `u32`.
    pub fn put_u32(b: &mut Vec<u8>, v: u32) {
        b.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a little-endian `u64`.
    pub fn put_u64(b: &mut Vec<u8>, v: u64) {
        b.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a GGUF string (length, then bytes).
    pub fn put_str(b: &mut Vec<u8>, s: &str) {
        put_u64(b, s.len() as u64);
        b.extend_from_slice(s.as_bytes());
    }

    /// A GGUF file (default alignment 32) with `data_len` bytes of tensor data.
    pub fn gguf(
        version: u32,
        kvs: &[(&str, Value<'_>)],
        tensors: &[TensorSpec<'_>],
        data_len: usize,
    ) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        put_u32(&mut b, version);
        put_u64(&mut b, tensors.len() as u64);
        put_u64(&mut b, kvs.len() as u64);
        for (key, value) in kvs {
            put_str(&mut b, key);
            match value {
                Value::U32(v) => {
                    put_u32(&mut b, 4);
                    put_u32(&mut b, *v);
                }
                Value::Str(s) => {
                    put_u32(&mut b, 8);
                    put_str(&mut b, s);
                }
                Value::StrArray(items) => {
                    put_u32(&mut b, 9);
                    put_u32(&mut b, 8);
                    put_u64(&mut b, items.len() as u64);
                    for s in *items {
                        put_str(&mut b, s);
                    }
                }
                Value::Raw(ty, bytes) => {
                    put_u32(&mut b, *ty);
                    b.extend_from_slice(bytes);
                }
            }
        }
        for t in tensors {
            put_str(&mut b, t.name);
            put_u32(&mut b, t.dims.len() as u32);
            for d in t.dims {
                put_u64(&mut b, *d);
            }
            put_u32(&mut b, t.ty);
            put_u64(&mut b, t.offset);
        }
        if !tensors.is_empty() {
            while b.len() % 32 != 0 {
                b.push(0);
            }
        }
        b.resize(b.len() + data_len, 0xAB);
        b
    }

    /// The bytes of a nested array value `[[1u8, 2u8], [7i32]]` (after its type code).
    pub fn nested_array() -> Vec<u8> {
        let mut b = Vec::new();
        put_u32(&mut b, 9); // elements are arrays
        put_u64(&mut b, 2);
        put_u32(&mut b, 0); // [u8; 2]
        put_u64(&mut b, 2);
        b.extend_from_slice(&[1, 2]);
        put_u32(&mut b, 5); // [i32; 1]
        put_u64(&mut b, 1);
        put_u32(&mut b, 7);
        b
    }

    /// A small valid file: four metadata entries (a string, the alignment, a string array
    /// and a nested array) and two tensors (F32 4×2 and Q8_0 32) with their data.
    pub fn tiny() -> Vec<u8> {
        gguf(
            3,
            &[
                ("general.architecture", Value::Str("llama")),
                ("general.alignment", Value::U32(32)),
                ("tokenizer.ggml.tokens", Value::StrArray(&["a", "b", "<s>"])),
                ("test.nested", Value::Raw(9, nested_array())),
            ],
            &[
                TensorSpec {
                    name: "a.weight",
                    dims: &[4, 2],
                    ty: 0,
                    offset: 0,
                },
                TensorSpec {
                    name: "b.weight",
                    dims: &[32],
                    ty: 8,
                    offset: 32,
                },
            ],
            32 + 34,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::testing::*;
    use super::*;

    fn check(bytes: &[u8]) -> Result<GgufSummary, FormatError> {
        validate(Cursor::new(bytes), bytes.len() as u64)
    }

    fn problem(bytes: &[u8]) -> String {
        match check(bytes) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.problem,
        }
    }

    /// A file header with no tensors and one metadata entry whose key is `key` and whose
    /// type and value bytes are `rest`, followed by `pad` zero bytes.
    fn one_kv(key_len: u64, key: &[u8], rest: &[u8], pad: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        put_u32(&mut b, 3);
        put_u64(&mut b, 0);
        put_u64(&mut b, 1);
        put_u64(&mut b, key_len);
        b.extend_from_slice(key);
        b.extend_from_slice(rest);
        b.resize(b.len() + pad, 0);
        b
    }

    #[test]
    fn a_tiny_valid_file_passes() {
        let bytes = tiny();
        let summary = check(&bytes).expect("valid");
        assert_eq!(summary.version, 3);
        assert_eq!(summary.tensor_count, 2);
        assert_eq!(summary.kv_count, 4);
        assert_eq!(summary.file_size, bytes.len() as u64);
        // Version 2 reads the same way; a file without tensors is fine too.
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert!(check(&v2).is_ok());
        let header_only = gguf(3, &[("general.architecture", Value::Str("llama"))], &[], 0);
        assert_eq!(check(&header_only).expect("valid").tensor_count, 0);
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert!(problem(&[]).contains("empty"));
    }

    #[test]
    fn a_wrong_magic_is_refused() {
        let mut bytes = tiny();
        bytes[..4].copy_from_slice(b"GGML");
        let p = problem(&bytes);
        assert!(p.contains("magic") && p.contains("GGML"), "{p}");
        assert!(problem(b"\x00\x01\x02\x03rest of it").contains("00 01 02 03"));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = tiny();
        for cut in 0..bytes.len() {
            assert!(
                check(&bytes[..cut]).is_err(),
                "a file cut at {cut} of {} bytes passed",
                bytes.len()
            );
        }
    }

    #[test]
    fn bad_versions_are_refused() {
        for (version, needle) in [
            (1u32, "version 1"),
            (4, "unsupported"),
            (0, "version 0"),
            (0x0300_0000, "byte-swapped"),
        ] {
            let mut bytes = tiny();
            bytes[4..8].copy_from_slice(&version.to_le_bytes());
            let p = problem(&bytes);
            assert!(p.contains(needle), "version {version:#x}: {p}");
        }
    }

    #[test]
    fn huge_counts_fail_at_once() {
        let mut bytes = tiny();
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // kv count
        assert!(problem(&bytes).contains("more than"));
        let mut bytes = tiny();
        bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes()); // tensor count
        assert!(problem(&bytes).contains("more than"));
    }

    #[test]
    fn huge_string_lengths_are_refused() {
        // A key claiming a terabyte.
        let p = problem(&one_kv(1 << 40, b"general.name", &[], 64));
        assert!(p.contains("key") && p.contains("at most"), "{p}");
        // A string value claiming more than the file holds.
        let mut rest = Vec::new();
        put_u32(&mut rest, 8);
        put_u64(&mut rest, 1 << 20);
        let p = problem(&one_kv(12, b"general.name", &rest, 64));
        assert!(p.contains("general.name") && p.contains("remain"), "{p}");
        // And one claiming nearly 2^64 bytes.
        let mut rest = Vec::new();
        put_u32(&mut rest, 8);
        put_u64(&mut rest, u64::MAX);
        assert!(check(&one_kv(12, b"general.name", &rest, 64)).is_err());
    }

    #[test]
    fn huge_array_counts_are_refused() {
        for elem in [0u32, 10, 8, 9] {
            let mut rest = Vec::new();
            put_u32(&mut rest, 9);
            put_u32(&mut rest, elem);
            put_u64(&mut rest, u64::MAX / 2);
            assert!(
                check(&one_kv(4, b"x.xs", &rest, 64)).is_err(),
                "array of type {elem}"
            );
        }
        // An unknown element type.
        let mut rest = Vec::new();
        put_u32(&mut rest, 9);
        put_u32(&mut rest, 77);
        put_u64(&mut rest, 1);
        assert!(problem(&one_kv(4, b"x.xs", &rest, 64)).contains("unknown"));
    }

    #[test]
    fn deeply_nested_arrays_are_refused() {
        let mut rest = Vec::new();
        put_u32(&mut rest, 9);
        for _ in 0..MAX_ARRAY_DEPTH + 1 {
            put_u32(&mut rest, 9);
            put_u64(&mut rest, 1);
        }
        assert!(problem(&one_kv(4, b"x.xs", &rest, 64)).contains("deep"));
    }

    #[test]
    fn alignment_must_be_a_power_of_two_uint32() {
        let kv = |v: Value<'static>| gguf(3, &[("general.alignment", v)], &[], 0);
        assert!(problem(&kv(Value::U32(3))).contains("power of two"));
        assert!(problem(&kv(Value::U32(0))).contains("power of two"));
        assert!(problem(&kv(Value::Str("32"))).contains("uint32"));
        assert!(check(&kv(Value::U32(64))).is_ok());
    }

    #[test]
    fn tensor_infos_are_checked() {
        let one = |dims: &[u64], ty: u32, offset: u64, data: usize| {
            gguf(
                3,
                &[],
                &[TensorSpec {
                    name: "t",
                    dims,
                    ty,
                    offset,
                }],
                data,
            )
        };
        assert!(check(&one(&[4], 0, 0, 16)).is_ok());
        assert!(problem(&one(&[1, 1, 1, 1, 1], 0, 0, 16)).contains("dimensions"));
        assert!(problem(&one(&[1024, 1024], 0, 0, 16)).contains("ends at byte"));
        assert!(problem(&one(&[4], 0, 32, 16)).contains("ends at byte"));
        assert!(problem(&one(&[4], 0, 7, 64)).contains("alignment"));
        assert!(problem(&one(&[31], 8, 0, 64)).contains("block size"));
        assert!(problem(&one(&[u64::MAX], 0, 0, 16)).contains("negative"));
        assert!(problem(&one(&[1 << 40, 1 << 40], 0, 0, 16)).contains("overflows"));
        // A type this table does not know is not size-checked.
        assert!(check(&one(&[1 << 30], 200, 0, 0)).is_ok());
        // Names are bounded and unique.
        let long = "n".repeat(64);
        let bytes = gguf(
            3,
            &[],
            &[TensorSpec {
                name: &long,
                dims: &[1],
                ty: 0,
                offset: 0,
            }],
            4,
        );
        assert!(problem(&bytes).contains("at most 63"));
        let t = |offset| TensorSpec {
            name: "same",
            dims: &[8],
            ty: 0,
            offset,
        };
        assert!(problem(&gguf(3, &[], &[t(0), t(32)], 64)).contains("twice"));
    }

    #[test]
    fn duplicate_and_empty_keys_are_refused() {
        let dup = gguf(3, &[("a.b", Value::U32(1)), ("a.b", Value::U32(2))], &[], 0);
        assert!(problem(&dup).contains("twice"));
        assert!(problem(&gguf(3, &[("", Value::U32(1))], &[], 0)).contains("empty"));
    }

    #[test]
    fn check_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_file(dir.path()).expect_err("a directory");
        assert!(matches!(err, FileError::Directory { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));

        let missing = dir.path().join("runanywhere-no-such-model.gguf");
        let err = check_file(&missing).expect_err("a missing file");
        assert!(matches!(err, FileError::NotFound(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("model file {} does not exist", missing.display())
        );

        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"").expect("write");
        let empty = check_file(&path).expect_err("an empty file");
        assert!(matches!(empty, FileError::Empty(_)), "{empty}");
        std::fs::write(&path, b"not a gguf file at all").expect("write");
        let garbage = check_file(&path).expect_err("a text file");
        let message = garbage.to_string();
        assert!(message.contains("magic"), "{message}");
        assert!(message.starts_with(&format!("{} is not a valid GGUF file: ", path.display())));
        std::fs::write(&path, tiny()).expect("write");
        assert!(check_file(&path).is_ok());
    }

    #[test]
    fn facts_are_collected_from_metadata_and_tensors() {
        let bytes = gguf(
            3,
            &[
                ("general.architecture", Value::Str("llama")),
                ("general.name", Value::Str("tiny")),
                ("general.file_type", Value::U32(7)),
                ("llama.context_length", Value::U32(2048)),
                ("llama.block_count", Value::U32(2)),
                ("llama.embedding_length", Value::U32(64)),
                ("llama.attention.head_count", Value::U32(8)),
                ("llama.attention.head_count_kv", Value::U32(4)),
            ],
            &[
                TensorSpec {
                    name: "a.weight",
                    dims: &[4, 2],
                    ty: 0,
                    offset: 0,
                },
                TensorSpec {
                    name: "b.weight",
                    dims: &[32],
                    ty: 8,
                    offset: 32,
                },
            ],
            32 + 34,
        );
        let facts = check(&bytes).expect("valid").facts;
        assert_eq!(facts.architecture.as_deref(), Some("llama"));
        assert_eq!(facts.name.as_deref(), Some("tiny"));
        assert_eq!(facts.quantization.as_deref(), Some("Q8_0"));
        assert_eq!(facts.context_length, Some(2048));
        assert_eq!(facts.parameters, Some(8 + 32));
        assert_eq!(facts.tensors, Some(2));
        // 2 layers × 4 KV heads × (8 + 8) dims × 2 bytes.
        assert_eq!(facts.kv_bytes_per_token, Some(2 * 4 * 16 * 2));
        assert_eq!(facts.details["gguf.version"], "3");

        // Without general.file_type, the type holding the most bytes names the quantization.
        assert_eq!(
            check(&tiny()).expect("valid").facts.quantization.as_deref(),
            Some("Q8_0")
        );
        // A failing file keeps what was read before the problem.
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 1);
        let mut partial = Facts::default();
        assert!(inspect(Cursor::new(&cut), cut.len() as u64, &mut partial).is_err());
        assert_eq!(partial.architecture.as_deref(), Some("llama"));
        assert_eq!(partial.context_length, Some(2048));
    }

    #[test]
    fn file_types_and_ggml_types_have_names() {
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
        assert_eq!(file_type_name(1024 | 7), Some("Q8_0"));
        assert_eq!(file_type_name(4), None);
        assert_eq!(
            ggml_type(12).map(|t| (t.name, t.block, t.block_bytes)),
            Some(("Q4_K", 256, 144))
        );
        assert_eq!(ggml_type(4), None);
    }
}
