//! A small shared-memory page that the master and its workers map to share
//! counters, and the system-wide monotonic clock those counters are stamped
//! with.
//!
//! The page is only ever read and written through atomics. Where it lives
//! is chosen here and nowhere else:
//!
//! - Linux and FreeBSD: a `memfd` whose size is sealed, so that a worker
//!   cannot shrink the file under the master's mapping (which would raise
//!   `SIGBUS` in the master).
//! - macOS, and Linux with the `portable-backend` feature: a POSIX
//!   shared-memory object (`shm_open`), unlinked at once so that only the
//!   descriptors passed to workers reach it. macOS sets such an object's
//!   size once and refuses any later `ftruncate`, which keeps the same
//!   promise; on Linux nothing does, and the feature is a test vehicle for
//!   the macOS path, not a deployment choice.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::errno::Errno;
use nix::sys::stat::fstat;
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

/// A shared mapping of a sealed memfd (or an unlinked shared-memory
/// object), seen as `u32` atomics.
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
    /// Creates a zeroed shared file of `len` bytes whose size cannot change
    /// (see the module docs) and maps it. Returns the mapping and the
    /// descriptor to hand to other processes.
    pub(crate) fn create(name: &std::ffi::CStr, len: usize) -> io::Result<(SharedPage, OwnedFd)> {
        let size = libc::off_t::try_from(len).map_err(|_| io::Error::from(Errno::EINVAL))?;
        let fd = file::create(name, size)?;
        let page = SharedPage::map(fd.as_fd(), len)?;
        Ok((page, fd))
    }

    /// Maps a page another process created with [`SharedPage::create`].
    /// Fails with `InvalidData` if the file is smaller than `len` or (where
    /// there are seals) its size is not sealed, so could shrink under the
    /// mapping.
    pub(crate) fn open(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedPage> {
        let st = fstat(fd)?;
        let sealed = file::size_sealed(fd);
        if (st.st_size as u64) < len as u64 || !sealed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "shared page: {} bytes{}",
                    st.st_size,
                    if sealed { "" } else { ", size not sealed" }
                ),
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

/// A sealed memfd.
#[cfg(any(all(target_os = "linux", not(feature = "portable-backend")), target_os = "freebsd"))]
mod file {
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};

    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use nix::unistd::ftruncate;

    /// A close-on-exec memfd of `size` bytes, its size sealed.
    pub(super) fn create(name: &std::ffi::CStr, size: libc::off_t) -> io::Result<OwnedFd> {
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd = memfd_create(name, flags)?;
        ftruncate(&fd, size)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
        Ok(fd)
    }

    /// Whether the file cannot shrink: sealed against it. A descriptor that
    /// cannot tell its seals is not.
    pub(super) fn size_sealed(fd: BorrowedFd<'_>) -> bool {
        fcntl(fd, FcntlArg::F_GET_SEALS)
            .is_ok_and(|seals| seals & SealFlag::F_SEAL_SHRINK.bits() != 0)
    }
}

/// An unlinked POSIX shared-memory object.
#[cfg(not(any(
    all(target_os = "linux", not(feature = "portable-backend")),
    target_os = "freebsd"
)))]
mod file {
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};
    use std::sync::atomic::{AtomicU32, Ordering};

    use nix::errno::Errno;
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use nix::sys::mman::{shm_open, shm_unlink};
    use nix::sys::stat::Mode;
    use nix::unistd::ftruncate;

    /// A close-on-exec shared-memory object of `size` bytes, mode 0600,
    /// already unlinked: only its descriptors reach it. (`name` is the
    /// memfd's; an object's name is `/mio-cluster.PID.N`, at most 31 bytes
    /// as macOS requires.)
    pub(super) fn create(_name: &std::ffi::CStr, size: libc::off_t) -> io::Result<OwnedFd> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        let mode = Mode::S_IRUSR | Mode::S_IWUSR;
        let (fd, name) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("/mio-cluster.{}.{n}", std::process::id());
            match shm_open(name.as_str(), flags, mode) {
                Ok(fd) => break (fd, name),
                // Left by a process of the same pid that died between
                // its open and its unlink.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        shm_unlink(name.as_str())?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        ftruncate(&fd, size)?;
        Ok(fd)
    }

    /// No seals here: see the module docs.
    pub(super) fn size_sealed(_fd: BorrowedFd<'_>) -> bool {
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    #[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
    use nix::{
        fcntl::SealFlag,
        sys::memfd::{memfd_create, MFdFlags},
        unistd::ftruncate,
    };

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn a_created_page_is_close_on_exec_zeroed_and_shared() {
        let (page, fd) = SharedPage::create(c"test-page", 4096).unwrap();
        assert!(cloexec(fd.as_fd()));
        assert_eq!(page.words().len(), 1024);
        assert!(page.words().iter().all(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0));
        let other = SharedPage::open(fd.as_fd(), 4096).unwrap();
        other.words()[3].store(7, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(page.words()[3].load(std::sync::atomic::Ordering::Relaxed), 7);
        assert!(SharedPage::open(fd.as_fd(), 8192).is_err(), "larger than the file");
    }

    /// The portable page is a shared-memory object nobody can open by name:
    /// none of this process's is left in /dev/shm.
    #[cfg(all(target_os = "linux", feature = "portable-backend"))]
    #[test]
    fn a_portable_page_is_unlinked_at_once() {
        let (_page, _fd) = SharedPage::create(c"test-unlinked", 4096).unwrap();
        let prefix = format!("mio-cluster.{}.", std::process::id());
        let left: Vec<_> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
    #[test]
    fn a_created_pages_size_is_sealed() {
        let (_page, fd) = SharedPage::create(c"test-page", 4096).unwrap();
        assert_eq!(ftruncate(&fd, 0), Err(Errno::EPERM), "shrinking must be sealed");
        assert_eq!(ftruncate(&fd, 8192), Err(Errno::EPERM), "growing must be sealed");
        let seals = SealFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GET_SEALS).unwrap());
        assert!(
            seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL)
        );
    }

    #[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
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
