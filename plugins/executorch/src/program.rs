//! An open ExecuTorch program and the reading of its LLM interface.
//!
//! `export_llama` (and optimum-executorch) programs have a `forward(tokens [1, T] i64,
//! input_pos [1] i64) -> logits` method with the KV cache in the program's mutable
//! state, and metadata methods that each return one number (`get_max_seq_len`,
//! `get_vocab_size`, `use_kv_cache`, `get_bos_id`, ...). [`Interface::read`] checks all
//! of that against the program's own method descriptions, so a program that is not such
//! an export is refused as `unsupported_format`, naming what it lacks, before anything
//! runs.

use std::ffi::c_char;
use std::path::Path;

use serde::Deserialize;

use crate::error::{EtError, Result};
use crate::runtime::{c_string, take_error, RawModel, Runtime};

/// ExecuTorch scalar type codes (PyTorch's `ScalarType`).
const DTYPE_INT: i32 = 3;
const DTYPE_LONG: i32 = 4;
const DTYPE_FLOAT: i32 = 6;

/// One value of a method's signature, as the shim describes it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Value {
    pub(crate) tag: String,
    #[serde(default)]
    pub(crate) dtype: Option<i32>,
    #[serde(default)]
    pub(crate) sizes: Vec<i64>,
}

/// A method's signature.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Method {
    pub(crate) name: String,
    pub(crate) inputs: Vec<Value>,
    pub(crate) outputs: Vec<Value>,
}

/// A loaded program. Not thread-safe (ExecuTorch's `Module` is not): the model keeps it
/// behind a lock.
pub(crate) struct Program {
    runtime: Runtime,
    raw: *mut RawModel,
}

// SAFETY: the program is used by one thread at a time (the model's mutex); ExecuTorch's
// Module has no thread affinity.
unsafe impl Send for Program {}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `ra_et_open` and is freed once.
        unsafe { (self.runtime.shim.free)(self.raw) };
    }
}

impl Program {
    /// Opens the program at `path` (memory-mapped; the FlatBuffer is fully verified).
    pub(crate) fn open(runtime: &Runtime, path: &Path) -> Result<Program> {
        let c_path = c_string("the model path", &path.to_string_lossy())?;
        let mut raw: *mut RawModel = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointers; the shim never throws.
        let rc = unsafe { (runtime.shim.open)(c_path.as_ptr(), &mut raw, &mut err) };
        if rc != 0 || raw.is_null() {
            let message = take_error(&runtime.shim, err);
            return Err(EtError::InvalidModel(format!(
                "{}: ExecuTorch cannot read this program: {message}",
                path.display()
            )));
        }
        Ok(Program {
            runtime: runtime.clone(),
            raw,
        })
    }

    /// The signatures of every method.
    pub(crate) fn methods(&mut self) -> Result<Vec<Method>> {
        let mut json: *mut c_char = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `raw` is live; out-pointers are valid.
        let rc = unsafe { (self.runtime.shim.describe)(self.raw, &mut json, &mut err) };
        if rc != 0 || json.is_null() {
            return Err(EtError::InvalidModel(take_error(&self.runtime.shim, err)));
        }
        let text = take_error(&self.runtime.shim, json);
        serde_json::from_str(&text)
            .map_err(|e| EtError::Run(format!("the shim described the methods as {text:?}: {e}")))
    }

    /// Prepares `method` (memory planning, delegate initialisation, operator lookup).
    pub(crate) fn load_method(&mut self, method: &str) -> Result<()> {
        let name = c_string("a method name", method)?;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `raw` is live; valid C string and out-pointer.
        let rc = unsafe { (self.runtime.shim.load_method)(self.raw, name.as_ptr(), &mut err) };
        if rc != 0 {
            return Err(EtError::InvalidModel(take_error(&self.runtime.shim, err)));
        }
        Ok(())
    }

    /// Runs the input-less metadata method `method` and returns its number.
    pub(crate) fn scalar(&mut self, method: &str) -> Result<Number> {
        let name = c_string("a method name", method)?;
        let (mut kind, mut int, mut float) = (0, 0i64, 0f64);
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `raw` is live; valid C string and out-pointers.
        let rc = unsafe {
            (self.runtime.shim.call_scalar)(
                self.raw,
                name.as_ptr(),
                &mut kind,
                &mut int,
                &mut float,
                &mut err,
            )
        };
        if rc != 0 {
            return Err(EtError::InvalidModel(take_error(&self.runtime.shim, err)));
        }
        Ok(if kind == 1 {
            Number::Int(int)
        } else {
            Number::Float(float)
        })
    }

    /// Runs `forward` on `tokens` at positions `pos..`, writing the last token's logits.
    pub(crate) fn forward(
        &mut self,
        tokens: &[i64],
        pos: i64,
        wide: bool,
        logits: &mut Vec<f32>,
        vocab: usize,
    ) -> Result<()> {
        logits.resize(vocab, 0.0);
        let mut written = 0usize;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `raw` is live; `tokens` and `logits` are valid for their lengths; the
        // shim writes at most `vocab` floats.
        let rc = unsafe {
            (self.runtime.shim.forward)(
                self.raw,
                tokens.as_ptr(),
                tokens.len(),
                pos,
                i32::from(wide),
                logits.as_mut_ptr(),
                logits.len(),
                &mut written,
                &mut err,
            )
        };
        if rc != 0 {
            return Err(EtError::Run(take_error(&self.runtime.shim, err)));
        }
        logits.truncate(written);
        Ok(())
    }
}

/// A metadata method's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn as_int(self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(i),
            Number::Float(_) => None,
        }
    }
}

/// How to drive the program: what [`Interface::read`] found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Interface {
    /// Logits per position.
    pub(crate) vocab: u32,
    /// Positions the KV cache holds (`get_max_seq_len`).
    pub(crate) max_seq_len: u32,
    /// Most tokens one `forward` call takes (the tokens input's upper bound).
    pub(crate) max_chunk: usize,
    /// Whether the token and position inputs are int64 (else int32).
    pub(crate) wide: bool,
    /// BOS and EOS ids the program records (`get_bos_id`, `get_eos_id(s)`).
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Vec<u32>,
    /// The methods, for the model's facts.
    pub(crate) methods: Vec<String>,
}

impl Interface {
    /// Reads and checks the LLM interface of `program`; `path` is for messages.
    pub(crate) fn read(program: &mut Program, path: &Path) -> Result<Interface> {
        let methods = program.methods()?;
        let names: Vec<String> = methods.iter().map(|m| m.name.clone()).collect();
        let unsupported = |what: String| {
            EtError::Unsupported(format!(
                "{}: not an LLM export this engine can run: {what} (its methods: {}); export with \
                 executorch's export_llama -kv (or optimum-executorch)",
                path.display(),
                names.join(", ")
            ))
        };
        let forward = methods
            .iter()
            .find(|m| m.name == "forward")
            .ok_or_else(|| unsupported("it has no forward method".into()))?;
        let has = |name: &str| {
            methods
                .iter()
                .any(|m| m.name == name && m.inputs.is_empty())
        };
        let mut meta = |name: &str| -> Result<Option<Number>> {
            if has(name) {
                program.scalar(name).map(Some)
            } else {
                Ok(None)
            }
        };
        if meta("use_kv_cache")?.and_then(Number::as_int) == Some(0) {
            return Err(unsupported(
                "it was exported without a KV cache (use_kv_cache is false)".into(),
            ));
        }
        if meta("use_sdpa_with_kv_cache")?.and_then(Number::as_int) == Some(1) {
            // The custom sdpa_with_kv_cache op is not in the stock kernel libraries; the
            // program would fail at load with a missing operator.
            tracing::debug!("the program uses the custom sdpa_with_kv_cache op");
        }
        let signature = describe_signature(forward);
        let [tokens, positions] = forward.inputs.as_slice() else {
            return Err(unsupported(format!(
                "forward takes {} ({}), not (tokens [1, T], input_pos [1])",
                forward.inputs.len(),
                signature
            )));
        };
        let int_tensor =
            |v: &Value| v.tag == "Tensor" && matches!(v.dtype, Some(DTYPE_INT | DTYPE_LONG));
        if !int_tensor(tokens) || !int_tensor(positions) || tokens.dtype != positions.dtype {
            return Err(unsupported(format!(
                "forward's inputs are {signature}, not two integer tensors (tokens, input_pos)"
            )));
        }
        if tokens.sizes.len() != 2
            || tokens.sizes[0] != 1
            || tokens.sizes[1] < 1
            || positions.sizes != [1]
        {
            return Err(unsupported(format!(
                "forward's inputs are {signature}, not tokens [1, T] and input_pos [1]"
            )));
        }
        let logits = forward
            .outputs
            .first()
            .filter(|v| v.tag == "Tensor" && v.dtype == Some(DTYPE_FLOAT) && !v.sizes.is_empty())
            .ok_or_else(|| {
                unsupported(format!("forward returns {signature}, not float32 logits"))
            })?;
        let width = *logits.sizes.last().unwrap_or(&0);
        let vocab = match meta("get_vocab_size")?.and_then(Number::as_int) {
            Some(v) if v != width => {
                return Err(EtError::InvalidModel(format!(
                    "{}: get_vocab_size says {v}, but forward returns {width} logits per token",
                    path.display()
                )))
            }
            _ => width,
        };
        let vocab = u32::try_from(vocab)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                EtError::InvalidModel(format!(
                    "{}: forward returns {width} logits",
                    path.display()
                ))
            })?;
        let chunk = tokens.sizes[1];
        // The cache's length: `get_max_context_len` where the exporter writes it (newer
        // ones do; `get_max_seq_len` is then the per-call bound), else `get_max_seq_len`.
        let context = match meta("get_max_context_len")?.and_then(Number::as_int) {
            Some(n) => Some(n),
            None => meta("get_max_seq_len")?.and_then(Number::as_int),
        };
        let max_seq_len = match context {
            Some(n) if n > 0 => n,
            Some(n) => {
                return Err(EtError::InvalidModel(format!(
                    "{}: get_max_seq_len is {n}",
                    path.display()
                )))
            }
            // Without the metadata, the tokens input's bound is the safe limit.
            None => chunk,
        };
        let max_seq_len = u32::try_from(max_seq_len).unwrap_or(u32::MAX);
        let dynamic = meta("enable_dynamic_shape")?.and_then(Number::as_int);
        let max_chunk = if dynamic == Some(0) {
            if chunk != 1 {
                return Err(unsupported(format!(
                    "forward takes exactly {chunk} tokens per call (a static shape), which cannot \
                     continue a sequence one token at a time"
                )));
            }
            1
        } else {
            usize::try_from(chunk)
                .unwrap_or(1)
                .min(max_seq_len as usize)
                .max(1)
        };
        let id = |n: Option<Number>| {
            n.and_then(Number::as_int)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v < vocab)
        };
        let bos = id(meta("get_bos_id")?);
        let eos: Vec<u32> = ["get_eos_id", "get_eos_ids"]
            .iter()
            .map(|m| meta(m))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter_map(id)
            .collect();
        program.load_method("forward").map_err(|e| match e {
            EtError::InvalidModel(m) => EtError::InvalidModel(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(Interface {
            vocab,
            max_seq_len,
            max_chunk,
            wide: tokens.dtype == Some(DTYPE_LONG),
            bos,
            eos,
            methods: names,
        })
    }
}

/// `(Tensor int64 [1, 255], Tensor int64 [1]) -> (Tensor float32 [1, 512])`.
fn describe_signature(m: &Method) -> String {
    let value = |v: &Value| {
        let dtype = match v.dtype {
            Some(DTYPE_INT) => " int32",
            Some(DTYPE_LONG) => " int64",
            Some(DTYPE_FLOAT) => " float32",
            Some(_) => " (other type)",
            None => "",
        };
        let sizes = if v.tag == "Tensor" {
            format!(" {:?}", v.sizes)
        } else {
            String::new()
        };
        format!("{}{dtype}{sizes}", v.tag)
    };
    let list = |vs: &[Value]| vs.iter().map(value).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(&m.inputs), list(&m.outputs))
}
