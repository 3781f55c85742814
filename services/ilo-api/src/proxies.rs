//! Which client a request comes from when it passed through a load balancer. Only peers in
//! `ILO_TRUSTED_PROXIES` may name the client (in `X-Forwarded-For`); anyone else is the client.

use std::net::IpAddr;
use std::str::FromStr;

/// An address block such as `10.0.0.0/8`, `::1/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            "" => max,
            p => p
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()) << 96, 32),
            IpAddr::V6(v6) => (v6.to_bits(), 128),
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ((net, width), (addr, other)) = (bits(self.network), bits(ip));
        if width != other {
            return false;
        }
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        net & mask == addr & mask
    }
}

/// The client: walking `X-Forwarded-For` from the right (each proxy appends the peer it saw),
/// the first address not of a trusted proxy; the peer itself when it is not trusted.
pub fn client_of(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or("").rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break, // garbage: stop at the last address we could trust
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("valid")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid")
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let private: Cidr = "172.16.0.0/12".parse().expect("valid");
        assert!(private.contains(ip("172.31.255.1")));
        assert!(!private.contains(ip("172.32.0.1")));
        assert!(private.contains(ip("::ffff:172.16.0.9")));
        assert!("::1".parse::<Cidr>().expect("valid").contains(ip("::1")));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .expect("valid")
                .contains(ip("8.8.8.8"))
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_client() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let header = Some("203.0.113.7");
        assert_eq!(
            client_of(ip("10.0.0.2"), header, &trusted),
            ip("203.0.113.7")
        );
        // An untrusted peer cannot pretend to be someone else.
        assert_eq!(
            client_of(ip("198.51.100.1"), header, &trusted),
            ip("198.51.100.1")
        );
        // A client that forges the header gets only its own address appended by the proxy.
        let forged = Some("1.2.3.4, 203.0.113.7");
        assert_eq!(
            client_of(ip("10.0.0.2"), forged, &trusted),
            ip("203.0.113.7")
        );
        // No header: the proxy itself.
        assert_eq!(client_of(ip("10.0.0.2"), None, &trusted), ip("10.0.0.2"));
        // Nothing trusted: the peer, whatever the header says.
        assert_eq!(client_of(ip("10.0.0.2"), header, &[]), ip("10.0.0.2"));
    }
}
