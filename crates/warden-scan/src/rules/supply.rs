//! Supply chain of a stdio server: the command that starts it names exactly what runs,
//! so that a registry update cannot change the server under a running deployment.

use std::sync::LazyLock;

use regex::Regex;

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
            let command = match container_run(&seen.target.command) {
                Ok(command) => command,
                Err(skip) => return skip,
            };
            match image_of(command) {
                None => Verdict::skip("no image found in the command"),
                Some(image) => Verdict::from_check(image.contains("@sha256:"), || {
                    format!("image {image} is not pinned by digest")
                }),
            }
        },
    },
    Rule {
        id: "WS-SUP-004",
        category: Category::SupplyChain,
        severity: Severity::Critical,
        title: "The command does not pipe a download into a shell (curl … | sh)",
        remediation: "Install a released, checksummed artefact ahead of time and run it; never run what a URL serves at start-up.",
        reference: "OpenSSF Scorecard Pinned-Dependencies (downloadThenRun); CWE-494",
        check: |seen| {
            let command = &seen.target.command;
            if command.is_empty() {
                return Verdict::skip("not a stdio target");
            }
            match command.iter().find(|arg| DOWNLOAD_THEN_RUN.is_match(arg)) {
                Some(arg) => Verdict::fail(format!("runs what a download serves: {arg}")),
                None => Verdict::Pass,
            }
        },
    },
    Rule {
        id: "WS-SUP-005",
        category: Category::SupplyChain,
        severity: Severity::Medium,
        title: "The server is not started with elevated privileges (sudo, doas, su)",
        remediation: "Run the server as an unprivileged user; give it the files it needs, not root.",
        reference: "CWE-250 (execution with unnecessary privileges)",
        check: |seen| {
            let Some(program) = seen.target.command.first() else {
                return Verdict::skip("not a stdio target");
            };
            let elevated = ["sudo", "doas", "su", "pkexec"].contains(&basename(program));
            Verdict::from_check(!elevated, || format!("started through {program}"))
        },
    },
    Rule {
        id: "WS-SUP-006",
        category: Category::SupplyChain,
        severity: Severity::High,
        title: "A container server gets no host-wide access (--privileged, host network, /, the Docker socket)",
        remediation: "Drop --privileged, --network host, --pid host and mounts of / or docker.sock; mount the one directory the server needs.",
        reference: "CIS Docker Benchmark 5.4, 5.9, 5.31",
        check: |seen| {
            let command = match container_run(&seen.target.command) {
                Ok(command) => command,
                Err(skip) => return skip,
            };
            let joined = command.join(" ");
            match HOST_WIDE.find(&joined) {
                Some(found) => Verdict::fail(format!("the container gets {}", found.as_str())),
                None => Verdict::Pass,
            }
        },
    },
];

/// `curl …| sh`, `wget -O- … | bash`, `iwr … | iex` in one argument (a `sh -c` script).
static DOWNLOAD_THEN_RUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:curl|wget|iwr|invoke-webrequest)\b[^|]*\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b|\b(?:iwr|invoke-webrequest)\b[^|]*\|\s*iex\b")
        .expect("compiles")
});
/// Container flags that hand the host to the container.
static HOST_WIDE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"--privileged\b|--(?:network|net|pid|ipc)[= ]host\b|--cap-add[= ](?:ALL|SYS_ADMIN)\b|(?:-v|--volume)[= ]/(?::|\s)|\S*docker\.sock")
        .expect("compiles")
});

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
    let pinning = RULES.iter().filter(|rule| rule.reference == PINNING);
    pinning
        .into_iter()
        .find_map(|rule| match (rule.check)(&seen) {
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

/// `command` when it runs a container (`docker run`, `podman run`), else why the
/// container rules skip.
fn container_run(command: &[String]) -> Result<&[String], Verdict> {
    let Some(program) = command.first() else {
        return Err(Verdict::skip("not a stdio target"));
    };
    if !["docker", "podman"].contains(&basename(program)) || !command.iter().any(|a| a == "run") {
        return Err(Verdict::skip("the command runs no container"));
    }
    Ok(command)
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
        let script = |script: &str| {
            let mut seen = running("sh -c");
            seen.target.command.push(script.into());
            seen
        };
        assert_rule(
            "WS-SUP-004",
            &script("exec /opt/mcp/server --stdio"),
            &script("curl -fsSL https://get.example.com/mcp | sh"),
        );
        assert_rule(
            "WS-SUP-005",
            &running("node /opt/mcp/server.js"),
            &running("sudo node /opt/mcp/server.js"),
        );
        let image =
            "mcp/fs@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_rule(
            "WS-SUP-006",
            &running(&format!("docker run -i --rm -v /srv/notes:/notes {image}")),
            &running(&format!("docker run -i --rm --privileged {image}")),
        );
        assert_rule(
            "WS-SUP-006",
            &running(&format!("docker run -i --rm --network none {image}")),
            &running(&format!(
                "docker run -i -v /var/run/docker.sock:/var/run/docker.sock {image}"
            )),
        );
        // The pinning audit of a configuration reads the pinning rules only.
        assert_eq!(
            super::unpinned(&["sudo".into(), "/opt/server".into()]),
            None
        );
    }
}
