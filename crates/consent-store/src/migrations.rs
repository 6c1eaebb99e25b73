//! Schema migrations, applied in order at start; `PRAGMA user_version` records the last one.

/// The migration that adds MACs to audit records: the records already there are MAC'd in
/// its transaction (see `mac_existing_records` in the SQLite store).
pub const AUDIT_MAC_MIGRATION: usize = 2;

/// Each entry is one migration; never edit a released one, append a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL, hide_from_others_apps INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id),
    expires_ms INTEGER NOT NULL);
CREATE TABLE friends (
    user_id TEXT NOT NULL REFERENCES users(id), friend_id TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (user_id, friend_id));
CREATE TABLE threads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
    started_by_partner TEXT, created_ms INTEGER NOT NULL);
CREATE TABLE thread_participants (
    thread_id TEXT NOT NULL REFERENCES threads(id), user_id TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (thread_id, user_id));
CREATE INDEX thread_participants_by_user ON thread_participants(user_id, thread_id);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    thread_id TEXT NOT NULL REFERENCES threads(id), sender_id TEXT NOT NULL REFERENCES users(id),
    body TEXT NOT NULL, created_ms INTEGER NOT NULL, sent_by_partner TEXT);
CREATE INDEX messages_by_thread ON messages(thread_id, seq);
CREATE TABLE partners (
    id TEXT PRIMARY KEY, display_name TEXT NOT NULL, allowed_scopes INTEGER NOT NULL,
    suspended INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL);
CREATE TABLE features (
    partner_id TEXT NOT NULL REFERENCES partners(id), name TEXT NOT NULL,
    description TEXT NOT NULL, scopes INTEGER NOT NULL, retired INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (partner_id, name));
CREATE TABLE access_requests (
    id TEXT PRIMARY KEY, partner_id TEXT NOT NULL, feature TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id), coverage INTEGER NOT NULL,
    thread_ids TEXT NOT NULL, include_history INTEGER NOT NULL, purpose TEXT NOT NULL,
    status INTEGER NOT NULL, grant_id TEXT, created_ms INTEGER NOT NULL);
CREATE INDEX access_requests_by_user ON access_requests(user_id, status);
CREATE TABLE grants (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id),
    partner_id TEXT NOT NULL REFERENCES partners(id), feature TEXT NOT NULL,
    scopes INTEGER NOT NULL, coverage INTEGER NOT NULL, thread_ids TEXT NOT NULL,
    include_history INTEGER NOT NULL, created_ms INTEGER NOT NULL, not_after_ms INTEGER NOT NULL,
    last_used_ms INTEGER, state INTEGER NOT NULL, ended_ms INTEGER, attested_ms INTEGER,
    token_hash TEXT UNIQUE);
CREATE INDEX grants_by_user ON grants(user_id);
CREATE INDEX grants_by_partner ON grants(partner_id, feature, state);
CREATE TABLE grant_scope_use (
    grant_id TEXT NOT NULL REFERENCES grants(id), scope INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL, PRIMARY KEY (grant_id, scope));
CREATE TABLE grant_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, partner_id TEXT NOT NULL, grant_id TEXT NOT NULL,
    user_id TEXT NOT NULL, kind INTEGER NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX grant_events_by_partner ON grant_events(partner_id, seq);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, partner_id TEXT NOT NULL,
    user_id TEXT NOT NULL, grant_id TEXT NOT NULL, method TEXT NOT NULL, resource TEXT NOT NULL,
    decision TEXT NOT NULL, reason TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_by_user ON audit(user_id, seq);
CREATE TABLE idempotency (
    partner_id TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
    response BLOB NOT NULL, PRIMARY KEY (partner_id, key));
"#,
    r#"
DROP TABLE idempotency;
CREATE TABLE idempotency (
    grant_id TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
    response BLOB NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY (grant_id, key));
CREATE INDEX idempotency_by_age ON idempotency(created_ms);
"#,
    r#"
CREATE INDEX access_requests_by_age ON access_requests(status, created_ms);
CREATE TABLE reads_by_others_apps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, partner_id TEXT NOT NULL,
    thread_id TEXT NOT NULL, messages INTEGER NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX reads_by_others_apps_by_user ON reads_by_others_apps(user_id, seq);
ALTER TABLE users ADD COLUMN name_to_friends_apps INTEGER NOT NULL DEFAULT 0;
CREATE TABLE friend_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    from_id TEXT NOT NULL REFERENCES users(id), to_id TEXT NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL, UNIQUE (from_id, to_id));
CREATE INDEX friend_requests_to ON friend_requests(to_id, seq);
CREATE INDEX friend_requests_sent ON friend_requests(from_id, created_ms);
CREATE INDEX grants_by_partner_newest ON grants(partner_id);
ALTER TABLE audit ADD COLUMN mac TEXT NOT NULL DEFAULT '';
ALTER TABLE partners ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
DELETE FROM meta WHERE key = 'pseudonym_key';
"#,
    r#"
ALTER TABLE partners ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
CREATE TABLE pushed_requests (
    uri_hash TEXT PRIMARY KEY, partner_id TEXT NOT NULL REFERENCES partners(id),
    feature TEXT NOT NULL, coverage INTEGER NOT NULL, thread_ids TEXT NOT NULL,
    include_history INTEGER NOT NULL, purpose TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    state TEXT NOT NULL, code_challenge TEXT NOT NULL, expires_ms INTEGER NOT NULL,
    access_request_id TEXT UNIQUE);
CREATE INDEX pushed_requests_by_age ON pushed_requests(expires_ms);
CREATE TABLE authorization_codes (
    code_hash TEXT PRIMARY KEY, partner_id TEXT NOT NULL REFERENCES partners(id),
    grant_id TEXT NOT NULL REFERENCES grants(id), redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL, expires_ms INTEGER NOT NULL, redeemed_ms INTEGER);
CREATE INDEX authorization_codes_by_age ON authorization_codes(expires_ms);
"#,
    r#"
CREATE TABLE access_requests_named (
    id TEXT PRIMARY KEY, partner_id TEXT NOT NULL, feature TEXT NOT NULL,
    user_id TEXT REFERENCES users(id), user_name TEXT NOT NULL,
    binding_message TEXT NOT NULL DEFAULT '', account_label TEXT NOT NULL DEFAULT '',
    coverage INTEGER NOT NULL, thread_ids TEXT NOT NULL, include_history INTEGER NOT NULL,
    purpose TEXT NOT NULL, status INTEGER NOT NULL, grant_id TEXT, created_ms INTEGER NOT NULL);
INSERT INTO access_requests_named (id, partner_id, feature, user_id, user_name, coverage,
    thread_ids, include_history, purpose, status, grant_id, created_ms)
    SELECT r.id, r.partner_id, r.feature, r.user_id, COALESCE(u.name, ''), r.coverage,
        r.thread_ids, r.include_history, r.purpose, r.status, r.grant_id, r.created_ms
    FROM access_requests r LEFT JOIN users u ON u.id = r.user_id;
DROP TABLE access_requests;
ALTER TABLE access_requests_named RENAME TO access_requests;
CREATE INDEX access_requests_by_user ON access_requests(user_id, status);
CREATE INDEX access_requests_by_age ON access_requests(status, created_ms);
CREATE INDEX access_requests_by_name ON access_requests(partner_id, user_name, status);
"#,
    r#"
ALTER TABLE messages ADD COLUMN card BLOB;
ALTER TABLE features ADD COLUMN card_kinds TEXT NOT NULL DEFAULT '';
"#,
    "CREATE INDEX sessions_by_age ON sessions(expires_ms);",
    "CREATE UNIQUE INDEX authorization_codes_by_grant ON authorization_codes(grant_id);",
];
