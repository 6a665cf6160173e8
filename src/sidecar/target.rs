//! One canonical request target (DESIGN §12): the request target is normalised once, and that
//! one value is what mapping rules, the token's scope, Cedar's `context`, the audit record and
//! the request sent upstream all use — byte for byte.
//!
//! Normalisation follows RFC 3986 §6.2.2: lower-case host, default port dropped, percent-escapes
//! of unreserved characters decoded (the others upper-cased), dot-segments removed. `//` is
//! collapsed to `/` (the upstream receives the collapsed path, so it never sees a path the policy
//! did not). Everything ambiguous is refused (`malformed_target`): an encoded `/`, `\`, `.` or
//! control character, an invalid percent-escape, a path that is not UTF-8 once decoded
//! (overlong sequences included), a raw backslash or non-ASCII byte, `..` above the root, a
//! dot-segment carrying parameters (`..;`), and numeric hosts that a resolver would read in more
//! than one way (`127.1`, `0x7f.0.0.1`, `2130706433`, `010.0.0.1`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use http::Uri;
use http::uri::Authority;

/// Default port of plain HTTP (absolute-form requests).
pub const HTTP_PORT: u16 = 80;
/// Default port of `CONNECT` targets and the HTTPS requests inside them.
pub const HTTPS_PORT: u16 = 443;

/// Why a target was refused; the text is the record's and the 400's detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not a target a forward proxy serves (origin-form, no host, another scheme).
    Malformed(String),
    /// A target that could be read in more than one way.
    Ambiguous(String),
}

impl TargetError {
    pub fn detail(&self) -> &str {
        match self {
            Self::Malformed(detail) | Self::Ambiguous(detail) => detail,
        }
    }
}

fn refuse<T>(why: impl Into<String>) -> Result<T, TargetError> {
    Err(TargetError::Ambiguous(why.into()))
}

fn malformed<T>(why: &str) -> Result<T, TargetError> {
    Err(TargetError::Malformed(why.to_string()))
}

/// The canonical target of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-case; IPv6 literals without brackets, in their canonical text form.
    pub host: String,
    pub port: u16,
    /// Canonical path (empty for `CONNECT`).
    pub path: String,
    /// The query as received (never part of a decision), without the `?`.
    pub query: Option<String>,
    /// The port the scheme implies (80 or 443): dropped from [`Target::authority`].
    default_port: u16,
}

impl Target {
    /// An absolute-form proxy request (`GET http://host[:port]/path?query`). Only `http` is
    /// forwarded this way (HTTPS uses `CONNECT`).
    pub fn absolute(uri: &Uri) -> Result<Self, TargetError> {
        match uri.scheme_str() {
            None => {
                return malformed(
                    "not a proxy request: the request target must be an absolute URI (http://host/path)",
                );
            }
            Some(scheme) if !scheme.eq_ignore_ascii_case("http") => {
                return malformed("only http:// URIs are forwarded; use CONNECT for https");
            }
            Some(_) => {}
        }
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return malformed("absolute URI without a host");
        };
        let (host, port) = host_port(authority, HTTP_PORT)?;
        Ok(Self {
            host,
            port,
            path: canonical_path(uri.path())?,
            query: uri.query().map(str::to_string),
            default_port: HTTP_PORT,
        })
    }

    /// The authority-form target of `CONNECT host:port`.
    pub fn connect(uri: &Uri) -> Result<Self, TargetError> {
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return malformed("CONNECT target must be host:port");
        };
        if uri.scheme().is_some() || uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return malformed("CONNECT target must be host:port");
        }
        let (host, port) = host_port(authority, HTTPS_PORT)?;
        Ok(Self {
            host,
            port,
            path: String::new(),
            query: None,
            default_port: HTTPS_PORT,
        })
    }

    /// A request inside the decrypted tunnel `tunnel`: its host and port are the tunnel's. An
    /// absolute-form target naming another authority is refused by [`Target::same_authority`].
    pub fn inside(tunnel: &Target, uri: &Uri) -> Result<Self, TargetError> {
        if uri.path_and_query().is_none() && uri.authority().is_some() {
            return refuse("authority-form target inside an intercepted tunnel");
        }
        Ok(Self {
            host: tunnel.host.clone(),
            port: tunnel.port,
            path: canonical_path(uri.path())?,
            query: uri.query().map(str::to_string),
            default_port: HTTPS_PORT,
        })
    }

    /// `host[:port]` as a `Host` header says it: IPv6 bracketed, the default port dropped.
    pub fn authority(&self) -> String {
        let mut out = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port != self.default_port {
            let _ = write!(out, ":{}", self.port);
        }
        out
    }

    /// The request target sent upstream: the canonical path and the query.
    pub fn origin_form(&self) -> Uri {
        let text = match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        };
        // Every byte of a canonical path and of a query hyper accepted is valid in a URI.
        text.parse().unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// Whether `value` (a `Host` header, or the authority of an absolute-form target inside a
    /// tunnel) names this target's host and port.
    pub fn same_authority(&self, value: &str) -> bool {
        if value == self.authority() {
            return true;
        }
        let Ok(authority) = value.trim().parse::<Authority>() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        host_port(&authority, self.default_port)
            .is_ok_and(|(host, port)| host == self.host && port == self.port)
    }

    /// Whether the host is an IP literal (not a name a resolver turns into addresses).
    pub fn is_ip_literal(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Canonical host and port of an authority; `default_port` when it names none.
fn host_port(authority: &Authority, default_port: u16) -> Result<(String, u16), TargetError> {
    if authority.as_str().contains('@') {
        return refuse("user information in the request target");
    }
    let host = canonical_host(authority.host())?;
    let port = match authority.port() {
        None => default_port,
        Some(port) => match port.as_u16() {
            0 => return refuse("port 0 in the request target"),
            port => port,
        },
    };
    if authority.as_str().ends_with(':') {
        return refuse("empty port in the request target");
    }
    Ok((host, port))
}

/// Lower-case, IPv6 literals canonical and without brackets, one trailing dot dropped; refuses
/// anything a resolver could read in more than one way.
pub fn canonical_host(raw: &str) -> Result<String, TargetError> {
    if let Some(inner) = raw.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return refuse(format!("host {raw:?}: unbalanced brackets"));
        };
        return match inner.parse::<Ipv6Addr>() {
            Ok(ip) => Ok(ip.to_string()),
            Err(_) => refuse(format!("host {raw:?} is not an IPv6 address")),
        };
    }
    if raw.contains(':') {
        // An IPv6 literal given without brackets (as this function returns it): canonical
        // hosts are fixed points (found by the fuzzer: fuzz/regressions/request_target).
        return match raw.parse::<Ipv6Addr>() {
            Ok(ip) => Ok(ip.to_string()),
            Err(_) => refuse(format!("host {raw:?} contains ':'")),
        };
    }
    let host = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if host.is_empty() {
        return refuse("the request target has no host");
    }
    if host.len() > 253 {
        return refuse("host name longer than 253 characters");
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return refuse(format!("host {raw:?} contains {bad:?}"));
    }
    if host.split('.').any(str::is_empty) {
        return refuse(format!("host {raw:?} has an empty label"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    // What inet_aton would read as a number: `127.1`, `0x7f.1`, `2130706433`, `010.0.0.1`.
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric =
        last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") && last.len() > 2;
    if numeric {
        return refuse(format!(
            "host {raw:?} is a numeric address in a non-canonical form; use dotted-quad IPv4"
        ));
    }
    Ok(host)
}

/// The canonical form of a request path (see the module docs); `""` becomes `/`.
pub fn canonical_path(raw: &str) -> Result<String, TargetError> {
    if raw.is_empty() {
        return Ok("/".to_string());
    }
    if !raw.starts_with('/') {
        return refuse("the request path must start with '/'");
    }
    if is_plainly_canonical(raw) {
        return Ok(raw.to_string());
    }
    normalise(raw)
}

/// The full normalisation of a path that starts with `/`.
fn normalise(raw: &str) -> Result<String, TargetError> {
    let bytes = raw.as_bytes();
    let mut escaped = String::with_capacity(raw.len());
    // Every byte the path stands for, to check that it is UTF-8 once decoded.
    let mut decoded: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                let Some(value) = value else {
                    return refuse("invalid percent-escape in the path");
                };
                match value {
                    b'/' => return refuse("encoded '/' (%2F) in the path"),
                    b'\\' => return refuse("encoded '\\' (%5C) in the path"),
                    b'.' => return refuse("encoded '.' (%2E) in the path"),
                    0 => return refuse("encoded NUL (%00) in the path"),
                    v if v < 0x20 || v == 0x7f => {
                        return refuse("encoded control character in the path");
                    }
                    v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'_' | b'~') => {
                        escaped.push(char::from(v));
                    }
                    v => {
                        let _ = write!(escaped, "%{v:02X}");
                    }
                }
                decoded.push(value);
                i += 3;
                continue;
            }
            b'\\' => return refuse("backslash in the path"),
            b if b >= 0x80 => return refuse("non-ASCII byte in the path (percent-encode it)"),
            b if b < 0x20 || b == 0x7f => return refuse("control character in the path"),
            b => {
                escaped.push(char::from(b));
                decoded.push(b);
            }
        }
        i += 1;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return refuse("the path is not UTF-8 once decoded (invalid or overlong sequence)");
    }
    remove_dot_segments(&escaped)
}

/// The common case, checked in one pass: no escape, backslash, control or non-ASCII byte, no
/// empty segment and no segment starting with a dot — nothing to normalise.
fn is_plainly_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b > 0x20
            && b < 0x7f
            && b != b'%'
            && b != b'\\'
            && !(b == b'/' && bytes.get(i + 1) == Some(&b'/'))
            && !(b == b'.' && bytes[i - 1] == b'/')
    })
}

/// RFC 3986 §5.2.4 on a path whose `/` and `.` are all literal, with empty segments collapsed.
fn remove_dot_segments(path: &str) -> Result<String, TargetError> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = true;
        match segment {
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return refuse("'..' above the root of the path");
                }
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return refuse("dot-segment with parameters in the path");
            }
            s => {
                kept.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> Result<String, String> {
        canonical_path(raw).map_err(|e| e.detail().to_string())
    }

    #[test]
    fn paths_normalise_to_what_the_upstream_receives() {
        for (raw, canonical) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/admin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/a//b///c", "/a/b/c"),
            ("/%61dmin/x", "/admin/x"),
            ("/%7e%2d%5F", "/~-_"),
            ("/./admin/x", "/admin/x"),
            ("/x/../admin/x", "/admin/x"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/", "/a/"),
            ("/a%20b", "/a%20b"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/q%3f", "/q%3F"),
            ("/x/..", "/"),
            ("/.../x", "/.../x"),
            ("/a;b", "/a;b"),
        ] {
            assert_eq!(path(raw).as_deref(), Ok(canonical), "{raw}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in [
            "/%2e%2e/admin",
            "/%2E/admin",
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a%00",
            "/a%0a",
            "/a%7f",
            "/a\\b",
            "/a%",
            "/a%4",
            "/a%zz",
            "/..",
            "/../admin",
            "/x/../../admin",
            "/%c0%ae%c0%ae/admin",
            "/%c0%af",
            "/%ff",
            "/caf\u{e9}",
            "/x/..;/admin",
            "/.;/admin",
            "relative",
        ] {
            assert!(path(raw).is_err(), "{raw} was accepted as {:?}", path(raw));
        }
    }

    #[test]
    fn hosts_are_canonical_or_refused() {
        for (raw, canonical) in [
            ("Example.COM.", "example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "::1"),
            ("[0:0::1]", "::1"),
            ("[::FFFF:127.0.0.1]", "::ffff:127.0.0.1"),
            ("[::0]", "::"),
            ("::", "::"),
            ("a-b_c.example", "a-b_c.example"),
            ("1.example", "1.example"),
        ] {
            assert_eq!(
                canonical_host(raw)
                    .map_err(|e| e.detail().to_string())
                    .as_deref(),
                Ok(canonical)
            );
        }
        for raw in [
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "0x7f000001",
            "010.0.0.1",
            "127.0.0.01",
            "a..b",
            "",
            ".",
            "ex%61mple.com",
            "[::1",
            "[zz]",
        ] {
            assert!(canonical_host(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn absolute_targets_carry_port_and_authority() {
        let t = Target::absolute(&"http://Example.com:8080//a/./b?q=1".parse().unwrap()).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.com", 8080, "/a/b")
        );
        assert_eq!(t.authority(), "example.com:8080");
        assert_eq!(t.origin_form().to_string(), "/a/b?q=1");
        let t = Target::absolute(&"http://h:80".parse().unwrap()).unwrap();
        assert_eq!((t.authority().as_str(), t.path.as_str()), ("h", "/"));
        let t = Target::absolute(&"http://[::1]:81/".parse().unwrap()).unwrap();
        assert_eq!(t.authority(), "[::1]:81");
        assert!(Target::absolute(&"/x".parse().unwrap()).is_err());
        assert!(Target::absolute(&"https://h/x".parse().unwrap()).is_err());
        assert!(Target::absolute(&"http://h:0/x".parse().unwrap()).is_err());
        assert!(Target::absolute(&"http://u@h/x".parse().unwrap()).is_err());
    }

    #[test]
    fn host_headers_must_name_the_same_authority() {
        let t = Target::absolute(&"http://127.0.0.1:8080/x".parse().unwrap()).unwrap();
        assert!(t.same_authority("127.0.0.1:8080"));
        assert!(!t.same_authority("127.0.0.1"));
        assert!(!t.same_authority("evil.example"));
        assert!(!t.same_authority("127.0.0.1:8081"));
        let t = Target::absolute(&"http://example.com/x".parse().unwrap()).unwrap();
        assert!(t.same_authority("EXAMPLE.com"));
        assert!(t.same_authority("example.com:80"));
        assert!(t.same_authority("example.com."));
        assert!(!t.same_authority("u@example.com"));
        let c = Target::connect(&"example.com:443".parse().unwrap()).unwrap();
        assert!(c.same_authority("example.com"));
        assert!(!c.same_authority("example.com:8443"));
    }

    #[test]
    fn connect_targets_are_authority_form() {
        let c = Target::connect(&"Example.com:8443".parse().unwrap()).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.path.as_str()),
            ("example.com", 8443, "")
        );
        let inside = Target::inside(&c, &"/a/%2E%2E".parse().unwrap());
        assert!(inside.is_err());
        let inside = Target::inside(&c, &"/a/../b".parse().unwrap()).unwrap();
        assert_eq!(
            (inside.host.as_str(), inside.port, inside.path.as_str()),
            ("example.com", 8443, "/b")
        );
    }

    proptest::proptest! {
        /// Normalising is idempotent: what the upstream receives normalises to itself.
        #[test]
        fn canonical_paths_are_fixed_points(raw in "(/([a-zA-Z0-9._~-]|%[0-9a-fA-F]{2}|/)*){1,3}") {
            if let Ok(canonical) = canonical_path(&raw) {
                proptest::prop_assert_eq!(canonical_path(&canonical), Ok(canonical.clone()));
                proptest::prop_assert!(!canonical.contains("//"));
                proptest::prop_assert!(!canonical.split('/').any(|s| s == "." || s == ".."));
            }
        }

        /// The fast path only accepts what the full normalisation leaves unchanged.
        #[test]
        fn the_fast_path_agrees(raw in "/[ -~]{0,40}") {
            if is_plainly_canonical(&raw) {
                proptest::prop_assert_eq!(normalise(&raw), Ok(raw.clone()));
            }
        }

        /// Arbitrary input never panics.
        #[test]
        fn arbitrary_paths_never_panic(raw in "\\PC{0,64}") {
            let _ = canonical_path(&raw);
            let _ = canonical_host(&raw);
        }
    }
}
