//! The registry's tests: export and import, kept sockets, Unix paths.

mod handover_tests {
    use super::super::*;

    #[test]
    fn an_exported_key_is_imported_as_the_same_key_with_the_same_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut old = SocketRegistry::default();
        let socket = OwnedFd::from(l);
        let key =
            Key { kind: Kind::Tcp, address: b"127.0.0.1".to_vec(), port: 0, fd: -1, index: 1 };
        let address = Address::Inet(([127, 0, 0, 1], port).into());
        let slot = old.handles.insert(Handle {
            key: key.clone(),
            socket,
            address: address.clone(),
            workers: Vec::new(),
            pins: 0,
            unlink: None,
            board: None,
        });
        old.by_key.insert(key.clone(), slot);
        let [(fd, text)] = &old.export()[..] else { panic!("one key") };
        let mut new = SocketRegistry::default();
        let dup = dup_raw(*fd).unwrap();
        let identity = fd::identity(*fd);
        let handle = new.import(dup, text).unwrap();
        let h = &new.handles[handle as usize];
        assert_eq!(h.key, key);
        assert_eq!(h.address, address, "a port-0 key keeps its port");
        assert_eq!(fd::identity(std::os::fd::AsRawFd::as_raw_fd(&h.socket)), identity);
        assert_eq!(h.pins, 1, "held until the new master is ready");
        assert!(h.board.is_some(), "a board of its own");
        // Bad descriptions are refused, naming what was wrong.
        for bad in ["1:0:-1:0", "9:0:-1:0:", "1:0:-1:0:zz", "1:0:-1:0:7"] {
            let e = new.import(dup_raw(*fd).unwrap(), bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let e = new.import(dup_raw(*fd).unwrap(), text).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}

mod kept_tests {
    use super::super::*;

    /// A request for `address` of `kind`, port 0, key index `index`.
    pub(super) fn request_for(kind: Kind, address: &[u8], index: u32) -> ListenRequest {
        ListenRequest {
            kind,
            address: address.to_vec(),
            port: 0,
            fd: -1,
            index,
            backlog: 16,
            ipv6only: false,
            readable_all: false,
            writable_all: false,
        }
    }

    fn request(index: u32) -> ListenRequest {
        request_for(Kind::Tcp, b"127.0.0.1", index)
    }

    #[test]
    fn sockets_kept_for_successors_stay_within_one_workers_budget() {
        // A budget of three TCP keys (3 descriptors each, or 2 without the
        // bell).
        let budget = 3 * key_cost(Kind::Tcp);
        let limits = FdLimits { budget, limit: 1 << 20, reserve: 0 };
        let mut reg = SocketRegistry::with_inherited(Vec::new(), limits);
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        // Worker after worker binds three keys of its own, is refused a
        // fourth, and leaves with its sockets kept for its successor.
        for worker in 1..=5u32 {
            for i in 0..3 {
                reg.listen(worker, None, &request(worker * 10 + i), 0).unwrap();
            }
            let refused = reg.listen(worker, None, &request(worker * 10 + 3), 0);
            assert_eq!(refused.err().map(|e| e.errno), Some(libc::EMFILE));
            reg.keep(worker, far);
            reg.remove_worker(worker);
            // Only the last worker's three keys are still open.
            assert_eq!(reg.len(), 3, "after worker {worker}");
            assert!(reg.kept_cost(None) <= budget);
        }
    }
}

mod unix_tests {
    use super::super::*;

    fn request(path: &str, index: u32) -> ListenRequest {
        super::kept_tests::request_for(Kind::Unix, path.as_bytes(), index)
    }

    #[test]
    fn a_path_the_master_holds_is_in_use_without_reading_the_system_table() {
        let dir = std::env::temp_dir().join(format!("mio-cluster-reg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let limits = FdLimits { budget: 64, limit: 1 << 20, reserve: 0 };
        let mut reg = SocketRegistry::with_inherited(Vec::new(), limits);
        let path = format!("{}/a.sock", dir.display());
        reg.listen(1, None, &request(&path, 0), 0).unwrap();
        // The same path under other keys (another index), and under another
        // spelling: refused from what the master holds, the table unread.
        let other = format!("{}/./a.sock", dir.display());
        for (i, p) in [&path, &path, &other].into_iter().enumerate() {
            let e = reg.listen(2, None, &request(p, 1 + i as u32), 0).err().map(|e| e.errno);
            assert_eq!(e, Some(libc::EADDRINUSE), "{p}");
        }
        assert_eq!(reg.unix_listeners.reads(), 0, "no scan of /proc/net/unix");
        // A live socket that is not the master's: the table is read.
        let foreign = format!("{}/b.sock", dir.display());
        let _live = std::os::unix::net::UnixListener::bind(&foreign).unwrap();
        let e = reg.listen(2, None, &request(&foreign, 0), 0).err().map(|e| e.errno);
        assert_eq!(e, Some(libc::EADDRINUSE));
        assert_eq!(reg.unix_listeners.reads(), 1);
        // A stale one (its server gone) is removed, and the path bound.
        let stale = format!("{}/c.sock", dir.display());
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        reg.listen(2, None, &request(&stale, 0), 0).unwrap();
        drop(reg);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
