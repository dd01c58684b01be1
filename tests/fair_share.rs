//! `Balance::Even` (the default): a worker that holds more than its share of
//! the open connections leaves new ones to the others. A worker that is not
//! scheduled within 2 ms is passed over, by design: the cluster runs under
//! `SCHED_FIFO` (as root) so that other load on the machine cannot keep the
//! newcomer off the CPU that long, and in a file of its own.

mod util;

use util::*;

#[test]
fn a_worker_over_its_share_leaves_new_connections_to_a_newcomer() {
    let mut m = Proc::fixture_realtime(&["--listen", "127.0.0.1:0"], &[]);
    m.send("fork");
    m.send("fork");
    let addr: std::net::SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    m.expect("listening id=2");
    let mut held = Vec::new();
    hold(addr, 20, &mut held);
    assert_eq!(conns_of(&mut m, &[1, 2]).iter().sum::<usize>(), 20);
    // A third worker joins with none; the next 10 connections, one at a
    // time, should mostly go to it: the two others hold their share (about
    // 10 each of 30) already. Taking turns alone would give it about 3.
    assert_newcomer_takes_its_share(&mut m, addr, &mut held);
}
