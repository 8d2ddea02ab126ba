//! The HTTP surface as clients see it: authentication on every authenticated route, routing (404,
//! 405 + `Allow`), CORS and OPTIONS, HEAD, the problem+json shape, and the meta routes
//! (`/healthz`, `/readyz`, `/metrics`, `/v1/version`).

mod common;

use common::*;
use reqwest::Method;

/// (method, path, content type, body) of one request.
type Request = (Method, String, Option<&'static str>, Option<Vec<u8>>);

/// Every authenticated route, as (method, path, content type, body). Includes requests whose
/// query, body or content type is invalid: auth must answer first.
fn authenticated_requests(fid: &str) -> Vec<Request> {
    let ev = serde_json::to_vec(&started("auth-cell", "spec", None, &ts(1))).unwrap();
    vec![
        (Method::GET, "/v1/formations".into(), None, None),
        (Method::HEAD, "/v1/formations".into(), None, None),
        (
            Method::POST,
            "/v1/formations".into(),
            Some("application/json"),
            Some(b"{}".to_vec()),
        ),
        (Method::GET, format!("/v1/formations/{fid}"), None, None),
        (Method::GET, "/v1/formations/some-name".into(), None, None),
        (Method::DELETE, format!("/v1/formations/{fid}"), None, None),
        (
            Method::GET,
            "/v1/formations/by-name/some-name".into(),
            None,
            None,
        ),
        (
            Method::DELETE,
            "/v1/formations/by-name/some-name".into(),
            None,
            None,
        ),
        (
            Method::POST,
            format!("/v1/formations/{fid}/status"),
            Some("application/json"),
            Some(br#"{"state":"RUNNING"}"#.to_vec()),
        ),
        (Method::GET, "/v1/cells".into(), None, None),
        (Method::GET, "/v1/cells?cursor=1".into(), None, None),
        (Method::GET, "/v1/cells?limit=abc".into(), None, None),
        (Method::GET, "/v1/cells/auth-cell".into(), None, None),
        (Method::HEAD, "/v1/cells/auth-cell".into(), None, None),
        (Method::GET, "/v1/events".into(), None, None),
        (Method::GET, "/v1/events?since=abc".into(), None, None),
        (
            Method::POST,
            "/v1/events".into(),
            Some(STRUCTURED),
            Some(ev.clone()),
        ),
        (
            Method::POST,
            "/v1/events".into(),
            Some("text/plain"),
            Some(ev),
        ),
        (
            Method::POST,
            "/v1/events".into(),
            Some(BATCH),
            Some(b"[not json".to_vec()),
        ),
        (Method::GET, "/v1/version".into(), None, None),
        (Method::HEAD, "/v1/version".into(), None, None),
        (Method::GET, "/metrics".into(), None, None),
        (Method::GET, "/ws/events".into(), None, None),
        (Method::GET, "/ws/events?since=abc".into(), None, None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authenticated_route_requires_a_valid_bearer_token() {
    let s = TestServer::start().await;
    let fid = new_fid();
    let short = &TOKEN[..TOKEN.len() - 1];
    let two_spaces = format!("Bearer  {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    let longer = format!("Bearer {TOKEN}x");
    let shorter = format!("Bearer {short}");
    let trailing_tab = format!("Bearer {TOKEN}\tx");
    let cases: Vec<(Auth<'_>, &str)> = vec![
        (Auth::None, "missing Authorization header"),
        (
            Auth::Raw(b"Bearer \xc3\xa9t\xc3\xa9"),
            "non-ascii Authorization header",
        ),
        (
            Auth::Raw(b"Bearer tok\xffen"),
            "non-ascii Authorization header",
        ),
        (Auth::Raw(b"Basic dXNlcjpwYXNz"), "expected Bearer scheme"),
        (Auth::Raw(lower.as_bytes()), "expected Bearer scheme"),
        (Auth::Raw(b"Bearer"), "expected Bearer scheme"),
        (Auth::Raw(b"Token abc"), "expected Bearer scheme"),
        (Auth::Raw(two_spaces.as_bytes()), "invalid token"),
        (Auth::Raw(b"Bearer wrong"), "invalid token"),
        (Auth::Raw(longer.as_bytes()), "invalid token"),
        (Auth::Raw(shorter.as_bytes()), "invalid token"),
        (Auth::Raw(trailing_tab.as_bytes()), "invalid token"),
    ];
    for (method, path, ct, body) in authenticated_requests(&fid) {
        for (auth, detail) in &cases {
            let headers: Vec<(&str, &str)> = ct.iter().map(|c| ("content-type", *c)).collect();
            let r = s
                .send(method.clone(), &path, *auth, &headers, body.clone())
                .await;
            if method == Method::HEAD {
                assert_head_problem(&r, 401);
            } else {
                assert_problem(&r, UNAUTHORIZED, detail);
            }
            assert!(
                r.header("www-authenticate").is_none(),
                "no WWW-Authenticate header"
            );
        }
    }
    // None of the rejected POSTs appended anything.
    let (events, cursor) = s.events_page("").await;
    assert!(events.is_empty(), "unauthenticated POSTs appended events");
    assert_eq!(cursor, 0);
    assert_problem(
        &s.get("/v1/cells/auth-cell").await,
        NOT_FOUND,
        "cell auth-cell not found",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_passes_and_only_the_first_authorization_header_counts() {
    let s = TestServer::start().await;
    for path in [
        "/v1/formations",
        "/v1/cells",
        "/v1/events",
        "/v1/version",
        "/metrics",
    ] {
        s.get(path).await.expect(200);
    }
    // Only the first Authorization header is looked at.
    let good = format!("Bearer {TOKEN}");
    let r = s
        .send(
            Method::GET,
            "/v1/cells",
            Auth::Raw(b"Bearer wrong"),
            &[("authorization", &good)],
            None,
        )
        .await;
    assert_problem(&r, UNAUTHORIZED, "invalid token");
    let r = s
        .send(
            Method::GET,
            "/v1/cells",
            Auth::Raw(good.as_bytes()),
            &[("authorization", "Bearer wrong")],
            None,
        )
        .await;
    r.expect(200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_are_public() {
    let s = TestServer::start().await;
    for auth in [
        Auth::None,
        Auth::Raw(b"Bearer wrong"),
        Auth::Raw(b"Basic x"),
        Auth::Token,
    ] {
        for path in ["/healthz", "/readyz"] {
            let r = s.get_as(path, auth).await;
            r.expect(200);
            assert_eq!(r.content_type().as_deref(), Some("application/json"));
            assert_eq!(
                r.header("access-control-allow-origin").as_deref(),
                Some("*")
            );
            let r = s.send(Method::HEAD, path, auth, &[], None).await;
            r.expect(200);
            assert!(r.body.is_empty());
        }
    }
    let ready = s.get_as("/readyz", Auth::None).await.json();
    assert_eq!(ready["status"], "ready");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_before_auth() {
    let s = TestServer::start().await;
    let long = format!("/{}", "x".repeat(300));
    let cut: String = long.chars().take(200).collect();
    let cases: Vec<(String, String)> = vec![
        ("/".into(), "/".into()),
        ("/nope?x=1&y=2".into(), "/nope".into()),
        ("/v1".into(), "/v1".into()),
        ("/v1/formations/".into(), "/v1/formations/".into()),
        (
            "/v1/formations/by-name/".into(),
            "/v1/formations/by-name/".into(),
        ),
        (
            "/v1/formations/x/status/extra".into(),
            "/v1/formations/x/status/extra".into(),
        ),
        ("/v1/cells/".into(), "/v1/cells/".into()),
        ("/v1/cells/a/b".into(), "/v1/cells/a/b".into()),
        ("/v1/events/".into(), "/v1/events/".into()),
        ("/V1/formations".into(), "/V1/formations".into()),
        ("/healthz/".into(), "/healthz/".into()),
        ("/ws/events/x".into(), "/ws/events/x".into()),
        (long, cut),
    ];
    for (path, shown) in &cases {
        for auth in [Auth::None, Auth::Token] {
            let r = s.get_as(path, auth).await;
            assert_problem(&r, NOT_FOUND, &format!("no route matched '{shown}'"));
        }
        let r = s.send(Method::DELETE, path, Auth::None, &[], None).await;
        assert_problem(&r, NOT_FOUND, &format!("no route matched '{shown}'"));
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_with_allow_before_auth() {
    let s = TestServer::start().await;
    let fid = new_fid();
    let cases: Vec<(&str, String, &str)> = vec![
        ("PATCH", "/v1/formations".into(), "POST,GET,HEAD"),
        ("DELETE", "/v1/formations".into(), "POST,GET,HEAD"),
        ("PUT", format!("/v1/formations/{fid}"), "GET,HEAD,DELETE"),
        ("POST", "/v1/formations/some-name".into(), "GET,HEAD,DELETE"),
        ("POST", "/v1/formations/by-name/x".into(), "GET,HEAD,DELETE"),
        ("GET", format!("/v1/formations/{fid}/status"), "POST"),
        ("DELETE", format!("/v1/formations/{fid}/status"), "POST"),
        ("POST", "/v1/version".into(), "GET,HEAD"),
        ("DELETE", "/v1/cells".into(), "GET,HEAD"),
        ("POST", "/v1/cells/c1".into(), "GET,HEAD"),
        ("POST", "/healthz".into(), "GET,HEAD"),
        ("PUT", "/readyz".into(), "GET,HEAD"),
        ("POST", "/metrics".into(), "GET,HEAD"),
        ("POST", "/ws/events".into(), "GET"),
    ];
    for (method, path, allow) in &cases {
        for auth in [Auth::None, Auth::Token] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let r = s.send(m, path, auth, &[], None).await;
            assert_problem(
                &r,
                METHOD_NOT_ALLOWED,
                &format!("method '{method}' not allowed for '{path}' \u{2014} see Allow header"),
            );
            assert_eq!(
                r.header("allow").as_deref(),
                Some(*allow),
                "{method} {path}"
            );
        }
    }
    // The query string is not echoed.
    let r = s
        .send(Method::PATCH, "/v1/formations?a=b", Auth::None, &[], None)
        .await;
    assert_problem(
        &r,
        METHOD_NOT_ALLOWED,
        "method 'PATCH' not allowed for '/v1/formations' \u{2014} see Allow header",
    );
    // /v1/events also takes POST (CloudEvents ingestion): the Allow header lists exactly
    // GET, HEAD and POST, comma-separated without spaces.
    let r = s
        .send(Method::PUT, "/v1/events", Auth::None, &[], None)
        .await;
    assert_problem(
        &r,
        METHOD_NOT_ALLOWED,
        "method 'PUT' not allowed for '/v1/events' \u{2014} see Allow header",
    );
    let allow = r.header("allow").expect("Allow header");
    let mut methods: Vec<&str> = allow.split(',').collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "HEAD", "POST"], "Allow: {allow}");
    // HEAD on the WebSocket route is refused like any other non-GET method.
    let r = s
        .send(Method::HEAD, "/ws/events", Auth::None, &[], None)
        .await;
    assert_head_problem(&r, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_an_unauthenticated_cors_preflight_on_any_path() {
    let s = TestServer::start().await;
    let fid = new_fid();
    let cases: Vec<(String, Option<&str>)> = vec![
        ("/v1/formations".into(), Some("POST,GET,HEAD")),
        (format!("/v1/formations/{fid}"), Some("GET,HEAD,DELETE")),
        (format!("/v1/formations/{fid}/status"), Some("POST")),
        ("/v1/cells".into(), Some("GET,HEAD")),
        ("/v1/cells/some-cell".into(), Some("GET,HEAD")),
        ("/v1/version".into(), Some("GET,HEAD")),
        ("/nope".into(), None),
        ("/v1/formations/".into(), None),
    ];
    let preflight_headers: [(&str, &str); 3] = [
        ("origin", "http://example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization"),
    ];
    for (path, allow) in &cases {
        for (auth, headers) in [
            (Auth::None, &[][..]),
            (Auth::None, &preflight_headers[..]),
            (Auth::Raw(b"Bearer wrong"), &preflight_headers[..]),
        ] {
            let r = s.send(Method::OPTIONS, path, auth, headers, None).await;
            r.expect(200);
            assert!(r.body.is_empty(), "OPTIONS {path} has a body");
            assert_eq!(
                r.header("access-control-allow-origin").as_deref(),
                Some("*")
            );
            assert_eq!(
                r.header("access-control-allow-methods").as_deref(),
                Some("GET,OPTIONS")
            );
            assert_eq!(
                r.header("access-control-allow-headers").as_deref(),
                Some("authorization,content-type")
            );
            assert_eq!(
                r.header("vary").as_deref(),
                Some("origin, access-control-request-method, access-control-request-headers")
            );
            assert_eq!(r.header("allow").as_deref(), *allow, "OPTIONS {path}");
            assert!(r.header("access-control-allow-credentials").is_none());
            assert!(r.header("access-control-max-age").is_none());
        }
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_cors_origin_header() {
    let s = TestServer::start().await;
    let ev = started("cors-cell", "spec", None, &ts(1));
    let accepted = s
        .post_events(STRUCTURED, serde_json::to_vec(&ev).unwrap())
        .await;
    accepted.expect(202);
    let mut responses = vec![accepted];
    for (method, path, auth) in [
        (Method::GET, "/v1/cells", Auth::Token),
        (Method::GET, "/v1/cells/cors-cell", Auth::Token),
        (Method::HEAD, "/v1/cells", Auth::Token),
        (Method::GET, "/v1/cells/none", Auth::Token),
        (Method::GET, "/v1/cells", Auth::None),
        (Method::GET, "/v1/cells?limit=x", Auth::Token),
        (Method::GET, "/nope", Auth::None),
        (Method::PATCH, "/v1/cells", Auth::None),
        (Method::GET, "/healthz", Auth::None),
        (Method::GET, "/metrics", Auth::Token),
        (Method::GET, "/v1/version", Auth::Token),
    ] {
        responses.push(s.send(method, path, auth, &[], None).await);
    }
    responses.push(s.post_events("text/plain", "x").await);
    for r in &responses {
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("*"),
            "status {}",
            r.status
        );
        assert_eq!(
            r.header("vary").as_deref(),
            Some("origin, access-control-request-method, access-control-request-headers"),
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_get_routes_with_headers_and_no_body() {
    let s = TestServer::start().await;
    let fid = new_fid();
    s.ingest(&[
        started("head-cell", "spec", Some("run"), &ts(1)),
        formation_created(&fid, "head-formation", &ts(2), document("head-formation")),
    ])
    .await;
    for path in [
        "/v1/formations".to_string(),
        format!("/v1/formations/{fid}"),
        "/v1/formations/head-formation".into(),
        "/v1/formations/by-name/head-formation".into(),
        "/v1/cells".into(),
        "/v1/cells/head-cell".into(),
        "/v1/events".into(),
        "/v1/version".into(),
        "/metrics".into(),
        "/healthz".into(),
        "/readyz".into(),
    ] {
        let get = s.get(&path).await;
        get.expect(200);
        assert!(!get.body.is_empty());
        let head = s.head(&path).await;
        head.expect(200);
        assert!(head.body.is_empty(), "HEAD {path} has a body");
        assert_eq!(head.content_type(), get.content_type(), "HEAD {path}");
        if let Some(len) = head.header("content-length") {
            if !path.starts_with("/metrics") {
                assert_eq!(
                    len,
                    get.body.len().to_string(),
                    "HEAD {path} content-length"
                );
            }
        }
        assert_eq!(
            head.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
    }
    // HEAD of a missing resource: the status and type of the GET, no body.
    let r = s.head("/v1/cells/missing").await;
    assert_head_problem(&r, 404);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_has_the_reference_shape() {
    let s = TestServer::start().await;
    let body = s.get("/v1/version").await.ok_json_text();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let sha = option_env!("CELLOS_GIT_SHA")
        .filter(|s| !s.is_empty())
        .map(|s| format!(",\"gitSha\":{}", serde_json::to_string(s).unwrap()))
        .unwrap_or_default();
    assert_eq!(
        body,
        format!(
            "{{\"server\":{{\"version\":\"0.5.4\"{sha},\"buildProfile\":\"{profile}\"}},\"api\":{{\"version\":\"v1\"}}}}"
        )
    );
    s.shutdown().await;
}

/// The value of the first sample line of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_behind_auth() {
    let s = TestServer::start().await;
    assert_problem(
        &s.get_as("/metrics", Auth::None).await,
        UNAUTHORIZED,
        "missing Authorization header",
    );
    let fid = new_fid();
    s.ingest(&[
        started("m1", "spec", None, &ts(1)),
        started("m2", "spec", None, &ts(2)),
        formation_created(&fid, "metrics-f", &ts(3), document("metrics-f")),
        cloud_event(
            "dev.cellos.events.cell.dns.v1.resolved",
            "x",
            None,
            serde_json::json!({}),
        ),
    ])
    .await;
    s.get("/v1/cells").await.expect(200);
    let r = s.get("/metrics").await;
    r.expect(200);
    let ct = r.content_type().unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "content type {ct}");
    let text = r.text();
    assert!(text.contains("cellos_events_applied_total"), "{text}");
    assert!(text.contains("cellos_http_requests_total"), "{text}");
    let cells = sample(&text, "cellos_events_applied_total", &["family=\"cell\""]);
    assert_eq!(cells, Some(2.0), "{text}");
    let formations = sample(
        &text,
        "cellos_events_applied_total",
        &["family=\"formation\""],
    );
    assert_eq!(formations, Some(1.0), "{text}");
    let posts = sample(
        &text,
        "cellos_http_requests_total",
        &["route=\"/v1/events\"", "status=\"202\""],
    );
    assert_eq!(posts, Some(1.0), "{text}");
    let unauthorized = sample(
        &text,
        "cellos_http_requests_total",
        &["route=\"/metrics\"", "status=\"401\""],
    );
    assert_eq!(unauthorized, Some(1.0), "{text}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_authenticated_first() {
    let s = TestServer::start().await;
    for (auth, detail) in [
        ("", "missing Authorization header"),
        ("authorization: Basic eDp5\r\n", "expected Bearer scheme"),
        ("authorization: Bearer nope\r\n", "invalid token"),
    ] {
        for query in ["", "?since=abc", "?subject=not.valid"] {
            let req = ws::raw_upgrade(query, &s.addr.to_string(), auth);
            let addr = s.addr;
            let (status, head, body) =
                tokio::task::spawn_blocking(move || raw_http(addr, req.as_bytes()))
                    .await
                    .unwrap();
            assert_eq!(status, 401, "{head}");
            let head = head.to_lowercase();
            assert!(
                head.contains("content-type: application/problem+json"),
                "{head}"
            );
            assert!(!head.contains("sec-websocket-accept"), "{head}");
            assert_eq!(
                String::from_utf8(body).unwrap(),
                problem_body(UNAUTHORIZED, detail)
            );
        }
    }
    s.shutdown().await;
}

/// Writes `request` on a fresh connection and reads until the server closes it (at most 10 s);
/// returns every response head that arrived, lowercased.
fn heads_until_close(addr: std::net::SocketAddr, request: Vec<u8>) -> Vec<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(&request).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).to_lowercase();
    text.split("http/1.1 ")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_left_unread_closes_the_connection() {
    let s = TestServer::start().await;
    let fid = new_fid();
    let auth = format!("authorization: Bearer {TOKEN}\r\n");
    let next = "GET /v1/version HTTP/1.1\r\nhost: x\r\n\r\n";
    // Each is answered before its body is read; a second request pipelined behind it must not be
    // served on that connection, and the answer says the connection closes.
    let unread = [
        ("POST /v1/formations", "", "application/json", "{}", "401"),
        (
            "PUT /v1/formations/x/status",
            auth.as_str(),
            "application/json",
            "{}",
            "405",
        ),
        (
            &format!("POST /v1/formations/{fid}/status") as &str,
            auth.as_str(),
            "text/plain",
            r#"{"state":"RUNNING"}"#,
            "415",
        ),
    ];
    for (line, auth, ct, body, status) in unread {
        let req = format!(
            "{line} HTTP/1.1\r\nhost: x\r\n{auth}content-type: {ct}\r\ncontent-length: {}\r\n\r\n{body}{next}",
            body.len()
        );
        let addr = s.addr;
        let heads = tokio::task::spawn_blocking(move || heads_until_close(addr, req.into_bytes()))
            .await
            .unwrap();
        assert_eq!(heads.len(), 1, "{line}: {heads:?}");
        assert!(heads[0].starts_with(status), "{line}: {heads:?}");
        assert!(heads[0].contains("connection: close"), "{line}: {heads:?}");
    }
    // A declared length over the limit, with only part of it sent: 413, and the server hangs up
    // instead of waiting for the rest.
    let req = format!(
        "POST /v1/formations HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: 2000000\r\n\r\n{}",
        " ".repeat(1000)
    );
    let addr = s.addr;
    let heads = tokio::task::spawn_blocking(move || heads_until_close(addr, req.into_bytes()))
        .await
        .unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("413"), "{heads:?}");
    assert!(heads[0].contains("connection: close"), "{heads:?}");
    // A body read to its end keeps the connection: the pipelined request is answered on it.
    let body = "{not json";
    let req = format!(
        "POST /v1/formations HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}GET /v1/version HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n",
        body.len()
    );
    let heads = tokio::task::spawn_blocking(move || heads_until_close(addr, req.into_bytes()))
        .await
        .unwrap();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].starts_with("400"), "{heads:?}");
    assert!(!heads[0].contains("connection: close"), "{heads:?}");
    assert!(heads[1].starts_with("200"), "{heads:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_client_survives_refusals_of_bodies_it_sent() {
    let s = TestServer::start().await;
    let fid = new_fid();
    let status = format!("/v1/formations/{fid}/status");
    let big = vec![b' '; 70_000];
    let json = [("content-type", "application/json")];
    let text = [("content-type", "text/plain")];
    // One keep-alive client, as cellctl and the contract tests use: a refusal that leaves the
    // body unread must not break the request that follows it.
    for _ in 0..100 {
        s.send(
            Method::POST,
            "/v1/formations",
            Auth::Token,
            &json,
            Some(big.clone()),
        )
        .await
        .expect(413);
        s.send(
            Method::POST,
            &status,
            Auth::Token,
            &text,
            Some(b"{}".to_vec()),
        )
        .await
        .expect(415);
    }
    s.shutdown().await;
}
