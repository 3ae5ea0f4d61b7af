//! The plugin-API version and its history.
//!
//! The host refuses a plugin whose root module reports a different
//! [`PLUGIN_API_VERSION`](crate::abi::PLUGIN_API_VERSION) before calling anything in it,
//! and the manifest must declare the same number, so a stale manifest is caught
//! without even opening the library.
//!
//! | version | change |
//! |---------|--------|
//! | 1       | First version: `init` → engine object (`info`, `load_model`); model object (`info`, `tokenize`, `detokenize`, `token_piece`, `generate` with a token sink); error and stop-reason codes; capability bits; `extensions` key/value lists on requests and infos. |
//! | 1 (additions, crate 0.1.0 still) | Error code 8 `Unsupported`. Optional exported symbols, looked up by the host after the version check and before anything else is called: `runanywhere_plugin_set_logger_v1` (plugin `tracing` events reach the host's log, [`crate::log`]) and `runanywhere_plugin_set_cancel_probe_v1` with the request extension `runanywhere.cancel_id` (cancellation between prefill chunks, [`crate::cancel`]). The host loads API versions `MIN_SUPPORTED_API_VERSION..=PLUGIN_API_VERSION`. Plugins built before these load and work unchanged (tests/integration/compat.rs). |
//! | 1 (additions, crate 0.1.0 still) | Extension calls ([`crate::ext`]): the optional exported `runanywhere_plugin_extensions_v1` returns a table of `extern "C"` calls (`ExtensionsV1`: `generate_with_logprobs`, `embed` with `EmbedRequest`/`Pooling`; final as released) with its type layout, which the host checks with abi_stable's checker before use; models carry their handle for it in `ModelInfo.extensions` (`runanywhere.model_handle`) and the `logprobs` / `embeddings` capabilities. Plugins without the symbol load and work; the new calls answer `Unsupported` for them. |
//!
//! # The compatibility key is this crate's package version
//!
//! abi_stable records, for every type that crosses the boundary, the name and version
//! of the package that defines it, and refuses a library whose versions are not
//! "loosely compatible" with the host's (for `0.x`, the same minor). So this crate's
//! version is part of the ABI and does **not** follow the workspace's: it is pinned in
//! `plugin-api/Cargo.toml` (0.1.0 is plugin ABI 1). Bumping it to 0.2 would make every
//! existing plugin an "ABI mismatch"; bump only the patch for compatible changes.
//!
//! # What is compatible (tested by `tests/integration/compat.rs`)
//!
//! The test builds the mock engine against a frozen copy of the ABI 1.0 crate
//! (`tests/compat/abi-1.0`) and loads it in today's host.
//! * New error kinds, stop reasons and capability bits: compatible (they travel as
//!   integer codes; an unknown one becomes `Unknown(n)`).
//! * New keys in the `extensions` lists of requests and infos: compatible (unknown keys
//!   are ignored on both sides).
//! * Appending a method to a `#[sabi_trait]` (even after its `last_prefix_field`, even
//!   with a default body): **not** compatible with older plugins. abi_stable refuses a
//!   library when the host expects more vtable fields than the library's layout has
//!   (`FieldCountMismatch`): tried with `TokenSink::is_cancelled`, the frozen 1.0
//!   plugin was refused. The same check applies to every prefix type, so appending a
//!   root-module field is presumed incompatible too until a fixture shows otherwise.
//!   New calls therefore need a new, versioned entry point (a second root module or
//!   exported symbol the host looks up optionally), not an appended method.
//! * Anything else (changing a struct that crosses the boundary, removing or reordering
//!   anything) bumps the version and gets a row above.
