//! A small HTTP client of the control node's account API, for tools that
//! broadcast without a browser (`bench live`, tests): registers or logs in a
//! streamer and makes a stream key.

use anyhow::{Context, bail};
use awc::http::StatusCode;

/// A logged-in client session (the session cookie and its CSRF token).
pub struct ApiSession {
    base: String,
    client: awc::Client,
    cookie: String,
    csrf: String,
}

/// `ds_session=...` from the response's `Set-Cookie` headers.
fn session_cookie<S>(resp: &awc::ClientResponse<S>) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("ds_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .next_back()
}

impl ApiSession {
    /// A new anonymous session at `base` (`http://host:port`).
    pub async fn open(base: &str) -> anyhow::Result<Self> {
        // Generous: registering hashes a password (slow on purpose), and a
        // loaded machine can take seconds.
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .finish();
        let mut resp = client
            .get(format!("{base}/api/auth/csrf"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET /api/auth/csrf: {e}"))?;
        let cookie = session_cookie(&resp).context("no session cookie from /api/auth/csrf")?;
        let body: serde_json::Value = resp.json().await.context("csrf JSON")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            client,
            cookie,
            csrf: body["csrf"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// POSTs JSON with the cookie and CSRF header; keeps a renewed cookie.
    pub async fn post(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let mut resp = self
            .client
            .post(format!("{}{path}", self.base))
            .insert_header(("Cookie", self.cookie.clone()))
            .insert_header(("X-CSRF-Token", self.csrf.clone()))
            .send_json(body)
            .await
            .map_err(|e| anyhow::anyhow!("POST {path}: {e}"))?;
        if let Some(c) = session_cookie(&resp) {
            self.cookie = c;
        }
        let status = resp.status();
        let bytes = resp.body().await.unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if let Some(t) = json["csrf"].as_str() {
            self.csrf = t.to_string();
        }
        Ok((status, json))
    }

    /// GETs `path` with the session cookie; the status and the JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let mut resp = self
            .client
            .get(format!("{}{path}", self.base))
            .insert_header(("Cookie", self.cookie.clone()))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
        let bytes = resp.body().await.unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((resp.status(), json))
    }

    /// Registers `username`, or logs in when the name is taken.
    pub async fn register_or_login(
        &mut self,
        username: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let creds = serde_json::json!({ "username": username, "password": password });
        let (status, body) = self.post("/api/auth/register", &creds).await?;
        if status == StatusCode::CONFLICT {
            let (status, body) = self.post("/api/auth/login", &creds).await?;
            if !status.is_success() {
                bail!("login as {username} failed ({status}): {}", body["error"]);
            }
        } else if !status.is_success() {
            bail!(
                "registering {username} failed ({status}): {}",
                body["error"]
            );
        }
        Ok(())
    }

    /// A new stream key for the logged-in user.
    pub async fn stream_key(&mut self) -> anyhow::Result<String> {
        let (status, body) = self
            .post("/api/me/stream-key", &serde_json::json!({}))
            .await?;
        match body["key"].as_str() {
            Some(k) if status.is_success() => Ok(k.to_string()),
            _ => bail!("making a stream key failed ({status}): {}", body["error"]),
        }
    }

    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Registers (or logs in) `username` at `base` and returns a stream key.
pub async fn streamer_key(base: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let mut s = ApiSession::open(base).await?;
    s.register_or_login(username, password).await?;
    s.stream_key().await
}
