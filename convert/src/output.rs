//! What every folder a conversion writes shares: the source read once, the Hugging Face
//! metadata files beside the weights, and the all-or-nothing write.
//!
//! Sources are `llama` GGUF files and llama2.c checkpoints (whose `tok*.bin` tokenizer
//! is found next to them, or given). Every output folder, whatever its weight format,
//! carries `config.json`, `tokenizer.json`, `tokenizer_config.json` and
//! `generation_config.json`, which is what Hugging Face, Optimum and the engines read
//! for the architecture, the tokenizer and the special tokens.
//!
//! A folder is assembled in a temporary directory next to the destination (the same file
//! system, so a rename moves it), checked with `runanywhere-formats`' structural
//! verification, and renamed into place: a reader never sees half a folder, and a failed
//! conversion leaves nothing behind. An existing non-empty destination is refused unless
//! [`ConvertOptions::force`] is set; it is then swapped out only after the new folder is
//! complete.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::ConvertError;
use crate::gguf::GgufFile;
use crate::llama::{self, HfLlama, LlamaParams};
use crate::llama2c::{self, Checkpoint};
use crate::tokenizer::{self, ConvertedTokenizer};

/// How a conversion reads its source and writes its folder.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// The llama2.c tokenizer file (`tok*.bin`); default: found next to the checkpoint.
    /// Ignored for GGUF, which carries its vocabulary.
    pub llama2c_tokenizer: Option<PathBuf>,
    /// Replace an existing, non-empty output folder (once the new one is complete).
    pub force: bool,
    /// The context length to record as `max_position_embeddings`; default: the
    /// source's (for ONNX, at least [`crate::onnx::MIN_CONTEXT`]).
    pub context_length: Option<usize>,
    /// ONNX only: keep the weights in `model.onnx_data` even when the model is small
    /// enough to be inline (they go there anyway above 2 GiB).
    pub external_data: bool,
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The folder.
    pub dir: PathBuf,
    /// The model's parameters, as written to `config.json`.
    pub params: LlamaParams,
    /// The files in the folder.
    pub files: Vec<String>,
}

/// A source model: weights in Hugging Face's layout and its tokenizer.
pub(crate) struct Source {
    /// The weights.
    pub(crate) model: HfLlama,
    /// The tokenizer.
    pub(crate) tokenizer: ConvertedTokenizer,
    /// `tokenizer_class` for `tokenizer_config.json`.
    pub(crate) tokenizer_class: &'static str,
}

impl Source {
    /// The parameters to write: the special tokens the tokenizer names, and the context
    /// length `context_length` when given.
    pub(crate) fn params(&self, context_length: Option<usize>) -> LlamaParams {
        let mut params = self.model.params.clone();
        params.bos_token_id = self.tokenizer.special.bos.or(params.bos_token_id);
        params.eos_token_id = self.tokenizer.special.eos.or(params.eos_token_id);
        if let Some(n) = context_length {
            params.max_position_embeddings = n;
        }
        params
    }
}

/// Reads `source`: a `llama` GGUF file, or a llama2.c checkpoint with its tokenizer
/// (`llama2c_tokenizer`, or found next to it).
pub(crate) fn read_source(
    source: &Path,
    llama2c_tokenizer: Option<&Path>,
) -> Result<Source, ConvertError> {
    if is_gguf(source)? {
        let gguf = GgufFile::open(source)?;
        let model = llama::from_gguf(&gguf)?;
        let tokenizer = tokenizer::from_gguf_vocab(&gguf)?;
        let tokenizer_class = match gguf.get_str("tokenizer.ggml.model") {
            Some("llama") => "LlamaTokenizerFast",
            _ => "PreTrainedTokenizerFast",
        };
        return Ok(Source {
            model,
            tokenizer,
            tokenizer_class,
        });
    }
    let checkpoint = Checkpoint::read(source)?;
    let vocab_size = checkpoint.config.vocab_size;
    let tok_path = match llama2c_tokenizer {
        Some(p) => p.to_path_buf(),
        None => llama2c::find_tokenizer(source, vocab_size).ok_or_else(|| {
            ConvertError::invalid(
                source,
                format!(
                    "no llama2.c tokenizer for {vocab_size} tokens next to the \
                     checkpoint (tok{vocab_size}.bin or tokenizer.bin)"
                ),
            )
        })?,
    };
    let tokenizer = tokenizer::from_llama2c_tokenizer(&tok_path, vocab_size)?;
    Ok(Source {
        model: llama::from_llama2c(source, checkpoint)?,
        tokenizer,
        tokenizer_class: "LlamaTokenizerFast",
    })
}

fn is_gguf(path: &Path) -> Result<bool, ConvertError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file =
        runanywhere_formats::fs::open_regular(path).map_err(|e| ConvertError::io(path, e))?;
    let n = file
        .read(&mut magic)
        .map_err(|e| ConvertError::io(path, e))?;
    Ok(n == 4 && &magic == b"GGUF")
}

/// Writes `config.json`, `tokenizer.json`, `tokenizer_config.json` and
/// `generation_config.json` into `dir`; returns their names.
pub(crate) fn write_metadata(
    dir: &Path,
    params: &LlamaParams,
    source: &Source,
) -> Result<Vec<String>, ConvertError> {
    let tok = &source.tokenizer;
    let write_json = |name: &str, v: &Value| -> Result<String, ConvertError> {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(v)
            .map_err(|e| ConvertError::invalid(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| ConvertError::io(&path, e))?;
        Ok(name.to_string())
    };
    let mut files = vec![write_json("config.json", &params.config_json())?];

    let tokenizer_json = dir.join("tokenizer.json");
    tok.tokenizer
        .save(&tokenizer_json, false)
        .map_err(|e| ConvertError::tokenizer(&tokenizer_json, e))?;
    files.push("tokenizer.json".to_string());

    let text = |id: Option<u32>| {
        id.and_then(|i| tok.tokenizer.id_to_token(i))
            .map_or(Value::Null, Value::String)
    };
    let mut config = json!({
        "tokenizer_class": source.tokenizer_class,
        "bos_token": text(tok.special.bos),
        "eos_token": text(tok.special.eos),
        "unk_token": text(tok.special.unk),
        "pad_token": text(tok.special.pad),
        "add_bos_token": tok.special.add_bos,
        "add_eos_token": tok.special.add_eos,
        "model_max_length": params.max_position_embeddings,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(template) = &tok.chat_template {
        config["chat_template"] = Value::String(template.clone());
    }
    files.push(write_json("tokenizer_config.json", &config)?);
    files.push(write_json(
        "generation_config.json",
        &json!({
            "bos_token_id": tok.special.bos,
            "eos_token_id": if tok.special.eog.len() > 1 {
                json!(tok.special.eog)
            } else {
                json!(tok.special.eos)
            },
        }),
    )?);
    Ok(files)
}

/// The names a conversion writes. `--force` replaces only a folder holding nothing else
/// (and a `config.json`), so a mistyped output path can never delete a user's folder.
const OUTPUT_NAMES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
    "model.onnx",
    crate::onnx::EXTERNAL_DATA_FILE,
];

/// Refuses a destination that cannot be written: an existing non-empty folder without
/// `force`, anything that is not a folder, a path without a final name (`.`, `/`), or
/// (with `force`) a folder that is not a previous conversion's output or that holds one
/// of the `inputs`, which replacing it would delete. Checked before the source is read,
/// so a refusal is immediate.
pub(crate) fn check_destination(
    out_dir: &Path,
    force: bool,
    inputs: &[&Path],
) -> Result<(), ConvertError> {
    let refuse = |problem: &str| ConvertError::invalid(out_dir, problem.to_string());
    if out_dir.file_name().is_none() {
        return Err(refuse(
            "the output must be a folder name, not `.`, `..` or `/`",
        ));
    }
    let meta = match std::fs::symlink_metadata(out_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ConvertError::io(out_dir, e)),
    };
    if !meta.is_dir() {
        return Err(refuse("exists and is not a folder"));
    }
    let empty = std::fs::read_dir(out_dir)
        .map_err(|e| ConvertError::io(out_dir, e))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    if !force {
        return Err(ConvertError::OutputExists(out_dir.to_path_buf()));
    }
    let canonical = out_dir
        .canonicalize()
        .map_err(|e| ConvertError::io(out_dir, e))?;
    for input in inputs {
        if input
            .canonicalize()
            .is_ok_and(|p| p.starts_with(&canonical))
        {
            return Err(refuse(&format!(
                "holds the input {}, which replacing it would delete; choose another output folder",
                input.display()
            )));
        }
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(out_dir).map_err(|e| ConvertError::io(out_dir, e))? {
        let entry = entry.map_err(|e| ConvertError::io(out_dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !OUTPUT_NAMES.contains(&n.as_str()))
        .collect();
    if !foreign.is_empty() || !names.iter().any(|n| n == "config.json") {
        let shown = foreign
            .iter()
            .take(3)
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(refuse(&format!(
            "is not the output of an earlier conversion (it holds {}), so forcing will not \
             replace it; choose another output folder",
            if shown.is_empty() {
                "no config.json".to_string()
            } else {
                shown
            }
        )));
    }
    Ok(())
}

/// Gives `dir` and the files in it the permissions a plain `File::create` would (0666
/// and 0777 less the umask, read from a probe file so the process-wide umask is never
/// changed): the temporary folder and some writers' temporary files are private (0700,
/// 0600), which would leave a converted model unreadable to other users.
#[cfg(unix)]
fn ordinary_permissions(dir: &Path) -> Result<(), ConvertError> {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join(".runanywhere-mode-probe");
    let file_mode = std::fs::File::create(&probe)
        .and_then(|f| f.metadata())
        .map_err(|e| ConvertError::io(&probe, e))?
        .permissions()
        .mode()
        & 0o666;
    std::fs::remove_file(&probe).map_err(|e| ConvertError::io(&probe, e))?;
    // Directories also get the search bit wherever they are readable.
    let dir_mode = file_mode | ((file_mode & 0o444) >> 2);
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ConvertError::io(path, e))
    };
    for entry in std::fs::read_dir(dir).map_err(|e| ConvertError::io(dir, e))? {
        let entry = entry.map_err(|e| ConvertError::io(dir, e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| ConvertError::io(&path, e))?
            .is_dir();
        if is_dir {
            ordinary_permissions(&path)?;
        } else {
            set(&path, file_mode)?;
        }
    }
    set(dir, dir_mode)
}

#[cfg(not(unix))]
fn ordinary_permissions(_dir: &Path) -> Result<(), ConvertError> {
    Ok(())
}

/// Writes a folder at `out_dir` all-or-nothing: `fill` writes the files into a temporary
/// folder next to it and returns their names; the folder is verified, then renamed into
/// place (replacing an empty folder, or with `force` a non-empty one).
pub(crate) fn write_folder(
    out_dir: &Path,
    force: bool,
    inputs: &[&Path],
    fill: impl FnOnce(&Path) -> Result<Vec<String>, ConvertError>,
) -> Result<Vec<String>, ConvertError> {
    check_destination(out_dir, force, inputs)?;
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| ConvertError::io(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".runanywhere-convert-")
        .tempdir_in(&parent)
        .map_err(|e| ConvertError::io(&parent, e))?;
    let files = fill(tmp.path())?;
    ordinary_permissions(tmp.path())?;
    let verification = runanywhere_formats::verify_path(tmp.path());
    if let Some(problem) = verification.problem {
        return Err(ConvertError::invalid(
            out_dir,
            format!(
                "the converted folder fails verification: {}",
                problem.message
            ),
        ));
    }

    // Move a previous folder aside first (rename(2) only replaces an empty one), and
    // delete it only once the new one is in place.
    let mut old = None;
    if out_dir.is_dir() {
        let empty = std::fs::read_dir(out_dir)
            .map_err(|e| ConvertError::io(out_dir, e))?
            .next()
            .is_none();
        if empty {
            std::fs::remove_dir(out_dir).map_err(|e| ConvertError::io(out_dir, e))?;
        } else {
            let aside = tempfile::Builder::new()
                .prefix(".runanywhere-convert-old-")
                .tempdir_in(&parent)
                .map_err(|e| ConvertError::io(&parent, e))?
                .keep();
            std::fs::remove_dir(&aside).map_err(|e| ConvertError::io(&aside, e))?;
            std::fs::rename(out_dir, &aside).map_err(|e| ConvertError::io(out_dir, e))?;
            old = Some(aside);
        }
    }
    if let Err(e) = std::fs::rename(tmp.path(), out_dir) {
        if let Some(aside) = &old {
            // Put the previous folder back; the new one is removed with `tmp`.
            let _ = std::fs::rename(aside, out_dir);
        }
        return Err(ConvertError::io(out_dir, e));
    }
    // The directory now lives at `out_dir`: nothing is left to clean up.
    let _ = tmp.keep();
    if let Some(aside) = old {
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            tracing::warn!(folder = %aside.display(), "cannot remove the replaced folder: {e}");
        }
    }
    Ok(files)
}
