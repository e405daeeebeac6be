//! `/v1`: the programmatic API, compatible with Daydream's (a program
//! written against Daydream runs against DreamStream by changing the base
//! URL and the key).
//!
//! - Authentication: `Authorization: Bearer <API key>` (`dsa_…`, made on the
//!   account page or with `dreamstream admin create-api-key`); every request
//!   reads the key's row, so a revoked key is refused at once. Requests are
//!   limited per key (`[api] requests_per_minute`, Redis or the in-memory
//!   twin; refused with 503 when Redis cannot count).
//! - Errors: Daydream's shape, [`V1Error`] `{success: false, error, code,
//!   status}` (plus `details.field` naming a refused field, and `requestId`
//!   on 5xx). Internal causes go to the log only.
//! - Bodies are read here (at most `[api] max_body_bytes`, 413 beyond) and
//!   checked field by field ([`params`]); unknown fields are refused.
//! - What a `/v1` stream is: [`streams`].
//! - `/v1/openapi.json` and `/v1/docs`: [`openapi`].

pub mod openapi;
pub mod params;
pub mod streams;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use crate::accounts::{User, keys};

/// Daydream's error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct V1Error {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, in words for the person reading it.
    pub error: String,
    /// Stable and machine-readable, e.g. `STREAMS/NOT_FOUND`.
    pub code: String,
    /// The HTTP status.
    pub status: u16,
    /// Which field was refused (bad input only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ErrorDetails>,
    /// The id of the log line with the cause (server errors only; also the
    /// `x-request-id` header).
    #[serde(rename = "requestId", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The refused field of a bad request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetails {
    /// Its path in the request, e.g. `params.guidance_scale`.
    pub field: String,
}

/// Why a `/v1` request failed; answered as a [`V1Error`].
#[derive(Debug, thiserror::Error)]
pub enum V1Failure {
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("missing or unknown API key: send Authorization: Bearer <your API key>")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("the request body is over {0} bytes")]
    TooLarge(usize),
    #[error("send JSON (Content-Type: application/json)")]
    UnsupportedMedia,
    #[error("too many requests with this API key: try again in {0} s")]
    RateLimited(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl V1Failure {
    /// A refused field.
    pub fn field(inv: params::Invalid) -> Self {
        V1Failure::Invalid {
            code: "STREAMS/INVALID_PARAMS",
            field: Some(inv.field),
            message: inv.message,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            V1Failure::Invalid { code, .. } => code,
            V1Failure::Unauthorized => "AUTH/UNAUTHORIZED",
            V1Failure::NotFound(_) => "STREAMS/NOT_FOUND",
            V1Failure::TooLarge(_) => "REQUEST/TOO_LARGE",
            V1Failure::UnsupportedMedia => "REQUEST/UNSUPPORTED_MEDIA_TYPE",
            V1Failure::RateLimited(_) => "RATE_LIMITED",
            V1Failure::Unavailable(_) => "SERVICE/UNAVAILABLE",
            V1Failure::Internal(_) => "INTERNAL",
        }
    }

    /// The body this failure is answered with.
    pub fn body(&self) -> V1Error {
        let status = self.status_code();
        V1Error {
            success: false,
            error: self.to_string(),
            code: self.code().to_string(),
            status: status.as_u16(),
            details: match self {
                V1Failure::Invalid { field: Some(f), .. } => {
                    Some(ErrorDetails { field: f.clone() })
                }
                _ => None,
            },
            request_id: status
                .is_server_error()
                .then(crate::telemetry::current_request_id)
                .flatten(),
        }
    }
}

impl ResponseError for V1Failure {
    fn status_code(&self) -> StatusCode {
        match self {
            V1Failure::Invalid { .. } => StatusCode::BAD_REQUEST,
            V1Failure::Unauthorized => StatusCode::UNAUTHORIZED,
            V1Failure::NotFound(_) => StatusCode::NOT_FOUND,
            V1Failure::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            V1Failure::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            V1Failure::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            V1Failure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            V1Failure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let V1Failure::Internal(e) = self {
            tracing::error!(
                error = format!("{e:#}"),
                request_id = crate::telemetry::current_request_id(),
                "/v1 request failed"
            );
        }
        let mut r = HttpResponse::build(self.status_code());
        match self {
            V1Failure::Unauthorized => {
                r.insert_header(("WWW-Authenticate", "Bearer"));
            }
            V1Failure::RateLimited(secs) => {
                r.insert_header(("Retry-After", secs.to_string()));
            }
            _ => {}
        }
        r.json(self.body())
    }
}

impl From<sea_orm::DbErr> for V1Failure {
    fn from(e: sea_orm::DbErr) -> Self {
        V1Failure::Internal(e.into())
    }
}

impl From<crate::accounts::AccountError> for V1Failure {
    fn from(e: crate::accounts::AccountError) -> Self {
        V1Failure::Internal(anyhow::Error::new(e))
    }
}

/// The user behind the request's API key (checked against the database on
/// every request, then counted against the key's rate limit).
pub struct ApiUser {
    pub user: User,
    pub key_id: i64,
}

impl FromRequest for ApiUser {
    type Error = V1Failure;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, V1Failure>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| V1Failure::Internal(anyhow::anyhow!("no app state")))?
                .clone();
            let presented = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
                .filter(|t| !t.is_empty())
                .ok_or(V1Failure::Unauthorized)?;
            let row = keys::api_key(state.accounts.db(), presented)
                .await?
                .ok_or(V1Failure::Unauthorized)?;
            let user = state
                .accounts
                .by_id(row.user_id)
                .await?
                .ok_or(V1Failure::Unauthorized)?;
            let hit = state
                .limiter
                .hit(
                    &format!("v1:key:{}", row.id),
                    state.config.api.requests_per_minute,
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = format!("{e:#}"), "cannot count /v1 requests");
                    V1Failure::Unavailable(
                        "requests cannot be counted right now: try again shortly".into(),
                    )
                })?;
            if !hit.allowed {
                return Err(V1Failure::RateLimited(hit.retry_after.as_secs().max(1)));
            }
            Ok(ApiUser {
                user,
                key_id: row.id,
            })
        })
    }
}

/// The request body as JSON: `application/json`, at most `[api]
/// max_body_bytes` (413 beyond, judged from `Content-Length` before reading
/// when it is given), a JSON object.
pub async fn json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
) -> Result<serde_json::Value, V1Failure> {
    let limit = state.config.api.max_body_bytes;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(V1Failure::TooLarge(limit));
    }
    let json_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            let t = t.trim();
            t.eq_ignore_ascii_case("application/json") || t.to_ascii_lowercase().ends_with("+json")
        });
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!(error = %e, "/v1 body did not arrive");
            V1Failure::Invalid {
                code: "REQUEST/INVALID_JSON",
                field: None,
                message: "the request body did not arrive whole".into(),
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(V1Failure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    if !json_type {
        return Err(V1Failure::UnsupportedMedia);
    }
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        tracing::debug!(error = %e, "/v1 body is not JSON");
        V1Failure::Invalid {
            code: "REQUEST/INVALID_JSON",
            field: None,
            message: "the request body is not valid JSON".into(),
        }
    })?;
    if !value.is_object() {
        return Err(V1Failure::Invalid {
            code: "REQUEST/INVALID_JSON",
            field: None,
            message: "the request body must be a JSON object".into(),
        });
    }
    Ok(value)
}

/// Which `/v1` stream each live channel was started from (its ingest key):
/// `PATCH` reaches the live stream through it, `/status` reads it. In
/// memory: a channel that goes live again binds again.
#[derive(Default)]
pub struct Bindings {
    by_user: Mutex<HashMap<String, String>>,
}

impl Bindings {
    pub fn bind(&self, username: &str, stream_id: &str) {
        self.lock()
            .insert(username.to_string(), stream_id.to_string());
    }

    pub fn unbind(&self, username: &str) {
        self.lock().remove(username);
    }

    /// The `/v1` stream `username`'s channel was last started from.
    pub fn bound(&self, username: &str) -> Option<String> {
        self.lock().get(username).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_user.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `/v1` routes, their own 404 for unknown addresses under `/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/docs", web::get().to(openapi::reference_page))
            .route("/streams", web::post().to(streams::create))
            .route("/streams", web::get().to(streams::list))
            .route("/streams", web::delete().to(streams::delete_by_query))
            .route("/streams/{id}", web::get().to(streams::get))
            .route("/streams/{id}", web::patch().to(streams::update))
            .route("/streams/{id}", web::delete().to(streams::delete))
            .route("/streams/{id}/status", web::get().to(streams::status))
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> V1Failure {
    V1Failure::NotFound("no such /v1 address or method".into())
}

impl actix_web::Responder for V1Failure {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_never_reach_the_body() {
        let e = V1Failure::Internal(anyhow::anyhow!(
            "error returned from database: relation \"api_streams\" does not exist"
        ));
        let body = e.body();
        assert_eq!(body.error, "internal error");
        assert_eq!((body.code.as_str(), body.status), ("INTERNAL", 500));
        let json = serde_json::to_string(&body).unwrap();
        assert!(!json.contains("api_streams"), "{json}");
    }

    #[test]
    fn a_refused_field_is_named_in_details() {
        let body = V1Failure::field(params::Invalid::new(
            "params.delta",
            "params.delta must be a number",
        ))
        .body();
        assert_eq!(
            body.details,
            Some(ErrorDetails {
                field: "params.delta".into()
            })
        );
        assert_eq!(
            (body.code.as_str(), body.status),
            ("STREAMS/INVALID_PARAMS", 400)
        );
    }
}
