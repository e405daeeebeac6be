//! OAuth providers: the GitHub and Google presets and generic providers from
//! the configuration, resolved into the endpoints the login flow uses, and the
//! provider side of that flow (authorization code + PKCE S256 + `state`).
//!
//! The flow, as the web tier (`web::oauth`) drives it:
//! 1. [`ProviderConfig::authorize`] makes the provider's authorization URL with
//!    a random `state` and a PKCE challenge; the caller keeps the `state` and
//!    the verifier in the session.
//! 2. The provider redirects back with a `code`; [`ProviderConfig::identify`]
//!    exchanges it (with the PKCE verifier) for an access token and reads the
//!    userinfo endpoint with it, giving an [`Identity`].
//!
//! Every request to a provider goes through one reqwest client that follows
//! no redirects (a token endpoint that redirects could leak the code or the
//! client secret elsewhere), has a timeout, and sends `User-Agent: DreamStream`
//! (GitHub's API refuses requests without one).
//!
//! Invariant: this module knows nothing of sessions, cookies or accounts; it
//! turns a code into a verified identity or a [`FlowError`] that says which
//! step failed.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
    TokenUrl, reqwest,
};
use secrecy::{ExposeSecret, SecretString};

/// How long one request to a provider may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest userinfo document read.
const MAX_USERINFO_BYTES: usize = 256 * 1024;

/// One `[oauth.NAME]` section as configured: a preset (`github`, `google`)
/// needs only the client credentials, a generic provider names every endpoint.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct OAuthProviderSettings {
    #[serde(default)]
    pub client_id: String,
    /// From the environment (`DREAMSTREAM_OAUTH__NAME__CLIENT_SECRET`).
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub auth_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub userinfo_url: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The userinfo field that identifies the account (`sub`, GitHub: `id`).
    #[serde(default)]
    pub subject_field: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// A provider with every endpoint known.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The name in the URL (`/auth/{name}`) and in `oauth_identities.provider`.
    pub name: String,
    pub display_name: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth_url: url::Url,
    pub token_url: url::Url,
    pub userinfo_url: url::Url,
    pub scopes: Vec<String>,
    /// The userinfo field that identifies the account.
    pub subject_field: String,
}

struct Preset {
    display_name: &'static str,
    auth_url: &'static str,
    token_url: &'static str,
    userinfo_url: &'static str,
    scopes: &'static [&'static str],
    subject_field: &'static str,
}

fn preset(name: &str) -> Option<Preset> {
    match name {
        "github" => Some(Preset {
            display_name: "GitHub",
            auth_url: "https://github.com/login/oauth/authorize",
            token_url: "https://github.com/login/oauth/access_token",
            userinfo_url: "https://api.github.com/user",
            scopes: &["read:user"],
            subject_field: "id",
        }),
        "google" => Some(Preset {
            display_name: "Google",
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth",
            token_url: "https://oauth2.googleapis.com/token",
            userinfo_url: "https://openidconnect.googleapis.com/v1/userinfo",
            scopes: &["openid", "email"],
            subject_field: "sub",
        }),
        _ => None,
    }
}

impl ProviderConfig {
    /// Fills in a preset's endpoints; a generic provider must name them all.
    pub fn resolve(name: &str, s: &OAuthProviderSettings) -> anyhow::Result<Self> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!("oauth provider names use a-z, 0-9 and _ (got {name:?})");
        }
        let secret = s
            .client_secret
            .clone()
            .filter(|secret| !secret.expose_secret().is_empty());
        let (false, Some(client_secret)) = (s.client_id.is_empty(), secret) else {
            bail!(
                "oauth.{name} needs client_id and client_secret (env DREAMSTREAM_OAUTH__{}__CLIENT_ID / __CLIENT_SECRET)",
                name.to_uppercase()
            );
        };
        let p = preset(name);
        let pick = |given: &Option<String>, preset: Option<&'static str>, key: &str| {
            given
                .clone()
                .or(preset.map(String::from))
                .with_context(|| {
                    format!("oauth.{name}.{key} is required for a provider without a preset")
                })
                .and_then(|u| {
                    url::Url::parse(&u).with_context(|| format!("oauth.{name}.{key} is not a URL"))
                })
        };
        Ok(Self {
            name: name.to_string(),
            display_name: s
                .display_name
                .clone()
                .or(p.as_ref().map(|p| p.display_name.to_string()))
                .unwrap_or_else(|| name.to_string()),
            client_id: s.client_id.clone(),
            client_secret,
            auth_url: pick(&s.auth_url, p.as_ref().map(|p| p.auth_url), "auth_url")?,
            token_url: pick(&s.token_url, p.as_ref().map(|p| p.token_url), "token_url")?,
            userinfo_url: pick(
                &s.userinfo_url,
                p.as_ref().map(|p| p.userinfo_url),
                "userinfo_url",
            )?,
            scopes: s.scopes.clone().unwrap_or_else(|| {
                p.as_ref()
                    .map(|p| p.scopes.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_else(|| vec!["openid".into()])
            }),
            subject_field: s
                .subject_field
                .clone()
                .or(p.as_ref().map(|p| p.subject_field.to_string()))
                .unwrap_or_else(|| "sub".into()),
        })
    }
}

/// A client with the authorization and token endpoints set.
type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Where to send the browser, and what to keep until it comes back.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The provider's authorization URL with every parameter.
    pub url: url::Url,
    /// The random `state` the callback must bring back.
    pub state: String,
    /// The PKCE verifier the token request must send.
    pub pkce_verifier: String,
}

/// Who the provider says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The value of the provider's `subject_field` (numbers stringified).
    pub subject: String,
    /// The email, unless the provider marks it unverified.
    pub email: Option<String>,
    /// A username to offer on first login (may be empty, never invalid).
    pub suggested_username: String,
}

/// Which step of the flow failed, and why (shown to the user, logged).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the OAuth client is misconfigured: {0}")]
    Config(String),
    #[error("the provider refused the sign-in code: {0}")]
    TokenRefused(String),
    #[error("the provider's token endpoint failed: {0}")]
    Token(String),
    #[error("the provider's userinfo endpoint failed: {0}")]
    Userinfo(String),
}

/// The HTTP client every provider request uses (built once).
fn http_client() -> Result<&'static reqwest::Client, FlowError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent("DreamStream")
        .build()
        .map_err(|e| {
            FlowError::Config(format!("failed to build the HTTP client: {}", chain(&e)))
        })?;
    Ok(CLIENT.get_or_init(|| client))
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// At most `max` characters of a response body, for error messages.
fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

impl ProviderConfig {
    fn client(&self, redirect_uri: &str) -> Result<Client, FlowError> {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| FlowError::Config(format!("bad redirect URI {redirect_uri:?}: {e}")))?;
        let auth = AuthUrl::new(self.auth_url.to_string())
            .map_err(|e| FlowError::Config(format!("bad auth_url: {e}")))?;
        let token = TokenUrl::new(self.token_url.to_string())
            .map_err(|e| FlowError::Config(format!("bad token_url: {e}")))?;
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.client_secret.expose_secret().to_string(),
            ))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(redirect))
    }

    /// The authorization URL (code flow, this provider's scopes, a random
    /// `state`, a PKCE S256 challenge) for a callback at `redirect_uri`.
    pub fn authorize(&self, redirect_uri: &str) -> Result<Authorization, FlowError> {
        let client = self.client(redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Authorization {
            url,
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` (with the PKCE verifier and the same `redirect_uri`
    /// as the authorization request) and reads the userinfo endpoint.
    pub async fn identify(
        &self,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<Identity, FlowError> {
        let token = self.exchange(redirect_uri, code, pkce_verifier).await?;
        let info = self.userinfo(&token).await?;
        self.identity_from(&info)
    }

    /// The access token for `code`.
    async fn exchange(
        &self,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<String, FlowError> {
        let http = http_client()?;
        let result = self
            .client(redirect_uri)?
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(http)
            .await;
        match result {
            Ok(token) => Ok(token.access_token().secret().clone()),
            Err(RequestTokenError::ServerResponse(e)) => {
                Err(FlowError::TokenRefused(e.to_string()))
            }
            Err(RequestTokenError::Request(e)) => Err(FlowError::Token(format!(
                "could not reach {}: {}",
                self.token_url,
                chain(&e)
            ))),
            Err(RequestTokenError::Parse(e, body)) => {
                // GitHub answers a bad code with 200 and an error document.
                if let Ok(err) = serde_json::from_slice::<TokenErrorBody>(&body) {
                    let mut msg = err.error;
                    if let Some(d) = err.error_description {
                        msg = format!("{msg}: {d}");
                    }
                    return Err(FlowError::TokenRefused(msg));
                }
                Err(FlowError::Token(format!(
                    "unexpected response ({e}): {}",
                    snippet(&body, 200)
                )))
            }
            Err(RequestTokenError::Other(e)) => Err(FlowError::Token(e)),
        }
    }

    /// The userinfo document, read with the bearer token.
    async fn userinfo(&self, token: &str) -> Result<serde_json::Value, FlowError> {
        let http = http_client()?;
        let fail = |msg: String| FlowError::Userinfo(msg);
        let resp = http
            .get(self.userinfo_url.clone())
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                fail(format!(
                    "could not reach {}: {}",
                    self.userinfo_url,
                    chain(&e)
                ))
            })?;
        let status = resp.status();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_USERINFO_BYTES as u64)
        {
            return Err(fail(format!(
                "the document is larger than {MAX_USERINFO_BYTES} bytes"
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| fail(format!("reading the response: {}", chain(&e))))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {}", snippet(&body, 200))));
        }
        if body.len() > MAX_USERINFO_BYTES {
            return Err(fail(format!(
                "the document is larger than {MAX_USERINFO_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| fail(format!("not JSON ({e}): {}", snippet(&body, 200))))
    }

    /// The identity in a userinfo document.
    pub fn identity_from(&self, info: &serde_json::Value) -> Result<Identity, FlowError> {
        let subject = subject_of(info, &self.subject_field).ok_or_else(|| {
            FlowError::Userinfo(format!(
                "no usable {:?} field (a non-empty string or a number) in the userinfo document",
                self.subject_field
            ))
        })?;
        let email = info["email"]
            .as_str()
            .filter(|e| e.contains('@') && info["email_verified"] != serde_json::Value::Bool(false))
            .map(str::to_string);
        let suggested_username = ["login", "preferred_username"]
            .iter()
            .filter_map(|k| info[*k].as_str())
            .chain(email.as_deref().and_then(|e| e.split('@').next()))
            .map(suggest_username)
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        Ok(Identity {
            subject,
            email,
            suggested_username,
        })
    }
}

/// An OAuth error document (`{"error": ..., "error_description": ...}`).
#[derive(serde::Deserialize)]
struct TokenErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The subject: a non-empty string, or a number (GitHub's `id`) stringified.
fn subject_of(info: &serde_json::Value, field: &str) -> Option<String> {
    match info.get(field)? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A provider's name for the user made into a valid username (lowercase,
/// `[a-z0-9_]`, at most 24 characters), or "" when nothing valid is left.
pub fn suggest_username(raw: &str) -> String {
    let mut name: String = raw
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    while name.contains("__") {
        name = name.replace("__", "_");
    }
    let name: String = name.trim_matches('_').chars().take(24).collect();
    match dreamstream_actors::Username::parse(&name) {
        Ok(u) => u.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> OAuthProviderSettings {
        OAuthProviderSettings {
            client_id: "id".into(),
            client_secret: Some("secret".to_string().into()),
            ..Default::default()
        }
    }

    #[test]
    fn presets_fill_in_endpoints_and_generic_providers_must_name_them() {
        let gh = ProviderConfig::resolve("github", &creds()).unwrap();
        assert_eq!(
            gh.token_url.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(gh.subject_field, "id");
        let e = ProviderConfig::resolve("corp", &creds()).unwrap_err();
        assert!(
            e.to_string().contains("oauth.corp.auth_url is required"),
            "{e}"
        );
        let e = ProviderConfig::resolve("github", &OAuthProviderSettings::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("DREAMSTREAM_OAUTH__GITHUB__CLIENT_ID"),
            "{e}"
        );
    }

    fn github() -> ProviderConfig {
        ProviderConfig::resolve("github", &creds()).unwrap()
    }

    #[test]
    fn github_numeric_id_is_the_subject_and_login_the_suggestion() {
        let info = serde_json::json!({
            "login": "Octo-Cat",
            "id": 583231,
            "node_id": "MDQ6VXNlcjU4MzIzMQ==",
            "email": null,
            "name": "The Octocat"
        });
        let id = github().identity_from(&info).unwrap();
        assert_eq!(id.subject, "583231");
        assert_eq!(id.email, None);
        assert_eq!(id.suggested_username, "octo_cat");
    }

    #[test]
    fn missing_or_empty_subjects_are_refused() {
        for info in [
            serde_json::json!({ "login": "octocat" }),
            serde_json::json!({ "id": "" }),
            serde_json::json!({ "id": null }),
            serde_json::json!({ "id": { "nested": 1 } }),
            serde_json::json!("not an object"),
        ] {
            let e = github().identity_from(&info).unwrap_err();
            assert!(e.to_string().contains("\"id\""), "{e}");
        }
    }

    #[test]
    fn email_local_part_is_suggested_and_unverified_email_dropped() {
        let google = ProviderConfig::resolve("google", &creds()).unwrap();
        let info = serde_json::json!({ "sub": "1109", "email": "Jane.Doe+tv@example.com", "email_verified": true });
        let id = google.identity_from(&info).unwrap();
        assert_eq!(id.subject, "1109");
        assert_eq!(id.email.as_deref(), Some("Jane.Doe+tv@example.com"));
        assert_eq!(id.suggested_username, "jane_doe_tv");
        let info =
            serde_json::json!({ "sub": "1110", "email": "x@example.com", "email_verified": false });
        let id = google.identity_from(&info).unwrap();
        assert_eq!(id.email, None);
        assert_eq!(
            id.suggested_username, "",
            "an unverified email suggests nothing"
        );
    }

    #[test]
    fn suggestions_are_valid_usernames_or_empty() {
        assert_eq!(suggest_username("Ada Lovelace"), "ada_lovelace");
        assert_eq!(suggest_username("__x__"), "");
        assert_eq!(suggest_username("ö"), "");
        assert_eq!(suggest_username(&"a".repeat(40)), "a".repeat(24));
        assert_eq!(
            suggest_username("admin"),
            "",
            "reserved names are not offered"
        );
    }

    #[test]
    fn authorization_url_carries_pkce_state_and_scopes() {
        let a = github()
            .authorize("http://127.0.0.1:8080/auth/github/callback")
            .unwrap();
        let q: std::collections::HashMap<_, _> = a.url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "id");
        assert_eq!(
            q["redirect_uri"],
            "http://127.0.0.1:8080/auth/github/callback"
        );
        assert_eq!(q["scope"], "read:user");
        assert_eq!(q["state"], a.state);
        assert_eq!(q["code_challenge_method"], "S256");
        use base64::Engine;
        use sha2::Digest;
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(a.pkce_verifier.as_bytes()));
        assert_eq!(q["code_challenge"], expected);
    }
}
