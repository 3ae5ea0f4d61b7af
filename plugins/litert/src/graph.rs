//! A TFLite interpreter over a litert-torch decoder export, and the reading of its
//! signatures.
//!
//! litert-torch's generative exports have signatures `prefill_<P>` (one or more prompt
//! lengths) and `decode`, all with inputs `tokens` (int32 [1, P]), `input_pos` (int32
//! [P]) and `kv_cache_k_<i>` / `kv_cache_v_<i>` (float32 [1, S, kv_heads, head_dim]),
//! and outputs `logits` (float32 [1, P, V]) and the updated caches under the same names.
//! [`Graph::open`] reads names and shapes from the model itself and refuses anything
//! else as `unsupported_format`, naming what is missing.

use std::ffi::CString;
use std::path::Path;

use crate::error::{LiteRtError, Result};
use crate::runtime::{c_str, Handle, Runtime, TYPE_FLOAT32, TYPE_INT32};

/// One signature runner and its tensors.
pub(crate) struct Signature {
    /// The signature key (`prefill_32`, `decode`).
    pub(crate) key: String,
    /// Tokens per call (P).
    pub(crate) tokens: usize,
    runner: Handle,
    input_tokens: Handle,
    input_pos: Handle,
    logits: Handle,
    /// (input, output) cache tensors, in `Graph::cache_names` order.
    caches: Vec<(Handle, Handle)>,
}

/// The model, its interpreter and signatures. Not thread-safe: the model keeps it
/// behind a lock.
pub(crate) struct Graph {
    runtime: Runtime,
    model: Handle,
    options: Handle,
    interpreter: Handle,
    /// The prefill signatures, by increasing length, then `decode` (P = 1) last.
    pub(crate) signatures: Vec<Signature>,
    /// The cache tensors' names and element counts.
    pub(crate) cache_names: Vec<String>,
    pub(crate) cache_elements: Vec<usize>,
    /// Positions the cache holds (S).
    pub(crate) cache_len: usize,
    /// Logits per position.
    pub(crate) vocab: usize,
}

// SAFETY: the interpreter is used by one thread at a time (the model's mutex); TFLite
// interpreters have no thread affinity.
unsafe impl Send for Graph {}

impl Drop for Graph {
    fn drop(&mut self) {
        let api = &self.runtime.api;
        // SAFETY: each handle came from the matching create call and is freed once,
        // runners before their interpreter, the interpreter before its model.
        unsafe {
            for s in &self.signatures {
                (api.runner_delete)(s.runner);
            }
            if !self.interpreter.is_null() {
                (api.interpreter_delete)(self.interpreter);
            }
            if !self.options.is_null() {
                (api.options_delete)(self.options);
            }
            if !self.model.is_null() {
                (api.model_delete)(self.model);
            }
        }
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| LiteRtError::InvalidRequest(format!("{s:?} contains a NUL byte")))
}

impl Graph {
    /// Opens `path` with `threads` interpreter threads (0: TFLite's default).
    pub(crate) fn open(runtime: &Runtime, path: &Path, threads: u32) -> Result<Graph> {
        let api = &runtime.api;
        let c_path = cstring(&path.to_string_lossy())?;
        let mut graph = Graph {
            runtime: runtime.clone(),
            model: std::ptr::null_mut(),
            options: std::ptr::null_mut(),
            interpreter: std::ptr::null_mut(),
            signatures: Vec::new(),
            cache_names: Vec::new(),
            cache_elements: Vec::new(),
            cache_len: 0,
            vocab: 0,
        };
        // SAFETY: a valid C path; null on failure.
        graph.model = unsafe { (api.model_create_from_file)(c_path.as_ptr()) };
        if graph.model.is_null() {
            return Err(LiteRtError::InvalidModel(format!(
                "{}: TFLite cannot read this model",
                path.display()
            )));
        }
        // SAFETY: plain constructors and setters on handles just created.
        unsafe {
            graph.options = (api.options_create)();
            if graph.options.is_null() {
                return Err(LiteRtError::Run("cannot create interpreter options".into()));
            }
            if threads > 0 {
                (api.options_set_num_threads)(
                    graph.options,
                    i32::try_from(threads).unwrap_or(i32::MAX),
                );
            }
            graph.interpreter = (api.interpreter_create)(graph.model, graph.options);
        }
        if graph.interpreter.is_null() {
            return Err(LiteRtError::Unsupported(format!(
                "{}: TFLite cannot build an interpreter for this model (an operator this \
                 runtime lacks?)",
                path.display()
            )));
        }
        // SAFETY: the interpreter is live; keys are copied.
        let keys: Vec<String> = unsafe {
            (0..(api.signature_count)(graph.interpreter))
                .filter_map(|i| c_str((api.signature_key)(graph.interpreter, i)))
                .collect()
        };
        let unsupported = |what: String| {
            LiteRtError::Unsupported(format!(
                "{}: not a litert-torch decoder export: {what} (its signatures: {}); export \
                 with litert-torch's converter (prefill_<N> and decode signatures)",
                path.display(),
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ))
        };
        if !keys.iter().any(|k| k == "decode") {
            return Err(unsupported("it has no decode signature".into()));
        }
        let mut order: Vec<&String> = keys
            .iter()
            .filter(|k| prefill_len(k).is_some() || *k == "decode")
            .collect();
        order.sort_by_key(|k| prefill_len(k).unwrap_or(usize::MAX));
        for key in order {
            let signature = graph.signature(key, &unsupported)?;
            graph.signatures.push(signature);
        }
        Ok(graph)
    }

    /// Reads and checks one signature.
    fn signature(
        &mut self,
        key: &str,
        unsupported: &dyn Fn(String) -> LiteRtError,
    ) -> Result<Signature> {
        let api = self.runtime.api.clone();
        let c_key = cstring(key)?;
        // SAFETY: the interpreter is live; the runner is freed in Drop (or below).
        let runner = unsafe { (api.signature_runner)(self.interpreter, c_key.as_ptr()) };
        if runner.is_null() {
            return Err(LiteRtError::Run(format!("no runner for signature {key}")));
        }
        let mut sig = Signature {
            key: key.to_string(),
            tokens: 0,
            runner,
            input_tokens: std::ptr::null_mut(),
            input_pos: std::ptr::null_mut(),
            logits: std::ptr::null_mut(),
            caches: Vec::new(),
        };
        // SAFETY: the runner is live.
        if unsafe { (api.runner_allocate)(runner) } != 0 {
            // SAFETY: the runner is not kept.
            unsafe { (api.runner_delete)(runner) };
            return Err(LiteRtError::Run(format!(
                "cannot allocate the tensors of {key}"
            )));
        }
        let result = (|| -> Result<()> {
            // SAFETY: the runner is live; names are copied.
            let inputs: Vec<String> = unsafe {
                (0..(api.runner_input_count)(runner))
                    .filter_map(|i| {
                        c_str((api.runner_input_name)(
                            runner,
                            i32::try_from(i).unwrap_or(i32::MAX),
                        ))
                    })
                    .collect()
            };
            let outputs: Vec<String> = unsafe {
                (0..(api.runner_output_count)(runner))
                    .filter_map(|i| {
                        c_str((api.runner_output_name)(
                            runner,
                            i32::try_from(i).unwrap_or(i32::MAX),
                        ))
                    })
                    .collect()
            };
            let input = |name: &str| -> Result<Handle> {
                let c = cstring(name)?;
                // SAFETY: the runner is live; a tensor pointer valid while it is.
                let t = unsafe { (api.runner_input_tensor)(runner, c.as_ptr()) };
                if t.is_null() {
                    return Err(unsupported(format!("{key} has no input `{name}`")));
                }
                Ok(t)
            };
            let output = |name: &str| -> Result<Handle> {
                let c = cstring(name)?;
                // SAFETY: as above.
                let t = unsafe { (api.runner_output_tensor)(runner, c.as_ptr()) };
                if t.is_null() {
                    return Err(unsupported(format!("{key} has no output `{name}`")));
                }
                Ok(t)
            };
            let shape = |t: Handle| -> (i32, Vec<usize>) {
                // SAFETY: `t` is a live tensor of this runner.
                unsafe {
                    let dims = (0..(api.tensor_num_dims)(t))
                        .map(|d| usize::try_from((api.tensor_dim)(t, d)).unwrap_or(0))
                        .collect();
                    ((api.tensor_type)(t), dims)
                }
            };
            sig.input_tokens = input("tokens")?;
            sig.input_pos = input("input_pos")?;
            sig.logits = output("logits")?;
            let (ty, dims) = shape(sig.input_tokens);
            if ty != TYPE_INT32 || dims.len() != 2 || dims[0] != 1 || dims[1] == 0 {
                return Err(unsupported(format!(
                    "{key}'s `tokens` is not int32 [1, P] ({dims:?})"
                )));
            }
            sig.tokens = dims[1];
            let (ty, pos_dims) = shape(sig.input_pos);
            if ty != TYPE_INT32 || pos_dims != [sig.tokens] {
                return Err(unsupported(format!(
                    "{key}'s `input_pos` is not int32 [{}] ({pos_dims:?})",
                    sig.tokens
                )));
            }
            let (ty, logit_dims) = shape(sig.logits);
            if ty != TYPE_FLOAT32
                || logit_dims.len() != 3
                || logit_dims[1] != sig.tokens
                || logit_dims[2] == 0
            {
                return Err(unsupported(format!(
                    "{key}'s `logits` is not float32 [1, {}, V] ({logit_dims:?}); export with \
                     output_logits_on_prefill",
                    sig.tokens
                )));
            }
            let vocab = logit_dims[2];
            let mut names: Vec<&String> = inputs
                .iter()
                .filter(|n| n.starts_with("kv_cache_"))
                .collect();
            names.sort();
            if names.is_empty() {
                return Err(unsupported(format!("{key} has no kv_cache_* inputs")));
            }
            let mut elements = Vec::new();
            let mut cache_len = 0;
            for name in &names {
                if !outputs.contains(name) {
                    return Err(unsupported(format!(
                        "{key} takes {name} but does not return it"
                    )));
                }
                let (t_in, t_out) = (input(name)?, output(name)?);
                let (ty, dims) = shape(t_in);
                if ty != TYPE_FLOAT32
                    || dims.len() != 4
                    || dims[0] != 1
                    || shape(t_out) != (ty, dims.clone())
                {
                    return Err(unsupported(format!(
                        "{key}'s {name} is not float32 [1, S, heads, dim] ({dims:?})"
                    )));
                }
                cache_len = dims[1];
                elements.push(dims.iter().product::<usize>());
                sig.caches.push((t_in, t_out));
            }
            let names: Vec<String> = names.into_iter().cloned().collect();
            if self.cache_names.is_empty() {
                self.cache_names = names;
                self.cache_elements = elements;
                self.cache_len = cache_len;
                self.vocab = vocab;
            } else if self.cache_names != names
                || self.cache_elements != elements
                || self.vocab != vocab
            {
                return Err(unsupported(format!(
                    "{key}'s caches or logits differ from the other signatures'"
                )));
            }
            if key == "decode" && sig.tokens != 1 {
                return Err(unsupported(format!(
                    "decode takes {} tokens, not 1",
                    sig.tokens
                )));
            }
            Ok(())
        })();
        if let Err(e) = result {
            // SAFETY: the runner is not kept.
            unsafe { (api.runner_delete)(runner) };
            return Err(e);
        }
        Ok(sig)
    }

    /// Runs signature `index` on `tokens` (at most its P; padded with 0) at positions
    /// `pos..pos + P` with the caches `kv` (updated in place), writing the logits of the
    /// last real token into `logits`.
    pub(crate) fn run(
        &mut self,
        index: usize,
        tokens: &[u32],
        pos: usize,
        kv: &mut [Vec<f32>],
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let api = self.runtime.api.clone();
        let sig = &self.signatures[index];
        let p = sig.tokens;
        if tokens.is_empty() || tokens.len() > p || pos + p > self.cache_len {
            return Err(LiteRtError::Run(format!(
                "{} cannot take {} tokens at position {pos} (P {p}, cache {})",
                sig.key,
                tokens.len(),
                self.cache_len
            )));
        }
        let to_i32 = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        let mut ids: Vec<i32> = tokens
            .iter()
            .map(|&t| i32::try_from(t).unwrap_or(0))
            .collect();
        ids.resize(p, 0);
        let positions: Vec<i32> = (pos..pos + p).map(to_i32).collect();
        let copy_in =
            |t: Handle, data: *const std::ffi::c_void, bytes: usize, what: &str| -> Result<()> {
                // SAFETY: `data` is valid for `bytes`; TFLite checks `bytes` against the
                // tensor's size and fails (rather than overruns) on a mismatch.
                if unsafe { (api.tensor_copy_from)(t, data, bytes) } != 0 {
                    return Err(LiteRtError::Run(format!(
                        "cannot set {what} of {}",
                        sig.key
                    )));
                }
                Ok(())
            };
        copy_in(
            sig.input_tokens,
            ids.as_ptr().cast(),
            ids.len() * 4,
            "tokens",
        )?;
        copy_in(
            sig.input_pos,
            positions.as_ptr().cast(),
            positions.len() * 4,
            "input_pos",
        )?;
        for ((t_in, _), buf) in sig.caches.iter().zip(kv.iter()) {
            copy_in(*t_in, buf.as_ptr().cast(), buf.len() * 4, "a cache")?;
        }
        // SAFETY: the runner is live and its inputs are set.
        if unsafe { (api.runner_invoke)(sig.runner) } != 0 {
            return Err(LiteRtError::Run(format!("invoking {} failed", sig.key)));
        }
        for ((_, t_out), buf) in sig.caches.iter().zip(kv.iter_mut()) {
            // SAFETY: `buf` is valid for writes of its length; TFLite checks the size.
            if unsafe { (api.tensor_copy_to)(*t_out, buf.as_mut_ptr().cast(), buf.len() * 4) } != 0
            {
                return Err(LiteRtError::Run(format!(
                    "cannot read a cache of {}",
                    sig.key
                )));
            }
        }
        // SAFETY: the logits tensor is live; its size is checked before reading.
        let bytes = unsafe { (api.tensor_byte_size)(sig.logits) };
        let vocab = self.vocab;
        if bytes != p * vocab * 4 {
            return Err(LiteRtError::Run(format!(
                "{} returned {bytes} bytes of logits",
                sig.key
            )));
        }
        let mut all = vec![0f32; p * vocab];
        // SAFETY: `all` holds exactly `bytes` bytes.
        if unsafe { (api.tensor_copy_to)(sig.logits, all.as_mut_ptr().cast(), bytes) } != 0 {
            return Err(LiteRtError::Run(format!(
                "cannot read the logits of {}",
                sig.key
            )));
        }
        let last = tokens.len() - 1;
        logits.clear();
        logits.extend_from_slice(&all[last * vocab..(last + 1) * vocab]);
        Ok(())
    }
}

/// `prefill_32` → 32.
fn prefill_len(key: &str) -> Option<usize> {
    key.strip_prefix("prefill_")?
        .parse()
        .ok()
        .filter(|&n| n > 0)
}
