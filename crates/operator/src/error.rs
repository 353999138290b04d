//! The operator's errors; each variant maps to a metric label so errors can be counted by reason.

/// What can fail in a reconcile (an invalid spec is not an error: it is reported in status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("the LiveClass has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A short, stable label for the `reason` of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api_refused",
            Error::Kube(_) => "api_unreachable",
            Error::Serialize { .. } => "serialize",
            Error::MissingField(_) => "missing_field",
        }
    }
}
