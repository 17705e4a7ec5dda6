//! HTTP clients for configured destinations, with outbound safety ([`netanom_schemas::outbound`]): a URL whose
//! host is a restricted address (loopback, private, link-local, cloud metadata, …, in any spelling) is refused
//! when the configuration is loaded ([`check_url`]), and the client's DNS resolver ([`CheckingResolver`]) refuses
//! a host name any of whose addresses is restricted. The resolver runs once for every new connection and the
//! connection goes to the addresses it checked, so what was checked is what is connected to (no second lookup a
//! rebinding DNS server could answer differently). Redirects are not followed and proxies from the environment
//! are not used (a proxy would resolve the name itself, out of reach of the check). A destination whose
//! configuration allows private addresses (`allow_private = true`) skips both checks.
//!
//! The schema registry client builds its client with [`client_builder`] and checks its URL with [`check_url`]
//! the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use netanom_schemas::outbound::{Refused, check_addr, check_host};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a connection was not attempted.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name resolves to a restricted address.
    #[error("{0}: refused (set allow_private = true for this destination to allow it)")]
    Refused(Refused),
    /// The name did not resolve.
    #[error("resolving {host}: {source}")]
    Lookup {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name resolved to no address.
    #[error("resolving {0}: no address")]
    NoAddress(String),
}

/// A DNS resolver that refuses names resolving to restricted addresses (unless `allow_private`).
#[derive(Debug, Clone, Copy)]
pub struct CheckingResolver {
    /// Let names resolve to restricted addresses.
    pub allow_private: bool,
}

impl CheckingResolver {
    /// The addresses of `host`, all checked; refused when any is restricted (a name that mixes public and
    /// internal addresses is refused whole).
    pub async fn lookup(self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|source| ResolveError::Lookup { host: host.to_string(), source })?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::NoAddress(host.to_string()));
        }
        for a in &addrs {
            check_addr(host, a.ip(), self.allow_private).map_err(ResolveError::Refused)?;
        }
        Ok(addrs)
    }
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = *self;
        Box::pin(async move {
            let addrs = resolver.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A client builder for one destination: checking resolver, no redirects, no proxy.
pub fn client_builder(allow_private: bool) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckingResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// Refuses `url` when its host is a restricted address, unless `allow_private`. The URL parser has already
/// normalized the legacy IPv4 spellings (`http://2130706433/` has host `127.0.0.1`); a host name passes here and
/// is checked by [`CheckingResolver`] on every connection.
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), Refused> {
    url.host_str().map_or(Ok(()), |host| check_host(host, allow_private))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_naming_internal_addresses_in_any_spelling_are_refused() {
        let table = [
            ("http://127.0.0.1:8080/hook", "127.0.0.1"),
            ("http://2130706433/", "127.0.0.1"),
            ("http://0177.0.0.1/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
            ("http://[::1]:9/", "::1"),
            ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
            ("http://0251.0376.0251.0376/", "169.254.169.254"),
            ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
            ("https://10.1.2.3/x", "10.1.2.3"),
            ("http://100.64.0.1/", "100.64.0.1"),
            ("http://0.0.0.0/", "0.0.0.0"),
            ("http://224.0.0.1/", "224.0.0.1"),
            ("http://user:pw@192.168.0.1/", "192.168.0.1"),
        ];
        for (url, ip) in table {
            let parsed = reqwest::Url::parse(url).unwrap();
            let e = check_url(&parsed, false).unwrap_err();
            assert_eq!(e.ip, ip.parse::<std::net::IpAddr>().unwrap(), "{url}");
            assert!(check_url(&parsed, true).is_ok(), "{url}");
        }
        for url in ["https://hooks.example/netanom", "http://93.184.215.14/", "http://localhost:9/"] {
            assert!(check_url(&reqwest::Url::parse(url).unwrap(), false).is_ok(), "{url}: left to the resolver");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused_at_lookup() {
        let strict = CheckingResolver { allow_private: false };
        // The system resolver reads these as loopback (a name, and inet_aton's legacy spelling).
        for name in ["localhost", "0x7f.1", "2130706433"] {
            match strict.lookup(name).await {
                Err(ResolveError::Refused(r)) => assert!(r.ip.is_loopback(), "{name}: {r}"),
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
        }
        let e = strict.lookup("localhost").await.unwrap_err().to_string();
        assert!(e.contains("loopback") && e.contains("allow_private"), "{e}");
        let open = CheckingResolver { allow_private: true };
        assert!(open.lookup("localhost").await.unwrap().iter().all(|a| a.ip().is_loopback()));
    }
}
