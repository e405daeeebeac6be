//! Accounts and credits on a real server, each on SQLite and on PostgreSQL:
//! registration, login, logout, CSRF, rate limits, who may broadcast, the
//! credit checks at start, the ledger under concurrency, the admin CLI.

use std::time::Duration;

use dreamstream::accounts::ledger::{Entry, Reason, Reference, Written};
use dreamstream::client::ApiSession;
use dreamstream_actors::store::{Billing, Charge, StreamLog};
use dreamstream_actors::{StreamId, Username};

use crate::helpers::*;

/// The HTTP status a refused WebSocket upgrade got.
async fn refused_with(req: awc::ws::WebsocketsRequest) -> u16 {
    match req.connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => s.as_u16(),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

async fn status_of(resp: awc::ClientResponse<impl futures_util::Stream + Unpin>) -> u16 {
    resp.status().as_u16()
}

/// A form POST with an optional cookie; returns (status, Location, body).
async fn post_form(
    url: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let mut req = awc::Client::builder()
        .disable_redirects()
        .finish()
        .post(url);
    if let Some(c) = cookie {
        req = req.insert_header(("Cookie", c.to_string()));
    }
    let mut resp = req.send_form(&form).await.expect("request");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.body().await.unwrap_or_default();
    (
        resp.status().as_u16(),
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

on_both_databases!(register_login_logout_and_csrf, |db| async move {
    let app = spawn_app_on(db, |_| {}).await;
    let mut s = ApiSession::open(&app.address).await.unwrap();
    let creds = serde_json::json!({ "username": "Carol_1", "password": "a good password" });
    let (code, me) = s.post("/api/auth/register", &creds).await.unwrap();
    assert_eq!(code.as_u16(), 201, "{me}");
    assert_eq!(me["username"], "carol_1", "usernames are case-folded");
    assert_eq!(me["balance"], 3, "the signup bonus");
    // Duplicate (any case) → 409.
    let mut other = ApiSession::open(&app.address).await.unwrap();
    let dup = serde_json::json!({ "username": "CAROL_1", "password": "another password" });
    let (code, body) = other.post("/api/auth/register", &dup).await.unwrap();
    assert_eq!(code.as_u16(), 409, "{body}");
    // Bad names and short passwords → 400 with a reason.
    for (name, pass, needle) in [
        ("ab", "long enough pw", "3 to 24"),
        ("admin", "long enough pw", "reserved"),
        ("bad-name", "long enough pw", "letters a-z"),
        ("dave", "short", "at least 8"),
    ] {
        let (code, body) = other
            .post(
                "/api/auth/register",
                &serde_json::json!({ "username": name, "password": pass }),
            )
            .await
            .unwrap();
        assert_eq!(code.as_u16(), 400, "{name}: {body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    // Wrong password → 401; right one → 200.
    let (code, _) = other
        .post(
            "/api/auth/login",
            &serde_json::json!({ "username": "carol_1", "password": "nope nope" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 401);
    let (code, body) = other
        .post(
            "/api/auth/login",
            &serde_json::json!({ "username": "carol_1", "password": "a good password" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 200, "{body}");
    // The session cookie is HttpOnly and SameSite=Lax.
    let resp = awc::Client::new()
        .get(format!("{}/api/auth/csrf", app.address))
        .send()
        .await
        .unwrap();
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    // Logged in: /api/me answers; logout; then 401.
    assert_eq!(other.get("/api/me").await.unwrap().0.as_u16(), 200);
    let (code, _) = other
        .post("/api/auth/logout", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 204);
    assert_eq!(other.get("/api/me").await.unwrap().0.as_u16(), 401);
    // Logout ends every session of the account (one session version per
    // user), the registration's session too.
    assert_eq!(s.get("/api/me").await.unwrap().0.as_u16(), 401);

    // CSRF: a JSON call without the header → 403, a form without the field → 403.
    let no_header = awc::Client::new()
        .post(format!("{}/api/auth/register", app.address))
        .insert_header(("Cookie", s.cookie().to_string()))
        .send_json(&serde_json::json!({ "username": "eve_1", "password": "long enough pw" }))
        .await
        .unwrap();
    assert_eq!(status_of(no_header).await, 403);
    let (code, _, _) = post_form(
        &format!("{}/register", app.address),
        Some(s.cookie()),
        &[("username", "eve_2"), ("password", "long enough pw")],
    )
    .await;
    assert_eq!(code, 403);
    let (code, _, _) = post_form(
        &format!("{}/login", app.address),
        None,
        &[
            ("username", "carol_1"),
            ("password", "a good password"),
            ("csrf", "forged"),
        ],
    )
    .await;
    assert_eq!(code, 403, "a forged token without a session");
    let (code, _, _) = post_form(&format!("{}/logout", app.address), Some(s.cookie()), &[]).await;
    assert_eq!(code, 403);
    let (code, body) = s
        .post(
            "/api/auth/login",
            &serde_json::json!({ "username": "carol_1", "password": "a good password" }),
        )
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 200, "{body}");
    let (code, _) = s
        .post("/api/me/stream-key", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 200, "with the token it works");

    // The HTML forms: register, then log in with the form, with the token.
    let fresh = ApiSession::open(&app.address).await.unwrap();
    let (code, location, body) = post_form(
        &format!("{}/register", app.address),
        Some(fresh.cookie()),
        &[
            ("username", "frank"),
            ("password", "frank's password"),
            ("csrf", fresh.csrf()),
            ("next", "/studio"),
        ],
    )
    .await;
    assert_eq!(code, 303, "{body}");
    assert_eq!(location.as_deref(), Some("/studio"));
    let (code, _, body) = post_form(
        &format!("{}/login", app.address),
        Some(fresh.cookie()),
        &[
            ("username", "frank"),
            ("password", "wrong password"),
            ("csrf", fresh.csrf()),
        ],
    )
    .await;
    assert_eq!(code, 401);
    assert!(
        body.contains("wrong username or password"),
        "the form says why"
    );
    let (code, location, _) = post_form(
        &format!("{}/login", app.address),
        Some(fresh.cookie()),
        &[
            ("username", "frank"),
            ("password", "frank's password"),
            ("csrf", fresh.csrf()),
            ("next", "https://evil.example/"),
        ],
    )
    .await;
    assert_eq!(code, 303);
    assert_eq!(location.as_deref(), Some("/studio"), "no open redirect");
});

on_both_databases!(who_may_broadcast_and_when, |db| async move {
    let app = spawn_app_on(db, |_| {}).await;
    // No account named gina yet: her channel's page is a 404 page...
    let page = awc::Client::new()
        .get(format!("{}/s/gina", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(page).await, 404);
    // ...and a viewer's socket is told so (not left waiting).
    let mut v = connect(&format!("{}/ws/watch/gina", app.ws)).await;
    assert_eq!(
        next_json(&mut v, "error", Duration::from_secs(5))
            .await
            .expect("an error event")["code"],
        "no_such_channel"
    );

    // Logged out: refused.
    assert_eq!(
        refused_with(awc::Client::new().ws(format!("{}/ws/broadcast/gina", app.ws))).await,
        401
    );

    let key = app.streamer("gina", 2).await;
    let hank_key = app.streamer("hank", 2).await;
    // Someone else's key: refused.
    assert_eq!(
        refused_with(awc::Client::new().ws(format!("{}/ws/broadcast/gina?key={hank_key}", app.ws)))
            .await,
        403
    );
    // A wrong key: refused.
    assert_eq!(
        refused_with(awc::Client::new().ws(format!("{}/ws/broadcast/gina?key=dsk_nope", app.ws)))
            .await,
        401
    );

    // The owner's cookie from another site's page: refused (cross-site WebSocket).
    let mut s = ApiSession::open(&app.address).await.unwrap();
    s.register_or_login("gina", "streamer-password")
        .await
        .unwrap();
    assert_eq!(
        refused_with(
            awc::Client::new()
                .ws(format!("{}/ws/broadcast/gina", app.ws))
                .origin("https://evil.example")
                .header("Cookie", s.cookie().to_string())
        )
        .await,
        403
    );

    // A plain link with the cookie (no WebSocket handshake) starts nothing,
    // and an upgrade with the cookie but without an Origin (not from a page
    // of this site) is refused.
    let link = awc::Client::new()
        .get(format!("{}/ws/broadcast/gina", app.address))
        .insert_header(("Cookie", s.cookie().to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(link).await, 400);
    assert_eq!(
        refused_with(
            awc::Client::new()
                .ws(format!("{}/ws/broadcast/gina", app.ws))
                .header("Cookie", s.cookie().to_string())
        )
        .await,
        403
    );
    let gina_name = Username::parse("gina").unwrap();
    assert!(
        app.state.control.get(&gina_name).await.is_none(),
        "nothing started"
    );

    // The owner with the key goes live, and the start charged the first period.
    let mut b = connect(&format!("{}/ws/broadcast/gina?key={key}", app.ws)).await;
    assert!(
        next_json(&mut b, "hello", Duration::from_secs(5))
            .await
            .is_some()
    );
    let gina = app.state.accounts.get("gina").await.unwrap();
    assert_eq!(app.state.accounts.balance(gina.id).await.unwrap(), 1);
    // A second connection while live: refused with a reason.
    let answer = raw_upgrade(&app.address, &format!("/ws/broadcast/gina?key={key}")).await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("already live"), "{answer}");
    // The same owner with the cookie from this site (the studio) is the same
    // stream: also refused while the first connection is there.
    assert_eq!(
        refused_with(
            awc::Client::new()
                .ws(format!("{}/ws/broadcast/gina", app.ws))
                .origin(app.address.as_str())
                .header("Cookie", s.cookie().to_string())
        )
        .await,
        409
    );

    // 0 credits → refused with a clear message.
    let ivy_key = app.streamer("ivy", 0).await;
    let mut resp = awc::Client::new()
        .post(format!("{}/api/streams/ivy/start", app.address))
        .insert_header(("Authorization", format!("Bearer {ivy_key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 402);
    let body = String::from_utf8_lossy(&resp.body().await.unwrap()).into_owned();
    assert!(
        body.contains("no credits left") && body.contains("10 minutes"),
        "{body}"
    );
    assert_eq!(
        refused_with(awc::Client::new().ws(format!("{}/ws/broadcast/ivy?key={ivy_key}", app.ws)))
            .await,
        402
    );
    assert!(
        app.state
            .control
            .get(&Username::parse("ivy").unwrap())
            .await
            .is_none()
    );
});

on_both_databases!(
    the_ledger_never_goes_below_zero_under_50_concurrent_charges,
    |db| async move {
        let app = spawn_app_on(db, |s| s.local_workers = 0).await;
        app.streamer("judy", 10).await;
        let judy = Username::parse("judy").unwrap();
        let log =
            dreamstream::db::DbStreamLog::new(app.state.accounts.db().clone(), "node-test".into());
        let store = std::sync::Arc::new(dreamstream::accounts::DbBilling::new(
            app.state.accounts.clone(),
        ));
        let settings = app.state.config.default_style.clone();
        let mut streams = Vec::new();
        for _ in 0..50 {
            streams.push(log.stream_started(&judy, &settings).await.unwrap());
        }
        // Fifty streams paying at once for a period of no time (so that every
        // call must charge): the ledger alone decides, and never goes below zero.
        let mut tasks = Vec::new();
        for stream in streams.iter().copied() {
            let store = store.clone();
            let judy = judy.clone();
            tasks.push(tokio::spawn(async move {
                store.pay_for_now(stream, &judy, Duration::ZERO).await
            }));
        }
        let mut charged = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap().expect("no storage error") {
                Charge::Charged(credit) => {
                    assert!(credit.balance >= 0);
                    charged += 1;
                }
                Charge::Insufficient { .. } => refused += 1,
                Charge::AlreadyPaid(_) => panic!("a period of no time is never already paid"),
            }
        }
        assert_eq!((charged, refused), (10, 40));
        let user = app.state.accounts.get("judy").await.unwrap();
        assert_eq!(app.state.accounts.balance(user.id).await.unwrap(), 0);
        // With a real period, racing payments take one credit between them,
        // and a retry finds the period paid.
        app.state.accounts.grant(user.id, 3).await.unwrap();
        let period = Duration::from_secs(600);
        let mut tasks = Vec::new();
        for stream in streams.iter().copied().take(20) {
            let store = store.clone();
            let judy = judy.clone();
            tasks.push(tokio::spawn(async move {
                store.pay_for_now(stream, &judy, period).await
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap().expect("no storage error"));
        }
        let charges = outcomes
            .iter()
            .filter(|c| matches!(c, Charge::Charged(_)))
            .count();
        assert_eq!(charges, 1, "{outcomes:?}");
        for c in &outcomes {
            let (Charge::Charged(credit) | Charge::AlreadyPaid(credit)) = c else {
                panic!("{c:?}");
            };
            assert_eq!(credit.balance, 2);
            assert!(credit.paid_left > Duration::from_secs(590), "{credit:?}");
        }
        assert_eq!(app.state.accounts.balance(user.id).await.unwrap(), 2);
        // The stream rows count what they burned.
        use sea_orm::EntityTrait;
        let rows = dreamstream::db::entities::stream::Entity::find()
            .all(&app.state.db)
            .await
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.credits_charged).sum::<i64>(), 11);
        assert!(rows.iter().all(|r| r.user_id == Some(user.id)));
        // A reference is written once even when raced.
        let ledger = app.state.accounts.ledger.clone();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let ledger = ledger.clone();
            let id = user.id;
            tasks.push(tokio::spawn(async move {
                ledger
                    .write(Entry {
                        user_id: id,
                        delta: 5,
                        reason: Reason::Purchase,
                        reference: Reference::Stripe("cs_race".into()),
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut appended = 0;
        for t in tasks {
            if let Written::Appended(_) = t.await.unwrap() {
                appended += 1;
            }
        }
        assert_eq!(appended, 1);
        assert_eq!(app.state.accounts.balance(user.id).await.unwrap(), 2 + 5);
        let _ = StreamId(0);
    }
);

#[actix_web::test]
async fn login_attempts_are_rate_limited_in_memory() {
    login_is_rate_limited(false).await
}

#[actix_web::test]
async fn login_attempts_are_rate_limited_in_redis() {
    login_is_rate_limited(true).await
}

async fn login_is_rate_limited(redis: bool) {
    let app = spawn_app_with(|s| {
        s.accounts.login_attempts_per_account = 3;
        s.accounts.login_attempts_per_ip = 100;
        if redis {
            use_redis(s);
        }
    })
    .await;
    // A name of its own: Redis is shared between test runs.
    let name = format!("rl_{}", rand::random::<u32>());
    app.streamer(&name, 0).await;
    let mut s = ApiSession::open(&app.address).await.unwrap();
    let wrong = serde_json::json!({ "username": name, "password": "wrong password" });
    for _ in 0..3 {
        let (code, _) = s.post("/api/auth/login", &wrong).await.unwrap();
        assert_eq!(code.as_u16(), 401);
    }
    let (code, body) = s.post("/api/auth/login", &wrong).await.unwrap();
    assert_eq!(code.as_u16(), 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many attempts")
    );
    // Even the right password waits for the window.
    let right = serde_json::json!({ "username": name, "password": "streamer-password" });
    let (code, _) = s.post("/api/auth/login", &right).await.unwrap();
    assert_eq!(code.as_u16(), 429);
}

#[actix_web::test]
async fn sessions_live_in_redis_when_configured() {
    let mut prefix = String::new();
    let app = spawn_app_with(|s| prefix = use_redis(s)).await;
    let name = format!("rs_{}", rand::random::<u32>());
    let mut s = ApiSession::open(&app.address).await.unwrap();
    s.register_or_login(&name, "redis password").await.unwrap();
    // The cookie holds only a key; the state is in Redis under {prefix}session:.
    let cookie_value = s.cookie().trim_start_matches("ds_session=").to_string();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}session:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(cookie_value.len() < 200, "only a key in the cookie");
    assert_eq!(s.get("/api/me").await.unwrap().0.as_u16(), 200);
    let (code, _) = s
        .post("/api/auth/logout", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(code.as_u16(), 204);
    assert_eq!(
        s.get("/api/me").await.unwrap().0.as_u16(),
        401,
        "logout deleted the session in Redis"
    );
}

/// `dreamstream admin ...` against the SQLite file of a data directory, and
/// against PostgreSQL with DATABASE_URL.
#[actix_web::test]
async fn the_admin_cli_manages_accounts_on_both_databases() {
    let pg = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    for database_url in [None, Some(pg.url.clone())] {
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dreamstream"));
            cmd.arg("admin")
                .args(args)
                .arg("--data-dir")
                .arg(dir.path());
            cmd.env_remove("DATABASE_URL");
            if let Some(url) = &database_url {
                cmd.env("DATABASE_URL", url);
            }
            let out = cmd.output().expect("run dreamstream admin");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )
        };
        let (ok, id, err) = run(&["create-user", "kim", "--password", "kim's password"]);
        assert!(ok, "{err}");
        let id: i64 = id.parse().expect("prints the id");
        let (ok, _, err) = run(&["create-user", "kim", "--password", "kim's password"]);
        assert!(!ok && err.contains("taken"), "{err}");
        assert!(run(&["make-admin", "kim"]).0);
        let (ok, out, err) = run(&["grant-credits", "kim", "7"]);
        assert!(ok && out.contains("balance 10"), "{out} {err}");
        let (ok, out, err) = run(&["grant-credits", "kim", "-11"]);
        assert!(!ok && err.contains("negative"), "{out} {err}");
        let (ok, json, err) = run(&["show-user", "kim", "--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "id": id, "username": "kim", "balance": 10, "is_admin": true })
        );
        let (ok, _, err) = run(&["show-user", "nobody"]);
        assert!(!ok && err.contains("no user named nobody"), "{err}");
    }
}
