//! `[policy]`: Cedar policy files (and optionally the model they are checked against),
//! and the shipped session policy that asks a person after untrusted text. The files are
//! read here, with the configuration, so that a reload compares what they say; they are
//! compiled and checked by `warden_policy::rules`.

use std::path::{Path, PathBuf};

use crate::tools::{Confirm, glob_matches};

pub(crate) mod raw {
    use serde::Deserialize;

    #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Policy {
        #[serde(default)]
        pub files: Vec<String>,
        pub schema: Option<String>,
        pub after_untrusted: Option<String>,
        pub forbid_outbound: Option<bool>,
    }
}

/// No policy file may be larger.
const MAX_POLICY_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A file as read: the name it is reported under, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub name: String,
    pub text: String,
}

/// Policies as code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The policy files, in name order; none: the built-in policies apply.
    pub files: Vec<PolicyFile>,
    /// The operator's own copy of the model, if given: policies are checked against it
    /// instead of the model Warden derives from the catalogue.
    pub schema: Option<PolicyFile>,
    /// Who confirms a write or destructive call once the session has read untrusted
    /// text: `Elicit` (the user, the default), `Approve` (an operator) or `Never` (off).
    pub after_untrusted: Confirm,
    /// Once untrusted text and private data met in a session, tools that reach outside
    /// (MCP `openWorldHint`) are refused.
    pub forbid_outbound: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            schema: None,
            after_untrusted: Confirm::Elicit,
            forbid_outbound: false,
        }
    }
}

fn read(path: &Path) -> Result<PolicyFile, String> {
    let size = std::fs::metadata(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?
        .len();
    if size > MAX_POLICY_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} MB",
            path.display(),
            MAX_POLICY_FILE_BYTES / 1024 / 1024
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(PolicyFile {
        name: path.display().to_string(),
        text,
    })
}

/// The files `pattern` names: a path, or a directory and a file name with `*` in it
/// (`policies/*.cedar`). A pattern that names no file is an error: an operator who
/// lists policies expects them to apply.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let Some(name) = full.file_name().and_then(|n| n.to_str()) else {
        return Err(format!("{pattern:?} names no file"));
    };
    if !name.contains('*') {
        return Ok(vec![full]);
    }
    let dir = full.parent().unwrap_or(base);
    if dir.to_string_lossy().contains('*') {
        return Err(format!(
            "{pattern:?}: only the file name may hold `*`, not a directory"
        ));
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|file| glob_matches(name, file))
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!("{pattern:?} matches no file"));
    }
    Ok(found)
}

/// Reads `[policy]`; relative paths are taken from `base` (the configuration file's
/// directory). Errors name the field.
pub(crate) fn validate(raw: raw::Policy, base: &Path) -> Result<Policy, (&'static str, String)> {
    let mut files = Vec::new();
    for pattern in &raw.files {
        for path in expand(base, pattern).map_err(|m| ("policy.files", m))? {
            if !files
                .iter()
                .any(|f: &PolicyFile| f.name == path.display().to_string())
            {
                files.push(read(&path).map_err(|m| ("policy.files", m))?);
            }
        }
    }
    let schema = raw
        .schema
        .map(|path| read(&base.join(path)))
        .transpose()
        .map_err(|m| ("policy.schema", m))?;
    let after_untrusted = match raw.after_untrusted.as_deref() {
        None | Some("elicit") => Confirm::Elicit,
        Some("approve") => Confirm::Approve,
        Some("off") => Confirm::Never,
        Some(other) => {
            return Err((
                "policy.after_untrusted",
                format!("must be \"elicit\", \"approve\" or \"off\", not {other:?}"),
            ));
        }
    };
    Ok(Policy {
        files,
        schema,
        after_untrusted,
        forbid_outbound: raw.forbid_outbound.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_read_every_matching_file_in_name_order_and_an_empty_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for name in ["b.cedar", "a.cedar", "notes.txt"] {
            std::fs::write(dir.path().join("policies").join(name), name).unwrap();
        }
        let policy = validate(
            raw::Policy {
                files: vec!["policies/*.cedar".into(), "policies/a.cedar".into()],
                ..raw::Policy::default()
            },
            dir.path(),
        )
        .unwrap();
        let texts: Vec<&str> = policy.files.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["a.cedar", "b.cedar"]);
        assert_eq!(policy.after_untrusted, Confirm::Elicit);
        let (field, message) = validate(
            raw::Policy {
                files: vec!["policies/*.rego".into()],
                ..raw::Policy::default()
            },
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(field, "policy.files");
        assert!(message.contains("matches no file"), "{message}");
        let (field, _) = validate(
            raw::Policy {
                after_untrusted: Some("sometimes".into()),
                ..raw::Policy::default()
            },
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(field, "policy.after_untrusted");
    }
}
