//! The Authority's two policy bundles in force — runtime policies (streamed to sidecars) and
//! issuance policies (consulted by `IssueCapability`). With the files store they are hot
//! reloaded from the policy directories: a change that loads replaces the bundle and wakes every
//! watcher; one that does not is logged with file:line:column and the previous bundle stays in
//! force. With the etcd store the replica installs what was published ([`PolicyStores::install`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::authority::policy::{PolicyBundle, load_dir};
use crate::error::Hinted;
use crate::lifecycle::health::HealthReporter;
use crate::metrics::authority::{BundleKind, metrics};

pub struct PolicyStores {
    policies_dir: PathBuf,
    issuance_dir: PathBuf,
    runtime: watch::Sender<Arc<PolicyBundle>>,
    issuance: watch::Sender<Arc<PolicyBundle>>,
    /// Where a failed reload (an older bundle in force) is published for `status` / `doctor`.
    health: OnceLock<HealthReporter>,
}

impl PolicyStores {
    /// Load both directories; any error is a start-up error.
    pub fn load(policies_dir: &Path, issuance_dir: &Path) -> Result<Self, Hinted> {
        let runtime = load_dir(policies_dir, policies_dir)?;
        let issuance = load_dir(issuance_dir, policies_dir)?;
        Ok(Self {
            policies_dir: policies_dir.to_path_buf(),
            issuance_dir: issuance_dir.to_path_buf(),
            runtime: watch::Sender::new(runtime),
            issuance: watch::Sender::new(issuance),
            health: OnceLock::new(),
        })
    }

    /// Bundles that came from elsewhere (the etcd store); the directories are only named.
    pub fn from_bundles(
        runtime: Arc<PolicyBundle>,
        issuance: Arc<PolicyBundle>,
        policies_dir: &Path,
        issuance_dir: &Path,
    ) -> Self {
        Self {
            policies_dir: policies_dir.to_path_buf(),
            issuance_dir: issuance_dir.to_path_buf(),
            runtime: watch::Sender::new(runtime),
            issuance: watch::Sender::new(issuance),
            health: OnceLock::new(),
        }
    }

    /// Put a published pair in force (a newer store revision); watchers get the runtime bundle.
    pub fn install(&self, runtime: Arc<PolicyBundle>, issuance: Arc<PolicyBundle>) {
        let previous = self.runtime.borrow().revision;
        if runtime.revision <= previous && previous != 0 {
            return;
        }
        tracing::info!(
            revision = runtime.revision,
            version = %runtime.version,
            issuance_version = %issuance.version,
            policies = runtime.len(),
            "published policy bundle {} in force (revision {})",
            short(&runtime.version),
            runtime.revision
        );
        self.issuance.send_replace(issuance);
        self.runtime.send_replace(runtime);
    }

    pub fn policies_dir(&self) -> &Path {
        &self.policies_dir
    }

    pub fn issuance_dir(&self) -> &Path {
        &self.issuance_dir
    }

    pub fn runtime(&self) -> Arc<PolicyBundle> {
        self.runtime.borrow().clone()
    }

    pub fn issuance(&self) -> Arc<PolicyBundle> {
        self.issuance.borrow().clone()
    }

    pub fn subscribe_runtime(&self) -> watch::Receiver<Arc<PolicyBundle>> {
        self.runtime.subscribe()
    }

    /// Publish reload failures (degraded) and recoveries through `reporter` from now on.
    pub fn report_health_to(&self, reporter: HealthReporter) {
        let _ = self.health.set(reporter);
    }

    /// Re-read both directories (the schema lives in the runtime one, so a schema edit affects
    /// both). Unchanged content is a no-op; failures keep the previous bundle.
    pub fn reload(&self) {
        let health = self.health.get();
        reload_one(
            "runtime",
            &self.runtime,
            load_dir(&self.policies_dir, &self.policies_dir),
            health,
        );
        reload_one(
            "issuance",
            &self.issuance,
            load_dir(&self.issuance_dir, &self.policies_dir),
            health,
        );
    }
}

fn reload_one(
    kind: &str,
    store: &watch::Sender<Arc<PolicyBundle>>,
    loaded: Result<Arc<PolicyBundle>, Hinted>,
    health: Option<&HealthReporter>,
) {
    let previous = store.borrow().version.clone();
    let what = format!("{kind} policies");
    // Back from a failed reload: say so even when the content is the old bundle again.
    let recovered = loaded.is_ok() && health.is_some_and(|h| h.recover(&what));
    match loaded {
        Ok(bundle) if bundle.version == previous => {
            if recovered {
                tracing::info!(kind, version = %bundle.version, "{kind} policy bundle reloaded; healthy again");
            }
        }
        Ok(bundle) => {
            metrics().bundle_reload(BundleKind::from_name(kind), true);
            tracing::info!(
                kind,
                version = %bundle.version,
                previous = %previous,
                policies = bundle.len(),
                "{kind} policy bundle reloaded"
            );
            store.send_replace(bundle);
        }
        Err(err) => {
            metrics().bundle_reload(BundleKind::from_name(kind), false);
            if let Some(health) = health {
                health.degrade(
                    &what,
                    &format!("{} (bundle {} kept)", err.message(), short(&previous)),
                );
            }
            tracing::error!(
                kind,
                version = %previous,
                hint = err.hint_text().unwrap_or_default(),
                "{kind} policy reload failed, keeping bundle {}: {}",
                short(&previous),
                err.message()
            );
        }
    }
}

/// The first 12 hex digits of a version, for messages.
pub fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}
