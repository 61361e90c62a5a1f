-- The web page's sign-ins. Portable like 0001 (TEXT and BIGINT only).

-- Signed-in browsers. Only the SHA-256 of the cookie's secret is stored, so a copy of the
-- database does not hand out sessions.
CREATE TABLE web_sessions (
    id_sha256  TEXT PRIMARY KEY,
    principal  TEXT NOT NULL,
    groups     TEXT NOT NULL,               -- JSON list: approver groups mapped from the provider
    via        TEXT NOT NULL,               -- 'oidc' or 'token'
    token_sha256 TEXT,                      -- the API token signed in with (via = 'token')
    csrf       TEXT NOT NULL,               -- the form token of this session
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_ms);

-- OIDC sign-ins under way: the state sent to the provider (hashed), the browser it belongs
-- to (hash of a cookie set with the redirect), the PKCE verifier and the nonce.
CREATE TABLE web_logins (
    state_sha256   TEXT PRIMARY KEY,
    browser_sha256 TEXT NOT NULL,
    verifier       TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    next_path      TEXT NOT NULL,             -- where the browser goes once signed in
    expires_ms     BIGINT NOT NULL
);
