//! [`Metrics`] in the Prometheus text format 0.0.4, as the health
//! listener serves it on `GET /metrics`.
//!
//! Every family has its `# HELP` and `# TYPE`, every name begins with
//! `mio_cluster_`, and every label is bounded: a worker is named by its slot
//! (`slot="0"` to target-1), never by its id or pid.

use std::fmt::Write;

use crate::supervisor::Metrics;
use crate::PROTOCOL_VERSION;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One family: its name (without the prefix), type, help, and samples
/// (labels, value).
struct Family<'a> {
    text: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP mio_cluster_{name} {help}");
        let _ = writeln!(self.text, "# TYPE mio_cluster_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.text, "mio_cluster_{name}");
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                // Label values here are digits and fixed words, which need
                // no escaping (the crate version is semver).
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.sample(name, &[], value);
    }

    fn by(&mut self, name: &str, kind: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.head(name, kind, help);
        for (v, n) in values {
            self.sample(name, &[(label, v)], n);
        }
    }

    fn per_slot<T: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        m: &Metrics,
        value: impl Fn(&crate::supervisor::SlotMetrics) -> Option<T>,
    ) {
        self.head(name, kind, help);
        for s in &m.slots {
            if let Some(v) = value(s) {
                self.sample(name, &[("slot", &s.slot.to_string())], v);
            }
        }
    }
}

/// `m` in the Prometheus text format 0.0.4 (serve it with [`CONTENT_TYPE`]).
pub fn render(m: &Metrics) -> String {
    let mut text = String::with_capacity(2048 + m.slots.len() * 512);
    let mut f = Family { text: &mut text };
    f.head("build_info", "gauge", "The crate version and IPC protocol version; always 1.");
    let protocol = PROTOCOL_VERSION.to_string();
    f.sample("build_info", &[("version", env!("CARGO_PKG_VERSION")), ("protocol", &protocol)], 1);
    f.one(
        "generation",
        "gauge",
        "The master's generation: 1, plus one per hot upgrade.",
        m.generation,
    );
    f.one(
        "target_workers",
        "gauge",
        "The number of workers the supervisor keeps.",
        m.target_workers,
    );
    let w = &m.workers;
    f.by(
        "workers",
        "gauge",
        "Live workers by state.",
        "state",
        &[
            ("starting", w.starting as u64),
            ("online", w.online as u64),
            ("listening", w.listening as u64),
            ("disconnecting", w.disconnecting as u64),
        ],
    );
    f.per_slot(
        "accepted_connections_total",
        "counter",
        "Connections accepted by the slot's workers, as the accept boards count them.",
        m,
        |s| Some(s.accepted_connections),
    );
    f.per_slot(
        "open_connections",
        "gauge",
        "Connections open on the slot's workers, as the accept boards count them.",
        m,
        |s| Some(s.open_connections),
    );
    f.per_slot(
        "worker_restarts_total",
        "counter",
        "Workers the slot had before the one now.",
        m,
        |s| Some(s.restarts),
    );
    let e = &m.exits;
    f.by(
        "worker_exits_total",
        "counter",
        "Workers that exited, by cause.",
        "reason",
        &[
            ("clean", e.clean),
            ("code", e.code),
            ("signal", e.signal),
            ("heartbeat", e.heartbeat),
            ("recycled", e.recycled),
            ("unknown", e.unknown),
        ],
    );
    f.per_slot(
        "worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the slot's worker.",
        m,
        |s| s.resident_memory_bytes,
    );
    f.per_slot(
        "worker_cpu_seconds_total",
        "counter",
        "User and system CPU time of the slot's workers.",
        m,
        |s| Some(s.cpu_time.as_secs_f64()),
    );
    f.per_slot(
        "worker_heartbeat_age_seconds",
        "gauge",
        "Time since the slot's worker last sent a heartbeat.",
        m,
        |s| s.heartbeat_age.map(|d| d.as_secs_f64()),
    );
    f.by(
        "rolls_total",
        "counter",
        "Rolling restarts, by result.",
        "result",
        &[("succeeded", m.rolls.succeeded), ("failed", m.rolls.failed)],
    );
    f.by(
        "upgrades_total",
        "counter",
        "Hot upgrades of the master, by result.",
        "result",
        &[("succeeded", m.upgrades.succeeded), ("failed", m.upgrades.failed)],
    );
    f.one(
        "crash_loops_total",
        "counter",
        "Times respawning stopped on a crash loop.",
        m.crash_loops,
    );
    f.by(
        "recycles_total",
        "counter",
        "Workers recycled, by the limit they passed.",
        "reason",
        &[("connections", m.recycled.connections), ("memory", m.recycled.memory)],
    );
    f.by(
        "ipc_frames_total",
        "counter",
        "Frames on the workers' channels, by direction.",
        "direction",
        &[("received", m.master.frames_received), ("sent", m.master.frames_sent)],
    );
    f.one("listen_errors_total", "counter", "Listens the master refused.", m.master.listen_errors);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::SlotMetrics;
    use std::time::Duration;

    #[test]
    fn every_family_has_help_and_type_and_every_slot_its_samples() {
        let mut m = Metrics { target_workers: 2, generation: 3, ..Metrics::default() };
        m.slots = vec![
            SlotMetrics {
                slot: 0,
                accepted_connections: 7,
                resident_memory_bytes: Some(4096),
                cpu_time: Duration::from_millis(1500),
                heartbeat_age: Some(Duration::from_millis(250)),
                ..SlotMetrics::default()
            },
            SlotMetrics { slot: 1, restarts: 2, ..SlotMetrics::default() },
        ];
        m.exits.recycled = 5;
        let text = render(&m);
        let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        assert_eq!(families.len(), 17, "{text}");
        for f in &families {
            let name = f.split(' ').next().unwrap();
            assert!(name.starts_with("mio_cluster_"), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        for line in [
            "mio_cluster_generation 3",
            "mio_cluster_accepted_connections_total{slot=\"0\"} 7",
            "mio_cluster_accepted_connections_total{slot=\"1\"} 0",
            "mio_cluster_worker_restarts_total{slot=\"1\"} 2",
            "mio_cluster_worker_resident_memory_bytes{slot=\"0\"} 4096",
            "mio_cluster_worker_cpu_seconds_total{slot=\"0\"} 1.5",
            "mio_cluster_worker_heartbeat_age_seconds{slot=\"0\"} 0.25",
            "mio_cluster_worker_exits_total{reason=\"recycled\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // A slot without a worker has no memory or heartbeat sample.
        assert!(!text.contains("mio_cluster_worker_resident_memory_bytes{slot=\"1\"}"));
    }
}
