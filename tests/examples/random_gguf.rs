//! Writes a random-weight GGUF of a real model's shape, for speed benchmarks:
//! `random_gguf OUT.gguf [TOKENIZER.gguf]` (TinyLlama-1.1B's blocks, Q8_0, the tokenizer
//! of `TOKENIZER.gguf`, default stories260K's from the test data).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let Some(out) = args.next() else {
        eprintln!("usage: random_gguf OUT.gguf [TOKENIZER.gguf]");
        return ExitCode::FAILURE;
    };
    let tokenizer = args
        .next()
        .unwrap_or_else(|| runanywhere_tests::data_dir().join("tinystories/stories260K.gguf"));
    let shape = runanywhere_tests::synthetic::Shape::TINYLLAMA_1B;
    match runanywhere_tests::synthetic::write_llama_gguf(shape, &tokenizer, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("random_gguf: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
