//! A small shared-memory page (a sealed `memfd`) that the master and its
//! workers map to share counters, the system-wide monotonic clock those
//! counters are stamped with, and the eventfd with which workers wake each
//! other.
//!
//! The page is only ever read and written through atomics. Its size is
//! sealed: a worker cannot shrink the file under the master's mapping (which
//! would raise `SIGBUS` in the master).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{ftruncate, write};

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
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd = memfd_create(name, flags)?;
        let size = libc::off_t::try_from(len).map_err(|_| io::Error::from(Errno::EINVAL))?;
        ftruncate(&fd, size)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
        let page = SharedPage::map(fd.as_fd(), len)?;
        Ok((page, fd))
    }

    /// Maps a page another process created with [`SharedPage::create`].
    /// Fails with `InvalidData` if the file is smaller than `len` or its size
    /// is not sealed (so could shrink under the mapping).
    pub(crate) fn open(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedPage> {
        let st = fstat(fd)?;
        // A descriptor that cannot tell its seals (-1) is refused below.
        let seals = fcntl(fd, FcntlArg::F_GET_SEALS).unwrap_or(-1);
        if (st.st_size as u64) < len as u64
            || seals == -1
            || seals & SealFlag::F_SEAL_SHRINK.bits() == 0
        {
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

    /// The page as `u64` atomics (word `i` here is `u32` words `2i` and
    /// `2i + 1`).
    pub(crate) fn words64(&self) -> &[AtomicU64] {
        // SAFETY: as for `words`; a page-aligned mapping is 8-byte aligned,
        // `words / 2` u64s fit in it, and AtomicU64 has the layout of u64.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), self.words / 2) }
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
    // CLOCK_MONOTONIC always exists, so this cannot fail (0 if it ever did).
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or(TimeSpec::new(0, 0));
    (ts.tv_sec() as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec() as u64)
}

/// [`monotonic_ns`] in milliseconds, truncated to 32 bits (compare with
/// `wrapping_sub`).
pub(crate) fn monotonic_ms(ns: u64) -> u32 {
    (ns / 1_000_000) as u32
}

/// A non-blocking, close-on-exec eventfd: the board's bell, with which a
/// worker wakes the others that sleep in their poll.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
    Ok(EventFd::from_flags(flags)?.into())
}

/// Rings an eventfd (adds one to its counter). Never blocks: a counter
/// that cannot take more is rung already.
pub(crate) fn ring(fd: BorrowedFd<'_>) {
    // EAGAIN (the counter is full) means it is rung already; nothing else
    // can fail on an open eventfd with a valid 8-byte value.
    let _ = write(fd, &1u64.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::FdFlag;
    use nix::fcntl::OFlag;

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn a_created_page_is_close_on_exec_zeroed_and_its_size_is_sealed() {
        let (page, fd) = SharedPage::create(c"test-page", 4096).unwrap();
        assert!(cloexec(fd.as_fd()));
        assert_eq!(page.words().len(), 1024);
        assert!(page.words().iter().all(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0));
        assert_eq!(ftruncate(&fd, 0), Err(Errno::EPERM), "shrinking must be sealed");
        assert_eq!(ftruncate(&fd, 8192), Err(Errno::EPERM), "growing must be sealed");
        let seals = SealFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GET_SEALS).unwrap());
        assert!(
            seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL)
        );
        let other = SharedPage::open(fd.as_fd(), 4096).unwrap();
        other.words()[3].store(7, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(page.words()[3].load(std::sync::atomic::Ordering::Relaxed), 7);
    }

    #[test]
    fn opening_refuses_a_file_that_is_too_small_or_not_sealed() {
        let (_, fd) = SharedPage::create(c"test-small", 4096).unwrap();
        let err = SharedPage::open(fd.as_fd(), 8192).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let unsealed = memfd_create(c"test-unsealed", MFdFlags::MFD_CLOEXEC).unwrap();
        ftruncate(&unsealed, 4096).unwrap();
        let err = SharedPage::open(unsealed.as_fd(), 4096).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn the_bell_is_close_on_exec_non_blocking_and_counts_rings() {
        let bell = eventfd().unwrap();
        assert!(cloexec(bell.as_fd()));
        let fl = OFlag::from_bits_truncate(fcntl(&bell, FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        ring(bell.as_fd());
        ring(bell.as_fd());
        let mut buf = [0u8; 8];
        assert_eq!(nix::unistd::read(&bell, &mut buf), Ok(8));
        assert_eq!(u64::from_ne_bytes(buf), 2);
        assert_eq!(nix::unistd::read(&bell, &mut buf), Err(Errno::EAGAIN));
    }

    fn libc_monotonic_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec on our stack.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    #[test]
    fn the_clock_reads_the_systems_monotonic_clock_in_nanoseconds() {
        let before = libc_monotonic_ns();
        let ours = monotonic_ns();
        let after = libc_monotonic_ns();
        assert!(before <= ours && ours <= after, "{before} <= {ours} <= {after}");
        assert_eq!(monotonic_ms(ours), (ours / 1_000_000) as u32);
    }
}
