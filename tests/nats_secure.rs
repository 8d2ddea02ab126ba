//! The server (the real binary, whose log is read) on nats-servers that require credentials or
//! TLS, each started by the test from a config file it writes: TLS with a CA made here, with and
//! without client certificates (mTLS); nkey users; user and password; a token; a creds file on a
//! server in operator mode (JWTs minted here). With the right settings the server is ready and
//! stores writes; with wrong credentials it says why in its log and in `/readyz`, and never shows
//! the secret. Without nats-server installed these tests say so and pass, unless
//! `CELLOS_REQUIRE_NATS=1`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;
mod nats;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nats::{Nats, NatsSpec};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(30);

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cellos test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        for (who, sans) in [("server", vec!["localhost".to_owned()]), ("client", vec![])] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("cellos test {who}"));
            if who == "server" {
                params
                    .subject_alt_names
                    .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            }
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{who}.pem"), cert.pem());
            write(&format!("{who}-key.pem"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn spec(conf_tail: String, scheme: &'static str, client: nats::ClientOptions) -> NatsSpec {
    NatsSpec {
        conf: format!(
            "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{store}}\" }}\n{conf_tail}"
        ),
        client,
        scheme,
    }
}

fn tls_spec(pki: &Pki, verify_clients: bool) -> NatsSpec {
    let conf = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify_clients}\n  timeout: 5\n}}\n",
        pki.path("server.pem").display(),
        pki.path("server-key.pem").display(),
        pki.path("ca.pem").display(),
    );
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem"),
    );
    let client: nats::ClientOptions = Arc::new(move || {
        async_nats::ConnectOptions::new()
            .add_root_certificates(ca.clone())
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true)
    });
    spec(conf, "tls", client)
}

/// Starts the binary on `nats` with `env`, waits until it is ready, and checks that a write is
/// stored and read back. Returns its output.
async fn serves(nats_url: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![("CELLOS_NATS_URL", nats_url)];
    all.extend_from_slice(env);
    let server = BinServer::spawn_unready(dir.path(), &all).await;
    server.wait_ready_within(WAIT).await;
    let seq = server
        .ingest_one(&started("secure-cell", "spec", None, &ts(1)))
        .await;
    assert!(seq >= 1);
    server.get("/v1/cells/secure-cell").await.expect(200);
    server.output()
}

/// Starts the binary with `env` and waits until `/readyz` says why it cannot connect; checks
/// that neither the answer nor the log holds `secret`. Returns (readyz detail, output).
async fn refused(
    nats_url: &str,
    env: &[(&str, &str)],
    secret: &str,
    why: &str,
) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![("CELLOS_NATS_URL", nats_url)];
    all.extend_from_slice(env);
    let server = BinServer::spawn_unready(dir.path(), &all).await;
    let deadline = Instant::now() + WAIT;
    let detail = loop {
        let r = server.get("/readyz").await;
        assert_eq!(r.status, 503, "{}", r.text());
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
        if detail.contains(why) {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said {why:?}: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The log is read from the process's stdout by another thread: it may trail `/readyz`.
    let output = loop {
        let output = server.output();
        if (output.contains("cannot connect to NATS") && output.contains(why))
            || Instant::now() >= deadline
        {
            break output;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(output.contains("cannot connect to NATS"), "{output}");
    assert!(output.contains(why), "{output}");
    for text in [&detail, &output] {
        assert!(!text.contains(secret), "the secret shows: {text}");
    }
    let metrics = server.get("/metrics").await.text();
    assert!(!metrics.contains(secret));
    (detail, output)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_of_our_own_with_and_without_client_certificates() {
    let pki = Pki::new();
    let Some(server_tls) = Nats::start_with(tls_spec(&pki, false)).await else {
        return;
    };
    let ca = path(&pki.path("ca.pem"));
    serves(
        &server_tls.url(),
        &[
            ("CELLOS_NATS_TLS_CA", &ca),
            ("CELLOS_NATS_TLS_REQUIRED", "true"),
        ],
    )
    .await;

    let mtls = Nats::start_with(tls_spec(&pki, true)).await.unwrap();
    let (cert, key) = (
        path(&pki.path("client.pem")),
        path(&pki.path("client-key.pem")),
    );
    serves(
        &mtls.url(),
        &[
            ("CELLOS_NATS_TLS_CA", &ca),
            ("CELLOS_NATS_TLS_CERT", &cert),
            ("CELLOS_NATS_TLS_KEY", &key),
        ],
    )
    .await;
    // Without a client certificate, the mTLS server refuses the handshake.
    let key_text = std::fs::read_to_string(pki.path("client-key.pem")).unwrap();
    let key_line = key_text.lines().nth(1).unwrap().to_owned();
    let (detail, _) = refused(
        &mtls.url(),
        &[("CELLOS_NATS_TLS_CA", &ca)],
        &key_line,
        "received fatal alert: BadCertificate",
    )
    .await;
    assert!(detail.contains(&mtls.url()), "names the server: {detail}");
    // Without our CA, the server's certificate is not trusted.
    refused(
        &server_tls.url(),
        &[],
        &key_line,
        "invalid peer certificate: UnknownIssuer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_users() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let conf = format!(
        "authorization {{ users: [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    );
    let client_seed = seed.clone();
    let client: nats::ClientOptions =
        Arc::new(move || async_nats::ConnectOptions::with_nkey(client_seed.clone()));
    let Some(nats) = Nats::start_with(spec(conf, "nats", client)).await else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let seed_file = keys.path().join("user.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    serves(&nats.url(), &[("CELLOS_NATS_NKEY", &path(&seed_file))]).await;

    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let stranger_file = keys.path().join("stranger.nk");
    std::fs::write(&stranger_file, &stranger).unwrap();
    refused(
        &nats.url(),
        &[("CELLOS_NATS_NKEY", &path(&stranger_file))],
        &stranger,
        "authorization violation",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_from_the_url_or_their_own_variables() {
    let conf = "authorization { user: \"cellos\", password: \"pw-right-7Q\" }\n".to_owned();
    let client: nats::ClientOptions = Arc::new(|| {
        async_nats::ConnectOptions::with_user_and_password("cellos".into(), "pw-right-7Q".into())
    });
    let Some(nats) = Nats::start_with(spec(conf, "nats", client)).await else {
        return;
    };
    serves(
        &nats.url(),
        &[
            ("CELLOS_NATS_USER", "cellos"),
            ("CELLOS_NATS_PASSWORD", "pw-right-7Q"),
        ],
    )
    .await;
    let in_url = nats.url().replace("nats://", "nats://cellos:pw-right-7Q@");
    let output = serves(&in_url, &[]).await;
    assert!(!output.contains("pw-right-7Q"), "{output}");
    refused(
        &nats.url(),
        &[
            ("CELLOS_NATS_USER", "cellos"),
            ("CELLOS_NATS_PASSWORD", "pw-wrong-3X"),
        ],
        "pw-wrong-3X",
        "authorization violation",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token() {
    let conf = "authorization { token: \"tok-right-5K\" }\n".to_owned();
    let client: nats::ClientOptions =
        Arc::new(|| async_nats::ConnectOptions::with_token("tok-right-5K".into()));
    let Some(nats) = Nats::start_with(spec(conf, "nats", client)).await else {
        return;
    };
    serves(&nats.url(), &[("CELLOS_NATS_TOKEN", "tok-right-5K")]).await;
    let in_url = nats.url().replace("nats://", "nats://tok-right-5K@");
    let output = serves(&in_url, &[]).await;
    assert!(!output.contains("tok-right-5K"), "{output}");
    refused(
        &nats.url(),
        &[("CELLOS_NATS_TOKEN", "tok-wrong-9Z")],
        "tok-wrong-9Z",
        "authorization violation",
    )
    .await;
}

/// JWTs of NATS decentralized authentication (an operator, an account, a user), minted here:
/// a JSON claim set signed with the issuer's nkey (ed25519), base64url without padding.
mod jwt {
    use data_encoding::BASE64URL_NOPAD;
    use nkeys::KeyPair;
    use serde_json::{json, Value};

    fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
        let claims = json!({
            "jti": format!("{name}-{}", &subject[..12]),
            "iat": 1_700_000_000,
            "iss": issuer.public_key(),
            "sub": subject,
            "name": name,
            "nats": nats,
        });
        let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
        let signed = format!("{header}.{body}");
        let signature = issuer.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
    }

    pub(crate) fn operator(op: &KeyPair) -> String {
        encode(
            op,
            &op.public_key(),
            "op",
            json!({"type": "operator", "version": 2}),
        )
    }

    /// An account without limits; with JetStream enabled if `jetstream` (the system account
    /// the server needs must not have it).
    pub(crate) fn account(op: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
        let js = if jetstream { -1 } else { 0 };
        let limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js,
        });
        let nats = json!({"limits": limits, "type": "account", "version": 2});
        encode(op, &account.public_key(), name, nats)
    }

    pub(crate) fn user(account: &KeyPair, user: &KeyPair) -> String {
        let nats = json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        encode(account, &user.public_key(), "cellos-server", nats)
    }

    /// A creds file as `nsc` writes it: the user JWT, then the user's seed.
    pub(crate) fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_on_a_server_in_operator_mode() {
    let op = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let conf = format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n",
        jwt::operator(&op),
        system.public_key(),
        system.public_key(),
        jwt::account(&op, &system, "SYS", false),
        account.public_key(),
        jwt::account(&op, &account, "cellos", true),
    );
    let keys = tempfile::tempdir().unwrap();
    let creds_of = |name: &str, issuer: &nkeys::KeyPair| {
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let file = keys.path().join(name);
        std::fs::write(&file, jwt::creds(&jwt::user(issuer, &user), &seed)).unwrap();
        (file, seed)
    };
    let (good, _) = creds_of("cellos.creds", &account);
    let test_creds = good.clone();
    let client: nats::ClientOptions = Arc::new(move || {
        let text = std::fs::read_to_string(&test_creds).unwrap();
        async_nats::ConnectOptions::with_credentials(&text).unwrap()
    });
    let Some(nats) = Nats::start_with(spec(conf, "nats", client)).await else {
        return;
    };
    serves(&nats.url(), &[("CELLOS_NATS_CREDS", &path(&good))]).await;

    // A user signed by an account the operator does not know.
    let (stranger, seed) = creds_of("stranger.creds", &nkeys::KeyPair::new_account());
    refused(
        &nats.url(),
        &[("CELLOS_NATS_CREDS", &path(&stranger))],
        &seed,
        "authorization violation",
    )
    .await;
}
