//! Keep the agent's capability fresh while it runs.

use std::sync::Arc;
use std::time::Duration;

use super::relay::CurrentToken;
use super::{CapabilityRequest, Issued, Notices, refresh_delay};

/// How long a failed refresh waits before trying again.
const RETRY: Duration = Duration::from_secs(2);

/// Renew the capability before it expires; the relay picks the new token up at once.
pub async fn refresh_forever(
    request: CapabilityRequest,
    mut current: Issued,
    token: CurrentToken,
    notices: Arc<dyn Notices>,
) {
    loop {
        tokio::time::sleep(refresh_delay(chrono::Utc::now(), current.expires_at)).await;
        match request.issue().await {
            Ok(next) => {
                token.replace(next.token.clone());
                current = next;
            }
            Err(err) => {
                notices.warn(&format!(
                    "token refresh failed (retrying): {}",
                    err.message()
                ));
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
