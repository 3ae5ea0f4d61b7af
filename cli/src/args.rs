//! clap definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use runanywhere::{GenerateOptions, LoadOptions};

/// Run large language models locally through pluggable inference engines.
///
/// Engines (llama.cpp, ONNX Runtime, Candle, ...) are plugins discovered from manifest
/// directories: --plugins-dir, then $RUNANYWHERE_PLUGIN_PATH, then `plugins/` next to
/// this binary and ~/.local/share/runanywhere/plugins.
#[derive(Debug, Parser)]
#[command(name = "runanywhere", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Extra directory of plugin manifests, searched first (repeatable).
    #[arg(long = "plugins-dir", value_name = "DIR", global = true)]
    pub(crate) plugins_dir: Vec<PathBuf>,

    /// More log output on stderr (-v info, -vv debug); or set RUNANYWHERE_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(flatten)]
    pub(crate) isolation: IsolationArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List engine plugins: available ones and the ledger of those that failed to load.
    Engines(EnginesArgs),
    /// Install, list or remove engine plugins in the user's plugin directory
    /// (~/.local/share/runanywhere/plugins).
    Plugin(PluginArgs),
    /// Generate text from a prompt, streaming it to stdout; metrics go to stderr.
    Run(RunArgs),
    /// Show how a model's tokenizer splits text into token ids.
    Tokenize(TokenizeArgs),
    /// Measure load time, prefill and decode speed of one or more engines.
    Bench(BenchArgs),
    /// Interactive chat using the model's chat template (/help inside for commands).
    Chat(ChatArgs),
    /// List the curated catalog of models that `pull` fetches by id.
    Catalog(CatalogArgs),
    /// Download a model into the store: a catalog id, or hf.co/OWNER/REPO/PATH[@REVISION]
    /// (endpoint: $HF_ENDPOINT, default https://huggingface.co; token: $HF_TOKEN).
    Pull(PullArgs),
    /// Copy (or symlink) a local model file or folder into the store, after verifying it.
    Import(ImportArgs),
    /// Check the structure of a model file or folder and show what it holds.
    Verify(VerifyArgs),
    /// List the models in the store ($RUNANYWHERE_HOME).
    Models(ModelsArgs),
    /// Remove a model from the store.
    Rm(RmArgs),
    /// Show a model's details: what verification finds, its store entry, the engines
    /// that read it and the memory it needs.
    Info(InfoArgs),
    /// Convert a llama-family GGUF file or llama2.c checkpoint into an ONNX decoder
    /// folder (Optimum layout, with KV cache) or a Hugging Face safetensors folder.
    Convert(ConvertArgs),
    /// Embed texts: one vector per text (the model's last hidden states, pooled).
    Embed(EmbedArgs),
    /// Serve models over HTTP: an OpenAI-compatible API (/v1/chat/completions,
    /// /v1/completions, /v1/models, ...), Ollama's API (/api/chat, /api/generate,
    /// /api/tags, /api/pull, ...), /health and Prometheus /metrics, and the web app
    /// (chat, models, engines, benchmark, settings) at http://HOST:PORT/.
    ///
    /// Requests name a model by --alias, by a --model it was started with, by store id or
    /// catalog id, each optionally `@ENGINE` (`stories260k@candle`); file paths are
    /// accepted only on the command line. Ctrl-C or SIGTERM stops it gracefully.
    Serve(ServeArgs),
    /// Serve one engine to a host over stdin/stdout (started by the host itself, for
    /// --isolation process).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Where engines run: in this process, or each in a worker process of its own.
#[derive(Debug, Args)]
pub(crate) struct IsolationArgs {
    /// Run every engine in-process (`inproc`: fastest, but an engine that crashes takes
    /// this program with it) or in a worker process of its own (`process`: a crash is
    /// an error and the next request starts a new worker). Default: each manifest's
    /// `isolation`, else inproc (serve: process).
    #[arg(long, value_name = "MODE", value_parser = parse_isolation, global = true)]
    pub(crate) isolation: Option<runanywhere::Isolation>,

    /// A worker that goes this long without a sign of life, or a generation without a
    /// token or prefill progress, is killed as hung.
    #[arg(long = "hang-timeout", value_name = "DUR", default_value = "120s", value_parser = humantime::parse_duration, global = true)]
    pub(crate) hang_timeout: std::time::Duration,

    /// Address-space limit of each worker (e.g. 8G): an engine that runs away in memory
    /// is stopped alone.
    #[arg(long = "worker-memory", value_name = "BYTES", value_parser = parse_bytes, global = true)]
    pub(crate) worker_memory: Option<u64>,
}

impl IsolationArgs {
    /// The runtime's worker setup, with `default` for manifests that choose nothing.
    pub(crate) fn config(&self, default: runanywhere::Isolation) -> runanywhere::WorkerConfig {
        runanywhere::WorkerConfig {
            force: self.isolation,
            default,
            program: None,
            hang_timeout: self.hang_timeout,
            memory_limit: self.worker_memory,
        }
    }
}

fn parse_isolation(text: &str) -> Result<runanywhere::Isolation, String> {
    runanywhere::Isolation::parse(text)
        .ok_or_else(|| format!("`{text}` is not an isolation: inproc or process"))
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The engine's manifest.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest: PathBuf,

    /// The most verbose log level to send to the host (1 error ... 5 trace, 0 none).
    #[arg(long = "log-level", value_name = "N", default_value_t = 0)]
    pub(crate) log_level: u8,

    /// Address-space limit in bytes.
    #[arg(long = "memory-limit", value_name = "BYTES")]
    pub(crate) memory_limit: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct PluginArgs {
    #[command(subcommand)]
    pub(crate) action: PluginAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PluginAction {
    /// Check a plugin (manifest, library, API version, ABI layout, init) and copy it into
    /// the user's plugin directory; a plugin that would not load is refused with why.
    Install {
        /// The plugin's manifest (.toml), or a folder holding exactly one.
        #[arg(value_name = "DIR|FILE.toml")]
        path: PathBuf,
    },
    /// List the plugins found (as `runanywhere engines`), with where each came from.
    List(EnginesArgs),
    /// Remove an installed plugin (its manifest and copied library).
    Remove {
        /// The plugin's engine id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct EnginesArgs {
    /// Print JSON (an array of engine objects) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which model, on which engine, with which resources.
#[derive(Debug, Args, Clone)]
pub(crate) struct ModelArgs {
    /// Model file or folder, a store id (see `runanywhere models`), or `mock` with
    /// --engine mock.
    #[arg(short, long, value_name = "PATH|ID")]
    pub(crate) model: String,

    /// Engine id (see `runanywhere engines`); default: detected from the model's format.
    #[arg(short, long, value_name = "ID")]
    pub(crate) engine: Option<String>,

    /// Load even when the memory estimate exceeds the available memory.
    #[arg(long)]
    pub(crate) force: bool,

    /// Separate tokenizer file, for formats that need one (llama2.c `tok*.bin`).
    #[arg(long, value_name = "PATH")]
    pub(crate) tokenizer: Option<PathBuf>,

    /// Context length in tokens (0 = the model's own, capped by the engine).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 0)]
    pub(crate) ctx_size: u32,

    /// Worker threads (0 = the engine's default, about the physical cores).
    #[arg(short, long, value_name = "N", default_value_t = 0)]
    pub(crate) threads: u32,

    /// Prompt batch size for prefill (0 = engine default).
    #[arg(
        short = 'b',
        long = "batch-size",
        value_name = "N",
        default_value_t = 0
    )]
    pub(crate) batch_size: u32,

    /// Layers to offload to a GPU where the engine supports it (-1 = all).
    #[arg(
        long = "gpu-layers",
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub(crate) gpu_layers: i32,
}

/// Sampling and stopping options.
#[derive(Debug, Args, Clone)]
pub(crate) struct SamplingArgs {
    /// Temperature; 0 = greedy (deterministic).
    #[arg(long, value_name = "F", default_value_t = defaults().temperature)]
    pub(crate) temperature: f32,

    /// Sample among the K most likely tokens (0 = off).
    #[arg(long = "top-k", value_name = "N", default_value_t = defaults().top_k)]
    pub(crate) top_k: u32,

    /// Nucleus sampling threshold (1.0 = off).
    #[arg(long = "top-p", value_name = "F", default_value_t = defaults().top_p)]
    pub(crate) top_p: f32,

    /// Drop tokens below F × the top probability (0 = off).
    #[arg(long = "min-p", value_name = "F", default_value_t = defaults().min_p)]
    pub(crate) min_p: f32,

    /// Penalise repeated tokens (1.0 = off).
    #[arg(long = "repeat-penalty", value_name = "F", default_value_t = defaults().repeat_penalty)]
    pub(crate) repeat_penalty: f32,

    /// How many recent tokens the repeat penalty looks at.
    #[arg(long = "repeat-last-n", value_name = "N", default_value_t = defaults().repeat_last_n)]
    pub(crate) repeat_last_n: u32,

    /// Random seed (default: random, printed in the metrics).
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,

    /// Stop after N generated tokens (0 = until the context is full).
    #[arg(
        short = 'n',
        long = "max-tokens",
        value_name = "N",
        default_value_t = defaults().max_tokens
    )]
    pub(crate) max_tokens: u32,

    /// Stop when the output contains S; S is not printed (repeatable).
    #[arg(long = "stop", value_name = "S")]
    pub(crate) stop: Vec<String>,
}

/// The runtime's generation defaults, which the flags' defaults show.
fn defaults() -> GenerateOptions {
    GenerateOptions::default()
}

impl SamplingArgs {
    /// The generation options these flags ask for.
    pub(crate) fn options(&self) -> GenerateOptions {
        GenerateOptions {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
        }
    }
}

impl ModelArgs {
    /// The load options these flags ask for.
    pub(crate) fn load_options(&self, vocab_only: bool) -> LoadOptions {
        LoadOptions {
            engine: self.engine.clone(),
            tokenizer: self.tokenizer.clone(),
            context_length: self.ctx_size,
            threads: self.threads,
            batch_size: self.batch_size,
            gpu_layers: self.gpu_layers,
            vocab_only,
            force: self.force,
            parallel: 0,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,

    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,

    /// Use these token ids as the prompt instead of text, e.g. "1 403 407".
    #[arg(long = "prompt-ids", value_name = "IDS", conflicts_with = "prompt")]
    pub(crate) prompt_ids: Option<String>,

    /// Do not add BOS (or the model's other special prefix) to a text prompt.
    #[arg(long = "no-bos")]
    pub(crate) no_bos: bool,

    /// Print one JSON object at the end (prompt_ids, generated_ids, text, stop_reason,
    /// metrics) instead of streaming text.
    #[arg(long)]
    pub(crate) json: bool,

    /// With --json: each generated token's log-probability and the K most likely
    /// alternatives at its position (0-20), under "logprobs".
    #[arg(long, value_name = "K", requires = "json", value_parser = clap::value_parser!(u32).range(0..=20))]
    pub(crate) logprobs: Option<u32>,

    /// The prompt; read from stdin when absent and stdin is not a terminal.
    pub(crate) prompt: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct TokenizeArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,

    /// Add no special tokens (BOS) and treat special-token text as plain text.
    #[arg(long = "no-special")]
    pub(crate) no_special: bool,

    /// Print {"ids": [...], "pieces": [...]}.
    #[arg(long)]
    pub(crate) json: bool,

    /// Text to tokenize; read from stdin exactly as given (no trimming) when absent.
    pub(crate) text: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Model file or folder, a store id, or `mock`. Repeatable: each model is benchmarked
    /// in turn (on the engine chosen for its format, or on each `--engine`), so engines
    /// that read different files of the same weights (a GGUF, a `.pte`) share one table.
    #[arg(short, long, value_name = "PATH|ID", required = true)]
    pub(crate) model: Vec<String>,

    /// Load even when the memory estimate exceeds the available memory.
    #[arg(long)]
    pub(crate) force: bool,

    /// Engines to compare (repeatable); default: the one chosen for the model's format.
    #[arg(short, long = "engine", value_name = "ID")]
    pub(crate) engines: Vec<String>,

    /// Separate tokenizer file, for formats that need one.
    #[arg(long, value_name = "PATH")]
    pub(crate) tokenizer: Option<PathBuf>,

    /// Prompt text.
    #[arg(short, long, default_value = "Once upon a time")]
    pub(crate) prompt: String,

    /// Tokens to generate per run.
    #[arg(
        short = 'n',
        long = "max-tokens",
        value_name = "N",
        default_value_t = 128
    )]
    pub(crate) max_tokens: u32,

    /// Measured runs per engine (after one warm-up run).
    #[arg(short, long, value_name = "N", default_value_t = 3)]
    pub(crate) runs: u32,

    /// Run N generations at once (each its own prompt): aggregate and per-stream decode
    /// speed; the engine decodes them together where it can (llama.cpp).
    #[arg(long, value_name = "N")]
    pub(crate) parallel: Option<u32>,

    /// Instead: a chat of N turns (the prompt as each user message, replies of
    /// --max-tokens): time to first token per turn, continuing the conversation (the
    /// engine's prompt cache) and with the cache emptied first.
    #[arg(long = "chat-turns", value_name = "N")]
    pub(crate) chat_turns: Option<u32>,

    /// Context length (0 = the model's own).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 0)]
    pub(crate) ctx_size: u32,

    /// Worker threads (0 = the engine's default, about the physical cores).
    #[arg(short, long, value_name = "N", default_value_t = 0)]
    pub(crate) threads: u32,

    /// Measure each engine twice, in-process and in a worker process, and print the
    /// worker's speed as a ratio of the in-process one.
    #[arg(long = "compare-isolation", conflicts_with_all = ["parallel", "chat_turns"])]
    pub(crate) compare_isolation: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,

    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,

    /// System message that starts the conversation.
    #[arg(long, value_name = "TEXT")]
    pub(crate) system: Option<String>,

    /// Jinja chat template to use instead of the model's own.
    #[arg(
        long = "chat-template",
        value_name = "JINJA",
        conflicts_with = "chat_template_file"
    )]
    pub(crate) chat_template: Option<String>,

    /// File with a Jinja chat template to use instead of the model's own.
    #[arg(long = "chat-template-file", value_name = "FILE")]
    pub(crate) chat_template_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    /// Print JSON (an array of catalog entries) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// A catalog id (see `runanywhere catalog`) or hf.co/OWNER/REPO/PATH[@REVISION]; a
    /// PATH without an extension is a folder whose model files are pulled.
    #[arg(value_name = "MODEL")]
    pub(crate) model: String,

    /// Store the model under this id (default: the catalog id, or the file's stem).
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,

    /// Retries after a network failure (each resumes the download), with exponential
    /// backoff from 0.5 s.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) retries: u32,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The model file or folder.
    #[arg(value_name = "PATH")]
    pub(crate) path: PathBuf,

    /// Store the model under this id (default: the file's stem or the folder's name).
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,

    /// Symlink the files into the store instead of copying them.
    #[arg(long)]
    pub(crate) link: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// A model file or folder, or a store id.
    #[arg(value_name = "PATH|ID")]
    pub(crate) model: String,

    /// Print the verification as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ModelsArgs {
    /// Print JSON (an array of store entries) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The store id.
    #[arg(value_name = "ID")]
    pub(crate) id: String,

    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short, long)]
    pub(crate) yes: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// A store id, or a model file or folder.
    #[arg(value_name = "ID|PATH")]
    pub(crate) model: String,

    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ConvertTarget {
    /// An ONNX decoder with KV cache (model.onnx), runnable with `--engine onnx`.
    Onnx,
    /// A Hugging Face folder (model.safetensors), runnable with `--engine candle`.
    Safetensors,
}

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// The format to write.
    #[arg(long = "to", value_name = "FORMAT")]
    pub(crate) to: ConvertTarget,

    /// A llama-family GGUF file (any tensor type; quantised ones are dequantised to
    /// f32), a llama2.c checkpoint, or a store id.
    #[arg(value_name = "MODEL")]
    pub(crate) model: String,

    /// The folder to write (written next to it first, then renamed into place).
    #[arg(value_name = "OUT_DIR")]
    pub(crate) out_dir: PathBuf,

    /// Replace OUT_DIR when it exists and is not empty.
    #[arg(long)]
    pub(crate) force: bool,

    /// The llama2.c tokenizer (tok*.bin); default: found next to the checkpoint.
    #[arg(long, value_name = "PATH")]
    pub(crate) tokenizer: Option<PathBuf>,

    /// Context length to record as max_position_embeddings (engines cap their context
    /// at it); default: the model's, for ONNX at least 512.
    #[arg(long = "context-length", value_name = "N")]
    pub(crate) context_length: Option<usize>,

    /// ONNX: keep the weights in model.onnx_data even under 2 GiB (above, always).
    #[arg(long = "external-data")]
    pub(crate) external_data: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (loopback by default; another address without --api-key
    /// is reachable by anyone on the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,

    /// Port (0 = any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub(crate) port: u16,

    /// A model to load at start and serve: a path, store id or catalog id, optionally
    /// `@ENGINE` (repeatable). Named in requests by its file name or id.
    #[arg(short, long = "model", value_name = "M")]
    pub(crate) models: Vec<String>,

    /// Serve model M under NAME (repeatable), e.g. `--alias tiny=stories260K.gguf@candle`.
    #[arg(long = "alias", value_name = "NAME=M", value_parser = parse_alias)]
    pub(crate) aliases: Vec<(String, String)>,

    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "RUNANYWHERE_API_KEY",
        hide_env_values = true
    )]
    pub(crate) api_key: Option<String>,

    /// Generations run together on one model where its engine decodes sequences in
    /// parallel (elsewhere they take turns).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) parallel: usize,

    /// Requests that may wait for a busy model; more get 503 with Retry-After.
    #[arg(long = "max-queue", value_name = "N", default_value_t = 64)]
    pub(crate) max_queue: usize,

    /// How long an idle model stays loaded: `5m`, `1h`, `0` (unload when idle), `-1`
    /// (forever). Requests may choose their own (Ollama's keep_alive).
    #[arg(long = "keep-alive", value_name = "DUR", default_value = "5m", value_parser = parse_keep_alive)]
    pub(crate) keep_alive: runanywhere::KeepAlive,

    /// Bytes all loaded models may take together (e.g. 8G, 512M); the least recently
    /// used idle model is unloaded to make room. Default: the memory available.
    #[arg(long = "memory-budget", value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) memory_budget: Option<u64>,

    /// Allow browser requests from ORIGIN (repeatable); CORS is off without it.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub(crate) cors_origins: Vec<String>,

    /// Largest request body (larger: 413).
    #[arg(long = "max-body", value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub(crate) max_body: u64,

    /// Most tokens one request may generate (also the limit of one that names none).
    #[arg(long = "max-tokens", value_name = "N", default_value_t = 4096)]
    pub(crate) max_tokens: u32,

    /// Cancel a generation still running after this long (504).
    #[arg(long = "request-timeout", value_name = "DUR", default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) request_timeout: std::time::Duration,

    /// On shutdown, how long in-flight generations may take before they are cancelled.
    #[arg(long = "drain-timeout", value_name = "DUR", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) drain_timeout: std::time::Duration,

    /// Context length of every load (0 = the model's own, capped by the engine).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 0)]
    pub(crate) ctx_size: u32,

    /// Worker threads per model (0 = the engine's default).
    #[arg(short, long, value_name = "N", default_value_t = 0)]
    pub(crate) threads: u32,

    /// Load even when the memory estimate exceeds the available memory.
    #[arg(long)]
    pub(crate) force: bool,
}

fn parse_alias(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, model)) if !name.trim().is_empty() && !model.trim().is_empty() => {
            Ok((name.trim().to_string(), model.trim().to_string()))
        }
        _ => Err(format!("`{text}` is not NAME=MODEL")),
    }
}

/// `5m`, `1h30m`, seconds (`300`), `0` (until idle) or a negative number (forever): the
/// runtime's [`runanywhere::KeepAlive::parse`].
pub(crate) fn parse_keep_alive(text: &str) -> Result<runanywhere::KeepAlive, String> {
    runanywhere::KeepAlive::parse(text)
        .ok_or_else(|| format!("`{text}` is not a duration such as 5m, 1h or 300"))
}

/// Bytes with an optional binary suffix: `1048576`, `512K`, `16M`, `8G`, `1T`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let value: f64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 8G, 512M or 1048576"))?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(format!("`{text}` is not a size"));
    }
    Ok((value * (1u64 << shift) as f64) as u64)
}

#[derive(Debug, Args)]
pub(crate) struct EmbedArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,

    /// How token states become one vector: mean, cls (first token) or last (default:
    /// the model's own, else mean).
    #[arg(long, value_name = "HOW", value_parser = ["mean", "cls", "last"])]
    pub(crate) pooling: Option<String>,

    /// Keep the vectors' lengths (default: scaled to unit length).
    #[arg(long = "no-normalize")]
    pub(crate) no_normalize: bool,

    /// Print one JSON object: engine, pooling, dims, embeddings.
    #[arg(long)]
    pub(crate) json: bool,

    /// Texts to embed; one per line from stdin when none is given.
    pub(crate) texts: Vec<String>,
}
