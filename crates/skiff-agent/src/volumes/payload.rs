//! What ConfigMap, Secret, downward API and projected volumes contain.
//!
//! Each source becomes a [`Payload`] (path → bytes + mode) with upstream's
//! rules: without `items` every key is a file; with `items` only the listed
//! keys are, at their `path`, and a listed key that is missing is an error
//! unless the source is optional. A mode is the item's, else the volume's
//! `defaultMode`, else 0644.

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};

use super::SetUpError;
use super::atomic::{FileProjection, Payload};
use crate::downward::NodeAllocatable;

/// The mode of files whose volume names none (upstream's API default).
const DEFAULT_MODE: i32 = 0o644;

/// A mode from the pod spec as permission bits; the API allows 0..=0777.
pub fn file_mode(mode: Option<i32>, default_mode: Option<i32>) -> Result<u32, SetUpError> {
    let mode = mode.or(default_mode).unwrap_or(DEFAULT_MODE);
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or(SetUpError::InvalidMode(mode))
}

/// The files of a ConfigMap (`None`: an absent optional one, with no files).
pub fn config_map(
    config_map: Option<&ConfigMap>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, SetUpError> {
    let lookup = |key: &str| -> Option<Vec<u8>> {
        let cm = config_map?;
        if let Some(value) = cm.data.as_ref().and_then(|d| d.get(key)) {
            return Some(value.as_bytes().to_vec());
        }
        cm.binary_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
    };
    let keys = || -> Vec<&str> {
        let Some(cm) = config_map else {
            return Vec::new();
        };
        let data = cm.data.iter().flat_map(|d| d.keys());
        let binary = cm.binary_data.iter().flat_map(|d| d.keys());
        data.chain(binary).map(String::as_str).collect()
    };
    keyed(
        items,
        default_mode,
        optional,
        lookup,
        keys,
        SetUpError::MissingConfigMapKey,
    )
}

/// The files of a Secret (`None`: an absent optional one, with no files).
pub fn secret(
    secret: Option<&Secret>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, SetUpError> {
    let data = secret.and_then(|s| s.data.as_ref());
    let lookup = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone());
    let keys = || {
        data.iter()
            .flat_map(|d| d.keys())
            .map(String::as_str)
            .collect()
    };
    keyed(
        items,
        default_mode,
        optional,
        lookup,
        keys,
        SetUpError::MissingSecretKey,
    )
}

fn keyed<'a>(
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
    lookup: impl Fn(&str) -> Option<Vec<u8>>,
    keys: impl FnOnce() -> Vec<&'a str>,
    missing: impl Fn(String) -> SetUpError,
) -> Result<Payload, SetUpError> {
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            let mode = file_mode(None, default_mode)?;
            for key in keys() {
                if let Some(data) = lookup(key) {
                    payload.insert(
                        key.to_string(),
                        FileProjection {
                            data,
                            mode,
                            owner: None,
                        },
                    );
                }
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = lookup(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(item.key.clone()));
                };
                let mode = file_mode(item.mode, default_mode)?;
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data,
                        mode,
                        owner: None,
                    },
                );
            }
        }
    }
    Ok(payload)
}

/// The files of a downward API volume or projection.
pub fn downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    node: &NodeAllocatable,
) -> Result<Payload, SetUpError> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let mode = file_mode(item.mode, default_mode)?;
        match downward_value(pod, item, node) {
            Ok(value) => {
                let data = value.into_bytes();
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data,
                        mode,
                        owner: None,
                    },
                );
            }
            Err(e) => errors.push(e),
        }
    }
    SetUpError::aggregate(errors).map_or(Ok(payload), Err)
}

fn downward_value(
    pod: &Pod,
    item: &DownwardAPIVolumeFile,
    node: &NodeAllocatable,
) -> Result<String, SetUpError> {
    if let Some(field) = &item.field_ref {
        return crate::downward::field_value(pod, &field.field_path)
            .map_err(|e| SetUpError::Downward(e.to_string()));
    }
    if let Some(resource) = &item.resource_field_ref {
        let container = resource.container_name.as_deref().unwrap_or_default();
        return crate::downward::resource_value(
            pod,
            container,
            &resource.resource,
            resource.divisor.as_ref(),
            node,
        )
        .map_err(|e| SetUpError::Downward(e.to_string()));
    }
    Err(SetUpError::Downward(format!(
        "item {:?} has neither fieldRef nor resourceFieldRef",
        item.path
    )))
}
