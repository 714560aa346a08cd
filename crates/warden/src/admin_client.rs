//! Asking a running Warden's admin listener (plain HTTP on this machine): `warden tools
//! list` reads its catalogue, `warden reload` makes it read its configuration again.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use crate::Failure;

/// How long an admin request may take (a reload restarts upstreams, which takes time).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(70);

/// The admin listener to ask: `--admin`, else the `[admin] listen` of `--config`, else
/// the default.
pub(crate) fn address(admin: Option<String>, config: Option<&Path>) -> Result<String, Failure> {
    Ok(match (admin, config) {
        (Some(admin), _) => admin,
        (None, Some(config)) => warden_config::locations_in(config)?.admin_listen,
        (None, None) => warden_config::DEFAULT_ADMIN_LISTEN.to_owned(),
    })
}

/// GETs `path`; anything but 200 is an error naming the status.
pub(crate) fn get(address: &str, path: &str) -> Result<String, Failure> {
    let (status, body) = request(address, "GET", path)?;
    if status != 200 {
        return Err(format!("the admin listener at {address} answered {status}").into());
    }
    Ok(body)
}

/// One request; the answer's status and body.
pub(crate) fn request(address: &str, method: &str, path: &str) -> Result<(u16, String), Failure> {
    let unreachable = |error: std::io::Error| {
        format!(
            "cannot reach Warden's admin listener at {address} ({error}); is Warden running? Name its listener with --admin ADDR or --config FILE"
        )
    };
    let socket: std::net::SocketAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an address and port, e.g. 127.0.0.1:9090"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5))
        .map_err(unreachable)?;
    stream
        .set_read_timeout(Some(ADMIN_TIMEOUT))
        .map_err(unreachable)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(unreachable)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("the admin listener at {address} did not answer in HTTP"))?;
    Ok((status, body.to_owned()))
}
