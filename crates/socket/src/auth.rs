//! Token checks before the upgrade: who the client is, which class, which role.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

/// A student or a teacher; teachers may send direct messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Student,
    Teacher,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Teacher => "teacher",
        }
    }
}

/// The verified identity of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub class: String,
    pub role: Role,
    pub name: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    class: String,
    role: Role,
    exp: u64,
    #[serde(default)]
    name: Option<String>,
}

/// Why a token was refused; the label is the `reason` in the HTTP answer and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token: pass ?token=<JWT> from the school's backend")]
    Missing,
    #[error("the token has expired: get a new one from the school's backend")]
    Expired,
    #[error("the token's signature does not verify: it was not signed with this server's secret")]
    BadSignature,
    #[error("the token must be signed with HS256")]
    BadAlgorithm,
    #[error(
        "the token is not a valid liveclass JWT (sub, class, role, exp; ids of A-Z a-z 0-9 _ . : @ -)"
    )]
    Malformed,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "missing_token",
            TokenError::Expired => "expired",
            TokenError::BadSignature => "bad_signature",
            TokenError::BadAlgorithm => "bad_algorithm",
            TokenError::Malformed => "malformed",
        }
    }
}

/// Checks tokens against one HS256 secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier { .. }")
    }
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        // jsonwebtoken refuses `alg: none` too, but as an unparsable header; read the header
        // ourselves so the client is told it is the algorithm, not the shape, that is wrong.
        if header_alg(token).is_some_and(|alg| alg != "HS256") {
            return Err(TokenError::BadAlgorithm);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::BadAlgorithm
                }
                _ => TokenError::Malformed,
            },
        )?;
        let claims = data.claims;
        if !valid_id(&claims.sub)
            || !valid_id(&claims.class)
            || claims
                .name
                .as_ref()
                .is_some_and(|n| n.chars().count() > 128)
        {
            return Err(TokenError::Malformed);
        }
        Ok(Identity {
            user: claims.sub,
            class: claims.class,
            role: claims.role,
            name: claims.name,
            exp: claims.exp,
        })
    }
}

/// Ids go into Redis keys inside a `{hash tag}`, so braces and spaces must never appear.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
}

fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-0123456789";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn accepts_a_good_token() {
        let token = sign(
            json!({"sub":"u1","class":"physics-101","role":"teacher","exp":now()+60,"name":"Ada"}),
            SECRET,
        );
        let id = TokenVerifier::new(SECRET).verify(&token).unwrap();
        assert_eq!(id.user, "u1");
        assert_eq!(id.role, Role::Teacher);
        assert_eq!(id.name.as_deref(), Some("Ada"));
    }

    #[test]
    fn refuses_each_kind_of_bad_token() {
        let v = TokenVerifier::new(SECRET);
        assert_eq!(v.verify(""), Err(TokenError::Missing));
        let expired = sign(
            json!({"sub":"u1","class":"c","role":"student","exp":now()-60}),
            SECRET,
        );
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        let forged = sign(
            json!({"sub":"u1","class":"c","role":"student","exp":now()+60}),
            b"another-secret-0123456",
        );
        assert_eq!(v.verify(&forged), Err(TokenError::BadSignature));
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"sub":"u1","class":"c","role":"student","exp":{}}}"#,
                now() + 60
            ))
        );
        assert_eq!(v.verify(&none), Err(TokenError::BadAlgorithm));
        assert_eq!(v.verify("not-a-jwt"), Err(TokenError::Malformed));
        let bad_role = sign(
            json!({"sub":"u1","class":"c","role":"admin","exp":now()+60}),
            SECRET,
        );
        assert_eq!(v.verify(&bad_role), Err(TokenError::Malformed));
        let brace = sign(
            json!({"sub":"u1","class":"a}b","role":"student","exp":now()+60}),
            SECRET,
        );
        assert_eq!(v.verify(&brace), Err(TokenError::Malformed));
    }
}
