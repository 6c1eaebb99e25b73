//! The PostgreSQL schema, as migrations applied in order at start; the `schema_version`
//! table records the last one. It holds what the SQLite schema holds after all of its
//! migrations, in PostgreSQL's types (`BIGINT` times and sequence numbers, `BOOLEAN` flags,
//! `BYTEA` cards); tables paged in insertion order carry a `seq` identity column where
//! SQLite uses its row ids.

/// Each entry is one migration; never edit a released one, append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE, display_name TEXT NOT NULL, password_hash TEXT NOT NULL,
    hide_from_others_apps BOOLEAN NOT NULL DEFAULT FALSE,
    name_to_friends_apps BOOLEAN NOT NULL DEFAULT FALSE, created_ms BIGINT NOT NULL);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id),
    expires_ms BIGINT NOT NULL);
CREATE TABLE friends (
    user_id TEXT NOT NULL REFERENCES users(id), friend_id TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (user_id, friend_id));
CREATE TABLE friend_requests (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_id TEXT NOT NULL REFERENCES users(id), to_id TEXT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL, UNIQUE (from_id, to_id));
CREATE INDEX friend_requests_to ON friend_requests(to_id, seq);
CREATE INDEX friend_requests_sent ON friend_requests(from_id, created_ms);
CREATE TABLE threads (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL, started_by_partner TEXT, created_ms BIGINT NOT NULL);
CREATE TABLE thread_participants (
    thread_id TEXT NOT NULL REFERENCES threads(id), user_id TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (thread_id, user_id));
CREATE INDEX thread_participants_by_user ON thread_participants(user_id, thread_id);
CREATE TABLE messages (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL UNIQUE,
    thread_id TEXT NOT NULL REFERENCES threads(id), sender_id TEXT NOT NULL REFERENCES users(id),
    body TEXT NOT NULL, created_ms BIGINT NOT NULL, sent_by_partner TEXT, card BYTEA);
CREATE INDEX messages_by_thread ON messages(thread_id, seq);
CREATE TABLE partners (
    id TEXT PRIMARY KEY, display_name TEXT NOT NULL, allowed_scopes BIGINT NOT NULL,
    suspended BOOLEAN NOT NULL DEFAULT FALSE, blocked BOOLEAN NOT NULL DEFAULT FALSE,
    redirect_uris TEXT NOT NULL DEFAULT '', created_ms BIGINT NOT NULL);
CREATE TABLE features (
    partner_id TEXT NOT NULL REFERENCES partners(id), name TEXT NOT NULL,
    description TEXT NOT NULL, scopes BIGINT NOT NULL, retired BOOLEAN NOT NULL DEFAULT FALSE,
    card_kinds TEXT NOT NULL DEFAULT '', PRIMARY KEY (partner_id, name));
CREATE TABLE access_requests (
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL, feature TEXT NOT NULL, user_id TEXT REFERENCES users(id),
    user_name TEXT NOT NULL, binding_message TEXT NOT NULL DEFAULT '',
    account_label TEXT NOT NULL DEFAULT '', coverage INTEGER NOT NULL, thread_ids TEXT NOT NULL,
    include_history BOOLEAN NOT NULL, purpose TEXT NOT NULL, status INTEGER NOT NULL,
    grant_id TEXT, created_ms BIGINT NOT NULL);
CREATE INDEX access_requests_by_user ON access_requests(user_id, status, seq);
CREATE INDEX access_requests_by_age ON access_requests(status, created_ms);
CREATE INDEX access_requests_by_name ON access_requests(partner_id, user_name, status);
CREATE TABLE grants (
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id), partner_id TEXT NOT NULL REFERENCES partners(id),
    feature TEXT NOT NULL, scopes BIGINT NOT NULL, coverage INTEGER NOT NULL,
    thread_ids TEXT NOT NULL, include_history BOOLEAN NOT NULL, created_ms BIGINT NOT NULL,
    not_after_ms BIGINT NOT NULL, last_used_ms BIGINT, state INTEGER NOT NULL, ended_ms BIGINT,
    attested_ms BIGINT, token_hash TEXT UNIQUE);
CREATE INDEX grants_by_user ON grants(user_id, seq);
CREATE INDEX grants_by_partner ON grants(partner_id, feature, state);
CREATE INDEX grants_by_partner_newest ON grants(partner_id, seq);
CREATE TABLE grant_scope_use (
    grant_id TEXT NOT NULL REFERENCES grants(id), scope BIGINT NOT NULL,
    last_used_ms BIGINT NOT NULL, PRIMARY KEY (grant_id, scope));
CREATE TABLE grant_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, partner_id TEXT NOT NULL,
    grant_id TEXT NOT NULL, user_id TEXT NOT NULL, kind INTEGER NOT NULL, at_ms BIGINT NOT NULL);
CREATE INDEX grant_events_by_partner ON grant_events(partner_id, seq);
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, partner_id TEXT NOT NULL,
    user_id TEXT NOT NULL, grant_id TEXT NOT NULL, method TEXT NOT NULL, resource TEXT NOT NULL,
    decision TEXT NOT NULL, reason TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    mac TEXT NOT NULL);
CREATE INDEX audit_by_user ON audit(user_id, seq);
CREATE TABLE reads_by_others_apps (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id TEXT NOT NULL,
    partner_id TEXT NOT NULL, thread_id TEXT NOT NULL, messages BIGINT NOT NULL,
    at_ms BIGINT NOT NULL);
CREATE INDEX reads_by_others_apps_by_user ON reads_by_others_apps(user_id, seq);
CREATE TABLE idempotency (
    grant_id TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
    response BYTEA NOT NULL, created_ms BIGINT NOT NULL, PRIMARY KEY (grant_id, key));
CREATE INDEX idempotency_by_age ON idempotency(created_ms);
CREATE TABLE pushed_requests (
    uri_hash TEXT PRIMARY KEY, partner_id TEXT NOT NULL REFERENCES partners(id),
    feature TEXT NOT NULL, coverage INTEGER NOT NULL, thread_ids TEXT NOT NULL,
    include_history BOOLEAN NOT NULL, purpose TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    state TEXT NOT NULL, code_challenge TEXT NOT NULL, expires_ms BIGINT NOT NULL,
    access_request_id TEXT UNIQUE);
CREATE INDEX pushed_requests_by_age ON pushed_requests(expires_ms);
CREATE TABLE authorization_codes (
    code_hash TEXT PRIMARY KEY, partner_id TEXT NOT NULL REFERENCES partners(id),
    grant_id TEXT NOT NULL REFERENCES grants(id), redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL, expires_ms BIGINT NOT NULL, redeemed_ms BIGINT);
CREATE INDEX authorization_codes_by_age ON authorization_codes(expires_ms);
"#,
    "CREATE INDEX sessions_by_age ON sessions(expires_ms);",
    "CREATE UNIQUE INDEX authorization_codes_by_grant ON authorization_codes(grant_id);",
];
