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
//!
//! Rules for changing the ABI:
//! * Appending a field to the root module after `init`, or a method to a trait object
//!   after its last prefix method, is backwards compatible: keep the version.
//! * Adding a new error kind, stop reason or capability bit is compatible (codes).
//! * Anything else (changing a struct that crosses the boundary, removing or reordering
//!   anything) bumps the version and gets a row above.
