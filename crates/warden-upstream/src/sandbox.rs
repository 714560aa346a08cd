//! Confinement for stdio children (Linux).
//!
//! The workspace forbids `unsafe`, so nothing runs between `fork` and `exec` in Warden's
//! own process. Instead a sandboxed child is started as `warden sandbox-exec <spec> --
//! <program> <args>`: that trampoline (Warden's own binary, single-threaded, before any
//! runtime starts) applies the resource limits, `no_new_privs`, the Landlock rules and a
//! seccomp filter to itself, reports what the kernel enforced on stderr (which Warden
//! logs), then `exec`s the real program, which inherits every restriction.
//!
//! Landlock confines files and TCP; the seccomp filter closes what it does not cover:
//! Unix sockets (a child could otherwise connect to `/var/run/docker.sock`, a database
//! socket or an ssh-agent), UDP (children resolve names through their proxy), other
//! socket families, and the system calls that reach into other processes or the kernel
//! (ptrace, `process_vm_*`, mount, bpf, keyrings, perf, userfaultfd, io_uring, modules,
//! namespaces).
//!
//! The parent's half (environment, working directory, process group, egress proxy) is in
//! `stdio.rs`; this module holds the spec that crosses the `exec` and both ends of it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use warden_config::{Sandbox, SandboxMode};

/// What the sandboxed child may touch, as handed to the trampoline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    pub enforced: bool,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// The only TCP port the child may connect to: its egress proxy.
    pub proxy_port: u16,
    pub memory_mb: u64,
    pub max_processes: u64,
    pub max_open_files: u64,
    pub cpu_seconds: u64,
    /// UDP sockets are allowed.
    pub udp: bool,
}

/// System locations every program may read: libraries, certificates, locale data, the
/// random devices, and the few `/proc` entries runtimes ask for (`/proc/self` is the
/// child's own, fixed when the rules are made). Not `/dev` or `/proc` as a whole: a
/// disk device or another process's memory would be readable. Missing paths are skipped.
const SYSTEM_READ: [&str; 17] = [
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc",
    "/opt",
    "/dev/urandom",
    "/dev/random",
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/sys/vm/overcommit_memory",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
];
/// Device files a program may write to (not `/dev/tty`: a terminal accepts typed input
/// through ioctls, and the child has no terminal anyway, in a session of its own).
const DEVICES_WRITE: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];

impl Spec {
    /// The spec for `program` (an absolute path) run with `args` in `cwd` (absolute),
    /// writing only `workdir`. No rule may cover a `protected` path (the data directory,
    /// the configuration file): a rule that would is replaced by rules for its other
    /// entries.
    pub fn new(
        config: &Sandbox,
        program: &Path,
        args: &[String],
        cwd: &Path,
        workdir: &Path,
        proxy_port: u16,
        protected: &[PathBuf],
    ) -> Self {
        let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        read.extend(installation(program));
        // A script named in the arguments (`python3 server.py`, `node dist/index.js`) is
        // part of the command's installation: its directory may be read, and a package's
        // whole `node_modules` tree, where its dependencies live.
        for arg in args {
            let path = cwd.join(arg);
            if path.is_file() {
                for path in [Some(path.clone()), path.canonicalize().ok()]
                    .into_iter()
                    .flatten()
                {
                    read.extend(package_tree(&path));
                }
            }
        }
        if cwd != workdir {
            read.push(cwd.to_path_buf());
        }
        read.extend(config.read.iter().cloned());
        let mut write = vec![workdir.to_path_buf()];
        write.extend(DEVICES_WRITE.iter().map(PathBuf::from));
        write.extend(config.write.iter().cloned());
        let protected: Vec<PathBuf> = protected
            .iter()
            .map(|path| path.canonicalize().unwrap_or_else(|_| path.clone()))
            .collect();
        Self {
            enforced: config.mode == SandboxMode::Enforced,
            read: around(read, &protected),
            write: around(write, &protected),
            proxy_port,
            memory_mb: config.memory_mb,
            max_processes: config.max_processes,
            max_open_files: config.max_open_files,
            cpu_seconds: config.cpu_seconds,
            udp: config.udp,
        }
    }

    /// The trampoline's arguments, starting with the subcommand's name.
    pub fn to_args(&self, program: &Path, args: &[String]) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![SUBCOMMAND.into()];
        let mut flag = |name: &str, value: OsString| {
            out.push(name.into());
            out.push(value);
        };
        flag(
            "--mode",
            if self.enforced {
                "enforced"
            } else {
                "best-effort"
            }
            .into(),
        );
        for path in &self.read {
            flag("--read", path.clone().into());
        }
        for path in &self.write {
            flag("--write", path.clone().into());
        }
        flag("--proxy-port", self.proxy_port.to_string().into());
        flag("--memory-mb", self.memory_mb.to_string().into());
        flag("--max-processes", self.max_processes.to_string().into());
        flag("--max-open-files", self.max_open_files.to_string().into());
        flag("--cpu-seconds", self.cpu_seconds.to_string().into());
        flag("--udp", if self.udp { "allow" } else { "refuse" }.into());
        out.push("--".into());
        out.push(program.into());
        out.extend(args.iter().map(OsString::from));
        out
    }

    /// Reads what [`Spec::to_args`] wrote (without the subcommand's name): the spec and
    /// the command to run.
    pub fn from_args(
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<(Self, Vec<OsString>), String> {
        let mut spec = Self {
            enforced: true,
            read: Vec::new(),
            write: Vec::new(),
            proxy_port: 0,
            memory_mb: 0,
            max_processes: 0,
            max_open_files: 0,
            cpu_seconds: 0,
            udp: false,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--" {
                let command: Vec<OsString> = args.collect();
                if command.is_empty() || spec.proxy_port == 0 {
                    return Err("a command and --proxy-port are required".into());
                }
                return Ok((spec, command));
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
            let number = || {
                value
                    .to_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("{} needs a number", flag.to_string_lossy()))
            };
            match flag.to_str() {
                Some("--mode") => spec.enforced = value != "best-effort",
                Some("--read") => spec.read.push(value.into()),
                Some("--write") => spec.write.push(value.into()),
                Some("--proxy-port") => {
                    spec.proxy_port = u16::try_from(number()?).map_err(|_| "bad port")?;
                }
                Some("--memory-mb") => spec.memory_mb = number()?,
                Some("--max-processes") => spec.max_processes = number()?,
                Some("--max-open-files") => spec.max_open_files = number()?,
                Some("--cpu-seconds") => spec.cpu_seconds = number()?,
                Some("--udp") => spec.udp = value == "allow",
                _ => return Err(format!("unknown flag {}", flag.to_string_lossy())),
            }
        }
        Err("missing -- before the command".into())
    }
}

/// `paths` with every path that contains a protected one replaced by its entries that do
/// not (recursively), so that no rule reaches a protected path.
fn around(paths: Vec<PathBuf>, protected: &[PathBuf]) -> Vec<PathBuf> {
    let mut kept = Vec::new();
    let mut pending = paths;
    while let Some(path) = pending.pop() {
        let real = path.canonicalize().unwrap_or_else(|_| path.clone());
        if !protected.iter().any(|p| p.starts_with(&real)) {
            if !kept.contains(&path) {
                kept.push(path);
            }
            continue;
        }
        // The path is a protected one, or above one: only its other entries.
        if protected.contains(&real) {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&real) {
            pending.extend(entries.filter_map(|entry| Some(entry.ok()?.path())));
        }
    }
    kept.sort();
    kept
}

/// The subcommand of Warden's binary that is the trampoline.
pub const SUBCOMMAND: &str = "sandbox-exec";

/// Where a program is installed: `<prefix>` for `<prefix>/bin/<program>`, otherwise its
/// directory; for both the path as named and the one its symlinks lead to (a virtualenv's
/// `bin/python` links to the system interpreter, and both trees are needed).
fn installation(program: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for path in [Some(program.to_path_buf()), program.canonicalize().ok()]
        .into_iter()
        .flatten()
    {
        let Some(dir) = path.parent() else { continue };
        // `<prefix>/bin/<program>` is installed in `<prefix>`, but not when the prefix is
        // `/` (`/bin/sh`) or a home directory (`~/bin/tool`): that would be everything.
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let root = match dir.parent() {
            Some(prefix)
                if dir.file_name().is_some_and(|name| name == "bin")
                    && prefix.parent().is_some()
                    && home.as_deref() != Some(prefix) =>
            {
                prefix
            }
            _ => dir,
        };
        found.push(root.to_path_buf());
        found.extend(package_tree(&path));
    }
    found
}

/// For a file inside `node_modules`, the outermost `node_modules` directory (a package's
/// dependencies are its siblings); otherwise the file's directory.
fn package_tree(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .filter(|dir| dir.file_name().is_some_and(|name| name == "node_modules"))
        .last()
        .or_else(|| file.parent())
        .map(Path::to_path_buf)
}

/// `program` as an absolute path: itself (against the child's `cwd`) if it names a path,
/// else the first executable of that name on `PATH` (the sandbox grants reads by
/// location, so it must know it).
pub(crate) fn locate(program: &str, cwd: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = cwd.join(program);
        return executable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_absolute() && executable(path))
}

/// What this kernel can enforce, probed without restricting Warden itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Support {
    /// Landlock filesystem rules (ABI 1, Linux 5.13).
    pub filesystem: bool,
    /// Landlock TCP rules (ABI 4, Linux 6.7).
    pub network: bool,
    /// Landlock scoping of signals and abstract sockets (ABI 6, Linux 6.12).
    pub scopes: bool,
}

impl Support {
    /// What an enforced sandbox needs and this kernel lacks.
    pub fn missing(&self) -> Option<&'static str> {
        if !self.filesystem {
            Some("Landlock filesystem rules (Linux 5.13 or later, with Landlock enabled)")
        } else if !self.network {
            Some("Landlock network rules (Landlock ABI 4, Linux 6.7 or later)")
        } else {
            None
        }
    }
}

#[cfg(target_os = "linux")]
pub use linux::exec;
#[cfg(target_os = "linux")]
pub(crate) use linux::probe;

#[cfg(not(target_os = "linux"))]
pub(crate) fn probe() -> Support {
    Support {
        filesystem: false,
        network: false,
        scopes: false,
    }
}

#[cfg(not(target_os = "linux"))]
pub fn exec(_args: impl IntoIterator<Item = OsString>) -> std::process::ExitCode {
    eprintln!("warden sandbox: confinement needs Linux");
    std::process::ExitCode::from(126)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsString;
    use std::os::unix::process::CommandExt as _;
    use std::process::ExitCode;
    use std::sync::LazyLock;

    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, NetPort,
        Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    use super::{Spec, Support};

    /// The newest Landlock rights asked for; a kernel that knows fewer enforces what it
    /// knows (the parent has already refused an enforced sandbox that lacks the needed
    /// ones).
    const ABI_ASKED: ABI = ABI::V6;

    pub(crate) fn probe() -> Support {
        static SUPPORT: LazyLock<Support> = LazyLock::new(|| {
            let hard = || Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
            Support {
                filesystem: hard()
                    .handle_access(AccessFs::from_all(ABI::V1))
                    .and_then(Ruleset::create)
                    .is_ok(),
                network: hard()
                    .handle_access(AccessNet::from_all(ABI::V4))
                    .and_then(Ruleset::create)
                    .is_ok(),
                scopes: hard()
                    .scope(Scope::from_all(ABI::V6))
                    .and_then(Ruleset::create)
                    .is_ok(),
            }
        });
        *SUPPORT
    }

    /// The trampoline: confine this process, report, and become the command.
    pub fn exec(args: impl IntoIterator<Item = OsString>) -> ExitCode {
        let (spec, command) = match Spec::from_args(args) {
            Ok(parsed) => parsed,
            Err(error) => {
                eprintln!("warden sandbox: {error}");
                return ExitCode::from(2);
            }
        };
        // A session of its own: no controlling terminal, and its own process group,
        // which Warden kills with it.
        if let Err(error) = rustix::process::setsid() {
            eprintln!("warden sandbox: cannot start a session: {error}");
            return ExitCode::from(126);
        }
        if let Err(error) = limit(&spec) {
            eprintln!("warden sandbox: cannot set resource limits: {error}");
            return ExitCode::from(126);
        }
        let capabilities = match drop_capabilities() {
            Ok(capabilities) => capabilities,
            Err(error) => {
                eprintln!("warden sandbox: cannot drop capabilities: {error}");
                return ExitCode::from(126);
            }
        };
        let status = match confine(&spec) {
            Ok(status) => status,
            Err(error) => {
                eprintln!("warden sandbox: cannot apply Landlock rules: {error}");
                return ExitCode::from(126);
            }
        };
        let seccomp = match filter_syscalls(spec.udp) {
            Ok(()) => "on",
            Err(error) if spec.enforced => {
                eprintln!("warden sandbox: cannot apply the seccomp filter: {error}");
                return ExitCode::from(126);
            }
            Err(_) => "NOT applied",
        };
        let abi = match status.landlock {
            LandlockStatus::Available { effective_abi, .. } => format!("ABI {effective_abi}"),
            LandlockStatus::NotEnabled => "not enabled".into(),
            LandlockStatus::NotImplemented => "not in this kernel".into(),
        };
        let landlock = match status.ruleset {
            RulesetStatus::FullyEnforced => "fully enforced",
            RulesetStatus::PartiallyEnforced => "partly enforced",
            RulesetStatus::NotEnforced => "NOT enforced",
        };
        let support = probe();
        eprintln!(
            "warden sandbox: landlock {landlock} ({abi}; filesystem {}, tcp only to port {} {}, scopes {}), seccomp {seccomp} ({} system calls refused, unix sockets refused, udp {}), no_new_privs {}, capabilities {capabilities}, limits: {} MiB writable memory, {} processes, {} open files, {} s CPU",
            on(support.filesystem),
            spec.proxy_port,
            on(support.network),
            on(support.scopes),
            REFUSED_SYSCALLS.len(),
            if spec.udp { "allowed" } else { "refused" },
            on(status.no_new_privs),
            spec.memory_mb,
            spec.max_processes,
            spec.max_open_files,
            spec.cpu_seconds,
        );
        if spec.enforced && (status.ruleset == RulesetStatus::NotEnforced || !status.no_new_privs) {
            eprintln!("warden sandbox: the kernel did not enforce the sandbox; not starting");
            return ExitCode::from(126);
        }
        let Some((program, args)) = command.split_first() else {
            return ExitCode::from(2);
        };
        for denied in denied_arguments(args) {
            eprintln!(
                "warden sandbox: the command names {denied}, which the sandbox does not let it read; to allow it, add sandbox_read = [\"{denied}\"] (or sandbox_write, to let it write there too) to this [[upstream]]"
            );
        }
        let error = std::process::Command::new(program).args(args).exec();
        eprintln!("warden sandbox: cannot run the command: {}", error.kind());
        ExitCode::from(127)
    }

    /// System calls a confined child never needs: they reach into other processes
    /// (ptrace, `process_vm_*`), the kernel (bpf, perf, modules, kexec, keyrings,
    /// userfaultfd, io_uring, which would also run socket calls past this filter) or the
    /// mount and namespace machinery.
    const REFUSED_SYSCALLS: [libc::c_long; 30] = [
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_bpf,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_kexec_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_open_by_handle_at,
    ];

    /// Installs the seccomp filter: the refused calls fail with `EPERM`, and `socket`
    /// creates only IPv4/IPv6 TCP sockets and netlink ones (which runtimes use to list
    /// interfaces), plus UDP when the operator allows it. Unix sockets cannot be
    /// created, so no pathname socket can be connected to; `socketpair` (unnamed pairs,
    /// which runtimes use for their own pipes) stays.
    fn filter_syscalls(udp: bool) -> Result<(), String> {
        use std::collections::BTreeMap;

        use seccompiler::{
            BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
            SeccompFilter, SeccompRule,
        };

        let arg = |index, op, value: libc::c_int| {
            SeccompCondition::new(
                index,
                SeccompCmpArgLen::Dword,
                op,
                u64::try_from(value).unwrap_or_default(),
            )
            .map_err(|e| e.to_string())
        };
        let rule = |conditions| SeccompRule::new(conditions).map_err(|e| e.to_string());
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED_SYSCALLS
            .iter()
            .map(|call| (*call, Vec::new()))
            .collect();
        // Any family other than IPv4, IPv6 and netlink.
        let mut socket = vec![rule(vec![
            arg(0, SeccompCmpOp::Ne, libc::AF_INET)?,
            arg(0, SeccompCmpOp::Ne, libc::AF_INET6)?,
            arg(0, SeccompCmpOp::Ne, libc::AF_NETLINK)?,
        ])?];
        // Within IPv4 and IPv6, raw sockets always, datagrams unless allowed (the type
        // argument carries flags above its low bits).
        let kind = 0xf;
        let mut refused_kinds = vec![libc::SOCK_RAW];
        if !udp {
            refused_kinds.push(libc::SOCK_DGRAM);
        }
        for family in [libc::AF_INET, libc::AF_INET6] {
            for refused in &refused_kinds {
                socket.push(rule(vec![
                    arg(0, SeccompCmpOp::Eq, family)?,
                    arg(1, SeccompCmpOp::MaskedEq(kind), *refused)?,
                ])?);
            }
        }
        rules.insert(libc::SYS_socket, socket);
        let arch = std::env::consts::ARCH.try_into().map_err(|_| {
            format!(
                "seccomp filters are not built for {}",
                std::env::consts::ARCH
            )
        })?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(u32::try_from(libc::EPERM).unwrap_or(1)),
            arch,
        )
        .map_err(|e| e.to_string())?;
        let program: BpfProgram = filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?;
        seccompiler::apply_filter(&program).map_err(|e| e.to_string())
    }

    /// The absolute paths among the command's arguments (`/srv/data`, `--root=/srv`)
    /// that exist but that this process, confined now, cannot read: a file server told to
    /// serve a folder the sandbox closes would answer `EACCES` for all of it.
    fn denied_arguments(args: &[OsString]) -> Vec<String> {
        args.iter()
            .filter_map(|arg| arg.to_str())
            .map(|arg| arg.rsplit_once('=').map_or(arg, |(_, value)| value))
            .filter(|arg| arg.starts_with('/'))
            .filter(|arg| {
                let path = std::path::Path::new(arg);
                let opened = if path.is_dir() {
                    std::fs::read_dir(path).map(|_| ())
                } else if path.exists() {
                    std::fs::File::open(path).map(|_| ())
                } else {
                    Ok(())
                };
                opened.is_err_and(|error| error.kind() == std::io::ErrorKind::PermissionDenied)
            })
            .map(str::to_owned)
            .collect()
    }

    fn on(yes: bool) -> &'static str {
        if yes { "on" } else { "off" }
    }

    /// Root (or any process with capabilities) gives them all up; with `no_new_privs`
    /// the `exec` that follows cannot give them back.
    fn drop_capabilities() -> std::io::Result<&'static str> {
        use rustix::thread::{CapabilitySet, CapabilitySets, capabilities, set_capabilities};
        if capabilities(None)?.permitted.is_empty() {
            return Ok("none held");
        }
        set_capabilities(
            None,
            CapabilitySets {
                effective: CapabilitySet::empty(),
                permitted: CapabilitySet::empty(),
                inheritable: CapabilitySet::empty(),
            },
        )?;
        Ok("dropped")
    }

    /// Memory is `RLIMIT_DATA` (private writable memory), not `RLIMIT_AS`: runtimes
    /// reserve far more address space than they use (a WebAssembly instance reserves
    /// gigabytes of guard pages), and an address-space cap breaks them without bounding
    /// anything real. Limits can only go down: a hard limit already below ours stays.
    fn limit(spec: &Spec) -> std::io::Result<()> {
        for (resource, wanted) in [
            (Resource::Data, spec.memory_mb.saturating_mul(1024 * 1024)),
            (Resource::Nproc, spec.max_processes),
            (Resource::Nofile, spec.max_open_files),
            (Resource::Cpu, spec.cpu_seconds),
        ] {
            let current = getrlimit(resource);
            let hard = current.maximum.map_or(wanted, |max| max.min(wanted));
            setrlimit(
                resource,
                Rlimit {
                    current: Some(hard),
                    maximum: Some(hard),
                },
            )?;
        }
        Ok(())
    }

    fn confine(spec: &Spec) -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        Ruleset::default()
            .handle_access(AccessFs::from_all(ABI_ASKED))?
            .handle_access(AccessNet::from_all(ABI_ASKED))?
            .scope(Scope::from_all(ABI_ASKED))?
            .create()?
            .add_rules(path_beneath_rules(
                &spec.read,
                AccessFs::from_read(ABI_ASKED),
            ))?
            .add_rules(path_beneath_rules(
                &spec.write,
                AccessFs::from_all(ABI_ASKED),
            ))?
            .add_rule(NetPort::new(spec.proxy_port, AccessNet::ConnectTcp))?
            .restrict_self()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_survives_the_trip_through_argv() {
        let config = Sandbox {
            mode: SandboxMode::BestEffort,
            memory_mb: 512,
            max_processes: 64,
            max_open_files: 256,
            cpu_seconds: 60,
            read: vec!["/srv/models".into()],
            write: vec!["/srv/cache".into()],
            udp: true,
        };
        let program = Path::new("/usr/bin/env");
        let args = ["python3".to_owned(), "-c".to_owned(), "print(1)".to_owned()];
        let spec = Spec::new(
            &config,
            program,
            &args,
            Path::new("/data/u/files"),
            Path::new("/data/u/files"),
            4242,
            &[],
        );
        let argv = spec.to_args(program, &args);
        assert_eq!(argv[0], SUBCOMMAND);
        let (back, command) = Spec::from_args(argv.into_iter().skip(1)).unwrap();
        assert_eq!(back, spec);
        assert!(!back.enforced);
        assert!(back.udp);
        assert!(back.read.contains(&PathBuf::from("/srv/models")));
        assert!(back.read.contains(&PathBuf::from("/usr")));
        assert!(back.write.contains(&PathBuf::from("/data/u/files")));
        assert!(back.write.contains(&PathBuf::from("/srv/cache")));
        assert_eq!(command, ["/usr/bin/env", "python3", "-c", "print(1)"]);
        assert!(Spec::from_args(["--mode".into()]).is_err());
        assert!(Spec::from_args(["--proxy-port".into(), "1".into()]).is_err());
        assert!(Spec::from_args(["--bogus".into(), "1".into(), "--".into(), "x".into()]).is_err());
    }

    #[test]
    fn an_enforced_sandbox_needs_filesystem_and_network_rules() {
        let full = Support {
            filesystem: true,
            network: true,
            scopes: false,
        };
        assert_eq!(full.missing(), None);
        let no_network = Support {
            network: false,
            ..full
        };
        assert!(no_network.missing().unwrap().contains("network"));
        let nothing = Support {
            filesystem: false,
            ..no_network
        };
        assert!(nothing.missing().unwrap().contains("filesystem"));
    }

    #[test]
    fn no_rule_reaches_a_protected_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for dir in ["data/upstreams/x", "other/deep", "scripts"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("warden.toml"), "").unwrap();
        let protected = [root.join("data"), root.join("warden.toml")];
        let kept = around(
            vec![
                root.clone(),
                root.join("scripts"),
                root.join("data/upstreams/x"),
            ],
            &protected,
        );
        assert!(kept.contains(&root.join("other")));
        assert!(kept.contains(&root.join("scripts")));
        // The workdir inside the data dir is below it, not above: it stays.
        assert!(kept.contains(&root.join("data/upstreams/x")));
        assert!(!kept.contains(&root));
        assert!(!kept.contains(&root.join("data")));
        assert!(!kept.contains(&root.join("warden.toml")));
    }

    #[test]
    fn installation_is_the_prefix_above_bin() {
        assert!(!installation(Path::new("/bin/sh")).contains(&PathBuf::from("/")));
        assert!(
            installation(Path::new("/opt/tool/bin/tool")).contains(&PathBuf::from("/opt/tool"))
        );
        assert!(installation(Path::new("/srv/mcp/server.sh")).contains(&PathBuf::from("/srv/mcp")));
        assert_eq!(
            package_tree(Path::new(
                "/srv/app/node_modules/@scope/pkg/node_modules/x/dist/index.js"
            )),
            Some(PathBuf::from("/srv/app/node_modules"))
        );
        assert_eq!(
            package_tree(Path::new("/srv/mcp/server.py")),
            Some(PathBuf::from("/srv/mcp"))
        );
        let root = Path::new("/");
        assert!(locate("sh", root).is_some_and(|path| path.is_absolute()));
        assert_eq!(locate("no-such-program-here", root), None);
        assert_eq!(
            locate("bin/sh", Path::new("/usr")),
            Some(PathBuf::from("/usr/bin/sh"))
        );
    }
}
