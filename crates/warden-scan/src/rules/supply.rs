//! Supply chain of a stdio server: the command that starts it names exactly what runs,
//! so that a registry update cannot change the server under a running deployment.

use crate::rule::{Category, Rule, Severity, Verdict};

const PINNING: &str = "SLSA; OpenSSF Scorecard Pinned-Dependencies";

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-SUP-001",
        category: Category::SupplyChain,
        severity: Severity::High,
        title: "npx runs an exact package version (pkg@1.2.3)",
        remediation: "Name the version: `npx -y @scope/server@1.2.3`, or install it and run node on the file.",
        reference: PINNING,
        check: |seen| launcher(&seen.target.command, &["npx", "pnpx", "bunx"], exact_npm),
    },
    Rule {
        id: "WS-SUP-002",
        category: Category::SupplyChain,
        severity: Severity::High,
        title: "uvx and pipx run an exact package version (pkg==1.2.3)",
        remediation: "Name the version: `uvx server==1.2.3` (or `--from server==1.2.3`).",
        reference: PINNING,
        check: |seen| launcher(&seen.target.command, &["uvx", "pipx"], exact_python),
    },
    Rule {
        id: "WS-SUP-003",
        category: Category::SupplyChain,
        severity: Severity::Medium,
        title: "Container images are pinned by digest (@sha256:…)",
        remediation: "Run `image@sha256:<digest>`; a tag can be moved to another image.",
        reference: PINNING,
        check: |seen| {
            let command = &seen.target.command;
            let Some(program) = command.first() else {
                return Verdict::skip("not a stdio target");
            };
            if !["docker", "podman"].contains(&basename(program))
                || !command.iter().any(|a| a == "run")
            {
                return Verdict::skip("the command runs no container");
            }
            match image_of(command) {
                None => Verdict::skip("no image found in the command"),
                Some(image) => Verdict::from_check(image.contains("@sha256:"), || {
                    format!("image {image} is not pinned by digest")
                }),
            }
        },
    },
];

/// Why `command` does not pin what it runs, if it does not (for configuration audits,
/// which hold several commands).
pub(crate) fn unpinned(command: &[String]) -> Option<String> {
    let seen = crate::observe::Observations {
        target: crate::observe::TargetFacts {
            command: command.to_vec(),
            ..crate::observe::TargetFacts::default()
        },
        ..crate::observe::Observations::default()
    };
    RULES.iter().find_map(|rule| match (rule.check)(&seen) {
        Verdict::Fail(why) => Some(why),
        _ => None,
    })
}

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// The package a launcher (`npx -y pkg args…`, `uvx --from pkg cmd`) runs, checked by
/// `exact`; skipped when the command uses no such launcher.
fn launcher(command: &[String], names: &[&str], exact: fn(&str) -> bool) -> Verdict {
    let Some(program) = command.first() else {
        return Verdict::skip("not a stdio target");
    };
    if !names.contains(&basename(program)) {
        return Verdict::skip("the command uses no such launcher");
    }
    let mut args = command[1..].iter();
    let mut package = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--from" | "--package" | "-p" | "--spec" => {
                package = args.next().cloned();
                break;
            }
            "run" if basename(program) == "pipx" => {}
            flag if flag.starts_with('-') => {}
            name => {
                package = Some(name.to_owned());
                break;
            }
        }
    }
    match package {
        None => Verdict::skip("no package found in the command"),
        Some(package) => Verdict::from_check(exact(&package), || {
            format!("{package} is not pinned to one version")
        }),
    }
}

/// `name@1.2.3` or `@scope/name@1.2.3`: a version after the last `@` that is not a range
/// or a tag like `latest`.
fn exact_npm(package: &str) -> bool {
    let bare = package.strip_prefix('@').unwrap_or(package);
    bare.rsplit_once('@')
        .is_some_and(|(_, version)| is_exact(version))
}

fn exact_python(package: &str) -> bool {
    package
        .split_once("==")
        .is_some_and(|(_, version)| is_exact(version))
}

fn is_exact(version: &str) -> bool {
    let mut parts = version.split('.');
    version.chars().next().is_some_and(|c| c.is_ascii_digit())
        && parts.clone().count() >= 3
        && parts.all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '+')
        })
}

/// The first argument after `run` that is not a flag (or a flag's value).
fn image_of(command: &[String]) -> Option<&str> {
    let at = command.iter().position(|a| a == "run")?;
    let mut args = command[at + 1..].iter();
    while let Some(arg) = args.next() {
        if let Some(flag) = arg.strip_prefix('-') {
            // Flags that take a value in the next argument.
            if !flag.contains('=')
                && [
                    "e", "v", "p", "-env", "-volume", "-publish", "-name", "-network", "-user",
                    "u", "w", "-workdir", "-mount",
                ]
                .contains(&flag)
            {
                args.next();
            }
            continue;
        }
        return Some(arg);
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::observe::{Observations, TargetFacts};
    use crate::rules::fixtures::assert_rule;

    fn running(command: &str) -> Observations {
        Observations {
            target: TargetFacts {
                command: command.split_whitespace().map(str::to_owned).collect(),
                ..TargetFacts::default()
            },
            ..Observations::default()
        }
    }

    #[test]
    fn launchers_and_images_are_pinned() {
        assert_rule(
            "WS-SUP-001",
            &running("npx -y @modelcontextprotocol/server-everything@2025.11.25"),
            &running("npx -y @modelcontextprotocol/server-everything"),
        );
        assert_rule(
            "WS-SUP-001",
            &running("/usr/bin/npx -y pkg@1.2.3 --port 3"),
            &running("npx -y pkg@latest"),
        );
        assert_rule(
            "WS-SUP-002",
            &running("uvx mcp-server-fetch==2025.4.7"),
            &running("uvx mcp-server-fetch"),
        );
        assert_rule(
            "WS-SUP-002",
            &running("uvx --from mcp-server-git==0.6.2 mcp-server-git"),
            &running("pipx run mcp-server-git"),
        );
        assert_rule(
            "WS-SUP-003",
            &running(
                "docker run -i --rm -e TOKEN mcp/github@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            &running("docker run -i --rm -e TOKEN mcp/github:latest"),
        );
    }
}
