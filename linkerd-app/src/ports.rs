//! Sets of TCP ports, as the proxy's variables write them.

/// A set of TCP ports, parsed from `25,587,3306` or ranges like `4000-4100`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet(Vec<(u16, u16)>);

impl PortSet {
    /// Parses a comma-separated list of ports and `low-high` ranges; empty means none.
    pub fn parse(v: &str) -> Result<Self, &'static str> {
        const EXPECTED: &str = "a comma-separated list of ports (1-65535) or ranges like 4000-4100";
        let port = |s: &str| match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(EXPECTED),
        };
        let mut ranges = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let range = match item.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(item)?, port(item)?),
            };
            if range.0 > range.1 {
                return Err(EXPECTED);
            }
            ranges.push(range);
        }
        Ok(Self(ranges))
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        let set = PortSet::parse("25, 4000-4100,6379").unwrap();
        for p in [25, 4000, 4050, 4100, 6379] {
            assert!(set.contains(p), "{p}");
        }
        for p in [24, 26, 3999, 4101, 80] {
            assert!(!set.contains(p), "{p}");
        }
        assert!(!PortSet::parse("").unwrap().contains(25), "empty is none");
        for bad in ["0", "65536", "10-5", "http", "1-"] {
            assert!(PortSet::parse(bad).is_err(), "{bad}");
        }
    }
}
