//! The tables, in types both backends share (text and 64-bit integers).

diesel::table! {
    api_keys (id) {
        id -> Text,
        key_hash -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        username_key -> Text,
        username_skeleton -> Nullable<Text>,
        password_hash -> Text,
        public_key -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        token_hash -> Text,
        user_id -> Text,
        api_key_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(api_keys, users, sessions);
