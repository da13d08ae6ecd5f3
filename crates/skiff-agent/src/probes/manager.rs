//! Probe workers: one tokio task per (container, probe kind), on the
//! probe's schedule, with upstream's thresholds.
//!
//! The state the pod worker reads synchronously (readiness, started) lives
//! in a small shared [`Status`] per container; what it must react to comes
//! as [`ProbeUpdate`]s on the channel from [`ProbeManager::new`]. A
//! container's workers are aborted when it is removed or replaced, so a
//! restarted container starts over with fresh workers and thresholds.

use std::collections::HashMap;
use std::mem::{Discriminant, discriminant};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use skiff_cri::RuntimeService;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::{self, MissedTickBehavior};

use super::{ProbeKind, ProbeOutcome, ProbeTarget, probe_once};

/// Updates buffered before workers wait for the pod worker to catch up.
const UPDATE_BUFFER: usize = 256;

/// Attempts that could not be run are retried this often before the
/// unknown outcome is reported (upstream's `maxProbeRetries`).
const MAX_ATTEMPTS: usize = 3;

/// A probe's timing and thresholds, with upstream's defaults for unset
/// fields and every value at least 1 (0 delay allowed), so bad input can't
/// make a zero-period ticker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Schedule {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Schedule {
    pub fn of(probe: &Probe) -> Self {
        let seconds = |value: Option<i32>, default: i32, min: u64| {
            Duration::from_secs(
                u64::try_from(value.unwrap_or(default))
                    .unwrap_or(0)
                    .max(min),
            )
        };
        let count = |value: Option<i32>, default: i32| {
            u32::try_from(value.unwrap_or(default)).unwrap_or(0).max(1)
        };
        Schedule {
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// What a probe worker reports: an attempt that did not plainly succeed,
/// or one that changed the probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUpdate {
    /// The pod's uid, as given to [`ProbeManager::add_container`].
    pub pod_uid: String,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// The CRI id of the container probed. Updates of a replaced container
    /// can still be in flight; compare this with the current id.
    pub container_id: String,
    /// Which probe.
    pub kind: ProbeKind,
    /// What this attempt found.
    pub outcome: ProbeOutcome,
    /// The probe's result after this attempt: ready, alive, or started.
    pub success: bool,
    /// Whether `success` changed with this attempt (a threshold was met).
    pub changed: bool,
    /// How many attempts in a row (this one included) ended like this one:
    /// 1, 2, 3… Lets the pod worker post the event of a failing probe on the
    /// first attempt and then only now and then.
    pub consecutive: u32,
}

/// A Warning event the pod worker posts on the container for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `Unhealthy` or `ProbeWarning`.
    pub reason: &'static str,
    /// Upstream's message, e.g. `Liveness probe failed: HTTP probe failed
    /// with statuscode: 500`.
    pub message: String,
}

impl ProbeUpdate {
    /// The event upstream posts for this attempt, if any.
    pub fn event(&self) -> Option<ProbeEvent> {
        let kind = self.kind;
        let (reason, message) = match &self.outcome {
            ProbeOutcome::Success => return None,
            ProbeOutcome::Warning(m) => ("ProbeWarning", format!("{kind} probe warning: {m}")),
            ProbeOutcome::Failure(m) => ("Unhealthy", format!("{kind} probe failed: {m}")),
            ProbeOutcome::Unknown(m) => (
                "Unhealthy",
                format!("{kind} probe errored and resulted in unknown state: {m}"),
            ),
        };
        Some(ProbeEvent { reason, message })
    }

    /// Whether the container must now be killed and restarted (per its
    /// pod's restart policy): its liveness or startup probe just met its
    /// failure threshold. The worker of that probe has stopped.
    pub fn requires_restart(&self) -> bool {
        self.changed && !self.success && self.kind != ProbeKind::Readiness
    }

    /// The message of upstream's `Killing` event for such a restart:
    /// `Container app failed liveness probe, will be restarted`.
    pub fn restart_message(&self) -> Option<String> {
        let kind = match self.kind {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Startup => "startup",
            ProbeKind::Readiness => return None,
        };
        self.requires_restart().then(|| {
            format!(
                "Container {} failed {kind} probe, will be restarted",
                self.container_name
            )
        })
    }
}

/// Runs the probes of the containers on this node. See the [module
/// docs](super).
pub struct ProbeManager {
    runtime: Arc<dyn RuntimeService>,
    updates: mpsc::Sender<ProbeUpdate>,
    /// Keyed by (pod uid, container name). Never held across an await.
    containers: Mutex<HashMap<(String, String), Entry>>,
}

/// A container's shared state and its workers, aborted on drop.
struct Entry {
    status: Arc<Status>,
    workers: Vec<AbortHandle>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

/// What the pod worker reads synchronously about a container.
struct Status {
    /// Whether the startup probe has succeeded; true from the start for a
    /// container without one. Liveness and readiness workers wait on it.
    started: watch::Sender<bool>,
    /// The readiness probe's result; `None` without a readiness probe, when
    /// a container is ready as soon as it has started.
    ready: Option<AtomicBool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map stays consistent across a panic in another thread: every
    // update is a single insert or remove.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProbeManager {
    /// A manager whose workers run probes through `runtime`, and the
    /// channel its updates arrive on.
    pub fn new(runtime: Arc<dyn RuntimeService>) -> (Self, mpsc::Receiver<ProbeUpdate>) {
        let (updates, receiver) = mpsc::channel(UPDATE_BUFFER);
        let manager = ProbeManager {
            runtime,
            updates,
            containers: Mutex::new(HashMap::new()),
        };
        (manager, receiver)
    }

    /// Starts probing a container that has just started (the initial
    /// delays count from now), replacing the workers and state of an
    /// earlier container of the same name in the pod. Call it for every
    /// started container, probes or not, so that [`readiness`] and
    /// [`started`] know it. Must be called within a tokio runtime.
    ///
    /// [`readiness`]: Self::readiness
    /// [`started`]: Self::started
    pub fn add_container(&self, pod_uid: &str, container: &Container, target: ProbeTarget) {
        let status = Arc::new(Status {
            started: watch::Sender::new(container.startup_probe.is_none()),
            ready: container
                .readiness_probe
                .as_ref()
                .map(|_| AtomicBool::new(false)),
        });
        let workers = [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ]
        .into_iter()
        .filter_map(|kind| {
            let probe = kind.spec(container)?.clone();
            let worker = Worker {
                pod_uid: pod_uid.to_owned(),
                kind,
                probe,
                container: container.clone(),
                target: target.clone(),
                runtime: self.runtime.clone(),
                status: status.clone(),
                updates: self.updates.clone(),
            };
            Some(tokio::spawn(worker.run()).abort_handle())
        })
        .collect();
        let key = (pod_uid.to_owned(), container.name.clone());
        // The replaced entry, if any, aborts its workers as it drops.
        lock(&self.containers).insert(key, Entry { status, workers });
    }

    /// Stops probing a container (it exited or was removed) and forgets it.
    pub fn remove_container(&self, pod_uid: &str, container_name: &str) {
        let key = (pod_uid.to_owned(), container_name.to_owned());
        lock(&self.containers).remove(&key);
    }

    /// Stops probing every container of a pod and forgets them.
    pub fn remove_pod(&self, pod_uid: &str) {
        lock(&self.containers).retain(|(uid, _), _| uid != pod_uid);
    }

    /// Whether the container is ready: its readiness probe passes, or it
    /// has none and has started. False for a container not added.
    pub fn readiness(&self, pod_uid: &str, container_name: &str) -> bool {
        self.with_status(pod_uid, container_name, |status| match &status.ready {
            Some(ready) => ready.load(Ordering::Acquire),
            None => *status.started.borrow(),
        })
    }

    /// Whether the container has started: its startup probe has passed, or
    /// it has none. False for a container not added.
    pub fn started(&self, pod_uid: &str, container_name: &str) -> bool {
        self.with_status(pod_uid, container_name, |status| *status.started.borrow())
    }

    fn with_status(&self, pod_uid: &str, name: &str, f: impl FnOnce(&Status) -> bool) -> bool {
        let key = (pod_uid.to_owned(), name.to_owned());
        lock(&self.containers)
            .get(&key)
            .is_some_and(|entry| f(&entry.status))
    }
}

/// The threshold logic of one probe, apart from timing and IO.
#[derive(Debug)]
struct Tracker {
    kind: ProbeKind,
    /// The probe's result; `None` until a startup probe has one.
    result: Option<bool>,
    /// The last counted verdict and how many times in a row it came.
    last: Option<bool>,
    run: u32,
    /// The last outcome's variant and its streak, for [`ProbeUpdate::consecutive`].
    streak: Option<(Discriminant<ProbeOutcome>, u32)>,
}

/// What one attempt did to a probe's result.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    result: Option<bool>,
    changed: bool,
    consecutive: u32,
}

impl Tracker {
    fn new(kind: ProbeKind) -> Self {
        let result = match kind {
            ProbeKind::Liveness => Some(true),
            ProbeKind::Readiness => Some(false),
            ProbeKind::Startup => None,
        };
        Tracker {
            kind,
            result,
            last: None,
            run: 0,
            streak: None,
        }
    }

    /// Counts an attempt: a result changes only once `success_threshold`
    /// (or `failure_threshold`) verdicts came in a row. Unknown outcomes
    /// neither count nor break a run.
    fn record(&mut self, outcome: &ProbeOutcome, schedule: &Schedule) -> Step {
        let variant = discriminant(outcome);
        let consecutive = match self.streak {
            Some((last, n)) if last == variant => n.saturating_add(1),
            _ => 1,
        };
        self.streak = Some((variant, consecutive));

        let mut changed = false;
        if let Some(passed) = outcome.passed() {
            if self.last == Some(passed) {
                self.run = self.run.saturating_add(1);
            } else {
                self.last = Some(passed);
                self.run = 1;
            }
            let threshold = if passed {
                schedule.success_threshold
            } else {
                schedule.failure_threshold
            };
            if self.run >= threshold {
                changed = self.result != Some(passed);
                self.result = Some(passed);
                // Liveness and startup restart the container on failure;
                // counting starts over for the next one.
                if !passed && self.kind != ProbeKind::Readiness {
                    self.run = 0;
                }
            }
        }
        Step {
            result: self.result,
            changed,
            consecutive,
        }
    }
}

/// One probe of one container.
struct Worker {
    pod_uid: String,
    kind: ProbeKind,
    probe: Probe,
    container: Container,
    target: ProbeTarget,
    runtime: Arc<dyn RuntimeService>,
    status: Arc<Status>,
    updates: mpsc::Sender<ProbeUpdate>,
}

impl Worker {
    async fn run(self) {
        let schedule = Schedule::of(&self.probe);
        time::sleep(schedule.initial_delay).await;
        let mut ticker = time::interval(schedule.period);
        // After a long wait for startup, probe once at once, then keep the
        // period from there rather than catching up.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut started = self.status.started.subscribe();
        let mut tracker = Tracker::new(self.kind);
        loop {
            if self.kind != ProbeKind::Startup && started.wait_for(|s| *s).await.is_err() {
                return;
            }
            ticker.tick().await;
            let outcome = self.attempt().await;
            let step = tracker.record(&outcome, &schedule);
            let success = step.result == Some(true);
            // Publish the state before the update, so a pod worker that
            // reacts to the update reads the new state.
            match self.kind {
                ProbeKind::Readiness => {
                    if let Some(ready) = &self.status.ready {
                        ready.store(success, Ordering::Release);
                    }
                }
                ProbeKind::Startup if success => {
                    self.status.started.send_replace(true);
                }
                ProbeKind::Startup | ProbeKind::Liveness => {}
            }
            let done = match self.kind {
                ProbeKind::Readiness => false,
                ProbeKind::Liveness => step.changed && !success,
                ProbeKind::Startup => step.result.is_some(),
            };
            if step.changed || outcome != ProbeOutcome::Success {
                let update = ProbeUpdate {
                    pod_uid: self.pod_uid.clone(),
                    container_name: self.container.name.clone(),
                    container_id: self.target.container_id.clone(),
                    kind: self.kind,
                    outcome,
                    success,
                    changed: step.changed,
                    consecutive: step.consecutive,
                };
                // A closed channel means the agent is shutting down; the
                // state above is still kept for readers.
                let _ = self.updates.send(update).await;
            }
            if done {
                return;
            }
        }
    }

    async fn attempt(&self) -> ProbeOutcome {
        let mut outcome = ProbeOutcome::Unknown(String::new());
        for _ in 0..MAX_ATTEMPTS {
            outcome = probe_once(
                &self.probe,
                &self.container,
                &self.target,
                self.runtime.as_ref(),
            )
            .await;
            if !matches!(outcome, ProbeOutcome::Unknown(_)) {
                break;
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ExecAction;
    use skiff_cri::Op;
    use skiff_cri::fake::FakeRuntime;
    use skiff_cri::v1::ExecSyncResponse;

    use super::super::testutil::running_container;
    use super::*;

    fn exec_probe(period: i32, failure_threshold: i32) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["check".into()]),
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failure_threshold),
            ..Probe::default()
        }
    }

    fn exits(code: i32, output: &str) -> ExecSyncResponse {
        ExecSyncResponse {
            stdout: output.as_bytes().to_vec(),
            stderr: Vec::new(),
            exit_code: code,
        }
    }

    struct Setup {
        fake: Arc<FakeRuntime>,
        manager: ProbeManager,
        updates: mpsc::Receiver<ProbeUpdate>,
        target: ProbeTarget,
    }

    async fn setup() -> Setup {
        let fake = Arc::new(FakeRuntime::new());
        let id = running_container(&fake).await;
        let (manager, updates) = ProbeManager::new(fake.clone());
        Setup {
            fake,
            manager,
            updates,
            target: ProbeTarget {
                pod_ip: None,
                container_id: id,
            },
        }
    }

    fn container(
        liveness: Option<Probe>,
        readiness: Option<Probe>,
        startup: Option<Probe>,
    ) -> Container {
        Container {
            name: "app".into(),
            liveness_probe: liveness,
            readiness_probe: readiness,
            startup_probe: startup,
            ..Container::default()
        }
    }

    #[test]
    fn schedule_defaults_and_floors_follow_upstream() {
        let defaults = Schedule::of(&Probe::default());
        assert_eq!(defaults.initial_delay, Duration::ZERO);
        assert_eq!(defaults.period, Duration::from_secs(10));
        assert_eq!(defaults.timeout, Duration::from_secs(1));
        assert_eq!(
            (defaults.success_threshold, defaults.failure_threshold),
            (1, 3)
        );
        let zeros = Schedule::of(&Probe {
            period_seconds: Some(0),
            timeout_seconds: Some(-1),
            failure_threshold: Some(0),
            initial_delay_seconds: Some(-5),
            ..Probe::default()
        });
        assert_eq!(zeros.period, Duration::from_secs(1));
        assert_eq!(zeros.timeout, Duration::from_secs(1));
        assert_eq!(zeros.failure_threshold, 1);
        assert_eq!(zeros.initial_delay, Duration::ZERO);
    }

    #[test]
    fn thresholds_need_a_run_and_unknown_attempts_do_not_count() {
        let schedule = Schedule {
            success_threshold: 2,
            failure_threshold: 2,
            ..Schedule::of(&Probe::default())
        };
        let fail = ProbeOutcome::Failure("no".into());
        let unknown = ProbeOutcome::Unknown("?".into());
        let mut readiness = Tracker::new(ProbeKind::Readiness);
        let steps: Vec<(Option<bool>, bool, u32)> = [
            &ProbeOutcome::Success,
            &unknown,
            &ProbeOutcome::Success,
            &fail,
            &ProbeOutcome::Success,
            &fail,
            &fail,
        ]
        .into_iter()
        .map(|o| {
            let step = readiness.record(o, &schedule);
            (step.result, step.changed, step.consecutive)
        })
        .collect();
        assert_eq!(
            steps,
            [
                (Some(false), false, 1),
                // Unknown neither counts nor breaks the run of successes.
                (Some(false), false, 1),
                (Some(true), true, 1),
                (Some(true), false, 1),
                (Some(true), false, 1),
                (Some(true), false, 1),
                (Some(false), true, 2),
            ]
        );

        let mut startup = Tracker::new(ProbeKind::Startup);
        let once = Schedule {
            failure_threshold: 1,
            ..schedule
        };
        let step = startup.record(&fail, &once);
        assert_eq!(step.result, Some(false));
        assert!(step.changed, "unknown to failure is a change");
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_restarts_after_the_failure_threshold_and_stops() {
        let mut s = setup().await;
        for _ in 0..3 {
            s.fake.push_exec_response(exits(1, "boom"));
        }
        let c = container(Some(exec_probe(5, 3)), None, None);
        s.manager.add_container("uid-1", &c, s.target.clone());
        assert!(s.manager.started("uid-1", "app"));
        assert!(s.manager.readiness("uid-1", "app"), "no readiness probe");

        let start = time::Instant::now();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(s.updates.recv().await.expect("update"));
        }
        // Attempts at 0s, 5s and 10s.
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        let consecutive: Vec<u32> = seen.iter().map(|u| u.consecutive).collect();
        assert_eq!(consecutive, [1, 2, 3]);
        assert!(seen[..2].iter().all(|u| u.success && !u.changed));
        let last = &seen[2];
        assert!(last.requires_restart());
        assert_eq!(last.container_id, s.target.container_id);
        assert_eq!(
            last.event(),
            Some(ProbeEvent {
                reason: "Unhealthy",
                message: "Liveness probe failed: boom".into()
            })
        );
        assert_eq!(
            last.restart_message().as_deref(),
            Some("Container app failed liveness probe, will be restarted")
        );

        // The worker is done: no more attempts.
        time::sleep(Duration::from_secs(60)).await;
        assert_eq!(s.fake.call_count(Op::ExecSync), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_starts_false_waits_for_startup_and_reports_changes() {
        let mut s = setup().await;
        // Startup: fail, then pass. Readiness: pass, then the default (pass).
        s.fake.push_exec_response(exits(1, "not yet"));
        let mut readiness = exec_probe(10, 3);
        readiness.initial_delay_seconds = Some(1);
        let c = container(None, Some(readiness), Some(exec_probe(2, 30)));
        s.manager.add_container("uid-1", &c, s.target.clone());
        assert!(!s.manager.started("uid-1", "app"));
        assert!(!s.manager.readiness("uid-1", "app"));

        let failed = s.updates.recv().await.expect("startup failure");
        assert_eq!(failed.kind, ProbeKind::Startup);
        assert_eq!(
            failed.event().map(|e| e.message),
            Some("Startup probe failed: not yet".into())
        );
        assert!(!failed.changed);

        let started = s.updates.recv().await.expect("started");
        assert_eq!(
            (started.kind, started.success, started.changed),
            (ProbeKind::Startup, true, true)
        );
        assert_eq!(started.event(), None);
        assert!(s.manager.started("uid-1", "app"));

        // Readiness probes at once after startup, not a period later.
        let start = time::Instant::now();
        let ready = s.updates.recv().await.expect("ready");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(
            (ready.kind, ready.success, ready.changed),
            (ProbeKind::Readiness, true, true)
        );
        assert!(s.manager.readiness("uid-1", "app"));

        // Steady success is not reported.
        time::sleep(Duration::from_secs(35)).await;
        assert!(s.updates.try_recv().is_err());
        // 2 startup attempts, then readiness at 2s, 12s, 22s, 32s.
        assert_eq!(s.fake.call_count(Op::ExecSync), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn removal_and_replacement_stop_the_old_workers() {
        let mut s = setup().await;
        let c = container(None, Some(exec_probe(1, 1)), None);
        s.manager.add_container("uid-1", &c, s.target.clone());
        let ready = s.updates.recv().await.expect("ready");
        assert!(ready.changed);

        // A restarted container gets fresh state: not ready until probed.
        s.manager.add_container("uid-1", &c, s.target.clone());
        assert!(!s.manager.readiness("uid-1", "app"));
        s.updates.recv().await.expect("ready again");
        let calls = s.fake.call_count(Op::ExecSync);
        time::sleep(Duration::from_millis(2500)).await;
        // One worker, probing every second.
        assert_eq!(s.fake.call_count(Op::ExecSync), calls + 2);

        s.manager.remove_pod("uid-1");
        assert!(!s.manager.readiness("uid-1", "app"));
        let calls = s.fake.call_count(Op::ExecSync);
        time::sleep(Duration::from_secs(10)).await;
        assert_eq!(s.fake.call_count(Op::ExecSync), calls);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_attempts_are_retried_then_reported_without_counting() {
        let mut s = setup().await;
        s.fake
            .exit_container(&s.target.container_id, 1)
            .expect("exit");
        let c = container(Some(exec_probe(10, 1)), None, None);
        s.manager.add_container("uid-1", &c, s.target.clone());
        let update = s.updates.recv().await.expect("unknown");
        assert!(matches!(update.outcome, ProbeOutcome::Unknown(_)));
        assert!(
            update.success && !update.changed,
            "liveness keeps its result"
        );
        let event = update.event().expect("event");
        assert!(
            event
                .message
                .starts_with("Liveness probe errored and resulted in unknown state: "),
            "{event:?}"
        );
        assert_eq!(s.fake.call_count(Op::ExecSync), MAX_ATTEMPTS);
        s.manager.remove_container("uid-1", "app");
        assert!(!s.manager.started("uid-1", "app"));
    }
}
