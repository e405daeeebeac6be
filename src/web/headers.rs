//! Browser security headers on every answer, and `Cache-Control: no-store`
//! on pages and JSON.
//!
//! - `Content-Security-Policy`: scripts, styles and everything else from this
//!   origin only (the templates have no inline scripts, styles or event
//!   handlers: `templates/static/*.js` does it all); images also from
//!   `data:` and `blob:` (the players draw frames from blob URLs);
//!   WebSockets to this host; no plugins; `frame-ancestors 'none'`. No
//!   `form-action`: Checkout's form ends in a redirect to Stripe.
//! - `X-Frame-Options: DENY` (browsers without `frame-ancestors`),
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//!   strict-origin-when-cross-origin` (a stream key in a URL never leaves).
//! - `Strict-Transport-Security` only when `public_url` is https.
//! - `Cache-Control: no-store` on HTML and JSON unless the handler chose
//!   otherwise (the style list, static files and frames are cacheable by
//!   their own choice): pages and JSON can carry a logged-in user's data
//!   and CSRF token, and a shared cache must never keep them.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;

use super::AppState;

/// The policy, with `connect-src` naming this host's WebSocket origins
/// (older browsers do not count `ws:` as `'self'`).
fn content_security_policy(host: Option<&str>) -> String {
    let sockets = host
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; connect-src 'self'{sockets}; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'"
    )
}

/// A `host[:port]` safe to put in a header (the Host header is the client's).
fn plain_host(h: &str) -> Option<&str> {
    let ok = !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(h)
}

fn set_if_missing(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    if !headers.contains_key(&name) {
        headers.insert(name, value);
    }
}

pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let public = req
        .app_data::<web::Data<AppState>>()
        .and_then(|s| s.config.configured_public_url.clone());
    let https = public.as_deref().is_some_and(|u| u.starts_with("https://"));
    let host = match public.as_deref().and_then(|u| url::Url::parse(u).ok()) {
        Some(u) => u.host_str().map(|h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        }),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(plain_host)
            .map(String::from),
    };
    // (No clone of the request may live across the call: the router
    // needs it unshared.)
    let mut res = next.call(req).await?.map_into_boxed_body();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(host.as_deref())) {
        set_if_missing(headers, header::CONTENT_SECURITY_POLICY, v);
    }
    set_if_missing(
        headers,
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    set_if_missing(
        headers,
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set_if_missing(
        headers,
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if https {
        set_if_missing(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("text/html") || content_type.starts_with("application/json") {
        set_if_missing(
            headers,
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_hosts_reach_the_policy() {
        assert_eq!(plain_host("dream.example:8080"), Some("dream.example:8080"));
        assert_eq!(plain_host("[::1]:80"), Some("[::1]:80"));
        assert_eq!(plain_host("evil; script-src *"), None);
        assert_eq!(plain_host(""), None);
    }
}
