//! The worker's calls into the operating system (the only `unsafe` of the worker).

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// Takes the process's stdin and stdout for the protocol, and points file descriptors
/// 0 and 1 elsewhere (`/dev/null` and stderr): a plugin or C library that prints to
/// stdout must not corrupt the frames, nor one that reads stdin steal them.
pub(super) fn take_stdio() -> io::Result<(File, File)> {
    let input = duplicate(0)?;
    let output = duplicate(1)?;
    let null = File::open("/dev/null")?;
    redirect(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
    redirect(2, 1)?;
    Ok((input, output))
}

/// A new descriptor for `fd`, owned by the returned file (close-on-exec).
fn duplicate(fd: RawFd) -> io::Result<File> {
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` only creates a new descriptor; it reads no memory.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just created by fcntl and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(new) })
}

/// Makes `to` a copy of `from` (`dup2`).
fn redirect(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only rebinds a descriptor number; `to` (0 or 1) is one the standard
    // library's handles use, which keep working on the new file.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Limits this process's address space to `bytes` (`RLIMIT_AS`): allocations beyond it
/// fail, which Rust answers by aborting and C++ by `std::bad_alloc`.
pub(super) fn limit_memory(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: `limit` is a valid rlimit that lives across the call, which only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
