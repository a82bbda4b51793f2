//! Is there already a DHCP server on the provisioning network? Ask the way a
//! booting client does: broadcast a DHCPDISCOVER on the interface and wait
//! for a DHCPOFFER with the same transaction id.
//!
//! The packets (a BOOTP header and options 53, 55, 61, 255 out; 53 and 54
//! read back) are encoded and decoded here; they are small and the tests
//! check them byte by byte. So are the few rtnetlink messages that look
//! the interface up and bring it up (RTM_GETLINK by name, RTM_NEWLINK
//! with `IFF_UP`).
//!
//! Sockets: the DISCOVER goes out of a UDP socket bound to port 68 and to the
//! interface (`SO_BINDTODEVICE`, `SO_BROADCAST`) to 255.255.255.255:67. The
//! answer is read from a packet socket on the interface instead, because at
//! boot the interface has no address and no route yet (the probe runs before
//! systemd-networkd), and with reverse-path filtering in loose mode
//! (`rp_filter=2`, systemd's default, Fedora's setting) the kernel drops an
//! offer from an address it has no route back to before any UDP socket sees
//! it. DHCP clients (dhclient, systemd-networkd, udhcpc) read raw frames for
//! the same reason. Frames this host sent itself (`PACKET_OUTGOING`) are
//! skipped, so our own dnsmasq, should it run when `configure` is run again
//! by hand, is never "another server". The interface's index, flags, MAC
//! address and carrier are asked of the kernel over a `NETLINK_ROUTE`
//! socket. Every socket here acts in the network namespace of the thread
//! that opened it (sysfs would show the namespace it was mounted in), so a
//! probe run in a thread that entered a namespace probes that namespace.
//! Only nix's safe wrappers touch the kernel here.

use std::cell::Cell;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, LinkAddr, MsgFlags,
    NetlinkAddr, SockFlag, SockProtocol, SockType, SockaddrIn,
};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP part (RFC 2131 figure 1) before the magic cookie.
const BOOTP_HEADER_LEN: usize = 236;
/// RFC 1542: relays and old servers may drop BOOTP messages shorter than this.
const MIN_MESSAGE_LEN: usize = 300;
/// Ask the server to broadcast its answer: we have no address to unicast to.
const FLAG_BROADCAST: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETER_LIST: u8 = 55;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

pub const DHCPDISCOVER: u8 = 1;
pub const DHCPOFFER: u8 = 2;

/// What a DISCOVER asks for (option 55): subnet mask, router, DNS server,
/// domain name, lease time, server identifier. A server answers whatever
/// we ask; asking like a real client keeps picky servers answering.
const PARAMETERS: [u8; 6] = [1, 3, 6, 15, 51, 54];

/// A DHCPDISCOVER from `mac`, `secs` seconds into the attempt.
pub fn discover(xid: u32, mac: [u8; 6], secs: u16) -> Vec<u8> {
    let mut p = vec![0u8; BOOTP_HEADER_LEN];
    p[0] = BOOTREQUEST;
    p[1] = HTYPE_ETHERNET;
    p[2] = 6; // hlen
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[8..10].copy_from_slice(&secs.to_be_bytes());
    p[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    // ciaddr, yiaddr, siaddr, giaddr: 0.0.0.0.
    p[28..34].copy_from_slice(&mac);
    // The rest of chaddr, sname and file stay zero.
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, DHCPDISCOVER]);
    // Client identifier: hardware type 1 (Ethernet) and the MAC, as
    // dhclient and systemd-networkd send by default.
    p.extend_from_slice(&[OPT_CLIENT_ID, 7, HTYPE_ETHERNET]);
    p.extend_from_slice(&mac);
    p.extend_from_slice(&[OPT_PARAMETER_LIST, PARAMETERS.len() as u8]);
    p.extend_from_slice(&PARAMETERS);
    p.push(OPT_END);
    if p.len() < MIN_MESSAGE_LEN {
        p.resize(MIN_MESSAGE_LEN, OPT_PAD);
    }
    p
}

/// The parts of a BOOTREPLY the probe looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub xid: u32,
    pub chaddr: [u8; 6],
    /// The address offered (`yiaddr`).
    pub offered: Ipv4Addr,
    /// The next server (`siaddr`), where PXE clients fetch their boot file.
    pub next_server: Ipv4Addr,
    /// Option 53.
    pub message_type: Option<u8>,
    /// Option 54, the server identifier.
    pub server_id: Option<Ipv4Addr>,
}

/// Decode a DHCP message from a server; `None` for anything else (a request,
/// another hardware type, no magic cookie, truncated options).
pub fn parse_reply(msg: &[u8]) -> Option<Reply> {
    if msg.len() < BOOTP_HEADER_LEN + MAGIC_COOKIE.len()
        || msg[0] != BOOTREPLY
        || msg[1] != HTYPE_ETHERNET
        || msg[2] != 6
        || msg[BOOTP_HEADER_LEN..BOOTP_HEADER_LEN + 4] != MAGIC_COOKIE
    {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(msg[at], msg[at + 1], msg[at + 2], msg[at + 3]);
    let mut reply = Reply {
        xid: u32::from_be_bytes(msg[4..8].try_into().ok()?),
        chaddr: msg[28..34].try_into().ok()?,
        offered: ip(16),
        next_server: ip(20),
        message_type: None,
        server_id: None,
    };
    let mut opts = &msg[BOOTP_HEADER_LEN + 4..];
    loop {
        match opts {
            [] | [OPT_END, ..] => break,
            [OPT_PAD, rest @ ..] => opts = rest,
            [code, len, rest @ ..] => {
                let len = usize::from(*len);
                let value = rest.get(..len)?;
                match (*code, value) {
                    (OPT_MESSAGE_TYPE, [t]) => reply.message_type = Some(*t),
                    (OPT_SERVER_ID, [a, b, c, d]) => {
                        reply.server_id = Some(Ipv4Addr::new(*a, *b, *c, *d))
                    }
                    _ => {}
                }
                opts = &rest[len..];
            }
            // A code without its length byte.
            [_] => return None,
        }
    }
    Some(reply)
}

/// An IPv4 packet as a packet socket of type `SOCK_DGRAM` hands it over:
/// the UDP datagram's source address, destination port and payload. `None`
/// for other protocols, fragments and truncated packets.
pub fn parse_ipv4_udp(packet: &[u8]) -> Option<(Ipv4Addr, u16, &[u8])> {
    let first = *packet.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || packet.len() < ihl + 8 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    // More-fragments set or a non-zero offset: not a whole datagram.
    if packet[9] != 17 || frag & 0x3fff != 0 || total < ihl + 8 || total > packet.len() {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let udp = &packet[ihl..total];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return None;
    }
    Some((src, dport, &udp[8..ulen]))
}

/// An offer from another DHCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Its server identifier (option 54), else the packet's source address.
    pub server: Ipv4Addr,
    /// The source address of the offer's IP packet.
    pub source: Ipv4Addr,
    pub offered: Ipv4Addr,
    pub next_server: Ipv4Addr,
}

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Another server offered an address.
    Answered(Offer),
    /// Nothing answered within the time.
    Silent,
    /// The interface had no link (carrier) within the wait: nothing could
    /// answer, and nothing could be learnt.
    NoLink,
}

/// Pick the offer for our DISCOVER out of what arrived on the interface.
fn offer_in(packet: &[u8], xid: u32) -> Option<Offer> {
    let (source, dport, payload) = parse_ipv4_udp(packet)?;
    if dport != CLIENT_PORT {
        return None;
    }
    let reply = parse_reply(payload)?;
    if reply.xid != xid || reply.message_type != Some(DHCPOFFER) {
        return None;
    }
    Some(Offer {
        server: reply.server_id.unwrap_or(source),
        source,
        offered: reply.offered,
        next_server: reply.next_server,
    })
}

pub struct ProbeOptions<'a> {
    pub interface: &'a str,
    /// How long to listen for an offer in all; the DISCOVER is sent at the
    /// start and once more at 40% of it.
    pub timeout: Duration,
    /// How long to wait for a link (carrier) first.
    pub link_wait: Duration,
}

/// Probe `interface` for a DHCP server. A down interface is brought up for
/// the probe and set down again after it. Needs CAP_NET_ADMIN and
/// CAP_NET_RAW (root).
pub fn probe(opts: &ProbeOptions) -> Result<Outcome> {
    let name = opts.interface;
    let link = Link::open(name)?;
    let info = link.info()?;
    let mac = info.ethernet_mac(name)?;
    let _up = link.bring_up(&info)?;
    let start = Instant::now();
    while !link.running()? {
        if start.elapsed() >= opts.link_wait {
            return Ok(Outcome::NoLink);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Listen before sending: an answer can come within microseconds.
    let listener = packet_socket(info.index).with_context(|| format!("listening on {name}"))?;
    let sender = udp_socket(name).with_context(|| format!("opening UDP port 68 on {name}"))?;
    let xid = random_u32()?;
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    let send = |secs: u16| {
        sender
            .send_to(&discover(xid, mac, secs), to)
            .with_context(|| format!("sending a DHCPDISCOVER on {name}"))
    };
    let begin = Instant::now();
    let deadline = begin + opts.timeout;
    let retry_at = begin + opts.timeout.mul_f32(0.4);
    send(0)?;
    let mut retried = false;
    // Room for any IPv4 packet: a cut one would fail its length check.
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Outcome::Silent);
        }
        if !retried && now >= retry_at {
            send(begin.elapsed().as_secs().try_into().unwrap_or(u16::MAX))?;
            retried = true;
        }
        let until = if retried { deadline } else { retry_at };
        if !readable(&listener, until.saturating_duration_since(now))? {
            continue;
        }
        let (len, from) = recv_packet(&listener, &mut buf)?;
        // The socket takes every protocol (see packet_socket) and, until it
        // was bound, every interface: keep this interface's IPv4.
        if from.pkttype() == libc::PACKET_OUTGOING
            || i32::try_from(from.ifindex()) != Ok(info.index)
            || u16::from_be(from.protocol()) != ETH_P_IP
        {
            continue;
        }
        if let Some(offer) = offer_in(&buf[..len], xid) {
            return Ok(Outcome::Answered(offer));
        }
    }
}

/// EtherType IPv4 (linux/if_ether.h).
const ETH_P_IP: u16 = 0x0800;

// rtnetlink, as linux/netlink.h, linux/rtnetlink.h and linux/if_link.h
// number it. Netlink's integers are in the host's byte order.
const NLMSG_HDRLEN: usize = 16;
/// struct ifinfomsg.
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
/// The driver's carrier (`netif_carrier_ok`), as ethtool's "Link detected".
const IFLA_CARRIER: u16 = 33;
/// An attribute's type without its NLA_F_NESTED and NLA_F_NET_BYTEORDER bits.
const NLA_TYPE_MASK: u16 = 0x3fff;
const IFF_UP: u32 = 0x1;
const IFF_RUNNING: u32 = 0x40;
/// The kernel answers a link request at once; this only bounds a hang.
const NETLINK_WAIT: Duration = Duration::from_secs(5);

/// Netlink messages and attributes start on 4-byte boundaries.
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request about one link: a netlink header, a struct ifinfomsg (index,
/// flags and which flags to change) and attributes.
fn link_request(
    kind: u16,
    flags: u16,
    seq: u32,
    ifi: (i32, u32, u32),
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    let (index, ifi_flags, ifi_change) = ifi;
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&[0; 4]); // nlmsg_len, known at the end
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel knows ours
    m.extend_from_slice(&[0, 0]); // AF_UNSPEC, padding
    m.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    m.extend_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&ifi_flags.to_ne_bytes());
    m.extend_from_slice(&ifi_change.to_ne_bytes());
    for (kind, data) in attrs {
        // Attributes here are an interface name at most: the length fits.
        let len = (4 + data.len()) as u16;
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(align4(m.len()), 0);
    }
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// RTM_GETLINK for the interface called `name` (index 0: by name).
fn getlink_request(name: &str, seq: u32) -> Vec<u8> {
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    link_request(RTM_GETLINK, 0, seq, (0, 0, 0), &[(IFLA_IFNAME, &ifname)])
}

/// RTM_NEWLINK setting `IFF_UP` of link `index` on or off, and nothing
/// else; acknowledged, so a refusal is heard.
fn set_up_request(index: i32, up: bool, seq: u32) -> Vec<u8> {
    let flags = if up { IFF_UP } else { 0 };
    link_request(RTM_NEWLINK, NLM_F_ACK, seq, (index, flags, IFF_UP), &[])
}

/// What the kernel said about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LinkInfo {
    index: i32,
    /// ifi_type, an ARPHRD_* number.
    arp_type: u16,
    flags: u32,
    /// IFLA_ADDRESS: the hardware address.
    address: Vec<u8>,
    /// IFLA_CARRIER; very old kernels do not send it.
    carrier: Option<bool>,
}

impl LinkInfo {
    fn ethernet_mac(&self, name: &str) -> Result<[u8; 6]> {
        if self.arp_type != libc::ARPHRD_ETHER {
            bail!(
                "{name} is not an Ethernet interface (ARP type {})",
                self.arp_type
            );
        }
        self.address.as_slice().try_into().map_err(|_| {
            anyhow!(
                "{name} has a hardware address of {} bytes, not a MAC address",
                self.address.len()
            )
        })
    }
}

/// The kernel's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Link(LinkInfo),
    /// NLMSG_ERROR: 0 acknowledges, else a negated errno.
    Status(i32),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The answer to request `seq` among the messages of one datagram; `None`
/// if none answers it (a late answer to an earlier request). A message
/// that does not fit the datagram is an error.
fn decode_answer(mut buf: &[u8], seq: u32) -> Result<Option<Answer>> {
    while !buf.is_empty() {
        let (len, kind, msg_seq) = match (u32_at(buf, 0), u16_at(buf, 4), u32_at(buf, 8)) {
            (Some(len), Some(kind), Some(msg_seq)) => (len as usize, kind, msg_seq),
            _ => bail!("a netlink message cut in its header ({} bytes)", buf.len()),
        };
        if len < NLMSG_HDRLEN || len > buf.len() {
            bail!("a netlink message of {len} bytes in {} received", buf.len());
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = buf.get(align4(len)..).unwrap_or_default();
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_ERROR => {
                let error = i32_at(payload, 0).context("a netlink error without its code")?;
                return Ok(Some(Answer::Status(error)));
            }
            RTM_NEWLINK => return decode_link(payload).map(|l| Some(Answer::Link(l))),
            _ => {}
        }
    }
    Ok(None)
}

/// An RTM_NEWLINK message's payload: a struct ifinfomsg and attributes.
fn decode_link(payload: &[u8]) -> Result<LinkInfo> {
    let (Some(arp_type), Some(index), Some(flags)) =
        (u16_at(payload, 2), i32_at(payload, 4), u32_at(payload, 8))
    else {
        bail!("a link message of {} bytes", payload.len());
    };
    let mut info = LinkInfo {
        index,
        arp_type,
        flags,
        address: Vec::new(),
        carrier: None,
    };
    let mut attrs = payload.get(IFINFOMSG_LEN..).context("a cut link message")?;
    while !attrs.is_empty() {
        let (Some(len), Some(kind)) = (u16_at(attrs, 0), u16_at(attrs, 2)) else {
            bail!("a link attribute cut in its header");
        };
        let len = usize::from(len);
        if len < 4 || len > attrs.len() {
            bail!("a link attribute of {len} bytes in {} left", attrs.len());
        }
        let data = &attrs[4..len];
        match kind & NLA_TYPE_MASK {
            IFLA_ADDRESS => info.address = data.to_vec(),
            IFLA_CARRIER => info.carrier = data.first().map(|&c| c != 0),
            _ => {}
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    Ok(info)
}

/// An interface, asked about and set up or down over rtnetlink.
struct Link {
    sock: OwnedFd,
    name: String,
    seq: Cell<u32>,
}

/// Sets the interface down again when dropped, if the probe brought it up.
struct Restore<'a> {
    link: &'a Link,
    index: i32,
    was_down: bool,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if self.was_down {
            let _ = self.link.set_up(self.index, false);
        }
    }
}

impl Link {
    fn open(name: &str) -> Result<Link> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            bail!("{name:?}: not an interface name");
        }
        let sock = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .context("opening a netlink socket")?;
        Ok(Link {
            sock,
            name: name.to_string(),
            seq: Cell::new(0),
        })
    }

    /// Send the request `encode` makes for a fresh sequence number, and
    /// wait for the kernel's answer to it.
    fn ask(&self, encode: impl FnOnce(u32) -> Vec<u8>) -> Result<Answer> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let kernel = NetlinkAddr::new(0, 0);
        sendto(
            self.sock.as_raw_fd(),
            &encode(seq),
            &kernel,
            MsgFlags::empty(),
        )
        .context("sending a netlink request")?;
        // One link's message is a few kilobytes; a bigger one would be cut
        // and fail its length check.
        let mut buf = vec![0u8; 32 * 1024];
        let deadline = Instant::now() + NETLINK_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the kernel did not answer about {}", self.name);
            }
            if !readable(&self.sock, left)? {
                continue;
            }
            let n = recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::empty())
                .context("reading a netlink answer")?;
            if let Some(answer) = decode_answer(&buf[..n], seq)
                .with_context(|| format!("reading the kernel's answer about {}", self.name))?
            {
                return Ok(answer);
            }
        }
    }

    /// The kernel's error `status` (a negated errno) while `doing`.
    fn refused(&self, status: i32, doing: &str) -> anyhow::Error {
        let errno = Errno::from_raw(status.saturating_neg());
        if errno == Errno::ENODEV {
            return anyhow!("no network interface {} on this machine", self.name);
        }
        anyhow::Error::new(errno).context(format!("{doing} of {}", self.name))
    }

    fn info(&self) -> Result<LinkInfo> {
        match self.ask(|seq| getlink_request(&self.name, seq))? {
            Answer::Link(info) => Ok(info),
            Answer::Status(0) => bail!("the kernel sent no link for {}", self.name),
            Answer::Status(e) => Err(self.refused(e, "reading the state")),
        }
    }

    fn set_up(&self, index: i32, up: bool) -> Result<()> {
        match self.ask(|seq| set_up_request(index, up, seq))? {
            Answer::Status(0) => Ok(()),
            Answer::Status(e) => Err(self.refused(e, "setting the flags")),
            Answer::Link(_) => bail!("the kernel answered a link for a change of {}", self.name),
        }
    }

    /// With a carrier: the driver's own (IFLA_CARRIER, what ethtool shows
    /// as "Link detected"). `IFF_RUNNING` follows the carrier only once the
    /// kernel's link watcher has run, up to a second later, and a never-used
    /// interface reads as running until then: it answers only for a kernel
    /// that sends no carrier.
    fn running(&self) -> Result<bool> {
        let info = self.info()?;
        Ok(info.carrier.unwrap_or(info.flags & IFF_RUNNING != 0))
    }

    fn bring_up(&self, info: &LinkInfo) -> Result<Restore<'_>> {
        let was_down = info.flags & IFF_UP == 0;
        if was_down {
            self.set_up(info.index, true)
                .with_context(|| format!("bringing {} up for the probe", self.name))?;
        }
        Ok(Restore {
            link: self,
            index: info.index,
            was_down,
        })
    }
}

/// UDP, port 68, bound to the interface, allowed to broadcast. Bound to
/// the device before the port, so a DHCP client's socket on another
/// interface does not clash with it.
fn udp_socket(interface: &str) -> Result<UdpSocket> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("opening a UDP socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("setting SO_REUSEADDR")?;
    setsockopt(&fd, sockopt::Broadcast, &true).context("setting SO_BROADCAST")?;
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(interface))
        .context("setting SO_BINDTODEVICE")?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT))
        .context("binding UDP port 68")?;
    Ok(UdpSocket::from(fd))
}

/// A packet socket receiving the interface's frames at the network layer
/// (no link header).
///
/// nix names no IPv4-only packet protocol on a little-endian machine and
/// has no safe way to make a link address, so the socket takes every
/// protocol (`ETH_P_ALL`) and is bound with the interface's own link
/// address as getifaddrs(3) lists it: that carries the index and protocol
/// 0, which keeps the socket's protocol. Bound, the kernel queues only this
/// interface's frames, so traffic on the host's other interfaces cannot
/// crowd the offer out of the queue. The caller still checks the index
/// (frames queued before the bind) and the protocol.
fn packet_socket(ifindex: i32) -> Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .context("opening a packet socket")?;
    let index = usize::try_from(ifindex).context("a negative interface index")?;
    // getifaddrs asks over netlink too, in this thread's namespace.
    let addr = nix::ifaddrs::getifaddrs()
        .context("listing the interfaces")?
        .find_map(|a| {
            a.address
                .and_then(|s| s.as_link_addr().copied())
                .filter(|l| l.ifindex() == index)
        })
        .with_context(|| format!("no link address for interface index {ifindex}"))?;
    bind(fd.as_raw_fd(), &addr).context("binding the packet socket")?;
    Ok(fd)
}

/// Wait up to `wait` for something to read.
fn readable(fd: &OwnedFd, wait: Duration) -> Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e).context("waiting for an answer"),
    }
}

/// One packet: its length, and where it came from (packet type:
/// `PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_OUTGOING`...; interface
/// index; protocol).
fn recv_packet(fd: &OwnedFd, buf: &mut [u8]) -> Result<(usize, LinkAddr)> {
    let (n, from) = recvfrom::<LinkAddr>(fd.as_raw_fd(), buf).context("reading a packet")?;
    // Without its address a packet cannot be told ours: fail rather than
    // drop every offer and report no server.
    let from = from.context("reading a packet: the kernel gave no link address with it")?;
    Ok((n, from))
}

fn random_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("reading /dev/urandom")?;
    Ok(u32::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn discover_fields() {
        let p = discover(0xdead_beef, MAC, 3);
        assert_eq!(p.len(), 300);
        // op, htype, hlen, hops
        assert_eq!(p[..4], [1, 1, 6, 0]);
        assert_eq!(p[4..8], [0xde, 0xad, 0xbe, 0xef], "xid");
        assert_eq!(p[8..10], [0, 3], "secs");
        assert_eq!(p[10..12], [0x80, 0x00], "the broadcast flag");
        assert!(p[12..28].iter().all(|&b| b == 0), "ciaddr..giaddr");
        assert_eq!(p[28..34], MAC, "chaddr");
        assert!(
            p[34..236].iter().all(|&b| b == 0),
            "chaddr padding, sname, file"
        );
        assert_eq!(p[236..240], [0x63, 0x82, 0x53, 0x63], "magic cookie");
        assert_eq!(
            p[240..261],
            [
                53, 1, 1, // DHCPDISCOVER
                61, 7, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // client id: Ethernet, MAC
                55, 6, 1, 3, 6, 15, 51, 54,  // parameter request list
                255, // end
            ]
        );
        assert!(p[261..].iter().all(|&b| b == 0), "padding to 300 bytes");
        // Our own DISCOVER is not a reply.
        assert_eq!(parse_reply(&p), None);
    }

    /// A DHCPOFFER as a server puts it on the wire, in an IPv4/UDP packet,
    /// written out by hand (the field values of one dnsmasq sent).
    fn offer_packet(xid: [u8; 4], msg_type: u8, with_server_id: bool) -> Vec<u8> {
        let mut dhcp = Vec::new();
        dhcp.extend_from_slice(&[2, 1, 6, 0]); // BOOTREPLY, Ethernet
        dhcp.extend_from_slice(&xid);
        dhcp.extend_from_slice(&[0, 0, 0x80, 0]); // secs, flags
        dhcp.extend_from_slice(&[0, 0, 0, 0]); // ciaddr
        dhcp.extend_from_slice(&[10, 77, 0, 123]); // yiaddr
        dhcp.extend_from_slice(&[10, 77, 0, 1]); // siaddr
        dhcp.extend_from_slice(&[0, 0, 0, 0]); // giaddr
        dhcp.extend_from_slice(&MAC);
        dhcp.extend_from_slice(&[0; 10]);
        dhcp.extend_from_slice(&[0; 64]); // sname
        dhcp.extend_from_slice(&[0; 128]); // file
        dhcp.extend_from_slice(&[99, 130, 83, 99]);
        dhcp.extend_from_slice(&[53, 1, msg_type]);
        if with_server_id {
            dhcp.extend_from_slice(&[54, 4, 10, 77, 0, 1]);
        }
        dhcp.extend_from_slice(&[51, 4, 0, 0, 0x0e, 0x10]); // lease 3600 s
        dhcp.extend_from_slice(&[0, 0]); // pads between options are allowed
        dhcp.extend_from_slice(&[1, 4, 255, 255, 255, 0]); // subnet mask
        dhcp.extend_from_slice(&[3, 4, 10, 77, 0, 1]); // router
        dhcp.push(255);
        let udp_len = 8 + dhcp.len();
        let total = 20 + udp_len;
        let mut pkt = vec![
            0x45, 0xc0, // version 4, IHL 5, DSCP CS6 (dnsmasq's)
        ];
        pkt.extend_from_slice(&(total as u16).to_be_bytes());
        pkt.extend_from_slice(&[0x12, 0x34, 0x00, 0x00]); // id, no fragments
        pkt.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (unchecked)
        pkt.extend_from_slice(&[10, 77, 0, 1]); // source
        pkt.extend_from_slice(&[255, 255, 255, 255]); // destination
        pkt.extend_from_slice(&67u16.to_be_bytes());
        pkt.extend_from_slice(&68u16.to_be_bytes());
        pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0]); // UDP checksum
        pkt.extend_from_slice(&dhcp);
        pkt
    }

    #[test]
    fn an_offer_is_read_from_its_bytes() {
        let pkt = offer_packet([0xde, 0xad, 0xbe, 0xef], DHCPOFFER, true);
        let (src, dport, payload) = parse_ipv4_udp(&pkt).unwrap();
        assert_eq!((src, dport), (Ipv4Addr::new(10, 77, 0, 1), 68));
        let r = parse_reply(payload).unwrap();
        assert_eq!(
            r,
            Reply {
                xid: 0xdead_beef,
                chaddr: MAC,
                offered: Ipv4Addr::new(10, 77, 0, 123),
                next_server: Ipv4Addr::new(10, 77, 0, 1),
                message_type: Some(DHCPOFFER),
                server_id: Some(Ipv4Addr::new(10, 77, 0, 1)),
            }
        );
        assert_eq!(
            offer_in(&pkt, 0xdead_beef),
            Some(Offer {
                server: Ipv4Addr::new(10, 77, 0, 1),
                source: Ipv4Addr::new(10, 77, 0, 1),
                offered: Ipv4Addr::new(10, 77, 0, 123),
                next_server: Ipv4Addr::new(10, 77, 0, 1),
            })
        );
    }

    #[test]
    fn only_an_offer_for_our_xid_counts() {
        let xid = [1, 2, 3, 4];
        let want = u32::from_be_bytes(xid);
        assert!(offer_in(&offer_packet(xid, DHCPOFFER, true), want).is_some());
        assert_eq!(
            offer_in(&offer_packet(xid, DHCPOFFER, true), want + 1),
            None
        );
        // A DHCPACK or DHCPNAK is no offer.
        assert_eq!(offer_in(&offer_packet(xid, 5, true), want), None);
        assert_eq!(offer_in(&offer_packet(xid, 6, true), want), None);
        // No server identifier: the packet's source names the server.
        let mut pkt = offer_packet(xid, DHCPOFFER, false);
        pkt[12..16].copy_from_slice(&[10, 77, 0, 2]);
        assert_eq!(
            offer_in(&pkt, want).unwrap().server,
            Ipv4Addr::new(10, 77, 0, 2)
        );
        // To the server port (another client's request): not for us.
        let mut pkt = offer_packet(xid, DHCPOFFER, true);
        pkt[22..24].copy_from_slice(&67u16.to_be_bytes());
        assert_eq!(offer_in(&pkt, want), None);
    }

    #[test]
    fn damaged_packets_are_ignored() {
        let pkt = offer_packet([9, 9, 9, 9], DHCPOFFER, true);
        let want = 0x0909_0909;
        assert!(offer_in(&pkt, want).is_some());
        // Cut anywhere: no offer (the IP length says more), and no panic.
        for len in 0..pkt.len() {
            assert_eq!(offer_in(&pkt[..len], want), None, "cut at {len}");
        }
        // A fragment.
        let mut frag = pkt.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(offer_in(&frag, want), None);
        // Not UDP.
        let mut tcp = pkt.clone();
        tcp[9] = 6;
        assert_eq!(offer_in(&tcp, want), None);
        // No magic cookie.
        let mut cookie = pkt.clone();
        cookie[28 + 236] = 0;
        assert_eq!(offer_in(&cookie, want), None);
        // An option whose length runs past the end.
        let (_, _, payload) = parse_ipv4_udp(&pkt).unwrap();
        let mut bad = payload[..240].to_vec();
        bad.extend_from_slice(&[53, 1, 2, 54, 4, 10]);
        assert_eq!(parse_reply(&bad), None);
        // Options ending without an END option are read to the end.
        let mut no_end = payload[..240].to_vec();
        no_end.extend_from_slice(&[53, 1, 2]);
        assert_eq!(parse_reply(&no_end).unwrap().message_type, Some(2));
    }

    /// Host-order bytes, as netlink carries its integers.
    fn ne16(v: u16) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    fn ne32(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    #[test]
    fn getlink_request_bytes() {
        let expected = [
            ne32(44),           // nlmsg_len
            ne16(18),           // RTM_GETLINK
            ne16(1),            // NLM_F_REQUEST
            ne32(7),            // sequence
            ne32(0),            // port id
            vec![0, 0],         // AF_UNSPEC, padding
            ne16(0),            // ifi_type
            ne32(0),            // ifi_index: by name
            ne32(0),            // ifi_flags
            ne32(0),            // ifi_change
            ne16(9),            // rta_len: 4 + "eth0\0"
            ne16(3),            // IFLA_IFNAME
            b"eth0\0".to_vec(), // the name, NUL-terminated
            vec![0, 0, 0],      // padding to 4 bytes
        ]
        .concat();
        assert_eq!(getlink_request("eth0", 7), expected);
        // A name of 7 bytes and its NUL need no padding.
        let r = getlink_request("ucl-cli", 1);
        assert_eq!(r.len(), 16 + 16 + 12);
        assert_eq!(r[..4], ne32(44)[..]);
        assert_eq!(r[32..36], [ne16(12), ne16(3)].concat()[..]);
        assert_eq!(&r[36..], b"ucl-cli\0");
    }

    #[test]
    fn set_up_request_bytes() {
        let header = |seq: u32| {
            [
                ne32(32),
                ne16(16), // RTM_NEWLINK
                ne16(5),  // NLM_F_REQUEST | NLM_F_ACK
                ne32(seq),
                ne32(0),
                vec![0, 0],
                ne16(0),
                ne32(4), // ifi_index
            ]
            .concat()
        };
        // Up: IFF_UP set, and only IFF_UP changed.
        let up = [header(2), ne32(1), ne32(1)].concat();
        assert_eq!(set_up_request(4, true, 2), up);
        // Down: IFF_UP clear, and only IFF_UP changed.
        let down = [header(3), ne32(0), ne32(1)].concat();
        assert_eq!(set_up_request(4, false, 3), down);
    }

    /// One netlink attribute, padded to 4 bytes.
    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut a = [ne16(4 + data.len() as u16), ne16(kind), data.to_vec()].concat();
        a.resize(a.len().div_ceil(4) * 4, 0);
        a
    }

    /// A netlink message: header, then the payload.
    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len() as u32;
        [
            ne32(len),
            ne16(kind),
            ne16(0),
            ne32(seq),
            ne32(4242),
            payload.to_vec(),
        ]
        .concat()
    }

    /// The kernel's RTM_NEWLINK for a veth end, as `ip monitor` shows one,
    /// cut down to a few of its attributes (in the kernel's order).
    fn newlink(seq: u32, carrier: u8) -> Vec<u8> {
        let ifinfo = [
            vec![0, 0],   // AF_UNSPEC, padding
            ne16(1),      // ARPHRD_ETHER
            ne32(7),      // index
            ne32(0x1003), // IFF_UP | IFF_BROADCAST | IFF_MULTICAST
            ne32(0),      // change
        ]
        .concat();
        let linkinfo = attr(1, b"veth\0"); // IFLA_INFO_KIND, padded
        let payload = [
            ifinfo,
            attr(3, b"ucl-cli\0"),           // IFLA_IFNAME, no padding
            attr(4, &1500u32.to_ne_bytes()), // IFLA_MTU
            attr(33, &[carrier]),            // IFLA_CARRIER, 3 bytes padding
            attr(18 | 0x8000, &linkinfo),    // IFLA_LINKINFO, nested
            attr(1, &MAC),                   // IFLA_ADDRESS, 2 bytes padding
            attr(2, &[0xff; 6]),             // IFLA_BROADCAST
        ]
        .concat();
        message(16, seq, &payload)
    }

    #[test]
    fn a_link_is_read_from_its_bytes() {
        let msg = newlink(5, 1);
        assert_eq!(msg.len(), 16 + 16 + 12 + 8 + 8 + 16 + 12 + 12);
        let want = LinkInfo {
            index: 7,
            arp_type: 1,
            flags: 0x1003,
            address: MAC.to_vec(),
            carrier: Some(true),
        };
        assert_eq!(
            decode_answer(&msg, 5).unwrap(),
            Some(Answer::Link(want.clone()))
        );
        assert_eq!(want.ethernet_mac("ucl-cli").unwrap(), MAC);
        let Some(Answer::Link(off)) = decode_answer(&newlink(5, 0), 5).unwrap() else {
            panic!("no link");
        };
        assert_eq!(off.carrier, Some(false));
        // No carrier attribute (an old kernel): unknown, not "no carrier".
        let mut old = msg[..msg.len() - 12 - 12 - 16 - 8].to_vec();
        old.extend_from_slice(&attr(1, &MAC));
        let len = ne32(old.len() as u32);
        old[..4].copy_from_slice(&len);
        let Some(Answer::Link(old)) = decode_answer(&old, 5).unwrap() else {
            panic!("no link");
        };
        assert_eq!((old.carrier, old.address), (None, MAC.to_vec()));
    }

    #[test]
    fn the_answer_to_our_request_is_picked_out() {
        // A late acknowledgement of request 4, then the answer to 5.
        let ack = message(2, 4, &[ne32(0), message(16, 4, &[0; 16])].concat());
        let both = [ack, newlink(5, 1)].concat();
        assert!(matches!(
            decode_answer(&both, 5).unwrap(),
            Some(Answer::Link(LinkInfo { index: 7, .. }))
        ));
        assert_eq!(decode_answer(&both, 4).unwrap(), Some(Answer::Status(0)));
        assert_eq!(decode_answer(&both, 6).unwrap(), None);
        // No such device: errno 19, negated.
        let enodev = message(
            2,
            9,
            &[(-19i32).to_ne_bytes().to_vec(), vec![0; 16]].concat(),
        );
        assert_eq!(
            decode_answer(&enodev, 9).unwrap(),
            Some(Answer::Status(-19))
        );
    }

    #[test]
    fn damaged_netlink_answers_are_errors() {
        let msg = newlink(5, 1);
        assert_eq!(decode_answer(&[], 5).unwrap(), None);
        // Cut anywhere: an error, not a panic and not a link.
        for len in 1..msg.len() {
            assert!(decode_answer(&msg[..len], 5).is_err(), "cut at {len}");
        }
        // A message length shorter than its header.
        let mut short = msg.clone();
        short[..4].copy_from_slice(&ne32(8));
        assert!(decode_answer(&short, 5).is_err());
        // An attribute length under its own header, or past the message.
        for bad in [2u16, 200] {
            let mut m = msg.clone();
            m[32..34].copy_from_slice(&ne16(bad));
            let e = decode_answer(&m, 5).unwrap_err();
            assert!(format!("{e:#}").contains("link attribute"), "{e:#}");
        }
        // A link message without its ifinfomsg.
        assert!(decode_answer(&message(16, 5, &[0; 8]), 5).is_err());
        // An error message without its code.
        assert!(decode_answer(&message(2, 5, &[0; 2]), 5).is_err());
    }

    #[test]
    fn only_ethernet_has_a_mac_to_send() {
        let lo = LinkInfo {
            index: 1,
            arp_type: 772, // ARPHRD_LOOPBACK
            flags: 0x9,
            address: vec![0; 6],
            carrier: Some(true),
        };
        assert_eq!(
            lo.ethernet_mac("lo").unwrap_err().to_string(),
            "lo is not an Ethernet interface (ARP type 772)"
        );
        let odd = LinkInfo {
            arp_type: 1,
            address: vec![1, 2, 3],
            ..lo
        };
        assert!(odd.ethernet_mac("x").is_err());
    }

    /// The kernel answers our requests: `lo` is there in every namespace,
    /// an unknown name is a missing interface. Needs no privilege.
    #[test]
    fn the_kernel_answers_about_links() {
        let lo = Link::open("lo").unwrap().info().unwrap();
        let index = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(u32::try_from(lo.index).unwrap(), index);
        assert_eq!(lo.arp_type, 772);
        assert_eq!(lo.address, [0; 6]);
        let e = Link::open("ucl-nonesuch").unwrap().info().unwrap_err();
        assert_eq!(
            e.to_string(),
            "no network interface ucl-nonesuch on this machine"
        );
        assert!(Link::open("").is_err());
        assert!(Link::open("sixteen-bytes-xx").is_err());
    }
}
