//! Every admission rule and detail string (docs/CONTRACT.md, "Formation admission", "Name rules"
//! and "Authority checks"), and a property test over random member graphs.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn admit_json(v: &Value) -> Result<Admitted, Rejection> {
    admit(v.to_string().as_bytes())
}

fn detail(v: &Value) -> String {
    admit_json(v).unwrap_err().detail().to_owned()
}

fn flat(members: Value) -> Value {
    json!({"name": "demo", "coordinator": "c", "members": members})
}

#[test]
fn flat_document_is_stored_as_sent() {
    let doc = json!({"name": "team.alpha_one", "coordinator": "c", "extra": {"x": 1},
                     "members": [{"id": "c"}, {"id": "w", "authorizedBy": "c", "role": "r"}]});
    let a = admit_json(&doc).unwrap();
    assert_eq!(a.name, "team.alpha_one");
    assert_eq!(a.member_count, 2);
    assert_eq!(a.document, doc);
}

#[test]
fn json_and_shape_errors() {
    assert_eq!(
        admit(b"{1:2}").unwrap_err().detail(),
        "invalid json: key must be a string at line 1 column 2"
    );
    assert_eq!(
        detail(&json!({"name": "a", "members": []})),
        "invalid json: missing field `coordinator`"
    );
    assert_eq!(
        detail(&json!({"name": "a", "coordinator": "c", "members": {}})),
        "invalid json: invalid type: map, expected a sequence"
    );
    assert_eq!(
        detail(&json!([])),
        "invalid json: invalid length 0, expected struct FormationDocument with 3 elements"
    );
    // Arrays that serde would read as structs are not documents.
    assert_eq!(
        admit(br#"["arr-doc","c",[{"id":"c"}]]"#)
            .unwrap_err()
            .detail(),
        "invalid json: invalid type: sequence, expected struct FormationDocument"
    );
    assert_eq!(
        detail(&json!({"name": "a", "coordinator": "c", "members": [["c"]]})),
        "invalid json: invalid type: sequence, expected struct FormationMember"
    );
    // authorizedBy: null counts as absent.
    let doc = flat(json!([{"id": "c", "authorizedBy": null}]));
    assert!(admit_json(&doc).is_ok());
}

#[test]
fn hybrid_and_kubectl_checks_in_order() {
    assert_eq!(
        detail(&json!({"name": "a", "members": [], "metadata": {}})),
        "hybrid formation document: top-level flat field(s) [\"name\", \"members\"] conflict with kubectl-style envelope field(s) [\"metadata\"]; pick exactly one shape (see contracts/schemas/formation-v1.schema.json)"
    );
    let ok_spec = json!({"coordinator": "c", "members": [{"name": "c"}]});
    let base = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut m = json!({"apiVersion": "cellos.dev/v1", "kind": "Formation",
                           "metadata": {"name": "demo"}, "spec": ok_spec.clone()})
        .as_object()
        .unwrap()
        .clone();
        f(&mut m);
        detail(&Value::Object(m))
    };
    let k = "kubectl-style formation: ";
    assert_eq!(
        base(&|m| {
            m.insert("status".into(), json!({}));
            m.insert("aaa".into(), json!(1));
        }),
        format!("{k}unknown top-level field(s) [\"aaa\", \"status\"]; allowed: [\"apiVersion\", \"kind\", \"metadata\", \"spec\"]")
    );
    assert_eq!(
        base(&|m| {
            m.remove("apiVersion");
        }),
        format!("{k}missing or non-string 'apiVersion' (expected \"cellos.dev/v1\")")
    );
    assert_eq!(
        base(&|m| {
            m.insert("apiVersion".into(), json!("cellos.dev/v2"));
        }),
        format!("{k}unsupported apiVersion 'cellos.dev/v2' (expected \"cellos.dev/v1\")")
    );
    assert_eq!(
        base(&|m| {
            m.insert("kind".into(), json!(1));
        }),
        format!("{k}missing or non-string 'kind' (expected \"Formation\")")
    );
    assert_eq!(
        base(&|m| {
            m.insert("kind".into(), json!("Cell"));
        }),
        format!("{k}unsupported kind 'Cell' (expected \"Formation\")")
    );
    assert_eq!(
        base(&|m| {
            m.insert("metadata".into(), json!([]));
        }),
        format!("{k}missing 'metadata' object")
    );
    assert_eq!(
        base(&|m| {
            m.insert("metadata".into(), json!({"name": 1}));
        }),
        format!("{k}missing 'metadata.name'")
    );
    assert_eq!(
        base(&|m| {
            m.remove("spec");
        }),
        format!("{k}missing 'spec' object")
    );
    assert_eq!(
        base(&|m| {
            m.insert("spec".into(), json!({"members": []}));
        }),
        format!("{k}missing 'spec.coordinator'")
    );
    assert_eq!(
        base(&|m| {
            m.insert("spec".into(), json!({"coordinator": "c", "members": {}}));
        }),
        format!("{k}missing or non-array 'spec.members'")
    );
    assert_eq!(
        base(&|m| {
            m.insert(
                "spec".into(),
                json!({"coordinator": "c", "members": [{"name": "c"}, 3]}),
            );
        }),
        format!("{k}spec.members[1] is not an object")
    );
    assert_eq!(
        base(&|m| {
            m.insert(
                "spec".into(),
                json!({"coordinator": "c", "members": [{"id": "c"}]}),
            );
        }),
        format!("{k}spec.members[0] missing 'name'")
    );
    assert_eq!(
        base(&|m| {
            m.insert("spec".into(), json!({"coordinator": "c", "members": [{"name": "c", "id": "c"}]}));
        }),
        format!("{k}spec.members[0] declares both 'name' and 'id'; kubectl manifests address members by 'name' only — remove the 'id' field")
    );
    assert_eq!(
        base(&|m| {
            m.insert("metadata".into(), json!({"name": "demo", "labels": []}));
        }),
        format!("{k}'metadata.labels' must be an object")
    );
    assert_eq!(
        base(&|m| {
            m.insert(
                "metadata".into(),
                json!({"name": "demo", "annotations": "x"}),
            );
        }),
        format!("{k}'metadata.annotations' must be an object")
    );
}

#[test]
fn kubectl_normalizes_to_flat() {
    let doc = json!({"apiVersion": "cellos.dev/v1", "kind": "Formation",
        "metadata": {"name": "demo", "namespace": "dropped", "labels": {"a": "b"}, "annotations": {"n": "v"}},
        "spec": {"coordinator": "c", "replicas": 3, "members": [
            {"name": "c"}, {"name": "w", "authorizedBy": "c", "image": "x"}]}});
    let a = admit_json(&doc).unwrap();
    assert_eq!(
        a.document,
        json!({"name": "demo", "coordinator": "c",
               "members": [{"id": "c"}, {"id": "w", "authorizedBy": "c", "image": "x"}],
               "metadata": {"labels": {"a": "b"}, "annotations": {"n": "v"}}})
    );
    let bare = json!({"apiVersion": "cellos.dev/v1", "kind": "Formation", "metadata": {"name": "d"},
                      "spec": {"coordinator": "c", "members": [{"name": "c"}]}});
    assert!(admit_json(&bare)
        .unwrap()
        .document
        .get("metadata")
        .is_none());
}

#[test]
fn name_rules_in_order() {
    let name = |n: &str| check_name(n).err().map(|e| e.detail().to_owned());
    assert_eq!(name(""), Some("formation name must not be empty".into()));
    assert_eq!(
        name(&"a".repeat(254)),
        Some("formation name length 254 exceeds maximum of 253 bytes".into())
    );
    assert_eq!(name(&"a".repeat(253)), None);
    assert_eq!(name("."), Some("formation name '.' is reserved".into()));
    assert_eq!(name(".."), Some("formation name '..' is reserved".into()));
    let disallowed = |c: &str, at: usize| {
        format!("formation name contains disallowed character {c} at byte offset {at} (allowed: A-Z a-z 0-9 . - _)")
    };
    assert_eq!(name("a b"), Some(disallowed("\\x20", 1)));
    assert_eq!(name("ab/c"), Some(disallowed("'/'", 2)));
    assert_eq!(name("é"), Some(disallowed("\\xc3", 0)));
    assert_eq!(name("a\tb"), Some(disallowed("\\x09", 1)));
    assert_eq!(name("a\0"), Some(disallowed("\\x00", 1)));
    assert_eq!(name("a\n"), Some(disallowed("\\x0a", 1)));
    assert_eq!(name("   "), Some(disallowed("\\x20", 0)));
    assert_eq!(
        name("-a"),
        Some("formation name '-a' must not start with '-' or '.'".into())
    );
    assert_eq!(
        name(".a"),
        Some("formation name '.a' must not start with '-' or '.'".into())
    );
    assert_eq!(
        name("a."),
        Some("formation name 'a.' must not end with '-' or '.'".into())
    );
    for ok in ["a", "demo", "web-1", "team.alpha_one", "A_9"] {
        assert_eq!(name(ok), None, "{ok}");
    }
}

#[test]
fn authority_rules() {
    let d = |m: Value| {
        let e = admit_json(&flat(m)).unwrap_err();
        (std::mem::discriminant(&e), e.detail().to_owned())
    };
    let kind = |e: Rejection| std::mem::discriminant(&e);
    let nc = kind(Rejection::NoCoordinator(String::new()));
    let dup = kind(Rejection::DuplicateMemberId(String::new()));
    let ann = kind(Rejection::AuthorityNotNarrowing(String::new()));
    let cyc = kind(Rejection::Cycle(String::new()));
    assert_eq!(
        d(json!([])),
        (nc, "coordinator 'c' must appear in members list".into())
    );
    assert_eq!(
        d(json!([{"id": "c"}, {"id": "w", "authorizedBy": "c"}, {"id": "w", "authorizedBy": "c"}])),
        (dup, "duplicate member id 'w'".into())
    );
    assert_eq!(
        d(json!([{"id": "c", "authorizedBy": "c"}])),
        (ann, "coordinator 'c' must not declare authorizedBy".into())
    );
    assert_eq!(
        d(json!([{"id": "c"}, {"id": "w"}])),
        (
            ann,
            "non-coordinator member 'w' missing authorizedBy".into()
        )
    );
    assert_eq!(
        d(json!([{"id": "c"}, {"id": "w", "authorizedBy": "x"}])),
        (ann, "member 'w' references unknown parent 'x'".into())
    );
    assert_eq!(
        d(json!([{"id": "c"}, {"id": "w", "authorizedBy": "w"}])),
        (
            cyc,
            "authorizedBy cycle detected involving member 'w'".into()
        )
    );
    assert_eq!(
        d(json!([{"id": "c"}, {"id": "a", "authorizedBy": "b"}, {"id": "b", "authorizedBy": "a"}])),
        (
            cyc,
            "authorizedBy cycle detected involving member 'a'".into()
        )
    );
    assert_eq!(
        d(
            json!([{"id": "c"}, {"id": "x", "authorizedBy": "a"}, {"id": "a", "authorizedBy": "b"},
                 {"id": "b", "authorizedBy": "a"}])
        ),
        (
            cyc,
            "authorizedBy cycle detected on chain starting at 'x'".into()
        )
    );
    // Coordinator plus three workers, one two hops deep.
    let ok = json!([{"id": "c"}, {"id": "w1", "authorizedBy": "c"}, {"id": "w2", "authorizedBy": "c"},
                    {"id": "w3", "authorizedBy": "w1"}]);
    assert!(admit_json(&flat(ok)).is_ok());
}

/// The rules as a reader would state them: walk each member's chain with a visited set.
fn model(coordinator: &str, members: &[(String, Option<String>)]) -> Result<(), (u8, String)> {
    if !members.iter().any(|(id, _)| id == coordinator) {
        return Err((
            0,
            format!("coordinator '{coordinator}' must appear in members list"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (id, _) in members {
        if !seen.insert(id.clone()) {
            return Err((1, format!("duplicate member id '{id}'")));
        }
    }
    let parent: BTreeMap<&str, Option<&str>> = members
        .iter()
        .map(|(id, p)| (id.as_str(), p.as_deref()))
        .collect();
    for (id, p) in members {
        match (id == coordinator, p) {
            (true, Some(_)) => {
                return Err((
                    2,
                    format!("coordinator '{id}' must not declare authorizedBy"),
                ))
            }
            (false, None) => {
                return Err((
                    2,
                    format!("non-coordinator member '{id}' missing authorizedBy"),
                ))
            }
            (false, Some(p)) if !parent.contains_key(p.as_str()) => {
                return Err((2, format!("member '{id}' references unknown parent '{p}'")))
            }
            _ => {}
        }
    }
    for (id, _) in members.iter().filter(|(id, _)| id != coordinator) {
        let mut at = id.as_str();
        let mut visited = BTreeSet::new();
        while let Some(Some(next)) = parent.get(at) {
            if !visited.insert(at) {
                break;
            }
            at = next;
        }
        if at != coordinator {
            // It loops. Does the loop pass through the member itself?
            let mut walk = parent[id.as_str()];
            let mut steps = 0;
            while let Some(n) = walk {
                if n == id || steps > members.len() {
                    break;
                }
                walk = parent[n];
                steps += 1;
            }
            return Err(if walk == Some(id.as_str()) {
                (
                    3,
                    format!("authorizedBy cycle detected involving member '{id}'"),
                )
            } else {
                (
                    3,
                    format!("authorizedBy cycle detected on chain starting at '{id}'"),
                )
            });
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn member_graphs_match_the_model(
        coordinator in 0u8..6,
        members in prop::collection::vec((0u8..6, prop::option::weighted(0.85, 0u8..7)), 0..8),
    ) {
        let name = |i: u8| format!("m{i}");
        let coordinator = name(coordinator);
        let members: Vec<(String, Option<String>)> =
            members.into_iter().map(|(id, p)| (name(id), p.map(name))).collect();
        let doc = json!({
            "name": "demo", "coordinator": coordinator,
            "members": members.iter().map(|(id, p)| match p {
                Some(p) => json!({"id": id, "authorizedBy": p}),
                None => json!({"id": id}),
            }).collect::<Vec<_>>()
        });
        let got = admit_json(&doc).map(|_| ()).map_err(|e| {
            let rank = match e {
                Rejection::NoCoordinator(_) => 0,
                Rejection::DuplicateMemberId(_) => 1,
                Rejection::AuthorityNotNarrowing(_) => 2,
                Rejection::Cycle(_) => 3,
                Rejection::BadRequest(_) => 9,
            };
            (rank, e.detail().to_owned())
        });
        prop_assert_eq!(got, model(&coordinator, &members));
    }
}

/// Found by the admission fuzzer: a labelled kubectl document normalizes to flat fields plus
/// `metadata`, which admission then refuses as a hybrid. That is the reference's rule (a flat
/// document with a `metadata` key is a hybrid), so it is pinned here rather than "fixed".
#[test]
fn normalized_document_with_labels_is_a_hybrid_when_resubmitted() {
    let input =
        include_bytes!("../../fuzz/regressions/admission-labelled-kubectl-resubmitted.json");
    let admitted = admit(input).expect("the kubectl document is admitted");
    assert_eq!(
        admitted.document["metadata"],
        json!({"labels": {"team": "payments"}, "annotations": {"owner": "sre"}})
    );
    let again = serde_json::to_vec(&admitted.document).unwrap();
    assert_eq!(
        admit(&again).unwrap_err().to_string(),
        "hybrid formation document: top-level flat field(s) [\"name\", \"coordinator\", \"members\"] conflict with kubectl-style envelope field(s) [\"metadata\"]; pick exactly one shape (see contracts/schemas/formation-v1.schema.json)"
    );
    // Without labels or annotations the normalized document is a fixed point.
    let mut plain: Value = serde_json::from_slice(input).unwrap();
    plain["metadata"] = json!({"name": "payments-canary"});
    let first = admit(&serde_json::to_vec(&plain).unwrap()).unwrap();
    let second = admit(&serde_json::to_vec(&first.document).unwrap()).unwrap();
    assert_eq!(second.document, first.document);
}

/// Found by the admission fuzzer: `8E-56` inside a document parsed to a float one ulp off the
/// nearest, so the stored document changed when it was admitted again. Numbers are parsed
/// exactly (serde_json `float_roundtrip`), so a document is a fixed point, digits and all.
/// Under `cargo test` a dev-dependency (jsonschema) turns that feature on anyway, so this test
/// alone would not catch its removal; the input is also in `fuzz/corpus/admission/`, which
/// `.ci/fuzz` replays with the server's own feature set.
#[test]
fn numbers_in_documents_survive_readmission() {
    let input = include_bytes!("../../fuzz/regressions/admission-float-not-round-tripped.json");
    let first = admit(input).expect("admitted");
    let second = admit(&serde_json::to_vec(&first.document).unwrap()).expect("admitted again");
    assert_eq!(second.document, first.document);
    let doc = flat(json!([{"id": "c", "weight": 8E-56, "ratio": 0.1, "big": 6e74}]));
    let first = admit(doc.to_string().as_bytes()).unwrap();
    assert_eq!(first.document["members"][0]["weight"], json!(8e-56));
    let text = serde_json::to_string(&first.document).unwrap();
    assert!(text.contains("\"weight\":8e-56"), "{text}");
}
