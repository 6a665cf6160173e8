//! The Sidecar's own responses: JSON bodies for refusals, malformed requests and upstream
//! failures, and the body type every response shares.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use super::pipeline::Verdict;

/// Body of every response the proxy returns (relayed upstream bodies stream through).
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 403 for a denied call: `{denied, reason, detail, action_class}`.
pub fn denied(verdict: &Verdict) -> Response<ProxyBody> {
    refused(StatusCode::FORBIDDEN, verdict)
}

/// A refusal with its status: 403 for a denial, 400 for a request the proxy will not read
/// (`malformed_request`, `malformed_target`, `host_mismatch` on an absolute-form request).
pub fn refused(status: StatusCode, verdict: &Verdict) -> Response<ProxyBody> {
    json(
        status,
        &serde_json::json!({
            "denied": true,
            "reason": verdict.reason.code(),
            "detail": verdict.detail,
            "action_class": verdict.action_class,
        }),
    )
}

/// 502/504 after an allowed call could not be completed upstream.
pub fn upstream_failure(
    status: StatusCode,
    reason: &str,
    detail: &str,
    action_class: &str,
) -> Response<ProxyBody> {
    json(
        status,
        &serde_json::json!({
            "error": reason,
            "reason": reason,
            "detail": detail,
            "action_class": action_class,
        }),
    )
}

/// 503 when the decision could not be recorded: no decision without a record.
pub fn audit_unavailable(detail: &str) -> Response<ProxyBody> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({
            "denied": true,
            "reason": "audit_unavailable",
            "detail": detail,
            "action_class": "",
        }),
    )
}
