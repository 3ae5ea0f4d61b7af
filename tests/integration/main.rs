//! Integration tests: the real `runanywhere` binary and host library with real plugins.
//! One test target; each module covers one area.

mod discovery;
mod faults;
mod mock_cli;
mod routing;
