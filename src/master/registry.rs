//! The master's socket registry: one listening socket per key, shared by
//! every worker that asks for that key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use slab::Slab;

use super::credentials::Credentials;
use super::unix_socket::{self, Liveness, SocketFile};
use crate::balance::seats::{BoardShare, Seats};
use crate::ipc::ListenRequest;
use crate::listen::{Address, Kind};
use crate::sys::fd::{self, dup_raw, Identity};
use crate::sys::fs::FileId;
use crate::sys::procfs::UnixListeners;
use crate::sys::socket::{self, BindOptions, Transport};
use crate::sys::{SysError, Syscall};
use crate::WorkerId;

/// Node's key: `(kind, address, port, fd, index)`. Backlog and options are
/// not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) kind: Kind,
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
    /// Kept open for workers to come ([`SocketRegistry::keep`]).
    pins: u32,
    /// A socket file the master created, unlinked with the handle.
    unlink: Option<SocketFile>,
    /// The accept board of a stream socket (none for UDP, or if the memfd
    /// could not be made: then workers accept without balancing).
    board: Option<Seats>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(file) = &self.unlink {
            file.remove();
        }
    }
}

/// A worker's share of a key: the handle to name when closing it, the bound
/// address, and the worker's own duplicate of the socket.
pub(crate) struct Share {
    pub handle: u32,
    pub address: Address,
    pub socket: OwnedFd,
    /// The worker's seat on the socket's accept board.
    pub board: Option<BoardShare>,
}

/// What a key a worker holds costs it against its descriptor budget: what
/// the master keeps open for the key (the socket, and for a stream socket
/// its accept board and, where one worker is woken per connection, its
/// bell; for a Unix path the directory it was bound in), charged in full to
/// every worker holding it.
fn key_cost(kind: Kind) -> usize {
    let bell = usize::from(crate::sys::listen_poll::WAKES_ONE);
    match kind {
        Kind::Udp => 1,
        Kind::Tcp => 2 + bell,
        // And the directory the socket file was bound in, kept open.
        Kind::Unix => 3 + bell,
    }
}

/// The master's descriptor limits, as the registry applies them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FdLimits {
    /// What one worker may cost the master (see [`key_cost`]), message
    /// descriptors not yet taken by the application included.
    pub budget: usize,
    /// The master's `RLIMIT_NOFILE`.
    pub limit: u64,
    /// Descriptors no new key may take: kept for channels, spawns and the
    /// duplicates sent with listen replies.
    pub reserve: usize,
}

impl FdLimits {
    /// True if the master can open `cost` more descriptors for a new key
    /// and still keep its reserve. Counts what is open now (the application
    /// holds descriptors the registry does not know of).
    fn room_for(&self, cost: usize) -> bool {
        match fd::count_open_fds() {
            Ok(open) => (open + cost + self.reserve) as u64 <= self.limit,
            Err(_) => false,
        }
    }
}

/// Every listening socket the master holds, by key.
#[derive(Default)]
pub(crate) struct SocketRegistry {
    handles: Slab<Handle>,
    by_key: HashMap<Key, usize>,
    /// Descriptors a worker may name with `fd:N`: those open when the master
    /// was created (inherited), by number and identity. A number closed and
    /// reused since (the master's own sockets among others) is not one.
    inherited: Vec<(i32, Identity)>,
    /// What each worker's keys cost ([`key_cost`]), kept as they are taken
    /// and left.
    costs: HashMap<WorkerId, usize>,
    limits: FdLimits,
    /// Sockets kept open for the workers to come after a worker left them.
    kept: Vec<Kept>,
    /// The system's listening Unix sockets, read for `unix:PATH` listens
    /// that find a socket file in their way.
    unix_listeners: UnixListeners,
    /// What each live worker accepted on seats it no longer has.
    accepted_left: HashMap<WorkerId, u64>,
}

/// A socket kept open ([`SocketRegistry::keep`]) after worker `from` left
/// it, until a worker started after `from` holds it, or until `until`.
#[derive(Debug, Clone, Copy)]
struct Kept {
    handle: u32,
    from: WorkerId,
    until: Instant,
}

impl SocketRegistry {
    /// Gives `worker` a duplicate of the socket for the request's key,
    /// binding it first if no worker holds that key. A failure leaves no
    /// trace, so a later request for the same key tries again.
    ///
    /// `untaken` is what else the worker costs the master now (descriptors
    /// of its messages the application has not taken): a key that would
    /// take the worker past its budget is `EMFILE`, and so is a new key when
    /// the master is within its reserve of `RLIMIT_NOFILE`.
    pub(crate) fn listen(
        &mut self,
        worker: WorkerId,
        creds: Option<&Credentials>,
        req: &ListenRequest,
        untaken: usize,
    ) -> Result<Share, SysError> {
        let key = Key::of(req);
        let existing = self.by_key.get(&key).copied();
        if let Some(slot) = existing {
            if self.handles[slot].workers.contains(&worker) {
                // A worker asks once per index; asking again is a bug or worse.
                return Err(SysError::new(Syscall::Address, libc::EBUSY));
            }
        }
        let cost = key_cost(req.kind);
        if self.cost_of(worker) + untaken + cost > self.limits.budget {
            return Err(SysError::new(Syscall::Dup, libc::EMFILE));
        }
        let slot = match existing {
            Some(slot) => slot,
            None => {
                // The number must still name what it named at start; the
                // key of a socket adopted before stays valid regardless.
                if req.fd >= 0 && !self.is_inherited(req.fd) {
                    return Err(SysError::new(Syscall::Dup, libc::EBADF));
                }
                if !self.limits.room_for(cost) {
                    return Err(SysError::new(Syscall::Dup, libc::EMFILE));
                }
                let (socket, address, unlink) = if req.kind == Kind::Unix && req.fd < 0 {
                    self.open_unix(req, creds)?
                } else {
                    open(req)?
                };
                let board = if req.kind == Kind::Udp { None } else { Seats::new() };
                let slot = self.handles.insert(Handle {
                    key: key.clone(),
                    socket,
                    address,
                    workers: Vec::new(),
                    pins: 0,
                    unlink,
                    board,
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
                if h.workers.is_empty() && h.pins == 0 {
                    self.drop_handle(slot);
                }
                return Err(err);
            }
        };
        if !h.workers.contains(&worker) {
            h.workers.push(worker);
            *self.costs.entry(worker).or_insert(0) += cost;
        }
        let board = h.board.as_mut().and_then(|b| b.take(worker));
        let share = Share { handle: slot as u32, address: h.address.clone(), socket, board };
        // A worker started after the one it was kept for holds it now.
        self.release_kept_where(|k| k.handle == share.handle && k.from < worker);
        Ok(share)
    }

    /// `worker` closed its server of `handle`. Returns false if it held none.
    pub(crate) fn close(&mut self, worker: WorkerId, handle: u32) -> bool {
        self.leave(worker, handle, true)
    }

    fn leave(&mut self, worker: WorkerId, handle: u32, closed: bool) -> bool {
        let slot = handle as usize;
        let Some(h) = self.handles.get_mut(slot) else {
            return false;
        };
        let Some(pos) = h.workers.iter().position(|w| *w == worker) else {
            return false;
        };
        h.workers.swap_remove(pos);
        let cost = key_cost(h.key.kind);
        if let Some(c) = self.costs.get_mut(&worker) {
            *c = c.saturating_sub(cost);
            if *c == 0 {
                self.costs.remove(&worker);
            }
        }
        if let Some(b) = h.board.as_mut() {
            let accepted = b.leave(worker, closed);
            if accepted > 0 {
                *self.accepted_left.entry(worker).or_default() += accepted;
            }
        }
        if h.workers.is_empty() && h.pins == 0 {
            self.drop_handle(slot);
        }
        true
    }

    /// Keeps `handle` open even when no worker holds it, until as many
    /// [`unpin`](Self::unpin)s.
    pub(crate) fn pin(&mut self, handle: u32) {
        if let Some(h) = self.handles.get_mut(handle as usize) {
            h.pins += 1;
        }
    }

    /// Undoes one [`pin`](Self::pin); closes the socket if no worker holds it.
    pub(crate) fn unpin(&mut self, handle: u32) {
        let slot = handle as usize;
        let Some(h) = self.handles.get_mut(slot) else { return };
        h.pins = h.pins.saturating_sub(1);
        if h.workers.is_empty() && h.pins == 0 {
            self.drop_handle(slot);
        }
    }

    /// Keeps every socket `worker` holds open (with its queued connections)
    /// after the worker leaves it, until a worker started after it holds it
    /// too, or until `until`.
    ///
    /// Kept sockets cost the master descriptors that no live worker is
    /// charged for, so all of them together stay within one worker's
    /// budget: the oldest kept ones are given up first to make room (a
    /// worker that binds keys until refused and exits, seat after seat,
    /// cannot pile them up).
    pub(crate) fn keep(&mut self, worker: WorkerId, until: Instant) {
        for handle in self.handles_of(worker) {
            if self.kept.iter().any(|k| k.handle == handle && k.from == worker) {
                continue;
            }
            let Some(h) = self.handles.get(handle as usize) else { continue };
            let cost = key_cost(h.key.kind);
            while !self.kept.is_empty() && self.kept_cost(Some(worker)) + cost > self.limits.budget
            {
                let oldest = self.kept.remove(0);
                log::debug!(
                    "registry: handle {} no longer kept for worker {}'s successor: the kept \
                     sockets are at the budget",
                    oldest.handle,
                    oldest.from
                );
                self.unpin(oldest.handle);
            }
            if self.kept_cost(Some(worker)) + cost <= self.limits.budget {
                self.pin(handle);
                self.kept.push(Kept { handle, from: worker, until });
            }
        }
    }

    /// The descriptors the kept sockets cost ([`key_cost`]).
    /// (Each socket once, and only those no worker but `leaving`, which is
    /// about to leave them, holds: the others would be open anyway.)
    fn kept_cost(&self, leaving: Option<WorkerId>) -> usize {
        let mut handles: Vec<u32> = self.kept.iter().map(|k| k.handle).collect();
        handles.sort_unstable();
        handles.dedup();
        handles
            .into_iter()
            .filter_map(|h| self.handles.get(h as usize))
            .filter(|h| h.workers.iter().all(|w| Some(*w) == leaving))
            .map(|h| key_cost(h.key.kind))
            .sum()
    }

    /// Gives up the sockets kept past `now`; returns the next such time.
    pub(crate) fn expire_kept(&mut self, now: Instant) -> Option<Instant> {
        self.release_kept_where(|k| k.until <= now);
        self.kept_until()
    }

    /// When the next kept socket is given up.
    pub(crate) fn kept_until(&self) -> Option<Instant> {
        self.kept.iter().map(|k| k.until).min()
    }

    /// Gives up every kept socket.
    pub(crate) fn release_kept(&mut self) {
        self.release_kept_where(|_| true);
    }

    fn release_kept_where(&mut self, release: impl Fn(&Kept) -> bool) {
        let (gone, kept): (Vec<Kept>, Vec<Kept>) =
            std::mem::take(&mut self.kept).into_iter().partition(|k| release(k));
        self.kept = kept;
        for k in gone {
            self.unpin(k.handle);
        }
    }

    /// Removes `worker` from every key (it was asked to leave, or left, or
    /// died).
    pub(crate) fn remove_worker(&mut self, worker: WorkerId) {
        let slots: Vec<usize> = self
            .handles
            .iter()
            .filter(|(_, h)| h.workers.contains(&worker))
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            self.leave(worker, slot as u32, false);
        }
    }

    /// `worker` exited: the seats it left are free for others. Returns how
    /// many connections it accepted in all, as its seats counted them.
    pub(crate) fn worker_exited(&mut self, worker: WorkerId) -> u64 {
        let mut accepted = self.accepted_left.remove(&worker).unwrap_or(0);
        for (_, h) in self.handles.iter_mut() {
            if let Some(b) = h.board.as_mut() {
                accepted += b.exited(worker);
            }
        }
        accepted
    }

    /// How many connections `worker` accepted so far, and how many of
    /// those on the seats it still holds are open, as the accept boards
    /// count them.
    pub(crate) fn connections_of(&self, worker: WorkerId) -> (u64, u64) {
        let left = self.accepted_left.get(&worker).copied().unwrap_or(0);
        self.handles.iter().filter_map(|(_, h)| h.board.as_ref()).fold((left, 0), |(a, o), b| {
            let (accepted, open) = b.counts(worker);
            (a + accepted, o + open)
        })
    }

    /// Records the descriptors open now (number and identity) as the ones
    /// `fd:N` may name, and the limits new keys are held to.
    pub(crate) fn with_inherited(
        inherited: Vec<(i32, Identity)>,
        limits: FdLimits,
    ) -> SocketRegistry {
        SocketRegistry { inherited, limits, ..SocketRegistry::default() }
    }

    /// True if `fd` is open and names what it named when the master was
    /// created.
    /// `fd` is the master's own (handed over for another use): a worker may
    /// not name it with `fd:N`.
    pub(crate) fn forget_inherited(&mut self, fd: i32) {
        self.inherited.retain(|&(n, _)| n != fd);
    }

    fn is_inherited(&self, fd: i32) -> bool {
        self.inherited.iter().any(|&(n, id)| n == fd && fd::identity(fd) == Some(id))
    }

    /// What the keys `worker` holds cost ([`key_cost`]).
    pub(crate) fn cost_of(&self, worker: WorkerId) -> usize {
        self.costs.get(&worker).copied().unwrap_or(0)
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

impl SocketRegistry {
    /// Binds a `unix:PATH` request. A path the master already holds (under
    /// another key: another index, or the same path spelled the same way)
    /// is `EADDRINUSE` from the registry alone; so is a file in the way
    /// that is one the master bound. Only a file the master does not know
    /// makes it consult the system's table, and that read is shared by
    /// every listen for a while ([`UnixListeners`]).
    fn open_unix(
        &mut self,
        req: &ListenRequest,
        creds: Option<&Credentials>,
    ) -> Result<(OwnedFd, Address, Option<SocketFile>), SysError> {
        let in_use = SysError::new(Syscall::Bind, libc::EADDRINUSE);
        if !req.address.is_empty()
            && self.handles.iter().any(|(_, h)| {
                h.key.kind == Kind::Unix && h.key.fd < 0 && h.key.address == req.address
            })
        {
            return Err(in_use);
        }
        let held: Vec<FileId> = self
            .handles
            .iter()
            .filter_map(|(_, h)| h.unlink.as_ref().map(SocketFile::id))
            .collect();
        let live = Liveness { held: &held, table: &mut self.unix_listeners };
        unix_socket::open_unix(req, creds, live)
    }
}

/// Creates (or, for `fd`, adopts) the socket for a request, but for a
/// `unix:PATH` one ([`SocketRegistry::open_unix`]). Returns the socket and
/// its address.
fn open(req: &ListenRequest) -> Result<(OwnedFd, Address, Option<SocketFile>), SysError> {
    let transport = match req.kind {
        Kind::Tcp | Kind::Unix => Transport::Stream,
        Kind::Udp => Transport::Datagram,
    };
    if req.fd >= 0 {
        let s = dup_raw(req.fd)?;
        // Its kind and family are checked before it is changed in any way.
        socket::prepare_inherited(s.as_fd(), req.kind, req.backlog)?;
        let address = match (req.kind, socket::local_inet_addr(s.as_fd())?) {
            (Kind::Tcp | Kind::Udp, Some(a)) => Address::Inet(a),
            (Kind::Unix, None) => Address::Unix(crate::sys::listen_fds::local_unix_path(s.as_fd())),
            // The descriptor is not of the family the key names.
            _ => return Err(SysError::new(Syscall::Getsockname, libc::EAFNOSUPPORT)),
        };
        check_port(req, &address)?;
        return Ok((s, address, None));
    }
    let addr =
        parse_ip(&req.address, req.port).ok_or(SysError::new(Syscall::Address, libc::EINVAL))?;
    let opts = BindOptions { backlog: req.backlog, ipv6only: req.ipv6only };
    let s = socket::bind_inet(transport, addr, opts)?;
    let address = Address::Inet(
        socket::local_inet_addr(s.as_fd())?
            .ok_or(SysError::new(Syscall::Getsockname, libc::EAFNOSUPPORT))?,
    );
    check_port(req, &address)?;
    Ok((s, address, None))
}

/// A bound port that differs from the requested non-zero port is EADDRINUSE.
fn check_port(req: &ListenRequest, address: &Address) -> Result<(), SysError> {
    match address {
        Address::Inet(a) if req.port != 0 && a.port() != req.port => {
            Err(SysError::new(Syscall::Bind, libc::EADDRINUSE))
        }
        _ => Ok(()),
    }
}

impl SocketRegistry {
    /// Whether `worker` may say it listens on `address`: `None` if the
    /// master holds no socket bound there (a socket of the worker's own,
    /// which the master cannot check), else whether the worker holds it.
    pub(crate) fn may_claim(&self, worker: WorkerId, address: &Address) -> Option<bool> {
        let mut bound_here = self.handles.iter().filter(|(_, h)| h.address == *address).peekable();
        bound_here.peek()?;
        Some(bound_here.any(|(_, h)| h.workers.contains(&worker)))
    }

    /// The handles `worker` holds.
    pub(crate) fn handles_of(&self, worker: WorkerId) -> Vec<u32> {
        self.handles
            .iter()
            .filter(|(_, h)| h.workers.contains(&worker))
            .map(|(slot, _)| slot as u32)
            .collect()
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

// Handing the registry to a new master: export, import, the keys' text.
#[path = "registry_export.rs"]
mod export;
pub(crate) use export::parse_key;

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
