//! Whether the undercloud serves DHCP on its provisioning interface: never
//! where another DHCP server answers. A one-NIC laptop on an office network
//! would otherwise hand out addresses (and iPXE) to the office.
//!
//! `provisioning.dhcp` decides: `auto` probes the interface
//! ([`dhcp_probe`](super::dhcp_probe)) at boot, before dnsmasq starts, and
//! serves only when nothing answered; `force` serves without probing;
//! `off` never serves. When the probe keeps DHCP off, `configure` writes a
//! state file for `status` ([`STATE_FILE`]): who answered and when.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;

use super::config::DhcpMode;
use super::dhcp_probe::{Outcome, ProbeOptions};

/// Written when the probe keeps DHCP off; removed when DHCP is served. On
/// `/run`: it describes this boot only.
pub const STATE_FILE: &str = "/run/undercloud-live/dhcp-guard";

/// How long the probe waits for a link on an interface it brought up
/// (Ethernet auto-negotiation takes 1 to 3 s).
pub const LINK_WAIT: Duration = Duration::from_secs(8);

const OVERRIDE: &str = "set provisioning.dhcp: force in undercloud.yaml to serve anyway";

/// What `configure` decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dhcp {
    /// Served: the probe heard no other server.
    Checked { seconds: u32 },
    /// Served without a probe (`force`).
    Forced,
    /// Not served: `off` in undercloud.yaml.
    Off,
    /// Not served: the probe found another server, or could not tell.
    Guarded(Guard),
}

impl Dhcp {
    pub fn serves(&self) -> bool {
        matches!(self, Dhcp::Checked { .. } | Dhcp::Forced)
    }

    /// The `dhcp=` value of the endpoints file `status` reads.
    pub fn key(&self) -> &'static str {
        match self {
            Dhcp::Checked { .. } | Dhcp::Forced => "serve",
            Dhcp::Off => "off",
            Dhcp::Guarded(_) => "guard",
        }
    }

    /// One line for the console.
    pub fn console_line(&self, interface: &str) -> String {
        match self {
            Dhcp::Checked { seconds } => format!(
                "undercloud-config: no other DHCP server answered on {interface} within {seconds} s: serving DHCP there"
            ),
            Dhcp::Forced => format!(
                "undercloud-config: warning: provisioning.dhcp is force: serving DHCP on {interface} without checking for another DHCP server"
            ),
            Dhcp::Off => format!(
                "undercloud-config: provisioning.dhcp is off: not serving DHCP on {interface}"
            ),
            Dhcp::Guarded(g) => g.console_line(),
        }
    }

    /// Why DHCP is off, for a comment in dnsmasq's file.
    pub fn off_reason(&self) -> Option<String> {
        match self {
            Dhcp::Checked { .. } | Dhcp::Forced => None,
            Dhcp::Off => Some("provisioning.dhcp is off in undercloud.yaml".into()),
            Dhcp::Guarded(g) => Some(g.why()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub interface: String,
    pub reason: Reason,
    /// When the probe ran, in seconds since 1970 (UTC).
    pub time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// This server offered an address (`offered`).
    OtherServer { server: Ipv4Addr, offered: Ipv4Addr },
    /// No link within [`LINK_WAIT`]: nothing could answer, so nothing is
    /// known about the network the cable will be plugged into.
    NoLink,
    /// The probe could not run (the error).
    ProbeFailed(String),
}

impl Guard {
    /// The clause both the console and `status` show.
    fn why(&self) -> String {
        let i = &self.interface;
        match &self.reason {
            Reason::OtherServer { server, .. } => {
                format!("another DHCP server ({server}) answers on {i}")
            }
            Reason::NoLink => {
                format!(
                    "{i} had no link at boot, so it could not be checked for another DHCP server"
                )
            }
            Reason::ProbeFailed(e) => {
                format!("the check for another DHCP server on {i} failed ({e})")
            }
        }
    }

    pub fn console_line(&self) -> String {
        format!(
            "undercloud-config: {}: not serving DHCP there (TFTP and the rest run); {OVERRIDE}",
            self.why()
        )
    }

    /// `status`'s detail for the DHCP line.
    pub fn status_detail(&self) -> String {
        format!("off: {}; {OVERRIDE}", self.why())
    }

    /// The state file's text: `key=value` lines.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# Written by undercloud-config at boot: DHCP is not served on the provisioning interface.\n",
        );
        let _ = writeln!(s, "interface={}", self.interface);
        match &self.reason {
            Reason::OtherServer { server, offered } => {
                let _ = writeln!(s, "reason=other-server\nserver={server}\noffered={offered}");
            }
            Reason::NoLink => s.push_str("reason=no-link\n"),
            Reason::ProbeFailed(e) => {
                let _ = writeln!(s, "reason=probe-failed\nerror={}", one_line(e));
            }
        }
        let _ = writeln!(s, "time={}\ntime_utc={}", self.time, utc(self.time));
        s
    }

    pub fn parse(text: &str) -> Option<Guard> {
        let kv: std::collections::BTreeMap<&str, &str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let reason = match *kv.get("reason")? {
            "other-server" => Reason::OtherServer {
                server: kv.get("server")?.parse().ok()?,
                offered: kv
                    .get("offered")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
            },
            "no-link" => Reason::NoLink,
            "probe-failed" => {
                Reason::ProbeFailed(kv.get("error").copied().unwrap_or("").to_string())
            }
            _ => return None,
        };
        Some(Guard {
            interface: kv.get("interface")?.to_string(),
            reason,
            time: kv.get("time").and_then(|t| t.parse().ok()).unwrap_or(0),
        })
    }
}

/// Decide, probing through `probe` when the mode is `auto`. `now` is the
/// time to record, in seconds since 1970.
pub fn decide(
    mode: DhcpMode,
    interface: &str,
    seconds: u32,
    now: u64,
    probe: impl FnOnce(&ProbeOptions) -> Result<Outcome>,
) -> Dhcp {
    match mode {
        DhcpMode::Force => return Dhcp::Forced,
        DhcpMode::Off => return Dhcp::Off,
        DhcpMode::Auto => {}
    }
    let reason = match probe(&ProbeOptions {
        interface,
        timeout: Duration::from_secs(seconds.into()),
        link_wait: LINK_WAIT,
    }) {
        Ok(Outcome::Silent) => return Dhcp::Checked { seconds },
        Ok(Outcome::Answered(offer)) => Reason::OtherServer {
            server: offer.server,
            offered: offer.offered,
        },
        Ok(Outcome::NoLink) => Reason::NoLink,
        // Unknown is not "nobody": keep DHCP off.
        Err(e) => Reason::ProbeFailed(one_line(&format!("{e:#}"))),
    };
    Dhcp::Guarded(Guard {
        interface: interface.to_string(),
        reason,
        time: now,
    })
}

/// What `--dry-run` says instead of probing.
pub fn dry_run_line(mode: DhcpMode, interface: &str, seconds: u32) -> String {
    match mode {
        DhcpMode::Auto => format!(
            "undercloud-config: would probe {interface} for another DHCP server (bring it up if down, \
             broadcast a DHCPDISCOVER from udp 68 to 255.255.255.255:67, listen {seconds} s for an offer) \
             and, if one answers, write dnsmasq's file without DHCP; nothing is sent in a dry run. \
             The files below are those for no answer."
        ),
        DhcpMode::Force => Dhcp::Forced.console_line(interface),
        DhcpMode::Off => Dhcp::Off.console_line(interface),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// `2024-12-01T23:09:19Z`.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::image::iso9660::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::undercloud::dhcp_probe::Offer;

    fn offer() -> Outcome {
        Outcome::Answered(Offer {
            server: Ipv4Addr::new(10, 0, 2, 2),
            source: Ipv4Addr::new(10, 0, 2, 2),
            offered: Ipv4Addr::new(10, 0, 2, 15),
            next_server: Ipv4Addr::new(10, 0, 2, 2),
        })
    }

    #[test]
    fn auto_serves_only_when_nothing_answers() {
        let d = decide(DhcpMode::Auto, "enp0s2", 5, 0, |o| {
            assert_eq!(o.interface, "enp0s2");
            assert_eq!(o.timeout, Duration::from_secs(5));
            Ok(Outcome::Silent)
        });
        assert_eq!(d, Dhcp::Checked { seconds: 5 });
        assert!(d.serves());
        assert_eq!(d.key(), "serve");

        let d = decide(DhcpMode::Auto, "enp0s2", 5, 1_733_094_559, |_| Ok(offer()));
        assert!(!d.serves());
        assert_eq!(d.key(), "guard");
        assert_eq!(
            d.console_line("enp0s2"),
            "undercloud-config: another DHCP server (10.0.2.2) answers on enp0s2: not serving DHCP there \
             (TFTP and the rest run); set provisioning.dhcp: force in undercloud.yaml to serve anyway"
        );
        let Dhcp::Guarded(g) = d else { panic!() };
        assert_eq!(
            g.status_detail(),
            "off: another DHCP server (10.0.2.2) answers on enp0s2; set provisioning.dhcp: force in undercloud.yaml to serve anyway"
        );
    }

    #[test]
    fn no_link_or_a_failed_probe_keeps_dhcp_off() {
        let d = decide(DhcpMode::Auto, "eno1", 5, 0, |_| Ok(Outcome::NoLink));
        assert!(!d.serves());
        assert!(d.console_line("eno1").contains("eno1 had no link"));
        let d = decide(DhcpMode::Auto, "eno1", 5, 0, |_| {
            Err(anyhow::anyhow!(
                "no network interface eno1\non this machine"
            ))
        });
        assert!(!d.serves());
        let line = d.console_line("eno1");
        assert!(
            line.contains("failed (no network interface eno1 on this machine)"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn force_and_off_do_not_probe() {
        let never = |_: &ProbeOptions| -> Result<Outcome> { panic!("probed") };
        let d = decide(DhcpMode::Force, "eno1", 5, 0, never);
        assert_eq!(d, Dhcp::Forced);
        assert!(d.serves());
        assert!(d
            .console_line("eno1")
            .contains("warning: provisioning.dhcp is force"));
        let d = decide(DhcpMode::Off, "eno1", 5, 0, never);
        assert_eq!(d, Dhcp::Off);
        assert!(!d.serves());
        assert_eq!(d.key(), "off");
        assert!(dry_run_line(DhcpMode::Auto, "eno1", 5).contains("would probe eno1"));
        assert!(dry_run_line(DhcpMode::Off, "eno1", 5).contains("is off"));
    }

    #[test]
    fn the_state_file_round_trips() {
        for reason in [
            Reason::OtherServer {
                server: Ipv4Addr::new(192, 168, 1, 1),
                offered: Ipv4Addr::new(192, 168, 1, 57),
            },
            Reason::NoLink,
            Reason::ProbeFailed("reading the flags of x: denied".into()),
        ] {
            let g = Guard {
                interface: "enp3s0".into(),
                reason,
                time: 1_733_094_559,
            };
            let text = g.render();
            assert_eq!(Guard::parse(&text), Some(g), "{text}");
        }
        let g = Guard {
            interface: "enp3s0".into(),
            reason: Reason::OtherServer {
                server: Ipv4Addr::new(192, 168, 1, 1),
                offered: Ipv4Addr::new(192, 168, 1, 57),
            },
            time: 1_733_094_559,
        };
        assert_eq!(
            g.render(),
            "# Written by undercloud-config at boot: DHCP is not served on the provisioning interface.\n\
             interface=enp3s0\nreason=other-server\nserver=192.168.1.1\noffered=192.168.1.57\n\
             time=1733094559\ntime_utc=2024-12-01T23:09:19Z\n"
        );
        assert_eq!(Guard::parse("reason=other-server\ninterface=x\n"), None);
        assert_eq!(Guard::parse(""), None);
    }
}
