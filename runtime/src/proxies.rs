//! Which client a request comes from when it passed through a load balancer. Only peers in the
//! trusted list (`ILO_TRUSTED_PROXIES` for ilo-api, `POTION_TRUSTED_PROXIES` for a relay) may
//! name the client in `X-Forwarded-For`; anyone else is the client. Per-address limits key on
//! this, so trusting too much lets a client move its limits onto someone else.

use std::net::IpAddr;
use std::str::FromStr;

pub use ipnet::IpNet;

/// One entry of a trusted-proxies list: an address or a block (`10.0.0.5`, `10.0.0.0/8`,
/// `::1`); an empty entry is ignored, so an empty setting trusts nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(pub Option<IpNet>);

impl FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self(None));
        }
        let net = match s.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => s
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("{s:?} is not an address or a block such as 10.0.0.0/8"))?,
        };
        Ok(Self(Some(net)))
    }
}

/// The blocks of a parsed list.
pub fn blocks(list: &[TrustedProxy]) -> Vec<IpNet> {
    list.iter().filter_map(|p| p.0).collect()
}

/// The client: walking `X-Forwarded-For` from the right (each proxy appends the peer it saw),
/// the first address not of a trusted proxy; the peer itself when it is not trusted.
pub fn client_of(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        trusted.iter().any(|net| net.contains(&ip))
    };
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

    fn trusted(list: &[&str]) -> Vec<IpNet> {
        let parsed: Vec<TrustedProxy> = list.iter().map(|c| c.parse().expect("valid")).collect();
        blocks(&parsed)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid")
    }

    #[test]
    fn entries_are_addresses_or_blocks() {
        assert_eq!(trusted(&["10.0.0.5", "", "172.16.0.0/12", "::1"]).len(), 3);
        assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
        assert!("nonsense".parse::<TrustedProxy>().is_err());
        // A v4-mapped v6 peer is its v4 address.
        let nets = trusted(&["172.16.0.0/12"]);
        assert_eq!(
            client_of(ip("::ffff:172.16.0.9"), Some("203.0.113.7"), &nets),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_client() {
        let trusted = trusted(&["10.0.0.0/8"]);
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
