//! Connection counts per IP address, for the limits that keep one address from taking what
//! every publisher shares (RTMP connections, HTTP connections still waiting for a request).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::ws::IpWhitelist;

/// Open connections per IP address.
#[derive(Debug, Default)]
pub(crate) struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Takes a slot of `ip`, unless it holds `limit` already (`limit` 0 = no limit; an
    /// address of `whitelist` is never refused). The slot is given back when dropped.
    pub fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        limit: usize,
        whitelist: &IpWhitelist,
    ) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let exempt = limit == 0 || whitelist.contains(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if !exempt && *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Slots held now, all addresses.
    pub fn total(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// One connection's share of its address's count.
#[derive(Debug)]
pub(crate) struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_its_limit_and_slots_come_back() {
        let per_ip = Arc::new(PerIp::default());
        let none = IpWhitelist::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = per_ip.take(a, 2, &none).expect("1st");
        let _second = per_ip.take(a, 2, &none).expect("2nd");
        assert!(per_ip.take(a, 2, &none).is_none(), "3rd refused");
        assert!(per_ip.take(b, 2, &none).is_some(), "another address");
        drop(first);
        assert!(per_ip.take(a, 2, &none).is_some(), "a slot came back");
        // An IPv4 peer seen on an IPv6 socket is the same address.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let _again = per_ip.take(a, 2, &none).expect("2 of 2");
        assert!(per_ip.take(mapped, 2, &none).is_none());
    }

    #[test]
    fn no_limit_and_whitelisted_addresses_are_never_refused() {
        let per_ip = Arc::new(PerIp::default());
        let a: IpAddr = "10.1.2.3".parse().expect("ip");
        let list: IpWhitelist = "10.0.0.0/8".parse().expect("list");
        let held: Vec<_> = (0..10)
            .map(|_| per_ip.take(a, 1, &list).expect("whitelisted"))
            .chain((0..10).map(|_| {
                per_ip
                    .take(a, 0, &IpWhitelist::default())
                    .expect("no limit")
            }))
            .collect();
        assert_eq!(per_ip.total(), 20);
        drop(held);
        assert_eq!(per_ip.total(), 0);
    }
}
