//! Keep the agent's capability fresh while it runs.

use std::sync::Arc;
use std::time::Duration;

use super::relay::CurrentToken;
use super::{Notices, refresh_delay};
use crate::authority::client::{CapabilityRequest, Issued, Target};

/// How long a failed refresh waits before trying again.
const RETRY: Duration = Duration::from_secs(2);

/// Renew the capability before it expires; the relay picks the new token up at once.
pub async fn refresh_forever(
    authority: Target,
    request: CapabilityRequest,
    mut current: Issued,
    token: CurrentToken,
    notices: Arc<dyn Notices>,
) {
    loop {
        tokio::time::sleep(refresh_delay(chrono::Utc::now(), current.expires_at)).await;
        match authority.issue(&request).await {
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
