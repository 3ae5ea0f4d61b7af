//! Fuzzes the structural checks: any bytes, under each format's file name, must give a
//! verification (OK or a problem) and never panic, hang or allocate without bound.
//!
//! ```sh
//! cargo install cargo-fuzz
//! cd fuzz && cargo +nightly fuzz run verify
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use runanywhere_formats::verify_bytes;

fuzz_target!(|data: &[u8]| {
    // The extension picks the check for files whose content does not identify them.
    for name in ["m.gguf", "m.safetensors", "m.onnx", "m.bin", "m"] {
        let v = verify_bytes(data, name);
        // A passing file's facts must be consistent with its size.
        if v.is_ok() {
            assert_eq!(v.size, data.len() as u64);
        }
    }
});
