//! Placeholder until the parser lands (being written on another branch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    ClientHello(ClientHello),
    Incomplete,
    NotClientHello,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}
pub fn parse_client_hello(_buf: &[u8]) -> Parsed {
    Parsed::NotClientHello
}
