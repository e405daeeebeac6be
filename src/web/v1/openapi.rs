//! The `/v1` API's OpenAPI 3.1 document, generated from the handlers and
//! the very types they answer with (`utoipa`), at `/v1/openapi.json`, and a
//! reference page rendered from that same document on the server
//! (`/v1/docs`: no script, nothing from another site).

use actix_web::HttpResponse;
use askama::Template;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::params::{Interpolation, Pipeline, Prompt, Seed, StreamParams};
use super::streams::{
    CreateStreamRequest, DeleteStreamResponse, Empty, GatewayStatus, InferenceStatus, InputStatus,
    StatusData, StreamList, StreamStatus, UpdateStreamRequest, V1Stream,
};
use super::{ErrorDetails, V1Error};

/// The document's root.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DreamStream /v1 API",
        description = "Programmatic streams, compatible with Daydream's API: create a stream \
                       configuration, publish to its WHIP URL with its stream key, restyle it \
                       with PATCH, read the output by WHEP or WebSocket. Authenticate with \
                       `Authorization: Bearer <API key>` (made on the account page).",
        version = "1.0.0"
    ),
    paths(
        super::streams::create,
        super::streams::list,
        super::streams::get,
        super::streams::update,
        super::streams::delete,
        super::streams::delete_by_query,
        super::streams::status,
    ),
    components(schemas(
        V1Error,
        ErrorDetails,
        V1Stream,
        StreamList,
        CreateStreamRequest,
        UpdateStreamRequest,
        StreamParams,
        Pipeline,
        Prompt,
        Seed,
        Interpolation,
        DeleteStreamResponse,
        Empty,
        StreamStatus,
        StatusData,
        InferenceStatus,
        InputStatus,
        GatewayStatus,
    )),
    modifiers(&BearerAuth),
    tags((name = "streams", description = "Daydream-compatible streams"))
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON.
pub fn document_json() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}

/// `GET /v1/openapi.json` (public).
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}

/// One operation as the page lists it.
struct OperationView {
    method: String,
    path: String,
    summary: String,
    description: String,
    parameters: Vec<(String, String, String)>,
    request: Option<String>,
    responses: Vec<(String, String, String)>,
}

/// One schema as the page lists it.
struct SchemaView {
    name: String,
    description: String,
    kind: String,
    fields: Vec<(String, String, bool, String)>,
}

#[derive(Template)]
#[template(path = "api_docs.html")]
struct ReferencePage {
    nav: crate::web::pages::Nav,
    title: String,
    description: String,
    operations: Vec<OperationView>,
    schemas: Vec<SchemaView>,
}

/// A short type name for a schema (`string`, `V1Stream`, `list of …`).
fn type_of(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = list.iter().map(type_of).filter(|t| t != "null").collect();
            return parts.join(" or ");
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    };
    if ty == "array"
        && let Some(items) = s.get("items")
    {
        return format!("list of {}", type_of(items));
    }
    ty
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

fn views(doc: &Value) -> (Vec<OperationView>, Vec<SchemaView>) {
    let mut operations = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let parameters = op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                (
                                    text(p.get("name")),
                                    text(p.get("in")),
                                    text(p.get("description")),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let request = op
                    .pointer("/requestBody/content/application~1json/schema")
                    .map(type_of);
                let responses = op
                    .get("responses")
                    .and_then(Value::as_object)
                    .map(|rs| {
                        rs.iter()
                            .map(|(code, r)| {
                                (
                                    code.clone(),
                                    text(r.get("description")),
                                    r.pointer("/content/application~1json/schema")
                                        .map(type_of)
                                        .unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                operations.push(OperationView {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    summary: text(op.get("summary")),
                    description: text(op.get("description")),
                    parameters,
                    request,
                    responses,
                });
            }
        }
    }
    let mut schemas = Vec::new();
    if let Some(all) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, s) in all {
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let fields = s
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .map(|(field, p)| {
                            (
                                field.clone(),
                                type_of(p),
                                required.contains(&field.as_str()),
                                text(p.get("description")),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            schemas.push(SchemaView {
                name: name.clone(),
                description: text(s.get("description")),
                kind: type_of(s),
                fields,
            });
        }
    }
    (operations, schemas)
}

/// `GET /v1/docs`: the reference, rendered from the document.
pub async fn reference_page(
    session: actix_session::Session,
    user: crate::web::session::MaybeUser,
) -> Result<HttpResponse, crate::web::errors::ApiError> {
    let doc = document_json();
    let (operations, schemas) = views(&doc);
    let page = ReferencePage {
        nav: crate::web::pages::Nav::new(&session, &user),
        title: text(doc.pointer("/info/title")),
        description: text(doc.pointer("/info/description")),
        operations,
        schemas,
    };
    let html = page
        .render()
        .map_err(|e| crate::web::errors::ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html))
}
