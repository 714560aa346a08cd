//! Whether an upstream's command pins what it runs. `npx -y pkg`, `uvx pkg` and
//! `docker run image` fetch the newest release at every start, so a compromised or
//! broken release reaches every instance on its next restart. Pinned means:
//! - `npx` (and `npm exec`, `pnpm dlx`, `bunx`) with an exact version, `pkg@1.2.3`;
//! - `uvx` / `uv tool run` / `pipx run` with `pkg==1.2.3` (or `--from pkg==1.2.3`);
//! - `docker` / `podman run` with an image by digest, `image@sha256:…`.
//!
//! Any other command (a local script or binary) is not judged here; `[[upstream]]
//! sha256` pins its file.

/// `pin_sha256` entries: each the base64 SHA-256 of a certificate's SubjectPublicKeyInfo
/// (an optional `sha256/` in front, as HPKP wrote it), for an `https` `url` only.
pub(crate) fn spki_pins(values: Vec<String>, url: &str) -> Result<Vec<[u8; 32]>, String> {
    use base64::Engine as _;
    if values.is_empty() {
        return Ok(Vec::new());
    }
    if !url.starts_with("https://") {
        return Err("pins a certificate, so the URL must be https".into());
    }
    values
        .iter()
        .map(|value| {
            let text = value.strip_prefix("sha256/").unwrap_or(value);
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    format!("{value:?} is not a base64 SHA-256 (openssl x509 -pubkey -noout -in cert.pem | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)")
                })
        })
        .collect()
}

/// Why `command` does not pin what it fetches; `None` when it does, or fetches nothing.
pub fn unpinned(command: &[String]) -> Option<String> {
    let program = command.first()?;
    let name = program.rsplit('/').next().unwrap_or(program);
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    match name {
        "npx" | "bunx" => npm_package(&args),
        "npm" | "pnpm" if matches!(args.first(), Some(&"exec" | &"dlx")) => npm_package(&args[1..]),
        "uvx" => python_package(&args),
        "uv" if args.starts_with(&["tool", "run"]) => python_package(&args[2..]),
        "pipx" if args.first() == Some(&"run") => python_package(&args[1..]),
        "docker" | "podman" if args.first() == Some(&"run") => image(&args[1..]),
        _ => None,
    }
}

/// The first argument that is not an option (nor an option's value).
fn first_operand<'a>(args: &[&'a str], valued: &[&str]) -> Option<&'a str> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if *arg == "--" {
            return args.next().copied();
        }
        if arg.starts_with('-') {
            if valued.contains(arg) {
                args.next();
            }
            continue;
        }
        return Some(arg);
    }
    None
}

/// An exact version: digits and dots, with an optional pre-release or build suffix;
/// no range, tag or wildcard.
fn is_exact_version(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

fn npm_package(args: &[&str]) -> Option<String> {
    // `--package pkg@1.2.3` names what is installed; otherwise the first operand.
    let package = args
        .windows(2)
        .find(|pair| matches!(pair[0], "-p" | "--package"))
        .map(|pair| pair[1])
        .or_else(|| first_operand(args, &["-p", "--package", "--registry", "--cache"]))?;
    // A scoped package starts with `@`: its version is after the second `@`.
    let (name, version) = match package.strip_prefix('@') {
        Some(rest) => rest
            .split_once('@')
            .map(|(name, v)| (format!("@{name}"), v)),
        None => package
            .split_once('@')
            .map(|(name, v)| (name.to_owned(), v)),
    }
    .unwrap_or_else(|| (package.to_owned(), ""));
    (!is_exact_version(version)).then(|| {
        format!("runs the npm package {name} without an exact version ({name}@1.2.3), so every start may fetch a new release")
    })
}

fn python_package(args: &[&str]) -> Option<String> {
    let package = args
        .windows(2)
        .find(|pair| pair[0] == "--from")
        .map(|pair| pair[1])
        .or_else(|| first_operand(args, &["--from", "--with", "--python", "-p", "--index-url"]))?;
    let (name, version) = package.split_once("==").unwrap_or((package, ""));
    (!is_exact_version(version)).then(|| {
        format!("runs the Python package {name} without an exact version ({name}==1.2.3), so every start may fetch a new release")
    })
}

fn image(args: &[&str]) -> Option<String> {
    const VALUED: [&str; 20] = [
        "-e",
        "--env",
        "--env-file",
        "-v",
        "--volume",
        "--mount",
        "--name",
        "-p",
        "--publish",
        "--network",
        "--net",
        "-w",
        "--workdir",
        "-u",
        "--user",
        "--entrypoint",
        "-l",
        "--label",
        "--platform",
        "--pull",
    ];
    let image = first_operand(args, &VALUED)?;
    (!image.contains("@sha256:")).then(|| {
        format!("runs the container image {image} without a digest ({image}@sha256:…), so every start may pull a new image")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &str) -> Option<String> {
        unpinned(
            &command
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn fetched_packages_and_images_need_an_exact_version_or_digest() {
        for unpinned in [
            "npx -y @modelcontextprotocol/server-everything",
            "npx -y @modelcontextprotocol/server-everything@latest",
            "npx -y @modelcontextprotocol/server-everything@^1.2.0",
            "npx --yes mcp-server@1.2",
            "/usr/bin/npx -y -p mcp-server@~1.0.0 mcp-server",
            "npm exec mcp-server",
            "uvx mcp-server-fetch",
            "uvx mcp-server-fetch>=1.0",
            "uvx --from mcp-server-fetch mcp-server-fetch==1.0.0",
            "pipx run mcp-server-fetch",
            "uv tool run mcp-server-fetch",
            "docker run -i --rm -e TOKEN ghcr.io/example/mcp:latest",
            "podman run mcp/fetch",
        ] {
            assert!(check(unpinned).is_some(), "{unpinned}");
        }
        for pinned in [
            "npx -y @modelcontextprotocol/server-everything@2025.11.25",
            "npx -y mcp-server@1.2.3-beta.1",
            "bunx mcp-server@1.2.3",
            "uvx mcp-server-fetch==2025.4.7",
            "uvx --from mcp-server-fetch==1.0.0 mcp-server-fetch",
            "pipx run mcp-server-fetch==1.0.0",
            "docker run -i --rm -e TOKEN ghcr.io/example/mcp@sha256:0123abcd",
            "python3 server.py",
            "/opt/servers/fetch",
            "node dist/index.js",
        ] {
            assert_eq!(check(pinned), None, "{pinned}");
        }
        assert!(
            check("npx -y @scope/pkg")
                .unwrap()
                .contains("@scope/pkg@1.2.3")
        );
    }
}
