//! A small shared-memory page (a sealed `memfd`) that the master and its
//! workers map to share counters, the system-wide monotonic clock those
//! counters are stamped with, and the eventfd with which workers wake each
//! other.
//!
//! The page is only ever read and written through atomics. Its size is
//! sealed: a worker cannot shrink the file under the master's mapping (which
//! would raise `SIGBUS` in the master).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

/// A shared mapping of a sealed memfd, seen as `u32` atomics.
pub(crate) struct SharedPage {
    ptr: NonNull<AtomicU32>,
    words: usize,
}

// SAFETY: the mapping is only accessed through atomics, which are Sync; the
// pointer stays valid until Drop unmaps it.
unsafe impl Send for SharedPage {}
// SAFETY: as above.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// Creates a zeroed, size-sealed memfd of `len` bytes and maps it. Returns the mapping and the descriptor to
    /// hand to other processes.
    pub(crate) fn create(name: &std::ffi::CStr, len: usize) -> io::Result<(SharedPage, OwnedFd)> {
        // SAFETY: `name` is a valid NUL-terminated string; flags are plain
        // integers.
        let raw = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate and fcntl on a descriptor we own, integer args.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } == -1 {
            return Err(io::Error::last_os_error());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } == -1 {
            return Err(io::Error::last_os_error());
        }
        let page = SharedPage::map(fd.as_fd(), len)?;
        Ok((page, fd))
    }

    /// Maps a page another process created with [`SharedPage::create`].
    /// Fails with `InvalidData` if the file is smaller than `len` or its size
    /// is not sealed (so could shrink under the mapping).
    pub(crate) fn open(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedPage> {
        // SAFETY: fstat writes one `stat` into our zeroed stack value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the descriptor is borrowed and open.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: F_GET_SEALS takes no argument beyond the descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if (st.st_size as u64) < len as u64 || seals == -1 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shared page: {} bytes, seals {seals:#x}", st.st_size),
            ));
        }
        SharedPage::map(fd, len)
    }

    fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedPage> {
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint) of
        // a file at least `len` bytes long whose size cannot shrink; nothing
        // else in this process aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU32>()).expect("mmap returned null");
        Ok(SharedPage { ptr, words: len / 4 })
    }

    /// The page as `u32` atomics.
    pub(crate) fn words(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is page-aligned, `words * 4` bytes long, and
        // lives as long as `self`; AtomicU32 has the layout of u32, and every
        // process touches the memory only through atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference
        // into it outlives `self` (`words` borrows `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.words * 4) };
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC`, which every process on the machine
/// reads alike.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec on our stack.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// [`monotonic_ns`] in milliseconds, truncated to 32 bits (compare with
/// `wrapping_sub`).
pub(crate) fn monotonic_ms(ns: u64) -> u32 {
    (ns / 1_000_000) as u32
}

/// A non-blocking, close-on-exec eventfd: the board's bell, with which a
/// worker wakes the others that sleep in their poll.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes two integers and returns a new descriptor or -1.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: eventfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Rings an eventfd (adds one to its counter). Never blocks: a counter
/// that cannot take more is rung already.
pub(crate) fn ring(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a valid stack buffer to a borrowed, open
    // descriptor.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}
