//! Model-format conversion for RunAnywhere, shared by engines and the host.
//!
//! Engines that do not read GGUF or llama2.c files natively (Candle, ONNX Runtime) still
//! have to tokenize exactly as llama.cpp does, and the host's `runanywhere convert` turns
//! such files into Hugging Face (safetensors) and ONNX folders. Everything format-specific lives here, once:
//!
//! * [`gguf`]: a bounds-checked GGUF header reader (candle's `Content` as the result);
//! * [`llama2c`]: llama2.c checkpoints and `tok*.bin` tokenizers;
//! * [`tokenizer`]: Hugging Face `Tokenizer`s built from GGUF and llama2.c vocabularies;
//! * [`hf`]: the tokenizer files of a Hugging Face folder;
//! * [`vocab`]: llama.cpp's tokenize / token-bytes / detokenize semantics on a tokenizer;
//! * [`llama`]: Llama weights in Hugging Face's layout (rotary permutation undone);
//! * [`safetensors`]: writing a Hugging Face folder;
//! * [`onnx`]: writing an ONNX decoder folder (Optimum's layout, standard operators);
//! * [`output`]: what both folders share: the source read once, the tokenizer and
//!   config files, and the all-or-nothing write.

pub mod error;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod llama2c;
pub mod onnx;
pub mod output;
pub mod safetensors;
pub mod tokenizer;

pub use error::ConvertError;
pub use onnx::write_onnx_folder;
pub use output::{ConvertOptions, Written};
pub use runanywhere_tokenizer::{vocab, Vocab};
pub use safetensors::write_hf_folder;
