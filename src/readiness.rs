//! The readiness fd of a subscriber queue: a level-triggered flag that polls
//! readable while it is set. Linux has eventfd (one fd, one syscall each
//! way); other Unix systems get a non-blocking pipe, set by writing a byte
//! and cleared by draining it. Both are created close-on-exec.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, ErrorKind, Result};

/// A readiness flag that a host can poll (POLLIN).
pub(crate) struct ReadyFd {
    /// What hosts poll: the eventfd, or the pipe's read end.
    read: OwnedFd,
    /// The pipe's write end; `None` for an eventfd.
    write: Option<OwnedFd>,
}

fn os_error(what: &str) -> Error {
    Error::new(ErrorKind::Io, format!("{what}: {}", std::io::Error::last_os_error()))
}

impl ReadyFd {
    /// The platform's kind: eventfd on Linux, a pipe elsewhere.
    pub(crate) fn new() -> Result<ReadyFd> {
        #[cfg(target_os = "linux")]
        return ReadyFd::eventfd();
        #[cfg(not(target_os = "linux"))]
        return ReadyFd::pipe();
    }

    #[cfg(target_os = "linux")]
    fn eventfd() -> Result<ReadyFd> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(os_error("eventfd"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(ReadyFd { read: unsafe { OwnedFd::from_raw_fd(fd) }, write: None })
    }

    /// A pipe on every Unix (built on Linux too, where the tests use it).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    fn pipe() -> Result<ReadyFd> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two fds; the result is checked.
        // pipe + fcntl rather than pipe2, which macOS lacks.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
            return Err(os_error("pipe"));
        }
        // SAFETY: two fresh fds that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            // SAFETY: fcntl on an fd we own; results checked.
            let ok = unsafe {
                let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                flags >= 0
                    && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
                    && libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) >= 0
            };
            if !ok {
                return Err(os_error("fcntl on the readiness pipe"));
            }
        }
        Ok(ReadyFd { read, write: Some(write) })
    }

    /// The fd to poll.
    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Makes the fd readable.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes from a live u64 to an fd we own. A full eventfd
        // counter or pipe (EAGAIN) already polls readable, so the result is
        // ignored.
        unsafe {
            match &self.write {
                None => libc::write(self.read.as_raw_fd(), (&one as *const u64).cast(), 8),
                Some(w) => libc::write(w.as_raw_fd(), (&one as *const u64).cast(), 1),
            }
        };
    }

    /// Makes the fd not readable.
    pub(crate) fn clear(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live buffer; EAGAIN means already clear.
            let n = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            // An eventfd is cleared by one 8-byte read; a pipe holds one byte
            // per signal not yet cleared, so it is drained.
            if n <= 0 || self.write.is_none() || (n as usize) < buf.len() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: &ReadyFd) -> bool {
        let mut p = libc::pollfd { fd: fd.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    fn behaves_as_a_level_triggered_flag(fd: ReadyFd) {
        assert!(!readable(&fd), "starts clear");
        fd.clear();
        assert!(!readable(&fd), "clearing a clear flag keeps it clear (and does not block)");
        fd.signal();
        assert!(readable(&fd));
        assert!(readable(&fd), "level-triggered: polling does not clear it");
        fd.clear();
        assert!(!readable(&fd));
        for _ in 0..100_000 {
            fd.signal(); // more signals than a pipe buffer holds: never blocks
        }
        assert!(readable(&fd));
        fd.clear();
        assert!(!readable(&fd), "one clear undoes any number of signals");
        // SAFETY: F_GETFD on an fd we own.
        let cloexec = unsafe { libc::fcntl(fd.fd(), libc::F_GETFD) } & libc::FD_CLOEXEC;
        assert_ne!(cloexec, 0);
    }

    #[test]
    fn the_platform_fd_is_a_level_triggered_flag() {
        behaves_as_a_level_triggered_flag(ReadyFd::new().unwrap());
    }

    // The path other Unix systems take, forced on Linux.
    #[test]
    fn the_pipe_is_a_level_triggered_flag() {
        let fd = ReadyFd::pipe().unwrap();
        assert!(fd.write.is_some());
        behaves_as_a_level_triggered_flag(fd);
    }
}
