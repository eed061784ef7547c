//! The conntrack table as `netpath conntrack` shows it: the datapath keeps one entry per
//! direction, this pairs them into connections and works out their ages. Pure data.
use std::{collections::HashMap, fmt, net::Ipv4Addr, str::FromStr};

use netpath_common::{
    CT_FLAG_REPLY, CtEntry, CtKey, CtState, PROTO_ICMP, PROTO_TCP, PROTO_UDP, ct_timeout_secs,
    proto_name,
};
use serde::Serialize;

use crate::model::publish::Mapping;

use crate::model::parse::ParseError;

const NS_PER_SEC: u64 = 1_000_000_000;

/// A `--proto` filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtProto(u8);

impl FromStr for CtProto {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ok(CtProto(match s {
            "tcp" => PROTO_TCP,
            "udp" => PROTO_UDP,
            "icmp" => PROTO_ICMP,
            _ => {
                return Err(ParseError::UnknownProto {
                    proto: s.to_owned(),
                    expected: "tcp, udp or icmp",
                });
            }
        }))
    }
}

/// One direction of a connection. For ICMP echo the identifier is `src_port` of the request
/// (`dst_port` is 0), as in the datapath's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl Tuple {
    fn of_key(k: &CtKey) -> Tuple {
        Tuple {
            src: k.src_addr.into(),
            sport: k.src_port,
            dst: k.dst_addr.into(),
            dport: k.dst_port,
        }
    }

    fn of_entry(e: &CtEntry) -> Tuple {
        Tuple {
            src: e.src_addr.into(),
            sport: e.src_port,
            dst: e.dst_addr.into(),
            dport: e.dst_port,
        }
    }

    fn reversed(self) -> Tuple {
        Tuple {
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }

    fn key(self, proto: u8) -> CtKey {
        CtKey::new(
            self.src.octets(),
            self.dst.octets(),
            self.sport,
            self.dport,
            proto,
        )
    }

    fn has_addr(&self, addr: Ipv4Addr) -> bool {
        self.src == addr || self.dst == addr
    }

    fn has_port(&self, port: u16) -> bool {
        self.sport == port || self.dport == port
    }
}

/// One connection: the tuple its first packet had, the tuple the datapath rewrote it to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub proto: &'static str,
    #[serde(skip)]
    proto_number: u8,
    pub original: Tuple,
    pub translated: Tuple,
    pub state: &'static str,
    /// Seconds since the last packet in either direction.
    pub idle_secs: u64,
    /// Seconds until the datapath takes it for gone; 0 once expired.
    pub expires_in_secs: u64,
    /// Past its timeout: its entries are left for the LRU to evict and block nothing.
    pub expired: bool,
    /// Entries found: 2, or 1 when the LRU evicted the other direction.
    pub entries: u8,
}

/// Listing filters; each matches either tuple of a connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    pub proto: Option<CtProto>,
    pub addr: Option<Ipv4Addr>,
    pub port: Option<u16>,
}

impl Filter {
    fn matches(&self, c: &Connection) -> bool {
        let tuples = [c.original, c.translated];
        self.proto.is_none_or(|p| p.0 == c.proto_number)
            && self
                .addr
                .is_none_or(|a| tuples.iter().any(|t| t.has_addr(a)))
            && self
                .port
                .is_none_or(|p| tuples.iter().any(|t| t.has_port(p)))
    }
}

fn state_name(state: u8) -> &'static str {
    const NEW: u8 = CtState::New as u8;
    const ESTABLISHED: u8 = CtState::Established as u8;
    const CLOSING: u8 = CtState::Closing as u8;
    const CLOSED: u8 = CtState::Closed as u8;
    match state {
        NEW => "new",
        ESTABLISHED => "established",
        CLOSING => "closing",
        CLOSED => "closed",
        _ => "unknown",
    }
}

/// The keys of both entries of every expired connection: what garbage collection removes.
/// An expired entry already blocks nothing; removing it only frees the slot early.
pub fn expired_keys(entries: &[(CtKey, CtEntry)], now_ns: u64) -> Vec<CtKey> {
    connections(entries, now_ns, &Filter::default())
        .iter()
        .filter(|c| c.expired)
        .flat_map(Connection::keys)
        .collect()
}

/// The keys of both entries of every connection `selected` picks, live or not: what netpath
/// removes when the far end of those connections goes away.
pub fn keys_where(
    entries: &[(CtKey, CtEntry)],
    selected: impl Fn(&Connection) -> bool,
) -> Vec<CtKey> {
    connections(entries, 0, &Filter::default())
        .iter()
        .filter(|c| selected(c))
        .flat_map(Connection::keys)
        .collect()
}

impl Connection {
    /// Its entries' keys: the original tuple, and the reverse of the translated one.
    fn keys(&self) -> [CtKey; 2] {
        [
            self.original.key(self.proto_number),
            self.translated.reversed().key(self.proto_number),
        ]
    }

    /// Whether `addr` is the container it was translated to (a published port, hairpin) or
    /// the one that opened it (masquerade): its flows go when it does.
    pub fn involves(&self, addr: Ipv4Addr) -> bool {
        self.translated.dst == addr || self.original.src == addr
    }

    /// Whether it is a UDP flow that came in through `m` (from outside or by hairpin).
    pub fn is_udp_through(&self, m: &Mapping) -> bool {
        self.proto_number == PROTO_UDP
            && m.proto.number() == PROTO_UDP
            && self.original.dport == m.host_port
            && m.host_ip.is_none_or(|ip| self.original.dst == ip)
            && (self.translated.dst, self.translated.dport) == (m.container_ip, m.container_port)
    }
}

/// Pairs each forward entry with its reply entry (keyed by the reverse of the forward's
/// translated tuple) into one connection; an entry whose other half is gone is a connection
/// of its own, rebuilt from what it holds. `now_ns` is on the clock of
/// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE). Sorted by protocol and tuples.
pub fn connections(entries: &[(CtKey, CtEntry)], now_ns: u64, filter: &Filter) -> Vec<Connection> {
    let by_key: HashMap<CtKey, &CtEntry> = entries.iter().map(|(k, e)| (*k, e)).collect();
    let mut out = Vec::new();
    for (key, entry) in entries {
        let reply_half = entry.flags & CT_FLAG_REPLY != 0;
        let (original, translated, other) = if reply_half {
            // A reply entry: key = reverse(translated), value = reverse(original).
            let translated = Tuple::of_key(key).reversed();
            let original = Tuple::of_entry(entry).reversed();
            let forward = by_key
                .get(&original.key(key.proto))
                .filter(|f| f.flags & CT_FLAG_REPLY == 0);
            if forward.is_some() {
                // Listed with its forward entry.
                continue;
            }
            (original, translated, None)
        } else {
            let translated = Tuple::of_entry(entry);
            let reply = by_key
                .get(&translated.reversed().key(key.proto))
                .filter(|r| r.flags & CT_FLAG_REPLY != 0)
                .copied();
            (Tuple::of_key(key), translated, reply)
        };
        // The furthest state either direction reached, and the latest packet of both.
        let state = other.map_or(entry.state, |o| o.state.max(entry.state));
        let last = other.map_or(entry.last_seen_ns, |o| {
            o.last_seen_ns.max(entry.last_seen_ns)
        });
        let idle_secs = now_ns.saturating_sub(last) / NS_PER_SEC;
        let timeout = ct_timeout_secs(key.proto, state);
        let connection = Connection {
            proto: proto_name(key.proto),
            proto_number: key.proto,
            original,
            translated,
            state: state_name(state),
            idle_secs,
            expires_in_secs: timeout.saturating_sub(idle_secs),
            expired: idle_secs >= timeout,
            entries: if other.is_some() { 2 } else { 1 },
        };
        if filter.matches(&connection) {
            out.push(connection);
        }
    }
    out.sort_by(|a, b| {
        (a.proto_number, a.original, a.translated).cmp(&(b.proto_number, b.original, b.translated))
    });
    out
}

/// `ADDR:PORT`, or `ADDR` for ICMP (whose identifier is shown once per tuple).
struct End(Ipv4Addr, u16, bool);

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End(addr, _, true) => write!(f, "{addr}"),
            End(addr, port, false) => write!(f, "{addr}:{port}"),
        }
    }
}

fn tuple_text(t: &Tuple, icmp: bool) -> String {
    let text = format!(
        "{} -> {}",
        End(t.src, t.sport, icmp),
        End(t.dst, t.dport, icmp)
    );
    if icmp {
        format!("{text} id {}", t.sport)
    } else {
        text
    }
}

/// The table `netpath conntrack` prints: a header and one line per connection.
pub fn table(connections: &[Connection]) -> String {
    let mut out = format!(
        "{:<5} {:<45} {:<45} {:<12} {:>8} {:>8}\n",
        "PROTO", "ORIGINAL", "TRANSLATED", "STATE", "IDLE", "EXPIRES"
    );
    for c in connections {
        let icmp = c.proto_number == PROTO_ICMP;
        let expires = if c.expired {
            "expired".to_owned()
        } else {
            format!("{}s", c.expires_in_secs)
        };
        out.push_str(&format!(
            "{:<5} {:<45} {:<45} {:<12} {:>8} {:>8}\n",
            c.proto,
            tuple_text(&c.original, icmp),
            tuple_text(&c.translated, icmp),
            c.state,
            format!("{}s", c.idle_secs),
            expires
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NS_PER_SEC;

    fn key(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> CtKey {
        CtKey::new(src, dst, sport, dport, proto)
    }

    fn entry(k: CtKey, state: CtState, flags: u8, last_seen_ns: u64) -> CtEntry {
        CtEntry {
            src_addr: k.src_addr,
            dst_addr: k.dst_addr,
            src_port: k.src_port,
            dst_port: k.dst_port,
            redirect_ifindex: 0,
            from_ifindex: 0,
            state: state as u8,
            flags,
            dst_mac: [0; 6],
            src_mac: [0; 6],
            _pad: [0; 6],
            last_seen_ns,
        }
    }

    const C: [u8; 4] = [172, 17, 0, 2];
    const EXT: [u8; 4] = [203, 0, 113, 1];
    const SRV: [u8; 4] = [198, 51, 100, 10];

    /// A masqueraded connection C:sport -> SRV:dport leaving as EXT:nport.
    fn masq(
        proto: u8,
        sport: u16,
        nport: u16,
        dport: u16,
        state: CtState,
    ) -> [(CtKey, CtEntry); 2] {
        let fwd = key(C, sport, SRV, dport, proto);
        let fwd_val = key(EXT, nport, SRV, dport, proto);
        let rep = key(SRV, dport, EXT, nport, proto);
        let rep_val = key(SRV, dport, C, sport, proto);
        [
            (fwd, entry(fwd_val, state, 0, 100 * SEC)),
            (rep, entry(rep_val, state, CT_FLAG_REPLY, 110 * SEC)),
        ]
    }

    #[test]
    fn pairs_directions_into_connections() {
        let mut all = Vec::new();
        all.extend(masq(PROTO_TCP, 40000, 40000, 80, CtState::Established));
        all.extend(masq(PROTO_UDP, 5353, 32800, 53, CtState::New));
        // ICMP echo: the request carries the id as src_port, the reply as dst_port.
        all.extend(masq(PROTO_ICMP, 7, 7, 0, CtState::New));
        let got = connections(&all, 112 * SEC, &Filter::default());
        assert_eq!(got.len(), 3, "{got:?}");
        let [icmp, tcp, udp] = &got[..] else {
            unreachable!()
        };
        assert_eq!(
            (tcp.proto, tcp.state, tcp.entries),
            ("tcp", "established", 2)
        );
        assert_eq!(tcp.original.src, Ipv4Addr::from(C));
        assert_eq!(tcp.translated.src, Ipv4Addr::from(EXT));
        // Idle since the later of the two entries.
        assert_eq!(tcp.idle_secs, 2);
        assert_eq!(tcp.expires_in_secs, 5 * 24 * 3600 - 2);
        assert_eq!((udp.original.sport, udp.translated.sport), (5353, 32800));
        assert_eq!(udp.expires_in_secs, 28);
        assert_eq!(
            (icmp.proto, icmp.original.sport, icmp.original.dport),
            ("icmp", 7, 0)
        );

        let text = table(&got);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("PROTO"));
        assert!(
            lines[1].contains("172.17.0.2 -> 198.51.100.10 id 7"),
            "{text}"
        );
        assert!(
            lines[2].contains("172.17.0.2:40000 -> 198.51.100.10:80")
                && lines[2].contains("203.0.113.1:40000 -> 198.51.100.10:80")
                && lines[2].contains("established"),
            "{text}"
        );
        let json = serde_json::to_value(&got[1]).unwrap();
        assert_eq!(json["original"]["src"], "172.17.0.2");
        assert_eq!(json["translated"]["sport"], 40000);
        assert_eq!(json["state"], "established");
        assert_eq!(json["expired"], false);
    }

    #[test]
    fn the_furthest_state_and_expiry() {
        let mut c = masq(PROTO_TCP, 40000, 40000, 80, CtState::Established);
        c[0].1.state = CtState::Closing as u8;
        let got = connections(&c, 110 * SEC + 200 * SEC, &Filter::default());
        assert_eq!(got[0].state, "closing");
        assert!(got[0].expired && got[0].expires_in_secs == 0);
        assert!(table(&got).contains("expired"));
        // A clock read just before the entry's stamp is no negative age.
        let got = connections(&c, 50 * SEC, &Filter::default());
        assert_eq!(got[0].idle_secs, 0);
    }

    #[test]
    fn lone_halves_are_rebuilt() {
        let [fwd, rep] = masq(PROTO_UDP, 5353, 32800, 53, CtState::Established);
        let want = connections(&[fwd, rep], 110 * SEC, &Filter::default());
        for half in [fwd, rep] {
            let got = connections(&[half], 110 * SEC, &Filter::default());
            assert_eq!(got.len(), 1);
            assert_eq!(
                (got[0].original, got[0].translated),
                (want[0].original, want[0].translated)
            );
            assert_eq!(got[0].entries, 1);
        }
    }

    #[test]
    fn filters_match_either_side() {
        let mut all = Vec::new();
        all.extend(masq(PROTO_TCP, 40000, 32768, 80, CtState::Established));
        all.extend(masq(PROTO_UDP, 5353, 5353, 53, CtState::New));
        let count = |f: Filter| connections(&all, 110 * SEC, &f).len();
        let proto = |s: &str| Some(s.parse::<CtProto>().unwrap());
        assert_eq!(
            count(Filter {
                proto: proto("tcp"),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                proto: proto("icmp"),
                ..Filter::default()
            }),
            0
        );
        // The translated source port and address are matched too.
        assert_eq!(
            count(Filter {
                port: Some(32768),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                port: Some(53),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                addr: Some(EXT.into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            count(Filter {
                addr: Some(C.into()),
                port: Some(80),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                addr: Some([10, 0, 0, 1].into()),
                ..Filter::default()
            }),
            0
        );
        let e = "sctp".parse::<CtProto>().unwrap_err();
        assert_eq!(
            e,
            ParseError::UnknownProto {
                proto: "sctp".to_owned(),
                expected: "tcp, udp or icmp"
            }
        );
        assert_eq!(
            e.to_string(),
            "unknown protocol \"sctp\" (use tcp, udp or icmp)"
        );
    }
}
