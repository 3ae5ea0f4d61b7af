//! A structural check of GGUF files, run in Rust before llama.cpp sees them.
//!
//! llama.cpp's own GGUF reader is careful, but not every inconsistency in a model file
//! ends in a clean error further down its loader: some end in a `GGML_ASSERT`, which
//! aborts the whole process, host included. So the plugin walks the file's header first
//! and refuses anything malformed with an `InvalidModel` error that names the file and
//! the problem:
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
//!   the data section: no tensor's bytes may lie past the end of the file.
//!
//! Only the header is read (a few megabytes at most, for large vocabularies); the
//! tensor data is never touched. Tensor types missing from [`ggml_type_layout`] (newer
//! quantisations) are not size-checked, so they still reach llama.cpp, which decides.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use runanywhere_plugin_api::EngineError;

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
/// Skips up to this size are done by reading through the buffer rather than seeking.
const SKIP_BY_READING: u64 = 64 * 1024;

// GGUF metadata value types.
const T_UINT32: u32 = 4;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// Facts gathered by a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GgufSummary {
    /// GGUF version (2 or 3).
    pub(crate) version: u32,
    /// Number of tensors.
    pub(crate) tensor_count: u64,
    /// Number of metadata key/value pairs.
    pub(crate) kv_count: u64,
    /// Size of the file in bytes.
    pub(crate) file_size: u64,
}

/// What is wrong with a file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GgufError {
    /// Byte offset at which the problem was found.
    pub(crate) offset: u64,
    /// What is wrong.
    pub(crate) problem: String,
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.problem, self.offset)
    }
}

/// Checks the model file at `path`: it must exist, be a non-empty regular file and have a
/// well-formed GGUF header whose tensors lie within the file. Every failure is an
/// `InvalidModel` error naming the file.
pub(crate) fn check_file(path: &Path) -> Result<GgufSummary, EngineError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            EngineError::invalid_model(format!("model file {shown} does not exist"))
        } else {
            EngineError::invalid_model(format!("cannot read model file {shown}: {e}"))
        }
    })?;
    if meta.is_dir() {
        return Err(EngineError::invalid_model(format!(
            "{shown} is a directory; the llama.cpp engine loads a single .gguf file"
        )));
    }
    if !meta.is_file() {
        return Err(EngineError::invalid_model(format!(
            "{shown} is not a regular file"
        )));
    }
    let len = meta.len();
    if len == 0 {
        return Err(EngineError::invalid_model(format!(
            "model file {shown} is empty"
        )));
    }
    let file = File::open(path)
        .map_err(|e| EngineError::invalid_model(format!("cannot open model file {shown}: {e}")))?;
    validate(BufReader::new(file), len)
        .map_err(|e| EngineError::invalid_model(format!("{shown} is not a valid GGUF file: {e}")))
}

/// Walks the GGUF header read from `inner`, a file of `len` bytes positioned at its start.
pub(crate) fn validate<R: Read + Seek>(inner: R, len: u64) -> Result<GgufSummary, GgufError> {
    let mut r = Reader { inner, pos: 0, len };
    if len == 0 {
        return Err(r.fail("the file is empty"));
    }

    // Magic and version.
    let magic = r.array::<4>("the GGUF magic")?;
    if magic != MAGIC {
        return Err(GgufError {
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

    // Metadata.
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut seen_keys: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..kv_count {
        let key = r.string(MAX_KEY_LEN, &format!("metadata key #{i}"))?;
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
        } else {
            r.skip_value(ty, &what)?;
        }
        if !seen_keys.insert(key) {
            return Err(r.fail(format!("metadata key '{name}' appears twice")));
        }
    }

    // Tensor infos.
    let mut tensors = Vec::with_capacity(usize::try_from(tensor_count.min(4096)).unwrap_or(0));
    let mut seen_names: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..tensor_count {
        let name_bytes = r.string(MAX_TENSOR_NAME, &format!("the name of tensor #{i}"))?;
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
        tensors.push(TensorInfo {
            name,
            dims,
            n_dims,
            ty,
            offset,
        });
    }

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
    for t in &tensors {
        let at = |problem: String| GgufError {
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
        let bytes = tensor_bytes(&t.dims, t.ty)
            .map_err(|problem| at(format!("tensor '{}' {problem}", t.name)))?
            .unwrap_or(0);
        let end = start
            .checked_add(bytes)
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
    }

    Ok(GgufSummary {
        version,
        tensor_count,
        kv_count,
        file_size: len,
    })
}

/// One tensor info from the header.
struct TensorInfo {
    name: String,
    dims: [u64; MAX_DIMS as usize],
    n_dims: u32,
    ty: u32,
    offset: u64,
}

/// `(elements per block, bytes per block)` of a ggml tensor type, from `type_traits` in
/// the vendored `ggml.c` (block structs in `ggml-common.h`). `None` for types this table
/// does not know, including removed ones (llama.cpp itself refuses those).
pub(crate) fn ggml_type_layout(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4
        41 => (128, 18),  // Q1_0
        42 => (64, 18),   // Q2_0
        _ => return None,
    })
}

/// Size in bytes of a tensor's data; `Ok(None)` for a type of unknown layout.
fn tensor_bytes(dims: &[u64; MAX_DIMS as usize], ty: u32) -> Result<Option<u64>, String> {
    let Some((block, block_bytes)) = ggml_type_layout(ty) else {
        return Ok(None);
    };
    if dims[0] % block != 0 {
        return Err(format!(
            "has {} elements per row, not a multiple of the block size {block} of ggml type {ty}",
            dims[0]
        ));
    }
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("has a shape {dims:?} whose element count overflows"))?;
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

/// A bounds-checked little-endian reader that tracks its position in the file.
struct Reader<R> {
    inner: R,
    /// Bytes consumed so far; never more than `len`.
    pos: u64,
    /// Size of the file.
    len: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn fail(&self, problem: impl Into<String>) -> GgufError {
        GgufError {
            offset: self.pos,
            problem: problem.into(),
        }
    }

    /// Fails unless `n` more bytes are left in the file.
    fn need(&self, n: u64, what: &str) -> Result<(), GgufError> {
        if n > self.remaining() {
            Err(self.fail(format!(
                "{what} needs {n} bytes but only {} remain in the file (truncated or corrupt)",
                self.remaining()
            )))
        } else {
            Ok(())
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        let result = self.inner.read_exact(&mut buf);
        result.map_err(|e| self.fail(format!("cannot read {what}: {e}")))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }

    /// Reads a GGUF string (u64 length, then bytes) of at most `max` bytes.
    fn string(&mut self, max: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        let n = self.u64(what)?;
        if n > max {
            return Err(self.fail(format!(
                "{what} claims a length of {n} bytes; at most {max} are allowed"
            )));
        }
        self.need(n, what)?;
        let size = usize::try_from(n).map_err(|_| self.fail(format!("{what} is too long")))?;
        let mut buf = vec![0u8; size];
        let result = self.inner.read_exact(&mut buf);
        result.map_err(|e| self.fail(format!("cannot read {what}: {e}")))?;
        self.pos += n;
        Ok(buf)
    }

    /// Skips `n` bytes, failing if the file has fewer left.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
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

    /// Skips a GGUF string (u64 length, then bytes).
    fn skip_string(&mut self, what: &str) -> Result<(), GgufError> {
        let n = self.u64(what)?;
        if n > MAX_STRING_LEN {
            return Err(self.fail(format!(
                "{what} contains a string of {n} bytes; at most {MAX_STRING_LEN} are allowed"
            )));
        }
        self.skip(n, what)
    }

    /// Skips a metadata value of type `ty`.
    fn skip_value(&mut self, ty: u32, what: &str) -> Result<(), GgufError> {
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
    fn skip_array(&mut self, depth: u32, what: &str) -> Result<(), GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.fail(format!(
                "{what} nests arrays more than {MAX_ARRAY_DEPTH} deep"
            )));
        }
        let elem = self.u32(what)?;
        let count = self.u64(what)?;
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

/// Builders for small GGUF files, shared by the tests of this crate.
#[cfg(test)]
pub(crate) mod testing {
    /// A metadata value to write.
    pub(crate) enum Value<'a> {
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
    pub(crate) struct TensorSpec<'a> {
        pub(crate) name: &'a str,
        pub(crate) dims: &'a [u64],
        pub(crate) ty: u32,
        pub(crate) offset: u64,
    }

    pub(crate) fn put_u32(b: &mut Vec<u8>, v: u32) {
        b.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn put_u64(b: &mut Vec<u8>, v: u64) {
        b.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn put_str(b: &mut Vec<u8>, s: &str) {
        put_u64(b, s.len() as u64);
        b.extend_from_slice(s.as_bytes());
    }

    /// A GGUF file (default alignment 32) with `data_len` bytes of tensor data.
    pub(crate) fn gguf(
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
    pub(crate) fn nested_array() -> Vec<u8> {
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
    pub(crate) fn tiny() -> Vec<u8> {
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

    use runanywhere_plugin_api::ErrorKind;

    use super::testing::*;
    use super::*;

    fn check(bytes: &[u8]) -> Result<GgufSummary, GgufError> {
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
        let dir = std::env::temp_dir();
        let err = check_file(&dir).expect_err("a directory");
        assert_eq!(err.kind(), ErrorKind::InvalidModel);
        assert!(err.message().contains(&dir.display().to_string()));
        assert!(err.message().contains("directory"));

        let missing = dir.join("runanywhere-no-such-model.gguf");
        let err = check_file(&missing).expect_err("a missing file");
        assert_eq!(err.kind(), ErrorKind::InvalidModel);
        assert!(err.message().contains("runanywhere-no-such-model.gguf"));

        let path = dir.join(format!(
            "runanywhere-gguf-check-{}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, b"").expect("write");
        let empty = check_file(&path).expect_err("an empty file");
        std::fs::write(&path, b"not a gguf file at all").expect("write");
        let garbage = check_file(&path).expect_err("a text file");
        std::fs::write(&path, tiny()).expect("write");
        let ok = check_file(&path);
        let _ = std::fs::remove_file(&path);
        assert!(empty.message().contains("empty"));
        assert!(garbage.message().contains("magic"));
        assert!(garbage.message().contains(&path.display().to_string()));
        assert!(ok.is_ok());
    }
}
