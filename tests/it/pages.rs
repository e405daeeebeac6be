//! Pages, health, metrics and the JSON API over plain HTTP.

use crate::helpers::*;

async fn get(url: &str) -> (u16, String) {
    let mut resp = awc::Client::builder()
        .disable_redirects()
        .finish()
        .get(url)
        .send()
        .await
        .expect("request");
    let body = resp.body().limit(10 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_web::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(get(&format!("{}/healthz", app.address)).await.0, 200);
    let (code, body) = get(&format!("{}/readyz", app.address)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""workers":1"#));
}

#[actix_web::test]
async fn pages_render() {
    let app = spawn_app().await;
    let (code, home) = get(&format!("{}/", app.address)).await;
    assert_eq!(code, 200);
    assert!(home.contains("Live now") && home.contains("Nobody is live"));
    let (code, _) = get(&format!("{}/studio", app.address)).await;
    assert_eq!(code, 303, "the studio needs a login");
    let mut s = dreamstream::client::ApiSession::open(&app.address)
        .await
        .unwrap();
    s.register_or_login("pagetester", "page-password")
        .await
        .unwrap();
    let mut resp = awc::Client::new()
        .get(format!("{}/studio", app.address))
        .insert_header(("Cookie", s.cookie().to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let studio = String::from_utf8_lossy(&resp.body().await.unwrap()).into_owned();
    assert!(studio.contains("Starry Swirl"), "the 26 names are offered");
    assert!(
        studio.contains("/s/pagetester") && studio.contains("credits"),
        "{studio}"
    );
    let (code, watch) = get(&format!("{}/s/pagetester", app.address)).await;
    assert_eq!(code, 200);
    assert!(watch.contains("pagetester is offline"));
    // A channel nobody streams on is a 404 page, not an offline channel.
    let (code, watch) = get(&format!("{}/s/alice", app.address)).await;
    assert_eq!(code, 404);
    assert!(watch.contains("No such channel") && !watch.contains("is offline"));
    assert_eq!(get(&format!("{}/s/not-a-name!", app.address)).await.0, 404);
    assert_eq!(get(&format!("{}/static/app.css", app.address)).await.0, 200);
    assert_eq!(get(&format!("{}/static/nope.js", app.address)).await.0, 404);
}

#[actix_web::test]
async fn the_api_starts_lists_restyles_and_stops_streams() {
    let app = spawn_app().await;
    let key = app.streamer("bob", 5).await;
    let c = awc::Client::builder()
        .add_default_header(("Authorization", format!("Bearer {key}")))
        .finish();
    let anonymous = awc::Client::new()
        .post(format!("{}/api/streams/bob/start", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401, "starting needs the owner");
    let resp = c
        .post(format!("{}/api/streams/bob/start", app.address))
        .send_json(&serde_json::json!({ "style": "3:0.5,12:0.5" }))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let again = c
        .post(format!("{}/api/streams/bob/start", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409, "one live stream per user");
    let (code, list) = get(&format!("{}/api/streams", app.address)).await;
    assert_eq!(code, 200);
    assert!(
        list.contains(r#""username":"bob""#) && list.contains("Electric + Lavender"),
        "{list}"
    );
    let bad = c
        .put(format!("{}/api/streams/bob/style", app.address))
        .send_json(&serde_json::json!({ "strength": -1 }))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let stop = c
        .post(format!("{}/api/streams/bob/stop", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status().as_u16(), 202);
    // Ends shortly; the row in the database says why.
    for _ in 0..50 {
        if get(&format!("{}/api/streams/bob", app.address)).await.0 == 404 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&format!("{}/api/streams/bob", app.address)).await.0,
        404
    );
    use sea_orm::EntityTrait;
    let rows = dreamstream::db::entities::stream::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_reason.as_deref(), Some("stopped"));
    assert!(rows[0].ended_at.is_some());
}

const TOKEN: &str = "a-metrics-token-for-tests";

async fn get_with(url: &str, header: Option<(&str, String)>) -> u16 {
    let mut req = awc::Client::new().get(url);
    if let Some(h) = header {
        req = req.insert_header(h);
    }
    req.send().await.expect("request").status().as_u16()
}

/// `/metrics`, `/api/cluster`, `/api/server`, `/api/scheduler`: refused to
/// anonymous clients, to logged-in non-admins and to a wrong token; open to
/// admins, to the metrics token and to an address in `[ops] allow`.
#[actix_web::test]
async fn operational_data_is_for_admins_the_token_or_the_allow_list() {
    const OPS: [&str; 4] = ["/metrics", "/api/cluster", "/api/server", "/api/scheduler"];
    let app = spawn_app_with(|s| s.metrics_token = Some(TOKEN.into())).await;
    let mut user = dreamstream::client::ApiSession::open(&app.address)
        .await
        .unwrap();
    user.register_or_login("opsuser", "ops-password-1")
        .await
        .unwrap();
    let mut admin = dreamstream::client::ApiSession::open(&app.address)
        .await
        .unwrap();
    admin
        .register_or_login("opsadmin", "ops-password-1")
        .await
        .unwrap();
    app.state
        .accounts
        .set_admin("opsadmin", true)
        .await
        .expect("make admin");
    let bearer = |t: &str| Some(("Authorization", format!("Bearer {t}")));
    for path in OPS {
        let url = format!("{}{path}", app.address);
        assert_eq!(get_with(&url, None).await, 401, "{path} anonymously");
        assert_eq!(
            get_with(&url, bearer("wrong-token-123456")).await,
            401,
            "{path}: wrong token"
        );
        assert_eq!(
            get_with(&url, Some(("Cookie", user.cookie().to_string()))).await,
            403,
            "{path} as a user"
        );
        assert_eq!(
            get_with(&url, Some(("Cookie", admin.cookie().to_string()))).await,
            200,
            "{path} as an admin"
        );
        assert_eq!(
            get_with(&url, bearer(TOKEN)).await,
            200,
            "{path} with the token"
        );
    }
    // Health stays public; so does the public stream list.
    assert_eq!(
        get_with(&format!("{}/healthz", app.address), None).await,
        200
    );
    assert_eq!(
        get_with(&format!("{}/api/streams", app.address), None).await,
        200
    );

    // An allow-listed address needs nothing (the tests come from 127.0.0.1).
    let open = spawn_app_with(|s| s.ops.allow = vec!["127.0.0.0/8".into()]).await;
    for path in OPS {
        assert_eq!(
            get_with(&format!("{}{path}", open.address), None).await,
            200,
            "{path}"
        );
    }
}

#[actix_web::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app_with(|s| s.metrics_token = Some(TOKEN.into())).await;
    let mut b = connect(&app.broadcast_url("metered").await).await;
    next_json(&mut b, "hello", std::time::Duration::from_secs(10))
        .await
        .unwrap();
    send_binary(&mut b, photos().remove(0)).await;
    let mut found = false;
    for _ in 0..100 {
        let mut resp = awc::Client::new()
            .get(format!("{}/metrics", app.address))
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .send()
            .await
            .expect("metrics");
        let text =
            String::from_utf8_lossy(&resp.body().limit(10 << 20).await.unwrap()).into_owned();
        if text.contains("dreamstream_frames_out_total")
            && text.contains("dreamstream_job_seconds_bucket")
        {
            found = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        found,
        "frame counters and job-time histogram buckets are exported"
    );
}
