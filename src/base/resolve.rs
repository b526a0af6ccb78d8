//! Name resolution shared by the probes: IP literals never touch a resolver, names go through
//! the system resolver (so `/etc/hosts` and the operator's resolv.conf apply), and the `ip:`
//! option picks the address family. A failure here is reason `dns`.

use std::net::{IpAddr, SocketAddr};

use crate::base::outcome::{Failure, Reason};
use crate::base::values::IpPreference;

/// Resolves `host` to socket addresses with `port`, ordered by preference, never empty.
pub async fn resolve(
    host: &str,
    port: u16,
    pref: IpPreference,
) -> Result<Vec<SocketAddr>, Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return filter(vec![SocketAddr::new(ip, port)], host, pref);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| Failure::new(Reason::Dns, format!("cannot resolve {host}: {e}")))?
        .collect();
    filter(addrs, host, pref)
}

fn filter(
    mut addrs: Vec<SocketAddr>,
    host: &str,
    pref: IpPreference,
) -> Result<Vec<SocketAddr>, Failure> {
    match pref {
        IpPreference::Auto => addrs.sort_by_key(|a| a.is_ipv6()),
        IpPreference::Ipv4 => addrs.retain(SocketAddr::is_ipv4),
        IpPreference::Ipv6 => addrs.retain(SocketAddr::is_ipv6),
    }
    if addrs.is_empty() {
        let family = match pref {
            IpPreference::Ipv4 => " IPv4",
            IpPreference::Ipv6 => " IPv6",
            IpPreference::Auto => "",
        };
        return Err(Failure::new(
            Reason::Dns,
            format!("{host} has no{family} address"),
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_skip_the_resolver_and_respect_the_family() {
        let a = resolve("127.0.0.1", 80, IpPreference::Auto).await.unwrap();
        assert_eq!(a, vec!["127.0.0.1:80".parse().unwrap()]);
        let a = resolve("[::1]", 80, IpPreference::Auto).await.unwrap();
        assert_eq!(a, vec!["[::1]:80".parse().unwrap()]);
        let e = resolve("127.0.0.1", 80, IpPreference::Ipv6)
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Dns);
        assert!(e.message.contains("no IPv6 address"), "{}", e.message);
    }

    #[tokio::test]
    async fn unknown_names_fail_with_reason_dns() {
        let e = resolve("no-such-host.invalid", 80, IpPreference::Auto)
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Dns);
    }
}
