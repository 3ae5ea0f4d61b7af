//! The sampling chain on a logits vector, shared by every engine that computes logits
//! itself (llama.cpp has its own chain, configured from the same [`SamplingParams`]).
//!
//! Order, as in llama.cpp's default chain: repetition penalty → top-k → top-p →
//! min-p → temperature → draw. At temperature 0 only the penalty applies, then argmax
//! (the first maximum wins on ties, as in llama.cpp's greedy sampler).
//!
//! The random number generator is a small xoshiro256** seeded through splitmix64, kept
//! here rather than taken from a crate so that a seed gives the same tokens in every
//! build, whatever crate versions the plugins use.

use crate::abi::SamplingParams;
use crate::error::EngineError;

/// Refuses sampling parameters that are not finite numbers (NaN or infinite values would
/// poison any sampler, ours or a framework's). [`crate::decode::Decoding::start`] calls
/// it, so every engine refuses them the same way.
pub fn validate(p: &SamplingParams) -> Result<(), EngineError> {
    for (name, value) in [
        ("temperature", p.temperature),
        ("top_p", p.top_p),
        ("min_p", p.min_p),
        ("repeat_penalty", p.repeat_penalty),
    ] {
        if !value.is_finite() {
            return Err(EngineError::invalid_request(format!(
                "sampling.{name} must be a finite number, not {value}"
            )));
        }
    }
    Ok(())
}

/// A seeded sampler. One per generation.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `params`, seeded from `params.seed`.
    pub fn new(params: &SamplingParams) -> Self {
        Sampler {
            params: *params,
            rng: Rng::new(params.seed),
            candidates: Vec::new(),
        }
    }

    /// Whether this sampler is greedy (temperature ≤ 0).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0
    }

    /// Picks the next token from `logits` (modified in place by the penalty).
    /// `history` is the token sequence so far (prompt and generated); the last
    /// `repeat_window` of it are penalised.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_repeat_penalty(logits, history);
        if self.is_greedy() {
            return argmax(logits);
        }
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l)),
        );
        if self.candidates.is_empty() {
            return argmax(logits);
        }
        // Sort descending by logit; stable so equal logits keep id order.
        self.candidates
            .sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));

        let p = self.params;
        if p.top_k > 0 && (p.top_k as usize) < self.candidates.len() {
            self.candidates.truncate(p.top_k as usize);
        }
        softmax_in_place(&mut self.candidates, 1.0);
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = self.candidates.len();
            for (i, (_, prob)) in self.candidates.iter().enumerate() {
                cumulative += prob;
                if cumulative >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.candidates.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let threshold = self.candidates[0].1 * p.min_p;
            let keep = self
                .candidates
                .iter()
                .take_while(|(_, prob)| *prob >= threshold)
                .count();
            self.candidates.truncate(keep.max(1));
        }
        // Back to logits (log of the renormalised probabilities) and apply temperature.
        for c in &mut self.candidates {
            c.1 = c.1.max(f32::MIN_POSITIVE).ln();
        }
        softmax_in_place(&mut self.candidates, p.temperature);
        let r = self.rng.next_f32();
        let mut cumulative = 0.0;
        for &(id, prob) in &self.candidates {
            cumulative += prob;
            if r < cumulative {
                return id;
            }
        }
        self.candidates[self.candidates.len() - 1].0
    }

    fn apply_repeat_penalty(&self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.params.repeat_penalty;
        if penalty == 1.0 || penalty <= 0.0 || self.params.repeat_window == 0 {
            return;
        }
        let start = history
            .len()
            .saturating_sub(self.params.repeat_window as usize);
        let mut seen: Vec<u32> = history[start..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }
}

/// Index of the largest value; the first one on ties; 0 for an empty slice.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

/// Softmax of the second field, divided by `temperature` first, in place.
fn softmax_in_place(candidates: &mut [(u32, f32)], temperature: f32) {
    let max = candidates
        .iter()
        .map(|c| c.1)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for c in candidates.iter_mut() {
        c.1 = ((c.1 - max) / temperature).exp();
        sum += c.1;
    }
    for c in candidates.iter_mut() {
        c.1 /= sum;
    }
}

/// xoshiro256** seeded with splitmix64: small, fast, identical everywhere.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform float in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_window: 64,
            seed,
        }
    }

    #[test]
    fn greedy_is_argmax_and_first_max_wins_ties() {
        let mut s = Sampler::new(&params(0.0, 1));
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
        assert_eq!(s.sample(&mut [1.0, 5.0, 5.0], &[]), 1);
    }

    #[test]
    fn top_k_one_equals_greedy_at_any_temperature() {
        let mut p = params(5.0, 7);
        p.top_k = 1;
        let mut s = Sampler::new(&p);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.5, 0.4, 0.6, 0.1], &[]), 2);
        }
    }

    #[test]
    fn same_seed_same_draws_different_seed_differs() {
        let draw = |seed| {
            let mut s = Sampler::new(&params(1.0, seed));
            (0..64)
                .map(|_| s.sample(&mut [0.0; 16], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn min_p_removes_unlikely_tokens() {
        let mut p = params(1.0, 3);
        p.min_p = 0.5;
        let mut s = Sampler::new(&p);
        // exp(-10) is far below half of the top probability: never drawn.
        for _ in 0..200 {
            let id = s.sample(&mut [0.0, 0.0, -10.0], &[]);
            assert!(id == 0 || id == 1, "drew {id}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut p = params(1.0, 5);
        p.top_p = 0.5;
        let mut s = Sampler::new(&p);
        // Token 3 alone holds well over half of the mass.
        for _ in 0..200 {
            assert_eq!(s.sample(&mut [0.0, 0.0, 0.0, 4.0], &[]), 3);
        }
    }

    #[test]
    fn repeat_penalty_changes_the_greedy_choice() {
        let mut p = params(0.0, 0);
        p.repeat_penalty = 2.0;
        let mut s = Sampler::new(&p);
        // 2.0 / 2 = 1.0 < 1.5: the repeated token loses.
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]), 1);
        // Outside the window it is not penalised.
        p.repeat_window = 1;
        let mut s = Sampler::new(&p);
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0, 1]), 0);
    }

    #[test]
    fn non_finite_parameters_are_refused() {
        assert!(validate(&SamplingParams::greedy()).is_ok());
        let mut p = SamplingParams::greedy();
        p.top_p = f32::NAN;
        let err = validate(&p).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidRequest);
        assert_eq!(
            err.message(),
            "sampling.top_p must be a finite number, not NaN"
        );
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(9);
        let mean: f32 = (0..10_000).map(|_| r.next_f32()).sum::<f32>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
