//! The real CRI client: tonic over the runtime's unix socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::v1::image_service_client::ImageServiceClient;
use crate::v1::runtime_service_client::RuntimeServiceClient;
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
use crate::{CriError, ImageService, Op, RuntimeService};

/// How long dialling the socket may take before `connect` gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response we accept. tonic's 4 MiB default is too small for
/// `ListContainers` on a busy node; the kubelet allows 16 MiB.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A CRI runtime reached over its unix socket (containerd's
/// `/run/containerd/containerd.sock`, or the agent's managed one).
///
/// Cheap to clone: clones share one HTTP/2 connection, which tonic
/// re-establishes if the runtime restarts.
#[derive(Debug, Clone)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the CRI runtime listening on `socket`.
    ///
    /// Fails with [`CriError::Connect`] if nothing listens there yet; a
    /// caller waiting for a runtime it just started retries.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, CriError> {
        let path: Arc<Path> = Arc::from(socket.as_ref());
        let dial = Arc::clone(&path);
        // The URI only fills the HTTP/2 `:authority`; the connector ignores
        // it and always dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = Arc::clone(&dial);
                async move { UnixStream::connect(&*path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| CriError::Connect {
                path: PathBuf::from(&*path),
                source,
            })?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            image: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// A handle for one call: tonic's generated methods take `&mut self`, and
    /// cloning shares the connection, so concurrent calls do not serialize.
    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn image(&self) -> ImageServiceClient<Channel> {
        self.image.clone()
    }
}

/// Unwraps a tonic response, or names the failed call in the error.
fn answer<T>(
    op: Op,
    target: impl Into<String>,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, CriError> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|status| CriError::rpc(op, target, status))
}

/// The image reference an image request is about, for error context.
fn image_ref(spec: Option<&crate::v1::ImageSpec>) -> String {
    spec.map(|s| s.image.clone()).unwrap_or_default()
}

#[async_trait]
impl RuntimeService for CriClient {
    async fn version(&self, req: VersionRequest) -> Result<VersionResponse, CriError> {
        answer(Op::Version, "", self.runtime().version(req).await)
    }

    async fn run_pod_sandbox(
        &self,
        req: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, CriError> {
        let target = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        answer(
            Op::RunPodSandbox,
            target,
            self.runtime().run_pod_sandbox(req).await,
        )
    }

    async fn stop_pod_sandbox(
        &self,
        req: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, CriError> {
        let target = req.pod_sandbox_id.clone();
        answer(
            Op::StopPodSandbox,
            target,
            self.runtime().stop_pod_sandbox(req).await,
        )
    }

    async fn remove_pod_sandbox(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, CriError> {
        let target = req.pod_sandbox_id.clone();
        answer(
            Op::RemovePodSandbox,
            target,
            self.runtime().remove_pod_sandbox(req).await,
        )
    }

    async fn pod_sandbox_status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, CriError> {
        let target = req.pod_sandbox_id.clone();
        answer(
            Op::PodSandboxStatus,
            target,
            self.runtime().pod_sandbox_status(req).await,
        )
    }

    async fn list_pod_sandbox(
        &self,
        req: ListPodSandboxRequest,
    ) -> Result<ListPodSandboxResponse, CriError> {
        answer(
            Op::ListPodSandbox,
            "",
            self.runtime().list_pod_sandbox(req).await,
        )
    }

    async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse, CriError> {
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.as_str())
            .unwrap_or_default();
        let target = format!("{}/{name}", req.pod_sandbox_id);
        answer(
            Op::CreateContainer,
            target,
            self.runtime().create_container(req).await,
        )
    }

    async fn start_container(
        &self,
        req: StartContainerRequest,
    ) -> Result<StartContainerResponse, CriError> {
        let target = req.container_id.clone();
        answer(
            Op::StartContainer,
            target,
            self.runtime().start_container(req).await,
        )
    }

    async fn stop_container(
        &self,
        req: StopContainerRequest,
    ) -> Result<StopContainerResponse, CriError> {
        let target = req.container_id.clone();
        answer(
            Op::StopContainer,
            target,
            self.runtime().stop_container(req).await,
        )
    }

    async fn remove_container(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, CriError> {
        let target = req.container_id.clone();
        answer(
            Op::RemoveContainer,
            target,
            self.runtime().remove_container(req).await,
        )
    }

    async fn list_containers(
        &self,
        req: ListContainersRequest,
    ) -> Result<ListContainersResponse, CriError> {
        answer(
            Op::ListContainers,
            "",
            self.runtime().list_containers(req).await,
        )
    }

    async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse, CriError> {
        let target = req.container_id.clone();
        answer(
            Op::UpdateContainerResources,
            target,
            self.runtime().update_container_resources(req).await,
        )
    }

    async fn container_status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, CriError> {
        let target = req.container_id.clone();
        answer(
            Op::ContainerStatus,
            target,
            self.runtime().container_status(req).await,
        )
    }

    async fn exec_sync(
        &self,
        req: ExecSyncRequest,
        deadline: Duration,
    ) -> Result<ExecSyncResponse, CriError> {
        let target = req.container_id.clone();
        // Dropping the call on expiry resets its HTTP/2 stream, which cancels
        // the exec's context in the runtime.
        match tokio::time::timeout(deadline, self.runtime().exec_sync(req)).await {
            Ok(result) => answer(Op::ExecSync, target, result),
            Err(_elapsed) => Err(CriError::DeadlineExceeded {
                op: Op::ExecSync,
                target,
                timeout: deadline,
            }),
        }
    }

    async fn reopen_container_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, CriError> {
        let target = req.container_id.clone();
        answer(
            Op::ReopenContainerLog,
            target,
            self.runtime().reopen_container_log(req).await,
        )
    }

    async fn exec(&self, req: crate::v1::ExecRequest) -> Result<crate::v1::ExecResponse, CriError> {
        let target = req.container_id.clone();
        answer(Op::Exec, target, self.runtime().exec(req).await)
    }

    async fn attach(
        &self,
        req: crate::v1::AttachRequest,
    ) -> Result<crate::v1::AttachResponse, CriError> {
        let target = req.container_id.clone();
        answer(Op::Attach, target, self.runtime().attach(req).await)
    }
}

#[async_trait]
impl ImageService for CriClient {
    async fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse, CriError> {
        answer(Op::ListImages, "", self.image().list_images(req).await)
    }

    async fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse, CriError> {
        let target = image_ref(req.image.as_ref());
        answer(
            Op::ImageStatus,
            target,
            self.image().image_status(req).await,
        )
    }

    async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse, CriError> {
        let target = image_ref(req.image.as_ref());
        answer(Op::PullImage, target, self.image().pull_image(req).await)
    }

    async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse, CriError> {
        let target = image_ref(req.image.as_ref());
        answer(
            Op::RemoveImage,
            target,
            self.image().remove_image(req).await,
        )
    }
}

#[cfg(test)]
mod tests {
    //! The real client against an in-process tonic CRI server on a unix
    //! socket. The server forwards to [`FakeRuntime`], so these tests prove
    //! the connector and that requests, responses and statuses cross the wire
    //! intact, without containerd.

    use std::future::pending;

    use tokio::net::UnixListener;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::transport::Server;
    use tonic::{Code, Request, Response, Status};

    use super::*;
    use crate::fake::FakeRuntime;
    use crate::v1::image_service_server::{self, ImageServiceServer};
    use crate::v1::runtime_service_server::{self, RuntimeServiceServer};
    use crate::v1::{ContainerConfig, ContainerMetadata, ImageSpec, PodSandboxConfig};
    use crate::v1::{ContainerState, PodSandboxMetadata};

    /// Serves a [`FakeRuntime`] as a gRPC CRI runtime.
    #[derive(Clone)]
    struct Served {
        fake: Arc<FakeRuntime>,
        /// Never answer `ExecSync`, like an exec whose children hold stdout.
        hang_exec: bool,
    }

    fn to_status(err: CriError) -> Status {
        match err {
            CriError::Rpc { status, .. } => *status,
            other => Status::internal(other.to_string()),
        }
    }

    fn reply<T>(result: Result<T, CriError>) -> Result<Response<T>, Status> {
        result.map(Response::new).map_err(to_status)
    }

    #[async_trait]
    impl runtime_service_server::RuntimeService for Served {
        async fn version(
            &self,
            r: Request<VersionRequest>,
        ) -> Result<Response<VersionResponse>, Status> {
            reply(self.fake.version(r.into_inner()).await)
        }
        async fn run_pod_sandbox(
            &self,
            r: Request<RunPodSandboxRequest>,
        ) -> Result<Response<RunPodSandboxResponse>, Status> {
            reply(self.fake.run_pod_sandbox(r.into_inner()).await)
        }
        async fn pod_sandbox_status(
            &self,
            r: Request<PodSandboxStatusRequest>,
        ) -> Result<Response<PodSandboxStatusResponse>, Status> {
            reply(self.fake.pod_sandbox_status(r.into_inner()).await)
        }
        async fn create_container(
            &self,
            r: Request<CreateContainerRequest>,
        ) -> Result<Response<CreateContainerResponse>, Status> {
            reply(self.fake.create_container(r.into_inner()).await)
        }
        async fn start_container(
            &self,
            r: Request<StartContainerRequest>,
        ) -> Result<Response<StartContainerResponse>, Status> {
            reply(self.fake.start_container(r.into_inner()).await)
        }
        async fn list_containers(
            &self,
            r: Request<ListContainersRequest>,
        ) -> Result<Response<ListContainersResponse>, Status> {
            reply(self.fake.list_containers(r.into_inner()).await)
        }
        async fn container_status(
            &self,
            r: Request<ContainerStatusRequest>,
        ) -> Result<Response<ContainerStatusResponse>, Status> {
            reply(self.fake.container_status(r.into_inner()).await)
        }
        async fn exec_sync(
            &self,
            r: Request<ExecSyncRequest>,
        ) -> Result<Response<ExecSyncResponse>, Status> {
            if self.hang_exec {
                pending::<()>().await;
            }
            reply(self.fake.exec_sync(r.into_inner(), Duration::MAX).await)
        }
    }

    #[async_trait]
    impl image_service_server::ImageService for Served {
        async fn pull_image(
            &self,
            r: Request<PullImageRequest>,
        ) -> Result<Response<PullImageResponse>, Status> {
            reply(self.fake.pull_image(r.into_inner()).await)
        }
        async fn image_status(
            &self,
            r: Request<ImageStatusRequest>,
        ) -> Result<Response<ImageStatusResponse>, Status> {
            reply(self.fake.image_status(r.into_inner()).await)
        }
    }

    /// Starts a server for `served` on a socket in a fresh tempdir and
    /// connects a client to it. The tempdir lives as long as the test.
    async fn serve(served: Served) -> (CriClient, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("cri.sock");
        let listener = UnixListener::bind(&socket).expect("bind unix socket");
        tokio::spawn(
            Server::builder()
                .add_service(RuntimeServiceServer::new(served.clone()))
                .add_service(ImageServiceServer::new(served))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        let client = CriClient::connect(&socket).await.expect("connect");
        (client, dir)
    }

    fn served(fake: &Arc<FakeRuntime>) -> Served {
        Served {
            fake: Arc::clone(fake),
            hang_exec: false,
        }
    }

    fn image(reference: &str) -> Option<ImageSpec> {
        Some(ImageSpec {
            image: reference.into(),
            ..ImageSpec::default()
        })
    }

    #[tokio::test]
    async fn connect_fails_without_a_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("absent.sock");
        let err = CriClient::connect(&socket)
            .await
            .expect_err("nothing listens");
        assert!(matches!(&err, CriError::Connect { path, .. } if *path == socket));
        assert_eq!(err.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn pod_lifecycle_round_trips_over_the_socket() {
        let fake = Arc::new(FakeRuntime::new());
        let (client, _dir) = serve(served(&fake)).await;

        let version = client
            .version(VersionRequest::default())
            .await
            .expect("version");
        assert_eq!(version.runtime_api_version, "v1");

        let pulled = client
            .pull_image(PullImageRequest {
                image: image("docker.io/library/busybox:1.36"),
                ..PullImageRequest::default()
            })
            .await
            .expect("pull");
        assert!(pulled.image_ref.starts_with("sha256:"));

        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            ..PodSandboxConfig::default()
        };
        let sandbox_id = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                ..RunPodSandboxRequest::default()
            })
            .await
            .expect("run sandbox")
            .pod_sandbox_id;
        let status = client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: false,
            })
            .await
            .expect("sandbox status")
            .status
            .expect("status present");
        assert_eq!(status.labels.get("app").map(String::as_str), Some("web"));
        assert!(!status.network.expect("pod network").ip.is_empty());

        let container_id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: image("docker.io/library/busybox:1.36"),
                    command: vec!["sleep".into(), "3600".into()],
                    ..ContainerConfig::default()
                }),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .expect("create")
            .container_id;
        client
            .start_container(StartContainerRequest {
                container_id: container_id.clone(),
            })
            .await
            .expect("start");

        let listed = client
            .list_containers(ListContainersRequest::default())
            .await
            .expect("list")
            .containers;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].pod_sandbox_id, sandbox_id);
        assert_eq!(listed[0].state, ContainerState::ContainerRunning as i32);

        let status = client
            .container_status(ContainerStatusRequest {
                container_id: container_id.clone(),
                verbose: false,
            })
            .await
            .expect("container status")
            .status
            .expect("status present");
        assert_eq!(status.image_ref, pulled.image_ref);
        assert!(status.started_at > 0);

        fake.push_exec_response(ExecSyncResponse {
            stdout: b"ok\n".to_vec(),
            stderr: Vec::new(),
            exit_code: 0,
        });
        let exec = client
            .exec_sync(
                ExecSyncRequest {
                    container_id,
                    cmd: vec!["echo".into(), "ok".into()],
                    timeout: 1,
                },
                Duration::from_secs(5),
            )
            .await
            .expect("exec");
        assert_eq!(exec.stdout, b"ok\n");
    }

    #[tokio::test]
    async fn runtime_status_reaches_the_caller_with_context() {
        let fake = Arc::new(FakeRuntime::new());
        let (client, _dir) = serve(served(&fake)).await;

        let err = client
            .start_container(StartContainerRequest {
                container_id: "nope".into(),
            })
            .await
            .expect_err("no such container");
        assert!(err.is_not_found());
        assert!(
            matches!(&err, CriError::Rpc { op: Op::StartContainer, target, .. } if target == "nope"),
            "{err:?}"
        );

        fake.fail_next(Op::PullImage, Status::unavailable("registry unreachable"));
        let err = client
            .pull_image(PullImageRequest {
                image: image("example.invalid/app:1"),
                ..PullImageRequest::default()
            })
            .await
            .expect_err("injected failure");
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(
            err.to_string(),
            "CRI PullImage(example.invalid/app:1) failed: Unavailable: registry unreachable"
        );

        // An absent image is an empty answer, not an error.
        let status = client
            .image_status(ImageStatusRequest {
                image: image("example.invalid/app:1"),
                verbose: false,
            })
            .await
            .expect("image status");
        assert!(status.image.is_none());
    }

    #[tokio::test]
    async fn exec_sync_gives_up_at_the_client_deadline() {
        let fake = Arc::new(FakeRuntime::new());
        let (client, _dir) = serve(Served {
            fake,
            hang_exec: true,
        })
        .await;

        let deadline = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        let err = client
            .exec_sync(
                ExecSyncRequest {
                    container_id: "c1".into(),
                    cmd: vec!["sh".into()],
                    timeout: 0,
                },
                deadline,
            )
            .await
            .expect_err("server never answers");
        let waited = started.elapsed();
        assert!(
            matches!(err, CriError::DeadlineExceeded { op: Op::ExecSync, timeout, .. } if timeout == deadline),
            "{err:?}"
        );
        assert!(waited >= deadline, "returned early: {waited:?}");
        assert!(waited < deadline * 10, "deadline not honoured: {waited:?}");

        // The connection is still usable after a cancelled call.
        client
            .version(VersionRequest::default())
            .await
            .expect("version after timeout");
    }
}
