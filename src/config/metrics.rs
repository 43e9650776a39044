//! `[metrics]`: the address of the Prometheus metrics listener, off when absent. It is
//! never the public port: the metrics tell anyone who reads them how sign-in is used.

use std::net::SocketAddr;

use super::schema::{MetricsSection, ServerSection};
use super::server::listen_overlaps;
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
    // `[server] listen` and `[server.tls] listen` are checked by their own section; one
    // that does not parse is refused there, so only a parsed one can clash.
    let public = std::iter::once(("server.listen", &server.listen)).chain(
        server
            .tls
            .as_ref()
            .map(|tls| ("server.tls.listen", &tls.get_ref().listen)),
    );
    for (key, public) in public {
        let Ok(public) = public.get_ref().parse::<SocketAddr>() else {
            continue;
        };
        // The metrics must never be served where clients connect, nor share its socket.
        if listen_overlaps(public, address) {
            return Err(invalid(format!(
                "`{address}` is a public port (`{key}` = `{public}`): the metrics need a listener of their own"
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
        // The TLS listener is a public port too, and an IPv4-mapped address is the IPv4
        // address the kernel binds.
        for (tls, metrics) in [
            ("0.0.0.0:8443", "127.0.0.1:8443"),
            ("127.0.0.1:8443", "[::ffff:127.0.0.1]:8443"),
        ] {
            let text = format!(
                "[server]\nlisten = \"127.0.0.1:8080\"\n[server.tls]\nlisten = \"{tls}\"\n\
                 [metrics]\nlisten = \"{metrics}\"\n"
            );
            let error = checked(&text).unwrap_err();
            assert!(error.contains("`server.tls.listen`"), "{error}");
        }
        let mapped = "[server]\nlisten = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"[::ffff:127.0.0.1]:8080\"\n";
        assert!(checked(mapped).unwrap_err().contains("public port"));
        let error = checked("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            error.starts_with("gate.toml:2: `metrics.listen`: "),
            "{error}"
        );
    }
}
