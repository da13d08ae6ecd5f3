//! Kubernetes API types as Skiff serves them. No I/O happens here.
//!
//! The [`registry`] is one table of resource types; everything the API server does
//! for a type (routing, discovery, OpenAPI, defaulting, validation, Table output,
//! field selectors) is driven from its row, so adding a type means adding a row.
//! Objects travel as `serde_json::Value`; a row's typed codec (k8s-openapi) is used
//! to check and normalize them.

pub mod apply;
pub mod defaults;
pub mod managed_fields;
pub mod merge_keys;
pub mod patch;
pub mod printers;
pub mod quantity;
pub mod quota;
pub mod registry;
pub mod scheduling;
pub mod selector;
pub mod validation;
