//! Finding an engine's runtime files (a framework's shared libraries fetched by a setup
//! script) relative to the plugin itself.
//!
//! Engines that load their framework at run time (ONNX Runtime, ExecuTorch) look for it
//! in a dot-directory that a setup script fills (`.ort/`, `.executorch/`): next to the
//! plugin's own library or in any directory above it (so `target/release/` in a
//! checkout finds the repository's), then in and above the manifest's directory. The
//! rule lives here so that every engine searches the same way.

use std::path::{Path, PathBuf};

/// The directories to search for `dot_dir`, in order: the plugin's directory itself,
/// `dot_dir` in it and in every directory above it, then `dot_dir` in and above the
/// manifest's directory. Duplicates are dropped.
pub fn search_dirs(
    plugin_dir: Option<&Path>,
    manifest_dir: Option<&Path>,
    dot_dir: &str,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut push = |d: PathBuf| {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    };
    if let Some(dir) = plugin_dir {
        push(dir.to_path_buf());
        for ancestor in dir.ancestors() {
            push(ancestor.join(dot_dir));
        }
    }
    if let Some(dir) = manifest_dir.filter(|d| !d.as_os_str().is_empty()) {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        for ancestor in dir.ancestors() {
            push(ancestor.join(dot_dir));
        }
    }
    dirs
}

/// The directory holding the shared library this function is linked into (the
/// plugin's own, since the kit is compiled into every plugin), found with `dladdr`.
#[cfg(unix)]
pub fn plugin_dir() -> Option<PathBuf> {
    use std::ffi::{CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;

    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let address = plugin_dir as fn() -> Option<PathBuf> as *const libc::c_void;
    // SAFETY: `dladdr` only inspects the address (a function of this library, mapped for
    // as long as the process lives, since plugins are never unloaded) and writes into
    // `info`, which is valid for writes of a `Dl_info`.
    let found = unsafe { libc::dladdr(address, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: `dladdr` returned non-zero, so it filled `info` (and it was zeroed before).
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: `dli_fname` is a NUL-terminated path owned by the dynamic loader, valid
    // while the object stays mapped; it is copied before returning.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = Path::new(OsStr::from_bytes(name.to_bytes()));
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path.parent().map(Path::to_path_buf)
}

/// The plugin's directory is unknown on platforms without `dladdr`.
#[cfg(not(unix))]
pub fn plugin_dir() -> Option<PathBuf> {
    None
}

/// The searched directories as a list for messages (`nowhere ...` when empty).
pub fn describe(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        "nowhere (the plugin's own location is unknown)".to_string()
    } else {
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn search_dirs_walk_up_from_the_plugin_then_the_manifest() {
        let dirs = search_dirs(
            Some(Path::new("/repo/target/release")),
            Some(Path::new("/nonexistent/manifests")),
            ".ort",
        );
        assert_eq!(dirs[0], Path::new("/repo/target/release"));
        assert_eq!(dirs[1], Path::new("/repo/target/release/.ort"));
        assert!(dirs.contains(&PathBuf::from("/repo/.ort")));
        assert!(dirs.contains(&PathBuf::from("/nonexistent/manifests/.ort")));
        assert_eq!(dirs.iter().filter(|d| *d == Path::new("/.ort")).count(), 1);
    }

    #[test]
    fn the_plugin_knows_where_it_is() {
        // In a unit test the "plugin" is the test executable in target/<profile>/deps.
        let dir = plugin_dir().unwrap();
        assert!(dir.ends_with("deps"), "{}", dir.display());
    }
}
