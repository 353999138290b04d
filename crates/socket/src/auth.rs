//! Token checks before the upgrade: who the client is, which class, which role — and the
//! secrets they are checked against, re-read from their files when a Secret is rotated.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use liveclass_protocol::claims::MAX_NAME_CHARS;
use liveclass_protocol::{Claims, Refusal, Role, valid_class_id, valid_user_id};
use tokio_util::sync::CancellationToken;

use crate::config::{Args, ConfigError};

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

/// HS256 needs a key at least as long as its hash (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Where the secrets come from: a flag, or files that may change under a running server.
#[derive(Debug, Clone)]
pub struct SecretSource {
    /// What the secret is, for messages: "the token secret", "the API key".
    label: &'static str,
    inline: Option<String>,
    current: Option<PathBuf>,
    previous: Option<PathBuf>,
}

/// The secrets accepted at one moment: the current one and, during a rotation, the previous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub current: Vec<u8>,
    pub previous: Option<Vec<u8>>,
}

impl SecretSource {
    /// The token secret's flags.
    pub fn from_args(args: &Args) -> Self {
        Self {
            label: "the token secret",
            inline: args.token_secret.clone(),
            current: args.token_secret_file.clone(),
            previous: args.token_previous_secret_file.clone(),
        }
    }

    /// The server API's key files, when the API is enabled.
    pub fn api_keys(args: &Args) -> Option<Self> {
        Some(Self {
            label: "the API key",
            inline: None,
            current: Some(args.api_key_file.clone()?),
            previous: args.api_previous_key_file.clone(),
        })
    }

    /// Whether there is anything to re-read.
    fn has_files(&self) -> bool {
        self.current.is_some() || self.previous.is_some()
    }

    /// Reads the secrets now. A previous-secret file that does not exist is not an error.
    pub fn load(&self) -> Result<Secrets, ConfigError> {
        let current = match (&self.inline, &self.current) {
            (Some(secret), _) => secret.clone().into_bytes(),
            (None, Some(path)) => read_secret(self.label, path)?,
            (None, None) => return Err(ConfigError::NoSecret),
        };
        check_length(self.label, "(current)", &current)?;
        let previous = match &self.previous {
            Some(path) if path.exists() => {
                let previous = read_secret(self.label, path)?;
                // An empty previous secret is how a finished rotation is often written.
                if previous.is_empty() {
                    None
                } else {
                    check_length(self.label, "(previous)", &previous)?;
                    Some(previous)
                }
            }
            _ => None,
        };
        Ok(Secrets { current, previous })
    }
}

fn read_secret(label: &str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::SecretFile {
        what: format!("{label} file {}", path.display()),
        source,
    })?;
    let end = text
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    Ok(text[..end].to_vec())
}

fn check_length(label: &str, which: &str, secret: &[u8]) -> Result<(), ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::ShortSecret {
            what: format!("{label} {which}"),
            len: secret.len(),
        });
    }
    Ok(())
}

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone, Default)]
pub struct TokenPolicy {
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub max_lifetime: Option<Duration>,
    /// The one class this server serves, if it serves one.
    pub class: Option<String>,
}

impl TokenPolicy {
    pub fn from_args(args: &Args) -> Self {
        Self {
            audience: args.token_audience.clone(),
            issuer: args.token_issuer.clone(),
            max_lifetime: Some(args.max_token_lifetime),
            class: args.class.clone(),
        }
    }
}

struct Keys {
    secrets: Secrets,
    current: DecodingKey,
    previous: Option<DecodingKey>,
}

impl Keys {
    fn new(secrets: Secrets) -> Self {
        Self {
            current: DecodingKey::from_secret(&secrets.current),
            previous: secrets.previous.as_deref().map(DecodingKey::from_secret),
            secrets,
        }
    }
}

/// Checks tokens against the current (and previous) HS256 secret.
pub struct TokenVerifier {
    keys: RwLock<Arc<Keys>>,
    validation: Validation,
    policy: TokenPolicy,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(secrets: Secrets, policy: TokenPolicy) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // A token past its `exp` is refused at once: one let in by a leeway would be closed
        // with 4003 right after `hello`.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // `aud` and `iss` are checked below, so that a token carrying them is not refused by a
        // server that does not care about them.
        validation.validate_aud = false;
        Self {
            keys: RwLock::new(Arc::new(Keys::new(secrets))),
            validation,
            policy,
        }
    }

    fn keys(&self) -> Arc<Keys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the secrets if they changed; true if they did.
    pub fn rotate(&self, secrets: Secrets) -> bool {
        if self.keys().secrets == secrets {
            return false;
        }
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Keys::new(secrets));
        true
    }

    pub fn verify(&self, token: &str) -> Result<Identity, Refusal> {
        if token.is_empty() {
            return Err(Refusal::MissingToken);
        }
        // jsonwebtoken refuses `alg: none` too, but as an unparsable header; read the header
        // ourselves so the client is told it is the algorithm, not the shape, that is wrong.
        if header_alg(token).is_some_and(|alg| alg != "HS256") {
            return Err(Refusal::BadAlgorithm);
        }
        let keys = self.keys();
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => Refusal::Expired,
                    ErrorKind::InvalidSignature => Refusal::BadSignature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        Refusal::BadAlgorithm
                    }
                    _ => Refusal::Malformed,
                }
            })
        };
        let claims = match (decode(&keys.current), &keys.previous) {
            (Err(Refusal::BadSignature), Some(previous)) => decode(previous)?,
            (result, _) => result?,
        }
        .claims;
        self.check(claims)
    }

    fn check(&self, claims: Claims) -> Result<Identity, Refusal> {
        if !valid_user_id(&claims.sub)
            || !valid_class_id(&claims.class)
            || claims
                .name
                .as_ref()
                .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
        {
            return Err(Refusal::Malformed);
        }
        if let Some(audience) = &self.policy.audience
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains(audience))
        {
            return Err(Refusal::BadAudience);
        }
        if let Some(issuer) = &self.policy.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(Refusal::BadIssuer);
        }
        if let Some(max) = self.policy.max_lifetime {
            let from = claims.iat.unwrap_or_else(now_s);
            if claims.exp.saturating_sub(from) > max.as_secs() {
                return Err(Refusal::LifetimeTooLong);
            }
        }
        if let Some(class) = &self.policy.class
            && *class != claims.class
        {
            return Err(Refusal::WrongClass);
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

/// Whatever holds secrets read from files: the token verifier, the server API's keys.
pub trait Rotate {
    /// Replaces the secrets if they changed; true if they did.
    fn rotate(&self, secrets: Secrets) -> bool;
}

impl Rotate for TokenVerifier {
    fn rotate(&self, secrets: Secrets) -> bool {
        TokenVerifier::rotate(self, secrets)
    }
}

/// Re-reads the secret files every `every` and rotates `holder`'s secrets when they changed.
/// A file that became unreadable or too short keeps the secrets in use, loudly.
pub async fn watch_secrets(
    holder: Arc<impl Rotate>,
    source: SecretSource,
    every: Duration,
    shutdown: CancellationToken,
) {
    if !source.has_files() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match source.load() {
            Ok(secrets) => {
                last_error = None;
                if holder.rotate(secrets) {
                    tracing::info!(what = source.label, "secrets changed on disk; rotated");
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::error!(what = source.label, error = %text, "cannot reload the secrets; keeping the ones in use");
                }
                last_error = Some(text);
            }
        }
    }
}

fn now_s() -> u64 {
    liveclass_protocol::now_ms() / 1000
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

    const SECRET: &[u8] = b"test-secret-0123456789-0123456789";
    const OTHER: &[u8] = b"another-secret-0123456789-0123456";

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

    fn verifier(policy: TokenPolicy) -> TokenVerifier {
        TokenVerifier::new(
            Secrets {
                current: SECRET.to_vec(),
                previous: None,
            },
            policy,
        )
    }

    #[test]
    fn accepts_a_good_token() {
        let token = sign(
            json!({"sub":"u1","class":"school/physics-101","role":"teacher","exp":now()+60,"name":"Ada"}),
            SECRET,
        );
        let id = verifier(TokenPolicy::default()).verify(&token).unwrap();
        assert_eq!(id.user, "u1");
        assert_eq!(id.class, "school/physics-101");
        assert_eq!(id.role, Role::Teacher);
        assert_eq!(id.name.as_deref(), Some("Ada"));
    }

    #[test]
    fn refuses_each_kind_of_bad_token() {
        let v = verifier(TokenPolicy::default());
        assert_eq!(v.verify(""), Err(Refusal::MissingToken));
        let expired = sign(
            json!({"sub":"u1","class":"c","role":"student","exp":now()-1}),
            SECRET,
        );
        assert_eq!(v.verify(&expired), Err(Refusal::Expired));
        let forged = sign(
            json!({"sub":"u1","class":"c","role":"student","exp":now()+60}),
            OTHER,
        );
        assert_eq!(v.verify(&forged), Err(Refusal::BadSignature));
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"sub":"u1","class":"c","role":"student","exp":{}}}"#,
                now() + 60
            ))
        );
        assert_eq!(v.verify(&none), Err(Refusal::BadAlgorithm));
        assert_eq!(v.verify("not-a-jwt"), Err(Refusal::Malformed));
        for claims in [
            json!({"sub":"u1","class":"c","role":"admin","exp":now()+60}),
            json!({"sub":"u1","class":"a}b","role":"student","exp":now()+60}),
            json!({"sub":"u/1","class":"c","role":"student","exp":now()+60}),
        ] {
            assert_eq!(v.verify(&sign(claims, SECRET)), Err(Refusal::Malformed));
        }
    }

    #[test]
    fn audience_issuer_lifetime_and_class() {
        let policy = TokenPolicy {
            audience: Some("liveclass".into()),
            issuer: Some("school".into()),
            max_lifetime: Some(Duration::from_secs(3600)),
            class: Some("school/c".into()),
        };
        let v = verifier(policy);
        let base = |extra: serde_json::Value| {
            let mut claims = json!({"sub":"u1","class":"school/c","role":"student","exp":now()+60,
                                    "aud":["web","liveclass"],"iss":"school"});
            for (k, value) in extra.as_object().unwrap() {
                claims[k] = value.clone();
            }
            sign(claims, SECRET)
        };
        assert!(v.verify(&base(json!({}))).is_ok());
        assert_eq!(
            v.verify(&base(json!({"aud":"other"}))),
            Err(Refusal::BadAudience)
        );
        assert_eq!(
            v.verify(&base(json!({"iss":"evil"}))),
            Err(Refusal::BadIssuer)
        );
        assert_eq!(
            v.verify(&base(json!({"exp": now() + 7200}))),
            Err(Refusal::LifetimeTooLong)
        );
        assert_eq!(
            v.verify(&base(json!({"class":"school/d"}))),
            Err(Refusal::WrongClass)
        );
        // A server that checks no audience accepts a token that has one.
        let lax = verifier(TokenPolicy::default());
        assert!(lax.verify(&base(json!({}))).is_ok());
    }

    #[test]
    fn rotation_accepts_current_and_previous() {
        let v = verifier(TokenPolicy::default());
        let old = sign(
            json!({"sub":"u1","class":"c","role":"student","exp":now()+60}),
            SECRET,
        );
        let new = sign(
            json!({"sub":"u1","class":"c","role":"student","exp":now()+60}),
            OTHER,
        );
        assert_eq!(v.verify(&new), Err(Refusal::BadSignature));
        assert!(v.rotate(Secrets {
            current: OTHER.to_vec(),
            previous: Some(SECRET.to_vec()),
        }));
        assert!(v.verify(&new).is_ok());
        assert!(v.verify(&old).is_ok());
        assert!(v.rotate(Secrets {
            current: OTHER.to_vec(),
            previous: None,
        }));
        assert_eq!(v.verify(&old), Err(Refusal::BadSignature));
    }

    #[test]
    fn secret_files_are_trimmed_checked_and_the_previous_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("token");
        std::fs::write(&current, b"short\n").unwrap();
        let source = SecretSource {
            label: "the token secret",
            inline: None,
            current: Some(current.clone()),
            previous: Some(dir.path().join("previous")),
        };
        assert!(matches!(
            source.load(),
            Err(ConfigError::ShortSecret { len: 5, .. })
        ));
        std::fs::write(&current, [SECRET, b"\r\n"].concat()).unwrap();
        assert_eq!(
            source.load().unwrap(),
            Secrets {
                current: SECRET.to_vec(),
                previous: None
            }
        );
    }
}
