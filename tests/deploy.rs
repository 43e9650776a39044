//! deploy/otpgate.service: accepted by `systemd-analyze verify`, and as hardened as
//! deploy/README.md says.

// The unit starts the command, which is built with the proxy only.
#![cfg(feature = "proxy")]

use std::path::Path;
use std::process::Command;

const INSTALLED_BINARY: &str = "/usr/local/bin/otpgate";

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/otpgate.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of `key` in the unit, in order (a key may appear more than once).
fn values<'t>(unit: &'t str, key: &str) -> Vec<&'t str> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim())
        .collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = unit_text();
    let exec_start = format!("ExecStart={INSTALLED_BINARY} ");
    assert!(unit.contains(&exec_start), "{unit}");
    // verify checks that ExecStart's binary exists: the one just built stands in for
    // the installed one, in a copy of the unit.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("otpgate.service");
    std::fs::write(
        &copy,
        unit.replace(
            &exec_start,
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_otpgate")),
        ),
    )
    .unwrap();
    let output = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            panic!("cannot run systemd-analyze ({e}); `make test-deps` installs it (apt: systemd)")
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{stderr}");
    // verify reports unknown keys and bad values but still exits 0: any word from it is
    // a mistake in the unit.
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "{stdout}{stderr}"
    );
}

#[test]
fn systemd_analyze_verify_catches_a_mistake() {
    // The check above means something only if verify speaks up about a bad unit here.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("otpgate.service");
    let unit = unit_text()
        .replace(
            &format!("ExecStart={INSTALLED_BINARY} "),
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_otpgate")),
        )
        .replace("ProtectHome=yes", "ProtectHome=perhaps");
    std::fs::write(&copy, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}); `make test-deps` installs it (apt: systemd)")
        });
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("perhaps"), "{said}");
}

#[test]
fn the_unit_is_hardened() {
    let unit = unit_text();
    for (key, value) in [
        ("User", "otpgate"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadOnlyPaths", "/etc/otpgate"),
        // No capabilities at all while server.listen is 1024 or above.
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        (
            "ExecStart",
            "/usr/local/bin/otpgate run --config /etc/otpgate/otpgate.toml",
        ),
    ] {
        assert_eq!(values(&unit, key), [value], "{key}");
    }
    // The capability to bind a low port is offered commented out only.
    assert!(unit.contains("#AmbientCapabilities=CAP_NET_BIND_SERVICE"));
}

/// The forward-auth snippets in the README are the files `tests/forward_auth.rs` runs:
/// each file, less its opening comment, appears in the README as written.
#[test]
fn the_readme_forward_auth_snippets_are_the_tested_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for file in ["nginx.conf", "Caddyfile", "traefik.yml"] {
        let text = std::fs::read_to_string(root.join("deploy/forward-auth").join(file))
            .unwrap_or_else(|e| panic!("deploy/forward-auth/{file}: {e}"));
        let body: Vec<&str> = text
            .lines()
            .skip_while(|line| line.starts_with('#') || line.trim().is_empty())
            .collect();
        let body = body.join("\n");
        assert!(body.lines().count() > 10, "{file} has a body");
        assert!(
            readme.contains(body.trim_end()),
            "README.md does not carry deploy/forward-auth/{file} as written"
        );
    }
}
