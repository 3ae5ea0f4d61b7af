//! A loaded `.pte` language model: its program, tokenizer and facts, and generation
//! through the kit's shared loop.
//!
//! # Generation
//!
//! The KV cache lives inside the program (its mutable buffers), indexed by `input_pos`:
//! a generation starts at position 0 and simply overwrites what an earlier one left.
//! The prompt goes in chunks of up to the export's bound on the tokens input (255 for a
//! 256-position export), then one token per call. Positions must stay below
//! `get_max_seq_len`; the kit's loop stops at the context length, which is capped to it,
//! and [`Run::forward`] refuses anything past it as `ContextOverflow` before ExecuTorch
//! sees it.
//!
//! Sampling, stop strings, UTF-8 buffering, limits and timing are the plugin kit's
//! ([`generate::run`]), so this engine answers a request exactly as the others do.
//!
//! # Concurrency
//!
//! ExecuTorch's `Module` is not thread-safe and there is one cache per program, so
//! generations on one model take turns on a mutex; tokenization does not wait for them.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use abi_stable::std_types::{ROption, RString, RVec};
use runanywhere_plugin_api::generate::{self, Forward, Vocabulary};
use runanywhere_plugin_api::sdk::Sink;
use runanywhere_plugin_api::{
    decode, EngineError, GenerateRequest, GenerationStats, KeyValue, LoadRequest, ModelInfo,
};
use runanywhere_tokenizer::Vocab;

use crate::error::{EtError, Result};
use crate::program::{Interface, Program};
use crate::runtime::Runtime;

/// A loaded ExecuTorch language model.
pub struct ExecuTorchModel {
    /// `None` for a vocab-only load.
    program: Option<Mutex<Program>>,
    interface: Interface,
    tokenizer: Vocab,
    info: ModelInfo,
    context_length: u32,
}

impl ExecuTorchModel {
    /// Loads the program and tokenizer `request` names.
    pub(crate) fn load(runtime: &Runtime, request: &LoadRequest) -> Result<Self> {
        let path = Path::new(request.model_path.as_str());
        if path.as_os_str().is_empty() {
            return Err(EtError::InvalidRequest("no model path given".into()));
        }
        check_file(path)?;
        set_threads_once(runtime, request.threads);
        // The interface is read from a program opened for the purpose even for a
        // vocab-only load: the vocabulary size and BOS/EOS are the program's.
        let mut program = Program::open(runtime, path)?;
        let interface = Interface::read(&mut program, path)?;
        let tokenizer_path = match &request.tokenizer_path {
            ROption::RSome(t) => Some(PathBuf::from(t.as_str())),
            ROption::RNone => None,
        };
        let (tokenizer, tokenizer_file) = tokenizer(path, tokenizer_path.as_deref(), &interface)?;
        let trained = interface.max_seq_len;
        let context_length = decode::context_length(request.context_length, trained, Some(trained))
            .map_err(|e| EtError::InvalidRequest(e.message().to_string()))?;
        let special = tokenizer.special();
        let info = ModelInfo {
            architecture: RString::from("llama"),
            parameter_count: 0,
            context_length,
            train_context_length: trained,
            vocab_size: interface.vocab,
            bos: special.bos.into(),
            eos: special.eos.into(),
            eog: RVec::from(special.eog.clone()),
            chat_template: ROption::RNone,
            extensions: RVec::from(vec![
                KeyValue::new("format", "pte"),
                KeyValue::new("executorch.version", runtime.version.as_str()),
                KeyValue::new("executorch.methods", interface.methods.join(",")),
                KeyValue::new("executorch.max_chunk", interface.max_chunk.to_string()),
                KeyValue::new("tokenizer_file", tokenizer_file.display().to_string()),
            ]),
        };
        tracing::debug!(
            model = %path.display(),
            vocab = interface.vocab,
            max_seq_len = interface.max_seq_len,
            max_chunk = interface.max_chunk,
            "loaded ExecuTorch program"
        );
        Ok(ExecuTorchModel {
            program: (!request.vocab_only).then(|| Mutex::new(program)),
            interface,
            tokenizer,
            info,
            context_length,
        })
    }

    /// Model facts.
    pub(crate) fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    /// The tokenizer.
    pub(crate) fn tokenizer(&self) -> &Vocab {
        &self.tokenizer
    }

    /// Generates through the kit's shared loop; see the module docs.
    pub(crate) fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn Sink,
    ) -> std::result::Result<GenerationStats, EngineError> {
        let program = self.program.as_ref().ok_or_else(EngineError::vocab_only)?;
        let tokenize = |text: &str, add: bool, parse: bool| {
            self.tokenizer
                .tokenize(text, add, parse)
                .map_err(|e| EngineError::invalid_request(format!("cannot tokenize the text: {e}")))
        };
        let bytes = |id: u32, out: &mut Vec<u8>| {
            let piece = self
                .tokenizer
                .text_bytes(id)
                .ok_or_else(|| EngineError::token_out_of_range(id, self.interface.vocab))?;
            out.extend_from_slice(piece);
            Ok(())
        };
        let vocab = Vocabulary {
            size: self.interface.vocab,
            eog: self.tokenizer.special().eog.clone(),
            tokenize: &tokenize,
            bytes: &bytes,
        };
        // A panic in an earlier generation only poisons the lock; the cache is rewritten
        // from position 0 by the next one.
        let mut program = program.lock().unwrap_or_else(PoisonError::into_inner);
        let mut run = Run {
            program: &mut program,
            interface: &self.interface,
            ids: Vec::new(),
        };
        let context = self.context_length as usize;
        generate::run(
            &mut run,
            &vocab,
            context,
            self.interface.max_chunk,
            request,
            sink,
        )
    }
}

/// Sizes ExecuTorch's process-wide thread pool, once: resetting it later would free
/// the pool that programs already loaded (their XNNPACK runtimes) still point at. A
/// later load asking for another count keeps the first (said in the log).
fn set_threads_once(runtime: &Runtime, threads: u32) {
    static SET: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if threads == 0 {
        return;
    }
    let first = *SET.get_or_init(|| {
        // SAFETY: a plain call into the shim, which catches everything; no program is
        // loaded yet in this process.
        let size = unsafe { (runtime.shim.set_threads)(threads) };
        tracing::debug!(threads, size, "ExecuTorch thread pool");
        threads
    });
    if first != threads {
        tracing::info!(
            asked = threads,
            kept = first,
            "ExecuTorch's thread pool is process-wide and was sized by the first load"
        );
    }
}

/// Refuses what is not a regular `.pte` file before ExecuTorch opens it, with the
/// format check's own message for damaged files (ExecuTorch's is a bare error code).
fn check_file(path: &Path) -> Result<()> {
    let verification = runanywhere_formats::verify_path(path);
    if let Some(problem) = verification.problem {
        return Err(EtError::InvalidModel(problem.to_string()));
    }
    if verification.format != Some(runanywhere_formats::ModelFormat::Pte) {
        return Err(EtError::Unsupported(format!(
            "{} is not an ExecuTorch program (.pte); this engine reads only those",
            path.display()
        )));
    }
    Ok(())
}

/// The tokenizer: the file the request names, else one next to the program (see
/// [`runanywhere_convert::tokenizer::side_file`]), with the program's own BOS/EOS ids
/// (where it records them) winning over the tokenizer's. Returns it with its path.
fn tokenizer(
    model: &Path,
    given: Option<&Path>,
    interface: &Interface,
) -> Result<(Vocab, PathBuf)> {
    let vocab = interface.vocab as usize;
    let (converted, path) = runanywhere_convert::tokenizer::side_file(model, given, vocab)
        .map_err(|e| EtError::InvalidModel(e.to_string()))?;
    let mut special = converted.special;
    // What the program records wins over the tokenizer's guess.
    if interface.bos.is_some() {
        special.bos = interface.bos;
    }
    if let Some(&eos) = interface.eos.first() {
        special.eos = Some(eos);
    }
    special.eog.extend(interface.eos.iter().copied());
    special.eog.extend(special.eos);
    special.eog.retain(|&id| id < interface.vocab);
    special.eog.sort_unstable();
    special.eog.dedup();
    Ok((Vocab::new(converted.tokenizer, special, vocab), path))
}

/// One generation's view of the program.
struct Run<'a> {
    program: &'a mut Program,
    interface: &'a Interface,
    /// The ids of the current call, widened for the shim (reused).
    ids: Vec<i64>,
}

impl Forward for Run<'_> {
    fn reset(&mut self) -> std::result::Result<(), EngineError> {
        // The cache is indexed by position: starting again at 0 overwrites it.
        Ok(())
    }

    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        logits: &mut Vec<f32>,
    ) -> std::result::Result<(), EngineError> {
        let end = pos + ids.len();
        if end > self.interface.max_seq_len as usize {
            return Err(EtError::ContextOverflow(format!(
                "positions {pos}..{end} are past the program's KV cache of {} positions",
                self.interface.max_seq_len
            ))
            .into());
        }
        if let Some(&bad) = ids.iter().find(|&&id| id >= self.interface.vocab) {
            return Err(EngineError::token_out_of_range(bad, self.interface.vocab));
        }
        self.ids.clear();
        self.ids.extend(ids.iter().map(|&id| i64::from(id)));
        let pos = i64::try_from(pos).map_err(|_| EngineError::internal("position overflow"))?;
        self.program.forward(
            &self.ids,
            pos,
            self.interface.wide,
            logits,
            self.interface.vocab as usize,
        )?;
        Ok(())
    }
}
