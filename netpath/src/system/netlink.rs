//! rtnetlink operations: links, IPv4 addresses and routes. The only module that talks rtnetlink.
//!
//! Requests are sent as raw messages on the connection rather than through rtnetlink's
//! `execute()` helpers so that several can be queued before awaiting any (the kernel handles one
//! socket's messages in order), and so that kernel errors surface as `io::Error`s ("File
//! exists") kept in [`NetlinkError::Kernel`], where callers can match on `raw_os_error()`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::pin::pin;

use futures::{Stream, StreamExt};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkMessage, NetlinkPayload,
};
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use thiserror::Error;

use crate::system::netns::{self, Netns, NetnsError};

mod detached;

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const CHANGE: u16 = NLM_F_REQUEST | NLM_F_ACK;
const GET: u16 = NLM_F_REQUEST;
const DUMP: u16 = NLM_F_REQUEST | NLM_F_DUMP;

#[derive(Debug, Error)]
pub enum NetlinkError {
    /// Opening the connection inside a namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("rtnetlink connection closed")]
    Closed,
    /// A request about the interface `name` found none.
    #[error("no such interface {name}")]
    NoSuchDevice { name: String },
    /// The kernel (or the socket) refused; `op` says what was being done ("creating bridge X").
    #[error("{op}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    /// A request that failed after others had changed something, and the undo of those that
    /// failed too: both told, each with its sources.
    #[error("{failed} (and undoing it: {undo})")]
    Undo { failed: String, undo: String },
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// Names the operation of a failed request, built only on failure.
trait Op<T> {
    fn op<S: Into<String>>(self, op: impl FnOnce() -> S) -> Result<T>;
    /// [`Op::op`] for a request about interface `name`: ENODEV becomes NoSuchDevice.
    fn op_on<S: Into<String>>(self, name: &str, op: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Op<T> for io::Result<T> {
    fn op<S: Into<String>>(self, op: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| NetlinkError::Kernel {
            op: op().into(),
            source,
        })
    }

    fn op_on<S: Into<String>>(self, name: &str, op: impl FnOnce() -> S) -> Result<T> {
        match self {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(no_such_device(name)),
            r => r.op(op),
        }
    }
}

fn no_such_device(name: &str) -> NetlinkError {
    NetlinkError::NoSuchDevice {
        name: name.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: "bridge", "veth", ...; None for devices without one (e.g. lo, physical NICs).
    pub kind: Option<String>,
    /// IFLA_MASTER: index of the bridge (or bond, ...) this link is a port of.
    pub controller: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    /// None for multipath routes, whose devices are per next hop.
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
}

/// The route `dst/prefix_len` via `gateway`, as a request to add or delete it.
fn gateway_route(dst: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix_len)
        .gateway(gateway)
        .build()
}

/// An rtnetlink connection, bound to the network namespace it was opened in.
pub struct Netlink {
    handle: rtnetlink::Handle,
    /// The namespace the connection talks to, for sockets opened beside it.
    ns: Netns,
}

impl Netlink {
    /// Opens a connection in the current thread's network namespace. Must be called inside the
    /// tokio runtime, which drives the connection as a spawned task (ending when `self` drops).
    pub fn open() -> Result<Netlink> {
        let (connection, handle, _) =
            rtnetlink::new_connection().op(|| "opening rtnetlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink {
            handle,
            ns: Netns::current()?,
        })
    }

    /// Opens a connection that talks to `ns`: a netlink socket acts on the namespace it was
    /// created in, so only the socket creation needs to happen inside `ns`.
    pub fn open_in(ns: &Netns) -> Result<Netlink> {
        netns::run_in(ns, Netlink::open)?
    }

    /// Returns None if there is no link called `name`.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let msg = LinkUnspec::new_with_name(name).build();
        let replies = replies(self.send(RouteNetlinkMessage::GetLink(msg), GET)?).await;
        match first_link(replies).op_on(name, || format!("looking up interface {name}")) {
            Err(NetlinkError::NoSuchDevice { .. }) => Ok(None),
            r => r,
        }
    }

    /// The interfaces among `names` that exist, with their indexes, without a dump of every
    /// link: for each veth a dump looks up its peer's namespace id in a list of every id the
    /// namespace has given (`peernet2id`), so with a veth per container it grows with the
    /// square of their number (30 ms of `netpath ps`'s 55 at 1,000 containers). The
    /// namespace's device list (`/proc/thread-self/net/dev`: main names only, exactly as
    /// the kernel has them) says which exist; `if_nametoindex` (SIOCGIFINDEX) then gives
    /// their indexes. Only for those: on a name that does not exist, that ioctl has the
    /// kernel try to load a module of that name (`dev_load`), a modprobe per missing
    /// interface.
    pub fn indexes<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, u32>> {
        netns::run_in(&self.ns, || {
            let listing =
                std::fs::read_to_string("/proc/thread-self/net/dev").op(|| "listing interfaces")?;
            // After two header lines, one device per line: "  NAME: counters..." (a name
            // cannot hold a colon).
            let listed: BTreeSet<&str> = listing
                .lines()
                .skip(2)
                .filter_map(|l| Some(l.split_once(':')?.0.trim()))
                .collect();
            let mut found = BTreeMap::new();
            for name in names.into_iter().filter(|n| listed.contains(n)) {
                // Listed names hold no NUL.
                let Ok(c_name) = CString::new(name) else {
                    continue;
                };
                // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
                let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
                if index != 0 {
                    found.insert(name.to_owned(), index);
                    continue;
                }
                // ENODEV: deleted since the listing.
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENODEV) {
                    return Err(e).op(|| format!("looking up interface {name}"));
                }
            }
            Ok(found)
        })?
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs = replies(self.send(RouteNetlinkMessage::GetLink(LinkMessage::default()), DUMP)?)
            .await
            .op(|| "listing interfaces")?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates bridge `name`, up (LinkBridge sets that), and returns its index.
    pub async fn create_bridge(&self, name: &str) -> Result<u32> {
        // Without an explicit MAC a bridge takes the lowest one among its ports, so the
        // containers' gateway MAC would change as containers come and go (stale ARP entries).
        // No multicast snooping: with it, every port coming up makes the kernel re-arm the
        // multicast timers of every port, so each container started slower than the one
        // before (about 2x at 1,000); without it a bridge floods multicast to its ports, as a
        // hub would, which container networks rarely carry.
        let msg = LinkBridge::new(name)
            .address(random_mac()?.to_vec())
            .mcast_snooping(false)
            .build();
        let create = self.send(RouteNetlinkMessage::NewLink(msg), CREATE)?;
        // Queued behind the creation so that the index comes back without another round trip.
        let get = self.send_get_link(name)?;
        ack(create).await.op(|| format!("creating bridge {name}"))?;
        Ok(first_link(replies(get).await)
            .op(|| format!("looking up new bridge {name}"))?
            .ok_or_else(|| no_such_device(name))?
            .index)
    }

    /// Adds `addr/prefix_len` to link `index`, with the broadcast address `ip addr add` would set.
    pub async fn add_address(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        ack(self.send_new_address(index, addr, prefix_len)?)
            .await
            .op(|| format!("adding address {addr}/{prefix_len} to interface {index}"))
    }

    pub async fn addresses_v4(&self) -> Result<Vec<Address>> {
        let mut req = AddressMessage::default();
        // The kernel dispatches address dumps by family, so this returns IPv4 only.
        req.header.family = AddressFamily::Inet;
        let msgs = replies(self.send(RouteNetlinkMessage::GetAddress(req), DUMP)?)
            .await
            .op(|| "listing IPv4 addresses")?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_address(a),
                _ => None,
            })
            .collect())
    }

    /// Unicast routes of the main table.
    pub async fn routes_v4(&self) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let msgs = replies(self.send(RouteNetlinkMessage::GetRoute(req), DUMP)?)
            .await
            .op(|| "listing IPv4 routes")?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                _ => None,
            })
            .collect())
    }

    /// Adds the route `dst/prefix_len` via `gateway`, or replaces the one there: running it
    /// again changes nothing.
    pub async fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
    ) -> Result<()> {
        let msg = gateway_route(dst, prefix_len, gateway);
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        ack(self.send(RouteNetlinkMessage::NewRoute(msg), flags)?)
            .await
            .op(|| format!("adding route {dst}/{prefix_len} via {gateway}"))
    }

    /// Deletes the route `dst/prefix_len` via `gateway` (only that one: a route to `dst`
    /// through another gateway is not it).
    pub async fn delete_route(
        &self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
    ) -> Result<()> {
        let msg = gateway_route(dst, prefix_len, gateway);
        ack(self.send(RouteNetlinkMessage::DelRoute(msg), CHANGE)?)
            .await
            .op(|| format!("deleting route {dst}/{prefix_len} via {gateway}"))
    }

    /// Creates a veth pair: `host_name` here, a port of the bridge `bridge_index` with no IPv6
    /// address of its own, then up; and its peer directly inside `peer_ns`, named `peer_name`
    /// with MAC `peer_mac` (down). Creating the peer in place avoids a move-and-rename, and a
    /// clash with an existing `peer_name` there fails the whole request. Returns the host
    /// end's index.
    ///
    /// A bridge port needs no IPv6 at all, and without it adds no IPv6 route: with it, each
    /// port added a multicast route (and with a link-local address two more), and the kernel
    /// walks every IPv6 route of the namespace whenever a port goes down or its carrier
    /// changes, so each container made the next one's start and removal slower. IPv6 is
    /// turned off (sysctl `disable_ipv6`) before the port comes up, as the route comes with
    /// that.
    pub async fn create_veth(
        &self,
        host_name: &str,
        bridge_index: u32,
        peer_ns: &Netns,
        peer_name: &str,
        peer_mac: [u8; 6],
    ) -> Result<u32> {
        let peer = LinkUnspec::new_with_name(peer_name)
            .address(peer_mac.to_vec())
            // Only the fd number travels in the message, so it must stay open until the
            // connection task writes it: during the await below, with `peer_ns` borrowed. Hence
            // this future must not be dropped before completing (e.g. by a timeout).
            .setns_by_fd(peer_ns.fd().as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge_index)
            .build();
        // NLM_F_ECHO: the kernel answers with the new link, index included. A lookup instead
        // would first apply the port's pending carrier change, and with it walk every port
        // of the bridge (the kernel's link watcher does that later, off this path).
        let create = self.send(RouteNetlinkMessage::NewLink(msg), CREATE | NLM_F_ECHO)?;
        let created = first_link(replies(create).await)
            .op(|| format!("creating veth {host_name} (peer {peer_name})"))?;
        let configured = match netns::run_in(&self.ns, || disable_ipv6(host_name))? {
            Err(e) => Err(e).op(|| format!("turning off IPv6 on {host_name}")),
            Ok(()) => {
                let up = LinkUnspec::new_with_name(host_name).up().build();
                ack(self.send(RouteNetlinkMessage::SetLink(up), CHANGE)?)
                    .await
                    .op(|| format!("setting {host_name} up"))
            }
        };
        let echoed = created.filter(|l| l.name == host_name).map(|l| l.index);
        if let Err(failed) = configured {
            // By the index the kernel gave it where known: the name may be another's by now.
            let undone = match echoed {
                Some(index) => self.delete_link(index).await,
                None => self.delete_link_by_name(host_name).await.map(drop),
            };
            return Err(super::undone(failed, undone, |failed, undo| {
                NetlinkError::Undo { failed, undo }
            }));
        }
        if let Some(index) = echoed {
            return Ok(index);
        }
        // An older kernel does not echo.
        Ok(first_link(replies(self.send_get_link(host_name)?).await)
            .op(|| format!("looking up new veth {host_name}"))?
            .ok_or_else(|| no_such_device(host_name))?
            .index)
    }

    /// Gives `name` no IPv6 address, sets it up, adds `addr/prefix_len` to it and, if given, a
    /// default route via `gateway`; meant for a connection opened in a container's namespace.
    /// The four requests are sent back to back and the kernel applies them in order, so each
    /// finds its predecessor done.
    ///
    /// netpath's networks are IPv4 only, and Docker turns IPv6 off on the interfaces of such
    /// networks (since 26.0.2, CVE-2024-32473). With an IPv6 link-local address, each
    /// container sent about ten IPv6 packets (duplicate address detection, router
    /// solicitations, MLD reports) to multicast groups in its first seconds, which the bridge
    /// floods to every port: with 1,000 containers, some 10,000 deliveries per new container.
    /// Without an address it sends none. This is done over netlink rather than with the
    /// `disable_ipv6` sysctl: every container's `/proc/sys/net/ipv6/conf/eth0` is a dentry of
    /// the same name under the same parent, so each lookup there walks all of them.
    pub async fn configure_container_iface(
        &self,
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    ) -> Result<()> {
        // Addresses can only be added by index, so this one lookup can't be pipelined.
        let index = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| no_such_device(name))?
            .index;
        let no_v6 = self.send(
            RouteNetlinkMessage::SetLink(no_ipv6_addresses(index)),
            CHANGE,
        )?;
        let up = self.send(
            RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).up().build()),
            CHANGE,
        )?;
        let address = self.send_new_address(index, addr, prefix_len)?;
        let route = gateway
            .map(|gw| {
                let msg = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
                self.send(RouteNetlinkMessage::NewRoute(msg), CREATE)
            })
            .transpose()?;
        ack(no_v6)
            .await
            .op_on(name, || format!("turning off IPv6 addresses on {name}"))?;
        ack(up).await.op_on(name, || format!("setting {name} up"))?;
        ack(address).await.op_on(name, || {
            format!("adding address {addr}/{prefix_len} to {name}")
        })?;
        if let (Some(route), Some(gw)) = (route, gateway) {
            ack(route)
                .await
                .op_on(name, || format!("adding default route via {gw} on {name}"))?;
        }
        Ok(())
    }

    pub async fn set_up(&self, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_name(name).up().build();
        ack(self.send(RouteNetlinkMessage::SetLink(msg), CHANGE)?)
            .await
            .op_on(name, || format!("setting {name} up"))
    }

    /// Deletes link `index` (for a veth, its peer goes too).
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).build();
        ack(self.send(RouteNetlinkMessage::DelLink(msg), CHANGE)?)
            .await
            .op(|| format!("deleting interface {index}"))
    }

    /// Deletes link `name` (for a veth, its peer too); returns false if there was none.
    ///
    /// Returns once the kernel has unregistered the link, which it echoes within a few
    /// milliseconds, rather than at its acknowledgement, which comes only after an
    /// `rcu_barrier()` (15-30 ms) that frees memory: a detached process sends the request and
    /// takes that wait ([`detached`]). Every error still reaches the caller, as the kernel
    /// reports them before it unregisters anything.
    ///
    /// Not when netpath is the init of its PID namespace (`netpath docker-plugin` as a
    /// container's entrypoint): the sender would be reparented to netpath, which never reaps
    /// it, so each deletion would leave a zombie. It then waits for the ack.
    pub async fn delete_link_by_name(&self, name: &str) -> Result<bool> {
        let deleting = || format!("deleting interface {name}");
        if std::process::id() == 1 {
            let msg = LinkUnspec::new_with_name(name).build();
            let acked = ack(self.send(RouteNetlinkMessage::DelLink(msg), CHANGE)?).await;
            return existed(acked.op_on(name, deleting));
        }
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelLink(
            LinkUnspec::new_with_name(name).build(),
        ));
        req.header.flags = CHANGE | NLM_F_ECHO;
        req.header.sequence_number = 1;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        let sock = netns::run_in(&self.ns, detached::socket)?.op(deleting)?;
        let deleted = detached::request(sock, &buf, |m| {
            matches!(m, RouteNetlinkMessage::DelLink(l)
                if l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == name)))
        })
        .await;
        existed(deleted.op_on(name, deleting))
    }

    /// Deletes the links `names` (for veths, their peers too) as one batch: each is put into a
    /// netdev group no other link is in, then one request deletes the group. The kernel then
    /// unregisters them together and waits for RCU callbacks once, where a request per link
    /// waits once per link (about 25 ms each). Returns, per name, whether it existed (false:
    /// already gone) or why it could not be moved to the group; the outer error is the whole
    /// batch failing, every link that was moved staying.
    pub async fn delete_links(&self, names: &[&str]) -> Result<Vec<Result<bool>>> {
        if let [name] = names {
            return Ok(vec![self.delete_link_by_name(name).await]);
        }
        let used: Vec<u32> =
            replies(self.send(RouteNetlinkMessage::GetLink(LinkMessage::default()), DUMP)?)
                .await
                .op(|| "listing interfaces")?
                .into_iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewLink(l) => {
                        l.attributes.into_iter().find_map(|a| match a {
                            LinkAttribute::Group(g) => Some(g),
                            _ => None,
                        })
                    }
                    _ => None,
                })
                .collect();
        let mut group = u32::from_ne_bytes(random_bytes()?);
        while group == 0 || used.contains(&group) {
            group = group.wrapping_add(1);
        }
        let mut moved = Vec::with_capacity(names.len());
        // In slices, so that the kernel's acks never overflow the socket's receive buffer.
        for chunk in names.chunks(128) {
            let sent = chunk
                .iter()
                .map(|name| {
                    let mut msg = LinkUnspec::new_with_name(name).build();
                    msg.attributes.push(LinkAttribute::Group(group));
                    self.send(RouteNetlinkMessage::SetLink(msg), CHANGE)
                })
                .collect::<Result<Vec<_>>>()?;
            for (name, sent) in chunk.iter().zip(sent) {
                moved.push(existed(
                    ack(sent)
                        .await
                        .op_on(name, || format!("deleting interface {name}")),
                ));
            }
        }
        if moved.iter().any(|m| matches!(m, Ok(true))) {
            let mut msg = LinkMessage::default();
            msg.attributes.push(LinkAttribute::Group(group));
            ack(self.send(RouteNetlinkMessage::DelLink(msg), CHANGE)?)
                .await
                .op(|| format!("deleting {} interfaces (netdev group {group})", names.len()))?;
        }
        Ok(moved)
    }

    /// The ids of the BPF programs in the clsact ingress filters of interface `index`.
    pub async fn ingress_bpf_programs(&self, index: u32) -> Result<Vec<u32>> {
        let mut msg = TcMessage::default();
        msg.header.index = index as i32;
        msg.header.parent = TcHandle {
            major: 0xffff,
            minor: TcHandle::MIN_INGRESS,
        };
        let msgs = replies(self.send(RouteNetlinkMessage::GetTrafficFilter(msg), DUMP)?)
            .await
            .op(|| format!("listing the ingress filters of interface {index}"))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f) => Some(f.attributes),
                _ => None,
            })
            .flatten()
            .filter_map(|a| match a {
                TcAttribute::Options(options) => Some(options),
                _ => None,
            })
            .flatten()
            .filter_map(|o| match o {
                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => Some(id),
                _ => None,
            })
            .collect())
    }

    /// Queues `msg` on the connection and returns the stream of its responses. The request is
    /// handed to the connection task right away, so calling this several times before awaiting
    /// pipelines the requests, in order.
    fn send(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + use<>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        self.handle
            .clone()
            .request(req)
            .map_err(|_| NetlinkError::Closed)
    }

    fn send_get_link(
        &self,
        name: &str,
    ) -> Result<impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + use<>> {
        let msg = LinkUnspec::new_with_name(name).build();
        self.send(RouteNetlinkMessage::GetLink(msg), GET)
    }

    fn send_new_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + use<>> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, prefix_len)
            .build();
        self.send(RouteNetlinkMessage::NewAddress(msg), CREATE)
    }
}

/// A request that link `index` get no IPv6 address of its own (IN6_ADDR_GEN_MODE_NONE): with
/// none, it sends no IPv6 packet by itself.
fn no_ipv6_addresses(index: u32) -> LinkMessage {
    let mut msg = LinkUnspec::new_with_index(index).build();
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    msg
}

/// Turns IPv6 off on link `name` of the calling thread's namespace; nothing to do where the
/// kernel has no IPv6.
fn disable_ipv6(name: &str) -> io::Result<()> {
    match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// A random unicast, locally administered MAC address.
fn random_mac() -> Result<[u8; 6]> {
    let mut mac: [u8; 6] = random_bytes()?;
    mac[0] = (mac[0] & !0x01) | 0x02;
    Ok(mac)
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .op(|| "reading /dev/urandom")?;
    Ok(bytes)
}

/// Collects the replies to one request, failing with the kernel's errno if it sent one.
async fn replies(
    responses: impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>>,
) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut responses = pin!(responses);
    let mut out = Vec::new();
    while let Some(msg) = responses.next().await {
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => out.push(m),
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
            _ => {}
        }
    }
    Ok(out)
}

/// Whether a deleted link existed: its absence is no error.
fn existed(deleted: Result<()>) -> Result<bool> {
    match deleted {
        Err(NetlinkError::NoSuchDevice { .. }) => Ok(false),
        r => r.map(|()| true),
    }
}

async fn ack(responses: impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>>) -> io::Result<()> {
    replies(responses).await.map(drop)
}

fn first_link(replies: io::Result<Vec<RouteNetlinkMessage>>) -> io::Result<Option<Link>> {
    Ok(replies?.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
        _ => None,
    }))
}

fn parse_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        controller: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Controller(index) => link.controller = Some(index),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.into_iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    link
}

fn parse_address(msg: AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
    // point-to-point links (where it is the peer's), and is the only one sent by some drivers.
    let mut local = None;
    let mut address = None;
    for attr in msg.attributes {
        match attr {
            AddressAttribute::Local(std::net::IpAddr::V4(a)) => local = Some(a),
            AddressAttribute::Address(std::net::IpAddr::V4(a)) => address = Some(a),
            _ => {}
        }
    }
    Some(Address {
        index: msg.header.index,
        addr: local.or(address)?,
        prefix_len: msg.header.prefix_len,
    })
}

fn parse_route(msg: RouteMessage) -> Option<Route> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    // The header's table is only 8 bits; RTA_TABLE, when present, is authoritative.
    let mut table = u32::from(msg.header.table);
    let mut route = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: msg.header.destination_prefix_length,
        oif: None,
        gateway: None,
    };
    for attr in msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => route.dst = a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.gateway = Some(a),
            RouteAttribute::Oif(index) => route.oif = Some(index),
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(route)
}
