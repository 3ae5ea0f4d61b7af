//! The converted tokenizers against llama.cpp's own test vectors and the stories260K
//! references: exact ids, special tokens not added (as llama.cpp's `test-tokenizer-0`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use runanywhere_convert::gguf::GgufFile;
use runanywhere_convert::tokenizer::{from_gguf_vocab, from_llama2c_tokenizer};
use runanywhere_convert::{ConvertError, Vocab};
use runanywhere_tests::{data_dir, tinystories_references, vocab_cases};

fn vocab_file(name: &str) -> PathBuf {
    data_dir().join(format!("vocab/ggml-vocab-{name}.gguf"))
}

fn gguf_vocab(path: &std::path::Path) -> Vocab {
    let gguf = GgufFile::open(path).unwrap();
    let t = from_gguf_vocab(&gguf).unwrap();
    Vocab::new(t.tokenizer, t.special, 0)
}

/// Every case of `vocab/<name>.gguf.inp` tokenizes to its `.out` line.
fn assert_vectors(name: &str) {
    let path = vocab_file(name);
    let vocab = gguf_vocab(&path);
    let cases = vocab_cases(&path);
    assert_eq!(cases.len(), 46, "{name}");
    let mut failures = Vec::new();
    for (i, (input, expected)) in cases.iter().enumerate() {
        let ids = vocab.tokenize(input, false, false).unwrap();
        if &ids != expected {
            failures.push(format!(
                "case {i} {input:?}:\n  got      {ids:?}\n  expected {expected:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of 46 differ\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_spm_vectors() {
    assert_vectors("llama-spm");
}

#[test]
fn phi3_spm_vectors() {
    assert_vectors("phi-3");
}

#[test]
fn gpt2_bpe_vectors() {
    assert_vectors("gpt-2");
}

#[test]
fn deepseek_coder_bpe_vectors() {
    assert_vectors("deepseek-coder");
}

#[test]
fn wordpiece_vocabularies_are_unsupported_not_wrong() {
    let gguf = GgufFile::open(&vocab_file("bert-bge")).unwrap();
    let err = from_gguf_vocab(&gguf).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("bert"), "{err}");
}

#[test]
fn special_tokens_are_added_and_parsed_only_when_asked() {
    let vocab = gguf_vocab(&vocab_file("llama-spm"));
    assert_eq!(vocab.special().bos, Some(1));
    assert_eq!(vocab.special().eog, vec![2]);
    assert_eq!(
        vocab.tokenize("Hello world", true, false).unwrap(),
        vec![1, 15043, 3186]
    );
    assert_eq!(vocab.tokenize("", true, false).unwrap(), vec![1]);
    // "<s>" is text unless special tokens are parsed.
    let plain = vocab.tokenize("<s>", false, false).unwrap();
    assert_ne!(plain, vec![1]);
    assert_eq!(vocab.tokenize("<s>", false, true).unwrap(), vec![1]);
    // Pieces: the space marker becomes a space, control tokens are empty in text.
    assert_eq!(vocab.token_bytes(15043).unwrap(), b" Hello");
    assert_eq!(vocab.token_bytes(1).unwrap(), b"<s>");
    assert_eq!(vocab.text_bytes(1).unwrap(), b"");
    assert_eq!(vocab.token_bytes(13).unwrap(), b"\n", "<0x0A> is a byte");
    assert_eq!(vocab.detokenize(&[1, 15043, 3186]).unwrap(), " Hello world");

    let gpt2 = gguf_vocab(&vocab_file("gpt-2"));
    let ids = gpt2.tokenize("Hello world", true, false).unwrap();
    assert_eq!(ids, vec![15496, 995], "no BOS for GPT-2");
    assert_eq!(gpt2.token_bytes(995).unwrap(), b" world");
    assert_eq!(gpt2.detokenize(&ids).unwrap(), "Hello world");
}

#[test]
fn tok512_gives_the_reference_prompt_ids_and_agrees_with_the_gguf() {
    let dir = data_dir().join("tinystories");
    let t = from_llama2c_tokenizer(&dir.join("tok512.bin"), 512).unwrap();
    let tok = Vocab::new(t.tokenizer, t.special, 512);
    assert_eq!(
        tok.tokenize("Once upon a time", true, false).unwrap(),
        vec![1, 403, 407, 261, 378]
    );
    for r in tinystories_references() {
        assert_eq!(
            tok.tokenize(&r.prompt, true, false).unwrap(),
            r.prompt_ids,
            "{:?}",
            r.prompt
        );
    }
    // llama.cpp converted the same vocabulary into the GGUF: both agree everywhere.
    let gguf = gguf_vocab(&dir.join("stories260K.gguf"));
    for (input, _) in vocab_cases(&vocab_file("llama-spm")) {
        for parse in [false, true] {
            assert_eq!(
                tok.tokenize(&input, true, parse).unwrap(),
                gguf.tokenize(&input, true, parse).unwrap(),
                "{input:?}"
            );
        }
    }
    for id in 0..512 {
        assert_eq!(tok.token_bytes(id), gguf.token_bytes(id), "token {id}");
    }
    // A vocabulary size that does not match the file is an error, not a guess.
    let err = from_llama2c_tokenizer(&dir.join("tok512.bin"), 511).unwrap_err();
    assert!(matches!(err, ConvertError::Invalid { .. }), "{err}");
}
