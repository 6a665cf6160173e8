//! Who is calling: the capability token in `Proxy-Authorization`.
//!
//! `HTTP_PROXY=http://firma:<token>@127.0.0.1:8080` makes curl, Python `requests`, Node and most
//! other clients send `Proxy-Authorization: Basic base64("firma:<token>")`; the token is the
//! password (the user name is ignored). `Bearer <token>` is accepted too.

use base64::Engine;
use http::HeaderMap;
use http::header::PROXY_AUTHORIZATION;

/// What the header held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    None,
    Token(String),
    /// A header that is not Basic/Bearer, or Basic that does not decode.
    Unreadable(&'static str),
}

/// The token a request presents.
pub fn presented_token(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(PROXY_AUTHORIZATION) else {
        return Presented::None;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Unreadable("Proxy-Authorization is not ASCII");
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return if rest.is_empty() {
            Presented::None
        } else {
            Presented::Token(rest.to_string())
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Presented::Unreadable("Proxy-Authorization must be Basic or Bearer");
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
        return Presented::Unreadable("Proxy-Authorization Basic credentials are not base64");
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Presented::Unreadable("Proxy-Authorization Basic credentials are not UTF-8");
    };
    // user:password — clients percent-decode the URL's userinfo before encoding it.
    let password = decoded.split_once(':').map_or("", |(_, p)| p);
    if password.is_empty() {
        Presented::None
    } else {
        Presented::Token(password.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(PROXY_AUTHORIZATION, value.parse().unwrap());
        map
    }

    #[test]
    fn basic_password_is_the_token() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("firma:v4.public.abc");
        assert_eq!(
            presented_token(&headers(&format!("Basic {b64}"))),
            Presented::Token("v4.public.abc".into())
        );
    }

    #[test]
    fn bearer_and_absent() {
        assert_eq!(
            presented_token(&headers("Bearer tok")),
            Presented::Token("tok".into())
        );
        assert_eq!(presented_token(&HeaderMap::new()), Presented::None);
        let b64 = base64::engine::general_purpose::STANDARD.encode("firma:");
        assert_eq!(
            presented_token(&headers(&format!("Basic {b64}"))),
            Presented::None
        );
        assert!(matches!(
            presented_token(&headers("Digest x")),
            Presented::Unreadable(_)
        ));
        assert!(matches!(
            presented_token(&headers("Basic !!!")),
            Presented::Unreadable(_)
        ));
    }

    proptest::proptest! {
        #[test]
        fn basic_round_trips_any_password(user in "[a-z]{0,8}", token in "[A-Za-z0-9._~-]{1,200}") {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
            proptest::prop_assert_eq!(
                presented_token(&headers(&format!("Basic {b64}"))),
                Presented::Token(token)
            );
        }

        #[test]
        fn arbitrary_headers_never_panic(value in "[ -~]{0,300}") {
            if let Ok(value) = value.parse::<http::HeaderValue>() {
                let mut map = HeaderMap::new();
                map.insert(PROXY_AUTHORIZATION, value);
                let _ = presented_token(&map);
            }
        }
    }
}
