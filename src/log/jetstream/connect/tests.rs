//! Seeds and credentials are parsed as documented, secrets never show, and unusable files are
//! named with what is wrong with them.

use super::*;

#[test]
fn seeds_are_split_trimmed_and_stripped_of_credentials() {
    let s = NatsSettings::from_urls(" nats://a:4222, tls://b:4223 ,c:4224,").unwrap();
    assert_eq!(
        s.servers,
        ["nats://a:4222", "tls://b:4223", "nats://c:4224"]
    );
    assert_eq!(s.auth, NatsAuth::None);

    let s = NatsSettings::from_urls("nats://me:p%40ss@a:1,nats://me:p%40ss@b:2").unwrap();
    assert_eq!(s.servers, ["nats://a:1", "nats://b:2"]);
    assert_eq!(
        s.auth,
        NatsAuth::UserPassword {
            user: "me".into(),
            password: Secret::new("p@ss")
        }
    );
    let s = NatsSettings::from_urls("nats://s3cr3t@a:1,nats://b:2").unwrap();
    assert_eq!(s.auth, NatsAuth::Token(Secret::new("s3cr3t")));
    assert!(!format!("{s:?}").contains("s3cr3t"), "{s:?}");
}

#[test]
fn bad_seeds_and_conflicting_credentials_are_refused_without_echoing_them() {
    assert_eq!(NatsSettings::from_urls(" , "), Err(SettingsError::NoServer));
    assert_eq!(
        NatsSettings::from_urls("nats://a:1,http://u:secret@b:2"),
        Err(SettingsError::BadUrl { index: 1 })
    );
    assert_eq!(
        NatsSettings::from_urls("nats://[::1"),
        Err(SettingsError::BadUrl { index: 0 })
    );
    let mixed = NatsSettings::from_urls("nats://u:one@a:1,nats://u:two@b:2").unwrap_err();
    assert_eq!(mixed, SettingsError::MixedCredentials);
    assert!(!mixed.to_string().contains("one"));
    let two = NatsSettings::from_urls("nats://tok@a:1")
        .unwrap()
        .with_auth(NatsAuth::UserPassword {
            user: "u".into(),
            password: Secret::new("pw-secret"),
        })
        .unwrap_err();
    assert_eq!(two.to_string(), "NATS credentials given more than one way (token and user and password); choose one");
}

#[test]
fn unusable_files_are_named_with_the_problem_and_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "SUPERSECRETSEEDTEXT not a seed").unwrap();
    let missing = dir.path().join("missing");
    let base = NatsSettings::from_urls("nats://127.0.0.1:4222").unwrap();
    let cases = [
        (NatsAuth::NkeySeedFile(garbage.clone()), NatsTls::default(), "does not hold an nkey seed"),
        (NatsAuth::CredsFile(garbage.clone()), NatsTls::default(), "is not a NATS creds file"),
        (NatsAuth::CredsFile(missing.clone()), NatsTls::default(), "No such file"),
        (
            NatsAuth::None,
            NatsTls { ca: Some(garbage.clone()), ..NatsTls::default() },
            "holds no PEM certificate",
        ),
        (
            NatsAuth::None,
            NatsTls { ca: Some(missing.clone()), ..NatsTls::default() },
            "TLS CA file",
        ),
    ];
    for (auth, tls, expected) in cases {
        let settings = NatsSettings { auth, tls, ..base.clone() };
        let err = settings.connect_options().expect_err("refused").to_string();
        assert!(err.contains(expected), "{err}");
        assert!(err.contains(dir.path().to_str().unwrap()), "names the file: {err}");
        assert!(!err.contains("SUPERSECRET"), "{err}");
    }
}

#[test]
fn secrets_never_show_in_debug() {
    let settings = NatsSettings {
        auth: NatsAuth::UserPassword {
            user: "operator".into(),
            password: Secret::new("hunter2"),
        },
        ..NatsSettings::from_urls("nats://a:1").unwrap()
    };
    let shown = format!("{settings:?}");
    assert!(shown.contains("operator") && shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// A creds file (user JWT and nkey seed, as `nsc` writes them) is accepted. The server side of
/// operator mode is not tested here: see the README.
#[test]
fn a_creds_file_in_the_nsc_layout_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    let path = dir.path().join("user.creds");
    std::fs::write(&path, creds).unwrap();
    let settings = NatsSettings {
        auth: NatsAuth::CredsFile(path),
        ..NatsSettings::from_urls("nats://127.0.0.1:4222").unwrap()
    };
    assert!(settings.connect_options().is_ok());
    assert!(!format!("{settings:?}").contains(&seed));
}
