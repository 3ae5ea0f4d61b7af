//! Finding and opening the TFLite C API, and the hand-written bindings of the ~20
//! functions the plugin calls.
//!
//! # Which library
//!
//! PyPI's `litert-lm-api==0.18.1` wheel ships `litert_lm/liblitert-lm.so`, which exports
//! the full TFLite C API (TfLite 2.23: model, interpreter, signature runners, tensors,
//! XNNPACK). `scripts/fetch-litert.sh` extracts it into `.litert/`. (`ai-edge-litert`'s
//! `libLiteRt.so` exports only the newer `LiteRt*` API, and `tflite-runtime` has no C
//! API at all.) Nothing is linked at build time.
//!
//! # Where it is looked for
//!
//! 1. `RUNANYWHERE_LITERT_LIB`, when set: the library file itself.
//! 2. Otherwise `liblitert-lm.so` in `.litert/` next to this plugin or above it, then in
//!    and above the manifest's directory ([`runanywhere_plugin_api::locate`]).
//!
//! It is opened `RTLD_NOW | RTLD_LOCAL`: its many XNNPACK/absl/protobuf symbols stay
//! out of the global scope, and a missing one is an error here, not a crash later.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use runanywhere_plugin_api::locate;

use crate::error::{LiteRtError, Result};

/// Environment variable naming the library file.
pub(crate) const LIB_ENV: &str = "RUNANYWHERE_LITERT_LIB";
const DOT_DIR: &str = ".litert";
const LIB_NAME: &str = "liblitert-lm.so";

fn fix_hint() -> String {
    format!(
        "run scripts/fetch-litert.sh in the RunAnywhere repository (it puts {LIB_NAME} from \
         the litert-lm-api==0.18.1 wheel into .litert/), or set {LIB_ENV} to a library that \
         exports the TFLite C API"
    )
}

/// Opaque TFLite handles.
pub(crate) type Handle = *mut c_void;

/// `TfLiteStatus`: 0 is `kTfLiteOk`.
pub(crate) type Status = c_int;
/// `kTfLiteFloat32` and `kTfLiteInt32` of `TfLiteType`.
pub(crate) const TYPE_FLOAT32: c_int = 1;
pub(crate) const TYPE_INT32: c_int = 2;

/// The C API functions used (types as in `tensorflow/lite/c/c_api.h`).
#[allow(clippy::type_complexity)]
pub(crate) struct Api {
    pub(crate) model_create_from_file: unsafe extern "C" fn(*const c_char) -> Handle,
    pub(crate) model_delete: unsafe extern "C" fn(Handle),
    pub(crate) options_create: unsafe extern "C" fn() -> Handle,
    pub(crate) options_delete: unsafe extern "C" fn(Handle),
    pub(crate) options_set_num_threads: unsafe extern "C" fn(Handle, i32),
    pub(crate) interpreter_create: unsafe extern "C" fn(Handle, Handle) -> Handle,
    pub(crate) interpreter_delete: unsafe extern "C" fn(Handle),
    pub(crate) signature_count: unsafe extern "C" fn(Handle) -> i32,
    pub(crate) signature_key: unsafe extern "C" fn(Handle, i32) -> *const c_char,
    pub(crate) signature_runner: unsafe extern "C" fn(Handle, *const c_char) -> Handle,
    pub(crate) runner_delete: unsafe extern "C" fn(Handle),
    pub(crate) runner_input_count: unsafe extern "C" fn(Handle) -> usize,
    pub(crate) runner_input_name: unsafe extern "C" fn(Handle, i32) -> *const c_char,
    pub(crate) runner_output_count: unsafe extern "C" fn(Handle) -> usize,
    pub(crate) runner_output_name: unsafe extern "C" fn(Handle, i32) -> *const c_char,
    pub(crate) runner_allocate: unsafe extern "C" fn(Handle) -> Status,
    pub(crate) runner_input_tensor: unsafe extern "C" fn(Handle, *const c_char) -> Handle,
    pub(crate) runner_output_tensor: unsafe extern "C" fn(Handle, *const c_char) -> Handle,
    pub(crate) runner_invoke: unsafe extern "C" fn(Handle) -> Status,
    pub(crate) tensor_type: unsafe extern "C" fn(Handle) -> c_int,
    pub(crate) tensor_num_dims: unsafe extern "C" fn(Handle) -> i32,
    pub(crate) tensor_dim: unsafe extern "C" fn(Handle, i32) -> i32,
    pub(crate) tensor_byte_size: unsafe extern "C" fn(Handle) -> usize,
    pub(crate) tensor_copy_from: unsafe extern "C" fn(Handle, *const c_void, usize) -> Status,
    pub(crate) tensor_copy_to: unsafe extern "C" fn(Handle, *mut c_void, usize) -> Status,
    /// Keeps the library mapped (never closed).
    _library: libloading::Library,
}

/// The loaded runtime.
#[derive(Clone)]
pub(crate) struct Runtime {
    pub(crate) api: Arc<Api>,
    pub(crate) library: PathBuf,
    /// `TfLiteVersion()`, e.g. `2.23.0`.
    pub(crate) version: String,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// The process-wide runtime, opened on first use; a failure is not cached.
pub(crate) fn runtime(manifest_dir: Option<&Path>) -> Result<Runtime> {
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = slot.as_ref() {
        return Ok(r.clone());
    }
    let library = locate_library(manifest_dir)?;
    let runtime = open(&library)?;
    tracing::debug!(library = %library.display(), version = %runtime.version, "TFLite loaded");
    *slot = Some(runtime.clone());
    Ok(runtime)
}

fn locate_library(manifest_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(LIB_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if path.is_file() {
            return Ok(path);
        }
        return Err(LiteRtError::Runtime(format!(
            "{LIB_ENV}={} does not name a file; {}",
            path.display(),
            fix_hint()
        )));
    }
    let dirs = locate::search_dirs(locate::plugin_dir().as_deref(), manifest_dir, DOT_DIR);
    if let Some(found) = dirs.iter().map(|d| d.join(LIB_NAME)).find(|p| p.is_file()) {
        return Ok(found);
    }
    Err(LiteRtError::Runtime(format!(
        "the TFLite runtime was not found ({LIB_NAME} is in none of {}); {}",
        locate::describe(&dirs),
        fix_hint()
    )))
}

fn open(path: &Path) -> Result<Runtime> {
    let open_error = |e: &dyn std::fmt::Display| {
        LiteRtError::Runtime(format!(
            "cannot use {} as the TFLite runtime: {e}; {}",
            path.display(),
            fix_hint()
        ))
    };
    // SAFETY: opening the library runs its initialisers (op registration, absl), which
    // touch only its own state; RTLD_LOCAL keeps its symbols private.
    let library = unsafe { open_local(path) }.map_err(|e| open_error(&e))?;
    macro_rules! sym {
        ($name:literal) => {{
            // SAFETY: each symbol is declared with its C API signature
            // (tensorflow/lite/c/c_api.h, c_api_experimental.h, common.h of TfLite 2.23).
            let symbol = unsafe { library.get($name) }.map_err(|e| open_error(&e))?;
            *symbol
        }};
    }
    let version_fn: unsafe extern "C" fn() -> *const c_char = sym!(b"TfLiteVersion\0");
    let api = Api {
        model_create_from_file: sym!(b"TfLiteModelCreateFromFile\0"),
        model_delete: sym!(b"TfLiteModelDelete\0"),
        options_create: sym!(b"TfLiteInterpreterOptionsCreate\0"),
        options_delete: sym!(b"TfLiteInterpreterOptionsDelete\0"),
        options_set_num_threads: sym!(b"TfLiteInterpreterOptionsSetNumThreads\0"),
        interpreter_create: sym!(b"TfLiteInterpreterCreate\0"),
        interpreter_delete: sym!(b"TfLiteInterpreterDelete\0"),
        signature_count: sym!(b"TfLiteInterpreterGetSignatureCount\0"),
        signature_key: sym!(b"TfLiteInterpreterGetSignatureKey\0"),
        signature_runner: sym!(b"TfLiteInterpreterGetSignatureRunner\0"),
        runner_delete: sym!(b"TfLiteSignatureRunnerDelete\0"),
        runner_input_count: sym!(b"TfLiteSignatureRunnerGetInputCount\0"),
        runner_input_name: sym!(b"TfLiteSignatureRunnerGetInputName\0"),
        runner_output_count: sym!(b"TfLiteSignatureRunnerGetOutputCount\0"),
        runner_output_name: sym!(b"TfLiteSignatureRunnerGetOutputName\0"),
        runner_allocate: sym!(b"TfLiteSignatureRunnerAllocateTensors\0"),
        runner_input_tensor: sym!(b"TfLiteSignatureRunnerGetInputTensor\0"),
        runner_output_tensor: sym!(b"TfLiteSignatureRunnerGetOutputTensor\0"),
        runner_invoke: sym!(b"TfLiteSignatureRunnerInvoke\0"),
        tensor_type: sym!(b"TfLiteTensorType\0"),
        tensor_num_dims: sym!(b"TfLiteTensorNumDims\0"),
        tensor_dim: sym!(b"TfLiteTensorDim\0"),
        tensor_byte_size: sym!(b"TfLiteTensorByteSize\0"),
        tensor_copy_from: sym!(b"TfLiteTensorCopyFromBuffer\0"),
        tensor_copy_to: sym!(b"TfLiteTensorCopyToBuffer\0"),
        _library: library,
    };
    // SAFETY: TfLiteVersion returns a static NUL-terminated string.
    let version = unsafe { c_str(version_fn()) }.unwrap_or_else(|| "unknown".into());
    Ok(Runtime {
        api: Arc::new(api),
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

/// Copies a C string TFLite owns (`None` for null).
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for this call.
pub(crate) unsafe fn c_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}
