//! Addresses as integers: the one representation the allocator and the store share.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address family. Part of every stored key, so IPv4 and IPv6 never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4 = 4,
    V6 = 6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            4 => Some(Family::V4),
            6 => Some(Family::V6),
            _ => None,
        }
    }

    /// The largest address value in this family.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }
}

/// An address as (family, value): ordered like the addresses themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpKey {
    pub family: Family,
    pub value: u128,
}

impl IpKey {
    pub fn new(family: Family, value: u128) -> Self {
        IpKey { family, value }
    }

    pub fn ip(self) -> IpAddr {
        match self.family {
            // The value of a V4 key never exceeds u32::MAX: keys are only made from addresses.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(self.value as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.value)),
        }
    }
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => IpKey::new(Family::V4, u32::from(v4) as u128),
            IpAddr::V6(v6) => IpKey::new(Family::V6, u128::from(v6)),
        }
    }
}

impl std::fmt::Display for IpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.ip().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_addresses_within_a_family() {
        let a = IpKey::from("10.0.0.9".parse::<IpAddr>().unwrap());
        let b = IpKey::from("10.0.0.10".parse::<IpAddr>().unwrap());
        assert!(a < b);
        assert_eq!(b.ip().to_string(), "10.0.0.10");
    }

    #[test]
    fn ipv4_and_ipv6_keys_never_collide() {
        let v4 = IpKey::from("0.0.0.1".parse::<IpAddr>().unwrap());
        let v6 = IpKey::from("::1".parse::<IpAddr>().unwrap());
        assert_eq!(v4.value, v6.value);
        assert_ne!(v4, v6);
    }
}
