//! The protocol layer of Warden: what a JSON-RPC message is, which MCP era it belongs to,
//! whether its `Mcp-*` headers agree with its body, and how messages ride Server-Sent
//! Events. Nothing here does I/O, so every
//! rule can be tested alone.

pub mod canonical;
pub mod codes;
pub mod cut;
pub mod envelope;
pub mod era;
pub mod headers;
pub mod scan;
pub mod sse;
pub mod trace_context;

pub use envelope::{EnvelopeError, Message, Request, RequestId, Response};
pub use era::{Era, ProtocolVersion};
pub use scan::{JsonLimits, Limit, ScanError, ScanFault};
