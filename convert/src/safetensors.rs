//! Writing a Hugging Face `LlamaForCausalLM` folder from a GGUF file or a llama2.c
//! checkpoint: `config.json`, `model.safetensors` (f32), `tokenizer.json`,
//! `tokenizer_config.json` and `generation_config.json`.
//!
//! The folder is written all-or-nothing (see [`crate::output`]): a reader never sees
//! half a folder and a failed conversion leaves nothing behind.

use std::path::Path;

use crate::error::ConvertError;
use crate::output::{read_source, write_folder, write_metadata};
pub use crate::output::{ConvertOptions, Written};

/// Converts `source` (a `llama` GGUF file or a llama2.c checkpoint, whose `tok*.bin`
/// tokenizer is found next to it) into a Hugging Face folder at `out_dir`.
///
/// `out_dir` must not exist, or be an empty directory.
pub fn write_hf_folder(source: &Path, out_dir: &Path) -> Result<Written, ConvertError> {
    write_hf_folder_with(source, out_dir, &ConvertOptions::default())
}

/// [`write_hf_folder`] with an explicit llama2.c tokenizer file (ignored for GGUF,
/// which carries its vocabulary).
pub fn write_hf_folder_with_tokenizer(
    source: &Path,
    llama2c_tokenizer: Option<&Path>,
    out_dir: &Path,
) -> Result<Written, ConvertError> {
    let options = ConvertOptions {
        llama2c_tokenizer: llama2c_tokenizer.map(Path::to_path_buf),
        ..ConvertOptions::default()
    };
    write_hf_folder_with(source, out_dir, &options)
}

/// [`write_hf_folder`] with [`ConvertOptions`] (tokenizer, `force`, context length).
pub fn write_hf_folder_with(
    source: &Path,
    out_dir: &Path,
    options: &ConvertOptions,
) -> Result<Written, ConvertError> {
    let tokenizer = options.llama2c_tokenizer.as_deref();
    let inputs: Vec<&Path> = std::iter::once(source).chain(tokenizer).collect();
    crate::output::check_destination(out_dir, options.force, &inputs)?;
    let src = read_source(source, tokenizer)?;
    let params = src.params(options.context_length);
    let files = write_folder(out_dir, options.force, &inputs, |dir| {
        let mut files = write_metadata(dir, &params, &src)?;
        let weights = dir.join("model.safetensors");
        candle_core::safetensors::save(&src.model.tensors, &weights)
            .map_err(|e| ConvertError::candle(&weights, e))?;
        files.push("model.safetensors".to_string());
        Ok(files)
    })?;
    tracing::debug!(source = %source.display(), out = %out_dir.display(), "wrote a Hugging Face folder");
    Ok(Written {
        dir: out_dir.to_path_buf(),
        params,
        files,
    })
}
