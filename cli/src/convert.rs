//! `runanywhere convert`: a llama-family GGUF file or llama2.c checkpoint into an ONNX
//! decoder folder or a Hugging Face safetensors folder.
//!
//! The conversion itself is `runanywhere-convert`'s (the same readers and tokenizer
//! builder the engines use); this command resolves the model (a path, a store id, or a
//! catalog id, pulled on first use), maps the flags to its options and reports what was
//! written.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use runanywhere::store::human_bytes;
use runanywhere::Runtime;
use runanywhere_convert::safetensors::write_hf_folder_with;
use runanywhere_convert::{write_onnx_folder, ConvertError, ConvertOptions, Written};

use super::args::{ConvertArgs, ConvertTarget};

pub(crate) fn run(runtime: &Runtime, args: &ConvertArgs) -> anyhow::Result<ExitCode> {
    if args.external_data && args.to != ConvertTarget::Onnx {
        anyhow::bail!("--external-data applies to --to onnx only");
    }
    let model = super::resolve_model(runtime, &args.model)?;
    let options = ConvertOptions {
        llama2c_tokenizer: args.tokenizer.clone().or(model.tokenizer),
        force: args.force,
        context_length: args.context_length,
        external_data: args.external_data,
    };
    type Convert = fn(&Path, &Path, &ConvertOptions) -> Result<Written, ConvertError>;
    let (format, engine, convert): (&str, &str, Convert) = match args.to {
        ConvertTarget::Onnx => ("ONNX", "onnx", write_onnx_folder),
        ConvertTarget::Safetensors => ("safetensors", "candle", write_hf_folder_with),
    };
    let start = Instant::now();
    tracing::info!(model = %model.path.display(), out = %args.out_dir.display(), format, "converting");
    let written = convert(&model.path, &args.out_dir, &options)
        .map_err(|e| match e {
            ConvertError::OutputExists(_) => {
                anyhow::anyhow!("{e} (--force replaces the output of an earlier conversion)")
            }
            other => other.into(),
        })
        .with_context(|| format!("cannot convert to {format}"))?;
    let seconds = start.elapsed().as_secs_f64();

    let p = &written.params;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Converted {} to {format} in {} ({seconds:.1} s)",
        model.path.display(),
        written.dir.display()
    )?;
    writeln!(
        out,
        "  llama: {} layers, hidden {}, {} heads ({} key/value), vocab {}, context {}{}",
        p.num_hidden_layers,
        p.hidden_size,
        p.num_attention_heads,
        p.num_key_value_heads,
        p.vocab_size,
        p.max_position_embeddings,
        if p.tie_word_embeddings {
            ", tied embeddings"
        } else {
            ""
        }
    )?;
    for file in &written.files {
        let size = std::fs::metadata(written.dir.join(file)).map_or(0, |m| m.len());
        writeln!(out, "  {file:<24} {}", human_bytes(size))?;
    }
    writeln!(
        out,
        "Run it with: runanywhere run --engine {engine} --model {}",
        written.dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
