//! An example third-party engine: llama2.c checkpoints (`.bin`, with a `tok*.bin`
//! tokenizer next to them) run in plain Rust, f32, one thread, the way Karpathy's
//! `run.c` runs them, so that stories260K gives `run.c`'s greedy ids exactly.
//!
//! It shows what an engine needs from the RunAnywhere kit and nothing more: the two
//! traits and `export_plugin!`, a [`Forward`] (reset the cache, run ids at positions,
//! write the logits) handed to the kit's shared generation loop, the kit's context
//! policy and error helpers. The loop does prompt checks, chunked prefill, sampling,
//! end-of-generation, `max_tokens`, stop strings, UTF-8 streaming and cancellation.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use abi_stable::std_types::ROption;
use runanywhere_plugin_api::generate::{self, Forward, Vocabulary};
use runanywhere_plugin_api::sdk::{Engine, Model, Sink};
use runanywhere_plugin_api::{
    decode, export_plugin, Capabilities, EngineError, EngineInfo, GenerateRequest, GenerationStats,
    InitRequest, LoadRequest, ModelInfo, Prompt,
};

const BOS: u32 = 1;
const EOS: u32 = 2;

/// The engine.
pub struct Llama2cEngine {
    id: String,
}

impl Engine for Llama2cEngine {
    type Model = Llama2cModel;

    fn init(request: &InitRequest) -> Result<Self, EngineError> {
        Ok(Llama2cEngine {
            id: request.engine_id.to_string(),
        })
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: self.id.as_str().into(),
            name: "llama2.c example engine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            formats: vec!["llama2c".into()].into(),
            capabilities: Capabilities::STREAMING | Capabilities::TOKENIZE,
            extensions: Vec::new().into(),
        }
    }

    fn load_model(&self, request: &LoadRequest) -> Result<Llama2cModel, EngineError> {
        Llama2cModel::load(request)
    }
}

/// The seven header fields.
#[derive(Debug, Clone, Copy)]
struct Config {
    dim: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    seq_len: usize,
    shared_classifier: bool,
}

impl Config {
    fn head_size(&self) -> usize {
        self.dim / self.heads
    }

    fn kv_dim(&self) -> usize {
        self.dim * self.kv_heads / self.heads
    }
}

/// The weights, in run.c's layout.
struct Weights {
    embedding: Vec<f32>,
    rms_att: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    rms_ffn: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    w3: Vec<f32>,
    rms_final: Vec<f32>,
    /// The classifier; `None` when it shares the embedding.
    classifier: Option<Vec<f32>>,
}

/// llama2.c's tokenizer: token strings with merge scores.
struct Tokenizer {
    pieces: Vec<Vec<u8>>,
    scores: Vec<f32>,
    lookup: std::collections::HashMap<Vec<u8>, u32>,
}

/// A loaded checkpoint.
pub struct Llama2cModel {
    config: Config,
    weights: Weights,
    tokenizer: Tokenizer,
    context: usize,
    /// The KV cache (one generation at a time).
    cache: Mutex<Cache>,
}

struct Cache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

fn invalid(path: &Path, problem: impl std::fmt::Display) -> EngineError {
    EngineError::invalid_model(format!("{}: {problem}", path.display()))
}

impl Llama2cModel {
    fn load(request: &LoadRequest) -> Result<Self, EngineError> {
        let path = PathBuf::from(request.model_path.as_str());
        let bytes = std::fs::read(&path).map_err(|e| invalid(&path, e))?;
        let field = |i: usize| -> Result<i32, EngineError> {
            bytes
                .get(i * 4..i * 4 + 4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| invalid(&path, "shorter than a llama2.c header"))
        };
        let positive = |i: usize| -> Result<usize, EngineError> {
            usize::try_from(field(i)?.unsigned_abs())
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| invalid(&path, "a header field is 0"))
        };
        let config = Config {
            dim: positive(0)?,
            hidden: positive(1)?,
            layers: positive(2)?,
            heads: positive(3)?,
            kv_heads: positive(4)?,
            vocab: positive(5)?,
            seq_len: positive(6)?,
            shared_classifier: field(5)? > 0,
        };
        if config.dim % config.heads != 0 || config.heads % config.kv_heads != 0 {
            return Err(EngineError::unsupported_format(format!(
                "{}: unsupported llama2.c shape",
                path.display()
            )));
        }
        let weights = read_weights(&path, &bytes[28..], &config)?;
        let tokenizer_path = match &request.tokenizer_path {
            ROption::RSome(p) => PathBuf::from(p.as_str()),
            ROption::RNone => path.with_file_name(format!("tok{}.bin", config.vocab)),
        };
        let tokenizer = Tokenizer::load(&tokenizer_path, config.vocab)?;
        let context =
            decode::context_length(request.context_length, config.seq_len as u32, None)? as usize;
        let kv = context * config.layers * config.kv_dim();
        Ok(Llama2cModel {
            config,
            weights,
            tokenizer,
            context,
            cache: Mutex::new(Cache {
                keys: vec![0.0; kv],
                values: vec![0.0; kv],
            }),
        })
    }
}

fn read_weights(path: &Path, data: &[u8], c: &Config) -> Result<Weights, EngineError> {
    let floats: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<Vec<f32>, EngineError> {
        let part = floats
            .get(at..at + n)
            .ok_or_else(|| invalid(path, "the file ends before its weights do"))?
            .to_vec();
        at += n;
        Ok(part)
    };
    let (d, h, l, kv) = (c.dim, c.hidden, c.layers, c.kv_dim());
    let mut w = Weights {
        embedding: take(c.vocab * d)?,
        rms_att: take(l * d)?,
        wq: take(l * d * d)?,
        wk: take(l * d * kv)?,
        wv: take(l * d * kv)?,
        wo: take(l * d * d)?,
        rms_ffn: take(l * d)?,
        w1: take(l * h * d)?,
        w2: take(l * d * h)?,
        w3: take(l * h * d)?,
        rms_final: take(d)?,
        classifier: None,
    };
    // The legacy freq_cis tables, then (unshared) the classifier.
    take(c.seq_len * c.head_size())?;
    if !c.shared_classifier {
        w.classifier = Some(take(c.vocab * d)?);
    }
    Ok(w)
}

impl Tokenizer {
    fn load(path: &Path, vocab: usize) -> Result<Self, EngineError> {
        let bytes = std::fs::read(path).map_err(|e| {
            invalid(
                path,
                format!("{e} (a llama2.c tokenizer tok{vocab}.bin goes next to the checkpoint)"),
            )
        })?;
        let mut at = 4usize; // max_token_length
        let mut next = |n: usize| -> Result<&[u8], EngineError> {
            let part = bytes
                .get(at..at + n)
                .ok_or_else(|| invalid(path, "truncated tokenizer"))?;
            at += n;
            Ok(part)
        };
        let mut pieces = Vec::with_capacity(vocab);
        let mut scores = Vec::with_capacity(vocab);
        for _ in 0..vocab {
            let s = next(4)?;
            scores.push(f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            let n = next(4)?;
            let len = i32::from_le_bytes([n[0], n[1], n[2], n[3]]);
            let len = usize::try_from(len).map_err(|_| invalid(path, "negative token length"))?;
            pieces.push(next(len)?.to_vec());
        }
        let lookup = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        Ok(Tokenizer {
            pieces,
            scores,
            lookup,
        })
    }

    /// run.c's `encode`: BOS, a dummy space prefix, characters (or their bytes + 3),
    /// then the highest-score merges until none applies.
    fn encode(&self, text: &str, bos: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        if bos {
            ids.push(BOS);
        }
        if !text.is_empty() {
            if let Some(&space) = self.lookup.get(&b" "[..]) {
                ids.push(space);
            }
        }
        for ch in text.chars() {
            let mut buf = [0u8; 4];
            let s = ch.encode_utf8(&mut buf).as_bytes();
            match self.lookup.get(s) {
                Some(&id) => ids.push(id),
                None => ids.extend(s.iter().map(|&b| u32::from(b) + 3)),
            }
        }
        let start = usize::from(bos);
        loop {
            let mut best: Option<(f32, usize, u32)> = None;
            for i in start..ids.len().saturating_sub(1) {
                let mut merged = self.pieces[ids[i] as usize].clone();
                merged.extend_from_slice(&self.pieces[ids[i + 1] as usize]);
                if let Some(&id) = self.lookup.get(&merged) {
                    let score = self.scores[id as usize];
                    if best.is_none_or(|(s, _, _)| score > s) {
                        best = Some((score, i, id));
                    }
                }
            }
            let Some((_, i, id)) = best else { break };
            ids[i] = id;
            ids.remove(i + 1);
        }
        ids
    }

    /// A token's bytes: `<0xAB>` is that byte; the others are their text.
    fn bytes(&self, id: u32) -> Option<Vec<u8>> {
        let piece = self.pieces.get(id as usize)?;
        if let Some(hex) = piece
            .strip_prefix(b"<0x")
            .and_then(|r| r.strip_suffix(b">"))
        {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16) {
                return Some(vec![b]);
            }
        }
        Some(piece.clone())
    }
}

impl Model for Llama2cModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            architecture: "llama".into(),
            parameter_count: 0,
            context_length: self.context as u32,
            train_context_length: self.config.seq_len as u32,
            vocab_size: self.config.vocab as u32,
            bos: Some(BOS).into(),
            eos: Some(EOS).into(),
            eog: vec![EOS].into(),
            chat_template: None.into(),
            extensions: Vec::new().into(),
        }
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        _parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        Ok(self.tokenizer.encode(text, add_special))
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_piece(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn token_piece(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        self.tokenizer
            .bytes(id)
            .ok_or_else(|| EngineError::token_out_of_range(id, self.config.vocab as u32))
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn Sink,
    ) -> Result<GenerationStats, EngineError> {
        let tokenize = |text: &str, add: bool, _: bool| Ok(self.tokenizer.encode(text, add));
        // As run.c prints them: control tokens (BOS, EOS) are not text, and a token
        // right after BOS loses its leading space (SentencePiece's dummy prefix).
        let last_prompt_id = match &request.prompt {
            Prompt::Text(t) if t.is_empty() && request.add_special => Some(BOS),
            Prompt::Text(_) => None,
            Prompt::Ids(ids) => ids.last().copied(),
        };
        let previous = std::cell::Cell::new(last_prompt_id);
        let bytes = |id: u32, out: &mut Vec<u8>| {
            if id > EOS {
                let piece = self.token_piece(id)?;
                let after_bos = previous.get() == Some(BOS);
                out.extend(match (after_bos, piece.strip_prefix(b" ")) {
                    (true, Some(rest)) => rest,
                    _ => &piece[..],
                });
            }
            previous.set(Some(id));
            Ok(())
        };
        let vocab = Vocabulary {
            size: self.config.vocab as u32,
            eog: vec![EOS],
            tokenize: &tokenize,
            bytes: &bytes,
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut run = Run {
            model: self,
            cache: &mut cache,
        };
        generate::run(&mut run, &vocab, self.context, 1, request, sink)
    }
}

/// One generation's forward passes over the model's cache.
struct Run<'a> {
    model: &'a Llama2cModel,
    cache: &'a mut Cache,
}

impl Forward for Run<'_> {
    fn reset(&mut self) -> Result<(), EngineError> {
        // Positions are written before they are read: nothing to clear.
        Ok(())
    }

    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        for (i, &id) in ids.iter().enumerate() {
            self.step(id, pos + i, logits);
        }
        Ok(())
    }
}

impl Run<'_> {
    /// run.c's `forward` for one token.
    fn step(&mut self, token: u32, pos: usize, logits: &mut Vec<f32>) {
        let c = self.model.config;
        let w = &self.model.weights;
        let (d, kv_dim, hs) = (c.dim, c.kv_dim(), c.head_size());
        let kv_mul = c.heads / c.kv_heads;
        let mut x = w.embedding[token as usize * d..(token as usize + 1) * d].to_vec();
        let mut xb = vec![0.0; d];
        let mut q = vec![0.0; d];
        let mut att = vec![0.0; pos + 1];
        let mut hb = vec![0.0; c.hidden];
        let mut hb2 = vec![0.0; c.hidden];
        for l in 0..c.layers {
            rmsnorm(&mut xb, &x, &w.rms_att[l * d..(l + 1) * d]);
            let base = (l * self.model.context + pos) * kv_dim;
            matmul(&mut q, &xb, &w.wq[l * d * d..(l + 1) * d * d]);
            let (keys, values) = (&mut self.cache.keys, &mut self.cache.values);
            matmul(
                &mut keys[base..base + kv_dim],
                &xb,
                &w.wk[l * d * kv_dim..(l + 1) * d * kv_dim],
            );
            matmul(
                &mut values[base..base + kv_dim],
                &xb,
                &w.wv[l * d * kv_dim..(l + 1) * d * kv_dim],
            );
            // RoPE on q and k.
            for i in (0..d).step_by(2) {
                let freq = 1.0 / 10000f32.powf((i % hs) as f32 / hs as f32);
                let (fci, fcr) = (pos as f32 * freq).sin_cos();
                let rotate = |v: &mut [f32]| {
                    let (v0, v1) = (v[i], v[i + 1]);
                    v[i] = v0 * fcr - v1 * fci;
                    v[i + 1] = v0 * fci + v1 * fcr;
                };
                rotate(&mut q);
                if i < kv_dim {
                    rotate(&mut keys[base..base + kv_dim]);
                }
            }
            // Attention, head by head, over positions 0..=pos.
            for h in 0..c.heads {
                let qh = &q[h * hs..(h + 1) * hs];
                let kv_off = (h / kv_mul) * hs;
                for (t, a) in att.iter_mut().enumerate() {
                    let k = (l * self.model.context + t) * kv_dim + kv_off;
                    let score: f32 = qh.iter().zip(&keys[k..k + hs]).map(|(a, b)| a * b).sum();
                    *a = score / (hs as f32).sqrt();
                }
                softmax(&mut att);
                let out = &mut xb[h * hs..(h + 1) * hs];
                out.fill(0.0);
                for (t, &a) in att.iter().enumerate() {
                    let v = (l * self.model.context + t) * kv_dim + kv_off;
                    for (o, &vv) in out.iter_mut().zip(&values[v..v + hs]) {
                        *o += a * vv;
                    }
                }
            }
            let mut xb2 = vec![0.0; d];
            matmul(&mut xb2, &xb, &w.wo[l * d * d..(l + 1) * d * d]);
            x.iter_mut().zip(&xb2).for_each(|(a, b)| *a += b);
            // Feed-forward (SwiGLU).
            rmsnorm(&mut xb, &x, &w.rms_ffn[l * d..(l + 1) * d]);
            let hd = c.hidden * d;
            matmul(&mut hb, &xb, &w.w1[l * hd..(l + 1) * hd]);
            matmul(&mut hb2, &xb, &w.w3[l * hd..(l + 1) * hd]);
            for (a, &b) in hb.iter_mut().zip(&hb2) {
                *a = *a * (1.0 / (1.0 + (-*a).exp())) * b;
            }
            matmul(&mut xb, &hb, &w.w2[l * hd..(l + 1) * hd]);
            x.iter_mut().zip(&xb).for_each(|(a, b)| *a += b);
        }
        let mut out = vec![0.0; d];
        rmsnorm(&mut out, &x, &w.rms_final);
        logits.resize(c.vocab, 0.0);
        let classifier = w.classifier.as_deref().unwrap_or(&w.embedding);
        matmul(logits, &out, classifier);
    }
}

fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32]) {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + 1e-5;
    let ss = 1.0 / ss.sqrt();
    for ((o, &w), &v) in out.iter_mut().zip(weight).zip(x) {
        *o = w * (ss * v);
    }
}

fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `out = W @ x` for `W` of shape `(out.len(), x.len())`, row-major.
fn matmul(out: &mut [f32], x: &[f32], w: &[f32]) {
    let n = x.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = w[i * n..(i + 1) * n]
            .iter()
            .zip(x)
            .map(|(a, b)| a * b)
            .sum();
    }
}

export_plugin!(Llama2cEngine);
