//! Buying credits with Stripe, each test on SQLite and on PostgreSQL.
//!
//! Stripe is played by a local stub of `POST /v1/checkout/sessions` (an
//! actix-web server on port 0) that records the request async-stripe sends and
//! answers with a full Checkout Session object; webhook events are built in
//! Stripe's event shape around full `checkout.session` objects and signed the
//! way Stripe signs them (`t=...,v1=HMAC-SHA256(secret, "{t}.{body}")`, with an
//! HMAC written here, independent of the library under test).

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use dreamstream::db::entities::{credit_ledger, payment, stripe_event};
use dreamstream::payments::StripeSecrets;
use dreamstream::settings::{LocalProcessor, Settings};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const SECRET_KEY: &str = "sk_test_51DreamStreamTestKey";
const WEBHOOK_SECRET: &str = "whsec_test_dreamstream_webhook";
const PUBLIC_URL: &str = "http://dreamstream.test";
/// The API version async-stripe 1.0.0-rc.10 is generated for.
const API_VERSION: &str = "2026-09-30.endive";

// ---------------------------------------------------------------- the app

/// Which Stripe secrets the app gets.
struct Keys<'a> {
    secret_key: Option<&'a str>,
    webhook_secret: Option<&'a str>,
    api_base: Option<&'a str>,
}

const ALL_KEYS: Keys<'static> = Keys {
    secret_key: Some(SECRET_KEY),
    webhook_secret: Some(WEBHOOK_SECRET),
    api_base: None,
};

fn configure(s: &mut Settings, keys: &Keys<'_>) {
    s.worker.processor = LocalProcessor::Passthrough;
    s.public_url = Some(PUBLIC_URL.into());
    s.stripe = StripeSecrets {
        secret_key: keys.secret_key.map(|k| String::from(k).into()),
        webhook_secret: keys.webhook_secret.map(|k| String::from(k).into()),
        api_base: keys.api_base.map(String::from),
    };
}

async fn app_with(db: Db, keys: Keys<'_>) -> TestApp {
    spawn_app_on(db, |s| configure(s, &keys)).await
}

/// A logged-in browser session of a new account.
struct Buyer {
    id: i64,
    cookie: String,
    csrf: String,
}

impl Buyer {
    fn cookie(&self) -> &str {
        &self.cookie
    }

    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Registers `name` over HTTP (the shared cookie-keeping [`Browser`]) and
/// keeps the session.
async fn buyer(app: &TestApp, name: &str) -> Buyer {
    let mut browser = Browser::open(app).await;
    let creds = json!({ "username": name, "password": "a buyer's password" });
    let (code, me) = browser.post("/api/auth/register", creds).await;
    assert_eq!(code, 201, "registering {name}: {me}");
    Buyer {
        id: me["id"].as_i64().expect("an id"),
        cookie: browser.cookie_header(),
        csrf: browser.csrf().to_string(),
    }
}

/// An account without a browser session (webhook tests need only the id).
async fn user(app: &TestApp, name: &str) -> i64 {
    let accounts = &app.state.accounts;
    accounts
        .register(name, "a buyer's password")
        .await
        .expect("register")
        .id
}

async fn balance(app: &TestApp, user_id: i64) -> i64 {
    app.state.accounts.balance(user_id).await.expect("balance")
}

/// An HTTP client that shows redirects instead of following them, patient
/// enough for a machine busy compiling.
fn http() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(std::time::Duration::from_secs(60))
        .finish()
}

/// (status, Location, body) of a response.
async fn read(
    mut resp: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> (u16, Option<String>, String) {
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

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = http().get(format!("{}{path}", app.address));
    if let Some(c) = cookie {
        req = req.insert_header(("Cookie", c.to_string()));
    }
    read(req.send().await.expect("GET")).await
}

async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let req = http()
        .post(format!("{}{path}", app.address))
        .insert_header(("Cookie", cookie.to_string()));
    read(req.send_form(&form).await.expect("POST")).await
}

/// `POST /credits/checkout` for pack `pack` as `s`.
async fn buy(app: &TestApp, s: &Buyer, pack: &str) -> (u16, Option<String>, String) {
    post_form(
        app,
        "/credits/checkout",
        s.cookie(),
        &[("csrf", s.csrf()), ("pack", pack)],
    )
    .await
}

// ---------------------------------------------------------------- database views

async fn payment_row(app: &TestApp, session_id: &str) -> Option<payment::Model> {
    payment::Entity::find()
        .filter(payment::Column::CheckoutSession.eq(session_id))
        .one(app.state.accounts.db())
        .await
        .expect("payments")
}

async fn payment_count(app: &TestApp) -> u64 {
    payment::Entity::find()
        .count(app.state.accounts.db())
        .await
        .expect("payments")
}

async fn event_count(app: &TestApp) -> u64 {
    stripe_event::Entity::find()
        .count(app.state.accounts.db())
        .await
        .expect("stripe events")
}

/// The user's `purchase` rows of the ledger, oldest first.
async fn purchases(app: &TestApp, user_id: i64) -> Vec<credit_ledger::Model> {
    credit_ledger::Entity::find()
        .filter(credit_ledger::Column::UserId.eq(user_id))
        .filter(credit_ledger::Column::Reason.eq("purchase"))
        .order_by_asc(credit_ledger::Column::Id)
        .all(app.state.accounts.db())
        .await
        .expect("ledger")
}

// ---------------------------------------------------------------- Stripe's objects

/// What varies between the Checkout Sessions of these tests.
#[derive(Clone)]
struct SessionSpec {
    id: String,
    /// `client_reference_id` and `metadata.user_id`; `None` = a session made
    /// by something else on the same Stripe account (a payment link).
    user_id: Option<i64>,
    credits: i64,
    pack: usize,
    amount: i64,
    currency: String,
    /// `open` (just created) or `complete`.
    status: &'static str,
    /// `paid` or `unpaid`.
    payment_status: &'static str,
    /// `card`, or `us_bank_account` (a delayed method: unpaid at completion).
    method: &'static str,
    url: Option<String>,
}

impl SessionSpec {
    /// A completed, paid card checkout of `pack` (the default packs: 6, 30, 100).
    fn paid(id: &str, user_id: i64, pack: usize) -> Self {
        let (credits, amount) = [(6, 500), (30, 2000), (100, 5000)][pack];
        Self {
            id: id.into(),
            user_id: Some(user_id),
            credits,
            pack,
            amount,
            currency: "usd".into(),
            status: "complete",
            payment_status: "paid",
            method: "card",
            url: None,
        }
    }

    /// Completed with a bank debit that has not cleared yet.
    fn unpaid(id: &str, user_id: i64, pack: usize) -> Self {
        Self {
            payment_status: "unpaid",
            method: "us_bank_account",
            ..Self::paid(id, user_id, pack)
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The last 20 characters of an id (to make related ids).
fn tail(id: &str) -> &str {
    &id[id.len().saturating_sub(20)..]
}

/// A `checkout.session` object as Stripe returns and sends it.
fn checkout_session(spec: &SessionSpec) -> Value {
    let created = now() - 60;
    let complete = spec.status == "complete";
    let metadata = match spec.user_id {
        Some(uid) => json!({
            "user_id": uid.to_string(),
            "credits": spec.credits.to_string(),
            "pack": spec.pack.to_string(),
        }),
        None => json!({}),
    };
    let customer_details = complete.then(|| {
        json!({
            "address": { "city": null, "country": "US", "line1": null, "line2": null,
                         "postal_code": "94103", "state": null },
            "business_name": null,
            "email": "buyer@example.com",
            "individual_name": null,
            "name": "Jenny Rosen",
            "phone": null,
            "tax_exempt": "none",
            "tax_ids": []
        })
    });
    // Two halves: one json! of 70 fields exceeds the macro recursion limit.
    let mut session = json!({
        "id": spec.id,
        "object": "checkout.session",
        "adaptive_pricing": { "enabled": false },
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": spec.amount,
        "amount_total": spec.amount,
        "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
        "billing_address_collection": null,
        "cancel_url": format!("{PUBLIC_URL}/credits"),
        "client_reference_id": spec.user_id.map(|u| u.to_string()),
        "client_secret": null,
        "collected_information": null,
        "consent": null,
        "consent_collection": null,
        "created": created,
        "currency": spec.currency,
        "currency_conversion": null,
        "custom_fields": [],
        "custom_text": {
            "after_submit": null, "shipping_address": null, "submit": null,
            "terms_of_service_acceptance": null
        },
        "customer": null,
        "customer_creation": "if_required",
        "customer_details": customer_details,
        "customer_email": null,
        "discounts": [],
        "expires_at": created + 86_400,
        "invoice": null,
        "invoice_creation": {
            "enabled": false,
            "invoice_data": {
                "account_tax_ids": null, "custom_fields": null, "description": null,
                "footer": null, "issuer": null, "metadata": {}, "rendering_options": null
            }
        },
        "livemode": false
    });
    let rest = json!({
        "locale": null,
        "metadata": metadata,
        "mode": "payment",
        "origin_context": null,
        "payment_intent": complete.then(|| format!("pi_3{}", tail(&spec.id))),
        "payment_link": null,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": null,
        "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
        "payment_method_types": [spec.method],
        "payment_status": spec.payment_status,
        "permissions": null,
        "phone_number_collection": { "enabled": false },
        "presentment_details": null,
        "recovered_from": null,
        "saved_payment_method_options": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": spec.status,
        "submit_type": null,
        "subscription": null,
        "success_url": format!("{PUBLIC_URL}/credits/success?session_id={{CHECKOUT_SESSION_ID}}"),
        "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        "ui_mode": "hosted",
        "url": spec.url,
        "wallet_options": null
    });
    if let (Some(map), Value::Object(rest)) = (session.as_object_mut(), rest) {
        map.extend(rest);
    }
    session
}

/// A Stripe event (the body of a webhook delivery) around `object`.
fn event(id: &str, kind: &str, object: Value) -> String {
    json!({
        "id": id,
        "object": "event",
        "api_version": API_VERSION,
        "created": now(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind
    })
    .to_string()
}

fn session_event(id: &str, kind: &str, spec: &SessionSpec) -> String {
    event(id, kind, checkout_session(spec))
}

// ---------------------------------------------------------------- signing and delivering

/// HMAC-SHA256 (RFC 2104), written out so the test does not trust the
/// library it checks.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// A `Stripe-Signature` header as Stripe sends it.
fn signature(payload: &str, secret: &str, t: i64) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{t}.{payload}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac))
}

fn signed_now(payload: &str) -> String {
    signature(payload, WEBHOOK_SECRET, now())
}

/// Delivers `payload` to `/webhooks/stripe`: (status, JSON answer).
async fn deliver(app: &TestApp, payload: &str, sig: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(format!("{}/webhooks/stripe", app.address))
        .insert_header(("Content-Type", "application/json; charset=utf-8"))
        .insert_header((
            "User-Agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        ));
    if let Some(sig) = sig {
        req = req.insert_header(("Stripe-Signature", sig.to_string()));
    }
    let mut resp = req
        .send_body(payload.to_string())
        .await
        .expect("webhook delivery");
    let body = resp.body().await.unwrap_or_default();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (resp.status().as_u16(), json)
}

/// Delivers a correctly signed event and expects 200 with `outcome`.
async fn deliver_ok(app: &TestApp, payload: &str, outcome: &str) {
    let (code, body) = deliver(app, payload, Some(&signed_now(payload))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outcome"], outcome, "{body}");
}

// ---------------------------------------------------------------- the Stripe stub

/// One request the stub received.
#[derive(Clone, Debug)]
struct Captured {
    authorization: Option<String>,
    stripe_version: Option<String>,
    content_type: Option<String>,
    form: Vec<(String, String)>,
}

impl Captured {
    fn field(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

struct StubState {
    base: String,
    requests: Arc<Mutex<Vec<Captured>>>,
}

struct StripeStub {
    base: String,
    requests: Arc<Mutex<Vec<Captured>>>,
}

impl StripeStub {
    fn requests(&self) -> Vec<Captured> {
        self.requests.lock().expect("stub log").clone()
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// `POST /v1/checkout/sessions`: records the request; a wrong key gets
/// Stripe's 401, anything else a new open session built from the form.
async fn stub_create_session(
    state: web::Data<StubState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let captured = Captured {
        authorization: header(&req, "authorization"),
        stripe_version: header(&req, "stripe-version"),
        content_type: header(&req, "content-type"),
        form: url::form_urlencoded::parse(&body).into_owned().collect(),
    };
    state
        .requests
        .lock()
        .expect("stub log")
        .push(captured.clone());
    if captured.authorization.as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        return HttpResponse::Unauthorized().json(json!({
            "error": {
                "message": "Invalid API Key provided: sk_test_****rong",
                "type": "invalid_request_error"
            }
        }));
    }
    let field = |k: &str| captured.field(k).unwrap_or_default().to_string();
    let id = format!("cs_test_a1{}", hex::encode(rand::random::<[u8; 24]>()));
    let spec = SessionSpec {
        id: id.clone(),
        user_id: field("client_reference_id").parse().ok(),
        credits: field("metadata[credits]").parse().unwrap_or(0),
        pack: field("metadata[pack]").parse().unwrap_or(0),
        amount: field("line_items[0][price_data][unit_amount]")
            .parse()
            .unwrap_or(0),
        currency: field("line_items[0][price_data][currency]"),
        status: "open",
        payment_status: "unpaid",
        method: "card",
        url: Some(format!("{}/c/pay/{id}", state.base)),
    };
    HttpResponse::Ok().json(checkout_session(&spec))
}

/// Stripe's hosted payment page, as far as these tests go.
async fn stub_pay_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html")
        .body("<title>Stripe Checkout (stub)</title>")
}

async fn start_stub() -> StripeStub {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the stub");
    let base = format!("http://{}", listener.local_addr().expect("stub address"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let state = web::Data::new(StubState {
        base: base.clone(),
        requests: requests.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/v1/checkout/sessions", web::post().to(stub_create_session))
            .route("/c/pay/{id}", web::get().to(stub_pay_page))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("stub listens")
    .run();
    actix_web::rt::spawn(server);
    StripeStub { base, requests }
}

// ---------------------------------------------------------------- tests

on_both_databases!(
    checkout_redirects_to_stripe_and_the_webhook_credits,
    |db| async move {
        let stub = start_stub().await;
        let app = app_with(
            db,
            Keys {
                api_base: Some(&stub.base),
                ..ALL_KEYS
            },
        )
        .await;
        let s = buyer(&app, "buyer_one").await;
        let uid = s.id;
        let start = balance(&app, uid).await;

        // The page lists the packs, each with a Buy button carrying the CSRF token.
        let (code, _, page) = get(&app, "/credits", Some(s.cookie())).await;
        assert_eq!(code, 200, "{page}");
        for needle in [
            "6 credits",
            "5.00 USD",
            "30 credits",
            "20.00 USD",
            "100 credits",
            "1 h of streaming",
        ] {
            assert!(
                page.contains(needle),
                "{needle:?} missing from the credits page"
            );
        }
        assert_eq!(page.matches(r#"action="/credits/checkout""#).count(), 3);
        assert!(page.contains(&format!(r#"name="csrf" value="{}""#, s.csrf())));
        assert!(page.contains(&format!(r#"<span id="balance">{start}</span>"#)));

        // Without the CSRF token, or for a pack that does not exist: refused, Stripe never asked.
        let (code, _, _) = post_form(&app, "/credits/checkout", s.cookie(), &[("pack", "0")]).await;
        assert_eq!(code, 403);
        let (code, _, body) = buy(&app, &s, "7").await;
        assert_eq!(code, 400);
        assert!(body.contains("there is no credit pack number 7"), "{body}");
        assert!(stub.requests().is_empty());
        assert_eq!(payment_count(&app).await, 0);

        // Pack 1: a 303 to the session's payment page on "Stripe".
        let (code, location, body) = buy(&app, &s, "1").await;
        assert_eq!(code, 303, "{body}");
        let location = location.expect("a Location");
        let prefix = format!("{}/c/pay/cs_test_", stub.base);
        assert!(location.starts_with(&prefix), "{location}");
        let session_id = location
            .rsplit('/')
            .next()
            .expect("a session id")
            .to_string();

        // What async-stripe sent.
        let sent = stub.requests();
        assert_eq!(sent.len(), 1);
        let r = &sent[0];
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {SECRET_KEY}").as_str())
        );
        assert_eq!(r.stripe_version.as_deref(), Some(API_VERSION));
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        let uid_s = uid.to_string();
        for (key, want) in [
            ("mode", "payment"),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][unit_amount]", "2000"),
            ("line_items[0][price_data][currency]", "usd"),
            (
                "line_items[0][price_data][product_data][name]",
                "30 DreamStream credits",
            ),
            ("client_reference_id", uid_s.as_str()),
            ("metadata[user_id]", uid_s.as_str()),
            ("metadata[credits]", "30"),
            ("metadata[pack]", "1"),
            (
                "success_url",
                "http://dreamstream.test/credits/success?session_id={CHECKOUT_SESSION_ID}",
            ),
            ("cancel_url", "http://dreamstream.test/credits"),
        ] {
            assert_eq!(r.field(key), Some(want), "{key} in {:?}", r.form);
        }

        // The buyer's browser follows the redirect to the payment page.
        let resp = awc::Client::new()
            .get(&location)
            .send()
            .await
            .expect("payment page");
        assert_eq!(resp.status().as_u16(), 200);

        // A pending payment; no credits yet.
        let row = payment_row(&app, &session_id)
            .await
            .expect("a payments row");
        assert_eq!(
            (
                row.user_id,
                row.credits,
                row.amount_cents,
                row.currency.as_str(),
                row.status.as_str()
            ),
            (uid, 30, 2000, "usd", "pending")
        );
        assert_eq!(balance(&app, uid).await, start);

        // Back from Stripe before the webhook: "processing", and the page refreshes itself.
        let success = format!("/credits/success?session_id={session_id}");
        let (code, _, page) = get(&app, &success, Some(s.cookie())).await;
        assert_eq!(code, 200, "{page}");
        assert!(page.contains("Payment processing"), "{page}");
        // (askama escapes the `&` before `n=1`.)
        let refresh = format!(r#"<meta http-equiv="refresh" content="2;url={success}&#38;n=1">"#);
        assert!(page.contains(&refresh), "{page}");
        // ...but only to its owner, and only when logged in.
        let other = buyer(&app, "someone_else").await;
        let (code, _, page) = get(&app, &success, Some(other.cookie())).await;
        assert_eq!(code, 404);
        assert!(
            page.contains("no payment of yours") && !page.contains("30 credits"),
            "{page}"
        );
        let (code, location, _) = get(&app, &success, None).await;
        assert_eq!(code, 303);
        assert!(
            location
                .unwrap_or_default()
                .starts_with("/login?next=%2Fcredits%2Fsuccess")
        );

        // Stripe reports the payment: credited once, the payment is paid.
        let spec = SessionSpec::paid(&session_id, uid, 1);
        deliver_ok(
            &app,
            &session_event("evt_1Paid", "checkout.session.completed", &spec),
            "credited",
        )
        .await;
        assert_eq!(balance(&app, uid).await, start + 30);
        assert_eq!(payment_row(&app, &session_id).await.unwrap().status, "paid");
        let rows = purchases(&app, uid).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].delta, rows[0].reference.as_str()),
            (30, format!("stripe:{session_id}").as_str())
        );

        // The success page now shows it, without refreshing; /credits lists it first.
        let (code, _, page) = get(&app, &success, Some(s.cookie())).await;
        assert_eq!(code, 200);
        assert!(page.contains("30 credits were added"), "{page}");
        assert!(
            page.contains(&format!(r#"<span id="balance">{}</span>"#, start + 30)),
            "{page}"
        );
        assert!(!page.contains("http-equiv=\"refresh\""), "{page}");
        let (_, _, page) = get(&app, "/credits", Some(s.cookie())).await;
        // In words, newest first; internal references stay internal.
        let purchase = page.find("Bought 30 credits").expect("the purchase row");
        let bonus = page.find("Welcome bonus").expect("the signup bonus row");
        assert!(purchase < bonus, "the ledger is newest first");
        assert!(!page.contains(&format!("stripe:{session_id}")), "{page}");
    }
);

on_both_databases!(
    stripe_failures_are_reported_and_record_nothing,
    |db| async move {
        // Stripe refuses the key: 502 with Stripe's reason.
        let stub = start_stub().await;
        let app = app_with(
            db,
            Keys {
                secret_key: Some("sk_test_wrong"),
                api_base: Some(&stub.base),
                ..ALL_KEYS
            },
        )
        .await;
        let s = buyer(&app, "buyer_two").await;
        let start = balance(&app, s.id).await;
        let (code, location, body) = buy(&app, &s, "0").await;
        assert_eq!(code, 502, "{body}");
        assert!(location.is_none());
        assert!(
            body.contains("Stripe refused to start the checkout")
                && body.contains("Invalid API Key"),
            "{body}"
        );
        assert_eq!(stub.requests().len(), 1, "Stripe was asked once");
        assert_eq!(payment_count(&app).await, 0);
        assert_eq!(balance(&app, s.id).await, start);

        // Stripe unreachable: 503, try again later.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let app = app_with(
            db,
            Keys {
                api_base: Some(&closed),
                ..ALL_KEYS
            },
        )
        .await;
        let s = buyer(&app, "buyer_two").await;
        let (code, _, body) = buy(&app, &s, "0").await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("Stripe cannot be reached right now"),
            "{body}"
        );
        assert_eq!(payment_count(&app).await, 0);
        assert_eq!(balance(&app, s.id).await, start);
    }
);

on_both_databases!(a_paid_session_credits_exactly_once, |db| async move {
    let app = app_with(db, ALL_KEYS).await;
    let uid = user(&app, "buyer_three").await;
    let start = balance(&app, uid).await;
    let spec = SessionSpec::paid("cs_test_a1Once", uid, 0);
    let payload = session_event("evt_1Once", "checkout.session.completed", &spec);

    // The fixtures are real event shapes: the SDK's own types accept them,
    // and our signature is the one the SDK computes.
    let t = now();
    let header = signature(&payload, WEBHOOK_SECRET, t);
    assert_eq!(
        header,
        stripe_webhook::Webhook::generate_test_header(&payload, WEBHOOK_SECRET, Some(t))
    );
    let typed = stripe_webhook::Webhook::construct_event(&payload, &header, WEBHOOK_SECRET)
        .expect("the SDK parses the event");
    match typed.data.object {
        stripe_webhook::EventObject::CheckoutSessionCompleted(s) => {
            assert_eq!(s.id.as_str(), "cs_test_a1Once")
        }
        other => panic!("parsed as {other:?}"),
    }

    // The webhook came before any payments row (checkout elsewhere): credited, row made.
    let (code, body) = deliver(&app, &payload, Some(&header)).await;
    assert_eq!(
        (code, body["outcome"].as_str()),
        (200, Some("credited")),
        "{body}"
    );
    assert_eq!(balance(&app, uid).await, start + 6);
    let row = payment_row(&app, "cs_test_a1Once")
        .await
        .expect("payments row");
    assert_eq!(
        (
            row.user_id,
            row.credits,
            row.amount_cents,
            row.currency.as_str(),
            row.status.as_str()
        ),
        (uid, 6, 500, "usd", "paid")
    );

    // Redelivered 5 times, one after another: nothing more.
    for _ in 0..5 {
        deliver_ok(&app, &payload, "duplicate").await;
    }
    assert_eq!(balance(&app, uid).await, start + 6);
    assert_eq!(purchases(&app, uid).await.len(), 1);
    assert_eq!(event_count(&app).await, 1);

    // Another session, its event delivered 5 times at once: credited once.
    let race = session_event(
        "evt_1Race",
        "checkout.session.completed",
        &SessionSpec::paid("cs_test_a1Race", uid, 0),
    );
    let sig = signed_now(&race);
    let answers =
        futures_util::future::join_all((0..5).map(|_| deliver(&app, &race, Some(&sig)))).await;
    let mut outcomes: Vec<&str> = answers
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            body["outcome"].as_str().expect("an outcome")
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "credited",
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate"
        ]
    );
    assert_eq!(balance(&app, uid).await, start + 12);
    assert_eq!(event_count(&app).await, 2);
    let refs: Vec<String> = purchases(&app, uid)
        .await
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert_eq!(refs, ["stripe:cs_test_a1Once", "stripe:cs_test_a1Race"]);

    // A different event about an already credited session adds nothing.
    let again = session_event(
        "evt_1Again",
        "checkout.session.async_payment_succeeded",
        &spec,
    );
    deliver_ok(&app, &again, "already_credited").await;
    assert_eq!(balance(&app, uid).await, start + 12);
    assert_eq!(purchases(&app, uid).await.len(), 2);
});

on_both_databases!(forged_and_stale_deliveries_are_refused, |db| async move {
    let app = app_with(db, ALL_KEYS).await;
    let uid = user(&app, "buyer_four").await;
    let start = balance(&app, uid).await;
    let payload = session_event(
        "evt_1Forged",
        "checkout.session.completed",
        &SessionSpec::paid("cs_test_a1Forged", uid, 0),
    );
    let t = now();
    let altered = payload.replace(r#""credits":"6""#, r#""credits":"600""#);
    assert_ne!(altered, payload);
    let cases = [
        (
            "no header",
            payload.clone(),
            None,
            "missing Stripe-Signature",
        ),
        (
            "another secret",
            payload.clone(),
            Some(signature(&payload, "whsec_someone_else", t)),
            "does not match",
        ),
        (
            "altered body",
            altered,
            Some(signature(&payload, WEBHOOK_SECRET, t)),
            "does not match",
        ),
        (
            "no v1",
            payload.clone(),
            Some(format!("t={t}")),
            "does not match",
        ),
        (
            "garbage",
            payload.clone(),
            Some("v1=deadbeef,t=yesterday".into()),
            "does not match",
        ),
        (
            "301 s old",
            payload.clone(),
            Some(signature(&payload, WEBHOOK_SECRET, t - 301)),
            "more than 300 s",
        ),
    ];
    for (what, body, sig, needle) in cases {
        let (code, answer) = deliver(&app, &body, sig.as_deref()).await;
        assert_eq!(code, 400, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{what}: {error}");
    }
    // Ahead of the clock, timed when sent (the cases above took seconds on
    // a loaded machine, which brings a fixed "301 s ahead" back into range).
    let ahead = signature(&payload, WEBHOOK_SECRET, now() + 301);
    let (code, answer) = deliver(&app, &payload, Some(&ahead)).await;
    assert_eq!(code, 400, "301 s ahead: {answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("more than 300 s"), "301 s ahead: {error}");
    assert_eq!(balance(&app, uid).await, start);
    assert_eq!(event_count(&app).await, 0);
    assert_eq!(payment_count(&app).await, 0);
    assert!(purchases(&app, uid).await.is_empty());

    // Within the tolerance (and with Stripe's extra test-mode v0 signature): accepted.
    let sig = format!(
        "{},v0={}",
        signature(&payload, WEBHOOK_SECRET, t - 290),
        "ab".repeat(32)
    );
    let (code, answer) = deliver(&app, &payload, Some(&sig)).await;
    assert_eq!(
        (code, answer["outcome"].as_str()),
        (200, Some("credited")),
        "{answer}"
    );
    assert_eq!(balance(&app, uid).await, start + 6);
});

on_both_databases!(
    unknown_unpaid_and_foreign_events_do_not_credit,
    |db| async move {
        let app = app_with(db, ALL_KEYS).await;
        let s = buyer(&app, "buyer_five").await;
        let uid = s.id;
        let start = balance(&app, uid).await;

        // Event types we do not handle: acknowledged (200), nothing recorded.
        let customer = json!({
            "id": "cus_TestCustomer1", "object": "customer", "address": null, "balance": 0,
            "created": now(), "currency": null, "default_source": null, "delinquent": false,
            "description": null, "email": "buyer@example.com", "invoice_prefix": "7D0C4B21",
            "invoice_settings": { "custom_fields": null, "default_payment_method": null,
                                  "footer": null, "rendering_options": null },
            "livemode": false, "metadata": {}, "name": "Jenny Rosen", "phone": null,
            "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": null
        });
        deliver_ok(
            &app,
            &event("evt_1Customer", "customer.created", customer),
            "ignored",
        )
        .await;
        deliver_ok(
            &app,
            &event(
                "evt_1Future",
                "dreamstream.future_event",
                json!({ "id": "x_1", "object": "future" }),
            ),
            "ignored",
        )
        .await;
        // A paid session that is not ours (a payment link: no user, no metadata).
        let mut foreign = SessionSpec::paid("cs_test_a1Foreign", uid, 0);
        foreign.user_id = None;
        deliver_ok(
            &app,
            &session_event("evt_1Foreign", "checkout.session.completed", &foreign),
            "ignored",
        )
        .await;
        // Credits that match no pack (and no payment of ours).
        let mut inflated = SessionSpec::paid("cs_test_a1Inflated", uid, 0);
        inflated.credits = 600;
        deliver_ok(
            &app,
            &session_event("evt_1Inflated", "checkout.session.completed", &inflated),
            "ignored",
        )
        .await;
        assert_eq!(balance(&app, uid).await, start);
        assert_eq!(event_count(&app).await, 0);
        assert_eq!(payment_count(&app).await, 0);

        // Completed with a bank debit that has not cleared: recorded as processing, no credits.
        let unpaid = session_event(
            "evt_1Unpaid",
            "checkout.session.completed",
            &SessionSpec::unpaid("cs_test_a1Bank", uid, 0),
        );
        deliver_ok(&app, &unpaid, "processing").await;
        assert_eq!(balance(&app, uid).await, start);
        assert_eq!(
            payment_row(&app, "cs_test_a1Bank").await.unwrap().status,
            "processing"
        );
        assert_eq!(event_count(&app).await, 1);
        let (_, _, page) = get(
            &app,
            "/credits/success?session_id=cs_test_a1Bank",
            Some(s.cookie()),
        )
        .await;
        assert!(page.contains("Payment processing"), "{page}");

        // The money arrives: credited; a late redelivery of the unpaid event changes nothing.
        let paid = session_event(
            "evt_1Cleared",
            "checkout.session.async_payment_succeeded",
            &SessionSpec::paid("cs_test_a1Bank", uid, 0),
        );
        deliver_ok(&app, &paid, "credited").await;
        deliver_ok(&app, &unpaid, "duplicate").await;
        assert_eq!(balance(&app, uid).await, start + 6);
        assert_eq!(
            payment_row(&app, "cs_test_a1Bank").await.unwrap().status,
            "paid"
        );

        // Out of order (the first delivery of "completed" failed and is retried
        // after the money arrived): the payment stays paid, nothing more is added.
        let late = SessionSpec::unpaid("cs_test_a1Late", uid, 0);
        let cleared = SessionSpec::paid("cs_test_a1Late", uid, 0);
        let kind = "checkout.session.async_payment_succeeded";
        deliver_ok(
            &app,
            &session_event("evt_1LateOk", kind, &cleared),
            "credited",
        )
        .await;
        let kind = "checkout.session.completed";
        deliver_ok(&app, &session_event("evt_1LateDone", kind, &late), "paid").await;
        let row = payment_row(&app, "cs_test_a1Late").await.unwrap();
        assert_eq!(row.status, "paid");
        assert_eq!(balance(&app, uid).await, start + 12);

        // Another bank debit fails: the payment says so, no credits.
        let spec = SessionSpec::unpaid("cs_test_a1Bounced", uid, 2);
        deliver_ok(
            &app,
            &session_event("evt_1Pending", "checkout.session.completed", &spec),
            "processing",
        )
        .await;
        deliver_ok(
            &app,
            &session_event(
                "evt_1Bounced",
                "checkout.session.async_payment_failed",
                &spec,
            ),
            "failed",
        )
        .await;
        assert_eq!(
            payment_row(&app, "cs_test_a1Bounced").await.unwrap().status,
            "failed"
        );
        assert_eq!(balance(&app, uid).await, start + 12);
        assert_eq!(purchases(&app, uid).await.len(), 2);
        let (_, _, page) = get(
            &app,
            "/credits/success?session_id=cs_test_a1Bounced",
            Some(s.cookie()),
        )
        .await;
        assert!(page.contains("Payment failed"), "{page}");
    }
);

on_both_databases!(without_stripe_keys_payments_are_off, |db| async move {
    let app = app_with(
        db,
        Keys {
            secret_key: None,
            webhook_secret: None,
            api_base: None,
        },
    )
    .await;
    let (code, location, _) = get(&app, "/credits", None).await;
    assert_eq!(
        (code, location.as_deref()),
        (303, Some("/login?next=/credits"))
    );

    let s = buyer(&app, "buyer_six").await;
    let uid = s.id;
    let (code, _, page) = get(&app, "/credits", Some(s.cookie())).await;
    assert_eq!(code, 200);
    // Streamers read what they can do; the operator's hint (STRIPE_SECRET_KEY,
    // the admin command) is for the log and the README.
    assert!(page.contains("Buying credits is not available"), "{page}");
    assert!(!page.contains("grant-credits"), "{page}");
    assert!(!page.contains("STRIPE_SECRET_KEY"), "{page}");
    assert!(
        !page.contains(r#"action="/credits/checkout""#),
        "no Buy buttons: {page}"
    );

    let (code, _, body) = buy(&app, &s, "0").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("Buying credits is not available") && !body.contains("grant-credits"),
        "{body}"
    );

    let payload = session_event(
        "evt_1Off",
        "checkout.session.completed",
        &SessionSpec::paid("cs_test_a1Off", uid, 0),
    );
    let (code, answer) = deliver(&app, &payload, Some(&signed_now(&payload))).await;
    assert_eq!(code, 503);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("STRIPE_WEBHOOK_SECRET"),
        "{answer}"
    );
    assert_eq!(payment_count(&app).await, 0);
    assert_eq!(event_count(&app).await, 0);

    // A secret key alone: packs for sale, but the webhook still refuses events.
    let app = app_with(
        db,
        Keys {
            webhook_secret: None,
            ..ALL_KEYS
        },
    )
    .await;
    let s = buyer(&app, "buyer_six").await;
    let (_, _, page) = get(&app, "/credits", Some(s.cookie())).await;
    assert_eq!(
        page.matches(r#"action="/credits/checkout""#).count(),
        3,
        "{page}"
    );
    let (code, _) = deliver(&app, &payload, Some(&signed_now(&payload))).await;
    assert_eq!(code, 503);
    assert_eq!(event_count(&app).await, 0);
});

on_both_databases!(
    without_a_payment_row_the_amount_must_be_the_packs_price,
    |db| async move {
        let app = app_with(db, ALL_KEYS).await;
        let s = buyer(&app, "buyer_cheap").await;
        let uid = s.id;
        let start = balance(&app, uid).await;
        // The webhook comes first (no payment row): pack 0 (6 credits for
        // 500 usd cents) paid with 1 cent, or in another currency.
        let mut cheap = SessionSpec::paid("cs_test_a1Cheap", uid, 0);
        cheap.amount = 1;
        deliver_ok(
            &app,
            &session_event("evt_1Cheap", "checkout.session.completed", &cheap),
            "ignored",
        )
        .await;
        let mut yen = SessionSpec::paid("cs_test_a1Yen", uid, 0);
        yen.currency = "jpy".into();
        deliver_ok(
            &app,
            &session_event("evt_1Yen", "checkout.session.completed", &yen),
            "ignored",
        )
        .await;
        assert_eq!(balance(&app, uid).await, start);
        // The right price is credited.
        let fair = SessionSpec::paid("cs_test_a1Fair", uid, 0);
        deliver_ok(
            &app,
            &session_event("evt_1Fair", "checkout.session.completed", &fair),
            "credited",
        )
        .await;
        assert_eq!(balance(&app, uid).await, start + 6);
    }
);
