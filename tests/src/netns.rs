//! Network namespaces for the transparent (iptables) tests.
