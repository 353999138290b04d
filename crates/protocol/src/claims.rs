//! The claims of a liveclass token, and the alphabets of user and class ids.
//!
//! Ids go into Redis keys inside a `{hash tag}`, so braces, spaces and control characters never
//! appear in them. A class id is the LiveClass's `<namespace>/<name>`, so two classes of the same
//! name in two namespaces never share state.

use serde::{Deserialize, Serialize};

/// A student or a teacher; teachers may send direct messages and are exempt from slow mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// The claims of a token signed by the school's backend (HS256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The class id: `<namespace>/<name>` of the LiveClass.
    pub class: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch; bounds the token's lifetime when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Display name, at most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Audience, checked when the server is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer, checked when the server is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A JWT `aud`: one string or a list of them (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

pub const MAX_ID_LEN: usize = 128;
pub const MAX_NAME_CHARS: usize = 128;

/// A user id: 1–128 characters of `A-Z a-z 0-9 _ . : @ -`.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
}

/// A class id: `<namespace>/<name>` (one `/`, each side a user-id-like part), or, for classes
/// outside Kubernetes, a plain id without `/`.
pub fn valid_class_id(id: &str) -> bool {
    if id.len() > MAX_ID_LEN {
        return false;
    }
    match id.split_once('/') {
        Some((namespace, name)) => valid_user_id(namespace) && valid_user_id(name),
        None => valid_user_id(id),
    }
}

/// The class id of a LiveClass.
pub fn class_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_ids_are_namespace_qualified() {
        assert!(valid_class_id("school/physics-101"));
        assert!(valid_class_id("physics-101"));
        assert_eq!(class_id("school", "physics-101"), "school/physics-101");
        for bad in ["", "/x", "x/", "a/b/c", "a}b", "a b", "a{b}/c"] {
            assert!(!valid_class_id(bad), "{bad}");
        }
        assert!(!valid_user_id("a/b"));
    }

    #[test]
    fn claims_round_trip_without_optional_fields() {
        let claims = Claims {
            sub: "u1".into(),
            class: "school/c".into(),
            role: Role::Student,
            exp: 10,
            iat: None,
            name: None,
            aud: None,
            iss: None,
        };
        let json = serde_json::to_string(&claims).unwrap();
        assert_eq!(
            json,
            r#"{"sub":"u1","class":"school/c","role":"student","exp":10}"#
        );
        assert_eq!(serde_json::from_str::<Claims>(&json).unwrap(), claims);
    }
}
