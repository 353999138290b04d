//! The WebSocket handshake: the `GET /ws` query, and every answer the server gives instead of
//! upgrading (an HTTP status with a JSON body `{"error": <reason>, "message": <what to do>}`).

use serde::Deserialize;

use crate::id::MessageId;

/// The query of `GET /ws?token=…[&since=…&epoch=…]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeParams {
    pub token: Option<String>,
    /// Resume after this message id.
    pub since: Option<MessageId>,
    /// The epoch `since` belongs to (from `hello` or `gap`); a `since` from another epoch is not
    /// recoverable.
    pub epoch: Option<String>,
}

pub const MAX_EPOCH_CHARS: usize = 64;

impl HandshakeParams {
    /// Parses a raw query string (without the `?`). Unknown parameters are ignored. Never panics.
    pub fn parse(query: Option<&str>) -> Result<Self, Refusal> {
        #[derive(Deserialize)]
        struct Raw {
            token: Option<String>,
            since: Option<String>,
            epoch: Option<String>,
        }
        let raw: Raw =
            serde_urlencoded::from_str(query.unwrap_or_default()).map_err(|_| Refusal::BadQuery)?;
        let since = match raw.since.as_deref() {
            None | Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| Refusal::BadSince)?),
        };
        let epoch = raw.epoch.filter(|e| !e.is_empty());
        if epoch.as_ref().is_some_and(|e| {
            e.len() > MAX_EPOCH_CHARS || !e.bytes().all(|b| b.is_ascii_alphanumeric())
        }) {
            return Err(Refusal::BadSince);
        }
        Ok(Self {
            token: raw.token.filter(|t| !t.is_empty()),
            since,
            epoch,
        })
    }

    /// The query string for these parameters.
    pub fn to_query(&self) -> String {
        let mut pairs = Vec::new();
        if let Some(token) = &self.token {
            pairs.push(("token", token.clone()));
        }
        if let Some(since) = self.since {
            pairs.push(("since", since.to_string()));
        }
        if let Some(epoch) = &self.epoch {
            pairs.push(("epoch", epoch.clone()));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// Why a handshake was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    #[error("the query string is not valid: use ?token=<JWT>[&since=<id>&epoch=<epoch>]")]
    BadQuery,
    #[error("since must be a message id like 1764300000000-0, and epoch letters and digits")]
    BadSince,
    #[error("no token: pass ?token=<JWT> from the school's backend")]
    MissingToken,
    #[error("the token has expired: get a new one from the school's backend")]
    Expired,
    #[error("the token's signature does not verify: it was not signed with this server's secret")]
    BadSignature,
    #[error("the token must be signed with HS256")]
    BadAlgorithm,
    #[error(
        "the token is not a valid liveclass JWT (sub, class, role, exp; ids of A-Z a-z 0-9 _ . : @ -, class <namespace>/<name>)"
    )]
    Malformed,
    #[error("the token's audience (aud) is not this server's")]
    BadAudience,
    #[error("the token's issuer (iss) is not the one this server trusts")]
    BadIssuer,
    #[error("the token lives longer than this server allows: mint shorter-lived tokens")]
    LifetimeTooLong,
    #[error(
        "this endpoint is a WebSocket: send a GET with Connection: upgrade, Upgrade: websocket"
    )]
    NotWebSocket,
    #[error("the browser origin is not allowed to connect")]
    Origin,
    #[error("the token is for another class than this server's")]
    WrongClass,
    #[error("the school disconnected this user from the class until the token expires")]
    Kicked,
    #[error("too many connection attempts for this user: wait a few seconds")]
    TooManyForUser,
    #[error("too many connection attempts from this address: wait a few seconds")]
    TooManyFromAddress,
    #[error("this server is not taking clients right now: try another")]
    NotReady,
    #[error("this server is full: try another")]
    Full,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadQuery | Refusal::BadSince | Refusal::NotWebSocket => 400,
            Refusal::MissingToken
            | Refusal::Expired
            | Refusal::BadSignature
            | Refusal::BadAlgorithm
            | Refusal::Malformed
            | Refusal::BadAudience
            | Refusal::BadIssuer
            | Refusal::LifetimeTooLong => 401,
            Refusal::Origin | Refusal::WrongClass | Refusal::Kicked => 403,
            Refusal::TooManyForUser | Refusal::TooManyFromAddress => 429,
            Refusal::NotReady | Refusal::Full => 503,
        }
    }

    /// The `error` field of the answer's body, also a metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadQuery => "bad_query",
            Refusal::BadSince => "bad_since",
            Refusal::MissingToken => "missing_token",
            Refusal::Expired => "expired",
            Refusal::BadSignature => "bad_signature",
            Refusal::BadAlgorithm => "bad_algorithm",
            Refusal::Malformed => "malformed",
            Refusal::BadAudience => "bad_audience",
            Refusal::BadIssuer => "bad_issuer",
            Refusal::LifetimeTooLong => "lifetime_too_long",
            Refusal::NotWebSocket => "not_websocket",
            Refusal::Origin => "origin",
            Refusal::WrongClass => "wrong_class",
            Refusal::Kicked => "kicked",
            Refusal::TooManyForUser => "too_many_for_user",
            Refusal::TooManyFromAddress => "too_many_from_address",
            Refusal::NotReady => "not_ready",
            Refusal::Full => "full",
        }
    }

    /// Whether trying again (later, or on another server) can succeed with the same token.
    pub fn retryable(self) -> bool {
        matches!(self.status(), 429 | 503)
    }

    /// The JSON body of the answer.
    pub fn body(self) -> String {
        serde_json::json!({ "error": self.reason(), "message": self.to_string() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_query() {
        assert_eq!(
            HandshakeParams::parse(Some("token=abc&since=5-1&epoch=e7&x=1")),
            Ok(HandshakeParams {
                token: Some("abc".into()),
                since: Some(MessageId { ms: 5, seq: 1 }),
                epoch: Some("e7".into()),
            })
        );
        assert_eq!(HandshakeParams::parse(None), Ok(HandshakeParams::default()));
        assert_eq!(
            HandshakeParams::parse(Some("token=a&since=yesterday")),
            Err(Refusal::BadSince)
        );
        assert_eq!(
            HandshakeParams::parse(Some("token=a&token=b")),
            Err(Refusal::BadQuery)
        );
        let params = HandshakeParams {
            token: Some("a.b+c".into()),
            since: Some(MessageId { ms: 1, seq: 2 }),
            epoch: Some("e".into()),
        };
        assert_eq!(HandshakeParams::parse(Some(&params.to_query())), Ok(params));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_queries(query in any::<String>()) {
            let _ = HandshakeParams::parse(Some(&query));
        }

        #[test]
        fn since_is_an_id_or_a_bad_since(since in "\\PC{0,48}") {
            let query = serde_urlencoded::to_string([("since", since.as_str())]).unwrap();
            match HandshakeParams::parse(Some(&query)) {
                Ok(params) => prop_assert_eq!(params.since.is_some(), !since.is_empty()),
                Err(refusal) => prop_assert_eq!(refusal, Refusal::BadSince),
            }
        }

        #[test]
        fn every_id_round_trips(ms in any::<u64>(), seq in any::<u64>()) {
            let id = MessageId { ms, seq };
            let query = format!("since={id}");
            prop_assert_eq!(HandshakeParams::parse(Some(&query)).unwrap().since, Some(id));
        }
    }
}
