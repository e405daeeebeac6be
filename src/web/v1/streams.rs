//! `/v1/streams`: Daydream's stream calls.
//!
//! **What a `/v1` stream is here.** A user has one channel (`/s/{name}`) and
//! at most one live stream on it. A `/v1` stream is a named configuration of
//! that channel (pipeline and params) with a stream key of its own (an
//! ingest key): publishing with that key — WHIP at `whip_url`, or the
//! WebSocket broadcast — takes the channel live with the record's style and
//! binds the live stream to the record, so `PATCH` restyles it on the next
//! frame (through [`StreamShared::set_settings`], the path the studio's
//! style API takes; a change of model is announced to the scheduler with the
//! next frame and viewers keep the last picture until a worker with that
//! model answers) and `/status` reports it. Creating one starts nothing and
//! costs nothing: the channel's `streams` row and the credit meter start
//! when video arrives, as for any broadcast. Deleting one deletes its key
//! (refused from then on) and ends the live stream it started.
//!
//! `stream_key` is whole only in the `201` of `POST` (the key is stored
//! hashed); later answers show its first characters and `…`, and their
//! `whip_url` carries no key (send it as `Authorization: Bearer`).
//! Outputs: `output_stream_url` is our WHEP endpoint, `output_websocket_url`
//! the viewer WebSocket, `output_playback_id` the channel's name (its page
//! is `/s/{name}`). This server has no HLS output and no RTMP push
//! (`output_rtmp_url` is refused).

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use dreamstream_actors::Username;
use dreamstream_actors::presets::style_name;
use dreamstream_actors::store::EndReason;
use dreamstream_actors::stream::StreamShared;
use dreamstream_actors::worker::Requirement;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::params::{self, Invalid, NEURAL_STYLE, Pipeline, STREAMDIFFUSION, StreamParams};
use super::{ApiUser, V1Error, V1Failure, json_body};
use crate::accounts::keys;
use crate::db::entities::api_stream;
use crate::web::AppState;

/// `POST /v1/streams`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStreamRequest {
    /// `streamdiffusion` (default) or `neural-style`.
    pub pipeline: Option<Pipeline>,
    pub params: Option<StreamParams>,
    /// At most 128 characters; default: the stream's id.
    #[schema(max_length = 128)]
    pub name: Option<String>,
    /// Not supported here (no RTMP push): absent, `null` or `""` only.
    #[schema(max_length = 0)]
    pub output_rtmp_url: Option<String>,
    /// Deprecated: `pipeline` (`pip_…` ids mean `streamdiffusion`).
    #[schema(deprecated)]
    pub pipeline_id: Option<String>,
    /// Deprecated: `params`.
    #[schema(deprecated)]
    pub pipeline_params: Option<StreamParams>,
}

/// `PATCH /v1/streams/{id}`: the given params are merged into the stored
/// ones (`null` clears one); another pipeline starts from empty params.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStreamRequest {
    pub pipeline: Option<Pipeline>,
    pub params: Option<StreamParams>,
    #[schema(max_length = 128)]
    pub name: Option<String>,
    /// Deprecated: `pipeline`.
    #[schema(deprecated)]
    pub pipeline_id: Option<String>,
    /// Deprecated: `params`.
    #[schema(deprecated)]
    pub pipeline_params: Option<StreamParams>,
}

/// A `/v1` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct V1Stream {
    /// `str_` and 24 hex digits.
    pub id: String,
    /// Whole in the `201` of `POST` only; later its first characters and `…`.
    pub stream_key: String,
    /// RFC 3339.
    pub created_at: String,
    pub name: String,
    /// `streamdiffusion` or `neural-style`.
    #[schema(value_type = Pipeline)]
    pub pipeline: String,
    pub params: StreamParams,
    /// WHIP ingest (`POST` an SDP offer). In the `201` it carries the key
    /// (`?key=`); later send the key as `Authorization: Bearer`.
    pub whip_url: String,
    /// The channel's name: its page is `/s/{output_playback_id}`.
    pub output_playback_id: String,
    /// WHEP playback of the restyled output.
    pub output_stream_url: String,
    /// The restyled output as a WebSocket of JPEG frames (our viewer protocol).
    pub output_websocket_url: String,
    /// The owner's username.
    pub author: String,
    /// This server's host.
    pub gateway_host: String,
    pub from_playground: bool,
    pub is_smoke_test: bool,
}

/// `GET /v1/streams`'s answer (Daydream's envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamList {
    pub success: bool,
    /// Newest first.
    pub data: Vec<V1Stream>,
}

/// `DELETE`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeleteStreamResponse {
    pub success: bool,
    pub data: Empty,
}

/// An empty object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `GET /v1/streams/{id}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamStatus {
    pub success: bool,
    /// Always `null` in a `200`.
    pub error: Option<String>,
    pub data: StatusData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusData {
    pub stream_id: String,
    /// `OFFLINE` (no live stream from this record), `ONLINE` (live, video
    /// arriving), `DEGRADED_INPUT` (live, the publisher's connection is
    /// down), `WAITING_FOR_WORKER` (no worker in the cluster runs this
    /// model yet; frames wait for one).
    pub state: String,
    #[schema(value_type = Pipeline)]
    pub pipeline: String,
    /// When the live stream started, ms since the epoch.
    pub start_time: Option<i64>,
    /// What the stream needs from a worker when none has it, e.g.
    /// `diffusion (sd-turbo)`.
    pub waiting_for: Option<String>,
    pub inference_status: InferenceStatus,
    pub input_status: InputStatus,
    pub gateway_status: GatewayStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InferenceStatus {
    /// Restyled frames a second (= `output_fps`).
    pub fps: f64,
    pub input_fps: f64,
    pub output_fps: f64,
    pub last_params: StreamParams,
    /// SHA-256 of the params' JSON, first 32 hex digits.
    pub last_params_hash: String,
    /// ms since the epoch.
    pub last_params_update_time: i64,
    /// How often the live stream's actor was restarted.
    pub restart_count: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputStatus {
    pub fps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayStatus {
    pub whep_url: String,
    pub websocket_url: String,
    /// Whether a publisher is connected to the live stream.
    pub ingest_connected: bool,
}

/// Scheme and host clients reach us at: `public_url`, else what the
/// request was made to (a trusted proxy's forwarded host, or `Host`).
fn base_url(req: &HttpRequest, state: &AppState) -> String {
    if state.config.configured_public_url.is_some() {
        return state.config.public_url.clone();
    }
    let (scheme, host) = crate::web::auth::request_site(req, state);
    // A Host that is not a host (or none) cannot make a URL for clients.
    if host.is_empty() || url::Url::parse(&format!("http://{host}")).is_err() {
        return state.config.public_url.clone();
    }
    format!("{scheme}://{host}")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn stored_params(row: &api_stream::Model) -> Result<StreamParams, V1Failure> {
    serde_json::from_str(&row.params).map_err(|e| {
        V1Failure::Internal(anyhow::Error::new(e).context(format!("params of {}", row.id)))
    })
}

/// The answer for `row`; `key` is the whole stream key (only on creation).
fn present(
    req: &HttpRequest,
    state: &AppState,
    row: &api_stream::Model,
    owner: &str,
    key: Option<&str>,
) -> Result<V1Stream, V1Failure> {
    let base = base_url(req, state);
    let ws_base = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let host = url::Url::parse(&base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    Ok(V1Stream {
        id: row.id.clone(),
        stream_key: match key {
            Some(k) => k.to_string(),
            None => format!("{}…", row.key_prefix),
        },
        created_at: rfc3339(row.created_at),
        name: row.name.clone(),
        pipeline: row.pipeline.clone(),
        params: stored_params(row)?,
        whip_url: match key {
            Some(k) => format!("{base}/whip/{owner}?key={k}"),
            None => format!("{base}/whip/{owner}"),
        },
        output_playback_id: owner.to_string(),
        output_stream_url: format!("{base}/whep/{owner}"),
        output_websocket_url: format!("{ws_base}/ws/watch/{owner}"),
        author: owner.to_string(),
        gateway_host: host,
        from_playground: false,
        is_smoke_test: false,
    })
}

fn invalid(field: &str, message: String) -> V1Failure {
    V1Failure::field(Invalid::new(field, message))
}

/// The pipeline a body names (`pipeline`, or the deprecated `pipeline_id`).
fn pipeline_of(body: &Value, default: &str) -> Result<String, V1Failure> {
    if let Some(v) = body.get("pipeline").filter(|v| !v.is_null()) {
        return Ok(params::check_pipeline("pipeline", v)
            .map_err(V1Failure::field)?
            .to_string());
    }
    match body.get("pipeline_id").filter(|v| !v.is_null()) {
        None => Ok(default.to_string()),
        Some(v) => match v.as_str() {
            Some(STREAMDIFFUSION) => Ok(STREAMDIFFUSION.into()),
            Some(NEURAL_STYLE) => Ok(NEURAL_STYLE.into()),
            Some(id) if id.starts_with("pip_") && id.len() <= 64 => Ok(STREAMDIFFUSION.into()),
            _ => Err(invalid(
                "pipeline_id",
                format!(
                    "pipeline_id must be \"{STREAMDIFFUSION}\", \"{NEURAL_STYLE}\" or a \
                     Daydream pipeline id (pip_…)"
                ),
            )),
        },
    }
}

/// The params object a body carries (`params`, or the deprecated
/// `pipeline_params`) and its name.
fn params_of(body: &Value) -> Result<Option<(&'static str, &Value)>, V1Failure> {
    let p = body.get("params").filter(|v| !v.is_null());
    let old = body.get("pipeline_params").filter(|v| !v.is_null());
    match (p, old) {
        (Some(_), Some(_)) => Err(invalid(
            "pipeline_params",
            "give params or the deprecated pipeline_params, not both".into(),
        )),
        (Some(v), None) => Ok(Some(("params", v))),
        (None, Some(v)) => Ok(Some(("pipeline_params", v))),
        (None, None) => Ok(None),
    }
}

/// Refuses top-level fields other than `allowed`.
fn only_fields(body: &Value, allowed: &[&str]) -> Result<(), V1Failure> {
    if let Some(obj) = body.as_object()
        && let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str()))
    {
        return Err(invalid(
            key,
            format!("{key} is not a field of this request"),
        ));
    }
    Ok(())
}

fn name_of(body: &Value) -> Result<Option<String>, V1Failure> {
    match body.get("name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            let n = s.chars().count();
            if n > 128 || s.chars().any(char::is_control) {
                return Err(invalid(
                    "name",
                    "name must be at most 128 characters, without control characters".into(),
                ));
            }
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Some(_) => Err(invalid("name", "name must be a string".into())),
    }
}

fn params_hash(p: &StreamParams) -> String {
    let json = serde_json::to_string(p).unwrap_or_default();
    hex::encode(Sha256::digest(json.as_bytes()))[..32].to_string()
}

async fn find(state: &AppState, user_id: i64, id: &str) -> Result<api_stream::Model, V1Failure> {
    api_stream::Entity::find_by_id(id.to_string())
        .filter(api_stream::Column::UserId.eq(user_id))
        .one(state.accounts.db())
        .await?
        .ok_or_else(|| V1Failure::NotFound(format!("no stream {id:?} among yours")))
}

/// The owner's live stream if it was started from `row` (its ingest key).
async fn bound_live(state: &AppState, owner: &Username, row_id: &str) -> Option<Arc<StreamShared>> {
    if state.v1.bound(owner.as_str()).as_deref() != Some(row_id) {
        return None;
    }
    state.control.get(owner).await
}

#[utoipa::path(
    post,
    path = "/v1/streams",
    tag = "streams",
    request_body = CreateStreamRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = V1Stream),
        (status = 400, description = "A refused field", body = V1Error),
        (status = 401, description = "Missing or unknown API key", body = V1Error),
        (status = 413, description = "Body too large", body = V1Error),
        (status = 415, description = "Not JSON", body = V1Error),
        (status = 429, description = "Rate limited", body = V1Error),
        (status = 500, description = "Internal error", body = V1Error),
        (status = 503, description = "Cannot count requests", body = V1Error),
    )
)]
/// Creates a stream configuration of the key owner's channel, with its own
/// stream key; nothing goes live (or is charged) until video arrives.
pub async fn create(
    req: HttpRequest,
    api: ApiUser,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, V1Failure> {
    let body = json_body(&req, payload, &state).await?;
    only_fields(
        &body,
        &[
            "pipeline",
            "params",
            "name",
            "output_rtmp_url",
            "pipeline_id",
            "pipeline_params",
        ],
    )?;
    let pipeline = pipeline_of(&body, STREAMDIFFUSION)?;
    match body.get("output_rtmp_url") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(_) => {
            return Err(invalid(
                "output_rtmp_url",
                "output_rtmp_url: this server pushes no RTMP; read the output by WHEP \
                 (output_stream_url) or WebSocket (output_websocket_url)"
                    .into(),
            ));
        }
    }
    let name = name_of(&body)?;
    let mut p = StreamParams::default();
    let at = match params_of(&body)? {
        Some((at, v)) => {
            params::merge(&pipeline, at, v, &mut p).map_err(V1Failure::field)?;
            at
        }
        None => "params",
    };
    params::check_whole(&pipeline, at, &p).map_err(V1Failure::field)?;
    let base = state.config.default_style.clone();
    params::to_style(&pipeline, &p, &base).map_err(V1Failure::field)?;
    let id = format!("str_{}", hex::encode(rand::random::<[u8; 12]>()));
    let now = Utc::now();
    let db = state.accounts.db();
    let txn = db.begin().await?;
    let (key_row, key) = keys::create_ingest_key(&txn, api.user.id, &id).await?;
    let row = api_stream::ActiveModel {
        id: Set(id.clone()),
        user_id: Set(api.user.id),
        name: Set(name.unwrap_or_else(|| id.clone())),
        pipeline: Set(pipeline),
        params: Set(serde_json::to_string(&p).map_err(anyhow::Error::new)?),
        key_id: Set(key_row.id),
        key_prefix: Set(key_row.prefix),
        created_at: Set(now),
        params_updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    tracing::info!(stream = %row.id, user = %api.user.username, key = api.key_id, "/v1 stream created");
    let answer = present(&req, &state, &row, api.user.username.as_str(), Some(&key))?;
    Ok(HttpResponse::Created().json(answer))
}

#[utoipa::path(
    get,
    path = "/v1/streams",
    tag = "streams",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key owner's streams, newest first", body = StreamList),
        (status = 401, description = "Missing or unknown API key", body = V1Error),
        (status = 429, description = "Rate limited", body = V1Error),
        (status = 500, description = "Internal error", body = V1Error),
        (status = 503, description = "Cannot count requests", body = V1Error),
    )
)]
/// The key owner's streams (a `user_id` query, which Daydream's SDK may
/// send, changes nothing: a key reads its owner's streams only).
pub async fn list(
    req: HttpRequest,
    api: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, V1Failure> {
    let rows = api_stream::Entity::find()
        .filter(api_stream::Column::UserId.eq(api.user.id))
        .order_by_desc(api_stream::Column::CreatedAt)
        .order_by_desc(api_stream::Column::Id)
        .all(state.accounts.db())
        .await?;
    let data = rows
        .iter()
        .map(|r| present(&req, &state, r, api.user.username.as_str(), None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(StreamList {
        success: true,
        data,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/streams/{id}",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The stream's id")),
    responses(
        (status = 200, description = "The stream", body = V1Stream),
        (status = 401, description = "Missing or unknown API key", body = V1Error),
        (status = 404, description = "No such stream among the key owner's", body = V1Error),
        (status = 429, description = "Rate limited", body = V1Error),
        (status = 500, description = "Internal error", body = V1Error),
        (status = 503, description = "Cannot count requests", body = V1Error),
    )
)]
/// One of the key owner's streams (another user's is a 404).
pub async fn get(
    req: HttpRequest,
    api: ApiUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, V1Failure> {
    let row = find(&state, api.user.id, &path).await?;
    Ok(HttpResponse::Ok().json(present(
        &req,
        &state,
        &row,
        api.user.username.as_str(),
        None,
    )?))
}

#[utoipa::path(
    patch,
    path = "/v1/streams/{id}",
    tag = "streams",
    request_body = UpdateStreamRequest,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The stream's id")),
    responses(
        (status = 200, description = "The stream as updated", body = V1Stream),
        (status = 400, description = "A refused field", body = V1Error),
        (status = 401, description = "Missing or unknown API key", body = V1Error),
        (status = 404, description = "No such stream among the key owner's", body = V1Error),
        (status = 413, description = "Body too large", body = V1Error),
        (status = 415, description = "Not JSON", body = V1Error),
        (status = 429, description = "Rate limited", body = V1Error),
        (status = 500, description = "Internal error", body = V1Error),
        (status = 503, description = "Cannot count requests", body = V1Error),
    )
)]
/// Changes a stream's name, pipeline or params. A live stream started from
/// it takes the new style with its next frame; a new model is loaded by the
/// worker that gets the next frame, the viewers keep the last picture.
pub async fn update(
    req: HttpRequest,
    api: ApiUser,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, V1Failure> {
    let row = find(&state, api.user.id, &path).await?;
    let body = json_body(&req, payload, &state).await?;
    only_fields(
        &body,
        &[
            "pipeline",
            "params",
            "name",
            "pipeline_id",
            "pipeline_params",
        ],
    )?;
    let pipeline = pipeline_of(&body, &row.pipeline)?;
    let mut p = if pipeline == row.pipeline {
        stored_params(&row)?
    } else {
        StreamParams::default()
    };
    let given = params_of(&body)?;
    let at = match given {
        Some((at, v)) => {
            params::merge(&pipeline, at, v, &mut p).map_err(V1Failure::field)?;
            at
        }
        None => "params",
    };
    params::check_whole(&pipeline, at, &p).map_err(V1Failure::field)?;
    let base = state.config.default_style.clone();
    let style = params::to_style(&pipeline, &p, &base).map_err(V1Failure::field)?;
    let name = name_of(&body)?;
    let restyled = given.is_some() || pipeline != row.pipeline;
    let mut active: api_stream::ActiveModel = row.clone().into();
    if let Some(n) = name {
        active.name = Set(n);
    }
    if restyled {
        active.pipeline = Set(pipeline);
        active.params = Set(serde_json::to_string(&p).map_err(anyhow::Error::new)?);
        active.params_updated_at = Set(Utc::now());
    }
    let row = active.update(state.accounts.db()).await?;
    if restyled && let Some(live) = bound_live(&state, &api.user.username, &row.id).await {
        let name = style_name(&style);
        live.set_settings(style, name, None);
    }
    Ok(HttpResponse::Ok().json(present(
        &req,
        &state,
        &row,
        api.user.username.as_str(),
        None,
    )?))
}

async fn delete_row(state: &AppState, api: &ApiUser, id: &str) -> Result<HttpResponse, V1Failure> {
    let row = find(state, api.user.id, id).await?;
    let live = bound_live(state, &api.user.username, &row.id).await;
    let txn = state.accounts.db().begin().await?;
    keys::delete_key(&txn, row.key_id).await?;
    api_stream::Entity::delete_by_id(row.id.clone())
        .exec(&txn)
        .await?;
    txn.commit().await?;
    if live.is_some() {
        state.v1.unbind(api.user.username.as_str());
        state.control.stop(&api.user.username, EndReason::Stopped);
    }
    Ok(HttpResponse::Ok().json(DeleteStreamResponse {
        success: true,
        data: Empty {},
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/streams/{id}",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The stream's id")),
    responses(
        (status = 200, description = "Deleted", body = DeleteStreamResponse),
        (status = 401, description = "Missing or unknown API key", body = V1Error),
        (status = 404, description = "No such stream among the key owner's", body = V1Error),
        (status = 429, description = "Rate limited", body = V1Error),
        (status = 500, description = "Internal error", body = V1Error),
        (status = 503, description = "Cannot count requests", body = V1Error),
    )
)]
/// Deletes a stream: its key stops working at once, and the live stream it
/// started ends.
pub async fn delete(
    api: ApiUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, V1Failure> {
    delete_row(&state, &api, &path).await
}

/// `DELETE /v1/streams?id=…`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The stream's id.
    pub id: String,
}

#[utoipa::path(
    delete,
    path = "/v1/streams",
    tag = "streams",
    security(("bearer" = [])),
    params(DeleteQuery),
    responses(
        (status = 200, description = "Deleted", body = DeleteStreamResponse),
        (status = 400, description = "No id given", body = V1Error),
        (status = 401, description = "Missing or unknown API key", body = V1Error),
        (status = 404, description = "No such stream among the key owner's", body = V1Error),
        (status = 429, description = "Rate limited", body = V1Error),
        (status = 500, description = "Internal error", body = V1Error),
        (status = 503, description = "Cannot count requests", body = V1Error),
    )
)]
/// Deletes a stream named in the query (what Daydream's SDK sends).
pub async fn delete_by_query(
    req: HttpRequest,
    api: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, V1Failure> {
    let id =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("id").cloned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| invalid("id", "give the stream's id: DELETE /v1/streams?id=…".into()))?;
    delete_row(&state, &api, &id).await
}

#[utoipa::path(
    get,
    path = "/v1/streams/{id}/status",
    tag = "streams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The stream's id")),
    responses(
        (status = 200, description = "What the stream is doing", body = StreamStatus),
        (status = 401, description = "Missing or unknown API key", body = V1Error),
        (status = 404, description = "No such stream among the key owner's", body = V1Error),
        (status = 429, description = "Rate limited", body = V1Error),
        (status = 500, description = "Internal error", body = V1Error),
        (status = 503, description = "Cannot count requests", body = V1Error),
    )
)]
/// Whether the stream is live, its frame rates, its params, and whether a
/// worker runs its model.
pub async fn status(
    req: HttpRequest,
    api: ApiUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
    stats: web::Data<crate::stats::Stats>,
) -> Result<HttpResponse, V1Failure> {
    let row = find(&state, api.user.id, &path).await?;
    let p = stored_params(&row)?;
    let base = state.config.default_style.clone();
    let style = params::to_style(&row.pipeline, &p, &base).map_err(V1Failure::field)?;
    let need = Requirement::of(&style);
    let workers = state
        .control
        .scheduler_snapshot()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "/v1 status: no scheduler snapshot");
            V1Failure::Unavailable("the scheduler did not answer: try again shortly".into())
        })?
        .workers;
    let served = workers.iter().any(|w| {
        w.state != dreamstream_actors::scheduler::WorkerState::Lost
            && w.processor == need.processor.as_str()
            && need
                .model
                .as_ref()
                .is_none_or(|m| w.models.iter().any(|have| have == m))
    });
    let live = bound_live(&state, &api.user.username, &row.id).await;
    let (fps_in, fps_out) = live
        .as_ref()
        .and_then(|s| stats.rates(s.id))
        .map_or((0.0, 0.0), |r| (r.fps_in, r.fps_out));
    let snapshot = live.as_ref().map(|s| s.snapshot());
    let waiting_for = (!served).then(|| need.describe());
    let state_name = match (&waiting_for, &snapshot) {
        (Some(_), _) => "WAITING_FOR_WORKER",
        (None, Some(s)) if s.broadcaster_connected => "ONLINE",
        (None, Some(_)) => "DEGRADED_INPUT",
        (None, None) => "OFFLINE",
    };
    let entry = present(&req, &state, &row, api.user.username.as_str(), None)?;
    let last_error = waiting_for
        .as_ref()
        .map(|w| format!("no worker in the cluster runs {w} yet: the stream waits for one"));
    Ok(HttpResponse::Ok().json(StreamStatus {
        success: true,
        error: None,
        data: StatusData {
            stream_id: row.id.clone(),
            state: state_name.to_string(),
            pipeline: row.pipeline.clone(),
            start_time: snapshot.as_ref().map(|s| s.started_at_ms as i64),
            waiting_for,
            inference_status: InferenceStatus {
                fps: fps_out,
                input_fps: fps_in,
                output_fps: fps_out,
                last_params_hash: params_hash(&p),
                last_params: p,
                last_params_update_time: row.params_updated_at.timestamp_millis(),
                restart_count: snapshot.as_ref().map_or(0, |s| s.restarts),
                last_error,
            },
            input_status: InputStatus { fps: fps_in },
            gateway_status: GatewayStatus {
                whep_url: entry.output_stream_url,
                websocket_url: entry.output_websocket_url,
                ingest_connected: snapshot.as_ref().is_some_and(|s| s.broadcaster_connected),
            },
        },
    }))
}

/// Called when a publisher (WHIP or WebSocket) takes `stream` live: with a
/// `/v1` stream's key, the stream takes that record's style and is bound to
/// it; with any other credential the channel is bound to no record.
pub async fn on_publish(
    req: &HttpRequest,
    state: &AppState,
    stream: &StreamShared,
) -> Result<(), crate::web::errors::ApiError> {
    let username = stream.username.as_str();
    let key = crate::web::auth::presented_key(req);
    let row = match key {
        Some(k) => keys::broadcasting_key(state.accounts.db(), &k).await?,
        None => None,
    };
    let record = match row {
        Some(k) if k.kind == keys::KeyKind::Ingest.as_str() => {
            api_stream::Entity::find()
                .filter(api_stream::Column::KeyId.eq(k.id))
                .one(state.accounts.db())
                .await?
        }
        _ => None,
    };
    let Some(record) = record else {
        state.v1.unbind(username);
        return Ok(());
    };
    let p: StreamParams = serde_json::from_str(&record.params)
        .map_err(|e| crate::web::errors::ApiError::Internal(e.into()))?;
    let base = state.config.default_style.clone();
    match params::to_style(&record.pipeline, &p, &base) {
        Ok(style) => {
            let name = style_name(&style);
            stream.set_settings(style, name, None);
        }
        Err(e) => {
            tracing::warn!(stream = %record.id, error = %e.message, "stored /v1 params no longer apply")
        }
    }
    state.v1.bind(username, &record.id);
    Ok(())
}
