//! The `/v1` API (issue 20): API keys (account page, `dreamstream admin`),
//! Daydream-compatible streams, the OpenAPI document every request and
//! answer here is validated against, schemathesis against a live server, a
//! script written for Daydream's API, and bad input with exact bodies.

use std::time::Duration;

use actix_web::http::Method;
use dreamstream::accounts::keys::{self, KeyRef};
use dreamstream_actors::Username;
use dreamstream_actors::style::ProcessorKind;
use serde_json::{Value, json};

use crate::helpers::*;

/// An HTTP answer: status, headers we look at, JSON body (Null when none).
struct Answer {
    status: u16,
    body: Value,
    text: String,
}

/// An HTTP client that shows redirects instead of following them.
fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .max_redirects(0)
        .finish()
}

async fn call(
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let mut req = client().request(method, url);
    if let Some(k) = key {
        req = req.insert_header(("Authorization", format!("Bearer {k}")));
    }
    let mut resp = match body {
        Some((content_type, bytes)) => req
            .insert_header(("Content-Type", content_type))
            .send_body(bytes)
            .await
            .expect("request"),
        None => req.send().await.expect("request"),
    };
    let bytes = resp
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status: resp.status().as_u16(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

async fn send_json(method: Method, url: &str, key: &str, body: &Value) -> Answer {
    call(
        method,
        url,
        Some(key),
        Some(("application/json", serde_json::to_vec(body).unwrap())),
    )
    .await
}

/// A user `name` with an API key.
async fn api_user(app: &TestApp, name: &str) -> (i64, String) {
    app.streamer(name, 10).await;
    let user = app
        .state
        .accounts
        .find(&Username::parse(name).unwrap())
        .await
        .unwrap()
        .expect("the user exists");
    let (_, key) = keys::create_api_key(app.state.accounts.db(), user.id, "tests")
        .await
        .expect("an API key");
    (user.id, key)
}

/// The generated OpenAPI document and validation against it.
struct Contract {
    doc: Value,
}

impl Contract {
    async fn fetch(app: &TestApp) -> Contract {
        let a = call(
            Method::GET,
            &format!("{}/v1/openapi.json", app.address),
            None,
            None,
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["openapi"], "3.1.0", "an OpenAPI 3.1 document");
        Contract { doc: a.body }
    }

    fn operation(&self, path: &str, method: &str) -> &Value {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "the document has no {method} {path}");
        op
    }

    /// Panics unless `instance` is valid against `schema` (its `$ref`s
    /// resolved in this document).
    fn check(&self, what: &str, schema: &Value, instance: &Value) {
        let mut root = json!({ "$schema": "https://json-schema.org/draft/2020-12/schema" });
        if let Value::Object(s) = schema {
            for (k, v) in s {
                root[k] = v.clone();
            }
        }
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} breaks the OpenAPI document: {errors:?}\n{instance:#}"
        );
    }

    /// Whether `instance` is valid against `schema` (for bodies the
    /// document must refuse).
    fn accepts(&self, schema: &Value, instance: &Value) -> bool {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        jsonschema::draft202012::new(&root)
            .expect("the schema compiles")
            .is_valid(instance)
    }

    fn request_schema(&self, path: &str, method: &str) -> Value {
        self.operation(path, method)["requestBody"]["content"]["application/json"]["schema"].clone()
    }

    /// Checks an answer against what the operation documents for its status.
    fn answer(&self, path: &str, method: &str, a: &Answer) {
        let response = &self.operation(path, method)["responses"][a.status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {} which it does not document: {}",
            a.status,
            a.text
        );
        let schema = &response["content"]["application/json"]["schema"];
        self.check(&format!("{method} {path} → {}", a.status), schema, &a.body);
    }

    /// Sends `body` (checked against the request schema first) and checks
    /// the answer.
    async fn send(
        &self,
        app: &TestApp,
        method: Method,
        template: &str,
        path: &str,
        key: &str,
        body: &Value,
    ) -> Answer {
        let m = method.as_str().to_lowercase();
        self.check(
            &format!("the request of {m} {template}"),
            &self.request_schema(template, &m),
            body,
        );
        let a = send_json(method, &format!("{}{path}", app.address), key, body).await;
        self.answer(template, &m, &a);
        a
    }

    async fn get(
        &self,
        app: &TestApp,
        method: Method,
        template: &str,
        path: &str,
        key: &str,
    ) -> Answer {
        let m = method.as_str().to_lowercase();
        let a = call(method, &format!("{}{path}", app.address), Some(key), None).await;
        self.answer(template, &m, &a);
        a
    }
}

on_both_databases!(
    v1_streams_round_trip_against_the_openapi_document,
    |db| async move {
        let app = spawn_app_on(db, |_| {}).await;
        let (_, key) = api_user(&app, "apiuser").await;
        let c = Contract::fetch(&app).await;
        // Create (Daydream's shape), in both pipelines.
        let made = c
            .send(
                &app,
                Method::POST,
                "/v1/streams",
                "/v1/streams",
                &key,
                &json!({
                    "pipeline": "streamdiffusion",
                    "name": "my stream",
                    "params": {
                        "model_id": "stabilityai/sdxl-turbo",
                        "prompt": [["a castle", 0.75], ["a fox", 0.25]],
                        "negative_prompt": "blurry",
                        "guidance_scale": 1.5,
                        "delta": 0.7,
                        "num_inference_steps": 50,
                        "t_index_list": [20, 35],
                        "seed": [[42, 0.5], [7, 0.5]],
                        "seed_interpolation_method": "slerp",
                        "width": 512,
                        "height": 512,
                        "enable_similar_image_filter": true,
                        "similar_image_filter_threshold": 0.98,
                        "similar_image_filter_max_skip_frame": 10
                    }
                }),
            )
            .await;
        assert_eq!(made.status, 201, "{}", made.text);
        let id = made.body["id"].as_str().unwrap().to_string();
        let stream_key = made.body["stream_key"].as_str().unwrap().to_string();
        assert!(stream_key.starts_with("dsk_"), "{stream_key}");
        assert_eq!(made.body["name"], "my stream");
        assert_eq!(made.body["params"]["guidance_scale"], 1.5);
        assert_eq!(made.body["output_playback_id"], "apiuser");
        let whip = made.body["whip_url"].as_str().unwrap();
        assert!(
            whip.ends_with(&format!("/whip/apiuser?key={stream_key}")),
            "{whip}"
        );
        assert!(
            made.body["output_stream_url"]
                .as_str()
                .unwrap()
                .ends_with("/whep/apiuser")
        );
        assert!(
            made.body["output_websocket_url"]
                .as_str()
                .unwrap()
                .starts_with("ws://")
        );
        // The deprecated names work too.
        let old = c
            .send(
                &app,
                Method::POST,
                "/v1/streams",
                "/v1/streams",
                &key,
                &json!({
                    "pipeline_id": "pip_qpUgXycjWF6YMeSL",
                    "pipeline_params": {"model_id": "stabilityai/sd-turbo", "prompt": "a cat"}
                }),
            )
            .await;
        assert_eq!(old.status, 201, "{}", old.text);
        assert_eq!(old.body["pipeline"], "streamdiffusion");
        let old_id = old.body["id"].as_str().unwrap().to_string();
        let neural = c
            .send(
                &app,
                Method::POST,
                "/v1/streams",
                "/v1/streams",
                &key,
                &json!({
                    "pipeline": "neural-style",
                    "params": {"style": "Starry Swirl", "strength": 0.8, "preserve_color": true}
                }),
            )
            .await;
        assert_eq!(neural.status, 201, "{}", neural.text);
        // Read: the list and one; the key is not shown again.
        let list = c
            .get(&app, Method::GET, "/v1/streams", "/v1/streams", &key)
            .await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body["success"], true);
        assert_eq!(
            list.body["data"].as_array().unwrap().len(),
            3,
            "{}",
            list.text
        );
        let one = c
            .get(
                &app,
                Method::GET,
                "/v1/streams/{id}",
                &format!("/v1/streams/{id}"),
                &key,
            )
            .await;
        assert_eq!(one.status, 200);
        assert_eq!(one.body["params"], made.body["params"]);
        let shown = one.body["stream_key"].as_str().unwrap();
        assert!(
            shown.ends_with('…') && stream_key.starts_with(shown.trim_end_matches('…')),
            "{shown}"
        );
        // Patch: merged params.
        let patched = c
            .send(
                &app,
                Method::PATCH,
                "/v1/streams/{id}",
                &format!("/v1/streams/{id}"),
                &key,
                &json!({"params": {"prompt": "a lighthouse", "guidance_scale": null}}),
            )
            .await;
        assert_eq!(patched.status, 200, "{}", patched.text);
        assert_eq!(patched.body["params"]["prompt"], "a lighthouse");
        assert!(patched.body["params"].get("guidance_scale").is_none());
        assert_eq!(patched.body["params"]["model_id"], "stabilityai/sdxl-turbo");
        // Status: no diffusion worker here, so it waits for one.
        let status = c
            .get(
                &app,
                Method::GET,
                "/v1/streams/{id}/status",
                &format!("/v1/streams/{id}/status"),
                &key,
            )
            .await;
        assert_eq!(status.status, 200, "{}", status.text);
        assert_eq!(status.body["success"], true);
        assert_eq!(status.body["data"]["state"], "WAITING_FOR_WORKER");
        assert_eq!(status.body["data"]["waiting_for"], "diffusion (sdxl-turbo)");
        assert_eq!(
            status.body["data"]["inference_status"]["last_params"]["prompt"],
            "a lighthouse"
        );
        // The neural-style stream has a worker (the in-process one): offline.
        let nid = neural.body["id"].as_str().unwrap();
        let ns = c
            .get(
                &app,
                Method::GET,
                "/v1/streams/{id}/status",
                &format!("/v1/streams/{nid}/status"),
                &key,
            )
            .await;
        assert_eq!(ns.body["data"]["state"], "OFFLINE", "{}", ns.text);
        // Delete, both ways; then it is gone.
        let del = c
            .get(
                &app,
                Method::DELETE,
                "/v1/streams/{id}",
                &format!("/v1/streams/{id}"),
                &key,
            )
            .await;
        assert_eq!(del.status, 200, "{}", del.text);
        assert_eq!(del.body, json!({"success": true, "data": {}}));
        let del = c
            .get(
                &app,
                Method::DELETE,
                "/v1/streams",
                &format!("/v1/streams?id={old_id}"),
                &key,
            )
            .await;
        assert_eq!(del.status, 200, "{}", del.text);
        let gone = c
            .get(
                &app,
                Method::GET,
                "/v1/streams/{id}",
                &format!("/v1/streams/{id}"),
                &key,
            )
            .await;
        assert_eq!(gone.status, 404);
        // The deleted stream's key broadcasts no more.
        let refused = raw_upgrade(
            &app.address,
            &format!("/ws/broadcast/apiuser?key={stream_key}"),
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
        // Bad input is documented too: every error answer fits V1Error.
        let bad = c
            .get(&app, Method::DELETE, "/v1/streams", "/v1/streams", &key)
            .await;
        assert_eq!(bad.status, 400);
    }
);

/// The exact error body of a refused field.
fn field_error(field: &str, message: &str) -> Value {
    json!({
        "success": false,
        "error": message,
        "code": "STREAMS/INVALID_PARAMS",
        "status": 400,
        "details": {"field": field},
    })
}

on_both_databases!(v1_bad_input_gets_exact_error_bodies, |db| async move {
    let app = spawn_app_on(db, |_| {}).await;
    let (owner_id, key) = api_user(&app, "owner").await;
    let (_, other_key) = api_user(&app, "other").await;
    let c = Contract::fetch(&app).await;
    let streams = format!("{}/v1/streams", app.address);
    let unauthorized = json!({
        "success": false,
        "error": "missing or unknown API key: send Authorization: Bearer <your API key>",
        "code": "AUTH/UNAUTHORIZED",
        "status": 401,
    });
    // No key, a wrong key, a stream key in place of an API key.
    for presented in [None, Some("dsa_0000"), Some("nonsense")] {
        let a = call(Method::GET, &streams, presented, None).await;
        assert_eq!((a.status, &a.body), (401, &unauthorized), "{presented:?}");
        c.answer("/v1/streams", "get", &a);
    }
    let stream_key = app.streamer("owner", 10).await;
    let a = call(Method::GET, &streams, Some(&stream_key), None).await;
    assert_eq!((a.status, &a.body), (401, &unauthorized));
    // Another user's stream is not found (not forbidden).
    let made = send_json(
        Method::POST,
        &streams,
        &key,
        &json!({"pipeline": "neural-style", "params": {"style": "3"}}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let id = made.body["id"].as_str().unwrap();
    let not_found = json!({
        "success": false,
        "error": format!("no stream \"{id}\" among yours"),
        "code": "STREAMS/NOT_FOUND",
        "status": 404,
    });
    for (method, path) in [
        (Method::GET, format!("{streams}/{id}")),
        (Method::GET, format!("{streams}/{id}/status")),
        (Method::DELETE, format!("{streams}/{id}")),
        (Method::DELETE, format!("{streams}?id={id}")),
    ] {
        let a = call(method.clone(), &path, Some(&other_key), None).await;
        assert_eq!((a.status, &a.body), (404, &not_found), "{method} {path}");
    }
    let a = send_json(
        Method::PATCH,
        &format!("{streams}/{id}"),
        &other_key,
        &json!({"params": {"strength": 0.5}}),
    )
    .await;
    assert_eq!((a.status, &a.body), (404, &not_found));
    // Malformed JSON.
    let a = call(
        Method::POST,
        &streams,
        Some(&key),
        Some(("application/json", b"{\"pipeline\": ".to_vec())),
    )
    .await;
    assert_eq!(
        (a.status, a.body.clone()),
        (
            400,
            json!({"success": false, "error": "the request body is not valid JSON",
                   "code": "REQUEST/INVALID_JSON", "status": 400})
        )
    );
    c.answer("/v1/streams", "post", &a);
    // Not JSON at all.
    let a = call(
        Method::POST,
        &streams,
        Some(&key),
        Some(("text/plain", b"hello".to_vec())),
    )
    .await;
    assert_eq!(
        (a.status, a.body.clone()),
        (
            415,
            json!({"success": false, "error": "send JSON (Content-Type: application/json)",
                   "code": "REQUEST/UNSUPPORTED_MEDIA_TYPE", "status": 415})
        )
    );
    // Wrong types, out-of-range numbers, unknown fields: each named, and
    // each refused by the document's schema too.
    let request_schema = c.request_schema("/v1/streams", "post");
    let sd = |params: Value| json!({"pipeline": "streamdiffusion", "params": params});
    let cases = [
        (
            sd(json!({"model_id": "stabilityai/sd-turbo", "guidance_scale": "high"})),
            field_error(
                "params.guidance_scale",
                "params.guidance_scale must be a number",
            ),
        ),
        (
            sd(json!({"model_id": "stabilityai/sd-turbo", "guidance_scale": 31})),
            field_error(
                "params.guidance_scale",
                "params.guidance_scale must be a number from 0 to 30",
            ),
        ),
        (
            sd(json!({"model_id": "stabilityai/sd-turbo", "width": 4096})),
            field_error(
                "params.width",
                "params.width must be a whole number from 384 to 1024",
            ),
        ),
        (
            sd(json!({"model_id": "stabilityai/sd-turbo", "seed": -1})),
            field_error(
                "params.seed",
                "params.seed must be a whole number from 0 to 9007199254740991",
            ),
        ),
        (
            sd(json!({"model_id": "stabilityai/sd-turbo", "t_index_list": [1, 2, 3, 4, 5]})),
            field_error(
                "params.t_index_list",
                "params.t_index_list must be a list of 1 to 4 step indices",
            ),
        ),
        (
            sd(json!({"model_id": "stabilityai/sd-turbo", "controlnets": []})),
            field_error(
                "params.controlnets",
                "params.controlnets is not a parameter this server knows",
            ),
        ),
        (
            json!({"pipeline": "streamdiffusion", "params": {"model_id": "stabilityai/sd-turbo"}, "colour": "red"}),
            field_error("colour", "colour is not a field of this request"),
        ),
        (
            json!({"pipeline": "hls"}),
            field_error(
                "pipeline",
                "pipeline must be \"streamdiffusion\" or \"neural-style\"",
            ),
        ),
        (
            json!({"pipeline": "neural-style", "params": {"strength": 2}}),
            field_error(
                "params.strength",
                "params.strength must be a number from 0 to 1",
            ),
        ),
    ];
    for (body, expected) in cases {
        let a = send_json(Method::POST, &streams, &key, &body).await;
        assert_eq!((a.status, &a.body), (400, &expected), "{body}");
        c.answer("/v1/streams", "post", &a);
        assert!(
            !c.accepts(&request_schema, &body),
            "the document accepts a body the server refuses: {body}"
        );
    }
    // A model id the document lists nowhere, a neural-style field in a
    // diffusion stream: refused by the server with the field named.
    let a = send_json(
        Method::POST,
        &streams,
        &key,
        &sd(json!({"model_id": "stabilityai/sd-turbo", "style": "3"})),
    )
    .await;
    assert_eq!(
        (a.status, &a.body),
        (
            400,
            &field_error(
                "params.style",
                "params.style is not a parameter of the streamdiffusion pipeline"
            )
        )
    );
    // A 10 MB body: 413, before it is read.
    let big = vec![b' '; 10 * 1024 * 1024];
    let a = call(
        Method::POST,
        &streams,
        Some(&key),
        Some(("application/json", big)),
    )
    .await;
    assert_eq!(
        (a.status, a.body.clone()),
        (
            413,
            json!({"success": false, "error": "the request body is over 65536 bytes",
                   "code": "REQUEST/TOO_LARGE", "status": 413})
        )
    );
    c.answer("/v1/streams", "post", &a);
    // A revoked key is refused at once.
    let user = app
        .state
        .accounts
        .find(&Username::parse("owner").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.id, owner_id);
    keys::revoke_api_key(app.state.accounts.db(), owner_id, KeyRef::Name("tests"))
        .await
        .expect("revoked");
    let a = call(Method::GET, &streams, Some(&key), None).await;
    assert_eq!((a.status, &a.body), (401, &unauthorized));
});

#[actix_web::test]
async fn v1_rate_limit_is_per_key() {
    let app = spawn_app_with(|s| s.api.requests_per_minute = 3).await;
    let (_, key) = api_user(&app, "busy").await;
    let (_, other) = api_user(&app, "calm").await;
    let url = format!("{}/v1/streams", app.address);
    for _ in 0..3 {
        assert_eq!(call(Method::GET, &url, Some(&key), None).await.status, 200);
    }
    let a = call(Method::GET, &url, Some(&key), None).await;
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.body["code"], "RATE_LIMITED");
    assert_eq!(a.body["success"], false);
    // Another key is not slowed down.
    assert_eq!(
        call(Method::GET, &url, Some(&other), None).await.status,
        200
    );
}

/// Publishing with a `/v1` stream's key takes the channel live with that
/// stream's style; PATCH restyles the live stream; DELETE ends it.
#[actix_web::test]
async fn v1_stream_key_publishes_and_patch_restyles_the_live_stream() {
    let app = spawn_app().await;
    let (_, key) = api_user(&app, "live1").await;
    let streams = format!("{}/v1/streams", app.address);
    let made = send_json(
        Method::POST,
        &streams,
        &key,
        &json!({"pipeline": "neural-style", "params": {"style": "19", "strength": 0.6}}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let id = made.body["id"].as_str().unwrap().to_string();
    let stream_key = made.body["stream_key"].as_str().unwrap().to_string();
    let mut broadcaster = connect(&format!("{}/ws/broadcast/live1?key={stream_key}", app.ws)).await;
    let live = app
        .state
        .control
        .get(&Username::parse("live1").unwrap())
        .await
        .expect("live");
    assert_eq!(live.settings().strength, 0.6);
    let photo = photos().remove(0);
    send_binary(&mut broadcaster, photo.clone()).await;
    let a = send_json(
        Method::PATCH,
        &format!("{streams}/{id}"),
        &key,
        &json!({"params": {"strength": 0.25, "preserve_color": true}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let s = live.settings();
    assert_eq!((s.strength, s.preserve_color), (0.25, true));
    assert_eq!(s.processor, ProcessorKind::NeuralStyle);
    let status = call(
        Method::GET,
        &format!("{streams}/{id}/status"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status.body["data"]["state"], "ONLINE", "{}", status.text);
    assert_eq!(
        status.body["data"]["gateway_status"]["ingest_connected"],
        true
    );
    // Delete: the live stream ends, the key is refused.
    let a = call(Method::DELETE, &format!("{streams}/{id}"), Some(&key), None).await;
    assert_eq!(a.status, 200);
    let mut ended = false;
    for _ in 0..100 {
        if app
            .state
            .control
            .get(&Username::parse("live1").unwrap())
            .await
            .is_none()
        {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ended,
        "deleting the /v1 stream ends the live stream it started"
    );
    let refused = raw_upgrade(
        &app.address,
        &format!("/ws/broadcast/live1?key={stream_key}"),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}

/// A weighted prompt (and seed, t_index_list, filter) PATCHed onto a live
/// diffusion stream comes back as sent in GET and reaches the live stream's
/// style whole: every prompt with its weight, not only the heaviest.
#[actix_web::test]
async fn v1_weighted_prompt_patch_round_trips_and_reaches_the_live_style() {
    use dreamstream_actors::style::{Interpolation, SimilarImageFilter, StyleSource, Weighted};
    let app = spawn_app().await;
    let (_, key) = api_user(&app, "blend1").await;
    let streams = format!("{}/v1/streams", app.address);
    let made = send_json(
        Method::POST,
        &streams,
        &key,
        &json!({"pipeline": "streamdiffusion",
                "params": {"model_id": "stabilityai/sd-turbo", "prompt": "a lighthouse"}}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let id = made.body["id"].as_str().unwrap().to_string();
    let stream_key = made.body["stream_key"].as_str().unwrap().to_string();
    let _broadcaster = connect(&format!("{}/ws/broadcast/blend1?key={stream_key}", app.ws)).await;
    let live = app
        .state
        .control
        .get(&Username::parse("blend1").unwrap())
        .await
        .expect("live");
    assert!(
        matches!(&live.settings().source, StyleSource::Prompt { prompt, blend: None, .. } if prompt == "a lighthouse")
    );
    let patch = json!({"params": {
        "prompt": [["a red fox", 0.25], ["a stone castle", 0.75]],
        "prompt_interpolation_method": "slerp",
        "normalize_prompt_weights": false,
        "seed": [[7, 0.5], [8, 0.5]],
        "num_inference_steps": 40,
        "t_index_list": [10, 10, 30],
        "enable_similar_image_filter": true,
        "similar_image_filter_max_skip_frame": 4
    }});
    let a = send_json(Method::PATCH, &format!("{streams}/{id}"), &key, &patch).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let got = call(Method::GET, &format!("{streams}/{id}"), Some(&key), None).await;
    assert_eq!(got.status, 200, "{}", got.text);
    for (field, sent) in patch["params"].as_object().unwrap() {
        assert_eq!(&got.body["params"][field], sent, "GET params.{field}");
    }
    let s = live.settings();
    assert_eq!(s.processor, ProcessorKind::Diffusion);
    assert_eq!(s.version, 2);
    let StyleSource::Prompt { prompt, blend, .. } = &s.source else {
        panic!("a prompt style: {:?}", s.source);
    };
    assert_eq!(prompt, "a stone castle", "the heaviest names the style");
    assert_eq!(
        blend.as_ref(),
        Some(&Weighted {
            items: vec![("a red fox".into(), 0.25), ("a stone castle".into(), 0.75)],
            interpolation: Interpolation::Slerp,
            normalize: false,
        })
    );
    assert_eq!(
        s.diffusion.seeds,
        Some(Weighted::linear(vec![(7, 0.5), (8, 0.5)]))
    );
    assert_eq!(s.diffusion.steps, 40);
    assert_eq!(s.diffusion.t_index_list, Some(vec![10, 10, 30]));
    assert_eq!(
        s.similar_image_filter,
        Some(SimilarImageFilter {
            enabled: true,
            threshold: 0.98,
            max_skip_frames: 4
        })
    );
    // Back to one prompt: the blend goes.
    let a = send_json(
        Method::PATCH,
        &format!("{streams}/{id}"),
        &key,
        &json!({"params": {"prompt": "a lighthouse", "seed": 3, "t_index_list": null}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let s = live.settings();
    assert!(
        matches!(&s.source, StyleSource::Prompt { prompt, blend: None, .. } if prompt == "a lighthouse"),
        "{:?}",
        s.source
    );
    assert_eq!((s.diffusion.seed, s.diffusion.seeds.as_ref()), (3, None));
    assert_eq!(s.diffusion.t_index_list, None);
}

/// WHIP at the `whip_url` (key in the URL, as Daydream's clients use it):
/// 201 with the playback URL in `livepeer-playback-url`, and the live
/// stream has the `/v1` stream's style.
#[actix_web::test]
async fn v1_whip_url_publishes_with_the_streams_style_and_playback_header() {
    use dreamstream::media::client::{Peer, PeerOptions};
    let app = spawn_app().await;
    let (_, key) = api_user(&app, "whipv1").await;
    let made = send_json(
        Method::POST,
        &format!("{}/v1/streams", app.address),
        &key,
        &json!({"pipeline": "neural-style", "params": {"style": "7", "preserve_color": true}}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let whip = made.body["whip_url"].as_str().unwrap();
    let peer = Peer::publish(whip, PeerOptions::default())
        .await
        .expect("WHIP publish with the whip_url");
    let playback = peer
        .headers
        .iter()
        .find(|(k, _)| k == "livepeer-playback-url")
        .map(|(_, v)| v.clone())
        .expect("a livepeer-playback-url header");
    assert!(playback.ends_with("/whep/whipv1"), "{playback}");
    let live = app
        .state
        .control
        .get(&Username::parse("whipv1").unwrap())
        .await
        .expect("live");
    assert!(live.settings().preserve_color);
    drop(peer);
}

/// `dreamstream admin create-api-key` prints a key that works on `/v1`;
/// `revoke-api-key` makes it refused.
#[actix_web::test]
async fn admin_create_and_revoke_api_key_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(bin("dreamstream"))
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .output()
            .expect("dreamstream admin runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    admin(&["create-user", "cliuser", "--password", "a long password"]);
    let key = admin(&["create-api-key", "cliuser", "--name", "pi"]);
    assert!(key.starts_with("dsa_") && key.len() > 40, "{key}");
    let data_dir = dir.path().to_path_buf();
    let app = spawn_app_with(move |s| s.data_dir = data_dir).await;
    let url = format!("{}/v1/streams", app.address);
    assert_eq!(call(Method::GET, &url, Some(&key), None).await.status, 200);
    let said = admin(&["revoke-api-key", "cliuser", "--name", "pi"]);
    assert!(said.contains("revoked"), "{said}");
    assert_eq!(call(Method::GET, &url, Some(&key), None).await.status, 401);
}

/// The account page makes a key (shown once) and revokes it.
#[actix_web::test]
async fn account_page_makes_and_revokes_api_keys() {
    let app = spawn_app().await;
    let mut user = dreamstream::client::ApiSession::open(&app.address)
        .await
        .unwrap();
    user.register_or_login("pageuser", "a long password")
        .await
        .unwrap();
    let cookie = user.cookie().to_string();
    let page = |path: &'static str| {
        let (cookie, base) = (cookie.clone(), app.address.clone());
        async move {
            let mut r = client()
                .get(format!("{base}{path}"))
                .insert_header(("Cookie", cookie))
                .send()
                .await
                .unwrap();
            let b = r.body().await.unwrap();
            (
                r.status().as_u16(),
                String::from_utf8_lossy(&b).into_owned(),
            )
        }
    };
    let (status, html) = page("/account").await;
    assert_eq!(status, 200);
    assert!(html.contains("You have no API keys yet"), "{html}");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF token in the form")
        .to_string();
    let post = |path: String, form: String| {
        let (cookie, base) = (cookie.clone(), app.address.clone());
        async move {
            let mut r = client()
                .post(format!("{base}{path}"))
                .insert_header(("Cookie", cookie))
                .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
                .send_body(form)
                .await
                .unwrap();
            let b = r.body().await.unwrap();
            (
                r.status().as_u16(),
                String::from_utf8_lossy(&b).into_owned(),
            )
        }
    };
    let (status, html) = post(
        "/account/api-keys".into(),
        format!("csrf={csrf}&name=laptop"),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let key = html
        .split("id=\"new-api-key\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the new key is shown")
        .to_string();
    assert!(key.starts_with("dsa_"), "{key}");
    let url = format!("{}/v1/streams", app.address);
    assert_eq!(call(Method::GET, &url, Some(&key), None).await.status, 200);
    // Shown once: the page lists it by name and prefix only.
    let (_, html) = page("/account").await;
    assert!(html.contains("laptop") && !html.contains(&key), "{html}");
    // Without the CSRF token nothing happens.
    let (status, _) = post("/account/api-keys".into(), "name=stolen".into()).await;
    assert_eq!(status, 403);
    let id = html
        .split("/account/api-keys/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("a revoke form")
        .to_string();
    let (status, _) = post(
        format!("/account/api-keys/{id}/revoke"),
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(call(Method::GET, &url, Some(&key), None).await.status, 401);
    let (_, html) = page("/account").await;
    assert!(html.contains("revoked"), "{html}");
}

/// The reference page lists the operations and schemas of the document.
#[actix_web::test]
async fn v1_reference_page_renders_the_document() {
    let app = spawn_app().await;
    let a = call(Method::GET, &format!("{}/v1/docs", app.address), None, None).await;
    assert_eq!(a.status, 200);
    for needle in [
        "POST /v1/streams",
        "GET /v1/streams/{id}/status",
        "DELETE /v1/streams",
        "id=\"schema-V1Stream\"",
        "id=\"schema-V1Error\"",
        "guidance_scale",
    ] {
        assert!(a.text.contains(needle), "{needle} missing from /v1/docs");
    }
    // Rendered here: nothing is loaded from another site.
    for outside in ["src=\"http", "src=\"//", "href=\"http", "href=\"//"] {
        assert!(!a.text.contains(outside), "{outside} in /v1/docs");
    }
}

/// A script written for Daydream's API (the calls its SDK makes, in Python
/// with the standard library: the SDK is not published on npm) creates,
/// patches, reads the status of and deletes a stream here.
#[actix_web::test]
async fn daydream_script_runs_against_dreamstream() {
    let app = spawn_app().await;
    let (_, key) = api_user(&app, "scripted").await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/v1/daydream_client.py");
    let base = app.address.clone();
    // Off the test's thread: the server answers on it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .env("DAYDREAM_BASE_URL", &base)
            .env("DAYDREAM_API_KEY", &key)
            .output()
    })
    .await
    .expect("joined")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("created, patched, status read, deleted"),
        "{stdout}"
    );
}

/// Daydream's own SDK (PyPI `daydream-sdk`, pinned in .ci/run: its
/// TypeScript twin is not published on npm), which validates every answer
/// against Daydream's models, creates, updates, reads, lists and deletes a
/// stream here (and the status is read with its key).
#[actix_web::test]
async fn daydream_sdk_runs_against_dreamstream() {
    let python = std::env::var("DREAMSTREAM_TEST_DAYDREAM_PYTHON").expect(
        "DREAMSTREAM_TEST_DAYDREAM_PYTHON names a Python with daydream-sdk (.ci/run installs it)",
    );
    let app = spawn_app().await;
    let (_, key) = api_user(&app, "sdkuser").await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/v1/daydream_sdk_client.py");
    let base = app.address.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .env("DAYDREAM_BASE_URL", &base)
            .env("DAYDREAM_API_KEY", &key)
            .output()
    })
    .await
    .expect("joined")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("status read, deleted"), "{stdout}");
}

/// schemathesis (PyPI, pinned in .ci/run) against a live server: bounded
/// property-based examples of every operation find no 5xx and no answer
/// that breaks the document.
#[actix_web::test]
async fn v1_schemathesis_finds_no_server_error_or_schema_break() {
    let st = std::env::var("DREAMSTREAM_TEST_SCHEMATHESIS")
        .expect("DREAMSTREAM_TEST_SCHEMATHESIS names schemathesis's `st` (.ci/run installs it)");
    let app = spawn_app_with(|s| s.api.requests_per_minute = 100_000).await;
    let (_, key) = api_user(&app, "fuzzed").await;
    let args: Vec<String> = [
        "run",
        format!("{}/v1/openapi.json", app.address).as_str(),
        "--url",
        app.address.as_str(),
        "--header",
        format!("Authorization: Bearer {key}").as_str(),
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples",
        "25",
        "--seed",
        "20",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "20",
        "--no-color",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    // schemathesis keeps a cache (.schemathesis/) in its working directory:
    // a temporary one, not the checkout.
    let cwd = tempfile::tempdir().expect("a temporary directory");
    let cwd_path = cwd.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&st)
            .args(&args)
            .current_dir(&cwd_path)
            .output()
    })
    .await
    .expect("joined")
    .expect("schemathesis runs");
    drop(cwd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation was reached, and cases ran (a run that tested
    // nothing passes too).
    assert!(stdout.contains("Tested: 7"), "{stdout}");
    assert!(
        stdout.contains(" generated, ") && !stdout.contains(" failed"),
        "{stdout}"
    );
}
