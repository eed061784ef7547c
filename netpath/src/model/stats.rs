//! `netpath stats` as data: the datapath's counters and traffic, summed over CPUs, with the
//! conntrack figures derived from them, as a table, JSON or the Prometheus text format.
//! Pure data: `ops::stats` reads the maps.
use std::{collections::BTreeMap, fmt::Write as _};

use netpath_common::{Counter, Direction, Traffic, proto_name};
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Every datapath counter under its name (`drop_isolation`, `nat_new`, ...), and
    /// [`HITS_NAME`], the conntrack hits, which the datapath counts with the traffic.
    pub counters: BTreeMap<&'static str, u64>,
    /// Translated packets and bytes: direction, then protocol.
    pub traffic: BTreeMap<&'static str, BTreeMap<&'static str, TrafficStats>>,
    pub conntrack: ConntrackStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TrafficStats {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConntrackStats {
    /// Entries in the table now, two per connection.
    pub entries: u64,
    pub max_entries: u32,
    /// Entries netpath removed itself (`conntrack flush`, garbage collection).
    pub removed_by_netpath: u64,
    /// Derived, not counted: inserts − datapath removals − entries − `removed_by_netpath`.
    /// The entries that left the table otherwise: evicted by the LRU when full, or
    /// overwritten by a new connection reusing the tuple of an expired one.
    pub evicted: u64,
}

/// What the datapath reported, plus what netpath knows of its own removals.
pub struct Reading<'a> {
    pub counters: &'a [(Counter, u64)],
    pub traffic: &'a [(Direction, u8, Traffic)],
    pub ct_entries: u64,
    pub ct_max_entries: u32,
    pub ct_removed_by_netpath: u64,
}

impl Stats {
    pub fn new(r: &Reading) -> Stats {
        let mut counters: BTreeMap<_, _> = r.counters.iter().map(|(c, v)| (c.name(), *v)).collect();
        counters.insert(HITS_NAME, r.traffic.iter().map(|(_, _, t)| t.hits).sum());
        let get = |c: Counter| counters.get(c.name()).copied().unwrap_or(0);
        let mut traffic: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
        for (dir, proto, t) in r.traffic {
            traffic.entry(dir.name()).or_default().insert(
                proto_name(*proto),
                TrafficStats {
                    packets: t.packets,
                    bytes: t.bytes,
                },
            );
        }
        // The counters and the table are read one after the other while traffic flows, so
        // the difference may be briefly off; never below zero.
        let evicted = get(Counter::CtInsert)
            .saturating_sub(get(Counter::CtRemove))
            .saturating_sub(r.ct_entries)
            .saturating_sub(r.ct_removed_by_netpath);
        Stats {
            counters,
            traffic,
            conntrack: ConntrackStats {
                entries: r.ct_entries,
                max_entries: r.ct_max_entries,
                removed_by_netpath: r.ct_removed_by_netpath,
                evicted,
            },
        }
    }

    /// Every value as a sample of a metric, grouped by metric in [`METRICS`] order.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for c in Counter::ALL {
            let (metric, labels) = counter_metric(c);
            let value = self.counters.get(c.name()).copied().unwrap_or(0);
            out.push(Sample::new(metric, labels, value));
        }
        let hits = self.counters.get(HITS_NAME).copied().unwrap_or(0);
        out.push(Sample::new(&HITS, vec![], hits));
        for (dir, protos) in &self.traffic {
            for (proto, t) in protos {
                let labels = vec![("direction", *dir), ("proto", *proto)];
                out.push(Sample::new(&PACKETS, labels.clone(), t.packets));
                out.push(Sample::new(&BYTES, labels, t.bytes));
            }
        }
        let ct = &self.conntrack;
        out.push(Sample::new(&CT_ENTRIES, vec![], ct.entries));
        out.push(Sample::new(&CT_MAX, vec![], u64::from(ct.max_entries)));
        out.push(Sample::new(&CT_BY_NETPATH, vec![], ct.removed_by_netpath));
        out.push(Sample::new(&CT_EVICTED, vec![], ct.evicted));
        // Stable: within a metric, samples keep the order above.
        out.sort_by_key(|s| METRICS.iter().position(|m| std::ptr::eq(*m, s.metric)));
        out
    }
}

/// One metric: its Prometheus name (after `netpath_`; a counter's ends in `_total`, as
/// Prometheus names them, anything else is a gauge), help text and what the table calls it.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub title: &'static str,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub metric: &'static Metric,
    pub labels: Vec<(&'static str, &'static str)>,
    pub value: u64,
}

impl Sample {
    fn new(metric: &'static Metric, labels: Vec<(&'static str, &'static str)>, value: u64) -> Self {
        Sample {
            metric,
            labels,
            value,
        }
    }
}

const fn metric(name: &'static str, title: &'static str, help: &'static str) -> Metric {
    Metric { name, help, title }
}

static DROPS: Metric = metric(
    "dropped_packets_total",
    "dropped packets",
    "Packets the datapath dropped, by reason.",
);
static CONNECTIONS: Metric = metric(
    "new_connections_total",
    "new connections",
    "New connections translated: to published ports, or masqueraded out.",
);
/// The conntrack hits' name among the counters; the datapath counts them with the traffic
/// ([`Traffic::hits`]), summed here over the slots.
pub const HITS_NAME: &str = "nat_hit";
static HITS: Metric = metric(
    "conntrack_hits_total",
    "conntrack hits",
    "Packets of tracked connections translated.",
);
static ICMP_ERRORS: Metric = metric(
    "icmp_errors_total",
    "ICMP errors translated",
    "ICMP errors about translated connections sent back to their sender.",
);
static PACKETS: Metric = metric(
    "translated_packets_total",
    "translated packets",
    "Packets translated, by where they came in and protocol.",
);
static BYTES: Metric = metric(
    "translated_bytes_total",
    "translated bytes",
    "Bytes translated (Ethernet frames as TC sees them), by where they came in and protocol.",
);
static FRAGMENTS: Metric = metric(
    "fragments_translated_total",
    "fragments translated",
    "Non-first IPv4 fragments translated the way their datagram's first fragment was.",
);
static CT_INSERTS: Metric = metric(
    "conntrack_inserts_total",
    "conntrack inserts",
    "Conntrack entries the datapath inserted, two per connection.",
);
static CT_REMOVALS: Metric = metric(
    "conntrack_removals_total",
    "conntrack removals",
    "Conntrack entries the datapath removed (a closed connection's tuple reopened with another translation).",
);
static CT_EXPIRED: Metric = metric(
    "conntrack_expired_lookups_total",
    "expired lookups",
    "Conntrack lookups that met an entry past its timeout.",
);
static PORT_RETRIES: Metric = metric(
    "port_retries_total",
    "port retries",
    "Source ports tried beyond a new connection's own.",
);
static CT_BY_NETPATH: Metric = metric(
    "conntrack_removed_by_netpath_total",
    "removed by netpath",
    "Conntrack entries netpath removed itself (conntrack flush, garbage collection).",
);
static CT_EVICTED: Metric = metric(
    "conntrack_evictions_total",
    "evicted (derived)",
    "Derived: inserts - removals - entries - removed by netpath; evicted by the LRU or overwritten after expiry.",
);
static CT_ENTRIES: Metric = metric(
    "conntrack_entries",
    "conntrack entries",
    "Entries in the conntrack table, two per connection.",
);
static CT_MAX: Metric = metric(
    "conntrack_entries_max",
    "conntrack capacity",
    "Entries the conntrack table holds before the LRU evicts.",
);

/// Every metric, in output order.
pub static METRICS: [&Metric; 15] = [
    &DROPS,
    &CONNECTIONS,
    &HITS,
    &ICMP_ERRORS,
    &FRAGMENTS,
    &PORT_RETRIES,
    &PACKETS,
    &BYTES,
    &CT_ENTRIES,
    &CT_MAX,
    &CT_INSERTS,
    &CT_REMOVALS,
    &CT_BY_NETPATH,
    &CT_EVICTED,
    &CT_EXPIRED,
];

/// Where a datapath counter goes; exhaustive, so that a new counter cannot be forgotten.
fn counter_metric(c: Counter) -> (&'static Metric, Vec<(&'static str, &'static str)>) {
    match c {
        Counter::DropIsolation => (&DROPS, vec![("reason", "isolation")]),
        Counter::DropNoPort => (&DROPS, vec![("reason", "no_port")]),
        Counter::DropCsum => (&DROPS, vec![("reason", "csum")]),
        Counter::DropStore => (&DROPS, vec![("reason", "store")]),
        Counter::DropCtInsert => (&DROPS, vec![("reason", "ct_insert")]),
        Counter::DropFragOrphan => (&DROPS, vec![("reason", "frag_orphan")]),
        Counter::DropSpoofed => (&DROPS, vec![("reason", "spoofed")]),
        Counter::NatNew => (&CONNECTIONS, vec![("kind", "published")]),
        Counter::MasqNew => (&CONNECTIONS, vec![("kind", "masquerade")]),
        Counter::IcmpError => (&ICMP_ERRORS, vec![]),
        Counter::FragTranslated => (&FRAGMENTS, vec![]),
        Counter::CtInsert => (&CT_INSERTS, vec![]),
        Counter::CtRemove => (&CT_REMOVALS, vec![]),
        Counter::CtExpired => (&CT_EXPIRED, vec![]),
        Counter::PortRetry => (&PORT_RETRIES, vec![]),
    }
}

/// The Prometheus text exposition format, every name prefixed with `netpath_`.
pub fn prometheus(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut last: Option<&Metric> = None;
    for s in samples {
        let name = s.metric.name;
        if !last.is_some_and(|m| std::ptr::eq(m, s.metric)) {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP netpath_{name} {}", s.metric.help);
            let _ = writeln!(out, "# TYPE netpath_{name} {kind}");
            last = Some(s.metric);
        }
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(out, "netpath_{name} {}", s.value);
        } else {
            let _ = writeln!(out, "netpath_{name}{{{}}} {}", labels.join(","), s.value);
        }
    }
    out
}

/// A table: one row per sample, the metric's title on its first row; with `rates` (per
/// second, one per sample) a column of them.
pub fn table(samples: &[Sample], rates: Option<&[f64]>) -> String {
    let mut out = format!("{:<22} {:<20} {:>14}", "WHAT", "", "VALUE");
    if rates.is_some() {
        out.push_str(&format!(" {:>12}", "PER SEC"));
    }
    out.push('\n');
    let mut last: Option<&Metric> = None;
    for (i, s) in samples.iter().enumerate() {
        let title = match last {
            Some(m) if std::ptr::eq(m, s.metric) => "",
            _ => s.metric.title,
        };
        last = Some(s.metric);
        let labels: Vec<&str> = s.labels.iter().map(|(_, v)| *v).collect();
        let _ = write!(out, "{title:<22} {:<20} {:>14}", labels.join(" "), s.value);
        if let Some(rates) = rates {
            let _ = write!(out, " {:>12.1}", rates[i]);
        }
        out.push('\n');
    }
    out
}

/// Per-second rates between two sample lists of the same shape.
pub fn rates(before: &[Sample], after: &[Sample], secs: f64) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.value as f64 - b.value as f64) / secs)
        .collect()
}

/// The per-second rates of every number of two JSON documents of the same shape.
pub fn json_rates(before: &Value, after: &Value, secs: f64) -> Value {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => Value::Object(
            a.iter()
                .filter_map(|(k, av)| Some((k.clone(), json_rates(b.get(k)?, av, secs))))
                .collect(),
        ),
        (Value::Number(b), Value::Number(a)) => {
            let delta = a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0);
            serde_json::Number::from_f64(delta / secs).map_or(Value::Null, Value::Number)
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use netpath_common::PROTO_UDP;

    use super::*;

    fn stats(insert: u64, remove: u64, entries: u64, by_netpath: u64) -> Stats {
        let counters: Vec<(Counter, u64)> = Counter::ALL
            .into_iter()
            .map(|c| match c {
                Counter::CtInsert => (c, insert),
                Counter::CtRemove => (c, remove),
                Counter::NatNew => (c, 3),
                _ => (c, 0),
            })
            .collect();
        let traffic = [(
            Direction::FromExternal,
            PROTO_UDP,
            Traffic {
                packets: 5,
                bytes: 300,
                hits: 4,
            },
        )];
        Stats::new(&Reading {
            counters: &counters,
            traffic: &traffic,
            ct_entries: entries,
            ct_max_entries: 262144,
            ct_removed_by_netpath: by_netpath,
        })
    }

    #[test]
    fn evictions_are_what_left_the_table_otherwise() {
        assert_eq!(stats(10, 2, 4, 2).conntrack.evicted, 2);
        assert_eq!(stats(10, 2, 8, 0).conntrack.evicted, 0);
        // Read while traffic flows: never negative.
        assert_eq!(stats(10, 2, 12, 0).conntrack.evicted, 0);
    }

    #[test]
    fn prometheus_has_help_and_type_once_per_metric() {
        let text = prometheus(&stats(10, 2, 4, 2).samples());
        assert!(text.contains(
            "# TYPE netpath_dropped_packets_total counter\n\
             netpath_dropped_packets_total{reason=\"isolation\"} 0\n\
             netpath_dropped_packets_total{reason=\"no_port\"} 0\n"
        ));
        assert!(text.contains("netpath_new_connections_total{kind=\"published\"} 3\n"));
        // The traffic slots' hits, summed.
        assert!(text.contains("netpath_conntrack_hits_total 4\n"));
        assert!(text.contains(
            "netpath_translated_bytes_total{direction=\"from_external\",proto=\"udp\"} 300\n"
        ));
        assert!(
            text.contains("# TYPE netpath_conntrack_entries gauge\nnetpath_conntrack_entries 4\n")
        );
        for m in METRICS {
            let help = format!("# HELP netpath_{} ", m.name);
            assert_eq!(text.matches(&help).count(), 1, "{}", m.name);
        }
    }

    #[test]
    fn rates_follow_the_shape() {
        let before = stats(10, 2, 4, 0);
        let after = stats(30, 2, 4, 0);
        let r = rates(&before.samples(), &after.samples(), 2.0);
        let i = after
            .samples()
            .iter()
            .position(|s| std::ptr::eq(s.metric, &CT_INSERTS))
            .unwrap();
        assert_eq!(r[i], 10.0);
        let json = json_rates(
            &serde_json::to_value(&before).unwrap(),
            &serde_json::to_value(&after).unwrap(),
            2.0,
        );
        assert_eq!(json["counters"]["ct_insert"], 10.0);
        assert_eq!(json["traffic"]["from_external"]["udp"]["bytes"], 0.0);
    }
}
