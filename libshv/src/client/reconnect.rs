//! A client that stays connected: reconnecting with back-off until the first login is
//! refused.

use std::sync::Arc;
use std::time::Duration;

use super::{Client, ClientConfig, ClientError, RequestHandler};

/// Keeps a device (or any client) connected: connect, serve until the link drops, back
/// off ([`crate::backoff::Backoff`]: about every 0.5 s for a minute after a link that
/// held, else 1 s doubling up to `max_backoff`; jittered), reconnect. `on_connect` runs after every successful login (e.g. to re-subscribe).
/// Returns only when the very first login is refused: a wrong password does not fix
/// itself, while a broker that is down or restarting does.
pub async fn serve_reconnecting(
    config: &ClientConfig,
    handler: Option<Arc<dyn RequestHandler>>,
    max_backoff: Duration,
    mut on_connect: impl FnMut(&Client),
) -> ClientError {
    let mut backoff = crate::backoff::Backoff::new(max_backoff);
    let mut ever_connected = false;
    loop {
        match Client::connect(config, handler.clone()).await {
            // Signals are dropped unread: a kept, undrained receiver would stall reads.
            Ok((client, _)) => {
                ever_connected = true;
                tracing::info!("connected to {}", config.url.transport());
                on_connect(&client);
                let since = tokio::time::Instant::now();
                client.closed().await;
                tracing::warn!("connection to {} lost", config.url.transport());
                backoff.connected_for(since.elapsed());
            }
            Err(e @ ClientError::Login(_)) if !ever_connected => return e,
            Err(e) => tracing::warn!("{e}; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
