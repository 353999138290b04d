//! The members' tokens: minted as the school's backend would (HS256 over the protocol's claims,
//! plus whatever claims the school's servers also check, such as `aud` and `iss`), or read from
//! a file of tokens the school minted itself (one JWT a line).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::LoadError;

/// The claims of a liveclass token: the protocol's own type (`liveclass-protocol`), so the
/// load generator mints exactly what the server checks.
pub use liveclass_protocol::{Claims, Role};

/// Claims the load generator sets itself; `--token-claims` may not set them (it may set `aud`,
/// `iss` and anything else the school's servers check).
const OWN_CLAIMS: &[&str] = &["sub", "class", "role", "exp", "iat", "name"];

#[derive(Serialize)]
struct WithExtra<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// Checks `--token-claims`: a JSON object of extra claims that does not redefine the protocol's.
pub fn parse_extra_claims(text: &str) -> Result<Map<String, Value>, LoadError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        LoadError::Config(format!(
            "--token-claims must be a JSON object like '{{\"aud\":\"liveclass\"}}': {e}"
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(LoadError::Config(
            "--token-claims must be a JSON object like '{\"aud\":\"liveclass\"}'".into(),
        ));
    };
    if let Some(own) = map.keys().find(|k| OWN_CLAIMS.contains(&k.as_str())) {
        return Err(LoadError::Config(format!(
            "--token-claims may not set {own:?}: the load generator sets sub, class, role, exp, iat and name itself"
        )));
    }
    Ok(map)
}

/// Signs HS256 tokens with one secret and the same extra claims for everyone.
pub struct Minter {
    key: EncodingKey,
    header: Header,
    extra: Map<String, Value>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("extra", &self.extra)
            .finish_non_exhaustive()
    }
}

impl Minter {
    pub fn new(secret: &[u8], extra: Map<String, Value>) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            header: Header::new(Algorithm::HS256),
            extra,
        }
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, LoadError> {
        encode(
            &self.header,
            &WithExtra {
                claims,
                extra: &self.extra,
            },
            &self.key,
        )
        .map_err(|e| LoadError::Config(format!("cannot sign a token: {e}")))
    }
}

/// Reads the claims of a token without checking its signature (the server checks it; the load
/// generator only needs to know who the token is for).
pub fn peek_claims(token: &str) -> Result<Claims, String> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three base64url parts joined by dots)".into());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the claims are not liveclass claims: {e}"))
}

/// The tokens of a `--tokens-file`: one JWT a line; blank lines and `#` comments are skipped.
pub fn read_tokens_file(text: &str) -> Result<Vec<(String, Claims)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The protocol's claims: a role that is neither student nor teacher does not parse.
        let claims = peek_claims(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if !liveclass_protocol::valid_user_id(&claims.sub)
            || !liveclass_protocol::valid_class_id(&claims.class)
        {
            return Err(format!(
                "line {}: user {:?} or class {:?} is not a valid id",
                n + 1,
                claims.sub,
                claims.class
            ));
        }
        out.push((line.to_string(), claims));
    }
    if out.is_empty() {
        return Err("holds no token".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    fn claims() -> Claims {
        Claims {
            sub: "s1".into(),
            class: "school/physics-101".into(),
            role: Role::Student,
            exp: 4_000_000_000,
            iat: Some(1_700_000_000),
            name: Some("Student 1".into()),
            aud: None,
            iss: None,
        }
    }

    #[test]
    fn tokens_carry_the_extra_claims_and_verify_with_the_same_secret() {
        let extra =
            parse_extra_claims(r#"{"aud":"liveclass","iss":"https://school.example"}"#).unwrap();
        let token = Minter::new(b"s3cret", extra).mint(&claims()).unwrap();
        let data = decode::<Value>(&token, &DecodingKey::from_secret(b"s3cret"), &{
            let mut v = Validation::new(Algorithm::HS256);
            v.set_audience(&["liveclass"]);
            v
        })
        .unwrap();
        assert_eq!(data.claims["class"], "school/physics-101");
        assert_eq!(data.claims["iss"], "https://school.example");
        let mut expected = claims();
        expected.aud = Some(liveclass_protocol::claims::Audience::One(
            "liveclass".into(),
        ));
        expected.iss = Some("https://school.example".into());
        assert_eq!(peek_claims(&token).unwrap(), expected);
    }

    #[test]
    fn extra_claims_may_not_redefine_the_protocols() {
        assert!(parse_extra_claims(r#"{"sub":"x"}"#).is_err());
        assert!(parse_extra_claims("[1]").is_err());
        assert!(parse_extra_claims("{").is_err());
    }

    #[test]
    fn a_tokens_file_names_its_bad_line() {
        let good = Minter::new(b"k", Map::new()).mint(&claims()).unwrap();
        let text = format!("# minted by the school\n{good}\n\n{good}\n");
        assert_eq!(read_tokens_file(&text).unwrap().len(), 2);
        let e = read_tokens_file(&format!("{good}\nnot-a-token\n")).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let mut admin = claims();
        admin.role = Role::Teacher;
        let admin = Minter::new(b"k", Map::new()).mint(&admin).unwrap();
        let bad_role = admin.replace(
            admin.split('.').nth(1).unwrap(),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"sub":"a","class":"c","role":"admin","exp":1}"#),
        );
        let e = read_tokens_file(&bad_role).unwrap_err();
        assert!(e.contains("line 1:"), "{e}");
        assert!(read_tokens_file("\n# nothing\n").is_err());
    }
}
