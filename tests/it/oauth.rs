//! OAuth login against a local provider stub (`/authorize`, `/token`,
//! `/userinfo` on 127.0.0.1:0), driven like a browser: the `ds_session` cookie
//! is carried by hand, redirects are followed by hand and checked on the way.
//! Each flow runs on SQLite and on PostgreSQL.
//!
//! The stub checks what a real provider would (response type, client id and
//! secret, redirect URI, PKCE S256 verifier against the challenge, bearer
//! token, the JSON Accept and the User-Agent) and records every violation;
//! each test ends by asserting there were none.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use dreamstream::accounts::oauth::OAuthProviderSettings;
use sha2::Digest;

use crate::helpers::*;

const CLIENT_ID: &str = "ds-client";
const CLIENT_SECRET: &str = "stub-secret";

// ---------------------------------------------------------------- the stub

/// A code the stub handed out at `/authorize`.
struct Grant {
    challenge: String,
    redirect_uri: String,
    userinfo: serde_json::Value,
}

#[derive(Default)]
struct StubState {
    /// The userinfo the next approval signs in as.
    next_user: Mutex<serde_json::Value>,
    grants: Mutex<HashMap<String, Grant>>,
    tokens: Mutex<HashMap<String, serde_json::Value>>,
    token_requests: Mutex<u32>,
    problems: Mutex<Vec<String>>,
}

impl StubState {
    fn problem(&self, p: String) -> String {
        self.problems.lock().unwrap().push(p.clone());
        p
    }
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// `GET /authorize`: checks the request and "approves" at once: 302 to the
/// redirect URI with a new code and the given state.
async fn authorize(
    stub: web::Data<StubState>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut bad = Vec::new();
    if get("response_type") != "code" {
        bad.push(format!("response_type {:?}", get("response_type")));
    }
    if get("client_id") != CLIENT_ID {
        bad.push(format!("client_id {:?}", get("client_id")));
    }
    if get("code_challenge_method") != "S256" {
        bad.push(format!(
            "code_challenge_method {:?}",
            get("code_challenge_method")
        ));
    }
    if get("code_challenge").len() < 43 {
        bad.push("no code_challenge".into());
    }
    if get("state").len() < 16 {
        bad.push(format!("weak state {:?}", get("state")));
    }
    let Ok(mut back) = url::Url::parse(&get("redirect_uri")) else {
        bad.push(format!("redirect_uri {:?}", get("redirect_uri")));
        return HttpResponse::BadRequest().body(stub.problem(format!("/authorize: {bad:?}")));
    };
    if !bad.is_empty() {
        return HttpResponse::BadRequest().body(stub.problem(format!("/authorize: {bad:?}")));
    }
    let code = random_hex();
    let userinfo = stub.next_user.lock().unwrap().clone();
    stub.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: get("code_challenge"),
            redirect_uri: get("redirect_uri"),
            userinfo,
        },
    );
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"));
    HttpResponse::Found()
        .insert_header(("Location", back.to_string()))
        .finish()
}

fn token_error(stub: &StubState, error: &str, why: String) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({
        "error": error,
        "error_description": stub.problem(format!("/token: {why}")),
    }))
}

/// `POST /token`: the code for an access token, after checking the client's
/// credentials, the redirect URI and the PKCE verifier.
async fn token(
    stub: web::Data<StubState>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    *stub.token_requests.lock().unwrap() += 1;
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != basic {
        return token_error(
            &stub,
            "invalid_client",
            format!("client authentication {auth:?}"),
        );
    }
    if get("grant_type") != "authorization_code" {
        return token_error(
            &stub,
            "unsupported_grant_type",
            format!("grant_type {:?}", get("grant_type")),
        );
    }
    let Some(grant) = stub.grants.lock().unwrap().remove(&get("code")) else {
        return token_error(
            &stub,
            "invalid_grant",
            format!("unknown or reused code {:?}", get("code")),
        );
    };
    if get("redirect_uri") != grant.redirect_uri {
        return token_error(
            &stub,
            "invalid_grant",
            format!(
                "redirect_uri {:?} != {:?}",
                get("redirect_uri"),
                grant.redirect_uri
            ),
        );
    }
    if s256(&get("code_verifier")) != grant.challenge {
        return token_error(
            &stub,
            "invalid_grant",
            "code_verifier does not match the challenge".into(),
        );
    }
    let access = random_hex();
    stub.tokens
        .lock()
        .unwrap()
        .insert(access.clone(), grant.userinfo);
    HttpResponse::Ok().json(serde_json::json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": 3600,
    }))
}

/// `GET /userinfo`: who the bearer token belongs to.
async fn userinfo(stub: web::Data<StubState>, req: HttpRequest) -> HttpResponse {
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    if header("user-agent") != "DreamStream" {
        let p = stub.problem(format!("/userinfo: User-Agent {:?}", header("user-agent")));
        return HttpResponse::Forbidden().body(p);
    }
    if !header("accept").contains("application/json") {
        let p = stub.problem(format!("/userinfo: Accept {:?}", header("accept")));
        return HttpResponse::NotAcceptable().body(p);
    }
    let auth = header("authorization");
    let info = auth
        .strip_prefix("Bearer ")
        .and_then(|t| stub.tokens.lock().unwrap().get(t).cloned());
    match info {
        Some(info) => HttpResponse::Ok().json(info),
        None => {
            let p = stub.problem(format!("/userinfo: Authorization {auth:?}"));
            HttpResponse::Unauthorized().body(p)
        }
    }
}

struct Stub {
    base: String,
    state: web::Data<StubState>,
    handle: actix_web::dev::ServerHandle,
}

async fn spawn_stub() -> Stub {
    let state = web::Data::new(StubState::default());
    let shared = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/authorize", web::get().to(authorize))
            .route("/token", web::post().to(token))
            .route("/userinfo", web::get().to(userinfo))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind the provider stub");
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Stub {
        base: format!("http://127.0.0.1:{port}"),
        state,
        handle,
    }
}

impl Stub {
    /// Provider settings pointing at the stub.
    fn settings(&self, subject_field: Option<&str>) -> OAuthProviderSettings {
        OAuthProviderSettings {
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.to_string().into()),
            auth_url: Some(format!("{}/authorize", self.base)),
            token_url: Some(format!("{}/token", self.base)),
            userinfo_url: Some(format!("{}/userinfo", self.base)),
            scopes: Some(vec!["openid".into(), "email".into()]),
            subject_field: subject_field.map(String::from),
            display_name: Some("Stub ID".into()),
        }
    }

    /// The user at the provider approves: returns the callback URL the
    /// provider sends the browser to.
    async fn approve(&self, authorize_url: &str, user: serde_json::Value) -> String {
        *self.state.next_user.lock().unwrap() = user;
        let resp = Browser::client()
            .get(authorize_url)
            .send()
            .await
            .expect("GET /authorize");
        assert_eq!(
            resp.status().as_u16(),
            302,
            "the stub refused: {:?}",
            self.problems()
        );
        location(&resp).expect("a Location from /authorize")
    }

    fn problems(&self) -> Vec<String> {
        self.state.problems.lock().unwrap().clone()
    }

    fn token_requests(&self) -> u32 {
        *self.state.token_requests.lock().unwrap()
    }

    async fn stop(self) {
        assert!(
            self.problems().is_empty(),
            "the provider stub saw: {:?}",
            self.problems()
        );
        self.handle.stop(false).await;
    }
}

// ------------------------------------------------------------- the browser

fn location<S>(resp: &awc::ClientResponse<S>) -> Option<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

/// A browser of the app: keeps the `ds_session` cookie, follows nothing.
struct Browser {
    app: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        Self {
            app: app.address.clone(),
            cookie: None,
        }
    }

    fn client() -> awc::Client {
        awc::Client::builder().disable_redirects().finish()
    }

    /// `path` on the app, or a full URL.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.app)
        }
    }

    async fn read(
        &mut self,
        mut resp: awc::ClientResponse<
            impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
        >,
    ) -> Page {
        for v in resp.headers().get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or_default();
            if let Some(value) = pair.strip_prefix("ds_session=") {
                let removed = value.is_empty() || v.to_ascii_lowercase().contains("max-age=0");
                self.cookie = (!removed).then(|| format!("ds_session={value}"));
            }
        }
        let body = resp.body().limit(1 << 20).await.unwrap_or_default();
        Page {
            status: resp.status().as_u16(),
            location: location(&resp),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let url = self.url(path);
        assert!(
            url.starts_with(&self.app),
            "the browser only sends its cookie to the app: {url}"
        );
        let mut req = Self::client().get(&url);
        if let Some(c) = &self.cookie {
            req = req.insert_header(("Cookie", c.clone()));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.read(resp).await
    }

    async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let url = self.url(path);
        let mut req = Self::client().post(&url);
        if let Some(c) = &self.cookie {
            req = req.insert_header(("Cookie", c.clone()));
        }
        let resp = req
            .send_form(&form)
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.read(resp).await
    }

    /// `GET /api/me`: (status, body).
    async fn me(&mut self) -> (u16, serde_json::Value) {
        let page = self.get("/api/me").await;
        (
            page.status,
            serde_json::from_str(&page.body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET /auth/{provider}?next=...`: the provider's authorization URL.
    async fn start(&mut self, provider: &str, next: &str) -> String {
        let page = self.get(&format!("/auth/{provider}?next={next}")).await;
        assert_eq!(page.status, 303, "{}", page.body);
        page.location.expect("a Location to the provider")
    }
}

/// The value of the form field `name` in a page.
fn hidden_field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + needle.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .query_pairs()
        .into_owned()
        .collect()
}

async fn spawn_with_stub(db: Db) -> (TestApp, Stub) {
    let stub = spawn_stub().await;
    let settings = stub.settings(None);
    let github_like = stub.settings(Some("id"));
    let app = spawn_app_on(db, move |s| {
        s.oauth.insert("stubid".into(), settings);
        s.oauth.insert("stubgh".into(), github_like);
        // No public_url: the app listens on port 0, so the redirect URI is
        // made from the request's Host.
        s.public_url = None;
    })
    .await;
    (app, stub)
}

// ------------------------------------------------------------------- tests

on_both_databases!(
    oauth_first_login_chooses_a_username_then_logs_straight_in,
    |db| async move {
        let (app, stub) = spawn_with_stub(db).await;
        let taken = app
            .state
            .accounts
            .register("ada", "a long password")
            .await
            .unwrap();
        let alice = serde_json::json!({ "sub": "alice-1", "email": "Ada@example.com", "email_verified": true });

        // The app sends the browser to the provider with everything the flow needs.
        let mut browser = Browser::new(&app);
        let authorize_url = browser.start("stubid", "/s/somewhere").await;
        assert!(
            authorize_url.starts_with(&format!("{}/authorize?", stub.base)),
            "{authorize_url}"
        );
        let q = query(&authorize_url);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], CLIENT_ID);
        assert_eq!(
            q["redirect_uri"],
            format!("{}/auth/stubid/callback", app.address)
        );
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["scope"], "openid email");
        assert!(q["state"].len() >= 16, "{q:?}");

        // Approved: back at the callback, a new identity is asked for a username.
        let callback = stub.approve(&authorize_url, alice.clone()).await;
        assert!(callback.starts_with(&q["redirect_uri"]), "{callback}");
        let page = browser.get(&callback).await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/auth/choose-username"));
        assert_eq!(
            browser.me().await.0,
            401,
            "not logged in before choosing a name"
        );
        let form = browser.get("/auth/choose-username").await;
        assert_eq!(form.status, 200, "{}", form.body);
        assert!(form.body.contains("Stub ID"), "{}", form.body);
        assert_eq!(
            hidden_field(&form.body, "username"),
            "ada",
            "the email's local part is suggested"
        );
        let csrf = hidden_field(&form.body, "csrf");

        // A taken name, an invalid name and a missing CSRF token are refused...
        let page = browser
            .post_form(
                "/auth/choose-username",
                &[("csrf", &csrf), ("username", "ADA")],
            )
            .await;
        assert_eq!(page.status, 409, "{}", page.body);
        assert!(
            page.body.contains("the username ada is taken"),
            "{}",
            page.body
        );
        assert!(page.body.contains("<form"), "the form is shown again");
        let page = browser
            .post_form(
                "/auth/choose-username",
                &[("csrf", &csrf), ("username", "a!")],
            )
            .await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(
            page.body.contains("usernames are 3 to 24 characters"),
            "{}",
            page.body
        );
        let page = browser
            .post_form("/auth/choose-username", &[("username", "ada_stub")])
            .await;
        assert_eq!(page.status, 403, "{}", page.body);
        assert_eq!(browser.me().await.0, 401);

        // ...a free one makes the account, logged in, and goes to `next`.
        let page = browser
            .post_form(
                "/auth/choose-username",
                &[("csrf", &csrf), ("username", "Ada_Stub")],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/s/somewhere"));
        let (status, me) = browser.me().await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["username"], "ada_stub");
        let id = me["id"].as_i64().expect("an id");
        assert_ne!(id, taken.id);
        let linked = app
            .state
            .accounts
            .by_identity("stubid", "alice-1")
            .await
            .unwrap();
        assert_eq!(linked.map(|u| u.id), Some(id));
        // The sign-up is used up.
        assert_eq!(browser.get("/auth/choose-username").await.status, 400);

        // The same callback again (a replay) is refused: the flow was single-use.
        let mut replay = Browser::new(&app);
        replay.cookie = browser.cookie.clone();
        let page = replay.get(&callback).await;
        assert_eq!(page.status, 403, "{}", page.body);

        // Second login, in a fresh browser: straight in as the same user.
        let mut again = Browser::new(&app);
        let authorize_url = again.start("stubid", "/studio").await;
        let callback = stub.approve(&authorize_url, alice).await;
        let page = again.get(&callback).await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/studio"));
        let (status, me) = again.me().await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["id"].as_i64(), Some(id));
        assert_eq!(me["username"], "ada_stub");
        assert_eq!(stub.token_requests(), 2);
        stub.stop().await;
    }
);

on_both_databases!(
    oauth_numeric_subjects_and_login_suggestions,
    |db| async move {
        // A GitHub-like provider: the subject is the numeric `id`, `login` is offered.
        let (app, stub) = spawn_with_stub(db).await;
        let octo = serde_json::json!({ "id": 583231, "login": "Octo-Cat", "email": null });
        let mut browser = Browser::new(&app);
        let authorize_url = browser.start("stubgh", "/").await;
        let callback = stub.approve(&authorize_url, octo.clone()).await;
        assert_eq!(
            browser.get(&callback).await.location.as_deref(),
            Some("/auth/choose-username")
        );
        let form = browser.get("/auth/choose-username").await;
        assert_eq!(hidden_field(&form.body, "username"), "octo_cat");
        let csrf = hidden_field(&form.body, "csrf");
        let page = browser
            .post_form(
                "/auth/choose-username",
                &[("csrf", &csrf), ("username", "octo_cat")],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/"));
        let user = app
            .state
            .accounts
            .by_identity("stubgh", "583231")
            .await
            .unwrap();
        assert_eq!(
            user.map(|u| u.username.to_string()).as_deref(),
            Some("octo_cat")
        );
        // The same subject at another provider is another identity.
        assert!(
            app.state
                .accounts
                .by_identity("stubid", "583231")
                .await
                .unwrap()
                .is_none()
        );
        stub.stop().await;
    }
);

on_both_databases!(oauth_forged_or_missing_state_is_refused, |db| async move {
    let (app, stub) = spawn_with_stub(db).await;
    let mallory = serde_json::json!({ "sub": "mallory", "email": "m@example.com" });

    // A callback whose state is not the session's: 403, nothing exchanged.
    let mut browser = Browser::new(&app);
    let authorize_url = browser.start("stubid", "/studio").await;
    let callback = stub.approve(&authorize_url, mallory.clone()).await;
    let mut forged = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                "forged-state-0123456789".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let page = browser.get(forged.as_str()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("OAuth state mismatch"), "{}", page.body);
    assert_eq!(browser.me().await.0, 401, "not logged in");
    // The flow is spent: even the genuine callback now fails.
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(browser.me().await.0, 401);

    // A callback without a sign-in started in this browser (a login CSRF:
    // someone else's code and state pushed into our browser): 403.
    let mut victim = Browser::new(&app);
    let _ = victim.get("/api/auth/csrf").await;
    let mut attacker = Browser::new(&app);
    let authorize_url = attacker.start("stubid", "/studio").await;
    let callback = stub.approve(&authorize_url, mallory).await;
    let page = victim.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("OAuth state mismatch"), "{}", page.body);
    assert_eq!(victim.me().await.0, 401);
    // And with no session at all.
    let mut fresh = Browser::new(&app);
    let page = fresh.get("/auth/stubid/callback?code=abc&state=def").await;
    assert_eq!(page.status, 403, "{}", page.body);

    assert_eq!(stub.token_requests(), 0, "no code was exchanged");
    assert!(
        app.state
            .accounts
            .by_identity("stubid", "mallory")
            .await
            .unwrap()
            .is_none()
    );
    stub.stop().await;
});

on_both_databases!(
    oauth_provider_errors_and_unknown_providers,
    |db| async move {
        let (app, stub) = spawn_with_stub(db).await;
        let mut browser = Browser::new(&app);

        // The user said no at the provider.
        let authorize_url = browser.start("stubid", "/studio").await;
        let state = query(&authorize_url)["state"].clone();
        let page = browser
        .get(&format!(
            "/auth/stubid/callback?error=access_denied&error_description=The+user+denied+access&state={state}"
        ))
        .await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.body.contains("access_denied"), "{}", page.body);
        assert!(
            page.body.contains("The user denied access"),
            "{}",
            page.body
        );
        assert!(page.body.contains("Back to log in"), "{}", page.body);
        assert_eq!(browser.me().await.0, 401);

        // A callback without a code.
        let authorize_url = browser.start("stubid", "/studio").await;
        let state = query(&authorize_url)["state"].clone();
        let page = browser
            .get(&format!("/auth/stubid/callback?state={state}"))
            .await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.body.contains("sent no sign-in code"), "{}", page.body);

        // A code the provider does not know: its refusal is shown.
        let authorize_url = browser.start("stubid", "/studio").await;
        let state = query(&authorize_url)["state"].clone();
        let page = browser
            .get(&format!("/auth/stubid/callback?code=bogus&state={state}"))
            .await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.body.contains("invalid_grant"), "{}", page.body);
        assert_eq!(browser.me().await.0, 401);
        stub.state.problems.lock().unwrap().clear(); // that refusal was the point

        // Unknown providers.
        assert_eq!(browser.get("/auth/nope?next=/").await.status, 404);
        assert_eq!(
            browser
                .get("/auth/nope/callback?code=a&state=b")
                .await
                .status,
            404
        );
        // `next` may not leave the site.
        let authorize_url = browser.start("stubid", "https://evil.example/").await;
        let callback = stub
            .approve(&authorize_url, serde_json::json!({ "sub": "s-2" }))
            .await;
        assert_eq!(
            browser.get(&callback).await.location.as_deref(),
            Some("/auth/choose-username")
        );
        let form = browser.get("/auth/choose-username").await;
        assert_eq!(
            hidden_field(&form.body, "username"),
            "",
            "nothing to suggest"
        );
        let csrf = hidden_field(&form.body, "csrf");
        let page = browser
            .post_form(
                "/auth/choose-username",
                &[("csrf", &csrf), ("username", "second")],
            )
            .await;
        assert_eq!(page.location.as_deref(), Some("/studio"));
        stub.stop().await;
    }
);

on_both_databases!(oauth_redirect_uri_uses_public_url, |db| async move {
    let stub = spawn_stub().await;
    let settings = stub.settings(None);
    let app = spawn_app_on(db, move |s| {
        s.oauth.insert("stubid".into(), settings);
        s.public_url = Some("https://streams.example.com/".into());
    })
    .await;
    let mut browser = Browser::new(&app);
    let authorize_url = browser.start("stubid", "/studio").await;
    assert_eq!(
        query(&authorize_url)["redirect_uri"],
        "https://streams.example.com/auth/stubid/callback"
    );
    stub.stop().await;
});
