//! Which Redis node a Replicated class's Sentinels name as its primary, for the status and the
//! failover Event. Asked on each reconcile of a class whose Sentinels run, one Sentinel after
//! another until one answers; a class that has none Ready is not asked.

use std::time::Duration;

/// How long one Sentinel may take to connect and answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The primary (`host`) the first Sentinel of `urls` to answer names for `master`.
pub async fn primary(urls: &[String], master: &str) -> Option<String> {
    for url in urls {
        match tokio::time::timeout(ASK_TIMEOUT, ask(url, master)).await {
            Ok(Ok(Some(host))) => return Some(host),
            Ok(Ok(None)) => tracing::debug!(%url, "the Sentinel names no primary"),
            Ok(Err(error)) => tracing::debug!(%url, %error, "could not ask the Sentinel"),
            Err(_) => tracing::debug!(%url, "the Sentinel did not answer in time"),
        }
    }
    None
}

async fn ask(url: &str, master: &str) -> redis::RedisResult<Option<String>> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let answer: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut connection)
        .await?;
    Ok(answer.map(|(host, _port)| host))
}
