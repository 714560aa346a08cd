//! The two MCP eras that share one endpoint: legacy (handshake + sessions) and modern
//! (stateless, every request carries its protocol version in `_meta`).

use serde_json::{Map, Value};

/// `_meta` key that marks a modern-era request and names its protocol version.
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key under which a modern request says what the client can do.
pub const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key under which a modern result carries the server's identity.
pub const SERVER_INFO_META: &str = "io.modelcontextprotocol/serverInfo";
/// The `_meta` key of a modern client's name and version.
pub const CLIENT_INFO_META: &str = "io.modelcontextprotocol/clientInfo";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Modern,
}

impl Era {
    /// The era's name in logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Modern => "modern",
        }
    }
}

/// A protocol revision Warden speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl ProtocolVersion {
    /// Every revision Warden speaks, newest first.
    pub const ALL: [Self; 4] = [
        Self::V2026_07_28,
        Self::V2025_11_25,
        Self::V2025_06_18,
        Self::V2025_03_26,
    ];
    /// What an `initialize` that asks for an unknown revision gets.
    pub const LATEST_LEGACY: Self = Self::V2025_11_25;
    /// Assumed when a legacy request carries no `MCP-Protocol-Version` header.
    pub const LEGACY_DEFAULT: Self = Self::V2025_03_26;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    pub fn era(self) -> Era {
        match self {
            Self::V2026_07_28 => Era::Modern,
            _ => Era::Legacy,
        }
    }

    /// The revisions of one era, newest first, as strings for error data and results.
    pub fn supported(era: Era) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|v| v.era() == era)
            .map(Self::as_str)
            .collect()
    }

    /// The answer to `initialize`: the client's revision when it is a legacy one we
    /// speak, otherwise our latest legacy revision (the client then decides).
    pub fn negotiate_legacy(requested: Option<&str>) -> Self {
        requested
            .and_then(Self::parse)
            .filter(|v| v.era() == Era::Legacy)
            .unwrap_or(Self::LATEST_LEGACY)
    }
}

/// The modern protocol version named in a request's `_meta`, if any: its presence is
/// what makes a request modern.
pub fn meta_protocol_version(params: &Map<String, Value>) -> Option<&Value> {
    params.get("_meta")?.as_object()?.get(PROTOCOL_VERSION_META)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn negotiation_prefers_the_clients_legacy_revision() {
        assert_eq!(
            ProtocolVersion::negotiate_legacy(Some("2025-06-18")),
            ProtocolVersion::V2025_06_18
        );
        assert_eq!(
            ProtocolVersion::negotiate_legacy(Some("1999-01-01")),
            ProtocolVersion::V2025_11_25
        );
        assert_eq!(
            ProtocolVersion::negotiate_legacy(Some("2026-07-28")),
            ProtocolVersion::V2025_11_25
        );
        assert_eq!(
            ProtocolVersion::negotiate_legacy(None),
            ProtocolVersion::V2025_11_25
        );
    }

    #[test]
    fn meta_marks_modern_requests() {
        let params = json!({"_meta": {PROTOCOL_VERSION_META: "2026-07-28"}});
        assert_eq!(
            meta_protocol_version(params.as_object().unwrap()),
            Some(&json!("2026-07-28"))
        );
        assert_eq!(
            meta_protocol_version(json!({"_meta": {}}).as_object().unwrap()),
            None
        );
        assert_eq!(
            meta_protocol_version(json!({"_meta": 3}).as_object().unwrap()),
            None
        );
    }
}
