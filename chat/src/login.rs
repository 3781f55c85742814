//! Getting a session: the password (prompted without echo, or `ILO_PASSWORD`), an API key,
//! registration when asked, then `PUT /user`.

use anyhow::Context;
use base64::Engine as _;
use ilo_client::rest::{Api, Session};

use crate::Args;

/// `ILO_PASSWORD`, else a prompt on the terminal; scripts must set the variable.
pub fn password(interactive: bool) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("ILO_PASSWORD") {
        return Ok(password);
    }
    anyhow::ensure!(
        interactive,
        "set ILO_PASSWORD: stdin is not a terminal, so ilo-chat cannot ask for the password"
    );
    rpassword::prompt_password("Password: ").context("cannot read the password")
}

pub async fn session(args: &Args, password: &str) -> anyhow::Result<Session> {
    let api = Api::new(args.server.trim_end_matches('/'));
    let api_key = match &args.api_key {
        Some(key) => key.clone(),
        None => {
            let key = api
                .new_api_key()
                .await
                .context("cannot obtain an API key")?;
            eprintln!(
                "ilo-chat: obtained an API key from {} (pass --api-key to reuse one)",
                args.server
            );
            key
        }
    };
    if args.register {
        let public_key = match &args.public_key {
            Some(key) => key.clone(),
            None => random_public_key()?,
        };
        api.register(&args.user, password, &public_key, &api_key)
            .await
            .with_context(|| format!("cannot create {}", args.user))?;
        eprintln!("ilo-chat: created {}", args.user);
    }
    api.login(&args.user, password, &api_key)
        .await
        .with_context(|| format!("cannot log in as {}", args.user))
}

fn random_public_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
