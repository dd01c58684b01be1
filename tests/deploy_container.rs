//! `deploy/Dockerfile` and `deploy/kubernetes.yaml`, as far as this
//! machine goes without a Docker daemon or a cluster: the manifest is read
//! by `kubectl kustomize` (a real parse into Kubernetes objects, no
//! server), the two files agree with each other and with the shutdown
//! budget, and the container's command line (the manifest's `args` to the
//! image's `ENTRYPOINT`) runs as PID 1 of a PID namespace, as in the
//! container, answering the manifest's probes and draining on `SIGTERM`.
//! Not run here: `docker build`, `docker run`, a kubelet.

// systemd, PID namespaces and containers are Linux's: on other platforms
// this file is empty.
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

fn deploy(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON list of an exec-form Dockerfile instruction (strings without
/// escapes, as ours are).
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    let list = line[instruction.len()..].trim();
    let inner = list.strip_prefix('[').and_then(|l| l.strip_suffix(']')).expect("exec form");
    inner.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect()
}

/// The items of the YAML block list after the line `key:` (ours: one
/// scalar per `- ` line, quotes removed).
fn yaml_list(yaml: &str, key: &str) -> Vec<String> {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}:")).skip(1);
    let mut items = Vec::new();
    for l in lines.by_ref() {
        let Some(item) = l.trim().strip_prefix("- ") else { break };
        items.push(item.trim_matches('"').to_string());
    }
    items
}

/// The scalar of the first `key: value` line after the line `after:`.
fn yaml_value(yaml: &str, after: &str, key: &str) -> String {
    let start = yaml.find(&format!("{after}:")).unwrap_or_else(|| panic!("no {after}"));
    yaml[start..]
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} after {after}"))
        .trim()
        .trim_matches('"')
        .to_string()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let i = args.iter().position(|a| a == name).unwrap_or_else(|| panic!("no {name}: {args:?}"));
    &args[i + 1]
}

fn secs(args: &[String], name: &str) -> f64 {
    flag(args, name).parse().unwrap()
}

#[test]
fn the_manifest_is_read_by_kubectl_kustomize_as_a_deployment_and_a_service() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("skipped: no kubectl");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mio-cluster-kustomize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kubernetes.yaml"), deploy("kubernetes.yaml")).unwrap();
    std::fs::write(dir.join("kustomization.yaml"), "resources:\n- kubernetes.yaml\n").unwrap();
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(yaml.contains("kind: Deployment") && yaml.contains("kind: Service"), "{yaml}");
    assert!(yaml.contains("path: /ready") && yaml.contains("path: /live"), "{yaml}");
}

#[test]
fn the_dockerfile_and_the_manifest_agree_and_keep_to_the_shutdown_budget() {
    let dockerfile = deploy("Dockerfile");
    let manifest = deploy("kubernetes.yaml");
    // Multi-stage, the master as PID 1: exec form, no shell.
    assert_eq!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert_eq!(exec_form(&dockerfile, "ENTRYPOINT"), ["/usr/local/bin/mio-cluster-echo"]);
    let cmd = exec_form(&dockerfile, "CMD");
    let args = yaml_list(&manifest, "args");
    for name in ["--listen", "--health", "--shutdown-linger", "--shutdown-timeout"] {
        assert_eq!(
            flag(&cmd, name),
            flag(&args, name),
            "{name}: the image and the manifest differ"
        );
    }
    // The probes go to the health listener's port.
    let health_port = flag(&args, "--health").rsplit(':').next().unwrap().to_string();
    assert!(dockerfile.contains(&format!("EXPOSE 7000 {health_port}")));
    assert!(
        manifest.contains(&format!("- name: health\n              containerPort: {health_port}"))
    );
    assert_eq!(yaml_value(&manifest, "readinessProbe", "path"), "/ready");
    assert_eq!(yaml_value(&manifest, "readinessProbe", "port"), "health");
    assert_eq!(yaml_value(&manifest, "livenessProbe", "path"), "/live");
    assert_eq!(yaml_value(&manifest, "livenessProbe", "port"), "health");
    // linger + shutdown timeout, and one more for other processes, fit in
    // the grace period before the kubelet's SIGKILL.
    let grace: f64 =
        yaml_value(&manifest, "spec", "terminationGracePeriodSeconds").parse().unwrap();
    let budget = secs(&args, "--shutdown-linger") + 2.0 * secs(&args, "--shutdown-timeout");
    assert!(budget <= grace, "linger + 2 x shutdown timeout = {budget} s > {grace} s");
    assert!(secs(&args, "--shutdown-linger") > 0.0);
}

/// `GET path`: the status code.
fn probe(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = connect(addr) else { return 0 };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: kubelet\r\n\r\n");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn the_containers_command_line_as_pid_1_answers_the_probes_and_drains_on_sigterm() {
    if !pid_namespaces() {
        return;
    }
    let manifest = deploy("kubernetes.yaml");
    let mut args = yaml_list(&manifest, "args");
    // Loopback and ports free here instead of 0.0.0.0:7000 and :8080.
    let free = free_addr;
    let health = free();
    for a in args.iter_mut() {
        if a == "0.0.0.0:7000" {
            *a = "127.0.0.1:0".into();
        } else if a.starts_with("0.0.0.0:") {
            *a = health.to_string();
        }
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"]).arg(example("echo")).args(&args);
    let mut p = Proc::start(cmd);
    let line = p.expect("ready ");
    // PID 1 is the init, the master its child.
    assert!(line.ends_with(" pid=2"), "{line}");
    let addr: SocketAddr = field(&line, "addr").parse().unwrap();
    let init = workers_of(p.pid())[0];
    let ready = yaml_value(&manifest, "readinessProbe", "path");
    let live = yaml_value(&manifest, "livenessProbe", "path");
    assert!(eventually(WAIT, || probe(health, &ready) == 200), "{}", p.stderr());
    assert_eq!(probe(health, &live), 200);
    // The kubelet's SIGTERM: not ready at once, still serving during the
    // linger, then a clean exit well within the grace period.
    let sent = Instant::now();
    signal(init, "TERM");
    assert!(eventually(WAIT, || probe(health, &ready) == 503), "{}", p.stderr());
    echo_once(addr).unwrap();
    assert_eq!(probe(health, &live), 200);
    let linger = Duration::from_secs_f64(secs(&args, "--shutdown-linger"));
    assert!(sent.elapsed() < linger, "the linger is over already: {:?}", sent.elapsed());
    let grace: u64 =
        yaml_value(&manifest, "spec", "terminationGracePeriodSeconds").parse().unwrap();
    let status = p.wait_exit(Duration::from_secs(grace));
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    assert!(sent.elapsed() >= linger, "{:?}", sent.elapsed());
}
