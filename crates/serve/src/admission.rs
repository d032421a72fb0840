//! What the admission of requests counts and checks: the clients' requests in flight
//! ([`Clients`]), the body budget's unit ([`kib`]) and the `Host` check ([`host_allowed`]).
//! The middleware that applies them is `routes/admission.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// `bytes` in KiB permits, rounded up (semaphores count in `u32`s, and bodies up to 64 GiB
/// in flight fit in them as KiB).
pub fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// Requests in flight per client address.
#[derive(Debug, Default)]
pub struct Clients(Mutex<HashMap<IpAddr, usize>>);

impl Clients {
    /// Counts a request of `ip` unless it already has `max` in flight.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }

    /// Requests in flight of `ip`.
    pub fn in_flight(&self, ip: IpAddr) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip).copied().unwrap_or(0)
    }
}

/// One request of a client; counted out when dropped (the request finished or its client
/// left).
pub(crate) struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Whether `host` (a `Host` header: name or address, with an optional port) names this
/// machine's loopback, or one of `allowed`.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        let allowed = vec!["kiln.internal".to_string()];
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1",
            "127.0.0.1:9",
            "[::1]",
            "[::1]:8080",
            "kiln.internal:80",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1",
            "",
            "[::2]:80",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn a_client_share_is_counted_out_when_its_requests_end() {
        let clients = Arc::new(Clients::default());
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let a = clients.enter(ip, 2).unwrap();
        let b = clients.enter(ip, 2).unwrap();
        assert!(clients.enter(ip, 2).is_none());
        assert!(clients.enter("10.1.2.4".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(clients.in_flight(ip), 1);
        drop(b);
        assert_eq!(clients.in_flight(ip), 0);
        assert_eq!(kib(1), 1);
        assert_eq!(kib(2048), 2);
        assert_eq!(kib(0), 0);
    }
}
