//! The delay before a Job replaces failed pods.
//!
//! A Job whose pods keep failing must not hammer the cluster, so upstream
//! waits 10 s after the first failure, then 20 s, 40 s, ... up to a cap before
//! creating replacements. The count is of failures since the last success:
//! a pod that succeeds after the failures resets it. The record lives in
//! memory (as upstream's does); after a restart the first failure starts
//! the doubling again.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// Consecutive failures of one Job and when the last one happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffRecord {
    /// Pods that failed after the last success.
    pub failures_after_last_success: u32,
    /// When the last of them finished.
    pub last_failure: Option<Timestamp>,
}

impl BackoffRecord {
    /// The record after newly finished pods were counted.
    pub fn after(&self, succeeded: &[&Pod], failed: &[&Pod]) -> Self {
        let last_success = succeeded.iter().map(|p| finished_at(p)).max();
        let mut failed_at: Vec<Timestamp> = failed.iter().map(|p| finished_at(p)).collect();
        failed_at.sort_unstable();
        match last_success {
            None if failed_at.is_empty() => *self,
            None => Self {
                failures_after_last_success: self.failures_after_last_success
                    + failed_at.len() as u32,
                last_failure: failed_at.last().copied(),
            },
            Some(success) => {
                let after: Vec<Timestamp> =
                    failed_at.into_iter().filter(|at| *at > success).collect();
                Self {
                    failures_after_last_success: after.len() as u32,
                    last_failure: after.last().copied(),
                }
            }
        }
    }

    /// How long to wait before creating pods at `now`; zero if no wait.
    pub fn remaining(&self, now: Timestamp, base: Duration, max: Duration) -> Duration {
        let Some(last) = self.last_failure else {
            return Duration::ZERO;
        };
        if self.failures_after_last_success == 0 {
            return Duration::ZERO;
        }
        let mut delay = base;
        for _ in 1..self.failures_after_last_success {
            delay = delay.saturating_mul(2);
            if delay >= max {
                delay = max;
                break;
            }
        }
        let elapsed = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
        delay.saturating_sub(elapsed)
    }
}

/// When a pod finished, as upstream estimates it: the latest container
/// termination if every container terminated, else when Ready turned False,
/// else the moment of deletion, else its creation.
pub fn finished_at(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_deref());
    if let Some(containers) = containers.filter(|c| !c.is_empty()) {
        let ends: Option<Vec<Timestamp>> = containers
            .iter()
            .map(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.finished_at.as_ref())
                    .map(|t| t.0)
            })
            .collect();
        if let Some(end) = ends.and_then(|ends| ends.into_iter().max()) {
            return end;
        }
    }
    let not_ready = status
        .and_then(|s| s.conditions.as_deref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref());
    if let Some(at) = not_ready {
        return at.0;
    }
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        return deleted.0 - jiff::SignedDuration::from_secs(grace);
    }
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const BASE: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(360);

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn finished(second: i64) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: Some(Time(at(second))),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn the_delay_doubles_per_failure_from_ten_seconds_up_to_the_cap() {
        let record = |failures| BackoffRecord {
            failures_after_last_success: failures,
            last_failure: Some(at(1000)),
        };
        assert_eq!(
            record(1).remaining(at(1000), BASE, MAX),
            Duration::from_secs(10)
        );
        assert_eq!(
            record(2).remaining(at(1000), BASE, MAX),
            Duration::from_secs(20)
        );
        assert_eq!(
            record(3).remaining(at(1005), BASE, MAX),
            Duration::from_secs(35)
        );
        assert_eq!(record(7).remaining(at(1000), BASE, MAX), MAX);
        assert_eq!(record(40).remaining(at(1000), BASE, MAX), MAX);
        assert_eq!(record(1).remaining(at(1011), BASE, MAX), Duration::ZERO);
        assert_eq!(
            BackoffRecord::default().remaining(at(0), BASE, MAX),
            Duration::ZERO
        );
    }

    #[test]
    fn failures_accumulate_and_a_later_success_resets_them() {
        let (f1, f2, s, f3) = (finished(10), finished(20), finished(30), finished(40));
        let record = BackoffRecord::default().after(&[], &[&f2, &f1]);
        assert_eq!(record.failures_after_last_success, 2);
        assert_eq!(record.last_failure, Some(at(20)));
        let record = record.after(&[], &[&finished(25)]);
        assert_eq!(record.failures_after_last_success, 3);
        // Only failures after the success count.
        let record = record.after(&[&s], &[&f3, &f1]);
        assert_eq!(record.failures_after_last_success, 1);
        assert_eq!(record.last_failure, Some(at(40)));
        assert_eq!(record.after(&[&s], &[]), BackoffRecord::default());
    }

    #[test]
    fn finish_time_falls_back_to_deletion_then_creation() {
        let mut pod = Pod::default();
        pod.metadata.creation_timestamp = Some(Time(at(5)));
        assert_eq!(finished_at(&pod), at(5));
        pod.metadata.deletion_timestamp = Some(Time(at(100)));
        pod.metadata.deletion_grace_period_seconds = Some(30);
        assert_eq!(finished_at(&pod), at(70));
        assert_eq!(finished_at(&finished(42)), at(42));
    }
}
