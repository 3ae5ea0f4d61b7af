//! What a front end asks for, in one place: [`GenerateOptions`] (sampling and stopping,
//! with the one set of defaults every front end shares) and [`LoadOptions`] (engine,
//! context, threads, ...). Each converts to the ABI's request in exactly one place.

use std::path::PathBuf;

use runanywhere_plugin_api::{GenerateRequest, LoadRequest, Prompt, SamplingParams};
use serde::{Deserialize, Serialize};

/// Sampling and stopping options of one generation. `Default` is the runtime's default
/// (the CLI's flags default to these, and a server fills missing fields from them):
/// temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no repeat penalty over the last 64
/// tokens, at most 256 new tokens, a random seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateOptions {
    /// Temperature; 0 = greedy (deterministic).
    pub temperature: f32,
    /// Sample among the K most likely tokens (0 = off).
    pub top_k: u32,
    /// Nucleus sampling threshold, in (0, 1] (1 = off).
    pub top_p: f32,
    /// Drop tokens below this fraction of the top probability, in [0, 1) (0 = off).
    pub min_p: f32,
    /// Penalty for repeated tokens (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: u32,
    /// The random seed; `None` draws one (see [`GenerateOptions::seed_or_random`]).
    pub seed: Option<u64>,
    /// At most this many new tokens (0 = until the context is full).
    pub max_tokens: u32,
    /// Stop when the output contains one of these (not emitted).
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        let s = SamplingParams::default();
        GenerateOptions {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            repeat_last_n: s.repeat_window,
            seed: None,
            max_tokens: 256,
            stop: Vec::new(),
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding, otherwise the defaults.
    pub fn greedy() -> Self {
        GenerateOptions {
            temperature: 0.0,
            ..GenerateOptions::default()
        }
    }

    /// The seed to use: the one given, or one drawn from the clock and the process id.
    pub fn seed_or_random(&self) -> u64 {
        self.seed.unwrap_or_else(random_seed)
    }

    /// The engine request for `prompt` with `seed` (use [`seed_or_random`] once per
    /// generation, and report the seed). Special tokens: BOS is added, special-token text
    /// in the prompt is not parsed; callers change `add_special` / `parse_special` on
    /// the result where they know better (chat templates).
    ///
    /// [`seed_or_random`]: GenerateOptions::seed_or_random
    pub fn request(&self, prompt: Prompt, seed: u64) -> GenerateRequest {
        let mut request = GenerateRequest::new(prompt);
        request.max_tokens = self.max_tokens;
        request.sampling = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_window: self.repeat_last_n,
            seed,
        };
        request.stop = self.stop.iter().map(|s| s.as_str().into()).collect();
        request
    }
}

/// A seed from the clock and the process id, for generations without one.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// How to load a model. Two loads with equal options (and the same model) share one
/// loaded model in the [`crate::ModelManager`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// The engine id; `None` chooses from the model's content.
    pub engine: Option<String>,
    /// A separate tokenizer file, for formats that need one (llama2.c `tok*.bin`); the
    /// store's own is used when the model comes from the store.
    pub tokenizer: Option<PathBuf>,
    /// Context length in tokens (0 = the model's own, capped by the engine).
    pub context_length: u32,
    /// Worker threads (0 = the engine's default; capped at the logical CPUs).
    pub threads: u32,
    /// Prompt batch size (0 = the engine's default).
    pub batch_size: u32,
    /// Layers to offload to a GPU where the engine can (-1 = all).
    pub gpu_layers: i32,
    /// Load only the vocabulary (tokenize, no generation).
    pub vocab_only: bool,
    /// Skip the memory check.
    pub force: bool,
    /// Sequences the engine decodes together (0 or 1 = one at a time), for engines that
    /// can (llama.cpp); generations on the model then run side by side.
    pub parallel: u32,
}

impl LoadOptions {
    /// The engine request for the model at `model` (with the store's `tokenizer`, if it
    /// has one and no other was given).
    pub fn request(
        &self,
        model: &std::path::Path,
        tokenizer: Option<&std::path::Path>,
    ) -> LoadRequest {
        LoadRequest {
            model_path: model.to_string_lossy().into_owned().into(),
            tokenizer_path: self
                .tokenizer
                .as_deref()
                .or(tokenizer)
                .map(|p| p.to_string_lossy().into_owned().into())
                .into(),
            context_length: self.context_length,
            threads: self.threads,
            batch_size: self.batch_size,
            gpu_layers: self.gpu_layers,
            vocab_only: self.vocab_only,
            seed: 0,
            extensions: if self.parallel > 1 {
                vec![runanywhere_plugin_api::KeyValue::new(
                    "parallel",
                    self.parallel.to_string(),
                )]
                .into()
            } else {
                Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_kits_sampling_defaults_and_convert_once() {
        let o = GenerateOptions {
            stop: vec!["\n\n".into()],
            ..GenerateOptions::default()
        };
        let r = o.request(Prompt::Text("hi".into()), 7);
        assert_eq!(r.max_tokens, 256);
        assert_eq!(
            r.sampling,
            SamplingParams {
                seed: 7,
                ..SamplingParams::default()
            }
        );
        assert_eq!(r.stop.len(), 1);
        assert!(r.add_special && !r.parse_special);
        assert_eq!(
            GenerateOptions::greedy()
                .request(Prompt::Text("".into()), 0)
                .sampling
                .temperature,
            0.0
        );
        let json: GenerateOptions = serde_json::from_str(r#"{"temperature": 0}"#).unwrap();
        assert_eq!(
            json,
            GenerateOptions {
                temperature: 0.0,
                ..GenerateOptions::default()
            }
        );
    }
}
