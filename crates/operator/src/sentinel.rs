//! Which Redis node a Replicated class's Sentinels name as its primary, for the status and the
//! failover Event. Asked on each reconcile of a class whose Sentinels run, one Sentinel after
//! another until one answers; a class that has none Ready is not asked.

use std::time::Duration;

/// How long one Sentinel may take to connect and answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The primary (`host`) the first Sentinel of `urls` to answer names for `master`.
pub async fn primary(urls: &[String], master: &str) -> Option<String> {
    primary_addr(urls, master).await.map(|(host, _)| host)
}

/// The primary (`host`, `port`) the first Sentinel of `urls` to answer names for `master`.
pub async fn primary_addr(urls: &[String], master: &str) -> Option<(String, u16)> {
    for url in urls {
        match tokio::time::timeout(ASK_TIMEOUT, ask(url, master)).await {
            Ok(Ok(Some(addr))) => return Some(addr),
            Ok(Ok(None)) => tracing::debug!(%url, "the Sentinel names no primary"),
            Ok(Err(error)) => tracing::debug!(%url, %error, "could not ask the Sentinel"),
            Err(_) => tracing::debug!(%url, "the Sentinel did not answer in time"),
        }
    }
    None
}

async fn ask(url: &str, master: &str) -> redis::RedisResult<Option<(String, u16)>> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let answer: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut connection)
        .await?;
    Ok(answer)
}

/// The URL to reach an External Redis at: `base` (from its Secret) with the password of its
/// password Secret and the primary its Sentinels named, when there are those.
pub fn external_url(
    base: &str,
    password: Option<&str>,
    primary: Option<(&str, u16)>,
) -> Result<String, String> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    if password.is_none() && primary.is_none() {
        return Ok(base.to_owned());
    }
    let info = base.into_connection_info().map_err(|e| e.to_string())?;
    let (scheme, host, port) = match (info.addr(), primary) {
        (ConnectionAddr::Tcp(..), Some((h, p))) => ("redis", h.to_owned(), p),
        (ConnectionAddr::TcpTls { .. }, Some((h, p))) => ("rediss", h.to_owned(), p),
        (ConnectionAddr::Tcp(h, p), None) => ("redis", h.clone(), *p),
        (ConnectionAddr::TcpTls { host, port, .. }, None) => ("rediss", host.clone(), *port),
        _ => return Err("the Redis URL is not a TCP address".to_owned()),
    };
    let settings = info.redis_settings();
    let user = settings.username().map(encode).unwrap_or_default();
    let password = password
        .map(str::to_owned)
        .or_else(|| settings.password().map(str::to_owned));
    let auth = match (user.is_empty(), password) {
        (_, Some(p)) => format!("{user}:{}@", encode(&p)),
        (false, None) => format!("{user}@"),
        (true, None) => String::new(),
    };
    Ok(format!("{scheme}://{auth}{host}:{port}/{}", settings.db()))
}

/// Percent-encodes all but the unreserved characters of RFC 3986.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::external_url;

    #[test]
    fn an_external_url_takes_the_password_and_the_primary_and_keeps_the_rest() {
        let base = "redis://school:old@redis.example:6379/2";
        assert_eq!(external_url(base, None, None).unwrap(), base);
        assert_eq!(
            external_url(base, Some("n/w p@ss"), Some(("10.0.0.7", 6380))).unwrap(),
            "redis://school:n%2Fw%20p%40ss@10.0.0.7:6380/2"
        );
        // A password without a user name, and a URL without a db.
        assert_eq!(
            external_url("redis://redis.example:6379", Some("pw"), None).unwrap(),
            "redis://:pw@redis.example:6379/0"
        );
        // What redis-rs reads back is what was meant.
        use redis::IntoConnectionInfo;
        let info = external_url(base, Some("n/w p@ss"), None)
            .unwrap()
            .into_connection_info()
            .unwrap();
        assert_eq!(info.redis_settings().password(), Some("n/w p@ss"));
        assert_eq!(info.redis_settings().username(), Some("school"));
    }
}
