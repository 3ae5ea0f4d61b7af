//! SentencePiece (llama.cpp's `llama` / SPM) vocabularies as BPE tokenizers.
//!
//! llama.cpp's SPM tokenizer starts from the characters of the (space-escaped,
//! space-prefixed) text and repeatedly merges the adjacent pair whose concatenation is a
//! token with the highest score, leftmost first on ties; characters that never became
//! part of a token fall back to `<0xXX>` byte tokens. A BPE model reproduces this when
//! its merges are all pairs `(a, b)` of tokens whose concatenation `ab` is a token,
//! ranked by the score of `ab`, highest first: the lowest-ranked applicable merge is
//! then always the highest-scoring one. Ties between different merged tokens of equal
//! score are broken by id (SentencePiece BPE scores are distinct, so this is moot for
//! real vocabularies).

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::json::{added_tokens, load, post_processor, vocab_map};
use super::{SpecialTokens, SpmVocab, TokenType};

/// SentencePiece's whitespace marker.
pub const SPACE: &str = "\u{2581}";

/// Builds the tokenizer of an SPM vocabulary.
pub fn build(vocab: &SpmVocab, special: &SpecialTokens) -> Result<Tokenizer, String> {
    let n = vocab.tokens.len();
    if vocab.scores.len() != n || vocab.types.len() != n {
        return Err(format!(
            "{n} tokens but {} scores and {} types",
            vocab.scores.len(),
            vocab.types.len()
        ));
    }
    let map = vocab_map(&vocab.tokens);
    let id_of = |s: &str| map.get(s).and_then(Value::as_u64);

    // Every split of every token into two tokens, ranked by the merged token's score.
    let mut merges: Vec<(f32, usize, u64, &str, &str)> = Vec::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        // Only the id a text maps to can be produced by merging.
        if id_of(token) != Some(id as u64) {
            continue;
        }
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if let (Some(l), Some(_)) = (id_of(left), id_of(right)) {
                merges.push((vocab.scores[id], id, l, left, right));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<Value> = merges.iter().map(|m| json!([m.3, m.4])).collect();

    let unk = special
        .unk
        .and_then(|id| vocab.tokens.get(id as usize))
        .or_else(|| {
            vocab
                .types
                .iter()
                .position(|t| *t == TokenType::Unknown)
                .map(|i| &vocab.tokens[i])
        });

    let mut normalizers = Vec::new();
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": SPACE}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if vocab.add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": SPACE}));
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE}));

    let model = json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": unk,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": true,
        "byte_fallback": true,
        "ignore_merges": false,
        "vocab": map,
        "merges": merges,
    });
    load(
        added_tokens(&vocab.tokens, &vocab.types, &vocab.rstrip),
        json!({"type": "Sequence", "normalizers": normalizers}),
        Value::Null,
        post_processor(&vocab.tokens, special),
        json!({"type": "Sequence", "decoders": decoders}),
        model,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(pieces: &[(&str, f32, TokenType)]) -> SpmVocab {
        SpmVocab {
            tokens: pieces.iter().map(|p| p.0.to_string()).collect(),
            scores: pieces.iter().map(|p| p.1).collect(),
            types: pieces.iter().map(|p| p.2).collect(),
            add_space_prefix: true,
            rstrip: Vec::new(),
        }
    }

    fn ids(t: &Tokenizer, text: &str, add_special: bool) -> Vec<u32> {
        t.encode(text, add_special).unwrap().get_ids().to_vec()
    }

    #[test]
    fn merges_follow_scores_and_bytes_fall_back() {
        use TokenType::*;
        let mut pieces = vec![
            ("<unk>", 0.0, Unknown),
            ("<s>", 0.0, Control),
            ("</s>", 0.0, Control),
        ];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        pieces.extend(bytes.iter().map(|b| (b.as_str(), 0.0, Byte)));
        // "▁ab" can be made as "▁a"+"b" or "▁"+"ab"; "ab" scores higher than "▁a".
        pieces.extend([
            (SPACE, -1.0, Normal),
            ("a", -2.0, Normal),
            ("b", -3.0, Normal),
            ("ab", -4.0, Normal),
            ("\u{2581}a", -5.0, Normal),
            ("\u{2581}ab", -6.0, Normal),
        ]);
        let special = SpecialTokens {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            add_bos: true,
            ..Default::default()
        };
        let t = build(&vocab(&pieces), &special).unwrap();
        let id = |s: &str| t.token_to_id(s).unwrap();
        assert_eq!(ids(&t, "ab", false), vec![id("\u{2581}ab")]);
        assert_eq!(ids(&t, "ab", true), vec![1, id("\u{2581}ab")]);
        assert_eq!(ids(&t, "", true), vec![1]);
        assert_eq!(ids(&t, "", false), Vec::<u32>::new());
        // "é" is not a piece: its two UTF-8 bytes.
        assert_eq!(
            ids(&t, "é", false),
            vec![id(SPACE), id("<0xC3>"), id("<0xA9>")]
        );
        assert_eq!(
            ids(&t, "a b", false),
            vec![id("\u{2581}a"), id(SPACE), id("b")]
        );
    }
}
