//! Where a proxied request may go: the one place that keeps the proxy from being an open proxy.
//!
//! A request for `/v1/proxy/NAME/PATH?QUERY` goes to the profile's `api_base` with `/PATH`
//! appended to its path and `QUERY` as the query, and nowhere else. [`join`] builds that URL
//! from the path as the client sent it (still percent-encoded, as hyper parsed it) and refuses
//! anything an upstream server might resolve to a place outside `api_base`'s path:
//!
//! - `.` and `..` segments, also percent-encoded (`%2e%2e`) and with path parameters (`..;x`,
//!   which some servers treat as `..`);
//! - encoded slashes and backslashes (`%2f`, `%5c`), which some servers decode before routing,
//!   and raw backslashes, which URL parsers read as slashes.
//!
//! The request target itself (origin-form only; no absolute-form, no `CONNECT`) is checked by
//! the router before a request gets here. Finally the joined URL is parsed, and it must have
//! `api_base`'s scheme, host and port, and a path that is exactly the one joined (the parser
//! normalized nothing) and lies under `api_base`'s path.

use url::Url;

/// Why a request's path was refused, as a sentence that finishes "refused: …".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub &'static str);

/// The upstream URL for a request whose path below `/v1/proxy/NAME` is `rest` (empty, or
/// starting with `/`), with query `query`, on a profile whose API is at `base`.
pub(crate) fn join(base: &Url, rest: &str, query: Option<&str>) -> Result<Url, Refused> {
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(Refused("the path after the profile name must start with /"));
    }
    if rest.contains('\\') {
        return Err(Refused("the path contains a backslash, which servers may read as a slash"));
    }
    // Checked without allocating: every proxied request comes through here.
    let encoded_slash = |w: &[u8]| w.eq_ignore_ascii_case(b"%2f") || w.eq_ignore_ascii_case(b"%5c");
    if rest.as_bytes().windows(3).any(encoded_slash) {
        return Err(Refused("the path contains an encoded slash or backslash (%2F, %5C)"));
    }
    if rest.split('/').any(is_dot_segment) {
        return Err(Refused("the path contains a . or .. segment, which would leave the API's base path"));
    }
    let prefix = base.path().trim_end_matches('/');
    let mut path = String::with_capacity(prefix.len() + rest.len() + 1);
    path.push_str(prefix);
    path.push_str(rest);
    if path.is_empty() {
        path.push('/');
    }
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(query);
    let inside = url.path() == path && (rest.is_empty() || path[prefix.len()..].starts_with('/'));
    let same_origin = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default();
    if !inside || !same_origin {
        return Err(Refused("the path does not stay under the API's base path"));
    }
    Ok(url)
}

/// Whether `segment` is `.` or `..`, each dot possibly written `%2e` (in either case), and
/// possibly followed by path parameters: `..;jsessionid=x` is `..` to servers that strip them.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.split(';').next().unwrap_or_default().as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://api.minut.com/v8").unwrap()
    }

    #[test]
    fn a_path_and_query_are_appended_to_the_base_path() {
        let url = join(&base(), "/users/me", Some("fields=a,b&x=%20")).unwrap();
        assert_eq!(url.as_str(), "https://api.minut.com/v8/users/me?fields=a,b&x=%20");
        assert_eq!(join(&base(), "", None).unwrap().as_str(), "https://api.minut.com/v8");
        assert_eq!(join(&base(), "/", None).unwrap().as_str(), "https://api.minut.com/v8/");
        let slash = Url::parse("https://api.minut.com/v8/").unwrap();
        assert_eq!(join(&slash, "/homes", None).unwrap().as_str(), "https://api.minut.com/v8/homes");
        let root = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(join(&root, "/a%20b/c", None).unwrap().as_str(), "http://127.0.0.1:8080/a%20b/c");
        assert_eq!(join(&root, "", None).unwrap().as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn percent_encoding_passes_through_unchanged() {
        let url = join(&base(), "/files/r%C3%A9sum%C3%A9.txt", None).unwrap();
        assert_eq!(url.path(), "/v8/files/r%C3%A9sum%C3%A9.txt");
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for rest in [
            "/..",
            "/../admin",
            "/users/../../admin",
            "/.",
            "/./x",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2e/admin",
            "/%2e./admin",
            "/%2e",
            "/..;jsessionid=1/admin",
            "/x/..;/admin",
        ] {
            let refused = join(&base(), rest, None).unwrap_err();
            assert!(refused.0.contains(". or .."), "{rest}: {refused:?}");
        }
        assert!(join(&base(), "/...", None).is_ok(), "three dots are a name");
        assert!(join(&base(), "/a..b/.hidden", None).is_ok());
    }

    #[test]
    fn encoded_slashes_and_backslashes_are_refused() {
        for rest in ["/a%2fb", "/a%2Fb", "/%2F%2Fevil.example", "/a%5cb", "/a%5C..%5Cb", "/a\\b", "/\\\\evil.example/x"]
        {
            assert!(join(&base(), rest, None).is_err(), "{rest}");
        }
    }

    #[test]
    fn nothing_leaves_the_base_origin() {
        for rest in ["//evil.example/x", "///evil.example"] {
            let url = join(&base(), rest, None).unwrap();
            assert_eq!(url.host_str(), Some("api.minut.com"), "{rest}");
            assert!(url.path().starts_with("/v8/"), "{rest}");
        }
        let root = Url::parse("https://api.minut.com/").unwrap();
        let url = join(&root, "//evil.example/x", None).unwrap();
        assert_eq!(url.host_str(), Some("api.minut.com"));
        assert_eq!(url.path(), "//evil.example/x");
        assert!(join(&base(), "users", None).is_err(), "a path must start with /");
        assert!(join(&base(), "@evil.example/x", None).is_err());
    }

    #[test]
    fn a_query_cannot_move_the_request_either() {
        let url = join(&base(), "/x", Some("a=1#frag/../../y")).unwrap();
        assert_eq!(url.path(), "/v8/x");
        assert_eq!(url.host_str(), Some("api.minut.com"));
    }
}
