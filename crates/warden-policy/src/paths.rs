//! Arguments that are file paths stay inside their root. Which arguments are paths comes
//! from the schema (`format: "path"` or `x-warden-path: true`) or from the operator
//! (`[tools."<name>"] paths`); pointers may use `*` for every item of an array.
//!
//! Refused: NUL bytes, backslashes, `..` segments, `~`, look-alike separators and dots,
//! percent-encoded traversal (decoded up to three times), absolute paths (outside the
//! root when there is one), and, with a root, any path whose existing part resolves
//! through a symlink to somewhere outside it. Without a root, a path must be relative.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Pointers (`/a/b`, `/files/*`) to the path arguments a schema declares.
pub(crate) fn declared_paths(schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect(schema, String::new(), &mut found);
    found
}

fn collect(schema: &Value, at: String, found: &mut Vec<String>) {
    let marked = schema.get("format").and_then(Value::as_str) == Some("path")
        || schema.get("x-warden-path").and_then(Value::as_bool) == Some(true);
    if marked && !at.is_empty() {
        found.push(at.clone());
    }
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, sub) in properties {
            let escaped = name.replace('~', "~0").replace('/', "~1");
            collect(sub, format!("{at}/{escaped}"), found);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        collect(items, format!("{at}/*"), found);
    }
}

/// Property names that mean a path when a whole upstream's paths are confined
/// (`[[upstream]] paths_root`): compared case-insensitively, and any name with `path` in
/// it (`path`, `paths`, `source_path`, `destinationPath`).
const PATH_NAMES: [&str; 11] = [
    "file",
    "files",
    "filename",
    "dir",
    "directory",
    "folder",
    "root",
    "source",
    "destination",
    "src",
    "dest",
];

fn named_like_a_path(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("path") || PATH_NAMES.contains(&lower.as_str())
}

/// Pointers to the string arguments a schema marks as paths or names like one (see
/// `PATH_NAMES`), at any depth; arrays of them by `*`.
pub fn path_named_arguments(schema: &Value) -> Vec<String> {
    let mut found = declared_paths(schema);
    collect_named(schema, String::new(), false, &mut found);
    found.sort();
    found.dedup();
    found
}

fn collect_named(schema: &Value, at: String, named: bool, found: &mut Vec<String>) {
    let is_string = schema.get("type").and_then(Value::as_str) == Some("string");
    if named && is_string && !at.is_empty() {
        found.push(at.clone());
    }
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, sub) in properties {
            let escaped = name.replace('~', "~0").replace('/', "~1");
            collect_named(
                sub,
                format!("{at}/{escaped}"),
                named_like_a_path(name),
                found,
            );
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        collect_named(items, format!("{at}/*"), named, found);
    }
}

/// The values at `pattern` in `arguments`, with their concrete pointers.
pub(crate) fn values_at<'a>(arguments: &'a Value, pattern: &str) -> Vec<(String, &'a Value)> {
    let mut current = vec![(String::new(), arguments)];
    for segment in pattern.split('/').skip(1) {
        let mut next = Vec::new();
        for (at, value) in current {
            match (segment, value) {
                ("*", Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        next.push((format!("{at}/{i}"), item));
                    }
                }
                (name, Value::Object(object)) => {
                    let name = name.replace("~1", "/").replace("~0", "~");
                    if let Some(child) = object.get(&name) {
                        next.push((format!("{at}/{segment}"), child));
                    }
                }
                _ => {}
            }
        }
        current = next;
    }
    current
}

/// Why a path was refused; never the path itself.
pub(crate) fn confine(path: &str, root: Option<&Path>) -> Result<(), &'static str> {
    if path.contains('\0') {
        return Err("path contains a NUL byte");
    }
    if path.contains('\\') {
        return Err("path contains a backslash");
    }
    if path.chars().any(is_look_alike) {
        return Err("path contains a look-alike of a dot or a slash");
    }
    let mut decoded = path.to_owned();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        if next.contains(['\0', '\\']) || has_parent(&next) || next.starts_with('/') {
            return Err("path contains percent-encoded traversal");
        }
        decoded = next;
    }
    if has_parent(path) {
        return Err("path leaves its directory (..)");
    }
    if path.starts_with('~') {
        return Err("path starts with ~");
    }
    let absolute = Path::new(path).is_absolute();
    let Some(root) = root else {
        return if absolute {
            Err("path must be relative")
        } else {
            Ok(())
        };
    };
    let full = if absolute {
        let normalised: PathBuf = Path::new(path).components().collect();
        if !normalised.starts_with(root) {
            return Err("path is outside its root");
        }
        normalised
    } else {
        root.join(path)
    };
    escapes_by_symlink(&full, root)
}

fn has_parent(path: &str) -> bool {
    path.split('/').any(|segment| segment == "..")
}

/// Characters some systems fold to `.` or `/` (fullwidth, one-dot leader, division and
/// fraction slashes).
fn is_look_alike(c: char) -> bool {
    matches!(
        c,
        '\u{FF0E}' | '\u{2024}' | '\u{FE52}' | '\u{FF0F}' | '\u{2215}' | '\u{2044}' | '\u{29F8}'
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The deepest existing ancestor of `full`, resolved, must still be under the resolved
/// root; a symlink planted inside the root cannot lead out of it.
fn escapes_by_symlink(full: &Path, root: &Path) -> Result<(), &'static str> {
    let Ok(real_root) = root.canonicalize() else {
        // No root on disk: nothing can be reached through it, and nothing escapes.
        return Ok(());
    };
    let mut existing = full;
    loop {
        if let Ok(real) = existing.canonicalize() {
            return if real.starts_with(&real_root) {
                Ok(())
            } else {
                Err("path leads outside its root through a symlink")
            };
        }
        // A link whose target does not exist yet cannot be resolved, and would be
        // followed when the upstream creates the file: refused.
        if existing.symlink_metadata().is_ok() {
            return Err("path leads through a dangling symlink");
        }
        match existing.parent() {
            Some(parent)
                if parent
                    .components()
                    .any(|c| matches!(c, Component::Normal(_))) =>
            {
                existing = parent;
            }
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        let root = Path::new("/srv/data");
        for path in [
            "../etc/passwd",
            "a/../../etc",
            "a/..",
            "/etc/passwd",
            "/srv/database",
            "..\\windows",
            "a\0b",
            "%2e%2e/etc",
            "%2E%2E%2Fetc",
            "%252e%252e/etc",
            "a%2f..%2f..%2fetc",
            "%2fetc%2fpasswd",
            "\u{FF0E}\u{FF0E}/etc",
            "a\u{2215}b",
            "~/.ssh/id_rsa",
        ] {
            assert!(confine(path, Some(root)).is_err(), "{path:?}");
        }
        for path in [
            "notes/today.md",
            "a/./b",
            "/srv/data/x.txt",
            "100%.txt",
            "a..b",
        ] {
            assert_eq!(confine(path, Some(root)), Ok(()), "{path:?}");
        }
        assert!(confine("/srv/data/x", None).is_err());
        assert_eq!(confine("x/y", None), Ok(()));
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("exit")).unwrap();
        std::fs::create_dir(root.path().join("inside")).unwrap();
        assert!(confine("exit/secret.txt", Some(root.path())).is_err());
        assert!(confine("exit", Some(root.path())).is_err());
        std::os::unix::fs::symlink(outside.path().join("not-yet"), root.path().join("later"))
            .unwrap();
        assert!(confine("later", Some(root.path())).is_err());
        assert!(confine("later/x", Some(root.path())).is_err());
        assert_eq!(confine("inside/new.txt", Some(root.path())), Ok(()));
        assert_eq!(confine("missing/new.txt", Some(root.path())), Ok(()));
    }

    #[test]
    fn path_named_arguments_are_found_by_name_at_any_depth() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "path": {"type": "string"},
            "source": {"type": "string"},
            "destinationPath": {"type": "string"},
            "paths": {"type": "array", "items": {"type": "string"}},
            "content": {"type": "string"},
            "options": {"type": "object", "properties": {"root": {"type": "string"}, "mode": {"type": "string"}}},
            "marked": {"type": "string", "format": "path"},
            "count": {"type": "integer"}
        }});
        assert_eq!(
            path_named_arguments(&schema),
            [
                "/destinationPath",
                "/marked",
                "/options/root",
                "/path",
                "/paths/*",
                "/source"
            ]
        );
    }

    #[test]
    fn declared_paths_and_wildcards_find_their_values() {
        let schema = json!({"properties": {
            "path": {"type": "string", "format": "path"},
            "files": {"type": "array", "items": {"type": "string", "x-warden-path": true}},
            "other": {"type": "string"}
        }});
        let mut pointers = declared_paths(&schema);
        pointers.sort();
        assert_eq!(pointers, ["/files/*", "/path"]);
        let args = json!({"path": "a", "files": ["b", "c"]});
        let found: Vec<_> = values_at(&args, "/files/*")
            .into_iter()
            .map(|(at, v)| (at, v.clone()))
            .collect();
        assert_eq!(
            found,
            [
                ("/files/0".into(), json!("b")),
                ("/files/1".into(), json!("c"))
            ]
        );
    }
}
