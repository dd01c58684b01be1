//! What `/metrics` costs: a scrape of a 64-worker pool (wall time and the
//! master's CPU per scrape), and the server's CPU per echo request with a
//! scraper polling every second against none, in interleaved rounds.
//!
//! ```text
//! cargo run --release --example metrics_bench -- [--rounds N] [--duration SECS] [--scrapes N]
//! ```
//!
//! It builds nothing itself: run `cargo build --release --examples` first
//! (`cargo run` builds this one and `echo` and `loadgen` with it only if
//! they are stale, so build them all).

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `echo` with `workers` workers and a health listener.
fn echo(workers: usize, health: SocketAddr) -> Server {
    Server {
        key: format!("ours{workers}"),
        name: format!("echo, {workers} workers, --health"),
        cmd: vec![
            bin("echo").display().to_string(),
            "--workers".into(),
            workers.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--health".into(),
            health.to_string(),
        ],
        env: vec![("RUST_LOG".into(), "warn".into())],
    }
}

/// One `GET /metrics`: the body's length.
fn scrape(health: SocketAddr) -> usize {
    let mut s = TcpStream::connect(health).expect("health listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&reply));
    reply.len()
}

fn main() {
    let rounds: usize = arg("--rounds", 5);
    let secs: f64 = arg("--duration", 5.0);
    let scrapes: usize = arg("--scrapes", 200);

    // 1. A scrape of 64 workers.
    let health = free_addr();
    let server = start(&echo(64, health), &[]);
    for _ in 0..20 {
        scrape(health);
    }
    let mut walls = Vec::new();
    let before = cpu_ticks(server.pid);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let t = Instant::now();
        bytes = scrape(health);
        walls.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let master_cpu = cpu_spent(
        &[(server.pid, before)].into_iter().collect(),
        &[(server.pid, cpu_ticks(server.pid))].into_iter().collect(),
    );
    stop(server);
    println!("## A scrape of a 64-worker pool ({scrapes} scrapes, {bytes} bytes each)\n");
    println!("| median wall time per scrape | master CPU per scrape |");
    println!("|---|---|");
    println!("| {:.0} µs | {:.0} µs |\n", median(walls), master_cpu * 1e6 / scrapes as f64);

    // 2. CPU per echo request, scraped every second or not, interleaved.
    let mut none = Vec::new();
    let mut scraped = Vec::new();
    for round in 0..rounds {
        for with_scraper in [round % 2 == 1, round % 2 == 0] {
            let health = free_addr();
            let server = start(&echo(2, health), &[]);
            let stop_flag = Arc::new(AtomicBool::new(false));
            let scraper = with_scraper.then(|| {
                let stop_flag = stop_flag.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop_flag.load(Ordering::Relaxed) {
                        scrape(health);
                        n += 1;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    n
                })
            });
            let m = load_cpu(&server.addr, "echo", secs, None, server.pid);
            stop_flag.store(true, Ordering::Relaxed);
            let n = scraper.map_or(0, |t| t.join().unwrap());
            let per: f64 = m.get("cpu_us_per").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            let rps = m.get("rps").cloned().unwrap_or_default();
            eprintln!(
                "round {round}: scraper={with_scraper} ({n} scrapes) rps={rps} cpu/req={per:.2} µs"
            );
            if with_scraper {
                scraped.push(per)
            } else {
                none.push(per)
            }
            stop(server);
        }
    }
    let (a, b) = (median(none), median(scraped));
    println!("## Server CPU per echo request, 2 workers, {rounds} rounds of {secs} s\n");
    println!("| no scraper | scraped every second | ratio |");
    println!("|---|---|---|");
    println!("| {a:.2} µs | {b:.2} µs | {:.3} |", b / a);
}
