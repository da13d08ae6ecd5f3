//! One error type for every CRI call, real or fake, so the agent handles a
//! runtime failure the same way whichever implementation produced it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// A CRI call, named as its gRPC method. Used for error context and by the
/// fake to record calls and inject failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Op {
    /// `RuntimeService/Version`
    Version,
    /// `RuntimeService/RunPodSandbox`
    RunPodSandbox,
    /// `RuntimeService/StopPodSandbox`
    StopPodSandbox,
    /// `RuntimeService/RemovePodSandbox`
    RemovePodSandbox,
    /// `RuntimeService/PodSandboxStatus`
    PodSandboxStatus,
    /// `RuntimeService/ListPodSandbox`
    ListPodSandbox,
    /// `RuntimeService/CreateContainer`
    CreateContainer,
    /// `RuntimeService/StartContainer`
    StartContainer,
    /// `RuntimeService/StopContainer`
    StopContainer,
    /// `RuntimeService/RemoveContainer`
    RemoveContainer,
    /// `RuntimeService/ListContainers`
    ListContainers,
    /// `RuntimeService/UpdateContainerResources`
    UpdateContainerResources,
    /// `RuntimeService/ContainerStatus`
    ContainerStatus,
    /// `RuntimeService/ExecSync`
    ExecSync,
    /// `RuntimeService/Exec`
    Exec,
    /// `RuntimeService/Attach`
    Attach,
    /// `RuntimeService/ReopenContainerLog`
    ReopenContainerLog,
    /// `ImageService/ListImages`
    ListImages,
    /// `ImageService/ImageStatus`
    ImageStatus,
    /// `ImageService/PullImage`
    PullImage,
    /// `ImageService/RemoveImage`
    RemoveImage,
}

impl Op {
    /// The gRPC method name, as it appears in runtime logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Version => "Version",
            Op::RunPodSandbox => "RunPodSandbox",
            Op::StopPodSandbox => "StopPodSandbox",
            Op::RemovePodSandbox => "RemovePodSandbox",
            Op::PodSandboxStatus => "PodSandboxStatus",
            Op::ListPodSandbox => "ListPodSandbox",
            Op::CreateContainer => "CreateContainer",
            Op::StartContainer => "StartContainer",
            Op::StopContainer => "StopContainer",
            Op::RemoveContainer => "RemoveContainer",
            Op::ListContainers => "ListContainers",
            Op::UpdateContainerResources => "UpdateContainerResources",
            Op::ContainerStatus => "ContainerStatus",
            Op::ExecSync => "ExecSync",
            Op::Exec => "Exec",
            Op::Attach => "Attach",
            Op::ReopenContainerLog => "ReopenContainerLog",
            Op::ListImages => "ListImages",
            Op::ImageStatus => "ImageStatus",
            Op::PullImage => "PullImage",
            Op::RemoveImage => "RemoveImage",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed CRI call.
///
/// Retryability follows the gRPC code ([`CriError::code`]): `Unavailable`
/// (runtime restarting, socket gone) and `DeadlineExceeded` are worth a
/// retry with back-off; `NotFound` usually means the object is already gone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CriError {
    /// The runtime's socket could not be reached (not started yet, wrong path).
    #[error("connecting to the CRI runtime at {}", path.display())]
    Connect {
        /// The unix socket we dialled.
        path: PathBuf,
        /// Why the connection failed.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime answered the call with a gRPC error.
    #[error("CRI {op}({target}) failed: {:?}: {}", status.code(), status.message())]
    Rpc {
        /// Which call failed.
        op: Op,
        /// The sandbox id, container id or image reference the call was
        /// about; empty for calls about no single object (lists, version).
        target: String,
        /// The runtime's answer. Boxed: `Status` is large and errors are rare.
        status: Box<Status>,
    },
    /// The call did not answer within the client-side deadline. The request
    /// was cancelled; the runtime may still have acted on it.
    #[error("CRI {op}({target}) gave no answer within {timeout:?}")]
    DeadlineExceeded {
        /// Which call timed out.
        op: Op,
        /// As in [`CriError::Rpc`].
        target: String,
        /// The deadline that passed.
        timeout: Duration,
    },
}

impl CriError {
    /// Wraps a gRPC status with the call that produced it.
    pub fn rpc(op: Op, target: impl Into<String>, status: Status) -> Self {
        CriError::Rpc {
            op,
            target: target.into(),
            status: Box::new(status),
        }
    }

    /// The gRPC code this error amounts to: the runtime's own code for
    /// [`CriError::Rpc`], `DeadlineExceeded` for a client-side timeout, and
    /// `Unavailable` when the socket could not be reached.
    pub fn code(&self) -> Code {
        match self {
            CriError::Connect { .. } => Code::Unavailable,
            CriError::Rpc { status, .. } => status.code(),
            CriError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        }
    }

    /// What the runtime said, without the call and target: the text
    /// upstream's kubelet puts in events and waiting messages.
    pub fn message(&self) -> String {
        match self {
            CriError::Rpc { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }

    /// Whether the runtime said the object does not exist, which callers
    /// cleaning up usually treat as success.
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_names_call_target_and_status() {
        let err = CriError::rpc(
            Op::StartContainer,
            "c1",
            Status::not_found("no such container"),
        );
        assert_eq!(
            err.to_string(),
            "CRI StartContainer(c1) failed: NotFound: no such container"
        );
        assert!(err.is_not_found());
        assert_eq!(err.message(), "no such container");
    }

    #[test]
    fn deadline_maps_to_deadline_exceeded() {
        let err = CriError::DeadlineExceeded {
            op: Op::ExecSync,
            target: "c1".into(),
            timeout: Duration::from_millis(250),
        };
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(
            err.to_string(),
            "CRI ExecSync(c1) gave no answer within 250ms"
        );
        assert!(!err.is_not_found());
    }
}
