//! Port allocation under concurrency: containers open connections at the same moment, all
//! from the same source port, to the same server outside, round after round. Every
//! connection's translated tuple is claimed with BPF_NOEXIST, so that two CPUs choosing the
//! same one cannot both have it: no reply may ever reach another container, and the
//! server sees distinct translated sources for the simultaneous connections of a round.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use netpath_tests::{Proc, Sandbox, netpath_bin};

/// The server address outside, on the client namespace's lo.
const SERVER: &str = "198.51.100.10";
const CONTAINERS: usize = 4;
/// The server's ports: each container opens one connection to every port per round.
const PORTS: [u16; 4] = [80, 81, 82, 83];
const ROUNDS: u32 = 50;
/// Seconds between rounds; connections are held until the next round starts.
const GAP: f64 = 0.4;
/// Round r uses this source port + r in every container.
const SPORT: u16 = 42000;

/// `PORT...`: answers every line on every connection with "PEER_IP:PEER_PORT LINE".
const SERVER_PY: &str = r#"
import sys, socket, socketserver, threading
class H(socketserver.StreamRequestHandler):
    def handle(self):
        peer = '%s:%d' % self.client_address
        for line in self.rfile:
            self.wfile.write(('%s %s' % (peer, line.decode())).encode())
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512
for p in sys.argv[1:]:
    srv = S(('0.0.0.0', int(p)), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
"#;

/// `NAME HOST SPORT ROUNDS START GAP PORT...`: in round r (at START + r * GAP), one thread
/// per PORT connects from SPORT + r, sends NAME and reads the echo, holds the connection
/// until the next round, then closes. Prints "ok R PORT PEER" (the echo named NAME, PEER
/// being what the server saw), "wrong R PORT LINE" or "error R PORT WHAT"; then "done".
const CLIENT_PY: &str = r#"
import sys, socket, threading, time
name, host, sport, rounds, start, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
ports = [int(p) for p in sys.argv[7:]]
def one(r, port, out, until):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(('0.0.0.0', sport + r)); s.settimeout(3); s.connect((host, port))
        s.sendall((name + '\n').encode())
        line = s.makefile('rb').readline().decode().strip()
        peer, _, echoed = line.partition(' ')
        out.append(('ok %d %d %s' % (r, port, peer)) if echoed == name else ('wrong %d %d %s' % (r, port, line)))
        time.sleep(max(0.0, until - time.time()))
    except OSError as e:
        out.append('error %d %d %s' % (r, port, e))
    finally:
        s.close()
for r in range(rounds):
    t0 = start + r * gap
    time.sleep(max(0.0, t0 - time.time()))
    out = []
    ts = [threading.Thread(target=one, args=(r, p, out, t0 + gap * 0.8)) for p in ports]
    for t in ts: t.start()
    for t in ts: t.join()
    for line in out: print(line, flush=True)
print('done', flush=True)
"#;

#[test]
fn simultaneous_connections_from_one_source_port_never_share_a_translation() {
    let sb = Sandbox::new(&netpath_bin()).expect("sandbox");
    let cl = sb.outside().expect("outside namespace");
    sb.ok(&["up", "-d"]);
    let names: Vec<String> = (0..CONTAINERS).map(|i| sb.name(&format!("c{i}"))).collect();
    for n in &names {
        sb.ok(&["run", n]);
    }
    let ports: Vec<String> = PORTS.iter().map(u16::to_string).collect();
    let port_args: Vec<&str> = ports.iter().map(String::as_str).collect();
    let _server = sb.start_python(&cl.netns, SERVER_PY, &port_args, "ready");

    // Every client starts its rounds at the same moment (one clock for every namespace).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = format!("{:.3}", now.as_secs_f64() + 2.0);
    let (sport, rounds, gap) = (SPORT.to_string(), ROUNDS.to_string(), GAP.to_string());
    let clients: Vec<Proc> = names
        .iter()
        .map(|n| {
            let mut cmd = vec![
                "timeout", "90", "python3", "-c", CLIENT_PY, n, SERVER, &sport, &rounds, &start,
                &gap,
            ];
            cmd.extend_from_slice(&port_args);
            sb.spawn(n, &cmd).expect("starting a client")
        })
        .collect();

    // (round, server port) -> translated sources the server saw, one per container.
    let mut seen: BTreeMap<(u32, u16), Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, client) in names.iter().zip(&clients) {
        loop {
            let line = client
                .line(Duration::from_secs(60))
                .unwrap_or_else(|| panic!("client {name}: no output within 60 s"));
            if line == "done" {
                break;
            }
            let fields: Vec<&str> = line.splitn(4, ' ').collect();
            match fields[..] {
                ["ok", r, port, peer] => seen
                    .entry((r.parse().unwrap(), port.parse().unwrap()))
                    .or_default()
                    .push(peer.to_owned()),
                _ => problems.push(format!("{name}: {line}")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "replies reached the wrong container or connections failed: {problems:?}"
    );
    assert_eq!(
        seen.len(),
        ROUNDS as usize * PORTS.len(),
        "every round and port answered"
    );
    for (key, peers) in &seen {
        assert_eq!(peers.len(), CONTAINERS, "round {key:?}: {peers:?}");
        let distinct: BTreeSet<&String> = peers.iter().collect();
        assert_eq!(
            distinct.len(),
            peers.len(),
            "round {key:?}: simultaneous connections shared a translated source: {peers:?}"
        );
    }
}
