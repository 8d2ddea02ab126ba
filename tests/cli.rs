//! The binary's configuration contract: fail closed on a missing or blank token, document flags.

use std::process::Command;

fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cellos-server"));
    c.env_remove("CELLOS_SERVER_API_TOKEN")
        .env_remove("CELLOS_NATS_URL")
        .env("CELLOS_SERVER_BIND", "127.0.0.1:0");
    for var in [
        "CELLOS_NATS_USER",
        "CELLOS_NATS_PASSWORD",
        "CELLOS_NATS_TOKEN",
        "CELLOS_NATS_CREDS",
        "CELLOS_NATS_NKEY",
        "CELLOS_NATS_TLS_CA",
        "CELLOS_NATS_TLS_CERT",
        "CELLOS_NATS_TLS_KEY",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn missing_token_exits_1_naming_the_variable() {
    let out = server().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CELLOS_SERVER_API_TOKEN must be set (fail-closed)"),
        "{err}"
    );
}

#[test]
fn blank_token_exits_1() {
    let out = server()
        .env("CELLOS_SERVER_API_TOKEN", "  \t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CELLOS_SERVER_API_TOKEN must not be empty"),
        "{err}"
    );
}

#[test]
fn help_documents_every_setting_without_leaking_the_token() {
    let out = server()
        .env("CELLOS_SERVER_API_TOKEN", "super-secret-value")
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "CELLOS_SERVER_API_TOKEN",
        "CELLOS_SERVER_BIND",
        "CELLOS_NATS_URL",
        "CELLOS_DATA_DIR",
        "CELLOS_MAX_CONNECTIONS",
        "CELLOS_RING_CAPACITY",
        "CELLOS_RING_BYTES",
        "CELLOS_WRITE_TIMEOUT_MS",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
    assert!(
        !help.contains("super-secret-value"),
        "--help printed the token"
    );
}

/// Every NATS secret given in the environment stays out of `--help`.
#[test]
fn help_never_shows_nats_secrets() {
    let out = server()
        .env(
            "CELLOS_NATS_URL",
            "nats://url-user:url-secret@127.0.0.1:4222",
        )
        .env("CELLOS_NATS_USER", "the-user-name")
        .env("CELLOS_NATS_PASSWORD", "password-secret")
        .env("CELLOS_NATS_TOKEN", "token-secret")
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "CELLOS_NATS_CREDS",
        "CELLOS_NATS_NKEY",
        "CELLOS_NATS_USER",
        "CELLOS_NATS_PASSWORD",
        "CELLOS_NATS_TOKEN",
        "CELLOS_NATS_TLS_CA",
        "CELLOS_NATS_TLS_CERT",
        "CELLOS_NATS_TLS_KEY",
        "CELLOS_NATS_TLS_REQUIRED",
        "CELLOS_NATS_STREAM_REPLICAS",
        "CELLOS_NATS_PLACEMENT_CLUSTER",
        "CELLOS_NATS_PLACEMENT_TAGS",
        "CELLOS_NATS_MAX_BYTES",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
    for secret in [
        "url-secret",
        "password-secret",
        "token-secret",
        "the-user-name",
    ] {
        assert!(!help.contains(secret), "--help printed {secret}");
    }
}

/// A credentials or TLS file that cannot be used stops the start with exit 1 and says which
/// file and why: no retry loop, and never what the file holds.
#[test]
fn unusable_nats_files_exit_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.nk");
    std::fs::write(&seed, "SECRET-LOOKING-GARBAGE").unwrap();
    let cases = [
        (
            "CELLOS_NATS_NKEY",
            seed.clone(),
            "nkey seed file",
            "does not hold an nkey seed",
        ),
        (
            "CELLOS_NATS_CREDS",
            dir.path().join("missing.creds"),
            "creds file",
            "No such file",
        ),
        (
            "CELLOS_NATS_TLS_CA",
            seed.clone(),
            "TLS CA file",
            "holds no PEM certificate",
        ),
    ];
    for (var, path, what, why) in cases {
        let out = server()
            .env("CELLOS_SERVER_API_TOKEN", "t")
            .env("CELLOS_NATS_URL", "nats://127.0.0.1:9")
            .env(var, &path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("{what} {}", path.display())),
            "{var}: {text}"
        );
        assert!(text.contains(why), "{var}: {text}");
        assert!(!text.contains("SECRET-LOOKING"), "{var}: {text}");
    }
}

/// NATS settings without a NATS URL, or half of a pair, are configuration errors.
#[test]
fn incomplete_nats_settings_are_refused() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("CELLOS_NATS_TOKEN", "x")],
            "NATS settings (--nats-token) are given but CELLOS_NATS_URL is not",
        ),
        (
            &[
                ("CELLOS_NATS_URL", "nats://127.0.0.1:9"),
                ("CELLOS_NATS_USER", "u"),
            ],
            "CELLOS_NATS_USER and CELLOS_NATS_PASSWORD go together",
        ),
        (
            &[
                ("CELLOS_NATS_URL", "nats://tok@127.0.0.1:9"),
                ("CELLOS_NATS_TOKEN", "other"),
            ],
            "NATS credentials given more than one way (token and token)",
        ),
    ];
    for (env, expected) in cases {
        let out = server()
            .env("CELLOS_SERVER_API_TOKEN", "t")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{env:?}: {err}");
    }
}

#[test]
fn bad_flag_values_are_refused() {
    for (flag, value) in [("--ring-capacity", "3"), ("--ring-bytes", "4096")] {
        let out = server()
            .env("CELLOS_SERVER_API_TOKEN", "t")
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&flag[2..]));
    }
}
