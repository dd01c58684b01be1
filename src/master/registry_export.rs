//! Handing the registry to a new master (a hot upgrade,
//! `master::upgrade`): every key with its socket, as text, and the same
//! open socket (device and inode) inherited by number on the other side.

use std::os::fd::{AsFd, OwnedFd};

use super::{Handle, Key, SocketRegistry};
use crate::balance::seats::Seats;
use crate::listen::{Address, Kind};
use crate::sys::socket;

/// Handing the registry to a new master (a hot upgrade, `master::upgrade`):
/// every key with its socket, the same open socket (device and inode)
/// inherited by number.
impl SocketRegistry {
    /// Every key, as text (`kind:port:fd:index:hex(address)`), with the
    /// number of its socket here.
    pub(crate) fn export(&self) -> Vec<(std::os::fd::RawFd, String)> {
        use std::os::fd::AsRawFd;
        self.handles
            .iter()
            .map(|(_, h)| {
                let k = &h.key;
                let hex: String = k.address.iter().map(|b| format!("{b:02x}")).collect();
                let text = format!("{}:{}:{}:{}:{hex}", k.kind as u8, k.port, k.fd, k.index);
                (h.socket.as_raw_fd(), text)
            })
            .collect()
    }

    /// Handed over: the socket files this master bound are the new
    /// master's to serve now, so none is unlinked when this one closes its
    /// sockets (the new master leaves them in place too: a stale file is
    /// reclaimed by the next bind).
    pub(crate) fn keep_files(&mut self) {
        for (_, h) in self.handles.iter_mut() {
            h.unlink = None;
        }
    }

    /// Takes `socket` as the socket of the key `text` (as [`export`](Self::export)
    /// wrote it), held ([`pin`](Self::pin)ned) until unpinned even with no
    /// worker on it. Returns its handle. A Unix socket file bound by the
    /// old master is not unlinked by this one.
    pub(crate) fn import(&mut self, socket: OwnedFd, text: &str) -> Result<u32, String> {
        let key = parse_key(text)?;
        let kind = key.kind;
        if self.by_key.contains_key(&key) {
            return Err(format!("inherited key {text:?} twice"));
        }
        socket::check_kind(socket.as_fd(), kind).map_err(|e| format!("{text:?}: {e}"))?;
        let address = match socket::local_inet_addr(socket.as_fd()) {
            Ok(Some(a)) if kind != Kind::Unix => Address::Inet(a),
            Ok(None) if kind == Kind::Unix => Address::Unix(key.address.clone()),
            _ => return Err(format!("{text:?}: not a socket of that family")),
        };
        let board = if kind == Kind::Udp { None } else { Seats::new() };
        let slot = self.handles.insert(Handle {
            key: key.clone(),
            socket,
            address,
            workers: Vec::new(),
            pins: 1,
            unlink: None,
            board,
        });
        self.by_key.insert(key, slot);
        log::debug!("registry: inherited {} as handle {slot}", self.handles[slot].address);
        Ok(slot as u32)
    }
}

/// A key as [`SocketRegistry::export`] writes it: `kind:port:fd:index:hex`.
pub(crate) fn parse_key(text: &str) -> Result<Key, String> {
    let bad = || format!("bad inherited key {text:?}");
    let f: Vec<&str> = text.split(':').collect();
    let [kind, port, fd, index, hex] = f[..] else { return Err(bad()) };
    let kind = kind.parse().ok().and_then(Kind::from_u8).ok_or_else(bad)?;
    if !hex.is_ascii() || hex.len() % 2 != 0 {
        return Err(bad());
    }
    let address = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    Ok(Key {
        kind,
        address,
        port: port.parse().map_err(|_| bad())?,
        fd: fd.parse().map_err(|_| bad())?,
        index: index.parse().map_err(|_| bad())?,
    })
}
