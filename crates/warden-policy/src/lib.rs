//! Policy: what a caller may see and call, and whether a call's arguments are exactly
//! what the tool declared. Pure decisions over data; the gateway supplies the caller.

mod catalogue;
mod harden;
mod paths;
mod pins;
pub mod rules;
mod strict;

pub use catalogue::{Catalogue, CatalogueTool, Origin, ToolKind};
pub use harden::{Hardening, clean_text, harden_message, hides_characters};
pub use paths::path_named_arguments;
pub use pins::{
    addresses_the_model, carries_encoded_blob, definition_texts, hash_of_form, legacy_pinned_hash,
    pinned_form, suspicious,
};

/// Why a call was refused. Messages name the rule and the JSON path, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown tool")]
    UnknownTool,
    #[error("invalid arguments at {path}: {rule}")]
    InvalidArguments { path: String, rule: String },
    #[error("invalid arguments at {path}: {limit} exceeded for this tool")]
    ArgumentCap { path: String, limit: &'static str },
    #[error("invalid arguments at {path}: {rule}")]
    ConfinedPath { path: String, rule: &'static str },
    #[error("the result does not match the tool's outputSchema at {path}: {rule}")]
    OutputMismatch { path: String, rule: String },
}

impl PolicyError {
    /// A stable name for the rule that decided, for audit and metrics.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::UnknownTool => "catalogue.unknown_tool",
            Self::InvalidArguments { .. } => "validation.arguments",
            Self::ArgumentCap { .. } => "validation.cap",
            Self::ConfinedPath { .. } => "validation.path",
            Self::OutputMismatch { .. } => "validation.output",
        }
    }
}
