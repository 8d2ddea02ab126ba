//! GET /v1/events: frames keep the posted bytes, since/limit paging and its cursor, query errors,
//! and the `formation=` filter (by id or name) whose cursor still advances past skipped events.

mod common;

use common::*;
use serde_json::{json, Value};

fn frames(items: &[(u64, &[u8])], cursor: u64) -> Vec<u8> {
    let mut out = b"{\"events\":[".to_vec();
    for (i, (seq, payload)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"seq\":{seq},\"event\":").as_bytes());
        out.extend_from_slice(payload);
        out.push(b'}');
    }
    out.extend_from_slice(format!("],\"cursor\":{cursor}}}").as_bytes());
    out
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn seqs(page: &[(u64, Value)]) -> Vec<u64> {
    page.iter().map(|(s, _)| *s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_carry_the_event_bytes_exactly_as_posted() {
    let s = TestServer::start().await;
    // Odd spacing, unsorted keys, escapes, a float with a trailing zero, a big integer.
    let e1 = br#"{ "type" : "dev.example.raw", "specversion":"1.0","id":"raw-1","source":"s",
        "data":{"z":1,"a":"caf\u00e9 \"q\"","n":1.50,"big":12345678901234567890,"arr":[ 1 , 2 ]} }"#;
    let e2 = br#"{"specversion":"1.0","id":"raw-2","source":"s","type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2026-01-01T00:00:00.000Z","data":{"specId":"sp","cellId":"raw cell"}}"#;
    let e3 = "{\"specversion\":\"1.0\",\n\t\"id\":\"raw-3\",\"source\":\"s\",\"type\":\"t\",\"data\":\"\u{1F600} ü\"}".as_bytes();
    let mut structured = b"  \n".to_vec();
    structured.extend_from_slice(e1);
    structured.extend_from_slice(b"\n\n");
    assert_eq!(s.ingest_raw(STRUCTURED, structured).await, [1]);
    let mut batch = b" [ ".to_vec();
    batch.extend_from_slice(e2);
    batch.extend_from_slice(b" ,\n ");
    batch.extend_from_slice(e3);
    batch.extend_from_slice(b"\n] ");
    assert_eq!(s.ingest_raw(BATCH, batch).await, [2, 3]);

    let want = frames(&[(1, e1), (2, e2), (3, e3)], 3);
    let got = s.get_ok("/v1/events").await;
    assert_eq!(show(&got), show(&want));
    let got = s.get_ok("/v1/events?since=1&limit=1").await;
    assert_eq!(show(&got), show(&frames(&[(2, e2)], 2)));
    // The stored event was projected as well.
    assert_eq!(s.get_json("/v1/cells/raw%20cell").await["state"], "running");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_limit_page_through_the_log() {
    let s = TestServer::start().await;
    let events: Vec<Value> = (0..1100)
        .map(|i| cloud_event("dev.example.tick", "s", None, json!({"i": i})))
        .collect();
    s.ingest(&events[..1000]).await;
    s.ingest(&events[1000..]).await;

    // Defaults: since 0, limit 100; limit 0 also means 100; above 1000 means 1000.
    let cases: Vec<(&str, std::ops::RangeInclusive<u64>, u64)> = vec![
        ("", 1..=100, 100),
        ("?limit=0", 1..=100, 100),
        ("?since=0", 1..=100, 100),
        ("?since=100", 101..=200, 200),
        ("?since=200&limit=30", 201..=230, 230),
        ("?limit=1000", 1..=1000, 1000),
        ("?limit=1001", 1..=1000, 1000),
        ("?limit=5000", 1..=1000, 1000),
        ("?since=50&limit=99999999", 51..=1050, 1050),
        ("?since=1095&limit=100", 1096..=1100, 1100),
        ("?since=1099", 1100..=1100, 1100),
        ("?limit=1&since=7", 8..=8, 8),
        // Unknown keys are ignored.
        ("?foo=bar&since=10&limit=2", 11..=12, 12),
    ];
    for (q, range, cursor) in cases {
        let (page, c) = s.events_page(q).await;
        assert_eq!(seqs(&page), range.clone().collect::<Vec<_>>(), "{q}");
        assert_eq!(c, cursor, "{q}");
        for (seq, ev) in &page {
            assert_eq!(ev, &events[*seq as usize - 1], "{q}: seq {seq}");
        }
    }
    // An empty page answers cursor = since (never lower).
    for since in [1100u64, 1101, 9999, u64::MAX] {
        let r = s.get_ok(&format!("/v1/events?since={since}")).await;
        assert_eq!(show(&r), format!("{{\"events\":[],\"cursor\":{since}}}"));
    }
    // Paging with since = cursor sees every event once, in order.
    let mut since = 0;
    let mut seen = Vec::new();
    for _ in 0..200 {
        let (page, cursor) = s.events_page(&format!("?since={since}&limit=7")).await;
        if page.is_empty() {
            assert_eq!(cursor, since);
            break;
        }
        assert_eq!(cursor, page.last().unwrap().0);
        seen.extend(seqs(&page));
        since = cursor;
    }
    assert_eq!(seen, (1..=1100).collect::<Vec<u64>>());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_are_400() {
    let s = TestServer::start().await;
    s.ingest_one(&cloud_event("dev.example.tick", "s", None, json!({})))
        .await;
    let digit = "Failed to deserialize query string: invalid digit found in string";
    let cases = [
        ("?since=abc", digit),
        ("?since=-1", digit),
        ("?since=1.0", digit),
        ("?limit=x", digit),
        ("?limit=-5", digit),
        (
            "?since=18446744073709551616",
            "Failed to deserialize query string: number too large to fit in target type",
        ),
        (
            "?since=",
            "Failed to deserialize query string: cannot parse integer from empty string",
        ),
    ];
    for (q, detail) in cases {
        assert_problem(&s.get(&format!("/v1/events{q}")).await, BAD_REQUEST, detail);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_formation_filter_matches_by_id_or_name_and_the_cursor_advances_past_skips() {
    let s = TestServer::start().await;
    let (f1, f2) = (new_fid(), new_fid());
    let evs = vec![
        formation_created(&f1, "alpha", &ts(1), document("alpha")), // 1
        cloud_event(
            STARTED,
            "sup",
            Some(&ts(2)),
            json!({"cellId": "k1", "specId": "s", "formationId": f1}),
        ), // 2
        formation_created(&f2, "beta", &ts(3), document("beta")),   // 3
        started("k2", "s", None, &ts(4)),                           // 4
        formation_phase(&f1, "alpha", "running", &ts(5)),           // 5
        cloud_event(
            STARTED,
            "sup",
            Some(&ts(6)),
            json!({"cellId": "k3", "specId": "s", "correlation": {"formationId": f1.to_uppercase()}}),
        ), // 6
        formation_phase(&f2, "beta", "running", &ts(7)),            // 7
        cloud_event("dev.example.other", "x", None, json!({"n": 1})), // 8
    ];
    s.ingest(&evs).await;
    let raw: Vec<Vec<u8>> = evs.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
    let page = |seqs: &[u64], cursor: u64| {
        let items: Vec<(u64, &[u8])> = seqs
            .iter()
            .map(|&s| (s, raw[s as usize - 1].as_slice()))
            .collect();
        show(&frames(&items, cursor))
    };
    let simple_upper = f1.replace('-', "").to_uppercase();
    let ghost = new_fid();
    let cases: Vec<(String, String)> = vec![
        (format!("?formation={f1}"), page(&[1, 2, 5, 6], 8)),
        ("?formation=alpha".into(), page(&[1, 2, 5, 6], 8)),
        (format!("?formation={simple_upper}"), page(&[1, 2, 5, 6], 8)),
        (format!("?formation={f1}&limit=2"), page(&[1, 2], 2)),
        (format!("?formation={f1}&since=2&limit=2"), page(&[5, 6], 6)),
        ("?formation=alpha&since=2&limit=1".into(), page(&[5], 5)),
        (format!("?formation={f1}&since=6"), page(&[], 8)),
        (format!("?formation={f1}&since=6&limit=1"), page(&[], 8)),
        (format!("?formation={f2}"), page(&[3, 7], 8)),
        ("?formation=beta&since=3".into(), page(&[7], 8)),
        (format!("?formation={ghost}"), page(&[], 8)),
        ("?formation=ghost".into(), page(&[], 8)),
        ("?formation=ghost&since=3".into(), page(&[], 8)),
        ("?formation=ghost&since=100".into(), page(&[], 100)),
        (format!("?formation={f1}&since=100"), page(&[], 100)),
    ];
    for (q, want) in cases {
        assert_eq!(
            show(&s.get_ok(&format!("/v1/events{q}")).await),
            want,
            "{q}"
        );
    }
    // Paging a filtered view with since = cursor terminates and sees each match once.
    let mut since = 0;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let (page, cursor) = s
            .events_page(&format!("?formation=alpha&since={since}&limit=1"))
            .await;
        seen.extend(seqs(&page));
        if page.is_empty() {
            assert_eq!(cursor, 8);
            break;
        }
        since = cursor;
    }
    assert_eq!(seen, [1, 2, 5, 6]);
    s.shutdown().await;
}
