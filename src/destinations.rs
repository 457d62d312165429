//! Where the controller may send requests on a tier's behalf.
//!
//! A MemoryTier names URLs and a Redis address, and whoever may create one is not trusted beyond
//! their namespace: left alone, the controller would connect wherever a spec (or a Redis Cluster's
//! `CLUSTER NODES` answer) points, carrying credentials there and reporting what it found. So each
//! kind of request ([`Purpose`]: metrics, warming, webhooks, Redis) has an allow-list of address
//! ranges and host names, set in the controller's own configuration; everything else is refused
//! before a connection is made.
//!
//! - A host name matched by a name entry (`hooks.slack.com`, `*.svc.cluster.local`) may be reached
//!   at whatever address it resolves to.
//! - Any other host is reached only at the addresses it resolves to that lie in an address entry
//!   (`10.0.0.0/8`); an address literal in a URL must lie in one.
//! - Link-local addresses (where cloud metadata services answer), the metadata addresses outside
//!   that range, and unspecified addresses are never reached, whatever the lists say.
//!
//! The HTTP clients of [`Network`] resolve names through the allow-list, so a name that resolves
//! somewhere else at request time than it did when it was checked is still refused, and they
//! never follow a redirect. Redis connections are resolved and checked here and made to the
//! checked address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// What a request is for; each kind has its own allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Prometheus queries, /metrics scrapes and PostgreSQL signal queries.
    Metrics,
    /// The application's cache-warming endpoint.
    Warming,
    /// Notification webhooks (Slack, PagerDuty, generic).
    Webhooks,
    /// Redis, and every node of a Redis Cluster.
    Redis,
    /// The breaker probe's calls to the dependency behind the breaker (the mem0 API).
    Probe,
}

impl Purpose {
    pub const ALL: [Purpose; 5] = [
        Purpose::Metrics,
        Purpose::Warming,
        Purpose::Webhooks,
        Purpose::Redis,
        Purpose::Probe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Metrics => "metrics",
            Purpose::Warming => "warming",
            Purpose::Webhooks => "webhooks",
            Purpose::Redis => "redis",
            Purpose::Probe => "probe",
        }
    }

    /// The `tierguard run` flag that sets this kind's allow-list.
    pub fn flag(self) -> &'static str {
        match self {
            Purpose::Metrics => "--metrics-destinations",
            Purpose::Warming => "--warming-destinations",
            Purpose::Webhooks => "--webhook-destinations",
            Purpose::Redis => "--redis-destinations",
            Purpose::Probe => "--probe-destinations",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The private address ranges (RFC 1918 and RFC 4193), where a cluster's Services and Pods live:
/// the default reach of every kind of request.
pub const PRIVATE_RANGES: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// The notification services' hosts, allowed for webhooks by default besides the private ranges.
pub const NOTIFICATION_HOSTS: [&str; 3] = [
    "hooks.slack.com",
    "events.pagerduty.com",
    "events.eu.pagerduty.com",
];

/// The mem0 API's host, allowed for the breaker probe by default besides the private ranges.
pub const PROBE_HOSTS: [&str; 1] = ["api.mem0.ai"];

/// Most entries of one allow-list shown in a refusal.
const SHOWN_ENTRIES: usize = 6;

/// One entry of an allow-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// An address range (a single address is a /32 or /128).
    Network(IpNet),
    /// One host name, compared without case and without a trailing dot.
    Host(String),
    /// Every name under a domain, written `*.example.com` (kept as `.example.com`): `a.example.com`
    /// and `a.b.example.com`, not `example.com` itself.
    Domain(String),
}

impl FromStr for Allowed {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty destination".into());
        }
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Allowed::Network(net.trunc()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Allowed::Network(IpNet::from(ip)));
        }
        let name = normalize_host(text);
        let (domain, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if rest.is_empty() || rest.len() > 253 || !rest.split('.').all(label_ok) {
            return Err(format!(
                "{text:?} is neither an address range (10.0.0.0/8), an address, a host name \
                 (hooks.slack.com) nor a domain (*.svc.cluster.local)"
            ));
        }
        Ok(if domain {
            Allowed::Domain(format!(".{rest}"))
        } else {
            Allowed::Host(rest.to_owned())
        })
    }
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowed::Network(net) => write!(f, "{net}"),
            Allowed::Host(host) => f.write_str(host),
            Allowed::Domain(suffix) => write!(f, "*{suffix}"),
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Addresses never reached, whatever an allow-list says: link-local (169.254.0.0/16, fe80::/10,
/// where cloud metadata services answer), the metadata addresses outside it (AWS's fd00:ec2::254,
/// Alibaba's 100.100.100.200), and the unspecified addresses (0.0.0.0/8, ::), which reach the
/// local host.
pub fn never_reached(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                Some("a link-local address, where cloud metadata services answer")
            } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Some("a cloud metadata address")
            } else if v4.octets()[0] == 0 {
                Some("an unspecified address, which reaches the controller's own host")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address, where cloud metadata services answer")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("a cloud metadata address")
            } else if v6.is_unspecified() {
                Some("an unspecified address, which reaches the controller's own host")
            } else {
                None
            }
        }
    }
}

/// Whether `ip` is the controller's own host. A listed name admits what it resolves to, but not
/// loopback: a name under a listed domain may be one a tenant points anywhere (an ExternalName
/// Service under `*.svc.cluster.local`, say), and the controller's own ports are no tier's
/// destination. Only a listed range reaches loopback.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Why a destination is refused. Decided before any connection, so it says nothing about what
/// answers there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{host} is not an allowed {purpose} destination (allowed: {allowed}; the controller's {flag} sets them)",
        flag = purpose.flag()
    )]
    NotAllowed {
        purpose: Purpose,
        host: String,
        allowed: String,
    },
    #[error(
        "{host} resolves to {addresses}, none of them an allowed {purpose} destination (allowed: {allowed}; the controller's {flag} sets them)",
        flag = purpose.flag()
    )]
    ResolvesElsewhere {
        purpose: Purpose,
        host: String,
        addresses: String,
        allowed: String,
    },
    #[error("{host} is {why}: tierguard never connects there")]
    NeverReached { host: String, why: &'static str },
    #[error("{what}: tierguard reaches Redis over TCP only")]
    NotNetwork { what: String },
    #[error("{0}")]
    Malformed(String),
}

/// The allow-list of one kind of request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    purpose: Purpose,
    /// Shared: every tier's observer holds the controller's lists.
    entries: std::sync::Arc<[Allowed]>,
    /// Unix sockets (of the host running tierguard) are reached too: only the command line tools.
    local_sockets: bool,
}

impl AllowList {
    pub fn new(purpose: Purpose, entries: Vec<Allowed>) -> Self {
        AllowList {
            purpose,
            entries: entries.into(),
            local_sockets: false,
        }
    }

    /// Entries parsed from text (flags, chart values).
    pub fn parse<S: AsRef<str>>(purpose: Purpose, entries: &[S]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|e| {
                e.as_ref()
                    .parse::<Allowed>()
                    .map_err(|why| format!("{}: {why}", purpose.flag()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowList::new(purpose, entries))
    }

    /// The default of `purpose`: the private ranges, and for webhooks the notification services.
    pub fn default_for(purpose: Purpose) -> Self {
        let mut entries: Vec<&str> = PRIVATE_RANGES.to_vec();
        if purpose == Purpose::Webhooks {
            entries.extend(NOTIFICATION_HOSTS);
        }
        if purpose == Purpose::Probe {
            entries.extend(PROBE_HOSTS);
        }
        AllowList::parse(purpose, &entries).expect("the defaults parse")
    }

    /// Every address (the never-reached ones aside): what the command line tools use, run by
    /// someone with their own credentials.
    pub fn any(purpose: Purpose) -> Self {
        AllowList {
            local_sockets: true,
            ..AllowList::parse(purpose, &["0.0.0.0/0", "::/0"]).expect("parses")
        }
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    pub fn entries(&self) -> &[Allowed] {
        &self.entries
    }

    fn shown(&self) -> String {
        if self.entries.is_empty() {
            return "nothing".to_owned();
        }
        let mut shown: Vec<String> = self
            .entries
            .iter()
            .take(SHOWN_ENTRIES)
            .map(ToString::to_string)
            .collect();
        if self.entries.len() > SHOWN_ENTRIES {
            shown.push(format!("{} more", self.entries.len() - SHOWN_ENTRIES));
        }
        shown.join(", ")
    }

    /// Whether a name entry matches `host`.
    pub fn names(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.entries.iter().any(|e| match e {
            Allowed::Host(h) => *h == host,
            Allowed::Domain(suffix) => host.ends_with(suffix.as_str()),
            Allowed::Network(_) => false,
        })
    }

    /// Whether an address entry holds `ip` (and it is not a never-reached address).
    pub fn holds(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        never_reached(ip).is_none()
            && self.entries.iter().any(|e| match e {
                Allowed::Network(net) => net.contains(&ip),
                _ => false,
            })
    }

    /// Whether `host` (a name, or an address literal) may be reached before it is resolved:
    /// `Ok(true)` when it is decided (an allowed literal, or a name entry), `Ok(false)` when the
    /// addresses it resolves to decide.
    pub fn check_host(&self, host: &str) -> Result<bool, Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if let Some(why) = never_reached(ip) {
                return Err(Refused::NeverReached {
                    host: host.to_owned(),
                    why,
                });
            }
            return if self.holds(ip) {
                Ok(true)
            } else {
                Err(self.not_allowed(host))
            };
        }
        if self.names(host) {
            return Ok(true);
        }
        if self
            .entries
            .iter()
            .any(|e| matches!(e, Allowed::Network(_)))
        {
            Ok(false)
        } else {
            Err(self.not_allowed(host))
        }
    }

    fn not_allowed(&self, host: &str) -> Refused {
        Refused::NotAllowed {
            purpose: self.purpose,
            host: host.to_owned(),
            allowed: self.shown(),
        }
    }

    /// Of the addresses `host` resolved to, those it may be reached at; refused when none.
    pub fn admit(
        &self,
        host: &str,
        resolved: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let resolved: Vec<SocketAddr> = resolved.into_iter().collect();
        let named = self.names(host);
        let admitted: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| {
                if named {
                    never_reached(a.ip()).is_none() && (!is_loopback(a.ip()) || self.holds(a.ip()))
                } else {
                    self.holds(a.ip())
                }
            })
            .collect();
        if !admitted.is_empty() {
            return Ok(admitted);
        }
        if let Some(why) = resolved.iter().find_map(|a| never_reached(a.ip())) {
            return Err(Refused::NeverReached {
                host: host.to_owned(),
                why,
            });
        }
        let mut addresses: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
        addresses.sort();
        addresses.dedup();
        addresses.truncate(SHOWN_ENTRIES);
        Err(Refused::ResolvesElsewhere {
            purpose: self.purpose,
            host: host.to_owned(),
            addresses: if addresses.is_empty() {
                "no address".to_owned()
            } else {
                addresses.join(", ")
            },
            allowed: self.shown(),
        })
    }

    fn unix_socket(&self) -> Result<(), Refused> {
        if self.local_sockets {
            Ok(())
        } else {
            Err(Refused::NotNetwork {
                what: "a Unix socket is not a network destination".into(),
            })
        }
    }

    /// A Redis connection made within the list: the TCP address resolved here, checked, and
    /// replaced by the address checked. Over TLS the host name stays, since the certificate is
    /// checked against it (the Redis client resolves it once more when it connects).
    pub async fn redis_connection(
        &self,
        info: redis::ConnectionInfo,
    ) -> Result<redis::ConnectionInfo, ResolveError> {
        let (host, port) = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            _ => {
                self.unix_socket().map_err(ResolveError::Refused)?;
                return Ok(info);
            }
        };
        let admitted = self.resolve(&host, port).await?;
        let checked = admitted
            .first()
            .copied()
            .ok_or_else(|| ResolveError::Lookup(format!("{host} has no address")))?;
        let addr = match info.addr().clone() {
            redis::ConnectionAddr::Tcp(..) => {
                redis::ConnectionAddr::Tcp(checked.ip().to_string(), port)
            }
            tls => tls,
        };
        Ok(info.set_addr(addr))
    }

    /// Resolve `host` and keep the addresses it may be reached at. A name that does not resolve
    /// is not refused here: the connection fails on its own and says so.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_host(host).map_err(ResolveError::Refused)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| {
                ResolveError::Lookup(format!("resolving {host} took over {RESOLVE_TIMEOUT:?}"))
            })?
            .map_err(|e| ResolveError::Lookup(format!("resolving {host}: {e}")))?;
        self.admit(host, found).map_err(ResolveError::Refused)
    }

    /// Check a URL (http, https, redis, rediss, postgres, unix) the way a request to it would be.
    pub async fn check_url(&self, url: &str) -> Result<(), Refused> {
        let target = Target::of(url)?;
        let Some((host, port)) = target.host_port else {
            return self.unix_socket();
        };
        if self.check_host(&host)? {
            return Ok(());
        }
        match self.resolve(&host, port).await {
            Ok(_) | Err(ResolveError::Lookup(_)) => Ok(()),
            Err(ResolveError::Refused(r)) => Err(r),
        }
    }
}

/// How long resolving a name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a name gave no address to connect to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Refused(Refused),
    #[error("{0}")]
    Lookup(String),
}

/// The host and port a URL connects to (none for a Unix socket).
struct Target {
    host_port: Option<(String, u16)>,
}

impl Target {
    fn of(text: &str) -> Result<Target, Refused> {
        let url =
            url::Url::parse(text).map_err(|e| Refused::Malformed(format!("not a URL: {e}")))?;
        let default_port = match url.scheme() {
            "http" => 80,
            "https" => 443,
            "redis" | "rediss" | "valkey" | "valkeys" => 6379,
            "postgres" | "postgresql" => crate::observe::postgres::DEFAULT_PORT,
            "unix" | "redis+unix" | "valkey+unix" => return Ok(Target { host_port: None }),
            other => {
                return Err(Refused::Malformed(format!(
                    "the scheme {other:?} is not one tierguard connects with"
                )));
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(Refused::Malformed("the URL has no host".into())),
        };
        Ok(Target {
            host_port: Some((host, url.port().unwrap_or(default_port))),
        })
    }
}

/// Every kind's allow-list: the controller's reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destinations {
    pub metrics: AllowList,
    pub warming: AllowList,
    pub webhooks: AllowList,
    pub redis: AllowList,
    pub probe: AllowList,
}

impl Default for Destinations {
    /// The controller's defaults: in-cluster (private) addresses, and the notification services
    /// for webhooks.
    fn default() -> Self {
        Destinations {
            metrics: AllowList::default_for(Purpose::Metrics),
            warming: AllowList::default_for(Purpose::Warming),
            webhooks: AllowList::default_for(Purpose::Webhooks),
            redis: AllowList::default_for(Purpose::Redis),
            probe: AllowList::default_for(Purpose::Probe),
        }
    }
}

impl Destinations {
    /// Every address (the never-reached ones aside), for the command line tools.
    pub fn any() -> Self {
        Destinations {
            metrics: AllowList::any(Purpose::Metrics),
            warming: AllowList::any(Purpose::Warming),
            webhooks: AllowList::any(Purpose::Webhooks),
            redis: AllowList::any(Purpose::Redis),
            probe: AllowList::any(Purpose::Probe),
        }
    }

    /// The same entries for every kind (tests, and installs that want one list).
    pub fn everywhere<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        Ok(Destinations {
            metrics: AllowList::parse(Purpose::Metrics, entries)?,
            warming: AllowList::parse(Purpose::Warming, entries)?,
            webhooks: AllowList::parse(Purpose::Webhooks, entries)?,
            redis: AllowList::parse(Purpose::Redis, entries)?,
            probe: AllowList::parse(Purpose::Probe, entries)?,
        })
    }

    pub fn get(&self, purpose: Purpose) -> &AllowList {
        match purpose {
            Purpose::Metrics => &self.metrics,
            Purpose::Warming => &self.warming,
            Purpose::Webhooks => &self.webhooks,
            Purpose::Redis => &self.redis,
            Purpose::Probe => &self.probe,
        }
    }

    pub fn set(&mut self, list: AllowList) {
        match list.purpose {
            Purpose::Metrics => self.metrics = list,
            Purpose::Warming => self.warming = list,
            Purpose::Webhooks => self.webhooks = list,
            Purpose::Redis => self.redis = list,
            Purpose::Probe => self.probe = list,
        }
    }
}

/// How a redirect answer is reported: tierguard follows none (one could carry a token or the
/// request itself somewhere unchecked), and where it pointed is not repeated.
pub fn redirect_not_followed(status: reqwest::StatusCode) -> Option<String> {
    status.is_redirection().then(|| {
        format!(
            "HTTP {status}: a redirect, which tierguard does not follow; give the URL it leads to instead"
        )
    })
}

/// A DNS resolver that gives reqwest only the addresses an allow-list admits, so the address
/// connected to is the one checked.
struct Guarded(AllowList);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let list = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let admitted = list.resolve(&host, 0).await?;
            Ok(Box::new(admitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The controller's HTTP clients, one per kind of request, each resolving names through its
/// allow-list and following no redirect. A proxy from the environment (`HTTPS_PROXY`) is used, and
/// must itself be an allowed address; the names it then resolves are checked only when the
/// tier's URLs are (before the requests).
#[derive(Clone, Debug)]
pub struct Network {
    pub destinations: Arc<Destinations>,
    pub metrics: reqwest::Client,
    pub warming: reqwest::Client,
    pub webhooks: reqwest::Client,
    pub probe: reqwest::Client,
}

impl Network {
    pub fn new(destinations: Destinations) -> Result<Self, reqwest::Error> {
        crate::install_crypto_provider();
        let client = |purpose: Purpose| {
            reqwest::Client::builder()
                .user_agent(concat!("tierguard/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(5))
                // A redirect could carry a token, or the request itself, somewhere unchecked.
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(Guarded(destinations.get(purpose).clone())))
                .build()
        };
        Ok(Network {
            metrics: client(Purpose::Metrics)?,
            warming: client(Purpose::Warming)?,
            webhooks: client(Purpose::Webhooks)?,
            probe: client(Purpose::Probe)?,
            destinations: Arc::new(destinations),
        })
    }

    /// Every address reachable (the never-reached ones aside): the command line tools.
    pub fn any() -> Result<Self, reqwest::Error> {
        Network::new(Destinations::any())
    }
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Guarded").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(purpose: Purpose, entries: &[&str]) -> AllowList {
        AllowList::parse(purpose, entries).unwrap()
    }

    fn sock(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 80)
    }

    #[test]
    fn entries_parse_and_print() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("fc00::/7", "fc00::/7"),
            ("Hooks.Slack.com.", "hooks.slack.com"),
            ("*.svc.cluster.local", "*.svc.cluster.local"),
        ] {
            assert_eq!(text.parse::<Allowed>().unwrap().to_string(), shown);
        }
        for bad in ["", "*", "*.", "a..b", "exa mple.com", "-a.com", "http://x"] {
            assert!(bad.parse::<Allowed>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_ranges_decide() {
        let l = list(
            Purpose::Webhooks,
            &["10.0.0.0/8", "hooks.slack.com", "*.svc"],
        );
        assert_eq!(l.check_host("hooks.slack.com"), Ok(true));
        assert_eq!(l.check_host("HOOKS.slack.com."), Ok(true));
        assert_eq!(l.check_host("alerts.monitoring.svc"), Ok(true));
        assert!(!l.names("svc"));
        assert!(!l.names("evilhooks.slack.com"));
        assert_eq!(l.check_host("10.2.3.4"), Ok(true));
        assert_eq!(l.check_host("evil.example.com"), Ok(false));
        assert!(matches!(
            l.check_host("203.0.113.9"),
            Err(Refused::NotAllowed { .. })
        ));
        // A name that resolves into the ranges passes; one that does not is refused.
        assert_eq!(
            l.admit("relay.example", [sock("10.9.9.9"), sock("203.0.113.1")]),
            Ok(vec![sock("10.9.9.9")])
        );
        let e = l.admit("evil.example", [sock("203.0.113.1")]).unwrap_err();
        assert!(e.to_string().contains("resolves to 203.0.113.1"), "{e}");
        assert!(e.to_string().contains("--webhook-destinations"), "{e}");
        // A named host may be anywhere, but never at a metadata address.
        assert_eq!(
            l.admit("hooks.slack.com", [sock("203.0.113.1")]),
            Ok(vec![sock("203.0.113.1")])
        );
        assert!(matches!(
            l.admit("hooks.slack.com", [sock("169.254.169.254")]),
            Err(Refused::NeverReached { .. })
        ));
        // A name under a listed domain that a tenant points at the controller's own host (an
        // ExternalName Service, say) is refused; loopback is reached only through a listed range.
        let domain = list(Purpose::Metrics, &["*.svc.cluster.local"]);
        for own in ["127.0.0.1", "::1", "::ffff:127.0.0.2"] {
            assert!(
                matches!(
                    domain.admit("evil.tenant.svc.cluster.local", [sock(own)]),
                    Err(Refused::ResolvesElsewhere { .. })
                ),
                "{own}"
            );
        }
        let with_range = list(Purpose::Metrics, &["*.svc.cluster.local", "127.0.0.1/32"]);
        assert_eq!(
            with_range.admit("a.b.svc.cluster.local", [sock("127.0.0.1")]),
            Ok(vec![sock("127.0.0.1")])
        );
        let names_only = list(Purpose::Webhooks, &["hooks.slack.com"]);
        assert!(names_only.check_host("evil.example").is_err());
    }

    #[test]
    fn link_local_and_metadata_are_never_reached() {
        let any = AllowList::any(Purpose::Metrics);
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "fe80::1",
            "fd00:ec2::254",
            "::",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!any.holds(ip), "{ip}");
            assert!(
                matches!(
                    any.check_host(&ip.to_string()),
                    Err(Refused::NeverReached { .. })
                ),
                "{ip}"
            );
        }
        let all = list(Purpose::Redis, &["169.254.0.0/16", "0.0.0.0/0"]);
        assert!(!all.holds("169.254.169.254".parse().unwrap()));
        assert!(all.holds("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn defaults_are_the_private_ranges_and_the_notification_hosts() {
        let d = Destinations::default();
        for purpose in Purpose::ALL {
            let l = d.get(purpose);
            assert!(l.holds("10.96.0.10".parse().unwrap()));
            assert!(l.holds("192.168.1.5".parse().unwrap()));
            assert!(!l.holds("127.0.0.1".parse().unwrap()), "no loopback");
            assert!(!l.holds("8.8.8.8".parse().unwrap()));
            assert_eq!(l.names("hooks.slack.com"), purpose == Purpose::Webhooks);
            assert_eq!(l.names("api.mem0.ai"), purpose == Purpose::Probe);
        }
    }

    #[tokio::test]
    async fn urls_are_checked_as_requests_would_be() {
        let l = list(Purpose::Redis, &["127.0.0.1/32"]);
        assert_eq!(l.check_url("redis://:pw@127.0.0.1:6379/0").await, Ok(()));
        assert!(l.check_url("redis://127.0.0.2:6379").await.is_err());
        assert!(matches!(
            l.check_url("redis+unix:///tmp/redis.sock").await,
            Err(Refused::NotNetwork { .. })
        ));
        assert!(l.check_url("http://[fe80::1]:80/").await.is_err());
        // localhost resolves to loopback, which this list holds only at 127.0.0.1.
        assert!(l.check_url("http://localhost:9/").await.is_ok());
        let none = list(Purpose::Metrics, &["10.0.0.0/8"]);
        let e = none.check_url("http://localhost:9/").await.unwrap_err();
        assert!(e.to_string().contains("localhost resolves to"), "{e}");
    }
}
