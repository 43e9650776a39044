//! The canonical-target table: every spelling, and what it must become.

use super::*;

/// What a target must become: its canonical origin form, or a refusal.
enum Expect {
    Path(&'static str),
    Refused(InvalidTarget),
}
use Expect::{Path, Refused};
use InvalidTarget::*;

fn check(policy: &PathPolicy, cases: &[(&str, Expect)]) {
    for (raw, expected) in cases {
        let got = canonicalize(raw.as_bytes(), false, policy);
        match (expected, got) {
            (Path(want), Ok(target)) => {
                assert_eq!(target.to_origin_form(), *want, "target {raw:?}")
            }
            (Refused(want), Err(error)) => assert_eq!(error, *want, "target {raw:?}"),
            (Path(want), Err(error)) => {
                panic!("target {raw:?}: expected {want:?}, refused: {error:?}")
            }
            (Refused(want), Ok(target)) => {
                panic!("target {raw:?}: expected {want:?}, got {target:?}")
            }
        }
    }
}

#[test]
fn tricky_targets_under_the_default_policy() {
    check(
        &PathPolicy::default(),
        &[
            // Plain paths stay as they are.
            ("/", Path("/")),
            ("/api/me", Path("/api/me")),
            ("/api/me/", Path("/api/me/")),
            ("/api/me?x=1&y=%2F..%2F", Path("/api/me?x=1&y=%2F..%2F")),
            ("/api/me?", Path("/api/me?")),
            // Case is kept (protection matching decides about case).
            ("/API/me", Path("/API/me")),
            ("/Api/me", Path("/Api/me")),
            // Repeated slashes merge.
            ("//api/me", Path("/api/me")),
            ("///api///me", Path("/api/me")),
            ("/api//me//", Path("/api/me/")),
            // Dot segments resolve, raw, encoded and mixed.
            ("/./api/me", Path("/api/me")),
            ("/api/./me", Path("/api/me")),
            ("/public/../api/me", Path("/api/me")),
            ("/public//../api/me", Path("/api/me")),
            ("/public/./../api/me", Path("/api/me")),
            ("/%2e/api/me", Path("/api/me")),
            ("/%2E/api/me", Path("/api/me")),
            ("/x/%2e%2e/api/me", Path("/api/me")),
            ("/x/%2E%2e/api/me", Path("/api/me")),
            ("/x/.%2e/api/me", Path("/api/me")),
            ("/x/%2e./api/me", Path("/api/me")),
            ("/api/me/.", Path("/api/me/")),
            ("/api/me/..", Path("/api/")),
            ("/api/me/%2e%2e", Path("/api/")),
            ("/a/b/c/../../../api/me", Path("/api/me")),
            ("/a/b/c/../../api/me", Path("/a/api/me")),
            // Escapes of unreserved characters decode; others are upper-cased.
            ("/%61pi/me", Path("/api/me")),
            ("/%41PI/me", Path("/API/me")),
            ("/%61%70%69/%6d%65", Path("/api/me")),
            ("/api/%7euser", Path("/api/~user")),
            ("/api/a%2db%5fc", Path("/api/a-b_c")),
            ("/api/a%20b", Path("/api/a%20b")),
            ("/api/a%3fb", Path("/api/a%3Fb")),
            ("/api/caf%c3%a9", Path("/api/caf%C3%A9")),
            ("/api/100%25", Path("/api/100%25")),
            // Absolute-form is reduced to its path.
            ("http://evil.test/api/me", Path("/api/me")),
            ("HTTP://evil.test//api/me?q", Path("/api/me?q")),
            ("https://evil.test", Path("/")),
            ("http://evil.test?q=1", Path("/?q=1")),
            ("http://user@evil.test/a/../api", Path("/api")),
            // Not a path.
            ("api/me", Refused(NotOriginForm)),
            ("", Refused(NotOriginForm)),
            ("evil.test:443", Refused(NotOriginForm)),
            ("ftp://evil.test/api/me", Refused(NotOriginForm)),
            ("*", Refused(Asterisk)),
            // Encoded separators.
            ("/api%2Fme", Refused(EncodedSlash)),
            ("/api%2fme", Refused(EncodedSlash)),
            ("/%2Fapi/me", Refused(EncodedSlash)),
            ("/%2fapi%2fme", Refused(EncodedSlash)),
            ("/api%5Cme", Refused(Backslash)),
            ("/api%5cme", Refused(Backslash)),
            ("/public\\..\\api/me", Refused(Backslash)),
            ("/api\\me", Refused(Backslash)),
            // Control characters, raw or encoded, and raw non-ASCII.
            ("/api/me%00", Refused(ForbiddenCharacter)),
            ("/api/me%00.html", Refused(ForbiddenCharacter)),
            (
                "/api%0d%0aX-Auth-Subject:%20admin/me",
                Refused(ForbiddenCharacter),
            ),
            ("/api/me%09", Refused(ForbiddenCharacter)),
            ("/api/me%7f", Refused(ForbiddenCharacter)),
            ("/api/me\t", Refused(ForbiddenCharacter)),
            ("/api me", Refused(ForbiddenCharacter)),
            ("/api/caf\u{e9}", Refused(ForbiddenCharacter)),
            ("/api/me?a\u{7f}", Refused(ForbiddenCharacter)),
            ("/api/me#frag", Refused(ForbiddenCharacter)),
            // Malformed and double escapes.
            ("/api/me%", Refused(MalformedEscape)),
            ("/api/me%2", Refused(MalformedEscape)),
            ("/api/me%zz", Refused(MalformedEscape)),
            ("/%g1pi/me", Refused(MalformedEscape)),
            ("/%252e/api/me", Refused(DoubleEscape)),
            ("/x/%252e%252e/api/me", Refused(DoubleEscape)),
            ("/api%252Fme", Refused(DoubleEscape)),
            // Overlong UTF-8 and stray bytes.
            ("/x/%c0%ae%c0%ae/api/me", Refused(NotUtf8)),
            ("/%c0%afapi/me", Refused(NotUtf8)),
            ("/api/%e0%80%ae", Refused(NotUtf8)),
            ("/api/%ff", Refused(NotUtf8)),
            ("/api/%c3", Refused(NotUtf8)),
            // Climbing above the root.
            ("/..", Refused(AboveRoot)),
            ("/../api/me", Refused(AboveRoot)),
            ("/%2e%2e/api/me", Refused(AboveRoot)),
            ("/public/../../api/me", Refused(AboveRoot)),
            ("//../api/me", Refused(AboveRoot)),
            // Path parameters.
            ("/api;x/me", Refused(PathParameter)),
            ("/api/me;", Refused(PathParameter)),
            ("/public/..;/api/me", Refused(PathParameter)),
            ("/api;jsessionid=1/me", Refused(PathParameter)),
            ("/api%3B/me", Refused(PathParameter)),
            ("/api%3bx/me", Refused(PathParameter)),
            ("/public/..%3B/api/me", Refused(PathParameter)),
            // Trailing dots.
            ("/api./me", Refused(TrailingDot)),
            ("/api.../me", Refused(TrailingDot)),
            ("/api/me.", Refused(TrailingDot)),
            ("/api%2e/me", Refused(TrailingDot)),
            // Dots inside names are fine.
            ("/api/me.json", Path("/api/me.json")),
            ("/api/.well-known", Path("/api/.well-known")),
            ("/api/...x", Path("/api/...x")),
        ],
    );
}

#[test]
fn path_parameters_when_allowed_are_matched_without_and_forwarded_with() {
    let policy = PathPolicy {
        allow_path_params: true,
        ..PathPolicy::default()
    };
    let target = canonicalize(b"/api;x/me;y=1", false, &policy).unwrap();
    assert_eq!(target.path(), "/api;x/me;y=1");
    assert_eq!(target.match_path(), "/api/me");
    let encoded = canonicalize(b"/api%3bx/me", false, &policy).unwrap();
    assert_eq!(encoded.path(), "/api%3Bx/me");
    assert_eq!(encoded.match_path(), "/api/me");
    let plain = canonicalize(b"/api/me", false, &policy).unwrap();
    assert_eq!(plain.match_path(), "/api/me");
    check(
        &policy,
        &[
            // `..;x` is `..` to Tomcat: it climbs.
            ("/public/..;x/api/me", Path("/api/me")),
            ("/public/.;x/../api/me", Path("/api/me")),
            ("/..;/api/me", Refused(AboveRoot)),
            ("/api%3Bx/me", Path("/api%3Bx/me")),
            ("/public/..%3Bx/api/me", Path("/api/me")),
        ],
    );
}

#[test]
fn encoded_slashes_when_allowed_stay_encoded_data() {
    let policy = PathPolicy {
        allow_encoded_slashes: true,
        ..PathPolicy::default()
    };
    check(
        &policy,
        &[
            (
                "/projects/group%2fproject",
                Path("/projects/group%2Fproject"),
            ),
            ("/api%2Fme", Path("/api%2Fme")),
            // Never a dot segment, never a way above the root.
            ("/x/%2e%2e%2f..%2fapi", Refused(EncodedSlash)),
            ("/x/a%2f.%2fb", Refused(EncodedSlash)),
            ("/x/a.%2fb", Refused(EncodedSlash)),
            ("/x/a%2f..;x%2fb", Refused(PathParameter)),
            ("/api%5Cme", Refused(Backslash)),
            ("/api%252Fme", Refused(DoubleEscape)),
        ],
    );
}

#[test]
fn both_switches_on_still_resolve_no_hidden_dot_segment() {
    let policy = PathPolicy {
        allow_path_params: true,
        allow_encoded_slashes: true,
        ..PathPolicy::default()
    };
    check(
        &policy,
        &[
            ("/public;x%2F../api/me", Refused(EncodedSlash)),
            ("/public%3Bx%2F../api/me", Refused(EncodedSlash)),
            ("/public%2F..;x/api/me", Refused(TrailingDot)),
            ("/projects/a%2Fb;v=1", Path("/projects/a%2Fb;v=1")),
        ],
    );
}

#[test]
fn a_target_knows_its_own_spelling() {
    let policy = PathPolicy::default();
    for raw in ["/a/b", "/a/b?", "/a/b?x=1", "//a/b?x=1", "/a/%62", "/"] {
        let target = canonicalize(raw.as_bytes(), false, &policy).unwrap();
        assert_eq!(
            target.is_spelled(raw.as_bytes()),
            target.to_origin_form() == raw,
            "{raw}"
        );
    }
    let target = canonicalize(b"/a/b?x", false, &policy).unwrap();
    assert!(!target.is_spelled(b"/a/b"));
    assert!(!target.is_spelled(b"/a/b?y"));
    assert!(!target.is_spelled(b"/a/bc?x"));
}

#[test]
fn asterisk_only_for_options() {
    let policy = PathPolicy::default();
    let target = canonicalize(b"*", true, &policy).unwrap();
    assert!(target.is_asterisk());
    assert_eq!(canonicalize(b"*", false, &policy), Err(Asterisk));
    assert_eq!(canonicalize(b"*x", true, &policy), Err(NotOriginForm));
}

#[test]
fn prefixes_cover_on_segment_boundaries_in_any_case() {
    assert!(prefix_covers("/api/", "/api/x", false));
    assert!(prefix_covers("/api/", "/api", false));
    assert!(prefix_covers("/api", "/api/x", false));
    assert!(prefix_covers("/api/", "/API/x", false));
    assert!(prefix_covers("/Api", "/aPI", false));
    assert!(!prefix_covers("/api", "/apiary", false));
    assert!(!prefix_covers("/api", "/ap", false));
    assert!(prefix_covers("/", "/anything", false));
    assert!(prefix_covers("/api/", "/api/x", true));
    assert!(!prefix_covers("/api/", "/API/x", true));
    // A multi-byte character at the cut is no panic.
    assert!(!prefix_covers("/ab", "/a\u{e9}", false));
}
