//! `Debug` on the worker's handles shows what a log line needs: ids, pids,
//! descriptors, addresses, sharing; checked on a real worker of the fixture.

mod util;

use util::{field, Proc};

#[test]
fn a_worker_its_listener_and_its_udp_socket_show_id_pid_descriptor_address_and_sharing() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0", "--udp", "udp:127.0.0.1:0"]);
    m.send("fork");
    let pid = field(&m.expect("fork id=1"), "pid").to_string();
    let tcp = field(&m.expect("listening id=1"), "addr").to_string();
    let ok = m.expect("message id=1 udp-ok");
    let udp = ok.split(' ').nth(3).unwrap().to_string();
    m.send("send 1 debug");
    let line = m.expect("message id=1 debug");
    let shown = line.strip_prefix("message id=1 debug ").unwrap();
    eprintln!("{shown}");
    let worker = format!("Worker {{ id: 1, pid: {pid}, leaving: false, .. }}");
    assert!(shown.starts_with(&worker), "{shown}");
    let listener = shown[worker.len()..].trim_start();
    assert!(listener.starts_with("[Listener { fd: "), "{shown}");
    assert!(
        listener.contains(&format!(", address: Inet({tcp}), shared: true, balance: Even }}]")),
        "{shown}"
    );
    assert!(shown.contains("[UdpSocket { fd: "), "{shown}");
    assert!(shown.ends_with(&format!(", address: Inet({udp}), shared: true }}]")), "{shown}");
}
