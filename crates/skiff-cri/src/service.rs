//! The two traits the agent programs against, one per CRI gRPC service.
//!
//! Only the calls a kubelet needs to run pods are here; streaming exec,
//! attach, port-forward and stats are added when the agent uses them. Each
//! method takes the CRI request message and returns the response message, so
//! callers see exactly what the runtime sees.

use std::time::Duration;

use async_trait::async_trait;

use crate::CriError;
use crate::v1::{
    ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest,
    CreateContainerResponse, ExecSyncRequest, ExecSyncResponse, ImageStatusRequest,
    ImageStatusResponse, ListContainersRequest, ListContainersResponse, ListImagesRequest,
    ListImagesResponse, ListPodSandboxRequest, ListPodSandboxResponse, PodSandboxStatusRequest,
    PodSandboxStatusResponse, PullImageRequest, PullImageResponse, RemoveContainerRequest,
    RemoveContainerResponse, RemoveImageRequest, RemoveImageResponse, RemovePodSandboxRequest,
    RemovePodSandboxResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
    RunPodSandboxRequest, RunPodSandboxResponse, StartContainerRequest, StartContainerResponse,
    StopContainerRequest, StopContainerResponse, StopPodSandboxRequest, StopPodSandboxResponse,
    UpdateContainerResourcesRequest, UpdateContainerResourcesResponse, VersionRequest,
    VersionResponse,
};

/// Pod sandboxes and containers (CRI `RuntimeService`).
#[async_trait]
pub trait RuntimeService: Send + Sync {
    /// Runtime name and version; also a cheap liveness check of the runtime.
    async fn version(&self, req: VersionRequest) -> Result<VersionResponse, CriError>;

    /// Creates and starts a pod sandbox (its network namespace and pause
    /// process). The sandbox is `SANDBOX_READY` when this returns.
    async fn run_pod_sandbox(
        &self,
        req: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, CriError>;

    /// Stops every container in the sandbox and the sandbox itself, and
    /// releases its network. Idempotent on a stopped sandbox.
    async fn stop_pod_sandbox(
        &self,
        req: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, CriError>;

    /// Removes the sandbox and forcibly removes its containers. Succeeds when
    /// the sandbox is already gone.
    async fn remove_pod_sandbox(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, CriError>;

    /// Status of one sandbox; `NotFound` if it does not exist.
    async fn pod_sandbox_status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, CriError>;

    /// Sandboxes matching the filter (all when there is none).
    async fn list_pod_sandbox(
        &self,
        req: ListPodSandboxRequest,
    ) -> Result<ListPodSandboxResponse, CriError>;

    /// Creates a container in a sandbox, in state `CONTAINER_CREATED`.
    async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse, CriError>;

    /// Starts a created container.
    async fn start_container(
        &self,
        req: StartContainerRequest,
    ) -> Result<StartContainerResponse, CriError>;

    /// Stops a running container: the stop signal, then SIGKILL after
    /// `timeout` seconds. A no-op on a container that is not running.
    async fn stop_container(
        &self,
        req: StopContainerRequest,
    ) -> Result<StopContainerResponse, CriError>;

    /// Removes a container, killing it first if it runs. Succeeds when the
    /// container is already gone.
    async fn remove_container(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, CriError>;

    /// Containers matching the filter (all when there is none).
    async fn list_containers(
        &self,
        req: ListContainersRequest,
    ) -> Result<ListContainersResponse, CriError>;

    /// Changes a created or running container's cgroup limits in place
    /// (cpu shares, quota and period, memory limit): an in-place pod resize.
    /// The container's status reports the new values afterwards.
    async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse, CriError>;

    /// Status of one container; `NotFound` if it does not exist.
    async fn container_status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, CriError>;

    /// Runs a command in a running container and collects its output.
    ///
    /// `deadline` is enforced on the client: an exec whose children keep
    /// stdout open can outlive the runtime-side `req.timeout`, so a caller
    /// (a probe, a hook) must always bound its wait. On expiry the call is
    /// cancelled and [`CriError::DeadlineExceeded`] returned.
    async fn exec_sync(
        &self,
        req: ExecSyncRequest,
        deadline: Duration,
    ) -> Result<ExecSyncResponse, CriError>;

    /// Asks the runtime to reopen the container's log file at its path,
    /// after the agent renamed the old one away (log rotation). Fails on a
    /// container that is not running.
    async fn reopen_container_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, CriError>;

    /// Prepares a streaming exec of `req.cmd` in a running container and
    /// returns the URL of the runtime's streaming server that runs it once a
    /// client connects (the kubelet streaming protocols: SPDY or WebSocket
    /// `v4.channel.k8s.io`). The URL is single-use and expires if unused.
    async fn exec(&self, req: crate::v1::ExecRequest) -> Result<crate::v1::ExecResponse, CriError>;

    /// Like [`RuntimeService::exec`], for attaching to the container's main
    /// process instead of starting a new one.
    async fn attach(
        &self,
        req: crate::v1::AttachRequest,
    ) -> Result<crate::v1::AttachResponse, CriError>;
}

/// Images on the node (CRI `ImageService`).
#[async_trait]
pub trait ImageService: Send + Sync {
    /// Images matching the filter (all when there is none).
    async fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse, CriError>;

    /// Status of one image. Per the CRI contract an absent image is not an
    /// error: the response's `image` is `None`.
    async fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse, CriError>;

    /// Pulls an image (with credentials, if given) and returns its reference
    /// (image id or digest).
    async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse, CriError>;

    /// Removes an image. Succeeds when the image is already gone.
    async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse, CriError>;
}
