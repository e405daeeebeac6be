//! Comments, style requests and moderation on a live stream, over the JSON
//! API and the stream's sockets.

use std::time::Duration;

use dreamstream::client::ApiSession;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

fn output_jpeg(frame: bytes::Bytes) -> bytes::Bytes {
    dreamstream_actors::frame::FrameHeader::split(frame)
        .expect("a frame")
        .1
}

/// A live stream of `owner` with its broadcaster socket (frames flowing is
/// not needed for chat) and the owner's logged-in session.
async fn live(app: &TestApp, owner: &str) -> (Conn, ApiSession) {
    let mut b = connect(&app.broadcast_url(owner).await).await;
    next_json(&mut b, "hello", WAIT).await.expect("hello");
    let mut s = ApiSession::open(&app.address).await.unwrap();
    s.register_or_login(owner, "streamer-password")
        .await
        .unwrap();
    (b, s)
}

async fn viewer(app: &TestApp, name: &str) -> ApiSession {
    let mut s = ApiSession::open(&app.address).await.unwrap();
    s.register_or_login(name, "viewer password").await.unwrap();
    s
}

/// A JSON call with any method (DELETE/PUT too).
async fn call(
    s: &ApiSession,
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let req = awc::Client::new()
        .request(method.parse().unwrap(), url)
        .insert_header(("Cookie", s.cookie().to_string()))
        .insert_header(("X-CSRF-Token", s.csrf().to_string()));
    let mut resp = match body {
        Some(b) => req.send_json(&b).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let bytes = resp.body().limit(1 << 20).await.unwrap_or_default();
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[actix_web::test]
async fn comments_reach_viewers_and_the_studio_and_the_streamer_moderates() {
    let app = spawn_app().await;
    let (mut studio, mut owner) = live(&app, "lena").await;
    let mut v = connect(&format!("{}/ws/watch/lena", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();
    let mut max = viewer(&app, "max").await;
    let (code, body) = max
        .post(
            "/api/streams/lena/comments",
            &serde_json::json!({ "text": "  hello <b>there</b>  " }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let seen = next_json(&mut v, "comment", WAIT)
        .await
        .expect("the viewer sees it");
    assert_eq!(seen["user"], "max");
    assert_eq!(
        seen["text"], "hello <b>there</b>",
        "stored as typed, trimmed; pages escape it"
    );
    let in_studio = next_json(&mut studio, "comment", WAIT)
        .await
        .expect("the studio sees it");
    assert_eq!(in_studio["id"], id);
    // Listed for late joiners.
    let mut list = awc::Client::new()
        .get(format!("{}/api/streams/lena/comments", app.address))
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = list.json().await.unwrap();
    assert_eq!(list[0]["id"], id);

    // Too long, empty: 400 with the reason.
    let (code, body) = max
        .post(
            "/api/streams/lena/comments",
            &serde_json::json!({ "text": "x".repeat(301) }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 400);
    assert!(body["error"].as_str().unwrap().contains("300"), "{body}");

    // Another streamer cannot moderate lena's chat.
    let (_other_studio, mallory) = live(&app, "mallory").await;
    let url = |p: &str| format!("{}/api/streams/lena{p}", app.address);
    assert_eq!(
        call(&mallory, "DELETE", &url(&format!("/comments/{id}")), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(
            &mallory,
            "POST",
            &url("/bans"),
            Some(serde_json::json!({ "username": "max" }))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            &mallory,
            "PUT",
            &url("/community"),
            Some(serde_json::json!({ "comments": false }))
        )
        .await
        .0,
        403
    );
    // Nor can a viewer, nor anyone without the CSRF token.
    assert_eq!(
        call(&max, "DELETE", &url(&format!("/comments/{id}")), None)
            .await
            .0,
        403
    );

    // The owner deletes the comment: everyone is told.
    assert_eq!(
        call(&owner, "DELETE", &url(&format!("/comments/{id}")), None)
            .await
            .0,
        204
    );
    assert_eq!(
        next_json(&mut v, "comment_deleted", WAIT).await.unwrap()["id"],
        id
    );

    // Banned: refused, and only in lena's chat.
    assert_eq!(
        call(
            &owner,
            "POST",
            &url("/bans"),
            Some(serde_json::json!({ "username": "max" }))
        )
        .await
        .0,
        200
    );
    let (code, body) = max
        .post(
            "/api/streams/lena/comments",
            &serde_json::json!({ "text": "still here?" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 403);
    assert!(body["error"].as_str().unwrap().contains("banned"), "{body}");
    let (code, _) = max
        .post(
            "/api/streams/mallory/comments",
            &serde_json::json!({ "text": "hi mallory" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 201, "a ban is per chat");
    assert_eq!(call(&owner, "DELETE", &url("/bans/max"), None).await.0, 204);

    // Comments off: refused, and viewers are told.
    let (code, _) = owner
        .post(
            "/api/streams/lena/comments",
            &serde_json::json!({ "text": "owner speaking" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 201);
    assert_eq!(
        call(
            &owner,
            "PUT",
            &url("/community"),
            Some(serde_json::json!({ "comments": false }))
        )
        .await
        .0,
        200
    );
    let switched = next_json(&mut v, "community_settings", WAIT).await.unwrap();
    assert_eq!(switched["comments"], false);
    let (code, body) = max
        .post(
            "/api/streams/lena/comments",
            &serde_json::json!({ "text": "hello?" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 403);
    assert!(
        body["error"].as_str().unwrap().contains("comments off"),
        "{body}"
    );
    // A viewer without an account cannot comment.
    let anon = ApiSession::open(&app.address).await.unwrap();
    assert_eq!(
        call(
            &anon,
            "POST",
            &url("/comments"),
            Some(serde_json::json!({ "text": "hi" }))
        )
        .await
        .0,
        401
    );
    drop(owner.post("/api/auth/logout", &serde_json::json!({})).await);
}

#[actix_web::test]
async fn flooding_mutes_for_ten_seconds() {
    let app = spawn_app().await;
    let (_studio, _owner) = live(&app, "nora").await;
    let mut ola = viewer(&app, "ola").await;
    for i in 0..3 {
        let (code, _) = ola
            .post(
                "/api/streams/nora/comments",
                &serde_json::json!({ "text": format!("msg {i}") }),
            )
            .await
            .unwrap();
        assert_eq!(code.as_u16(), 201);
    }
    let (code, body) = ola
        .post(
            "/api/streams/nora/comments",
            &serde_json::json!({ "text": "one too many" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 429);
    assert!(
        body["error"].as_str().unwrap().contains("muted for 10 s"),
        "{body}"
    );
    // Still muted after the 2-second window has passed.
    actix_web::rt::time::sleep(Duration::from_millis(2200)).await;
    let (code, body) = ola
        .post(
            "/api/streams/nora/comments",
            &serde_json::json!({ "text": "now?" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 429, "{body}");
    // Others are not muted.
    let mut pia = viewer(&app, "pia").await;
    let (code, _) = pia
        .post(
            "/api/streams/nora/comments",
            &serde_json::json!({ "text": "hi" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 201);
}

#[actix_web::test]
async fn style_requests_queue_get_approved_and_change_the_picture_style() {
    let app = spawn_app().await;
    let (mut studio, owner) = live(&app, "quinn").await;
    let mut v = connect(&format!("{}/ws/watch/quinn", app.ws)).await;
    next_json(&mut v, "hello", WAIT).await.unwrap();
    // A frame in the starting style (19, Starry Swirl).
    let photo = photos()[1].clone();
    send_binary(&mut studio, photo.clone()).await;
    let before = output_jpeg(next_binary(&mut v, WAIT).await.expect("a frame"));
    let mut rae = viewer(&app, "rae").await;
    let (code, body) = rae
        .post(
            "/api/streams/quinn/requests",
            &serde_json::json!({ "style": "Sunny Pastel" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let queued = next_json(&mut studio, "request_queued", WAIT)
        .await
        .expect("the studio sees it");
    assert_eq!(
        (queued["id"].as_i64(), queued["by"].as_str()),
        (Some(id), Some("rae"))
    );
    // Without a diffusion worker a prompt is mapped to the closest preset, and says so.
    let (code, body) = rae
        .post(
            "/api/streams/quinn/requests",
            &serde_json::json!({ "prompt": "a starry night sky" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 201, "{body}");
    assert!(body["label"].as_str().unwrap().contains("(as "), "{body}");
    assert!(
        body["label"]
            .as_str()
            .unwrap()
            .contains("no diffusion worker"),
        "{body}"
    );
    let prompt_id = body["id"].as_i64().unwrap();
    // Bad requests: clear errors.
    let (code, body) = rae
        .post(
            "/api/streams/quinn/requests",
            &serde_json::json!({ "style": "99" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 400, "{body}");
    let (code, _) = rae
        .post("/api/streams/quinn/requests", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 400);
    // The queue is visible to all.
    let mut q = awc::Client::new()
        .get(format!("{}/api/streams/quinn/requests", app.address))
        .send()
        .await
        .unwrap();
    let q: serde_json::Value = q.json().await.unwrap();
    assert_eq!(q["queue"].as_array().unwrap().len(), 2);
    // A viewer cannot approve; the owner can.
    let url = format!("{}/api/streams/quinn/requests/{id}/approve", app.address);
    assert_eq!(call(&rae, "POST", &url, None).await.0, 403);
    assert_eq!(call(&owner, "POST", &url, None).await.0, 200);
    let changed = next_json(&mut v, "style_changed", WAIT)
        .await
        .expect("viewers see the new style");
    assert_eq!(changed["style"], "Sunny Pastel");
    assert_eq!(changed["by"], "rae", "style by @rae");
    let decided = next_json(&mut v, "request_decided", WAIT).await.unwrap();
    assert_eq!(decided["status"], "approved");
    // The same photo now comes back in the requested style.
    send_binary(&mut studio, photo.clone()).await;
    let after = output_jpeg(next_binary(&mut v, WAIT).await.expect("a frame"));
    let d = image_distance(&before, &after);
    assert!(d > 10.0, "the picture changed style (distance {d:.1})");
    // Reject the other; it is gone from the queue and marked in the database.
    let url = format!(
        "{}/api/streams/quinn/requests/{prompt_id}/reject",
        app.address
    );
    assert_eq!(call(&owner, "POST", &url, None).await.0, 200);
    assert_eq!(
        call(&owner, "POST", &url, None).await.0,
        404,
        "decided once"
    );
    use sea_orm::EntityTrait;
    let rows = dreamstream::db::entities::style_request::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    let status: Vec<_> = rows.iter().map(|r| (r.id, r.status.as_str())).collect();
    assert!(
        status.contains(&(id, "approved")) && status.contains(&(prompt_id, "rejected")),
        "{status:?}"
    );

    // Requests off: refused.
    let sw = format!("{}/api/streams/quinn/community", app.address);
    assert_eq!(
        call(
            &owner,
            "PUT",
            &sw,
            Some(serde_json::json!({ "requests": false }))
        )
        .await
        .0,
        200
    );
    let (code, body) = rae
        .post(
            "/api/streams/quinn/requests",
            &serde_json::json!({ "style": "3" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 403);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not taking style requests"),
        "{body}"
    );
}

#[actix_web::test]
async fn picture_requests_are_checked_shrunk_and_queued() {
    let app = spawn_app().await;
    let (mut studio, _owner) = live(&app, "sam").await;
    let tess = viewer(&app, "tess").await;
    let post = |body: Vec<u8>, content_type: &'static str| {
        let (cookie, csrf) = (tess.cookie().to_string(), tess.csrf().to_string());
        let url = format!("{}/api/streams/sam/requests/picture", app.address);
        async move {
            let mut resp = awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish()
                .post(url)
                .insert_header(("Cookie", cookie))
                .insert_header(("X-CSRF-Token", csrf))
                .insert_header(("Content-Type", content_type))
                .send_body(body)
                .await
                .unwrap();
            let b = resp.body().await.unwrap_or_default();
            (
                resp.status().as_u16(),
                String::from_utf8_lossy(&b).into_owned(),
            )
        }
    };
    // 30 MB: refused with a clear error.
    let (code, body) = post(vec![0xFF; 30 * 1024 * 1024], "image/jpeg").await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("at most 8 MB"), "{body}");
    // Not an image: refused.
    let (code, body) = post(b"%PDF-1.7 definitely not a picture".to_vec(), "image/png").await;
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("not a usable JPEG or PNG"), "{body}");
    // A real photo: queued, stored shrunk to the network's input.
    let photo = std::fs::read(shared_dir().join("testdata/images/chelsea.png")).unwrap();
    let (code, body) = post(photo, "image/png").await;
    assert_eq!(code, 201, "{body}");
    let queued = next_json(&mut studio, "request_queued", WAIT)
        .await
        .unwrap();
    assert!(queued["label"].as_str().unwrap().contains("picture"));
    use sea_orm::EntityTrait;
    let rows = dreamstream::db::entities::style_request::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    let image = rows[0].image.as_ref().expect("the picture is kept");
    let img = gpu_node::image_io::decode(image).unwrap();
    assert!(
        img.width.max(img.height) <= 256,
        "{}x{}",
        img.width,
        img.height
    );
}

#[actix_web::test]
async fn a_refreshed_tab_counts_once() {
    let app = spawn_app().await;
    let (_studio, _owner) = live(&app, "uma").await;
    let mut first = connect(&format!("{}/ws/watch/uma?cid=tab-1", app.ws)).await;
    assert_eq!(
        next_json(&mut first, "viewer_count", WAIT).await.unwrap()["count"],
        1
    );
    // The same tab reconnects (a refresh) before the old socket is gone.
    let mut again = connect(&format!("{}/ws/watch/uma?cid=tab-1", app.ws)).await;
    assert_eq!(
        next_json(&mut again, "viewer_count", WAIT).await.unwrap()["count"],
        1
    );
    let mut other = connect(&format!("{}/ws/watch/uma?cid=tab-2", app.ws)).await;
    assert_eq!(
        next_json(&mut other, "viewer_count", WAIT).await.unwrap()["count"],
        2
    );
    let stream = app
        .state
        .control
        .get(&dreamstream_actors::Username::parse("uma").unwrap())
        .await
        .unwrap();
    assert_eq!(stream.viewer_count(), 2);
    assert_eq!(stream.snapshot().peak_viewers, 2);
}
