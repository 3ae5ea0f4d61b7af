//! A "plugin" library that aborts the process the moment it is loaded: its constructor
//! (an `.init_array` entry, run by the dynamic loader inside `dlopen`) calls `abort`.
//! The host tests put its manifest in a plugin directory and run the commands that must
//! not open any plugin library (`catalog`, `models`, `verify`, `info`, `rm`): if one
//! did, the process would die with SIGABRT.

/// Runs when the library is loaded.
#[cfg(target_os = "linux")]
extern "C" fn abort_on_load() {
    std::process::abort();
}

/// The dynamic loader calls every function in `.init_array` when it loads the library.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static ABORT_ON_LOAD: extern "C" fn() = abort_on_load;
