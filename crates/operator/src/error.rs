//! The operator's errors; each variant maps to a metric label and a condition reason, so
//! errors can be counted by reason and shown on the LiveClass that hit them.

/// What can fail in a reconcile (an invalid spec is not an error: it is reported in status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("the LiveClass has no {0}")]
    MissingField(&'static str),
    #[error("the operating system gave no random bytes for a token key: {0}")]
    Randomness(String),
}

impl Error {
    pub(crate) fn kube(
        action: &'static str,
        kind: &'static str,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let name = name.into();
        move |source| Error::Kube {
            action,
            kind,
            name,
            source,
        }
    }

    /// A short, stable label for the `reason` of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => "conflict",
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 422 => "invalid_object",
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => "forbidden",
            Error::Kube {
                source: kube::Error::Api(_),
                ..
            } => "api_refused",
            Error::Kube { .. } => "api_unreachable",
            Error::MissingField(_) => "missing_field",
            Error::Randomness(_) => "randomness",
        }
    }

    /// The same, as a CamelCase reason for the `Applied` condition and its Event.
    pub fn reason(&self) -> &'static str {
        match self.metric_label() {
            "conflict" => "Conflict",
            "invalid_object" => "InvalidObject",
            "forbidden" => "Forbidden",
            "api_refused" => "ApiRefused",
            "api_unreachable" => "ApiUnreachable",
            "randomness" => "NoRandomness",
            _ => "MissingField",
        }
    }
}
