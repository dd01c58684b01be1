//! The master's socket registry: one listening socket per key, shared by
//! every worker that asks for that key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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

/// Every listening socket the master holds, by key.
#[derive(Default)]
pub(crate) struct SocketRegistry {
    handles: Slab<Handle>,
    by_key: HashMap<Key, usize>,
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
        let ip: IpAddr = std::str::from_utf8(&req.address)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(SysError::new(Syscall::Address, libc::EINVAL))?;
        let opts = BindOptions { backlog: req.backlog, ipv6only: req.ipv6only };
        socket::bind_inet(transport, SocketAddr::new(ip, req.port), opts)?
    };
    let address = match socket::local_inet_addr(socket.as_fd())? {
        Some(a) => Address::Inet(a),
        None => Address::Unix(Vec::new()),
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
