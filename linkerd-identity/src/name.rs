//! Identity names.

use crate::Error;
use std::{fmt, sync::Arc};

/// An identity: a DNS-like name such as
/// `web.default.serviceaccount.identity.linkerd.cluster.local`, held lower-case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(Arc<str>);

impl Id {
    /// Validates a DNS-like name (labels of letters, digits and '-', 1-63 bytes each, 253 in
    /// all); it is lower-cased, as certificate names compare case-insensitively.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidName {
            name: name.to_string(),
            reason,
        };
        let n = name.strip_suffix('.').unwrap_or(name);
        if n.is_empty() || n.len() > 253 {
            return Err(invalid("must be 1 to 253 characters"));
        }
        for label in n.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid("each label must be 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(invalid("only letters, digits, '-' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label may not start or end with '-'"));
            }
        }
        Ok(Self(n.to_ascii_lowercase().into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dns_like_names() {
        let id = Id::parse("Web.Default.serviceaccount.identity.linkerd.cluster.local.").unwrap();
        assert_eq!(
            id.as_str(),
            "web.default.serviceaccount.identity.linkerd.cluster.local"
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a-.b",
            "a b",
            "a_b.c",
            &"x".repeat(64),
        ] {
            assert!(Id::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
