//! The master's socket registry: one listening socket per key, shared by
//! every worker that asks for that key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};

use slab::Slab;

use crate::ipc::ListenRequest;
use crate::listen::{Address, Kind};
use crate::sys::fd::dup_raw;
use crate::sys::socket::{self, BindOptions, Transport};
use crate::sys::{SysError, Syscall};
use crate::WorkerId;

/// Node's key: `(kind, address, port, fd, index)`. Backlog and options are
/// not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    address: Vec<u8>,
    port: u16,
    fd: i32,
    index: u32,
}

impl Key {
    fn of(req: &ListenRequest) -> Key {
        Key {
            kind: req.kind,
            address: req.address.clone(),
            port: req.port,
            fd: req.fd,
            index: req.index,
        }
    }
}

struct Handle {
    key: Key,
    socket: OwnedFd,
    address: Address,
    workers: Vec<WorkerId>,
}

/// A worker's share of a key: the handle to name when closing it, the bound
/// address, and the worker's own duplicate of the socket.
pub(crate) struct Share {
    pub handle: u32,
    pub address: Address,
    pub socket: OwnedFd,
}

/// The most shared sockets one worker may hold: a worker that asks for more
/// gets `EMFILE` instead of using up the master's descriptors.
pub(crate) const MAX_SHARES_PER_WORKER: usize = 256;

/// Every listening socket the master holds, by key.
#[derive(Default)]
pub(crate) struct SocketRegistry {
    handles: Slab<Handle>,
    by_key: HashMap<Key, usize>,
    /// Descriptor numbers a worker may name with `fd:N`: those open when the
    /// master was created (inherited), never the master's own.
    inherited: Vec<i32>,
}

impl SocketRegistry {
    /// Gives `worker` a duplicate of the socket for the request's key,
    /// binding it first if no worker holds that key. A failure leaves no
    /// trace, so a later request for the same key tries again.
    pub(crate) fn listen(
        &mut self,
        worker: WorkerId,
        req: &ListenRequest,
    ) -> Result<Share, SysError> {
        let key = Key::of(req);
        if let Some(&slot) = self.by_key.get(&key) {
            if self.handles[slot].workers.contains(&worker) {
                // A worker asks once per index; asking again is a bug or worse.
                return Err(SysError::new(Syscall::Address, libc::EBUSY));
            }
        }
        if self.handles.iter().filter(|(_, h)| h.workers.contains(&worker)).count()
            >= MAX_SHARES_PER_WORKER
        {
            return Err(SysError::new(Syscall::Dup, libc::EMFILE));
        }
        if req.fd >= 0 && !self.inherited.contains(&req.fd) {
            return Err(SysError::new(Syscall::Dup, libc::EBADF));
        }
        let slot = match self.by_key.get(&key) {
            Some(&slot) => slot,
            None => {
                let (socket, address) = open(req)?;
                let slot = self.handles.insert(Handle {
                    key: key.clone(),
                    socket,
                    address,
                    workers: Vec::new(),
                });
                self.by_key.insert(key, slot);
                log::debug!("registry: bound {} for handle {slot}", self.handles[slot].address);
                slot
            }
        };
        let h = &mut self.handles[slot];
        let socket = match h.socket.as_fd().try_clone_to_owned() {
            Ok(s) => s,
            Err(e) => {
                let err = SysError::new(Syscall::Dup, e.raw_os_error().unwrap_or(libc::EMFILE));
                if h.workers.is_empty() {
                    self.drop_handle(slot);
                }
                return Err(err);
            }
        };
        if !h.workers.contains(&worker) {
            h.workers.push(worker);
        }
        Ok(Share { handle: slot as u32, address: h.address.clone(), socket })
    }

    /// `worker` closed its server of `handle`. Returns false if it held none.
    pub(crate) fn close(&mut self, worker: WorkerId, handle: u32) -> bool {
        let slot = handle as usize;
        let Some(h) = self.handles.get_mut(slot) else {
            return false;
        };
        let Some(pos) = h.workers.iter().position(|w| *w == worker) else {
            return false;
        };
        h.workers.swap_remove(pos);
        if h.workers.is_empty() {
            self.drop_handle(slot);
        }
        true
    }

    /// Removes `worker` from every key (it disconnected or died).
    pub(crate) fn remove_worker(&mut self, worker: WorkerId) {
        let slots: Vec<usize> = self
            .handles
            .iter()
            .filter(|(_, h)| h.workers.contains(&worker))
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            self.close(worker, slot as u32);
        }
    }

    /// Records the descriptors open now as the ones `fd:N` may name.
    pub(crate) fn with_inherited(inherited: Vec<i32>) -> SocketRegistry {
        SocketRegistry { inherited, ..SocketRegistry::default() }
    }

    /// How many listening sockets the master holds.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    fn drop_handle(&mut self, slot: usize) {
        let h = self.handles.remove(slot);
        self.by_key.remove(&h.key);
        log::debug!("registry: closed {} (handle {slot}): no worker left", h.address);
    }
}

/// Creates (or, for `fd`, adopts) the socket for a request.
fn open(req: &ListenRequest) -> Result<(OwnedFd, Address), SysError> {
    let transport = match req.kind {
        Kind::Tcp => Transport::Stream,
        Kind::Udp | Kind::Unix => {
            return Err(SysError::new(Syscall::Socket, libc::EPROTONOSUPPORT))
        }
    };
    let socket = if req.fd >= 0 {
        let s = dup_raw(req.fd)?;
        socket::prepare_inherited(s.as_fd(), transport, req.backlog)?;
        s
    } else {
        let addr = parse_ip(&req.address, req.port)
            .ok_or(SysError::new(Syscall::Address, libc::EINVAL))?;
        let opts = BindOptions { backlog: req.backlog, ipv6only: req.ipv6only };
        socket::bind_inet(transport, addr, opts)?
    };
    let address = match socket::local_inet_addr(socket.as_fd())? {
        Some(a) => Address::Inet(a),
        // A TCP key names an internet socket; fd:N of another family is not one.
        None => return Err(SysError::new(Syscall::Getsockname, libc::EAFNOSUPPORT)),
    };
    if let Address::Inet(a) = address {
        if req.port != 0 && a.port() != req.port {
            return Err(SysError::new(Syscall::Bind, libc::EADDRINUSE));
        }
    }
    Ok((socket, address))
}

impl SocketRegistry {
    /// The handles `worker` holds.
    pub(crate) fn handles_of(&self, worker: WorkerId) -> Vec<u32> {
        self.handles
            .iter()
            .filter(|(_, h)| h.workers.contains(&worker))
            .map(|(slot, _)| slot as u32)
            .collect()
    }

    /// True if `worker` holds `handle`.
    pub(crate) fn holds(&self, worker: WorkerId, handle: u32) -> bool {
        self.handles.get(handle as usize).is_some_and(|h| h.workers.contains(&worker))
    }
}

/// `IP` or `IPv6%SCOPE` (numeric scope id), as the worker sends it.
fn parse_ip(address: &[u8], port: u16) -> Option<SocketAddr> {
    let text = std::str::from_utf8(address).ok()?;
    if let Some((ip, scope)) = text.split_once('%') {
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        return Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope.parse().ok()?)));
    }
    Some(SocketAddr::new(text.parse::<IpAddr>().ok()?, port))
}
