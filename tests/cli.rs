//! The `otpgate` command, run as a user would.

// The command is built with the proxy only.
#![cfg(feature = "proxy")]

mod common;

use common::otpgate;
use std::path::Path;

#[test]
fn keygen_check_mint_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = otpgate(
        dir.path(),
        &["keygen", "--algorithm", "ES256", "--out", "keys/gate.pem"],
    );
    assert!(ok, "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("keys/gate.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key files are private");
    }
    let (ok, _, err) = otpgate(
        dir.path(),
        &["keygen", "--algorithm", "ES256", "--out", "keys/gate.pem"],
    );
    assert!(
        !ok && err.contains("exists and is kept"),
        "never overwrites silently: {err}"
    );

    std::fs::write(
        dir.path().join("gate.toml"),
        "[token]\nalgorithm = \"ES256\"\nprivate_key = \"keys/gate.pem\"\naudience = \"shop\"\n[[protect]]\nprefix = \"/api/\"\n",
    )
    .unwrap();
    let (ok, out, err) = otpgate(dir.path(), &["check", "--config", "gate.toml"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("gate.toml: ok") && out.contains("ES256") && out.contains("protect    /api/"),
        "{out}"
    );

    let (ok, token, err) = otpgate(
        dir.path(),
        &["token", "mint", "--config", "gate.toml", "Bob@Example.com"],
    );
    assert!(ok, "{err}");
    let (ok, claims, err) = otpgate(
        dir.path(),
        &["token", "verify", "--config", "gate.toml", token.trim()],
    );
    assert!(ok, "{err}");
    let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(claims["sub"], "bob@example.com");
    assert_eq!(claims["aud"], "shop");

    let (ok, _, err) = otpgate(
        dir.path(),
        &["token", "verify", "--config", "gate.toml", "not.a.token"],
    );
    assert!(!ok && err.contains("token"), "{err}");
}

#[test]
fn a_bad_config_fails_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[otp]\nttl = \"5m\"\nmax_attempt = 3\n",
    )
    .unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "bad.toml"]);
    assert!(!ok);
    assert!(
        err.contains("max_attempt") && err.contains("line 3"),
        "{err}"
    );
    let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "missing.toml"]);
    assert!(!ok && err.contains("cannot read missing.toml"), "{err}");
}

#[test]
fn every_shipped_config_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (ok, out, err) = otpgate(root, &["check", "--config", path.to_str().unwrap()]);
            assert!(ok, "{}: {err}", path.display());
            assert!(out.contains(": ok"), "{out}");
            checked += 1;
        }
    }
    assert!(checked >= 1, "config/ holds no TOML file");
}

#[test]
fn check_names_the_key_and_line_of_semantic_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"127.0.0.1:8080\"\nupstream = \"ftp://app.internal\"\n",
    )
    .unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "bad.toml"]);
    assert!(!ok);
    assert!(err.contains("bad.toml:3: `server.upstream`"), "{err}");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"everywhere\"\n",
    )
    .unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "bad.toml"]);
    assert!(!ok && err.contains("bad.toml:2: `server.listen`"), "{err}");
    // Requests are judged in canonical form: a prefix that is not one would protect nothing.
    for prefix in ["api/", "/api//", "/%61pi/", "/public/../api", "", "/api/?x"] {
        std::fs::write(
            dir.path().join("bad.toml"),
            format!("[server]\nbody_limit = 1024\n[[protect]]\nprefix = \"{prefix}\"\n"),
        )
        .unwrap();
        let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "bad.toml"]);
        assert!(
            !ok && err.contains("bad.toml:4: `protect.prefix`"),
            "{prefix}: {err}"
        );
    }
    std::fs::write(dir.path().join("bad.toml"), "[server]\nmax_headers = 0\n").unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "bad.toml"]);
    assert!(
        !ok && err.contains("bad.toml:2: `server.max_headers`"),
        "{err}"
    );
}

#[test]
fn paths_in_a_config_file_are_taken_from_its_own_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["keygen", "--out", "etc/keys/gate.pem"]);
    assert!(ok, "{err}");
    std::fs::write(
        dir.path().join("etc/gate.toml"),
        "[token]\nprivate_key = \"keys/gate.pem\"\n",
    )
    .unwrap();
    // Run from the folder above, as a service manager would from `/`.
    let (ok, out, err) = otpgate(dir.path(), &["check", "--config", "etc/gate.toml"]);
    assert!(ok && out.contains("etc/gate.toml: ok"), "{out}{err}");
    let (ok, token, err) = otpgate(
        dir.path(),
        &[
            "token",
            "mint",
            "--config",
            "etc/gate.toml",
            "bob@example.com",
        ],
    );
    assert!(ok, "{err}");
    // Another process, same key file: the token verifies.
    let (ok, claims, err) = otpgate(
        dir.path(),
        &["token", "verify", "--config", "etc/gate.toml", token.trim()],
    );
    assert!(ok, "{err}");
    assert!(claims.contains("bob@example.com"), "{claims}");
    // A key next to the working directory instead is not the one the file names.
    std::fs::rename(dir.path().join("etc/keys"), dir.path().join("keys")).unwrap();
    let (ok, _, err) = otpgate(dir.path(), &["check", "--config", "etc/gate.toml"]);
    assert!(
        !ok && err.contains("etc/gate.toml:2: `token.private_key`")
            && err.contains("etc/keys/gate.pem"),
        "{err}"
    );
}

#[test]
fn token_commands_refuse_a_config_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gate.toml"),
        "[[protect]]\nprefix = \"/api/\"\n",
    )
    .unwrap();
    let (ok, out, err) = otpgate(
        dir.path(),
        &["token", "mint", "--config", "gate.toml", "bob@example.com"],
    );
    assert!(!ok && out.is_empty(), "no token is printed: {out}");
    assert!(
        err.contains("no token key is configured")
            && err.contains("could not be verified by another process")
            && err.contains("otpgate keygen --out keys/otpgate.pem"),
        "{err}"
    );
    let (ok, _, err) = otpgate(
        dir.path(),
        &["token", "verify", "--config", "gate.toml", "a.b.c"],
    );
    assert!(!ok && err.contains("no token key is configured"), "{err}");
    // Refusing makes no file: the hint is for the operator to follow.
    assert!(!dir.path().join("keys").exists());
    // With the config in another folder, the hint names the key's place there.
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::rename(
        dir.path().join("gate.toml"),
        dir.path().join("etc/gate.toml"),
    )
    .unwrap();
    let (ok, _, err) = otpgate(
        dir.path(),
        &[
            "token",
            "mint",
            "--config",
            "etc/gate.toml",
            "bob@example.com",
        ],
    );
    assert!(
        !ok && err.contains("otpgate keygen --out etc/keys/otpgate.pem"),
        "{err}"
    );
}
