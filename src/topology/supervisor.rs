//! [`Supervisor`]: the daemon's set of running pipelines, one per pipeline file, kept in
//! step with the pipelines directory while the daemon runs (hot reload).
//!
//! [`Supervisor::reconcile`] reads the directory again and compares each file's content
//! digest with the version running:
//! - a file whose content did not change: its pipeline keeps running, untouched;
//! - a changed file that is valid: only that pipeline restarts — it stops intake, drains
//!   (within the grace period) and the new version starts. The old one is stopped *before*
//!   the new one starts so that two versions never read the same input or port;
//! - a changed file that is invalid: reported (log line and `/pipelines`) and the running
//!   version kept; it is not read again until the file changes once more;
//! - a removed file: its pipeline stops (drains);
//! - a new valid file: its pipeline starts;
//! - a valid file with `[pipeline] enabled = false`: its pipeline does not run (a running
//!   version stops) and `/pipelines` lists it as disabled.
//!
//! A pipeline whose new version fails to build is restarted from the version that ran.
//! Each pipeline runs under its own task, which notices a pipeline stopping by itself (a
//! fatal component) so that `/readyz` can say so.
//!
//! **Restart after a fatal stop.** A pipeline stopped by a fatal error (a missing OSCAR
//! table, a folder that is not a directory, …) is started again by itself
//! ([`Supervisor::restart_due`]) after a backoff ([`RestartBackoff`]: 5 s, doubling at each
//! stop that follows, up to 5 min). The stop (component, PHI-free error, time) and the next
//! restart (time, attempt) show in `/pipelines`. A version that ran for at least the maximum
//! backoff before it stopped starts the count again from the first delay.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::config::{load_file, pipeline_files, PipelineConfig};
use crate::store::{redact_url, Store};

use super::status::{PipelineStatus, Restart};
use super::{build, BuildOptions, RunningPipeline};

/// The running pipelines by name, and the files whose last edit was rejected; shared with
/// the HTTP endpoint.
#[derive(Default)]
pub struct Registry {
    pipelines: RwLock<BTreeMap<String, Arc<PipelineStatus>>>,
    rejected: RwLock<BTreeMap<PathBuf, String>>,
    /// Valid files with `enabled = false`, with their pipeline's name.
    disabled: RwLock<BTreeMap<PathBuf, String>>,
    stores: RwLock<Vec<Store>>,
    /// Each running pipeline's database (a tap of its bodies is audited there).
    pipeline_stores: RwLock<BTreeMap<String, Store>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn pipelines(&self) -> Vec<Arc<PipelineStatus>> {
        self.pipelines
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
    pub fn get(&self, name: &str) -> Option<Arc<PipelineStatus>> {
        self.pipelines
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned())
    }
    /// Files whose latest content was not taken, with the first problem found.
    pub fn rejected(&self) -> Vec<(PathBuf, String)> {
        self.rejected
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
    /// Files whose pipeline is switched off (`enabled = false`), with its name.
    pub fn disabled(&self) -> Vec<(PathBuf, String)> {
        self.disabled
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
    /// Every database the daemon has opened (`/readyz` pings them).
    pub fn stores(&self) -> Vec<Store> {
        self.stores.read().map(|v| v.clone()).unwrap_or_default()
    }
    /// The database of pipeline `name`, while it runs.
    pub fn store_of(&self, name: &str) -> Option<Store> {
        self.pipeline_stores
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned())
    }
    fn insert(&self, s: Arc<PipelineStatus>) {
        if let Ok(mut m) = self.pipelines.write() {
            m.insert(s.name.clone(), s);
        }
    }
    fn remove(&self, name: &str) {
        if let Ok(mut m) = self.pipelines.write() {
            m.remove(name);
        }
    }
    fn set_disabled(&self, file: &Path, name: Option<String>) {
        if let Ok(mut m) = self.disabled.write() {
            match name {
                Some(n) => m.insert(file.to_path_buf(), n),
                None => m.remove(file),
            };
        }
    }
    fn set_rejected(&self, file: &Path, why: Option<String>) {
        if let Ok(mut m) = self.rejected.write() {
            match why {
                Some(w) => m.insert(file.to_path_buf(), w),
                None => m.remove(file),
            };
        }
    }
}

/// One pipeline under supervision.
struct Supervised {
    cfg: PipelineConfig,
    status: Arc<PipelineStatus>,
    stop: oneshot::Sender<tokio::time::Instant>,
    task: JoinHandle<bool>,
    /// Automatic restarts since it last ran for long enough (see [`RestartBackoff`]).
    attempts: u32,
    /// When it is started again after a fatal stop (set once the stop is seen).
    next_restart: Option<tokio::time::Instant>,
}

impl Supervised {
    /// A pipeline whose tasks have all ended and whose restart did not start: kept under
    /// its file, with its status (the stop), to be tried again.
    fn ended(cfg: PipelineConfig, status: Arc<PipelineStatus>, attempts: u32) -> Self {
        Supervised {
            cfg,
            status,
            stop: oneshot::channel().0,
            task: tokio::spawn(async { true }),
            attempts,
            next_restart: None,
        }
    }
}

/// The delay before a pipeline stopped by a fatal error is started again: `initial`,
/// doubled at each stop that follows, at most `max`. A version that ran for `max` or longer
/// before it stopped starts again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl RestartBackoff {
    /// The delay before the restart that follows `attempts` earlier ones.
    pub fn delay(&self, attempts: u32) -> Duration {
        self.initial
            .saturating_mul(2u32.saturating_pow(attempts.min(31)))
            .min(self.max)
    }
}

/// Runs and re-runs the pipelines of one directory. See the module docs.
pub struct Supervisor {
    dir: PathBuf,
    default_url: String,
    grace: Duration,
    options: BuildOptions,
    pub registry: Arc<Registry>,
    stores: HashMap<String, Store>,
    running: BTreeMap<PathBuf, Supervised>,
    /// Digest of each file's content that was last looked at (taken or rejected).
    seen: HashMap<PathBuf, String>,
    backoff: RestartBackoff,
    /// Relative paths in pipeline files resolve against it (the daemon's state directory).
    base: Option<PathBuf>,
    /// Woken when a pipeline stops by itself.
    stopped: Arc<Notify>,
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Supervisor {
    pub fn new(dir: PathBuf, default_url: String, grace: Duration, options: BuildOptions) -> Self {
        Supervisor {
            dir,
            default_url,
            grace,
            options,
            registry: Registry::new(),
            stores: HashMap::new(),
            running: BTreeMap::new(),
            seen: HashMap::new(),
            backoff: RestartBackoff::default(),
            base: None,
            stopped: Arc::new(Notify::new()),
        }
    }

    /// Resolves relative paths in pipeline files against `dir` (the daemon's state
    /// directory) instead of the working directory.
    pub fn with_paths_relative_to(mut self, dir: PathBuf) -> Self {
        self.base = Some(dir);
        self
    }

    /// Sets the backoff of automatic restarts after a fatal stop.
    pub fn with_restart_backoff(mut self, backoff: RestartBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Resolves when [`Supervisor::restart_due`] has something to do: a pipeline stopped by
    /// itself, or a scheduled restart is due.
    pub async fn restart_wanted(&self) {
        let next = self.running.values().filter_map(|s| s.next_restart).min();
        match next {
            Some(t) => tokio::select! {
                _ = tokio::time::sleep_until(t) => {}
                _ = self.stopped.notified() => {}
            },
            None => self.stopped.notified().await,
        }
    }

    /// Schedules the restart of each pipeline newly stopped by a fatal error (logged, and
    /// shown in `/pipelines`), and starts again each one whose time has come. A pipeline
    /// that ended without a fatal error is left to a reload. Returns how many started.
    pub async fn restart_due(&mut self) -> usize {
        let now = tokio::time::Instant::now();
        let files: Vec<PathBuf> = self.running.keys().cloned().collect();
        let mut restarted = 0;
        for f in files {
            let Some(s) = self.running.get_mut(&f) else {
                continue;
            };
            if s.status.is_running() {
                continue;
            }
            let Some(stop) = s.status.stop() else {
                continue;
            };
            match s.next_restart {
                None => {
                    let ran = stop.at.duration_since(s.status.started).unwrap_or_default();
                    if ran >= self.backoff.max {
                        s.attempts = 0;
                    }
                    schedule(s, self.backoff, now);
                    let next = s.status.restart().map(|r| r.attempt).unwrap_or(0);
                    tracing::warn!(pipeline = %s.cfg.name, component = %stop.component, error = %stop.error, attempt = next, restart_in_seconds = self.backoff.delay(s.attempts - 1).as_secs(), "Pipeline stopped on a fatal error; it will be started again by itself (see /pipelines).");
                }
                Some(t) if t <= now => {
                    let Some(old) = self.running.remove(&f) else {
                        continue;
                    };
                    let paused = old.status.control.is_paused();
                    let attempts = old.attempts;
                    let (cfg, old_status) = (old.cfg.clone(), old.status.clone());
                    tracing::info!(pipeline = %cfg.name, attempt = attempts, paused, "Starting the pipeline again after its fatal stop.");
                    // Every task of the old version has ended; wait for its supervisor.
                    self.stop_until(old, now).await;
                    match self.start(&cfg, paused).await {
                        Ok(mut new) => {
                            new.attempts = attempts;
                            new.status.set_restarted_after(stop, attempts);
                            self.running.insert(f, new);
                            restarted += 1;
                        }
                        Err(e) => {
                            let mut kept = Supervised::ended(cfg, old_status, attempts);
                            schedule(&mut kept, self.backoff, tokio::time::Instant::now());
                            tracing::error!(pipeline = %kept.cfg.name, error = %e, attempt = kept.attempts, restart_in_seconds = self.backoff.delay(kept.attempts - 1).as_secs(), "The pipeline did not start again; trying later.");
                            self.registry.insert(kept.status.clone());
                            self.running.insert(f, kept);
                        }
                    }
                }
                Some(_) => {}
            }
        }
        restarted
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// The databases opened so far (the daemon's `/readyz` pings them).
    pub fn stores(&self) -> Vec<Store> {
        self.stores.values().cloned().collect()
    }

    /// Makes the next [`Self::reconcile`] start pipeline `name` again from its file (the
    /// console's "restart"). False when no such pipeline runs.
    pub fn restart_on_reconcile(&mut self, name: &str) -> bool {
        let Some(file) = self
            .running
            .iter()
            .find(|(_, s)| s.cfg.name == name)
            .map(|(f, _)| f.clone())
        else {
            return false;
        };
        self.seen.remove(&file);
        true
    }

    /// The store for `url`, opened once.
    pub async fn store(&mut self, url: &str) -> Result<Store, String> {
        if let Some(s) = self.stores.get(url) {
            return Ok(s.clone());
        }
        let s = Store::open(url).await.map_err(|e| e.to_string())?;
        tracing::info!(database = %redact_url(url), "Database open.");
        self.stores.insert(url.to_string(), s.clone());
        if let Ok(mut v) = self.registry.stores.write() {
            v.push(s.clone());
        }
        Ok(s)
    }

    /// Brings the running pipelines in line with the directory. Returns the number of
    /// pipelines started or restarted. Errors only for a problem that stops the daemon at
    /// its first start (a database that cannot be opened); later ones are logged.
    pub async fn reconcile(&mut self) -> Result<usize, String> {
        let files = match pipeline_files(std::slice::from_ref(&self.dir)) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "Cannot list the pipelines directory; running pipelines kept.");
                return Ok(0);
            }
        };
        // Removed files: their pipelines stop.
        let gone: Vec<PathBuf> = self
            .running
            .keys()
            .filter(|p| !files.contains(p))
            .cloned()
            .collect();
        for f in gone {
            if let Some(s) = self.running.remove(&f) {
                tracing::info!(pipeline = %s.cfg.name, file = %f.display(), "Pipeline file removed; stopping the pipeline.");
                self.stop_one(s).await;
            }
            self.seen.remove(&f);
            self.registry.set_rejected(&f, None);
        }
        for (f, _) in self.registry.disabled() {
            if !files.contains(&f) {
                self.registry.set_disabled(&f, None);
            }
        }
        self.seen.retain(|p, _| files.contains(p));
        for (f, _) in self.registry.rejected() {
            if !files.contains(&f) {
                self.registry.set_rejected(&f, None);
            }
        }
        let mut started = 0;
        for f in files {
            let Ok(bytes) = std::fs::read(&f) else {
                continue; // being replaced; the next event reads it again
            };
            let d = digest(&bytes);
            let stopped = self.running.get(&f).is_some_and(|s| !s.status.is_running());
            if self.seen.get(&f) == Some(&d) && !stopped {
                continue;
            }
            self.seen.insert(f.clone(), d.clone());
            let cfg = match load_file(&f) {
                Ok(mut c) => {
                    if let Some(base) = &self.base {
                        c.resolve_paths(base);
                    }
                    c
                }
                Err(diags) => {
                    for diag in &diags {
                        tracing::error!(problem = %diag, "Invalid pipeline file; the running version (if any) is kept.");
                    }
                    self.registry.set_rejected(
                        &f,
                        diags
                            .first()
                            .map(|d| d.to_string())
                            .or(Some("invalid".into())),
                    );
                    continue;
                }
            };
            if !cfg.settings.enabled {
                self.registry.set_rejected(&f, None);
                if let Some(s) = self.running.remove(&f) {
                    tracing::info!(pipeline = %s.cfg.name, file = %f.display(), "Pipeline switched off in its file (enabled = false); stopping it.");
                    self.stop_one(s).await;
                } else {
                    tracing::info!(pipeline = %cfg.name, file = %f.display(), "Pipeline switched off in its file (enabled = false); not started.");
                }
                self.registry.set_disabled(&f, Some(cfg.name.clone()));
                continue;
            }
            self.registry.set_disabled(&f, None);
            if let Some((other, _)) = self
                .running
                .iter()
                .find(|(p, s)| **p != f && s.cfg.name == cfg.name)
            {
                let why = format!(
                    "pipeline name `{}` is also used by {}",
                    cfg.name,
                    other.display()
                );
                tracing::error!(file = %f.display(), problem = %why, "Pipeline file not taken.");
                self.registry.set_rejected(&f, Some(why));
                continue;
            }
            // Two pipelines on one input would release each other's inputs: the file that
            // comes later is not taken while the other runs.
            let mut with_others: Vec<PipelineConfig> = self
                .running
                .iter()
                .filter(|(p, _)| **p != f)
                .map(|(_, s)| s.cfg.clone())
                .collect();
            with_others.push(cfg.clone());
            if let Some(d) = crate::config::conflicts(&with_others)
                .into_iter()
                .find(|d| d.path == f)
            {
                let why = d.to_string();
                tracing::error!(file = %f.display(), problem = %why, "Pipeline file not taken.");
                self.registry.set_rejected(&f, Some(why));
                continue;
            }
            self.registry.set_rejected(&f, None);
            let previous = self.running.remove(&f);
            // A paused pipeline stays paused across its restart: the operator resumes it.
            let paused = previous
                .as_ref()
                .is_some_and(|s| s.status.control.is_paused());
            let old_cfg = match previous {
                Some(s) => {
                    tracing::info!(pipeline = %s.cfg.name, file = %f.display(), paused, "Restarting the pipeline (its file changed, or it had stopped).");
                    let cfg = s.cfg.clone();
                    self.stop_one(s).await;
                    Some(cfg)
                }
                None => None,
            };
            match self.start(&cfg, paused).await {
                Ok(s) => {
                    self.running.insert(f.clone(), s);
                    started += 1;
                }
                Err(e) if old_cfg.is_none() && self.running.is_empty() && started == 0 => {
                    // First start: a pipeline that cannot run is the operator's to fix.
                    return Err(e);
                }
                Err(e) => {
                    tracing::error!(pipeline = %cfg.name, error = %e, "The new version did not start; the previous version is started again.");
                    self.registry.set_rejected(&f, Some(e));
                    if let Some(old) = old_cfg {
                        if let Ok(s) = self.start(&old, paused).await {
                            self.running.insert(f.clone(), s);
                        }
                    }
                }
            }
        }
        Ok(started)
    }

    async fn start(&mut self, cfg: &PipelineConfig, paused: bool) -> Result<Supervised, String> {
        let url = cfg
            .database_url_override()
            .unwrap_or_else(|| self.default_url.clone());
        let store = self.store(&url).await?;
        let options = BuildOptions {
            start_paused: paused,
            ..self.options.clone()
        };
        let p = build(cfg, &store, options).map_err(|e| e.to_string())?;
        tracing::info!(pipeline = %cfg.name, file = %cfg.path.display(), "Pipeline started.");
        let status = p.status.clone();
        self.registry.insert(status.clone());
        if let Ok(mut m) = self.registry.pipeline_stores.write() {
            m.insert(cfg.name.clone(), store.clone());
        }
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(p, stop_rx, self.stopped.clone()));
        Ok(Supervised {
            cfg: cfg.clone(),
            status,
            stop,
            task,
            attempts: 0,
            next_restart: None,
        })
    }

    /// Stops one pipeline within the grace period; true when it drained in time.
    async fn stop_one(&self, s: Supervised) -> bool {
        let deadline = tokio::time::Instant::now() + self.grace;
        self.stop_until(s, deadline).await
    }

    async fn stop_until(&self, s: Supervised, deadline: tokio::time::Instant) -> bool {
        let _ = s.stop.send(deadline);
        let clean = s.task.await.unwrap_or(false);
        if !clean {
            tracing::warn!(pipeline = %s.cfg.name, "Grace period over; unfinished messages stay for re-delivery.");
        }
        // A newer version under the same name may already be registered; only remove ours.
        if self
            .registry
            .get(&s.cfg.name)
            .is_some_and(|r| Arc::ptr_eq(&r, &s.status))
        {
            self.registry.remove(&s.cfg.name);
        }
        clean
    }

    /// Stops every pipeline: intake first, everywhere, then each drains until `deadline`.
    /// True when all drained in time.
    /// A paused pipeline stops paused: what its sources hold stays with them.
    pub async fn stop_all(&mut self, deadline: tokio::time::Instant) -> bool {
        let all: Vec<Supervised> = std::mem::take(&mut self.running).into_values().collect();
        let (stops, tasks): (Vec<_>, Vec<_>) = all
            .into_iter()
            .map(|s| ((s.stop, deadline), (s.cfg.name, s.task)))
            .unzip();
        for (stop, d) in stops {
            let _ = stop.send(d);
        }
        let mut clean = true;
        for (name, t) in tasks {
            if !t.await.unwrap_or(false) {
                clean = false;
                tracing::warn!(pipeline = %name, "Grace period over; unfinished messages stay for re-delivery.");
            }
        }
        clean
    }
}

/// Schedules the next automatic restart of `s` (one more attempt).
fn schedule(s: &mut Supervised, backoff: RestartBackoff, now: tokio::time::Instant) {
    let delay = backoff.delay(s.attempts);
    s.attempts += 1;
    s.next_restart = Some(now + delay);
    s.status.set_restart(Restart {
        attempt: s.attempts,
        at: SystemTime::now() + delay,
    });
}

/// Owns one running pipeline until it ends by itself or is told to stop by a deadline.
async fn supervise(
    mut p: RunningPipeline,
    mut stop: oneshot::Receiver<tokio::time::Instant>,
    stopped: Arc<Notify>,
) -> bool {
    let deadline = {
        tokio::select! {
            _ = p.wait() => {
                // Ended by itself (a fatal error, or every source ended): the supervisor
                // decides whether to start it again.
                stopped.notify_one();
                // Ended by itself: wait for the stop to report back.
                let _ = stop.await;
                return true;
            }
            d = &mut stop => d.unwrap_or_else(|_| tokio::time::Instant::now()),
        }
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    p.shutdown(left).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_delay_doubles_from_the_first_and_stops_at_the_maximum() {
        let b = RestartBackoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(300),
        };
        let delays: Vec<u64> = (0..9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }
}
