//! `[metrics]`: the address of the Prometheus metrics listener, off when absent. It is
//! never the public port: the metrics tell anyone who reads them how sign-in is used.

use std::net::SocketAddr;

use super::schema::{MetricsSection, ServerSection};
use super::{ConfigError, Source};

/// Checks `[metrics]` against `[server]`: the address the metrics are served on, if any.
pub(super) fn check(
    metrics: &MetricsSection,
    server: &ServerSection,
    source: &Source<'_>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(listen) = &metrics.listen else {
        return Ok(None);
    };
    let invalid = |message: String| source.invalid("metrics.listen", Some(listen.span()), message);
    let address: SocketAddr = listen.get_ref().parse().map_err(|_| {
        invalid(format!(
            "`{}` is not an address like 127.0.0.1:9090",
            listen.get_ref()
        ))
    })?;
    // `[server] listen` is checked by its own section; one that does not parse is refused
    // there, so only a parsed one can clash.
    if let Ok(public) = server.listen.get_ref().parse::<SocketAddr>() {
        let same_port = public.port() == address.port();
        let overlapping = public.ip() == address.ip()
            || public.ip().is_unspecified()
            || address.ip().is_unspecified();
        // The metrics must never be served where clients connect, nor share its socket.
        if same_port && overlapping {
            return Err(invalid(format!(
                "`{address}` is the public port (`server.listen` = `{public}`): the metrics need a listener of their own"
            )));
        }
    }
    Ok(Some(address))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::schema::FileConfig;

    fn checked(text: &str) -> Result<Option<SocketAddr>, String> {
        let file: FileConfig = toml::from_str(text).unwrap();
        let source = Source {
            name: "gate.toml",
            text,
            dir: Path::new("."),
        };
        check(&file.metrics, &file.server, &source).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_is_off_and_an_address_of_its_own_is_taken() {
        assert_eq!(checked(""), Ok(None));
        assert_eq!(
            checked("[metrics]\nlisten = \"127.0.0.1:9090\"\n"),
            Ok(Some("127.0.0.1:9090".parse().unwrap()))
        );
        // Same address, another port: a listener of its own.
        let text =
            "[server]\nlisten = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"127.0.0.1:9090\"\n";
        assert!(checked(text).is_ok());
    }

    #[test]
    fn the_public_port_is_refused_with_the_key_and_line() {
        for (server, metrics) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
        ] {
            let text =
                format!("[server]\nlisten = \"{server}\"\n\n[metrics]\nlisten = \"{metrics}\"\n");
            let error = checked(&text).unwrap_err();
            assert!(
                error.starts_with("gate.toml:5: `metrics.listen`: "),
                "{error}"
            );
            assert!(error.contains("public port"), "{error}");
        }
        let error = checked("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            error.starts_with("gate.toml:2: `metrics.listen`: "),
            "{error}"
        );
    }
}
