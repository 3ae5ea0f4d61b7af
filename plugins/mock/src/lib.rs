//! The mock engine: deterministic, tiny, and the only engine allowed canned text.
//!
//! It stands in for a real engine in host tests (the seed's `MockLLMService`): it loads
//! the pseudo-model `mock`, tokenizes with a fixed tiny vocabulary (three specials, 256
//! byte tokens, then a list of words), and generates through the kit's shared loop
//! ([`generate::run`]) like the real engines, from pseudo-logits computed from a hash of
//! the context ([`MockForward`]). Words with multi-byte characters (`café`, `→`) are
//! spelled with byte tokens: their logit sits on the first token of the spelling, and
//! once that is sampled the rest is forced, so characters cross token boundaries and
//! exercise UTF-8 buffering. max_tokens, stop strings, the seed and cancellation behave
//! exactly as in the real engines, because it is the same code.

use runanywhere_plugin_api::{
    export_plugin,
    generate::{self, Forward, Vocabulary},
    sdk::{Engine, Model},
    Capabilities, EngineError, EngineInfo, GenerateRequest, GenerationStats, InitRequest, KeyValue,
    LoadRequest, ModelInfo,
};

/// Special tokens.
const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;
/// Byte tokens are `BYTE0 + b`.
const BYTE0: u32 = 3;
/// First word token.
const WORD0: u32 = BYTE0 + 256;

/// The word vocabulary. Words with non-ASCII characters are not tokens themselves: they
/// are spelled with byte tokens, like byte fallback in SentencePiece, and their spellings
/// start with different bytes (" café" with the space, "→" with 0xE2), so the first
/// token tells which word is being spelled.
const WORDS: &[&str] = &[
    " the", " a", " cat", " dog", " sat", " on", " mat", " and", " ran", " to", " park", " hello",
    " world", " is", " happy", " big", " small", " red", " ball", " saw", " then", " it", " was",
    " sunny", " day", ".", ",", "\n", " café", "→", " end", "hello", "Once", " upon", " time",
];

/// Default context length of the pseudo-model.
const DEFAULT_CONTEXT: u32 = 2048;

/// The mock engine.
pub struct MockEngine {
    id: String,
    /// Sleep per forward step (manifest option `token_delay_ms`): a slow engine, for
    /// tests of queues, timeouts and shutdown in front ends.
    delay: std::time::Duration,
    /// Manifest option `reply`: every generation is exactly this text (spelled with byte
    /// tokens), then end of sequence. Canned text, which only the mock may have: for
    /// front ends' tests of what they do with a given reply (markup in it, say).
    reply: Option<String>,
}

impl Engine for MockEngine {
    type Model = MockModel;

    fn init(request: &InitRequest) -> Result<Self, EngineError> {
        let delay = match runanywhere_plugin_api::abi::lookup(&request.options, "token_delay_ms") {
            None => 0,
            Some(ms) => ms.trim().parse::<u64>().map_err(|_| {
                EngineError::invalid_request(format!(
                    "manifest option token_delay_ms = `{ms}` is not a number of milliseconds"
                ))
            })?,
        };
        let reply =
            runanywhere_plugin_api::abi::lookup(&request.options, "reply").map(str::to_string);
        Ok(MockEngine {
            id: request.engine_id.to_string(),
            delay: std::time::Duration::from_millis(delay),
            reply,
        })
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: self.id.as_str().into(),
            name: "Mock engine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            formats: vec!["mock".into()].into(),
            capabilities: Capabilities::STREAMING | Capabilities::TOKENIZE | Capabilities::LOGPROBS,
            extensions: Vec::new().into(),
        }
    }

    fn load_model(&self, request: &LoadRequest) -> Result<MockModel, EngineError> {
        if request.model_path.as_str() != "mock" {
            return Err(EngineError::unsupported_format(format!(
                "the mock engine loads only the pseudo-model `mock`, not `{}`",
                request.model_path
            )));
        }
        let context_length = match request.context_length {
            0 => DEFAULT_CONTEXT,
            n => n,
        };
        Ok(MockModel {
            context_length,
            vocab_only: request.vocab_only,
            delay: self.delay,
            reply: self.reply.clone(),
        })
    }
}

/// The pseudo-model `mock`.
pub struct MockModel {
    context_length: u32,
    /// Loaded for tokenization only: generating is refused, as in every engine.
    vocab_only: bool,
    delay: std::time::Duration,
    reply: Option<String>,
}

impl MockModel {
    fn vocab_size(&self) -> u32 {
        WORD0 + WORDS.len() as u32
    }

    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        match id {
            UNK => Ok(b"<unk>".to_vec()),
            BOS => Ok(b"<s>".to_vec()),
            EOS => Ok(b"</s>".to_vec()),
            b if (BYTE0..WORD0).contains(&b) => Ok(vec![(b - BYTE0) as u8]),
            w if w < self.vocab_size() => Ok(WORDS[(w - WORD0) as usize].as_bytes().to_vec()),
            other => Err(EngineError::invalid_request(format!(
                "token id {other} is outside the mock vocabulary (size {})",
                self.vocab_size()
            ))),
        }
    }

    /// Pseudo-logits over the words, from a hash of the last two tokens and the position.
    fn word_logits(history: &[u32]) -> Vec<f32> {
        let last = history.last().copied().unwrap_or(BOS) as u64;
        let prev = history.len().checked_sub(2).map_or(0, |i| history[i]) as u64;
        let pos = history.len() as u64;
        (0..WORDS.len() as u64)
            .map(|w| {
                let mut h = (last << 32) ^ (prev << 16) ^ (pos << 8) ^ w;
                h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                h ^= h >> 29;
                h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                h ^= h >> 32;
                (h % 1000) as f32 / 100.0
            })
            .collect()
    }
}

impl Model for MockModel {
    fn logprobs(&self) -> bool {
        // The kit's generation loop scores the tokens.
        true
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            architecture: "mock".into(),
            parameter_count: 0,
            context_length: self.context_length,
            train_context_length: DEFAULT_CONTEXT,
            vocab_size: self.vocab_size(),
            bos: Some(BOS).into(),
            eos: Some(EOS).into(),
            eog: vec![EOS].into(),
            chat_template: None.into(),
            extensions: vec![KeyValue::new("general.name", "mock")].into(),
        }
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        let mut ids = Vec::new();
        if add_special {
            ids.push(BOS);
        }
        let mut rest = text;
        while !rest.is_empty() {
            if parse_special {
                if let Some((id, len)) = [("<s>", BOS), ("</s>", EOS)]
                    .iter()
                    .find(|(s, _)| rest.starts_with(s))
                    .map(|(s, id)| (*id, s.len()))
                {
                    ids.push(id);
                    rest = &rest[len..];
                    continue;
                }
            }
            // Longest word match, else one byte token.
            let best = WORDS
                .iter()
                .enumerate()
                .filter(|(_, w)| w.is_ascii() && rest.starts_with(**w))
                .max_by_key(|(_, w)| w.len());
            match best {
                Some((i, w)) => {
                    ids.push(WORD0 + i as u32);
                    rest = &rest[w.len()..];
                }
                None => {
                    let ch = rest.chars().next().map_or(1, char::len_utf8);
                    ids.extend(rest.as_bytes()[..ch].iter().map(|b| BYTE0 + *b as u32));
                    rest = &rest[ch..];
                }
            }
        }
        Ok(ids)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn token_piece(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        self.token_bytes(id)
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        if self.vocab_only {
            return Err(EngineError::vocab_only());
        }
        let tokenize = |text: &str, add: bool, parse: bool| self.tokenize(text, add, parse);
        let bytes = |id: u32, out: &mut Vec<u8>| {
            out.extend(self.token_bytes(id)?);
            Ok(())
        };
        let vocab = Vocabulary {
            size: self.vocab_size(),
            eog: vec![EOS],
            tokenize: &tokenize,
            bytes: &bytes,
        };
        let mut forward = MockForward::new(self)?;
        let context = self.context_length as usize;
        generate::run(&mut forward, &vocab, context, context, request, sink)
    }
}

/// The mock's forward pass: pseudo-logits over the words, placed on each word's token
/// (or the first token of its spelling), or the next token of a word being spelled.
struct MockForward {
    vocab_size: usize,
    /// The token each word's logit sits on.
    starts: Vec<u32>,
    /// Multi-token words: (first token, the rest of the spelling).
    spellings: Vec<(u32, Vec<u32>)>,
    /// Every id run so far.
    history: Vec<u32>,
    /// The rest of the spelling of the word being generated, next token first.
    spelling: Vec<u32>,
    delay: std::time::Duration,
    /// The `reply` option's tokens, then EOS, and how long the prompt was.
    script: Option<Vec<u32>>,
    prompt_len: usize,
}

impl MockForward {
    fn new(model: &MockModel) -> Result<Self, EngineError> {
        let mut starts = Vec::with_capacity(WORDS.len());
        let mut spellings = Vec::new();
        for word in WORDS {
            let ids = model.tokenize(word, false, false)?;
            starts.push(ids[0]);
            if ids.len() > 1 {
                spellings.push((ids[0], ids[1..].to_vec()));
            }
        }
        Ok(MockForward {
            vocab_size: model.vocab_size() as usize,
            starts,
            spellings,
            history: Vec::new(),
            spelling: Vec::new(),
            delay: model.delay,
            script: model.reply.as_ref().map(|r| {
                let mut ids: Vec<u32> = r.bytes().map(|b| BYTE0 + u32::from(b)).collect();
                ids.push(EOS);
                ids
            }),
            prompt_len: 0,
        })
    }
}

impl Forward for MockForward {
    fn reset(&mut self) -> Result<(), EngineError> {
        self.history.clear();
        self.spelling.clear();
        Ok(())
    }

    fn forward(
        &mut self,
        ids: &[u32],
        _pos: usize,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        // After the prompt, generated ids arrive one at a time: the first token of a
        // spelled word starts its spelling, and each forced token advances it.
        if let (false, [id]) = (self.history.is_empty(), ids) {
            if self.spelling.first() == Some(id) {
                self.spelling.remove(0);
            } else {
                self.spelling = self
                    .spellings
                    .iter()
                    .find(|(first, _)| first == id)
                    .map(|(_, rest)| rest.clone())
                    .unwrap_or_default();
            }
        }
        if self.history.is_empty() {
            self.prompt_len = ids.len();
        }
        self.history.extend_from_slice(ids);
        logits.clear();
        logits.resize(self.vocab_size, f32::NEG_INFINITY);
        if let Some(script) = &self.script {
            let at = self.history.len() - self.prompt_len;
            logits[script.get(at).copied().unwrap_or(EOS) as usize] = 0.0;
            return Ok(());
        }
        if let Some(&next) = self.spelling.first() {
            logits[next as usize] = 0.0;
            return Ok(());
        }
        for (&start, logit) in self
            .starts
            .iter()
            .zip(MockModel::word_logits(&self.history))
        {
            logits[start as usize] = logit;
        }
        Ok(())
    }
}

export_plugin!(MockEngine);

#[cfg(test)]
mod tests {
    use super::*;
    use runanywhere_plugin_api::{Prompt, SinkControl, StopReason};

    fn model() -> MockModel {
        MockModel {
            context_length: 64,
            vocab_only: false,
            delay: std::time::Duration::ZERO,
            reply: None,
        }
    }

    fn generate(
        m: &MockModel,
        prompt: &str,
        max: u32,
        stop: &[&str],
        temp: f32,
        seed: u64,
    ) -> (Vec<u32>, String, StopReason) {
        let mut req = GenerateRequest::new(Prompt::Text(prompt.into()));
        req.max_tokens = max;
        req.stop = stop.iter().map(|s| (*s).into()).collect();
        req.sampling.temperature = temp;
        req.sampling.seed = seed;
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut sink = |id: u32, piece: &str| {
            ids.push(id);
            text.push_str(piece);
            SinkControl::Continue
        };
        let stats = m.generate(&req, &mut sink).unwrap();
        assert_eq!(stats.generated_tokens as usize, ids.len());
        (ids, text, stats.stop_reason())
    }

    #[test]
    fn tokenize_round_trips_including_non_ascii() {
        let m = model();
        let text = "hello world café →!";
        let ids = m.tokenize(text, false, false).unwrap();
        assert_eq!(m.detokenize(&ids).unwrap(), text);
        assert_eq!(ids[0], WORD0 + 31); // "hello"
        assert_eq!(m.tokenize("", true, false).unwrap(), vec![BOS]);
        assert_eq!(m.tokenize("<s>", false, true).unwrap(), vec![BOS]);
        assert_eq!(m.tokenize("<s>", false, false).unwrap().len(), 3);
    }

    #[test]
    fn the_reply_option_is_the_whole_reply_at_any_temperature() {
        let m = MockModel {
            reply: Some("<b>café</b> →".into()),
            ..model()
        };
        for (temp, seed) in [(0.0, 1), (1.5, 7)] {
            let (ids, text, stop) = generate(&m, "hello world", 50, &[], temp, seed);
            assert_eq!(text, "<b>café</b> →");
            assert_eq!(
                ids.len(),
                "<b>café</b> →".len(),
                "its bytes, then EOS (not emitted)"
            );
            assert_eq!(stop, StopReason::EndOfGeneration);
        }
        // max_tokens still cuts it.
        let (_, text, stop) = generate(&m, "hello", 3, &[], 0.0, 1);
        assert_eq!((text.as_str(), stop), ("<b>", StopReason::MaxTokens));
    }

    #[test]
    fn greedy_is_deterministic_and_respects_max_tokens() {
        let m = model();
        let a = generate(&m, "hello", 20, &[], 0.0, 1);
        let b = generate(&m, "hello", 20, &[], 0.0, 2);
        assert_eq!(a, b);
        assert_eq!(a.0.len(), 20);
        assert_eq!(a.2, StopReason::MaxTokens);
    }

    #[test]
    fn seed_controls_sampling() {
        let m = model();
        let a = generate(&m, "hello", 30, &[], 1.5, 7);
        assert_eq!(a, generate(&m, "hello", 30, &[], 1.5, 7));
        assert_ne!(a.0, generate(&m, "hello", 30, &[], 1.5, 8).0);
    }

    #[test]
    fn context_fills_up() {
        let m = model();
        let (ids, _, reason) = generate(&m, "hello", 0, &[], 0.0, 0);
        assert_eq!(reason, StopReason::ContextFull);
        assert_eq!(ids.len(), 64 + 1 - 2);
    }
}
