//! The binary's configuration contract: fail closed on a missing or blank token, document flags.

use std::process::Command;

fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cellos-server"));
    c.env_remove("CELLOS_SERVER_API_TOKEN")
        .env_remove("CELLOS_NATS_URL")
        .env("CELLOS_SERVER_BIND", "127.0.0.1:0");
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
        "CELLOS_WRITE_TIMEOUT_MS",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
    assert!(
        !help.contains("super-secret-value"),
        "--help printed the token"
    );
}

#[test]
fn bad_flag_values_are_refused() {
    let out = server()
        .env("CELLOS_SERVER_API_TOKEN", "t")
        .args(["--ring-capacity", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ring-capacity"));
}
