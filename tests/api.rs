//! The REST contract of `api.md`, end to end over loopback, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{Backend, PASSWORD, TestApp, error_of, new_user, public_key};

on_both_backends!(
    keys_are_uuids_and_the_trailing_slash_is_the_same_endpoint,
    revoked_keys_cannot_create_users_or_log_in_but_users_remain,
    registered_users_log_in_and_get_a_url_safe_token,
    usernames_are_unique_ignoring_case,
    each_username_rule_is_enforced_and_nothing_is_written,
    look_alike_invisible_and_bidi_names_are_refused,
    weak_passwords_are_refused_with_every_missing_rule,
    public_keys_must_be_base64_of_32_to_2048_bytes,
    every_broken_rule_is_reported_at_once,
    unknown_api_keys_are_refused_and_nothing_is_written,
    malformed_bodies_get_400_and_huge_bodies_413,
    sql_looking_strings_are_stored_literally,
    ten_concurrent_registrations_of_one_name_give_one_201,
    unknown_user_and_wrong_password_get_the_same_401,
    login_matches_usernames_like_registration,
    overlong_passwords_are_refused_before_hashing,
    public_keys_are_looked_up_by_username,
    logout_revokes_the_token,
    missing_or_malformed_bearer_tokens_get_401,
    deleting_a_user_needs_its_password_and_removes_everything,
    replacing_the_public_key_needs_the_password_and_ends_every_session,
    a_user_named_public_key_can_still_be_looked_up,
    changing_the_password_needs_the_old_one_and_ends_the_other_sessions,
    probes_docs_and_metrics_answer,
    unknown_routes_and_methods_get_the_error_shape,
);

async fn keys_are_uuids_and_the_trailing_slash_is_the_same_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_api_key().await;
    assert!(uuid::Uuid::parse_str(&key).is_ok(), "{key}");
    let reply = app.client.post(app.url("/key/")).send().await.unwrap();
    assert_eq!(reply.status(), 201);
    let other = support::detail(reply).await;
    assert_ne!(key, other);
    // Both keys work.
    for key in [key, other] {
        let reply = app
            .post_user(&new_user(&format!("u{}", &key[..8]), &key))
            .await;
        assert_eq!(reply.status(), 201);
    }
}

async fn revoked_keys_cannot_create_users_or_log_in_but_users_remain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("alice").await;
    let reply = app.revoke_key(&key).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        support::detail(reply).await,
        format!("Successfully deleted {key}")
    );

    let (status, _, code) = error_of(app.post_user(&new_user("bob", &key)).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_api_key"));
    let login = json!({"username": "alice", "password": PASSWORD, "api_key": key});
    let (status, _, code) = error_of(app.put_user(&login).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_api_key"));

    // The user remains and logs in with another key.
    let other = app.new_api_key().await;
    app.login("alice", &other).await;
    // A second revocation, or a key never issued, is 404.
    for key in [key, uuid::Uuid::new_v4().to_string(), "not-a-key".into()] {
        let reply = app.revoke_key(&key).await;
        let (status, _, code) = error_of(reply).await;
        assert_eq!((status, code.as_str()), (404, "unknown_api_key"));
    }
}

async fn registered_users_log_in_and_get_a_url_safe_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_api_key().await;
    let reply = app.post_user(&new_user("cookielover57🍪", &key)).await;
    assert_eq!(reply.status(), 201);
    assert_eq!(
        support::detail(reply).await,
        "Successfully created cookielover57🍪"
    );

    let reply = app
        .put_user(&json!({"username": "cookielover57🍪", "password": PASSWORD, "api_key": key}))
        .await;
    assert_eq!(reply.status(), 200);
    let text = reply.text().await.unwrap();
    assert!(
        !text.contains("argon2") && !text.contains(PASSWORD),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["detail"], "Successful Login for cookielover57🍪");
    let token = body["token"].as_str().unwrap();
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    let expires_at = body["expires_at"].as_str().unwrap();
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 20,
        "{expires_at}"
    );
    // Two logins give two different sessions.
    assert_ne!(app.login("cookielover57🍪", &key).await, token);
}

async fn usernames_are_unique_ignoring_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("Alice").await;
    for taken in ["alice", "ALICE", "Alice"] {
        let (status, detail, code) = error_of(app.post_user(&new_user(taken, &key)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (409, "username_taken"),
            "{taken}: {detail}"
        );
    }
    // The original keeps its password: the 409s wrote nothing.
    app.login("alice", &key).await;
}

async fn each_username_rule_is_enforced_and_nothing_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_api_key().await;
    let long = "x".repeat(10_000);
    let cases = [
        ("ab", "3 to 32"),
        ("x".repeat(33).as_str(), "3 to 32"),
        (long.as_str(), "3 to 32"),
        ("two words", "whitespace"),
        ("tab\there", "whitespace"),
        ("bell\u{7}bell", "control"),
        ("nul\u{0}nul", "control"),
    ]
    .map(|(name, rule)| (name.to_owned(), rule));
    for (name, rule) in cases {
        let (status, detail, code) = error_of(app.post_user(&new_user(&name, &key)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "invalid_username"),
            "{name:?}"
        );
        assert!(detail.contains(rule), "{detail}");
        if name.len() < 100 {
            assert_eq!(
                app.status_of_public_key(&urlencode(&name)).await,
                404,
                "nothing written for {name:?}"
            );
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

async fn look_alike_invisible_and_bidi_names_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("alice").await;
    // Cyrillic а, and Latin look-alikes of other scripts: taken, as the name they imitate.
    for look_alike in ["аlice", "ALICE", "alіce"] {
        let (status, _, code) = error_of(app.post_user(&new_user(look_alike, &key)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (409, "username_taken"),
            "{look_alike}"
        );
    }
    for (name, why) in [
        ("ali\u{200B}ce", "invisible"),
        ("bob\u{200D}by", "invisible"),
        ("\u{200E}carol", "invisible"),
        ("\u{202E}gnp.exe", "invisible"),
        ("\u{FEFF}dave", "invisible"),
        ("\u{3164}\u{3164}\u{3164}", "visible"),
        ("\u{2800}\u{2800}\u{2800}", "visible"),
        ("\u{0301}\u{0302}\u{0303}", "visible"),
    ] {
        let (status, detail, _) = error_of(app.post_user(&new_user(name, &key)).await).await;
        assert_eq!(status, 422, "{name:?}");
        assert!(detail.contains(why), "{name:?}: {detail}");
    }
    // The seed's name stays valid.
    assert_eq!(
        app.post_user(&new_user("cookielover57🍪", &key))
            .await
            .status(),
        201
    );
}

async fn weak_passwords_are_refused_with_every_missing_rule(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_api_key().await;
    let cases = [
        ("Sh0rt!", vec!["8 to 128"]),
        ("alllowercase1!", vec!["uppercase"]),
        ("ALLUPPERCASE1!", vec!["lowercase"]),
        ("NoDigitsHere!", vec!["digit"]),
        ("NoSymbols123", vec!["not a letter"]),
        ("Under_score1 x", vec!["not a letter"]),
        ("weakpass", vec!["uppercase", "digit", "not a letter"]),
    ];
    for (password, rules) in cases {
        let mut body = new_user("weakling", &key);
        body["password"] = json!(password);
        let (status, detail, code) = error_of(app.post_user(&body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "weak_password"),
            "{password}"
        );
        for rule in rules {
            assert!(detail.contains(rule), "{password}: {detail}");
        }
        assert!(!detail.contains(password), "the password is never echoed");
    }
    let mut body = new_user("weakling", &key);
    body["password"] = json!("A".repeat(200) + "a1!");
    let (status, _, code) = error_of(app.post_user(&body).await).await;
    assert_eq!((status, code.as_str()), (422, "weak_password"));
    // Unicode letters, digits and an emoji satisfy the rules.
    body["password"] = json!("ÉcoleÉTÉ٣🍪");
    assert_eq!(app.post_user(&body).await.status(), 201);
    assert_eq!(app.status_of_public_key("weakling").await, 200);
}

async fn public_keys_must_be_base64_of_32_to_2048_bytes(backend: Backend) {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let app = TestApp::spawn(backend).await;
    let key = app.new_api_key().await;
    for bad in [
        STANDARD.encode([1u8; 31]),
        STANDARD.encode([1u8; 2049]),
        "not base64 at all!".to_owned(),
        String::new(),
    ] {
        let mut body = new_user("keyholder", &key);
        body["public_key"] = json!(bad);
        let (status, _, code) = error_of(app.post_user(&body).await).await;
        assert_eq!((status, code.as_str()), (422, "invalid_public_key"));
    }
    let mut body = new_user("keyholder", &key);
    let url_safe = URL_SAFE_NO_PAD.encode([0xfb; 2048]);
    body["public_key"] = json!(url_safe);
    assert_eq!(app.post_user(&body).await.status(), 201);
    let reply = app.public_key_reply("keyholder").await;
    assert_eq!(support::detail(reply).await, url_safe, "stored as sent");
}

async fn every_broken_rule_is_reported_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"username": "a b", "password": "weak", "public_key": "??"});
    let reply = app.post_user(&body).await;
    assert_eq!(reply.status(), 422);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed");
    let detail = body["detail"].as_str().unwrap();
    for rule in [
        "api_key is required",
        "whitespace",
        "8 to 128",
        "uppercase",
        "digit",
        "public_key must be base64",
    ] {
        assert!(detail.contains(rule), "{rule} missing from {detail}");
    }
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in ["username", "password", "public_key", "api_key"] {
        assert!(fields.contains(&field), "{fields:?}");
    }
}

async fn unknown_api_keys_are_refused_and_nothing_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for key in [uuid::Uuid::new_v4().to_string(), "garbage".into()] {
        let (status, _, code) = error_of(app.post_user(&new_user("nobody", &key)).await).await;
        assert_eq!((status, code.as_str()), (401, "invalid_api_key"));
    }
    assert_eq!(app.status_of_public_key("nobody").await, 404);
}

async fn malformed_bodies_get_400_and_huge_bodies_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_api_key().await;
    let valid = new_user("shape", &key).to_string();
    let send = |body: String, content_type: &'static str| {
        app.client
            .post(app.url("/user"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        (
            send("{\"username\": ".into(), "application/json"),
            400,
            "malformed_json",
        ),
        (
            send("not json".into(), "application/json"),
            400,
            "malformed_json",
        ),
        (send(valid.clone(), "text/plain"), 400, "wrong_content_type"),
        (
            send(r#"{"username": 5}"#.into(), "application/json"),
            400,
            "wrong_json_type",
        ),
        (
            send("[1, 2]".into(), "application/json"),
            400,
            "wrong_json_type",
        ),
        (
            send("x".repeat(70 * 1024), "application/json"),
            413,
            "payload_too_large",
        ),
    ];
    for (reply, status, code) in cases {
        let (got_status, detail, got_code) = error_of(reply.await.unwrap()).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "{detail}");
    }
    // A valid object padded past 64 KiB is refused too.
    let mut padded = new_user("shape", &key);
    padded["padding"] = json!("p".repeat(65 * 1024));
    let (status, _, code) = error_of(app.post_user(&padded).await).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert_eq!(
        app.status_of_public_key("shape").await,
        404,
        "nothing written"
    );
}

async fn sql_looking_strings_are_stored_literally(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("bystander").await;
    let name = "x');DROP_TABLE_users;--";
    assert_eq!(app.post_user(&new_user(name, &key)).await.status(), 201);
    app.login(name, &key).await;
    assert_eq!(app.status_of_public_key(&urlencode(name)).await, 200);
    assert_eq!(app.status_of_public_key("bystander").await, 200);
    assert_eq!(
        app.status_of_public_key(&urlencode("x' OR '1'='1")).await,
        404
    );
}

async fn ten_concurrent_registrations_of_one_name_give_one_201(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_api_key().await;
    let body = new_user("contended", &key);
    let replies = futures_util::future::join_all((0..10).map(|_| app.post_user(&body))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
}

async fn unknown_user_and_wrong_password_get_the_same_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("carol").await;
    let wrong = app
        .put_user(&json!({"username": "carol", "password": "Wrong-password1", "api_key": key}))
        .await;
    let unknown = app
        .put_user(&json!({"username": "nobody", "password": PASSWORD, "api_key": key}))
        .await;
    let wrong = error_of(wrong).await;
    let unknown = error_of(unknown).await;
    assert_eq!(wrong, unknown);
    assert_eq!((wrong.0, wrong.2.as_str()), (401, "invalid_credentials"));
}

async fn login_matches_usernames_like_registration(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("Zoé_Straße").await;
    // Decomposed é, other case, and ß folded to ss.
    app.login("zoe\u{301}_STRASSE", &key).await;
}

async fn overlong_passwords_are_refused_before_hashing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("dave").await;
    let login = json!({"username": "dave", "password": "Aa1!".repeat(1000), "api_key": key});
    let (status, detail, _) = error_of(app.put_user(&login).await).await;
    assert_eq!(status, 422);
    assert!(detail.contains("at most 128"), "{detail}");
}

async fn public_keys_are_looked_up_by_username(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_user("Erin").await;
    let reply = app.public_key_reply("ERIN").await;
    assert_eq!(reply.status(), 200);
    assert_eq!(support::detail(reply).await, public_key());
    let reply = app.public_key_reply("nobody").await;
    let (status, _, code) = error_of(reply).await;
    assert_eq!((status, code.as_str()), (404, "user_not_found"));
}

async fn logout_revokes_the_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("frank").await;
    let token = app.login("frank", &key).await;
    let other = app.login("frank", &key).await;
    let logout = |token: String| {
        app.client
            .delete(app.url("/session"))
            .bearer_auth(token)
            .send()
    };
    let check = |token: String| {
        app.client
            .get(app.url("/session"))
            .bearer_auth(token)
            .send()
    };
    let session: serde_json::Value = check(token.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(session["username"], "frank");
    assert!(session["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(logout(token.clone()).await.unwrap().status(), 204);
    let (status, _, code) = error_of(logout(token.clone()).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    let (status, _, code) = error_of(check(token).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    // Only that session ended.
    assert_eq!(logout(other).await.unwrap().status(), 204);
}

async fn missing_or_malformed_bearer_tokens_get_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for header in [
        None,
        Some("Bearer"),
        Some("Basic abc"),
        Some("Bearer not-a-token"),
    ] {
        let mut request = app.client.delete(app.url("/session"));
        if let Some(value) = header {
            request = request.header("authorization", value);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.headers()["www-authenticate"], "Bearer");
        let (status, _, code) = error_of(reply).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_token"),
            "{header:?}"
        );
    }
}

async fn deleting_a_user_needs_its_password_and_removes_everything(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("grace").await;
    let token = app.login("grace", &key).await;
    let second = app.login("grace", &key).await;
    let delete = |password: &str| {
        app.client
            .delete(app.url("/user"))
            .bearer_auth(&token)
            .json(&json!({"password": password}))
            .send()
    };
    let (status, _, code) = error_of(delete("Wrong-password1").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    assert_eq!(app.status_of_public_key("grace").await, 200, "still there");

    assert_eq!(delete(PASSWORD).await.unwrap().status(), 204);
    assert_eq!(app.status_of_public_key("grace").await, 404);
    assert_eq!(
        app.logout(&second).await,
        401,
        "every session of the user is gone"
    );
    let login = json!({"username": "grace", "password": PASSWORD, "api_key": key});
    assert_eq!(app.put_user(&login).await.status(), 401);
    // The name is free again.
    assert_eq!(app.post_user(&new_user("grace", &key)).await.status(), 201);
}

async fn replacing_the_public_key_needs_the_password_and_ends_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("hana").await;
    let token = app.login("hana", &key).await;
    let other_device = app.login("hana", &key).await;
    let bundle = ilo_e2e::Keys::generate().bundle().encode();
    let replace = |body: Value| {
        app.client
            .put(app.url("/user/public_key"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let wrong = json!({"password": "Wrong-password1", "public_key": bundle});
    let (status, _, code) = error_of(replace(wrong).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    let (status, detail, code) =
        error_of(replace(json!({"public_key": "short"})).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (422, "validation_failed"));
    assert!(
        detail.contains("password") && detail.contains("public_key"),
        "{detail}"
    );
    let reply = app.public_key_reply("hana").await;
    assert_eq!(
        support::detail(reply).await,
        public_key(),
        "unchanged so far"
    );

    let reply = replace(json!({"password": PASSWORD, "public_key": bundle}))
        .await
        .unwrap();
    assert_eq!(reply.status(), 204);
    let reply = app.public_key_reply("hana").await;
    assert_eq!(support::detail(reply).await, bundle);
    for token in [&token, &other_device] {
        assert_eq!(
            app.logout(token).await,
            401,
            "every session of the user ended"
        );
    }
    let (status, _, code) = error_of(
        app.client
            .put(app.url("/user/public_key"))
            .json(&json!({"password": PASSWORD, "public_key": bundle}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    app.login("hana", &key).await;
}

async fn a_user_named_public_key_can_still_be_looked_up(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for name in ["public_key", "password"] {
        app.create_user(name).await;
        let reply = app.public_key_reply(name).await;
        assert_eq!(reply.status(), 200, "{name}");
        assert_eq!(support::detail(reply).await, public_key());
    }
}

async fn changing_the_password_needs_the_old_one_and_ends_the_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.create_user("iris").await;
    let token = app.login("iris", &key).await;
    let other_device = app.login("iris", &key).await;
    let change = |body: Value| {
        app.client
            .put(app.url("/user/password"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let (status, _, code) = error_of(
        change(json!({"password": "Wrong-password1", "new_password": "Better-pass-2"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    let (status, detail, _) = error_of(
        change(json!({"password": PASSWORD, "new_password": "weak"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        detail.contains("new_password") || detail.contains("password"),
        "{detail}"
    );

    let reply = change(json!({"password": PASSWORD, "new_password": "Better-pass-2"}))
        .await
        .unwrap();
    assert_eq!(reply.status(), 204);
    assert_eq!(
        app.logout(&other_device).await,
        401,
        "the other session ended"
    );
    let old = json!({"username": "iris", "password": PASSWORD, "api_key": key});
    assert_eq!(
        app.put_user(&old).await.status(),
        401,
        "the old password is refused"
    );
    let new = json!({"username": "iris", "password": "Better-pass-2", "api_key": key});
    assert_eq!(app.put_user(&new).await.status(), 200);
    assert_eq!(
        app.logout(&token).await,
        204,
        "the session that asked goes on"
    );
}

async fn probes_docs_and_metrics_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    assert_eq!(get("/health").await.unwrap().status(), 200);
    assert_eq!(get("/ready").await.unwrap().status(), 200);

    let spec: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/key",
        "/key/{key}",
        "/user",
        "/user/{username}",
        "/user/password",
        "/session",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is documented");
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    // Code generators need each operation's id to be unique.
    let mut ids: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|methods| methods.as_object().unwrap().values())
        .map(|operation| operation["operationId"].as_str().unwrap())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids are unique: {ids:?}");
    openapi_spec_validator_accepts(&spec);

    let docs = get("/docs").await.unwrap();
    assert_eq!(docs.status(), 200, "redirected to /docs/");
    // The docs share the web client's origin: a strict policy keeps foreign scripts out.
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(!page.contains("https://"), "no asset comes from elsewhere");
    let bundle = get("/docs/swagger-ui-bundle.js").await.unwrap();
    assert_eq!(bundle.status(), 200);
    let init = get("/docs/swagger-initializer.js")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    let (status, _, code) = error_of(get("/docs/no-such-file.js").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));

    app.create_user("metered").await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .contains(r#"ilo_api_http_requests_total{method="POST",route="/user",status="201"} 1"#),
        "{metrics}"
    );
}

async fn unknown_routes_and_methods_get_the_error_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, _, code) = error_of(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let reply = app.client.patch(app.url("/user")).send().await.unwrap();
    let (status, _, code) = error_of(reply).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
}

/// The document passes a real OpenAPI 3 validator: Python's `openapi-spec-validator`, which
/// `scripts/test` installs when it is missing.
fn openapi_spec_validator_accepts(spec: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let checked = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(
        checked.status.success(),
        "openapi-spec-validator refused the document: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
