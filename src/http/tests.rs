//! Unit tests of the front's HTTP decisions.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::headers::StripRules;
use super::{Front, HttpSettings, IdentityHeaders, Route};
use crate::Gate;

#[test]
fn stripping_removes_patterns_and_configured_names() {
    let settings = IdentityHeaders {
        strip: vec!["X-Auth-*".into(), "X-Custom".into()],
        ..IdentityHeaders::default()
    };
    let rules = StripRules::new(&settings);
    let mut headers = HeaderMap::new();
    for name in [
        "x-auth-subject",
        "X-AUTH-Anything",
        "x-otpgate-jwt",
        "x-custom",
        "x-keep",
        "authorization",
    ] {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("v"),
        );
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| rules.kind(n) == super::headers::HeaderKind::Stripped)
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
    let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    left.sort();
    assert_eq!(left, vec!["authorization", "x-keep"]);
}

fn gate(trusted: &[&str]) -> Front {
    let http = HttpSettings {
        trusted_proxies: trusted.iter().map(|net| net.parse().unwrap()).collect(),
        ..HttpSettings::default()
    };
    Front::new(Gate::builder().build().unwrap(), http)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn planned(gate: &Front, pairs: &[(&str, &str)], peer: Option<&str>) -> HeaderMap {
    let mut headers = headers(pairs);
    let peer = peer.map(|p| p.parse().unwrap());
    gate.strip_only_plan(&headers, peer).apply(&mut headers);
    headers
}

#[test]
fn identity_headers_go_in_every_spelling_an_app_server_folds() {
    let gate = gate(&[]);
    let left = planned(
        &gate,
        &[
            ("X_Auth_Subject", "admin"),
            ("X-Auth_Subject", "admin"),
            ("X_AUTH_SUBJECT", "admin"),
            ("x_auth-email", "admin@example.com"),
            ("X_Otpgate_Jwt", "forged"),
            ("x-otpgate_anything", "forged"),
            // lighttpd folds every other character onto `_`, PHP turns `.` into `_`.
            ("X.Auth.Subject", "admin"),
            ("X~Auth~Email", "admin@example.com"),
            ("X!Auth+Phone", "+14155550123"),
            ("X'Auth'Tenant", "other"),
            ("X-Auth.Role", "root"),
            ("X.Otpgate.Jwt", "forged"),
            ("X.Original.URL", "/api/me"),
            ("X-Original-URL", "/api/me"),
            ("X_Rewrite_Url", "/api/me"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("x_http_method", "DELETE"),
            ("X-Method-Override", "PUT"),
            ("X-Authority", "kept"),
            ("x_custom_thing", "kept"),
            ("X_Request_Id", "forged"),
        ],
        None,
    );
    let mut names: Vec<&str> = left.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["x-authority", "x-request-id", "x_custom_thing"]);
    assert_ne!(left["x-request-id"], "forged");
}

#[test]
fn reroute_headers_can_be_kept() {
    let http = HttpSettings {
        identity: IdentityHeaders {
            strip_reroute: false,
            ..IdentityHeaders::default()
        },
        ..HttpSettings::default()
    };
    let gate = Front::new(Gate::builder().build().unwrap(), http);
    let left = planned(&gate, &[("x-original-url", "/x")], None);
    assert!(left.contains_key("x-original-url"));
}

#[test]
fn an_untrusted_peer_cannot_say_who_the_client_is() {
    let gate = gate(&["10.0.0.0/8"]);
    let left = planned(
        &gate,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-host", "evil.test"),
            ("X.Forwarded.For", "6.6.6.6"),
            ("X.Real.IP", "6.6.6.6"),
            ("X~Forwarded~Proto", "https"),
        ],
        Some("192.0.2.7"),
    );
    let values: Vec<&HeaderValue> = left.get_all("x-forwarded-for").iter().collect();
    assert_eq!(values, ["192.0.2.7"]);
    // X-Forwarded-For and the gate's X-Request-Id.
    assert_eq!(left.len(), 2, "{left:?}");
    // With no peer known, forged values still go and nothing is claimed.
    let left = planned(&gate, &[("x-forwarded-for", "6.6.6.6")], None);
    let names: Vec<&str> = left.keys().map(HeaderName::as_str).collect();
    assert_eq!(names, ["x-request-id"], "{left:?}");
}

#[test]
fn a_trusted_proxy_list_is_extended_on_one_line() {
    let gate = gate(&["10.0.0.0/8"]);
    let left = planned(
        &gate,
        &[
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2"),
            ("x-real-ip", "203.0.113.9"),
            // A trusted proxy writes `X-Forwarded-For`; other spellings are a client's.
            ("X_Forwarded_For", "6.6.6.6"),
            ("X.Real.IP", "6.6.6.6"),
        ],
        Some("10.0.0.5"),
    );
    let values: Vec<&HeaderValue> = left.get_all("x-forwarded-for").iter().collect();
    assert_eq!(values, ["203.0.113.9, 10.1.1.1, 10.2.2.2, 10.0.0.5"]);
    assert_eq!(left["x-real-ip"], "203.0.113.9");
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains_key("x-request-id"), "{left:?}");
}

#[test]
fn a_trusted_proxys_forwarding_header_with_several_values_is_dropped() {
    let gate = gate(&["10.0.0.0/8"]);
    // A proxy that appended its line behind a client's: an app reading the first line
    // and one reading the last would disagree, so neither line reaches the app.
    let left = planned(
        &gate,
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-host", "app.example.com"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("forwarded", "for=203.0.113.9;proto=http"),
            ("x-real-ip", "6.6.6.6"),
            ("x-real-ip", "203.0.113.9"),
            // One line each: the proxy's word, kept.
            ("x-forwarded-port", "443"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        Some("10.0.0.5"),
    );
    let mut names: Vec<&str> = left.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["x-forwarded-for", "x-forwarded-port", "x-request-id"],
        "{left:?}"
    );
    assert_eq!(left["x-forwarded-port"], "443");
    assert_eq!(left["x-forwarded-for"], "203.0.113.9, 10.0.0.5");
    // One line, from a trusted proxy, is kept as it came.
    let left = planned(&gate, &[("x-forwarded-proto", "https")], Some("10.0.0.5"));
    assert_eq!(left["x-forwarded-proto"], "https");
    // Two values on one line, the client's first, say two things just as well: gone too.
    // `Forwarded` on one line is a list, read from the right like X-Forwarded-For.
    let left = planned(
        &gate,
        &[
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "evil.test,app.example.com"),
            ("x-real-ip", "6.6.6.6, 203.0.113.9"),
            ("forwarded", "for=6.6.6.6, for=203.0.113.9"),
        ],
        Some("10.0.0.5"),
    );
    let mut names: Vec<&str> = left.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["forwarded", "x-forwarded-for", "x-request-id"],
        "{left:?}"
    );
    assert_eq!(left["forwarded"], "for=6.6.6.6, for=203.0.113.9");
}

#[test]
fn the_client_is_the_right_most_address_a_trusted_proxy_did_not_add() {
    let gate = gate(&["10.0.0.0/8"]);
    let client = |xff: &[&str], peer: &str| {
        let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        gate.client_ip(Some(peer.parse().unwrap()), &headers(&pairs))
            .map(|ip| ip.to_string())
    };
    let some = |ip: &str| Some(ip.to_owned());
    // An untrusted peer is the client, whatever it claims.
    assert_eq!(client(&["6.6.6.6"], "192.0.2.7"), some("192.0.2.7"));
    assert_eq!(
        client(&["6.6.6.6, 203.0.113.9"], "10.0.0.1"),
        some("203.0.113.9")
    );
    assert_eq!(
        client(&["6.6.6.6", "203.0.113.9, 10.1.1.1"], "10.0.0.1"),
        some("203.0.113.9")
    );
    // Proxies that write ports.
    assert_eq!(
        client(&["6.6.6.6, 203.0.113.9:5555"], "10.0.0.1"),
        some("203.0.113.9")
    );
    assert_eq!(
        client(&["6.6.6.6, [2001:db8::9]:443"], "10.0.0.1"),
        some("2001:db8::9")
    );
    // Something unreadable ends the walk at the last hop that could be read.
    assert_eq!(client(&["6.6.6.6, unknown"], "10.0.0.1"), some("10.0.0.1"));
    assert_eq!(
        client(&["6.6.6.6, 203.0.113.9:x"], "10.0.0.1"),
        some("10.0.0.1")
    );
    assert_eq!(
        client(&["6.6.6.6, 10.1.1.1, garbage, 10.2.2.2"], "10.0.0.1"),
        some("10.2.2.2")
    );
    assert_eq!(client(&[], "10.0.0.1"), some("10.0.0.1"));
}

#[test]
fn connection_cannot_name_what_the_gate_sets_or_strips() {
    let gate = gate(&[]);
    let left = planned(
        &gate,
        &[(
            "connection",
            "keep-alive, X-Auth-Subject, x_otpgate_jwt, X-Forwarded-For, X-Request-Id, te",
        )],
        Some("192.0.2.7"),
    );
    assert_eq!(left["connection"], "keep-alive, te");
    let left = planned(&gate, &[("connection", "x-auth-email")], None);
    assert!(!left.contains_key("connection"));
    let left = planned(&gate, &[("connection", "close")], None);
    assert_eq!(left["connection"], "close");
}

#[test]
fn heads_over_the_caps_or_with_two_authorizations_are_refused() {
    let http = HttpSettings {
        max_headers: 3,
        max_header_bytes: 64,
        ..HttpSettings::default()
    };
    let gate = Front::new(Gate::builder().build().unwrap(), http);
    assert!(
        gate.check_head(&headers(&[("a", "1"), ("b", "2"), ("c", "3")]))
            .is_ok()
    );
    let refusal = gate
        .check_head(&headers(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]))
        .unwrap_err();
    assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let long = "v".repeat(60);
    let refusal = gate.check_head(&headers(&[("a", &long)])).unwrap_err();
    assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let refusal = gate
        .check_head(&headers(&[
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b"),
        ]))
        .unwrap_err();
    assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&refusal.body).contains("invalid_request"));
}

#[test]
fn protection_and_routing_use_the_canonical_path() {
    let http = HttpSettings {
        protect: vec!["/api/".into()],
        ..HttpSettings::default()
    };
    let gate = Front::new(Gate::builder().build().unwrap(), http);
    let route = |raw: &str| {
        gate.route(
            &Method::GET,
            &gate.canonical_target(&Method::GET, raw.as_bytes()).unwrap(),
        )
    };
    for raw in [
        "/api/me",
        "/API/me",
        "//api/me",
        "/public/../api/me",
        "/%61pi/me",
        "/api",
    ] {
        assert_eq!(route(raw), Route::Upstream { rule: Some(0) }, "{raw}");
    }
    for raw in ["/apiary", "/public/api/me", "/"] {
        assert_eq!(route(raw), Route::Upstream { rule: None }, "{raw}");
    }
    assert!(matches!(route("//auth/otp/send"), Route::Endpoint(_)));
    let refusal = gate
        .canonical_target(&Method::GET, b"/api%2Fme")
        .unwrap_err();
    assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&refusal.body).contains("invalid_path"));
}

#[tokio::test]
async fn debug_output_never_carries_a_credential() {
    use crate::token::Subject;
    let mut settings = HttpSettings::default();
    let mut mount = super::EndpointMount::new(super::Dialect::Baanx, "/api");
    mount.client_keys = vec!["client-key-secret".into()];
    settings.endpoints.push(mount);
    let front = Front::new(Gate::builder().build().unwrap(), settings);
    let token = front
        .gate()
        .start_session(&Subject {
            id: "u-1".into(),
            email: None,
            phone: None,
            tenant: "default".into(),
        })
        .unwrap()
        .access
        .token;
    let headers = headers(&[("authorization", &format!("Bearer {token}"))]);
    let target = front.canonical_target(&Method::GET, b"/x").unwrap();
    let plan = front
        .plan_upstream(&Method::GET, &target, &headers, None, None)
        .await
        .unwrap();
    let printed = format!("{front:?} {plan:?}");
    assert!(plan.identity.is_some());
    assert!(!printed.contains("client-key-secret"), "{printed}");
    assert!(!printed.contains(&token), "{printed}");
    assert!(printed.contains("<1 keys>"), "{printed}");
}

fn is_fresh_request_id(value: &HeaderValue) -> bool {
    value.len() == 16
        && value
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

#[test]
fn the_app_gets_a_request_id_a_client_cannot_choose() {
    let front = gate(&["10.0.0.0/8"]);
    let plan_for = |pairs: &[(&str, &str)], peer: Option<&str>| {
        let mut headers = headers(pairs);
        let plan = front.strip_only_plan(&headers, peer.map(|p| p.parse().unwrap()));
        plan.apply(&mut headers);
        (plan, headers)
    };
    // An untrusted peer's id, in any spelling, is replaced by a fresh one.
    let (plan, left) = plan_for(
        &[("x-request-id", "mine"), ("X_Request_Id", "mine")],
        Some("192.0.2.7"),
    );
    let ids: Vec<&HeaderValue> = left.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "{left:?}");
    assert!(is_fresh_request_id(ids[0]), "{ids:?}");
    assert!(!left.contains_key("x_request_id"), "{left:?}");
    assert_eq!(plan.request_id.as_ref(), Some(ids[0]));
    // No id sent: a fresh one, different for each request.
    let (first, _) = plan_for(&[], None);
    let (second, _) = plan_for(&[], None);
    assert!(is_fresh_request_id(first.request_id.as_ref().unwrap()));
    assert_ne!(first.request_id, second.request_id);
    // A trusted proxy's id is kept, and is the plan's id.
    let (plan, left) = plan_for(&[("x-request-id", "edge-42/abc")], Some("10.0.0.5"));
    assert_eq!(left["x-request-id"], "edge-42/abc");
    assert_eq!(plan.request_id.unwrap(), "edge-42/abc");
    // ...but not two ids, one with a space, an overlong one, or another spelling.
    let long = "a".repeat(129);
    for pairs in [
        vec![("x-request-id", "one"), ("x-request-id", "two")],
        vec![("x-request-id", "has space")],
        vec![("x-request-id", long.as_str())],
        vec![("X_Request_Id", "edge-42")],
    ] {
        let (plan, left) = plan_for(&pairs, Some("10.0.0.5"));
        let ids: Vec<&HeaderValue> = left.get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{pairs:?}: {left:?}");
        assert!(is_fresh_request_id(ids[0]), "{pairs:?}: {ids:?}");
        assert_eq!(plan.request_id.as_ref(), Some(ids[0]));
        assert!(!left.contains_key("x_request_id"), "{left:?}");
    }
}

#[test]
fn forward_auth_can_be_switched_off() {
    let check = |forward_auth: bool| {
        let mut settings = HttpSettings::default();
        if let Some(pages) = settings.pages.as_mut() {
            pages.forward_auth = forward_auth;
        }
        let front = Front::new(Gate::builder().build().unwrap(), settings);
        let target = front
            .canonical_target(&Method::GET, b"/auth/check")
            .unwrap();
        front.route(&Method::GET, &target)
    };
    assert!(matches!(
        check(true),
        Route::Endpoint(super::EndpointRoute {
            action: super::Action::Check,
            ..
        })
    ));
    // Off, the path is the app's like any other.
    assert_eq!(check(false), Route::Upstream { rule: None });
}

/// Identity headers are kept with a token's cached claims; a reload that renames them
/// (a new front on the same engine) must not forward the old names' values.
#[tokio::test]
async fn renamed_identity_headers_apply_to_a_token_already_forwarded() {
    use crate::token::Subject;
    let gate = Gate::builder().build().unwrap();
    let token = gate
        .start_session(&Subject {
            id: "u-7".into(),
            email: Some("u7@example.com".into()),
            phone: None,
            tenant: "acme".into(),
        })
        .unwrap()
        .access
        .token;
    let sent = headers(&[("authorization", &format!("Bearer {token}"))]);
    let injected = |front: &Front| {
        let front = front.clone();
        let sent = sent.clone();
        async move {
            let target = front.canonical_target(&Method::GET, b"/x").unwrap();
            let plan = front
                .plan_upstream(&Method::GET, &target, &sent, None, None)
                .await
                .unwrap();
            let mut out = HeaderMap::new();
            plan.apply(&mut out);
            out
        }
    };
    let before = Front::new(gate.clone(), HttpSettings::default());
    let first = injected(&before).await;
    let default_subject = HttpSettings::default().identity.subject;
    assert_eq!(first[&default_subject], "u-7");

    // Subject and tenant swap names: the app must read the user id as the subject still.
    let mut swapped = HttpSettings::default();
    swapped.identity.subject = HttpSettings::default().identity.tenant;
    swapped.identity.tenant = default_subject.clone();
    let after = Front::new(gate, swapped.clone());
    for _ in 0..2 {
        let out = injected(&after).await;
        assert_eq!(out[&swapped.identity.subject], "u-7", "{out:?}");
        assert_eq!(out[&swapped.identity.tenant], "acme", "{out:?}");
        assert_eq!(out[&swapped.identity.email], "u7@example.com", "{out:?}");
    }
}
