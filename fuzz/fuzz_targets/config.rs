//! The TOML configuration, on any text an operator may write.
//!
//! Invariants: loading never panics; what `env:NAME` resolves to (a planted canary
//! secret) never appears in an error; loading is deterministic; a configuration that
//! loads keeps every limit positive.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use warden_config::Config;

const CANARY: &str = "wdn_canary_5e3c9b1f7a2d4e6f8a0b";

fuzz_target!(|text: &str| {
    let source = Path::new("/nonexistent/warden-fuzz/warden.toml");
    let env = |_: &str| Some(CANARY.to_owned());
    match Config::from_text(text, source, env) {
        Err(error) => {
            let message = format!("{error} {error:?}");
            assert!(
                !message.contains(CANARY),
                "the secret is in an error: {message}"
            );
            let again = Config::from_text(text, source, env).expect_err("deterministic");
            assert_eq!(again.to_string(), error.to_string());
        }
        Ok(config) => {
            assert!(config.connections.max > 0);
            assert!(config.sessions.max_sessions > 0);
            assert!(config.sessions.idle_timeout > std::time::Duration::ZERO);
            let again = Config::from_text(text, source, env).expect("deterministic");
            assert_eq!(format!("{again:?}"), format!("{config:?}"));
        }
    }
});
