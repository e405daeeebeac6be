//! Route errors: each maps to a status code and a JSON body `{"error": ...}`.
//! Server-side failures (500, 503) also carry `request_id`: the log line with
//! the cause chain has the same id (also in the `x-request-id` header).
//! Internal error text (SQL, I/O, actor errors) never reaches the body.
//! Requests the extractors cannot read (bad JSON, forms, queries, paths) get
//! the same JSON shape with our own words ([`extractor_configs`]), never a
//! library's error text.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PaymentRequired(String),
    #[error("too many attempts: try again in {0} s")]
    TooManyRequests(u64),
    #[error("slow down: you are muted for {0} s")]
    Muted(u64),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::TooManyRequests(_) | ApiError::Muted(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = crate::telemetry::current_request_id();
        if let ApiError::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), request_id, "request failed");
        }
        let mut r = HttpResponse::build(self.status_code());
        if let ApiError::TooManyRequests(secs) | ApiError::Muted(secs) = self {
            r.insert_header(("Retry-After", secs.to_string()));
        }
        let mut body = serde_json::json!({ "error": self.to_string() });
        if self.status_code().is_server_error()
            && let Some(id) = request_id
        {
            body["request_id"] = id.into();
        }
        r.json(body)
    }
}

impl From<dreamstream_actors::ids::UsernameError> for ApiError {
    fn from(e: dreamstream_actors::ids::UsernameError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<dreamstream_actors::StyleError> for ApiError {
    fn from(e: dreamstream_actors::StyleError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<crate::accounts::AccountError> for ApiError {
    fn from(e: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError as E;
        match e {
            E::InvalidUsername(_) | E::WeakPassword(_) => ApiError::BadRequest(e.to_string()),
            E::UsernameTaken(_) => ApiError::Conflict(e.to_string()),
            E::BadCredentials => ApiError::Unauthorized(e.to_string()),
            E::NoSuchUser(_) => ApiError::NotFound(e.to_string()),
            E::Db(db) => ApiError::Internal(db.into()),
            E::Internal(i) => ApiError::Internal(i),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        ApiError::Internal(e.into())
    }
}

/// The extractors' error handlers: a status and a message of ours (the
/// library's text goes to the log at debug level).
pub fn extractor_configs(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::error::{JsonPayloadError, UrlencodedError};
    use actix_web::web;
    cfg.app_data(web::JsonConfig::default().error_handler(|e, _| {
        tracing::debug!(error = %e, "unreadable JSON body");
        match e {
            JsonPayloadError::ContentType => {
                ApiError::UnsupportedMedia("send JSON (Content-Type: application/json)".into())
            }
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::PayloadTooLarge("the request body is too large".into())
            }
            _ => ApiError::BadRequest("the request body is not the JSON this call expects".into()),
        }
        .into()
    }))
    .app_data(web::FormConfig::default().error_handler(|e, _| {
        tracing::debug!(error = %e, "unreadable form");
        match e {
            UrlencodedError::Overflow { .. } => {
                ApiError::PayloadTooLarge("the form is too large".into())
            }
            UrlencodedError::ContentType => ApiError::UnsupportedMedia("send a form".into()),
            _ => ApiError::BadRequest("the form is not what this page expects".into()),
        }
        .into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|e, _| {
        tracing::debug!(error = %e, "unreadable query");
        ApiError::BadRequest("the query string is not what this address expects".into()).into()
    }))
    .app_data(web::PathConfig::default().error_handler(|e, _| {
        tracing::debug!(error = %e, "unreadable path");
        ApiError::NotFound("no such page".into()).into()
    }));
}
