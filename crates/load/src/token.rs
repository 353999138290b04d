//! Minting the tokens the school's backend would hand out (PROTOCOL.md, "Handshake").

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;

use crate::LoadError;

#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    class: &'a str,
    role: &'a str,
    exp: u64,
    name: &'a str,
}

/// Signs HS256 tokens with one secret.
pub struct Minter {
    key: EncodingKey,
    header: Header,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").finish_non_exhaustive()
    }
}

impl Minter {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            header: Header::new(Algorithm::HS256),
        }
    }

    /// A token for `user` in `class` with `role`, valid until `exp` (Unix seconds).
    pub fn mint(
        &self,
        user: &str,
        class: &str,
        role: &str,
        name: &str,
        exp: u64,
    ) -> Result<String, LoadError> {
        let claims = Claims {
            sub: user,
            class,
            role,
            exp,
            name,
        };
        encode(&self.header, &claims, &self.key)
            .map_err(|e| LoadError::Config(format!("cannot sign a token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[test]
    fn tokens_verify_with_the_same_secret() {
        let token = Minter::new(b"s3cret")
            .mint("s1", "run-c0", "student", "Student 1", 4_000_000_000)
            .unwrap();
        let data = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "s1");
        assert_eq!(data.claims["class"], "run-c0");
        assert_eq!(data.claims["role"], "student");
        assert_eq!(data.header.alg, Algorithm::HS256);
    }
}
