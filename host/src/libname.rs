//! Platform file names of plugin libraries. Shared with `build.rs` through `#[path]`.

/// The file name of a dynamic library called `base` on `os` (as in
/// `std::env::consts::OS`): `runanywhere_mock` → `librunanywhere_mock.so` on Linux.
/// A name that already has an extension is returned unchanged.
pub fn library_file_name(base: &str, os: &str) -> String {
    if std::path::Path::new(base).extension().is_some() || base.contains('/') {
        return base.to_string();
    }
    match os {
        "windows" => format!("{base}.dll"),
        "macos" | "ios" => format!("lib{base}.dylib"),
        _ => format!("lib{base}.so"),
    }
}
