//! Security settings of sandboxes and containers, by upstream's rules
//! (`kuberuntime/security_context.go`, `securitycontext/util.go`).
//!
//! A container's settings are its own where it sets them, else the pod's
//! (user, group, seccomp). Capabilities, privilege, a read-only root and
//! `allowPrivilegeEscalation` are container-only. Supplemental groups are the
//! pod's `fsGroup` then `supplementalGroups`.

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SeccompProfile};
use skiff_cri::v1::{
    Capability, Int64Value, LinuxContainerSecurityContext, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, SecurityProfile, SupplementalGroupsPolicy,
    security_profile::ProfileType,
};

use super::ConfigError;

/// `/proc` and `/sys` paths hidden from unprivileged containers (upstream's
/// default `procMount`).
const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// `/proc` paths read-only in unprivileged containers.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn pod_security(pod: &Pod) -> PodSecurityContext {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default()
}

/// The pod's namespaces: the host's where `hostNetwork`/`hostPID`/`hostIPC`
/// ask for them; otherwise one network and IPC namespace for the pod, and a
/// PID namespace per container unless `shareProcessNamespace`.
pub(super) fn namespace_options(pod: &Pod) -> NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |host: Option<bool>, otherwise: NamespaceMode| {
        if host.unwrap_or(false) {
            NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let pid_otherwise = if spec.share_process_namespace.unwrap_or(false) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    NamespaceOption {
        network: mode(spec.host_network, NamespaceMode::Pod),
        pid: mode(spec.host_pid, pid_otherwise),
        ipc: mode(spec.host_ipc, NamespaceMode::Pod),
        ..NamespaceOption::default()
    }
}

/// `fsGroup`, then `supplementalGroups`.
fn supplemental_groups(security: &PodSecurityContext) -> Vec<i64> {
    security
        .fs_group
        .into_iter()
        .chain(security.supplemental_groups.iter().flatten().copied())
        .collect()
}

fn groups_policy(security: &PodSecurityContext) -> Result<i32, ConfigError> {
    match security.supplemental_groups_policy.as_deref() {
        None | Some("Merge") => Ok(SupplementalGroupsPolicy::Merge as i32),
        Some("Strict") => Ok(SupplementalGroupsPolicy::Strict as i32),
        Some(other) => Err(ConfigError::Unsupported(format!(
            "unsupported supplementalGroupsPolicy: {other}"
        ))),
    }
}

/// Whether any container of the pod is privileged (the sandbox must be too,
/// or the runtime refuses them).
fn any_privileged(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let privileged =
        |sc: Option<&k8s_openapi::api::core::v1::SecurityContext>| sc.and_then(|s| s.privileged);
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| privileged(c.security_context.as_ref()).unwrap_or(false))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()).unwrap_or(false))
}

/// The sandbox's security context. The pause container always runs under
/// the runtime's default seccomp profile, as upstream asks.
pub(super) fn sandbox_security(pod: &Pod) -> Result<LinuxSandboxSecurityContext, ConfigError> {
    let security = pod_security(pod);
    Ok(LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        run_as_user: security.run_as_user.map(|value| Int64Value { value }),
        run_as_group: security.run_as_group.map(|value| Int64Value { value }),
        supplemental_groups: supplemental_groups(&security),
        supplemental_groups_policy: groups_policy(&security)?,
        privileged: any_privileged(pod),
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..LinuxSandboxSecurityContext::default()
    })
}

/// A seccomp profile of the API as a CRI one. Localhost profiles need a
/// profile directory on the node, which the agent does not keep.
fn seccomp(profile: Option<&SeccompProfile>) -> Result<SecurityProfile, ConfigError> {
    let profile_type = match profile.map(|p| p.type_.as_str()) {
        Some("RuntimeDefault") => ProfileType::RuntimeDefault,
        Some("Localhost") => {
            return Err(ConfigError::Unsupported(
                "seccomp profiles of type Localhost are not supported on this node".into(),
            ));
        }
        // Unconfined, or nothing asked (upstream's kubelet default).
        _ => ProfileType::Unconfined,
    };
    Ok(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: String::new(),
    })
}

/// The container's security context.
pub(super) fn container_security(
    pod: &Pod,
    container: &Container,
) -> Result<LinuxContainerSecurityContext, ConfigError> {
    let pod_security = pod_security(pod);
    let security = container.security_context.clone().unwrap_or_default();
    let privileged = security.privileged.unwrap_or(false);
    let capabilities = security.capabilities.clone().map(|c| Capability {
        add_capabilities: c.add.unwrap_or_default(),
        drop_capabilities: c.drop.unwrap_or_default(),
        ..Capability::default()
    });
    // Privileged containers see everything (the runtime would clear the
    // lists anyway); `procMount: Unmasked` asks for the same.
    let unmasked = privileged || security.proc_mount.as_deref() == Some("Unmasked");
    let paths = |list: &[&str]| {
        if unmasked {
            Vec::new()
        } else {
            list.iter().map(|p| p.to_string()).collect()
        }
    };
    Ok(LinuxContainerSecurityContext {
        capabilities,
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: security
            .run_as_user
            .or(pod_security.run_as_user)
            .map(|value| Int64Value { value }),
        run_as_group: security
            .run_as_group
            .or(pod_security.run_as_group)
            .map(|value| Int64Value { value }),
        readonly_rootfs: security.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(&pod_security),
        supplemental_groups_policy: groups_policy(&pod_security)?,
        no_new_privs: security.allow_privilege_escalation == Some(false),
        masked_paths: paths(&MASKED_PATHS),
        readonly_paths: paths(&READONLY_PATHS),
        seccomp: Some(seccomp(
            security
                .seccomp_profile
                .as_ref()
                .or(pod_security.seccomp_profile.as_ref()),
        )?),
        ..LinuxContainerSecurityContext::default()
    })
}
