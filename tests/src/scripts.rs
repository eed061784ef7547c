//! The Python servers and clients the end-to-end tests run inside their namespaces, and
//! the functions that start them. Everything is bounded: a server dies with its [`Proc`], a
//! client runs under `timeout` and with socket timeouts.
use std::time::Duration;

use crate::{Proc, Sandbox};

/// What both scripts start with: `out` prints a line at once, `gen(n)` yields the first n
/// bytes of the seeded stream (a counter in front of every MiB block).
macro_rules! prelude {
    () => {
        r#"
import sys, socket, hashlib, random
def out(s): print(s, flush=True)
def gen(n):
    base = random.Random(7).randbytes(1 << 20)
    i = 0
    while n > 0:
        block = (i.to_bytes(8, 'big') + base[8:])[:n]
        yield block
        n -= len(block); i += 1
"#
    };
}

/// Servers, by mode (each prints "ready" once its sockets listen):
/// - `http PORT`: answers every GET with "PEER_IP:PEER_PORT\n" (threaded, deep backlog);
/// - `echo PORT`: TCP, answers every line with "PEER_IP:PEER_PORT LINE"; a line "put N"
///   followed by N bytes is answered with "N_RECEIVED SHA256", a line "get N" with the
///   first N bytes of the seeded stream, then EOF;
/// - `mirror PORT`: TCP, answers every line with the line itself;
/// - `udp ADDR PORT...`: answers every datagram with "PEER_IP:PEER_PORT LOCAL_PORT
///   PAYLOAD". Bound to ADDR (0.0.0.0: every address): from a wildcard socket the answer
///   leaves with the address routing picks, not necessarily the one the request went to;
/// - `sink PORT`: UDP, reads datagrams forever and answers none.
pub const SERVER: &str = concat!(
    prelude!(),
    r#"
import socketserver, selectors
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
mode = sys.argv[1]
if mode == 'http':
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = ('%s:%d\n' % self.client_address).encode()
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    class S(ThreadingHTTPServer):
        request_queue_size = 512
        daemon_threads = True
    srv = S(('0.0.0.0', int(sys.argv[2])), H)
    out('ready'); srv.serve_forever()
elif mode in ('echo', 'mirror'):
    class E(socketserver.StreamRequestHandler):
        def handle(self):
            peer = '%s:%d' % self.client_address
            for line in self.rfile:
                if mode == 'mirror':
                    self.wfile.write(line)
                elif line.startswith(b'put '):
                    n = int(line.split()[1]); h = hashlib.sha256(); got = 0
                    while got < n:
                        chunk = self.rfile.read1(min(1 << 20, n - got))
                        if not chunk: break
                        h.update(chunk); got += len(chunk)
                    self.wfile.write(('%d %s\n' % (got, h.hexdigest())).encode())
                elif line.startswith(b'get '):
                    for block in gen(int(line.split()[1])): self.wfile.write(block)
                    return
                else:
                    self.wfile.write(('%s %s' % (peer, line.decode())).encode())
    class S(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 512
    srv = S(('0.0.0.0', int(sys.argv[2])), E)
    out('ready'); srv.serve_forever()
elif mode == 'udp':
    sel = selectors.DefaultSelector()
    for p in sys.argv[3:]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sys.argv[2], int(p)))
        sel.register(s, selectors.EVENT_READ, int(p))
    out('ready')
    while True:
        for key, _ in sel.select():
            data, peer = key.fileobj.recvfrom(65535)
            reply = '%s:%d %d %s' % (peer[0], peer[1], key.data, data.decode())
            key.fileobj.sendto(reply.encode(), peer)
elif mode == 'sink':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', int(sys.argv[2])))
    out('ready')
    while True: s.recv(65535)
"#
);

/// Clients, by mode; SPORT 0 lets the kernel choose the source port:
/// - `hold HOST PORT SPORT`: connects (3 s), prints "connected LOCAL PEER" (getsockname,
///   getpeername) or "error ...", then sends every stdin line and prints the answer line
///   (5 s timeout per operation);
/// - `connect HOST PORT`: prints "ok" if a TCP connection opens within 2 s, else the error;
/// - `ask HOST PORT SPORT`: one line "hi" over a new connection; prints the answer or
///   "error ..."; with `rst` as a fifth argument it then closes with a RST;
/// - `udp HOST PORT...`: per port, sends "hello-PORT" from an unconnected socket (3 tries,
///   1 s each) and prints "PORT FROM_IP:FROM_PORT REPLY" or "PORT timeout";
/// - `query HOST PORT SPORT`: one datagram "query" from SPORT (3 tries, 1 s each); prints
///   the answer or "timeout";
/// - `refused HOST PORT`: a datagram on a connected socket; prints "refused" when an ICMP
///   port unreachable comes back, else "timeout" or the answer;
/// - `put HOST PORT N`: uploads N bytes of the seeded stream; prints "sent N SHA" and the
///   server's "N SHA";
/// - `stream HOST PORT N`: uploads N bytes ("put") and downloads N ("get") on two
///   connections; prints "sent N SHA", "put REPLY", "got N SHA".
pub const CLIENT: &str = concat!(
    prelude!(),
    r#"
import struct
def addr(a): return '%s:%d' % a
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def tcp(sport):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', sport)); s.settimeout(3); s.connect((host, port))
    return s
def put(n):
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b'put %d\n' % n)
    h = hashlib.sha256()
    for block in gen(n):
        h.update(block); s.sendall(block)
    out('sent %d %s' % (n, h.hexdigest()))
    reply = s.makefile('rb').readline().decode().strip()
    s.close()
    return reply
if mode == 'hold':
    try:
        s = tcp(int(sys.argv[4]))
    except OSError as e:
        out('error %s' % e); sys.exit()
    s.settimeout(5)
    out('connected %s %s' % (addr(s.getsockname()), addr(s.getpeername())))
    f = s.makefile('rb')
    for line in sys.stdin:
        try:
            s.sendall(line.encode()); out(f.readline().decode().rstrip('\n') or 'eof')
        except OSError as e:
            out('error %s' % e)
elif mode == 'connect':
    try:
        socket.create_connection((host, port), timeout=2).close()
        out('ok')
    except OSError as e:
        out('error %s' % e)
elif mode == 'ask':
    try:
        s = tcp(int(sys.argv[4])); s.sendall(b'hi\n')
        out(s.makefile('rb').readline().decode().rstrip('\n') or 'eof')
        if sys.argv[5:] == ['rst']:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        s.close()
    except OSError as e:
        out('error %s' % e)
elif mode == 'udp':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    for p in sys.argv[3:]:
        msg = 'hello-%s' % p
        for _ in range(3):
            s.sendto(msg.encode(), (host, int(p)))
            try:
                data, frm = s.recvfrom(65535)
                out('%s %s %s' % (p, addr(frm), data.decode()))
                break
            except socket.timeout:
                pass
        else:
            out('%s timeout' % p)
elif mode == 'query':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(sys.argv[4]))); s.settimeout(1)
    for _ in range(3):
        s.sendto(b'query', (host, port))
        try:
            out(s.recvfrom(65535)[0].decode()); break
        except socket.timeout:
            pass
    else:
        out('timeout')
elif mode == 'refused':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port)); s.settimeout(3)
    try:
        s.send(b'x'); out(s.recv(100).decode())
    except ConnectionRefusedError:
        out('refused')
    except socket.timeout:
        out('timeout')
elif mode == 'put':
    out(put(int(sys.argv[4])))
elif mode == 'stream':
    n = int(sys.argv[4])
    out('put %s' % put(n))
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b'get %d\n' % n)
    h = hashlib.sha256(); got = 0
    while True:
        chunk = s.recv(1 << 20)
        if not chunk: break
        h.update(chunk); got += len(chunk)
    out('got %d %s' % (got, h.hexdigest()))
"#
);

/// Starts a server of [`SERVER`] in `netns` and waits until it listens.
pub fn server(sb: &Sandbox, netns: &str, args: &[&str]) -> Proc {
    sb.start_python(netns, SERVER, args, "ready")
}

/// Runs a client of [`CLIENT`] in `netns` to completion (at most `secs` seconds); its
/// stdout lines.
pub fn client(sb: &Sandbox, netns: &str, secs: u32, args: &[&str]) -> Vec<String> {
    sb.run_python(netns, secs, CLIENT, args)
}

/// The one line a client printed (20 s at most).
pub fn one(sb: &Sandbox, netns: &str, args: &[&str]) -> String {
    let lines = client(sb, netns, 20, args);
    assert_eq!(lines.len(), 1, "client {args:?} in {netns}: {lines:?}");
    lines.into_iter().next().unwrap()
}

/// A client that holds a TCP connection to `host:port` from `sport` (0: any) open (see
/// [`CLIENT`] `hold`); returns it and its first line, "connected LOCAL PEER" or "error ...".
pub fn hold(sb: &Sandbox, netns: &str, host: &str, port: u16, sport: u16) -> (Proc, String) {
    let (port, sport) = (port.to_string(), sport.to_string());
    let proc = sb
        .spawn(
            netns,
            &[
                "timeout", "120", "python3", "-c", CLIENT, "hold", host, &port, &sport,
            ],
        )
        .expect("starting a client");
    let line = proc
        .line(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("hold {host}:{port} from {netns}: no output"));
    (proc, line)
}

/// [`hold`] from any source port, which must connect.
pub fn connected(sb: &Sandbox, netns: &str, host: &str, port: u16) -> (Proc, String) {
    let (proc, line) = hold(sb, netns, host, port, 0);
    assert!(
        line.starts_with("connected "),
        "hold {host}:{port} from {netns}: {line}"
    );
    (proc, line)
}

/// Sends a line over a held connection and returns the server's answer.
pub fn roundtrip(proc: &mut Proc, line: &str) -> String {
    proc.send(line).expect("writing to the client");
    proc.line(Duration::from_secs(10))
        .unwrap_or_else(|| "no answer within 10 s".to_owned())
}

/// Whether a new TCP connection to `host:port` opens from `netns`.
pub fn connects(sb: &Sandbox, netns: &str, host: &str, port: u16) -> Result<(), String> {
    let out = client(sb, netns, 10, &["connect", host, &port.to_string()]);
    match out.first().map(String::as_str) {
        Some("ok") => Ok(()),
        other => Err(format!("{other:?}")),
    }
}
