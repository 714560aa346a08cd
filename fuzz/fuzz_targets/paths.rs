//! Path confinement, with any path a client may send for an argument that names a file.
//!
//! Invariants: an accepted path holds no NUL, no backslash and no `..` segment (also
//! after percent-decoding), does not start with `~`, and joined to the root stays
//! under it; a relative path is never refused for being relative.

#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use warden_config::ToolRules;
use warden_policy::{Catalogue, CatalogueTool, Origin, ToolKind};

/// A real directory (symlinks are resolved against it) holding one file and one
/// subdirectory.
static ROOT: LazyLock<PathBuf> = LazyLock::new(|| {
    let root = std::env::temp_dir().join(format!("warden-fuzz-paths-{}", std::process::id()));
    std::fs::create_dir_all(root.join("docs")).expect("the fuzz root");
    std::fs::write(root.join("docs/a.txt"), "a").expect("a file in the fuzz root");
    root.canonicalize().expect("the fuzz root resolves")
});

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| {
    let definition = json!({
        "name": "read_file",
        "inputSchema": {
            "type": "object",
            "properties": { "path": { "type": "string" } },
            "required": ["path"],
        },
    });
    let origin = Origin {
        upstream: 0,
        name: "read_file".into(),
    };
    let rules = ToolRules {
        paths: vec!["/path".into()],
        root: Some(ROOT.clone()),
        ..ToolRules::default()
    };
    Catalogue::build(
        vec![(definition, origin)],
        |_, _| rules.clone(),
        |_, _| ToolKind::Read,
    )
    .0
});

fn tool() -> &'static CatalogueTool {
    CATALOGUE
        .lookup("read_file", ToolKind::Read)
        .expect("the tool compiles")
}

/// `%XX` decoded (bytes that are not UTF-8 are kept as they were).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(high)), Some(Some(low))) = (
                bytes.get(i + 1).map(|&b| hex(b)),
                bytes.get(i + 2).map(|&b| hex(b)),
            )
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| path.to_owned())
}

fuzz_target!(|path: &str| {
    let accepted = tool().validate(&json!({ "path": path })).is_ok();
    if !accepted {
        return;
    }
    let decoded = percent_decoded(path);
    for text in [path, decoded.as_str()] {
        assert!(!text.contains('\0') && !text.contains('\\'), "{path:?}");
        assert!(!text.split('/').any(|s| s == ".."), "{path:?}");
    }
    assert!(!path.starts_with('~'), "{path:?}");
    let joined = ROOT.join(path);
    let mut normal = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    assert!(
        normal.starts_with(Path::new(&*ROOT)),
        "{path:?} leaves the root: {}",
        normal.display()
    );
});
