//! `[telemetry]`: traces sent to an OpenTelemetry collector over OTLP/HTTP (protobuf).
//! Off unless `otlp_endpoint` is set; every other field needs it.

use std::time::Duration;

use crate::upstream::Secret;

pub(crate) mod raw {
    use serde::Deserialize;

    #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Telemetry {
        pub otlp_endpoint: Option<String>,
        pub service_name: Option<String>,
        pub sampling_ratio: Option<f64>,
        #[serde(default)]
        pub headers: std::collections::BTreeMap<String, String>,
        pub export_timeout_ms: Option<u64>,
        pub max_queued_spans: Option<usize>,
    }
}

pub const DEFAULT_SERVICE_NAME: &str = "warden";
pub const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_QUEUED_SPANS: usize = 4096;
/// Where OTLP/HTTP takes traces, below the collector's base URL.
pub const TRACES_PATH: &str = "/v1/traces";

/// Where and how traces go.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// The collector's traces URL (`…/v1/traces`): `http` or `https`, no credentials.
    pub traces_url: String,
    /// `service.name` of every span.
    pub service_name: String,
    /// The share of new traces sampled (0 to 1). A trace the client started keeps the
    /// client's decision (parent-based).
    pub sampling_ratio: f64,
    /// Sent with every export (an API key for a hosted collector): values never print.
    pub headers: Vec<(String, Secret)>,
    /// How long one export may take.
    pub export_timeout: Duration,
    /// Finished spans waiting for export; beyond this, new ones are dropped (and
    /// counted), never waited for.
    pub max_queued_spans: usize,
}

/// Checks `[telemetry]`: `Ok(None)` without `otlp_endpoint`; errors name the field and
/// never repeat a header's value.
pub(crate) fn validate(
    raw: raw::Telemetry,
    lookup_env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Telemetry>, (&'static str, String)> {
    let Some(endpoint) = raw.otlp_endpoint else {
        let endpoint_only = [
            ("telemetry.service_name", raw.service_name.is_some()),
            ("telemetry.sampling_ratio", raw.sampling_ratio.is_some()),
            ("telemetry.headers", !raw.headers.is_empty()),
            (
                "telemetry.export_timeout_ms",
                raw.export_timeout_ms.is_some(),
            ),
            ("telemetry.max_queued_spans", raw.max_queued_spans.is_some()),
        ];
        return match endpoint_only.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err((field, "needs telemetry.otlp_endpoint".into())),
            None => Ok(None),
        };
    };
    let traces_url = traces_url(&endpoint).map_err(|m| ("telemetry.otlp_endpoint", m))?;
    let service_name = raw
        .service_name
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if !crate::is_valid_label(&service_name) {
        return Err((
            "telemetry.service_name",
            "must be 1-64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let sampling_ratio = raw.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling_ratio) {
        return Err(("telemetry.sampling_ratio", "must be between 0 and 1".into()));
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in raw.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err((
                "telemetry.headers",
                format!("{name:?} is not a header name"),
            ));
        }
        let value = Secret::resolve(value, lookup_env).map_err(|m| ("telemetry.headers", m))?;
        if http::HeaderValue::from_str(value.expose()).is_err() {
            return Err((
                "telemetry.headers",
                format!("the value of {name:?} is not a valid header value"),
            ));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(Some(Telemetry {
        traces_url,
        service_name,
        sampling_ratio,
        headers,
        export_timeout: Duration::from_millis(
            crate::bounded(
                raw.export_timeout_ms,
                DEFAULT_EXPORT_TIMEOUT_MS,
                100..=120_000,
            )
            .map_err(|m| ("telemetry.export_timeout_ms", m))?,
        ),
        max_queued_spans: crate::bounded(
            raw.max_queued_spans,
            DEFAULT_MAX_QUEUED_SPANS,
            64..=1_000_000,
        )
        .map_err(|m| ("telemetry.max_queued_spans", m))?,
    }))
}

/// The collector's base URL made its traces URL. A credential in the URL is refused:
/// it would be sent to wherever the name points and printed by every tool that shows
/// the URL; headers (`env:`) are the place for it.
fn traces_url(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint)
        .map_err(|_| "must be an http:// or https:// URL, e.g. http://127.0.0.1:4318".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL, e.g. http://127.0.0.1:4318".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not hold a user name or password; put credentials in telemetry.headers".into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query string or fragment".into());
    }
    let base = url.as_str().trim_end_matches('/');
    Ok(if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: raw::Telemetry) -> Result<Option<Telemetry>, (&'static str, String)> {
        validate(raw, &|name| {
            (name == "OTLP_KEY").then(|| "s3cret-canary".to_owned())
        })
    }

    fn with_endpoint(endpoint: &str) -> raw::Telemetry {
        raw::Telemetry {
            otlp_endpoint: Some(endpoint.into()),
            ..raw::Telemetry::default()
        }
    }

    #[test]
    fn off_without_an_endpoint_and_its_fields_need_one() {
        assert_eq!(check(raw::Telemetry::default()), Ok(None));
        let stray = raw::Telemetry {
            sampling_ratio: Some(0.5),
            ..raw::Telemetry::default()
        };
        assert_eq!(
            check(stray).unwrap_err().0,
            "telemetry.sampling_ratio",
            "a ratio without an endpoint would silently do nothing"
        );
    }

    #[test]
    fn the_endpoint_becomes_its_traces_url() {
        let url = |endpoint: &str| check(with_endpoint(endpoint)).unwrap().unwrap().traces_url;
        assert_eq!(
            url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url("https://otel.example.com/otlp/v1/traces"),
            "https://otel.example.com/otlp/v1/traces"
        );
        for bad in [
            "127.0.0.1:4318",
            "ftp://collector",
            "http://user:pw@collector:4318",
            "http://collector:4318/?token=x",
        ] {
            let (field, message) = check(with_endpoint(bad)).unwrap_err();
            assert_eq!(field, "telemetry.otlp_endpoint");
            assert!(
                !message.contains("pw") && !message.contains("token"),
                "{message}"
            );
        }
    }

    #[test]
    fn defaults_bounds_and_header_secrets() {
        let telemetry = check(with_endpoint("http://127.0.0.1:4318"))
            .unwrap()
            .unwrap();
        assert_eq!(telemetry.service_name, "warden");
        assert!((telemetry.sampling_ratio - 1.0).abs() < f64::EPSILON);
        assert_eq!(telemetry.export_timeout, Duration::from_secs(10));
        for ratio in [-0.1, 1.5, f64::NAN] {
            let raw = raw::Telemetry {
                sampling_ratio: Some(ratio),
                ..with_endpoint("http://127.0.0.1:4318")
            };
            assert_eq!(check(raw).unwrap_err().0, "telemetry.sampling_ratio");
        }
        let raw = raw::Telemetry {
            headers: [("X-Api-Key".to_owned(), "env:OTLP_KEY".to_owned())].into(),
            ..with_endpoint("http://127.0.0.1:4318")
        };
        let telemetry = check(raw).unwrap().unwrap();
        assert_eq!(telemetry.headers[0].0, "x-api-key");
        assert_eq!(telemetry.headers[0].1.expose(), "s3cret-canary");
        assert!(!format!("{telemetry:?}").contains("s3cret-canary"));
        let raw = raw::Telemetry {
            headers: [("x-api-key".to_owned(), "env:MISSING".to_owned())].into(),
            ..with_endpoint("http://127.0.0.1:4318")
        };
        assert_eq!(check(raw).unwrap_err().0, "telemetry.headers");
        let raw = raw::Telemetry {
            headers: [("x-api-key".to_owned(), "line\nbreak".to_owned())].into(),
            ..with_endpoint("http://127.0.0.1:4318")
        };
        let (field, message) = check(raw).unwrap_err();
        assert_eq!(field, "telemetry.headers");
        assert!(!message.contains("line"), "{message}");
    }
}
