//! Is there already a DHCP server on the provisioning network? Ask the way a
//! booting client does: broadcast a DHCPDISCOVER on the interface and wait
//! for a DHCPOFFER with the same transaction id.
//!
//! The packets (a BOOTP header and options 53, 55, 61, 255 out; 53 and 54
//! read back) are encoded and decoded here; they are small and the tests
//! check them byte by byte. The interface is looked up and brought up over
//! rtnetlink (`system::netlink`).
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
//! by hand, is never "another server". Every socket here, the netlink one
//! included, acts in the network namespace of the thread that opened it,
//! so a probe run in a thread that entered a namespace probes that
//! namespace. Only nix's safe wrappers touch the kernel here.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::libc;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol,
    SockType, SockaddrIn,
};

use crate::io::readable;
use crate::system::netlink::Link;

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
        if !readable(&listener, until.saturating_duration_since(now))
            .context("waiting for an answer")?
        {
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
}
