//! Writing an ONNX decoder folder (Hugging Face Optimum's layout) from a GGUF file or a
//! llama2.c checkpoint: `model.onnx` (plus `model.onnx_data` for large models),
//! `config.json`, `tokenizer.json`, `tokenizer_config.json` and
//! `generation_config.json`.
//!
//! Why this exists: ONNX Runtime runs everywhere (mobile, web, NPUs through its
//! execution providers), but llama-family models are mostly distributed as GGUF. The
//! conversion needs no Python and no `onnx` package: the weights come from the same
//! readers the safetensors conversion uses ([`crate::llama`], dequantised to `f32`), the
//! tokenizer from the same builder ([`crate::tokenizer`]), the graph is built here
//! ([`graph`]) and encoded with hand-written `prost` messages ([`proto`]).
//!
//! **Context length.** The graph computes rotary angles from `position_ids`, so it runs
//! at any position; `max_position_embeddings` in `config.json` is what ONNX engines cap
//! their context at. It is the source's trained length, raised to at least
//! [`MIN_CONTEXT`]: llama.cpp's llama2.c converter records 128 for the TinyStories
//! models, which llama2.c trains and runs at 512 (the checkpoint's `seq_len`), and at
//! which llama.cpp and candle run them fine. [`ConvertOptions::context_length`] sets it
//! explicitly.

mod graph;
pub mod proto;
mod weights;

use std::path::Path;

use prost::Message;

use crate::error::ConvertError;
use crate::llama::HfLlama;
use crate::output::{read_source, write_folder, write_metadata, ConvertOptions, Written};

pub use graph::{IR_VERSION, OPSET};
pub use weights::EXTERNAL_DATA_FILE;

/// The smallest `max_position_embeddings` written when the source's is not overridden.
pub const MIN_CONTEXT: usize = 512;
/// The decoder's file name in the folder.
pub const MODEL_FILE: &str = "model.onnx";
/// Weights above this many bytes go to [`EXTERNAL_DATA_FILE`]: a protobuf message
/// cannot reach 2 GiB, and the graph itself needs some room.
const INLINE_LIMIT: u64 = (2 << 30) - (64 << 20);

/// Converts `source` (a `llama` GGUF file or a llama2.c checkpoint, whose `tok*.bin`
/// tokenizer is found next to it unless `options` names one) into an ONNX folder at
/// `out_dir`, which must not exist or be empty unless `options.force`.
pub fn write_onnx_folder(
    source: &Path,
    out_dir: &Path,
    options: &ConvertOptions,
) -> Result<Written, ConvertError> {
    let tokenizer = options.llama2c_tokenizer.as_deref();
    let inputs: Vec<&Path> = std::iter::once(source).chain(tokenizer).collect();
    crate::output::check_destination(out_dir, options.force, &inputs)?;
    let src = read_source(source, tokenizer)?;
    let context = options
        .context_length
        .unwrap_or(src.model.params.max_position_embeddings.max(MIN_CONTEXT));
    let params = src.params(Some(context));
    let doc = format!(
        "Llama decoder converted from {}",
        source.file_name().map_or_else(
            || source.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    let files = write_folder(out_dir, options.force, &inputs, |dir| {
        let mut files = write_metadata(dir, &params, &src)?;
        files.extend(write_onnx_model(
            &src.model,
            dir,
            options.external_data,
            &doc,
        )?);
        Ok(files)
    })?;
    tracing::debug!(source = %source.display(), out = %out_dir.display(), "wrote an ONNX folder");
    Ok(Written {
        dir: out_dir.to_path_buf(),
        params,
        files,
    })
}

/// Writes `model` as [`MODEL_FILE`] into the existing folder `dir`, with its weights in
/// [`EXTERNAL_DATA_FILE`] when `external_data` is set or they exceed 2 GiB; returns the
/// names of the files written. `doc` becomes the model's `doc_string`.
pub fn write_onnx_model(
    model: &HfLlama,
    dir: &Path,
    external_data: bool,
    doc: &str,
) -> Result<Vec<String>, ConvertError> {
    let bytes: u64 = model
        .tensors
        .values()
        .map(|t| t.elem_count() as u64 * 4)
        .sum();
    let path = dir.join(MODEL_FILE);
    let (proto, mut files) = if external_data || bytes > INLINE_LIMIT {
        let mut sink = weights::External::create(dir)?;
        let proto = graph::build(model, &mut sink, &path, doc)?;
        sink.finish()?;
        (proto, vec![EXTERNAL_DATA_FILE.to_string()])
    } else {
        (
            graph::build(model, &mut weights::Inline, &path, doc)?,
            Vec::new(),
        )
    };
    let encoded = proto.encode_to_vec();
    drop(proto);
    std::fs::write(&path, encoded).map_err(|e| ConvertError::io(&path, e))?;
    files.insert(0, MODEL_FILE.to_string());
    Ok(files)
}
