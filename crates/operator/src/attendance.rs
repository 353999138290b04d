//! How many students a class has connected, and on which pod, as the socket servers report it
//! in the class's Redis: `HLEN lc:{<class>}:where` (users connected) and
//! `HGETALL lc:{<class>}:pods` (open connections per pod, the pods' heartbeats), where `<class>`
//! is `<namespace>/<name>`.
//!
//! Read at most once per `--attendance-interval` per class, through a connection that is kept
//! between reads and dropped only when it fails. Classes on one Redis (an External Redis many
//! classes share, or `--redis-override`) share one multiplexed connection: each costs ~18 KiB
//! of buffers, which for 1,000 classes was a quarter of the operator's heap. A failed read never fails the
//! reconcile and never erases what was known: the view keeps the last good reading next to the
//! error, and the planner holds capacity on it. The URL of an External Redis comes from the
//! Secret the spec names, fetched when a connection is opened (not on every read), and only
//! where the chart allows the operator to read Secrets.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use liveclass_api::types::SecretKeyRef;
use liveclass_protocol::bus::{pods_key, where_key};
use redis::aio::MultiplexedConnection;

use crate::metrics::Metrics;

/// One successful read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reading {
    /// Users connected to the class.
    pub connected: u64,
    /// Open connections of the class per pod name.
    pub per_pod: BTreeMap<String, u64>,
}

/// What is known of a class's attendance: the last good reading, and why the latest attempt
/// failed if it did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttendanceView {
    pub last: Option<Reading>,
    pub error: Option<AttendanceError>,
}

/// Why attendance could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttendanceError {
    #[error(
        "the class's External Redis is reached through a Secret, and this operator may not read \
         Secrets (chart value rbac.readExternalRedisSecrets)"
    )]
    SecretsNotPermitted,
    #[error("reading Secret {name}: {message}")]
    Secret { name: String, message: String },
    #[error("Secret {name} has no key {key}")]
    MissingKey { name: String, key: String },
    #[error("connecting to the class's Redis: {0}")]
    Connect(String),
    #[error("reading from the class's Redis: {0}")]
    Query(String),
    #[error("the class's Redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl AttendanceError {
    /// A CamelCase reason for the `AttendanceObserved` condition and the errors metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AttendanceError::SecretsNotPermitted => "SecretNotReadable",
            AttendanceError::Secret { .. } => "SecretNotReadable",
            AttendanceError::MissingKey { .. } => "SecretKeyMissing",
            AttendanceError::Connect(_) => "RedisUnreachable",
            AttendanceError::Query(_) => "RedisError",
            AttendanceError::Timeout(_) => "RedisTimeout",
        }
    }
}

/// Where a class's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisSource {
    /// A Redis the operator runs, at this URL.
    Operated(String),
    /// An External Redis whose URL is in this Secret of the class's namespace, with the
    /// password of another and the Sentinels that name its primary, when the spec gives them.
    External {
        namespace: String,
        secret: SecretKeyRef,
        password: Option<SecretKeyRef>,
        sentinels: Vec<String>,
        master: String,
    },
}

/// How attendance is read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Read every class from this Redis instead (development and tests).
    pub override_url: Option<String>,
    /// How long one read (Secret, connection and query) may take.
    pub timeout: Duration,
    /// The least time between two reads of one class.
    pub interval: Duration,
    /// Whether the operator may read the Secret of an External Redis.
    pub read_secrets: bool,
}

#[derive(Default)]
struct ClassState {
    url: Option<String>,
    view: AttendanceView,
    attempted: Option<Instant>,
}

/// The kept connection to one Redis URL; locked while it is being opened, so the classes on
/// one Redis open one connection between them, and a slow Redis delays only its own classes.
type Slot = Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>;

/// The attendance of every class this operator reads, with one kept connection per Redis.
pub struct Attendance {
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    classes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ClassState>>>>,
    /// Connections by URL, and which URL each class last read from (to close a connection
    /// once no class uses it).
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    by_url: HashMap<String, Slot>,
    url_of: HashMap<String, String>,
}

impl std::fmt::Debug for Attendance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attendance")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Attendance {
    pub fn new(client: Client, metrics: Arc<Metrics>, settings: Settings) -> Self {
        Self {
            client,
            metrics,
            settings,
            classes: Mutex::default(),
            connections: Mutex::default(),
        }
    }

    /// The slot of `url`'s connection, noting that `class_id` reads from it.
    fn slot(&self, class_id: &str, url: &str) -> Slot {
        let Ok(mut connections) = self.connections.lock() else {
            return Slot::default();
        };
        if connections.url_of.get(class_id).map(String::as_str) != Some(url) {
            connections
                .url_of
                .insert(class_id.to_owned(), url.to_owned());
        }
        connections
            .by_url
            .entry(url.to_owned())
            .or_default()
            .clone()
    }

    fn state(&self, class_id: &str) -> Arc<tokio::sync::Mutex<ClassState>> {
        let Ok(mut classes) = self.classes.lock() else {
            return Arc::default();
        };
        classes.entry(class_id.to_owned()).or_default().clone()
    }

    /// What is known now, without reading.
    pub async fn cached(&self, class_id: &str) -> AttendanceView {
        self.state(class_id).lock().await.view.clone()
    }

    /// Reads the class's attendance if the last attempt is at least an interval old, and
    /// returns what is known then.
    pub async fn observe(&self, class_id: &str, source: &RedisSource) -> AttendanceView {
        let state = self.state(class_id);
        let mut state = state.lock().await;
        if state
            .attempted
            .is_some_and(|at| at.elapsed() < self.settings.interval)
        {
            return state.view.clone();
        }
        state.attempted = Some(Instant::now());
        let result = tokio::time::timeout(
            self.settings.timeout,
            self.read(class_id, &mut state, source),
        )
        .await
        .unwrap_or(Err(AttendanceError::Timeout(self.settings.timeout)));
        match result {
            Ok(reading) => {
                state.view = AttendanceView {
                    last: Some(reading),
                    error: None,
                };
            }
            Err(error) => {
                tracing::debug!(class = class_id, %error, "reading attendance failed; keeping the last reading");
                self.metrics.attendance_failed(error.reason());
                // A connection that failed, or a URL that may have moved, is not reused.
                if let Some(url) = &state.url {
                    self.slot(class_id, url).lock().await.take();
                }
                if !matches!(source, RedisSource::Operated(_)) {
                    state.url = None;
                }
                state.view.error = Some(error);
            }
        }
        state.view.clone()
    }

    /// Forgets a deleted class (and closes its connection if no other class uses it).
    pub fn forget(&self, class_id: &str) {
        if let Ok(mut classes) = self.classes.lock() {
            classes.remove(class_id);
        }
        if let Ok(mut connections) = self.connections.lock()
            && let Some(url) = connections.url_of.remove(class_id)
            && !connections.url_of.values().any(|u| *u == url)
        {
            connections.by_url.remove(&url);
        }
    }

    async fn read(
        &self,
        class_id: &str,
        state: &mut ClassState,
        source: &RedisSource,
    ) -> Result<Reading, AttendanceError> {
        let url = match state.url.clone() {
            Some(url) => url,
            None => self.url(source).await?,
        };
        state.url = Some(url.clone());
        let mut connection = self.connection(class_id, &url).await?;
        let (connected, pods): (u64, HashMap<String, String>) = redis::pipe()
            .cmd("HLEN")
            .arg(where_key(class_id))
            .cmd("HGETALL")
            .arg(pods_key(class_id))
            .query_async(&mut connection)
            .await
            .map_err(|e| AttendanceError::Query(e.to_string()))?;
        // A value that is not a count is the socket servers' bug, not a reason to lose the rest.
        let per_pod = pods
            .into_iter()
            .filter_map(|(pod, count)| Some((pod, count.trim().parse().ok()?)))
            .collect();
        Ok(Reading { connected, per_pod })
    }

    /// The connection to `url` that `class_id` uses, opened if there is none.
    async fn connection(
        &self,
        class_id: &str,
        url: &str,
    ) -> Result<MultiplexedConnection, AttendanceError> {
        let slot = self.slot(class_id, url);
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.clone() {
            return Ok(connection);
        }
        let client =
            redis::Client::open(url).map_err(|e| AttendanceError::Connect(e.to_string()))?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| AttendanceError::Connect(e.to_string()))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Publishes `message` on `channel` of every Redis this operator reads attendance from,
    /// once each, through the connections it reads with. Per Redis: a class that uses it, and
    /// how many subscribers received the message (or why it could not be published).
    pub async fn publish_everywhere(
        &self,
        channel: &str,
        message: &str,
    ) -> Vec<(String, Result<u64, AttendanceError>)> {
        let redises: Vec<(String, String)> = self
            .connections
            .lock()
            .map(|c| {
                let mut seen = std::collections::HashSet::new();
                c.url_of
                    .iter()
                    .filter(|(_, url)| seen.insert((*url).clone()))
                    .map(|(class, url)| (class.clone(), url.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let publishes = redises.into_iter().map(|(class, url)| async move {
            let result = self.publish(&class, &url, channel, message).await;
            (class, result)
        });
        futures_util::future::join_all(publishes).await
    }

    async fn publish(
        &self,
        class_id: &str,
        url: &str,
        channel: &str,
        message: &str,
    ) -> Result<u64, AttendanceError> {
        let publish = async {
            let mut connection = self.connection(class_id, url).await?;
            let mut command = redis::cmd("PUBLISH");
            command.arg(channel).arg(message);
            command
                .query_async(&mut connection)
                .await
                .map_err(|e| AttendanceError::Query(e.to_string()))
        };
        tokio::time::timeout(self.settings.timeout, publish)
            .await
            .unwrap_or(Err(AttendanceError::Timeout(self.settings.timeout)))
    }

    async fn url(&self, source: &RedisSource) -> Result<String, AttendanceError> {
        if let Some(url) = &self.settings.override_url {
            return Ok(url.clone());
        }
        match source {
            RedisSource::Operated(url) => Ok(url.clone()),
            RedisSource::External {
                namespace,
                secret,
                password,
                sentinels,
                master,
            } => {
                if !self.settings.read_secrets {
                    return Err(AttendanceError::SecretsNotPermitted);
                }
                let base = self.secret_text(namespace, secret).await?;
                let password = match password {
                    Some(p) => Some(self.secret_text(namespace, p).await?),
                    None => None,
                };
                let primary = if sentinels.is_empty() {
                    None
                } else {
                    let urls: Vec<String> =
                        sentinels.iter().map(|s| format!("redis://{s}")).collect();
                    Some(
                        crate::sentinel::primary_addr(&urls, master)
                            .await
                            .ok_or_else(|| {
                                AttendanceError::Connect(format!(
                                    "no Sentinel of {} named a primary for {master}",
                                    sentinels.join(", ")
                                ))
                            })?,
                    )
                };
                crate::sentinel::external_url(
                    &base,
                    password.as_deref(),
                    primary.as_ref().map(|(h, p)| (h.as_str(), *p)),
                )
                .map_err(AttendanceError::Connect)
            }
        }
    }

    /// The text of one key of a Secret in `namespace`, trimmed.
    async fn secret_text(
        &self,
        namespace: &str,
        secret: &SecretKeyRef,
    ) -> Result<String, AttendanceError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        self.metrics.requested(crate::metrics::Verb::Get);
        let found = secrets
            .get(&secret.name)
            .await
            .map_err(|e| AttendanceError::Secret {
                name: secret.name.clone(),
                message: e.to_string(),
            })?;
        let missing = || AttendanceError::MissingKey {
            name: secret.name.clone(),
            key: secret.key.clone(),
        };
        let bytes = found
            .data
            .and_then(|mut d| d.remove(&secret.key))
            .ok_or_else(missing)?;
        String::from_utf8(bytes.0)
            .map(|s| s.trim().to_owned())
            .map_err(|_| missing())
    }
}
