//! Port lists as proxy-init takes them: `4190,4191,4567-4568`, each entry a port or a range.

use std::fmt;

/// One port, or an inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRange {
    /// One port.
    Port(u16),
    /// `from-to`, inclusive, `from < to`.
    Range(u16, u16),
}

impl PortRange {
    /// Parses `4140`, or `4000-4010` (a range whose ends are equal is one port).
    pub fn parse(s: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{s:?} is not a port or a port range")),
                Ok(p) => Ok(p),
            }
        };
        match s.split_once('-') {
            None => Ok(Self::Port(port(s)?)),
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                match a.cmp(&b) {
                    std::cmp::Ordering::Less => Ok(Self::Range(a, b)),
                    std::cmp::Ordering::Equal => Ok(Self::Port(a)),
                    std::cmp::Ordering::Greater => {
                        Err(format!("{s:?}: the range's start is above its end"))
                    }
                }
            }
        }
    }

    /// The slots this entry takes in one `multiport` match (a range takes two).
    fn slots(&self) -> usize {
        match self {
            Self::Port(_) => 1,
            Self::Range(..) => 2,
        }
    }
}

/// As iptables writes it: `4140`, or `4000:4010`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port(p) => write!(f, "{p}"),
            Self::Range(a, b) => write!(f, "{a}:{b}"),
        }
    }
}

/// Parses every entry of `list` (already split on commas; entries may hold more commas and
/// blanks); an invalid entry is returned in the second list, to be logged and skipped, as
/// upstream does.
pub fn parse_list<S: AsRef<str>>(list: &[S]) -> (Vec<PortRange>, Vec<String>) {
    let mut ports = Vec::new();
    let mut invalid = Vec::new();
    for entry in list
        .iter()
        .flat_map(|s| s.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match PortRange::parse(entry) {
            Ok(p) => ports.push(p),
            Err(e) => invalid.push(e),
        }
    }
    (ports, invalid)
}

/// The most slots one `-m multiport --dports` match takes.
pub const MULTIPORT_SLOTS: usize = 15;

/// Splits `ports` into `multiport` lists of at most [`MULTIPORT_SLOTS`] slots each, in order,
/// each rendered as iptables takes it (`4190,4191,4567:4568`).
pub fn multiport_chunks(ports: &[PortRange]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut used = 0;
    for p in ports {
        if used + p.slots() > MULTIPORT_SLOTS {
            chunks.push(current.join(","));
            current.clear();
            used = 0;
        }
        used += p.slots();
        current.push(p.to_string());
    }
    if !current.is_empty() {
        chunks.push(current.join(","));
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        assert_eq!(PortRange::parse("4143"), Ok(PortRange::Port(4143)));
        assert_eq!(
            PortRange::parse("4567-4568"),
            Ok(PortRange::Range(4567, 4568))
        );
        assert_eq!(PortRange::parse("80-80"), Ok(PortRange::Port(80)));
        for bad in ["0", "65536", "x", "10-5", "1-", "-1", ""] {
            assert!(PortRange::parse(bad).is_err(), "{bad:?}");
        }
        let (ok, bad) = parse_list(&["4190,4191", " 4567-4568 ", "nope", ""]);
        assert_eq!(
            ok,
            [
                PortRange::Port(4190),
                PortRange::Port(4191),
                PortRange::Range(4567, 4568)
            ]
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].contains("\"nope\""), "{bad:?}");
    }

    #[test]
    fn multiport_holds_fifteen_slots() {
        let (ports, _) = parse_list(&["4190,4191,4567,4568"]);
        assert_eq!(multiport_chunks(&ports), ["4190,4191,4567,4568"]);
        let many: Vec<String> = (1..=16).map(|p| p.to_string()).collect();
        let (ports, _) = parse_list(&many);
        assert_eq!(
            multiport_chunks(&ports),
            ["1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "16"]
        );
        // Seven ranges (14 slots) and a port fill one rule; another range starts the next.
        let (ports, _) = parse_list(&["1-2,3-4,5-6,7-8,9-10,11-12,13-14,15,16-17"]);
        assert_eq!(
            multiport_chunks(&ports),
            ["1:2,3:4,5:6,7:8,9:10,11:12,13:14,15", "16:17"]
        );
        assert!(multiport_chunks(&[]).is_empty());
    }
}
