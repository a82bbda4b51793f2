//! Network interfaces as the kernel's routing netlink (rtnetlink) shows
//! them: one interface looked up by name (index, flags, type, hardware
//! address, carrier) and set up or down, as `ip link` does.
//!
//! The few messages (RTM_GETLINK by name, RTM_NEWLINK changing `IFF_UP`
//! only, the kernel's answers) are encoded and decoded here in safe code,
//! and the tests check them byte by byte: the interface ioctls would need
//! `unsafe`, and a netlink crate would be larger than these messages. A
//! netlink socket acts in the network namespace of the thread that opened
//! it (sysfs would show the namespace it was mounted in), so a caller in a
//! thread that entered a namespace asks about that namespace.

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::io::readable;

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
pub struct LinkInfo {
    pub index: i32,
    /// ifi_type, an ARPHRD_* number.
    pub arp_type: u16,
    pub flags: u32,
    /// IFLA_ADDRESS: the hardware address.
    pub address: Vec<u8>,
    /// IFLA_CARRIER; very old kernels do not send it.
    pub carrier: Option<bool>,
}

impl LinkInfo {
    pub fn ethernet_mac(&self, name: &str) -> Result<[u8; 6]> {
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
pub struct Link {
    sock: OwnedFd,
    name: String,
    seq: Cell<u32>,
}

/// Sets the interface down again when dropped, if `bring_up` brought it up.
pub struct Restore<'a> {
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
    pub fn open(name: &str) -> Result<Link> {
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
            if !readable(&self.sock, left).context("waiting for the kernel's answer")? {
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

    pub fn info(&self) -> Result<LinkInfo> {
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
    pub fn running(&self) -> Result<bool> {
        let info = self.info()?;
        Ok(info.carrier.unwrap_or(info.flags & IFF_RUNNING != 0))
    }

    pub fn bring_up(&self, info: &LinkInfo) -> Result<Restore<'_>> {
        let was_down = info.flags & IFF_UP == 0;
        if was_down {
            self.set_up(info.index, true)
                .with_context(|| format!("bringing {} up", self.name))?;
        }
        Ok(Restore {
            link: self,
            index: info.index,
            was_down,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

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
