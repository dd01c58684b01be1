// Node.js peer of mio-cluster's `echo` example, for side-by-side benchmarks:
// a TCP echo server on N worker processes, built on Node's cluster module.
//
//   node examples/bench/node_echo.js [--workers N] [--listen HOST:PORT]
//
// Defaults: one worker per CPU (os.availableParallelism()), 127.0.0.1:7000;
// port 0 picks one port that all workers share; IPv6 as [::1]:PORT.
// Scheduling is Node's own: NODE_CLUSTER_SCHED_POLICY=rr (round robin, the
// default on Linux: the master accepts and hands sockets over) or =none (the
// workers accept on a shared socket, like mio-cluster).
// Once every worker listens, the master prints one line on stdout, in the
// same format as ours:  ready addr=127.0.0.1:7000 workers=4 pid=12345
// SIGINT/SIGTERM: the master disconnects the workers (they stop accepting and
// finish open connections) and exits 0 when all are gone, or 1 after 5 s.
// Built-in modules only (Node 20). Logs go to stderr.
'use strict';
const cluster = require('node:cluster');
const net = require('node:net');
const os = require('node:os');

function usage(msg) {
  if (msg) console.error(`node_echo: ${msg}`);
  console.error('usage: node bench/node_echo.js [--workers N] [--listen HOST:PORT]');
  process.exit(2);
}

// Command line (parsed by master and workers alike: fork re-runs this file).
let workers = os.availableParallelism();
let listen = '127.0.0.1:7000';
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${argv[i]} needs a value`));
  if (argv[i] === '--workers') workers = Number(value());
  else if (argv[i] === '--listen') listen = value();
  else usage(argv[i] === '-h' || argv[i] === '--help' ? '' : `unknown argument ${argv[i]}`);
}
if (!Number.isInteger(workers) || workers < 1) usage('--workers: at least 1');
const m = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d+)$/.exec(listen);
if (!m || Number(m[3]) > 65535) usage(`--listen: bad address ${listen}`);
const host = m[1] ?? m[2];
const port = Number(m[3]);

if (cluster.isWorker) {
  // Worker: the leanest echo. pipe() honours backpressure and echoes a
  // half-close; socket errors (ECONNRESET...) are swallowed.
  const swallow = () => {};
  net.createServer({ noDelay: true }, (socket) => {
    socket.on('error', swallow);
    socket.pipe(socket);
  }).listen(port, host); // a listen error crashes the worker: the master quits
  // Ctrl-C reaches the whole process group: leave shutdown to the master.
  process.on('SIGINT', swallow);
} else {
  let alive = 0;
  let ready = false;
  let stopping = false;
  const listening = new Set();
  const forked = []; // our own list: worker.disconnect() drops cluster.workers

  const shutdown = (code) => {
    if (stopping) return;
    stopping = true;
    if (alive === 0) process.exit(code);
    process.exitCode = code;
    for (const w of Object.values(cluster.workers)) w.disconnect();
    setTimeout(() => {
      console.error(`node_echo: ${alive} workers still alive after 5 s, killing them`);
      for (const w of forked) if (!w.isDead()) w.process.kill('SIGKILL');
      process.exit(1);
    }, 5000).unref();
  };

  cluster.on('listening', (worker, address) => {
    listening.add(worker.id);
    if (ready || listening.size < workers) return;
    ready = true;
    const a = address.addressType === 6 || address.address.includes(':')
      ? `[${address.address}]` : address.address;
    console.log(`ready addr=${a}:${address.port} workers=${workers} pid=${process.pid}`);
  });
  cluster.on('exit', (worker, code, signal) => {
    alive--;
    if (!stopping) {
      console.error(`node_echo: worker ${worker.id} died (${signal || code}); shutting down`);
      shutdown(1);
    } else if (alive === 0) {
      process.exit(process.exitCode);
    }
  });
  process.on('SIGINT', () => shutdown(0));
  process.on('SIGTERM', () => shutdown(0));

  for (let i = 0; i < workers; i++, alive++) forked.push(cluster.fork());
}
