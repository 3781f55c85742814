//! The REST API of ilo-api (`api.md`).

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{status} {code}: {detail}")]
    Refused {
        status: u16,
        code: String,
        detail: String,
    },
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub expires_at: String,
}

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// `base`: `http://host:port`, without a trailing slash.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /key`: a new API key.
    pub async fn new_api_key(&self) -> Result<String, RestError> {
        let reply = self.http.post(format!("{}/key", self.base)).send().await?;
        Ok(detail(checked(reply).await?))
    }

    /// `POST /user`.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        public_key: &str,
        api_key: &str,
    ) -> Result<(), RestError> {
        let body = json!({"username": username, "password": password, "public_key": public_key, "api_key": api_key});
        let reply = self
            .http
            .post(format!("{}/user", self.base))
            .json(&body)
            .send()
            .await?;
        checked(reply).await.map(drop)
    }

    /// `PUT /user`: logs in.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        api_key: &str,
    ) -> Result<Session, RestError> {
        let body = json!({"username": username, "password": password, "api_key": api_key});
        let reply = self
            .http
            .put(format!("{}/user", self.base))
            .json(&body)
            .send()
            .await?;
        let body = checked(reply).await?;
        Ok(Session {
            token: body["token"].as_str().unwrap_or_default().to_owned(),
            expires_at: body["expires_at"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// `GET /user/{username}`: a user's public key.
    pub async fn public_key(&self, username: &str) -> Result<String, RestError> {
        let reply = self
            .http
            .get(format!("{}/user/{username}", self.base))
            .send()
            .await?;
        Ok(detail(checked(reply).await?))
    }

    /// `PUT /user/public_key`: replaces the user's key; every session of theirs ends.
    pub async fn replace_public_key(
        &self,
        token: &str,
        password: &str,
        public_key: &str,
    ) -> Result<(), RestError> {
        let reply = self
            .http
            .put(format!("{}/user/public_key", self.base))
            .bearer_auth(token)
            .json(&json!({"password": password, "public_key": public_key}))
            .send()
            .await?;
        checked(reply).await.map(drop)
    }

    /// `DELETE /session`: logs out.
    pub async fn logout(&self, token: &str) -> Result<(), RestError> {
        let reply = self
            .http
            .delete(format!("{}/session", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        checked(reply).await.map(drop)
    }
}

/// The body of a 2xx reply (`null` when empty), or the `{detail, code}` of any other.
async fn checked(reply: reqwest::Response) -> Result<Value, RestError> {
    let status = reply.status();
    let text = reply.text().await?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
    Err(RestError::Refused {
        status: status.as_u16(),
        code: field("code"),
        detail: field("detail"),
    })
}

fn detail(body: Value) -> String {
    body["detail"].as_str().unwrap_or_default().to_owned()
}
