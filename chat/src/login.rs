//! Getting a session: the password (prompted without echo, or `ILO_PASSWORD`), an API key,
//! the user's keys (created with the account by `--register`, replaced by `--new-key`), then
//! `PUT /user`.

use std::path::PathBuf;

use anyhow::Context;
use ilo_client::rest::{Api, RestError, Session};
use ilo_e2e::{Bundle, Keys};

use crate::{Args, keyfile};

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

/// A logged-in session, and the user's keys unless `--plaintext` asked for none.
pub struct LoggedIn {
    pub session: Session,
    pub keys: Option<Keys>,
    pub key_file: PathBuf,
    pub api: Api,
}

/// Registers (when asked) and logs in. On a terminal, a password the server finds too weak
/// is asked for again rather than ending the program.
pub async fn session(
    args: &Args,
    password: &mut String,
    interactive: bool,
) -> anyhow::Result<LoggedIn> {
    let api = Api::new(args.server.trim_end_matches('/'));
    let api_key = api_key(args, &api).await?;
    let key_file = match &args.key_file {
        Some(path) => path.clone(),
        None => keyfile::default_path(&args.server, &args.user)?,
    };
    if args.register {
        loop {
            match register(args, &api, password, &api_key, &key_file).await {
                Err(Registration::WeakPassword(detail)) if interactive => {
                    eprintln!("ilo-chat: {detail}");
                    *password = rpassword::prompt_password("Another password: ")
                        .context("cannot read the password")?;
                }
                Err(Registration::WeakPassword(detail)) => {
                    anyhow::bail!("cannot create {}: {detail}", args.user)
                }
                Err(Registration::Failed(e)) => return Err(e),
                Ok(()) => break,
            }
        }
    }
    let password: &str = password;
    let login = || async {
        api.login(&args.user, password, &api_key)
            .await
            .with_context(|| format!("cannot log in as {}", args.user))
    };
    let mut session = login().await?;
    if args.new_key {
        let keys = Keys::generate();
        api.replace_public_key(&session.token, password, &keys.bundle().encode())
            .await
            .context("cannot replace your key")?;
        keyfile::save(&key_file, &args.user, &keys, true)?;
        eprintln!(
            "ilo-chat: new keys in {}; others will see that your key changed, and messages \
             sent to your old key stay unreadable here",
            key_file.display()
        );
        // Replacing the key ended every session of the user, this one included.
        session = login().await?;
    }
    let keys = if args.plaintext {
        None
    } else {
        Some(own_keys(args, &api, &key_file).await?)
    };
    Ok(LoggedIn {
        session,
        keys,
        key_file,
        api,
    })
}

async fn api_key(args: &Args, api: &Api) -> anyhow::Result<String> {
    if let Some(key) = &args.api_key {
        return Ok(key.clone());
    }
    let key = api
        .new_api_key()
        .await
        .context("cannot obtain an API key")?;
    eprintln!(
        "ilo-chat: obtained an API key from {} (pass --api-key to reuse one)",
        args.server
    );
    Ok(key)
}

enum Registration {
    /// The server's sentence about the password's broken rules.
    WeakPassword(String),
    Failed(anyhow::Error),
}

/// Creates the account with a new key bundle. The key file is written first (never over an
/// existing one) and removed again if the account cannot be created.
async fn register(
    args: &Args,
    api: &Api,
    password: &str,
    api_key: &str,
    key_file: &std::path::Path,
) -> Result<(), Registration> {
    let keys = Keys::generate();
    keyfile::save(key_file, &args.user, &keys, false)
        .with_context(|| {
            format!(
                "a key file may already exist for {}; pass another --key-file",
                args.user
            )
        })
        .map_err(Registration::Failed)?;
    if let Err(e) = api
        .register(&args.user, password, &keys.bundle().encode(), api_key)
        .await
    {
        keyfile::discard(key_file);
        return Err(match e {
            RestError::Refused { code, detail, .. } if code == "weak_password" => {
                Registration::WeakPassword(detail)
            }
            e => Registration::Failed(
                anyhow::Error::new(e).context(format!("cannot create {}", args.user)),
            ),
        });
    }
    eprintln!(
        "ilo-chat: created {}; your keys are in {}",
        args.user,
        key_file.display()
    );
    Ok(())
}

/// The keys in the key file, checked against the key the server lists for this user: a
/// mismatch would make every message this client sends unverifiable to others.
async fn own_keys(args: &Args, api: &Api, key_file: &std::path::Path) -> anyhow::Result<Keys> {
    if !key_file.exists() {
        anyhow::bail!(
            "no key file for {} at {}: --register creates one with the account, --new-key \
             gives the account a new key (others see a key change), --plaintext chats without \
             encryption",
            args.user,
            key_file.display()
        );
    }
    let keys = keyfile::load(key_file, &args.user)?;
    let registered = api
        .public_key(&args.user)
        .await
        .context("cannot look up your registered key")?;
    anyhow::ensure!(
        Bundle::parse(&registered).as_ref() == Some(keys.bundle()),
        "the key in {} is not the key registered for {}: use the key file of the device that \
         registered it, or --new-key to replace the registered key",
        key_file.display(),
        args.user
    );
    Ok(keys)
}
