//! Mints the HS256 tokens the school's backend would give students and teachers.

use serde::Serialize;

/// The claims of a liveclass token (see `crates/socket/PROTOCOL.md`).
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub sub: String,
    pub class: String,
    pub role: String,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Signs tokens with one shared secret.
#[derive(Clone)]
pub struct TokenMinter {
    key: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMinter { .. }")
    }
}

impl TokenMinter {
    pub fn new(secret: &str) -> Self {
        Self {
            key: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for `user` in `class` valid for an hour.
    pub fn student(&self, user: &str, class: &str) -> String {
        self.mint(&Claims {
            sub: user.into(),
            class: class.into(),
            role: "student".into(),
            exp: now() + 3600,
            name: None,
        })
    }

    /// A teacher's token, valid for an hour.
    pub fn teacher(&self, user: &str, class: &str) -> String {
        self.mint(&Claims {
            sub: user.into(),
            class: class.into(),
            role: "teacher".into(),
            exp: now() + 3600,
            name: None,
        })
    }

    /// Signs arbitrary claims (expired ones, odd roles, ...).
    pub fn mint(&self, claims: &Claims) -> String {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        // Encoding HS256 with a valid key cannot fail for these plain claims.
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
