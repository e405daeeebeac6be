//! Who may read the operational endpoints — `/metrics`, `/api/cluster`,
//! `/api/server` and `/api/scheduler` (worker names, memory, CPU, the
//! scheduler's queue): administrators (session cookie), a client whose
//! address is in `[ops] allow` (after `trusted_proxies`, as everywhere), or
//! anyone who sends the metrics token (`DREAMSTREAM_METRICS_TOKEN`, from the
//! environment only) as `Authorization: Bearer <token>`. Everyone else gets
//! 401 (not logged in, or a wrong token) or 403 (logged in, not an admin).
//!
//! Handlers take [`OpsAccess`] as an argument, so the check runs before them.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use secrecy::ExposeSecret;

use super::AppState;
use super::client_ip::client_ip;
use super::errors::ApiError;
use super::session::MaybeUser;

/// Proof that the request may read operational data.
pub struct OpsAccess;

/// The `Authorization: Bearer` value, if any.
fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn check(req: HttpRequest) -> Result<OpsAccess, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no application state")))?;
    if let (Some(token), Some(given)) = (state.config.metrics_token.as_ref(), bearer(&req)) {
        if crate::secrets::same_secret(given.as_bytes(), token.expose_secret().as_bytes()) {
            return Ok(OpsAccess);
        }
        tracing::warn!(path = req.path(), "wrong metrics token");
        return Err(ApiError::Unauthorized("wrong metrics token".into()));
    }
    if let Some(ip) = client_ip(&req, &state.trusted_proxies)
        && state.config.ops_allowed(ip)
    {
        return Ok(OpsAccess);
    }
    match MaybeUser::extract(&req).await?.0 {
        Some(u) if u.is_admin => Ok(OpsAccess),
        Some(_) => Err(ApiError::Forbidden("administrators only".into())),
        None => Err(ApiError::Unauthorized(
            "operational data is for administrators: log in, or send the metrics token \
             (Authorization: Bearer ...)"
                .into(),
        )),
    }
}

impl FromRequest for OpsAccess {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(check(req.clone()))
    }
}
