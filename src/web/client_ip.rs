//! The client's IP address: the socket peer, or — only when the peer is a
//! configured trusted proxy — the address that proxy reports: the last
//! untrusted hop of `X-Forwarded-For` (which nginx and most proxies append
//! to), or `Forwarded: for=` only when there is no `X-Forwarded-For` (proxies
//! that do not write `Forwarded` pass a client's own one through).

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return Some(peer);
    }
    let header = |name: &str| {
        req.headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let xff: Vec<IpAddr> = header("x-forwarded-for")
        .iter()
        .filter_map(|s| parse_node(s))
        .collect();
    let hops = if xff.is_empty() {
        header("forwarded")
            .iter()
            .flat_map(|part| part.split(';'))
            .filter_map(|kv| kv.trim().strip_prefix("for="))
            .filter_map(parse_node)
            .collect()
    } else {
        xff
    };
    // Walk from the nearest hop back; the first one we do not trust is the client.
    Some(
        hops.iter()
            .rev()
            .find(|ip| !trusted.iter().any(|n| n.contains(*ip)))
            .copied()
            .or_else(|| hops.first().copied())
            .unwrap_or(peer),
    )
}

/// What per-client limits count by: an IPv4 address itself, an IPv6
/// address's /64 (one subscriber, one network). IPv4-mapped IPv6 addresses
/// count as their IPv4 address.
pub fn network_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

/// `1.2.3.4`, `"[2001:db8::1]:443"`, `1.2.3.4:5678`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(peer: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(peer.parse().unwrap());
        for (k, v) in headers {
            r = r.insert_header((*k, *v));
        }
        r.to_http_request()
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let key = |s: &str| network_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoof = [("x-forwarded-for", "6.6.6.6")];
        assert_eq!(
            client_ip(&req("1.2.3.4:1", &spoof), &trusted),
            "1.2.3.4".parse().ok()
        );
        let via_proxy = [("x-forwarded-for", "6.6.6.6, 5.6.7.8, 10.0.0.2")];
        assert_eq!(
            client_ip(&req("10.0.0.1:1", &via_proxy), &trusted),
            "5.6.7.8".parse().ok()
        );
        let fwd = [("forwarded", "for=\"[2001:db8::1]:443\";proto=https")];
        assert_eq!(
            client_ip(&req("10.0.0.1:1", &fwd), &trusted),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(
            client_ip(&req("10.0.0.1:1", &[]), &trusted),
            "10.0.0.1".parse().ok()
        );
    }
}
