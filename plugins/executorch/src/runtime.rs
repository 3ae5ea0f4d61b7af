//! Finding and opening ExecuTorch's runtime: the plugin's C shim
//! (`librunanywhere_executorch_shim.so`, `shim/runanywhere_executorch.cpp`) and, through its
//! run path, the wheel's `libexecutorch*.so` beside it.
//!
//! # Why at run time
//!
//! The plugin links nothing of ExecuTorch: `scripts/fetch-executorch.sh` extracts the
//! pinned `executorch` wheel's libraries and headers into `.executorch/` and compiles
//! the shim there; the plugin opens the shim when the engine is initialised. So the
//! workspace builds on a machine without the wheel, a missing runtime is an engine
//! listed `unavailable` with the fix (never a host that cannot load the plugin), and a
//! fetched runtime works without a rebuild.
//!
//! # Where it is looked for
//!
//! 1. `RUNANYWHERE_EXECUTORCH_DIR`, when set: the directory holding the shim.
//! 2. Otherwise `.executorch/` next to this plugin or in any directory above it (the
//!    repository's, from `target/<profile>/`), then in and above the manifest's
//!    directory ([`runanywhere_plugin_api::locate`]).
//!
//! # Symbols stay local
//!
//! The shim is opened `RTLD_NOW | RTLD_LOCAL`: ExecuTorch's libraries export many
//! XNNPACK, pthreadpool and cpuinfo symbols, which must not be seen by (or bind to)
//! other engines in the process. `RTLD_NOW` makes a missing symbol an error here rather
//! than a crash at the first call.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use runanywhere_plugin_api::locate;

use crate::error::{EtError, Result};

/// Environment variable naming the directory of the shim.
pub(crate) const DIR_ENV: &str = "RUNANYWHERE_EXECUTORCH_DIR";
/// The directory `scripts/fetch-executorch.sh` fills.
const DOT_DIR: &str = ".executorch";
/// The ExecuTorch version the fetch script installs.
pub(crate) const FETCHED_VERSION: &str = "1.5.1";

/// The shim's file name on this platform.
fn shim_name() -> String {
    format!(
        "{}runanywhere_executorch_shim{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

fn fix_hint() -> String {
    format!(
        "run scripts/fetch-executorch.sh in the RunAnywhere repository (it puts ExecuTorch \
         {FETCHED_VERSION}'s runtime and the plugin's shim into .executorch/), or set \
         {DIR_ENV} to a directory holding {}",
        shim_name()
    )
}

/// An opaque `ra_et_model*`.
#[repr(C)]
pub(crate) struct RawModel {
    _private: [u8; 0],
}

type LogFn = extern "C" fn(c_char, *const c_char, usize, *const c_char, usize);

/// The shim's entry points (see `shim/runanywhere_executorch.cpp` for each contract).
pub(crate) struct Shim {
    pub(crate) open:
        unsafe extern "C" fn(*const c_char, *mut *mut RawModel, *mut *mut c_char) -> c_int,
    pub(crate) free: unsafe extern "C" fn(*mut RawModel),
    pub(crate) free_string: unsafe extern "C" fn(*mut c_char),
    pub(crate) set_threads: unsafe extern "C" fn(u32) -> usize,
    pub(crate) describe:
        unsafe extern "C" fn(*mut RawModel, *mut *mut c_char, *mut *mut c_char) -> c_int,
    pub(crate) load_method:
        unsafe extern "C" fn(*mut RawModel, *const c_char, *mut *mut c_char) -> c_int,
    pub(crate) call_scalar: unsafe extern "C" fn(
        *mut RawModel,
        *const c_char,
        *mut c_int,
        *mut i64,
        *mut f64,
        *mut *mut c_char,
    ) -> c_int,
    pub(crate) forward: unsafe extern "C" fn(
        *mut RawModel,
        *const i64,
        usize,
        i64,
        c_int,
        *mut f32,
        usize,
        *mut usize,
        *mut *mut c_char,
    ) -> c_int,
    /// Keeps the library mapped (it is never closed: plugins are never unloaded, and
    /// neither are their runtimes).
    _library: libloading::Library,
}

/// The loaded runtime.
#[derive(Clone)]
pub(crate) struct Runtime {
    pub(crate) shim: Arc<Shim>,
    /// The shim's file.
    pub(crate) library: PathBuf,
    /// ExecuTorch's version, as the shim reports it.
    pub(crate) version: String,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// The process-wide runtime, opened on first use. A failure is not cached: a later call
/// (after the fetch script ran) tries again.
pub(crate) fn runtime(manifest_dir: Option<&Path>) -> Result<Runtime> {
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = slot.as_ref() {
        return Ok(runtime.clone());
    }
    let library = locate_shim(manifest_dir)?;
    let runtime = open(&library)?;
    tracing::debug!(library = %library.display(), version = %runtime.version, "ExecuTorch loaded");
    *slot = Some(runtime.clone());
    Ok(runtime)
}

/// Resolves the shim's path; see the module docs for the rule.
fn locate_shim(manifest_dir: Option<&Path>) -> Result<PathBuf> {
    let name = shim_name();
    if let Some(value) = std::env::var_os(DIR_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value).join(&name);
        if path.is_file() {
            return Ok(path);
        }
        return Err(EtError::Runtime(format!(
            "ExecuTorch's runtime is not at {DIR_ENV}: {} does not exist; {}",
            path.display(),
            fix_hint()
        )));
    }
    let dirs = locate::search_dirs(locate::plugin_dir().as_deref(), manifest_dir, DOT_DIR);
    if let Some(found) = dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file()) {
        return Ok(found);
    }
    Err(EtError::Runtime(format!(
        "ExecuTorch's runtime was not found ({name} is in none of {}); {}",
        locate::describe(&dirs),
        fix_hint()
    )))
}

fn open(path: &Path) -> Result<Runtime> {
    let open_error = |e: &dyn std::fmt::Display| {
        EtError::Runtime(format!(
            "cannot open ExecuTorch's runtime {}: {e}; {}",
            path.display(),
            fix_hint()
        ))
    };
    // SAFETY: opening a library runs its initialisers: the shim's and ExecuTorch's
    // (kernel and backend registration), which only register tables in their own
    // libraries. RTLD_LOCAL keeps their symbols out of the global scope.
    let library = unsafe { open_local(path) }.map_err(|e| open_error(&e))?;
    macro_rules! sym {
        ($name:literal) => {{
            // SAFETY: the symbol's type is the one `shim/runanywhere_executorch.cpp`
            // declares for it (kept in step by hand: the shim is built from this
            // repository's source by the fetch script).
            let symbol = unsafe { library.get($name) }.map_err(|e| open_error(&e))?;
            *symbol
        }};
    }
    let init: unsafe extern "C" fn(Option<LogFn>) -> *const c_char = sym!(b"ra_et_init\0");
    let shim = Shim {
        open: sym!(b"ra_et_open\0"),
        free: sym!(b"ra_et_free\0"),
        free_string: sym!(b"ra_et_free_string\0"),
        set_threads: sym!(b"ra_et_set_threads\0"),
        describe: sym!(b"ra_et_describe\0"),
        load_method: sym!(b"ra_et_load_method\0"),
        call_scalar: sym!(b"ra_et_call_scalar\0"),
        forward: sym!(b"ra_et_forward\0"),
        _library: library,
    };
    // SAFETY: `init` takes a callback that lives forever (a plain function) and returns
    // a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(init(Some(log_line))) }
        .to_string_lossy()
        .into_owned();
    Ok(Runtime {
        shim: Arc::new(shim),
        library: path.to_path_buf(),
        version,
    })
}

#[cfg(unix)]
unsafe fn open_local(path: &Path) -> std::result::Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: forwarded to the caller (see `open`).
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
}

#[cfg(not(unix))]
unsafe fn open_local(path: &Path) -> std::result::Result<libloading::Library, libloading::Error> {
    // SAFETY: forwarded to the caller (see `open`).
    unsafe { libloading::Library::new(path) }
}

/// Receives ExecuTorch's log lines (through the shim) and routes them to `tracing`:
/// its INFO lines (cpuinfo, XNNPACK) at debug level, so they never reach a user's
/// terminal unasked.
extern "C" fn log_line(
    level: c_char,
    file: *const c_char,
    line: usize,
    message: *const c_char,
    length: usize,
) {
    let _ = std::panic::catch_unwind(|| {
        let text = if message.is_null() {
            String::new()
        } else {
            // SAFETY: the shim passes ExecuTorch's message buffer and its length, valid
            // for the duration of this call.
            let bytes = unsafe { std::slice::from_raw_parts(message.cast::<u8>(), length) };
            String::from_utf8_lossy(bytes).trim_end().to_string()
        };
        let file = if file.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated file name from ExecuTorch, valid for this call.
            unsafe { CStr::from_ptr(file) }
                .to_string_lossy()
                .into_owned()
        };
        match level as u8 {
            b'E' | b'F' => tracing::warn!(target: "executorch", %file, line, "{text}"),
            b'I' => tracing::debug!(target: "executorch", %file, line, "{text}"),
            _ => tracing::trace!(target: "executorch", %file, line, "{text}"),
        }
    });
}

/// Takes an error string the shim returned (freeing it).
pub(crate) fn take_error(shim: &Shim, err: *mut c_char) -> String {
    if err.is_null() {
        return "ExecuTorch failed without a message".to_string();
    }
    // SAFETY: `err` is a NUL-terminated string malloc'd by the shim, freed right after
    // it is copied.
    let text = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: the string came from the shim and is freed once.
    unsafe { (shim.free_string)(err) };
    text
}

/// A C string for the shim; paths and method names with NUL bytes are refused.
pub(crate) fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| EtError::InvalidRequest(format!("{what} contains a NUL byte: {s:?}")))
}
