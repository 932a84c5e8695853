//! Budgets: what one client is counted as ([`client_key`]: an IPv4 address, or the IPv6 prefix
//! `server.limits.ipv6_prefix`), the caps one client may hold of the shared resources
//! ([`PerClient`]: requests in flight, open connections), so that one client cannot hold all of
//! them, and the set of them `[server.limits]` sizes ([`Budgets`]), which a reload replaces.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::config::Limits;

/// The limits in force and the budgets they size. A reload swaps in the next set
/// ([`Budgets::next`]); a request or connection keeps the set it was admitted under (and the
/// places it holds in it) until it ends.
pub(crate) struct Budgets {
    pub(crate) limits: Limits,
    /// Keyed by [`client_key`].
    pub(crate) limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) in_flight_per_client: Arc<PerClient>,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) connections_per_client: Arc<PerClient>,
}

impl Budgets {
    /// Fresh budgets for `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            limiter: Arc::new(limiter(&limits)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            in_flight_per_client: PerClient::new(limits.max_in_flight_per_client),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            connections_per_client: PerClient::new(limits.max_connections_per_client),
        }
    }

    /// The budgets for `limits` after a reload. A budget whose limit is unchanged is kept, with
    /// who holds what in it (a client's rate-limit state, the places taken), so that a reload
    /// that changes one limit resets nothing else. A changed cap starts empty: what was admitted
    /// under the old one finishes under it, so for as long as those last both count.
    pub(crate) fn next(&self, limits: Limits) -> Self {
        let old = &self.limits;
        let same_keys = old.ipv6_prefix == limits.ipv6_prefix;
        Self {
            limits,
            limiter: if same_keys
                && old.rate_per_second == limits.rate_per_second
                && old.rate_burst == limits.rate_burst
            {
                Arc::clone(&self.limiter)
            } else {
                Arc::new(limiter(&limits))
            },
            in_flight: if old.max_in_flight == limits.max_in_flight {
                Arc::clone(&self.in_flight)
            } else {
                Arc::new(Semaphore::new(limits.max_in_flight))
            },
            in_flight_per_client: if same_keys
                && old.max_in_flight_per_client == limits.max_in_flight_per_client
            {
                Arc::clone(&self.in_flight_per_client)
            } else {
                PerClient::new(limits.max_in_flight_per_client)
            },
            connections: if old.max_connections == limits.max_connections {
                Arc::clone(&self.connections)
            } else {
                Arc::new(Semaphore::new(limits.max_connections))
            },
            connections_per_client: if same_keys
                && old.max_connections_per_client == limits.max_connections_per_client
            {
                Arc::clone(&self.connections_per_client)
            } else {
                PerClient::new(limits.max_connections_per_client)
            },
        }
    }
}

/// The per-client rate limiter of `limits`.
fn limiter(limits: &Limits) -> DefaultKeyedRateLimiter<IpAddr> {
    let quota =
        Quota::per_second(NonZeroU32::new(limits.rate_per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(limits.rate_burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::keyed(quota)
}

/// What a client is counted as: an IPv4 address is itself; an IPv6 address is its first
/// `ipv6_prefix` bits (one host is routinely given a whole /64, so counting by full address
/// would make it millions of clients). IPv4-mapped IPv6 addresses count as IPv4.
pub(crate) fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let keep = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// How many of one resource each client holds, with a cap per client. A client's entry goes
/// when its count drops to zero, so the map holds only clients holding something.
#[derive(Debug)]
pub(crate) struct PerClient {
    cap: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl PerClient {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// One more for `key`, or `None` if it already holds the cap. Not queued, like the global
    /// caps.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: IpAddr) -> Option<ClientPermit> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientPermit {
            budget: Arc::clone(self),
            key,
        })
    }

    /// How many `key` holds now.
    #[cfg(test)]
    pub(crate) fn held(&self, key: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&key).copied().unwrap_or(0)
    }
}

/// One place of a client under its cap, given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientPermit {
    budget: Arc<PerClient>,
    key: IpAddr,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut held = self
            .budget
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_reload_keeps_the_budgets_whose_limits_did_not_change() {
        let limits = Limits::default();
        let first = Budgets::new(limits);
        let held = Arc::clone(&first.in_flight)
            .try_acquire_owned()
            .expect("a place");

        let mut more = limits;
        more.max_in_flight += 1;
        let next = first.next(more);
        assert!(!Arc::ptr_eq(&first.in_flight, &next.in_flight));
        assert_eq!(next.in_flight.available_permits(), more.max_in_flight);
        assert!(Arc::ptr_eq(&first.limiter, &next.limiter));
        assert!(Arc::ptr_eq(&first.connections, &next.connections));
        assert!(Arc::ptr_eq(
            &first.in_flight_per_client,
            &next.in_flight_per_client
        ));
        // The place taken before the reload is given back to the budget it came from.
        drop(held);
        assert_eq!(first.in_flight.available_permits(), limits.max_in_flight);

        let mut keyed = limits;
        keyed.ipv6_prefix = 56;
        let next = first.next(keyed);
        assert!(!Arc::ptr_eq(&first.limiter, &next.limiter));
        assert!(!Arc::ptr_eq(
            &first.connections_per_client,
            &next.connections_per_client
        ));
        assert!(Arc::ptr_eq(&first.in_flight, &next.in_flight));
    }

    #[test]
    fn ipv6_is_keyed_by_its_prefix_and_ipv4_by_its_address() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 64),
            client_key(ip("2001:db8:1:2:bbbb::2"), 64)
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1"), 64),
            client_key(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(client_key(ip("2001:db8:1:2::1"), 48), ip("2001:db8:1::"));
        assert_eq!(client_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_ne!(
            client_key(ip("192.0.2.1"), 64),
            client_key(ip("192.0.2.2"), 64)
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
    }

    #[test]
    fn a_client_holds_at_most_its_cap_and_gives_it_back() {
        let budget = PerClient::new(2);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let first = budget.try_acquire(a).unwrap();
        let _second = budget.try_acquire(a).unwrap();
        assert!(budget.try_acquire(a).is_none());
        let _other = budget
            .try_acquire(b)
            .expect("another client has its own cap");
        drop(first);
        assert_eq!(budget.held(a), 1);
        let _again = budget.try_acquire(a).unwrap();
        drop(_other);
        assert!(budget.held.lock().unwrap().get(&b).is_none());
    }
}
