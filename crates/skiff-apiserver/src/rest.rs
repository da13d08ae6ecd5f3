//! The generic REST store: one implementation of create, get, update, patch and
//! delete for every resource type, driven by its registry row.
//!
//! Reads of single objects go to the store (always current); lists and watches
//! come from the [`WatchCache`]. Every write is a compare-and-swap on the
//! object's revision; writes retry on conflict, and a client-pinned stale
//! resourceVersion gets 409, as upstream's GuaranteedUpdate does.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use skiff_api::managed_fields::{BuiltinSchema, FieldManager, PathElement};
use skiff_api::registry::{self, FieldError, ResourceType};
use skiff_store::{KeyValue, Store, StoreError};

use crate::admission;
use crate::cache::{Cached, WatchCache, object_key};
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::request::FieldValidation;
use crate::services;
use crate::strategy;
use crate::views;

/// How many times a write retries on conflict.
const MAX_RETRIES: usize = 16;

/// Per-request write settings and the warnings to send back.
#[derive(Debug)]
pub struct WriteContext {
    /// `dryRun=All`: run everything but the store write.
    pub dry_run: bool,
    /// `fieldManager`, or one derived from the User-Agent.
    pub field_manager: String,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `Warning` headers to return.
    pub warnings: Vec<String>,
    /// Server-side apply already recorded the field managers.
    pub applied: bool,
}

impl WriteContext {
    /// A context for writes the server makes itself.
    pub fn internal(manager: &str) -> Self {
        WriteContext {
            dry_run: false,
            field_manager: manager.to_string(),
            field_validation: FieldValidation::Ignore,
            warnings: Vec::new(),
            applied: false,
        }
    }
}

/// `DeleteOptions`, from the body or the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    /// Seconds before a pod is killed; 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// Required uid, if any.
    pub precondition_uid: Option<String>,
    /// Required resourceVersion, if any.
    pub precondition_rv: Option<String>,
}

/// Where an object lives: its type, namespace and name.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// The type.
    pub rt: &'static ResourceType,
    /// Namespace for namespaced types.
    pub namespace: Option<&'a str>,
    /// Name.
    pub name: &'a str,
}

impl ObjectRef<'_> {
    fn key(&self) -> String {
        object_key(self.rt, self.namespace, self.name)
    }
}

/// What a mutation decided.
pub enum Mutation {
    /// Write this object.
    Write(Value),
    /// Nothing changed; answer with the current object.
    Unchanged,
    /// A dry run: answer with this object without writing it.
    DryRun(Value),
}

/// The generic REST store.
pub struct Rest {
    /// The watch cache (lists, watches).
    pub cache: Arc<WatchCache>,
    store: Arc<dyn Store>,
    /// Where clients reach this server.
    advertise: std::net::SocketAddr,
    /// Which optional admission plugins run.
    pub admission: admission::Plugins,
}

impl Rest {
    /// A REST store over `cache` and its store.
    pub fn new(cache: Arc<WatchCache>, advertise: std::net::SocketAddr) -> Self {
        let store = cache.store().clone();
        Rest {
            cache,
            store,
            advertise,
            admission: admission::Plugins::default(),
        }
    }

    /// The current object.
    pub async fn get(&self, target: ObjectRef<'_>) -> ApiResult<Arc<Cached>> {
        let kv = self
            .store
            .get(&target.key())
            .await
            .map_err(|e| ApiError::from_store(target.rt, target.name, e))?
            .ok_or_else(|| ApiError::not_found(target.rt, target.name))?;
        decode(target.rt, &kv)
    }

    /// Creates an object from a request body.
    pub async fn create(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        body: Value,
        ctx: &mut WriteContext,
    ) -> ApiResult<Value> {
        let mut obj = check_type(rt, body)?;
        if rt.namespaced() {
            let ns = namespace.ok_or_else(|| {
                ApiError::bad_request("the namespace of the object must be given in the URL")
            })?;
            match object::namespace(&obj) {
                "" => {
                    object::meta_mut(&mut obj).insert("namespace".into(), json!(ns));
                }
                other if other != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        } else {
            object::meta_mut(&mut obj).remove("namespace");
        }
        assign_name(rt, &mut obj)?;
        let name = object::name(&obj).to_string();
        if let Some(ns) = namespace.filter(|_| rt.namespaced()) {
            self.check_namespace_open(rt, ns, &name).await?;
        }
        let mut obj = normalize(rt, obj, ctx, None)?;
        strategy::prepare_create(rt, &mut obj);
        // The uid comes first: the Job strategy derives its selector from it.
        {
            let meta = object::meta_mut(&mut obj);
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert(
                "creationTimestamp".into(),
                json!(object::format_time(jiff::Timestamp::now())),
            );
            meta.remove("resourceVersion");
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.remove("selfLink");
        }
        skiff_api::defaults::apply_defaults(rt.group, rt.kind, &mut obj);
        skiff_api::defaults::admission_defaults(rt.group, rt.kind, &mut obj);
        admission::priority(self, rt, &name, &mut obj).await?;
        admission::storage::admit(self, rt, &mut obj).await?;
        admission::ingress_class::admit(self, rt, &mut obj).await?;
        admission::limit_ranges(self, rt, &mut obj).await?;
        admission::service_account::admit(self, rt, &name, &mut obj).await?;
        if rt.group == "batch" && rt.kind == "Job" {
            skiff_api::defaults::generate_job_selector(&mut obj);
        }
        reject_invalid(
            rt,
            &name,
            skiff_api::validation::validate(rt.group, rt.kind, &obj, None),
        )?;
        self.record_manager(rt, None, &mut obj, ctx, None);
        let target = ObjectRef {
            rt,
            namespace: namespace.filter(|_| rt.namespaced()),
            name: &name,
        };
        let charge = admission::quota::admit_create(self, rt, &obj, ctx.dry_run).await?;
        // Service addresses are reserved last, once nothing else can refuse
        // the object, and freed again if it is not stored.
        let allocation = match services::allocate_create(self, rt, &mut obj, ctx.dry_run).await {
            Ok(allocation) => allocation,
            Err(e) => {
                charge.refund(self).await;
                return Err(e);
            }
        };
        if ctx.dry_run {
            return Ok(obj);
        }
        let stored = match encode(rt, &obj) {
            Ok(bytes) => {
                let key = target.key();
                self.store_write(rt, &key, bytes, &obj, |bytes| {
                    self.store.create(&key, bytes)
                })
                .await
                .map_err(|e| ApiError::from_store(rt, &name, e))
            }
            Err(e) => Err(e),
        };
        match stored {
            Ok(revision) => {
                allocation.commit(self).await;
                object::set_resource_version(&mut obj, revision);
                Ok(obj)
            }
            Err(e) => {
                charge.refund(self).await;
                allocation.revert(self).await;
                Err(e)
            }
        }
    }

    /// Reads, mutates and writes one object with compare-and-swap, retrying on
    /// conflict; a mutation that pins a stale resourceVersion gets 409.
    /// `mutate` sees the current object and returns the new one; the new
    /// object's `metadata.resourceVersion`, if set, is the client's precondition.
    pub async fn guaranteed_update<F>(
        &self,
        target: ObjectRef<'_>,
        mut mutate: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<Mutation>,
    {
        let key = target.key();
        for _ in 0..MAX_RETRIES {
            let current = self.get(target).await?;
            let (mut new, dry_run) = match mutate(&current.object)? {
                Mutation::Unchanged => return Ok(current.object.clone()),
                Mutation::Write(new) => (new, false),
                Mutation::DryRun(new) => (new, true),
            };
            let precondition = object::resource_version(&new).to_string();
            if !precondition.is_empty() && precondition != current.revision.to_string() {
                return Err(ApiError::conflict(
                    target.rt,
                    target.name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let removing = strategy::ready_to_remove(target.rt, &new);
            admission::admit_update(self, target.rt, &current.object, &new).await?;
            let charge =
                admission::quota::admit_update(self, target.rt, &current.object, &new, dry_run)
                    .await?;
            let allocation = if removing {
                services::Allocation::none()
            } else {
                match services::allocate_update(self, target.rt, &current.object, &mut new, dry_run)
                    .await
                {
                    Ok(allocation) => allocation,
                    Err(e) => {
                        charge.refund(self).await;
                        return Err(e);
                    }
                }
            };
            if dry_run {
                object::set_resource_version(&mut new, current.revision);
                return Ok(new);
            }
            object::meta_mut(&mut new).remove("resourceVersion");
            let result = if removing {
                self.store
                    .delete(&key, Some(current.revision))
                    .await
                    .map(|(rev, _)| rev)
            } else {
                match encode(target.rt, &new) {
                    Ok(bytes) => {
                        self.store_write(target.rt, &key, bytes, &new, |bytes| {
                            self.store.update(&key, bytes, current.revision)
                        })
                        .await
                    }
                    Err(e) => {
                        allocation.revert(self).await;
                        charge.refund(self).await;
                        return Err(e);
                    }
                }
            };
            match result {
                Ok(revision) => {
                    allocation.commit(self).await;
                    if removing {
                        services::release(self, target.rt, &current.object).await;
                    }
                    object::set_resource_version(&mut new, revision);
                    return Ok(new);
                }
                // Retry: the mutation runs again on the fresh object, and a
                // pinned resourceVersion then fails the precondition with 409.
                Err(StoreError::Conflict { .. }) => {
                    allocation.revert(self).await;
                    charge.refund(self).await;
                }
                Err(e) => {
                    allocation.revert(self).await;
                    charge.refund(self).await;
                    return Err(ApiError::from_store(target.rt, target.name, e));
                }
            }
        }
        Err(ApiError::conflict(
            target.rt,
            target.name,
            "too many concurrent writers; please retry",
        ))
    }

    /// Runs the update admission chain on a proposed new object: type and name
    /// checks, normalization, strategy, defaults, validation and field managers.
    /// Returns `Unchanged` when the result equals `old`.
    pub fn admit_update(
        &self,
        target: ObjectRef<'_>,
        subresource: Option<&str>,
        old: &Value,
        new: Value,
        ctx: &mut WriteContext,
    ) -> ApiResult<Mutation> {
        let rt = target.rt;
        let new = check_type(rt, new)?;
        let precondition = object::resource_version(&new);
        if !precondition.is_empty() && precondition != object::resource_version(old) {
            return Err(ApiError::conflict(
                rt,
                target.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let body_name = object::name(&new);
        if !body_name.is_empty() && body_name != target.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                target.name
            )));
        }
        let body_ns = object::namespace(&new);
        if rt.namespaced() && !body_ns.is_empty() && Some(body_ns) != target.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut new = normalize(rt, new, ctx, Some(old))?;
        {
            let meta = object::meta_mut(&mut new);
            meta.insert("name".into(), json!(target.name));
            match target.namespace.filter(|_| rt.namespaced()) {
                Some(ns) => meta.insert("namespace".into(), json!(ns)),
                None => meta.remove("namespace"),
            };
        }
        strategy::prepare_update(rt, subresource, &mut new, old);
        if services::is_service(rt) && subresource.is_none() {
            services::prepare_update(&mut new, old);
        }
        skiff_api::defaults::apply_defaults(rt.group, rt.kind, &mut new);
        reject_invalid(
            rt,
            target.name,
            skiff_api::validation::validate_update(rt.group, rt.kind, subresource, &new, old),
        )?;
        self.record_manager(rt, Some(old), &mut new, ctx, subresource);
        if same_object(&new, old) {
            return Ok(Mutation::Unchanged);
        }
        if object::is_deleting(old) {
            let added: Vec<String> = object::finalizers(&new)
                .into_iter()
                .filter(|f| !object::finalizers(old).contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::forbidden(
                    rt,
                    target.name,
                    &format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                ));
            }
        }
        Ok(Mutation::Write(new))
    }

    /// Stores `bytes`, the encoding of `object`, with `write`, telling the
    /// watch cache what is written so that it need not decode it again.
    /// View objects are stored converted, so not those.
    async fn store_write<F, Fut>(
        &self,
        rt: &'static ResourceType,
        key: &str,
        bytes: bytes::Bytes,
        object: &Value,
        write: F,
    ) -> Result<skiff_store::Revision, StoreError>
    where
        F: FnOnce(bytes::Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<skiff_store::Revision, StoreError>>,
    {
        let expected = !views::is_view(rt);
        if expected {
            self.cache.expect_write(key, &bytes, object);
        }
        let result = write(bytes.clone()).await;
        if expected && result.is_err() {
            self.cache.forget(key, &bytes);
        }
        result
    }

    fn record_manager(
        &self,
        rt: &ResourceType,
        old: Option<&Value>,
        new: &mut Value,
        ctx: &WriteContext,
        subresource: Option<&str>,
    ) {
        if ctx.applied {
            return;
        }
        let schema = BuiltinSchema {
            group: rt.group,
            kind: rt.kind,
        };
        let api_version = rt.api_version();
        let manager = field_manager(&schema, rt, &api_version, &ctx.field_manager, subresource);
        if let Err(e) = manager.record_update(old, new) {
            // Upstream proceeds without managedFields rather than failing the write.
            tracing::warn!(kind = rt.kind, error = %e, "managedFields not recorded");
        }
    }

    /// Refuses writes into a namespace that is missing or terminating.
    pub async fn check_namespace_open(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
    ) -> ApiResult<()> {
        let ns_rt = registry::by_plural("", "v1", "namespaces").expect("namespaces are served");
        let kv = self
            .store
            .get(&object_key(ns_rt, None, ns))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(ns_rt, ns));
        };
        let namespace: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("stored namespace {ns} is corrupt: {e}")))?;
        if object::is_deleting(&namespace) {
            return Err(ApiError::forbidden(
                rt,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    /// Deletes an object, honouring finalizers, preconditions and (for pods)
    /// graceful deletion. Returns the object as deleted or as now terminating.
    pub async fn delete(
        &self,
        target: ObjectRef<'_>,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let key = target.key();
        let rt = target.rt;
        for _ in 0..MAX_RETRIES {
            let current = self.get(target).await?;
            let obj = &current.object;
            if let Some(uid) = &options.precondition_uid
                && uid != object::uid(obj)
            {
                return Err(ApiError::conflict(
                    rt,
                    target.name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object::uid(obj)
                    ),
                ));
            }
            if let Some(rv) = &options.precondition_rv
                && *rv != current.revision.to_string()
            {
                return Err(ApiError::conflict(
                    rt,
                    target.name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.revision
                    ),
                ));
            }
            let grace = graceful_seconds(rt, obj, options);
            let mut finalizers = object::finalizers(obj);
            match options.propagation_policy.as_deref() {
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into())
                }
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                _ => {}
            }
            if finalizers.is_empty() && grace == 0 {
                if dry_run {
                    return Ok(obj.clone());
                }
                match self.store.delete(&key, Some(current.revision)).await {
                    Ok((revision, _)) => {
                        services::release(self, rt, obj).await;
                        let mut gone = obj.clone();
                        object::set_resource_version(&mut gone, revision);
                        return Ok(gone);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(rt, target.name, e)),
                }
            }
            // A repeated delete may only shorten the grace period, as upstream's
            // graceful deletion has it (a node agent finishing with grace 0).
            let current_grace = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
            let shortens = current_grace.is_some_and(|current| grace < current);
            if object::is_deleting(obj) && finalizers == object::finalizers(obj) && !shortens {
                return Ok(obj.clone());
            }
            let mut marked = obj.clone();
            let now = jiff::Timestamp::now();
            let deadline = now + jiff::SignedDuration::from_secs(grace);
            object::set_finalizers(&mut marked, &finalizers);
            {
                let meta = object::meta_mut(&mut marked);
                if !meta.contains_key("deletionTimestamp") || shortens {
                    meta.insert(
                        "deletionTimestamp".into(),
                        json!(object::format_time(deadline)),
                    );
                }
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                meta.remove("resourceVersion");
            }
            if dry_run {
                return Ok(marked);
            }
            match self
                .store
                .update(&key, encode(rt, &marked)?, current.revision)
                .await
            {
                Ok(revision) => {
                    object::set_resource_version(&mut marked, revision);
                    return Ok(marked);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(rt, target.name, e)),
            }
        }
        Err(ApiError::conflict(
            rt,
            target.name,
            "too many concurrent writers; please retry",
        ))
    }

    /// The address clients reach this server at.
    pub fn advertise(&self) -> std::net::SocketAddr {
        self.advertise
    }

    /// The store behind this REST layer.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// A field manager for a write through `subresource`, ignoring the fields
/// that write cannot change (upstream's strategy reset fields).
pub fn field_manager<'a>(
    schema: &'a BuiltinSchema<'a>,
    rt: &'a ResourceType,
    api_version: &'a str,
    manager: &'a str,
    subresource: Option<&'a str>,
) -> FieldManager<'a> {
    let mut fm = FieldManager::new(
        schema,
        api_version,
        rt.kind,
        manager,
        subresource.unwrap_or_default(),
        jiff::Timestamp::now(),
    );
    let reset: &[&str] = match subresource {
        Some("status") => &["spec", "metadata"],
        None if rt.has_status => &["status"],
        _ => &[],
    };
    for field in reset {
        fm.ignored
            .insert(&[PathElement::Field((*field).to_string())]);
    }
    fm
}

/// Seconds of grace for deleting `obj`: only pods bound to a node get any.
fn graceful_seconds(rt: &ResourceType, obj: &Value, options: &DeleteOptions) -> i64 {
    if !rt.group.is_empty() || rt.kind != "Pod" {
        return 0;
    }
    let bound = obj["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    options
        .grace_period_seconds
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

/// Decodes a stored object.
/// Decodes a stored object into the form `rt` serves.
pub fn decode(rt: &'static ResourceType, kv: &KeyValue) -> ApiResult<Arc<Cached>> {
    Cached::from_kv(kv)
        .map(|cached| views::present(rt, Arc::new(cached)))
        .map_err(|e| ApiError::internal(format!("stored {} {} is corrupt: {e}", rt.kind, kv.key)))
}

/// Serializes an object for the store, in its stored form and without its
/// resourceVersion; the object is copied only when it has to be changed.
fn encode(rt: &'static ResourceType, obj: &Value) -> ApiResult<bytes::Bytes> {
    let encoded = if views::is_view(rt) || !object::resource_version(obj).is_empty() {
        let mut obj = views::to_storage(rt, obj.clone());
        object::meta_mut(&mut obj).remove("resourceVersion");
        serde_json::to_vec(&obj)
    } else {
        serde_json::to_vec(obj)
    };
    encoded
        .map(bytes::Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

/// Checks `apiVersion`/`kind` against the type and fills them in when absent.
pub fn check_type(rt: &ResourceType, mut obj: Value) -> ApiResult<Value> {
    let api_version = rt.api_version();
    let Some(root) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the request body must be an object"));
    };
    match root.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            root.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match root.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            root.insert("kind".into(), json!(rt.kind));
        }
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    Ok(obj)
}

/// Characters upstream uses for generated name suffixes (no vowels, no
/// look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Resolves `generateName` into a name; requires one or the other.
fn assign_name(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    if !object::name(obj).is_empty() {
        return Ok(());
    }
    let prefix = object::meta_str(obj, "generateName").to_string();
    if prefix.is_empty() {
        return Err(ApiError::invalid(
            rt,
            "",
            &[FieldError {
                reason: "FieldValueRequired",
                field: "metadata.name".into(),
                message: "Required value: name or generateName is required".into(),
            }],
        ));
    }
    let random = uuid::Uuid::new_v4();
    let suffix: String = random
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| NAME_ALPHABET[usize::from(*b) % NAME_ALPHABET.len()] as char)
        .collect();
    // Upstream trims the prefix so that prefix + suffix stays within 63 chars.
    let max_prefix = 63 - suffix.len();
    let prefix: String = prefix.chars().take(max_prefix).collect();
    object::meta_mut(obj).insert("name".into(), json!(format!("{prefix}{suffix}")));
    Ok(())
}

/// Round-trips the object through its typed codec: type errors become 400,
/// unknown fields are refused, warned about or dropped per `fieldValidation`.
///
/// managedFields equal to those `old` (the stored object) has are set aside
/// for the round trip: this server wrote them, so they already are in typed
/// form, and decoding every entry's field set again was the largest part of
/// the codec's cost for updates (a status write copies them unchanged).
fn normalize(
    rt: &ResourceType,
    mut obj: Value,
    ctx: &mut WriteContext,
    old: Option<&Value>,
) -> ApiResult<Value> {
    let kept = old.and_then(|old| take_stored_managed_fields(&mut obj, old));
    let mut normalized = normalize_typed(rt, obj, ctx)?;
    if let Some(fields) = kept {
        object::meta_mut(&mut normalized).insert("managedFields".into(), fields);
    }
    Ok(normalized)
}

/// Takes `metadata.managedFields` out of `obj` (leaving an empty list in its
/// place, so the key keeps its position) if they equal `old`'s.
fn take_stored_managed_fields(obj: &mut Value, old: &Value) -> Option<Value> {
    let stored = object::meta(old)?.get("managedFields")?;
    let fields = obj
        .get_mut("metadata")?
        .as_object_mut()?
        .get_mut("managedFields")?;
    (fields == stored).then(|| std::mem::replace(fields, Value::Array(Vec::new())))
}

fn normalize_typed(rt: &ResourceType, obj: Value, ctx: &mut WriteContext) -> ApiResult<Value> {
    let undecodable = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            rt.kind, rt.version, rt.kind
        ))
    };
    let normalized = (rt.codec)(&obj).map_err(|e| undecodable(&e))?;
    if let Some(quantities) = crate::openapi::quantity_shape(rt.group, rt.version, rt.kind) {
        quantities.check(&obj).map_err(|e| undecodable(&e))?;
    }
    let mut unknown = Vec::new();
    unknown_fields(&obj, &normalized, "", &mut unknown);
    let mut normalized = normalized;
    prune_added(&obj, &mut normalized, true);
    if !unknown.is_empty() {
        match ctx.field_validation {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                let message = format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    rt.kind,
                    rt.version,
                    rt.kind,
                    list.join(", ")
                );
                return Err(ApiError::bad_request(message));
            }
            FieldValidation::Warn => {
                ctx.warnings
                    .extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            }
            FieldValidation::Ignore => {}
        }
    }
    Ok(normalized)
}

/// Removes what the typed round trip added: k8s-openapi fills required fields
/// the client left out (`selector: {}`, `containers: []`), where upstream
/// keeps them absent so that validation reports them as required.
fn prune_added(input: &Value, normalized: &mut Value, root: bool) {
    match (input, normalized) {
        (Value::Object(a), Value::Object(b)) => {
            b.retain(|key, _| {
                a.contains_key(key)
                    || (root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
            });
            for (key, value) in b.iter_mut() {
                if let Some(original) = a.get(key) {
                    prune_added(original, value, false);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (original, value) in a.iter().zip(b.iter_mut()) {
                prune_added(original, value, false);
            }
        }
        _ => {}
    }
}

/// Paths present (and non-null) in `input` but absent from `normalized`.
fn unknown_fields(input: &Value, normalized: &Value, path: &str, out: &mut Vec<String>) {
    match (input, normalized) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get(key) {
                    None if !value.is_null() => out.push(child),
                    None => {}
                    Some(nv) => unknown_fields(value, nv, &child, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (value, nv)) in a.iter().zip(b).enumerate() {
                unknown_fields(value, nv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn reject_invalid(rt: &ResourceType, name: &str, errors: Vec<FieldError>) -> ApiResult<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, name, &errors))
    }
}

/// Equal apart from resourceVersion and managed-field timestamps (a missing
/// or non-object `metadata` counts as empty). Compares in place: no copies.
fn same_object(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let empty = Map::new();
    let meta_a = a
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let meta_b = b
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    equal_except(a, b, "metadata", |_, x, y| x == y)
        && equal_except(meta_a, meta_b, "resourceVersion", |key, x, y| {
            if key != "managedFields" {
                return x == y;
            }
            match (x.as_array(), y.as_array()) {
                (Some(x), Some(y)) => {
                    x.len() == y.len()
                        && x.iter()
                            .zip(y)
                            .all(|(e, f)| match (e.as_object(), f.as_object()) {
                                (Some(e), Some(f)) => equal_except(e, f, "time", |_, v, w| v == w),
                                _ => e == f,
                            })
                }
                _ => x == y,
            }
        })
}

/// Maps with the same keys apart from `skip`, their values equal by `eq`.
fn equal_except(
    x: &Map<String, Value>,
    y: &Map<String, Value>,
    skip: &str,
    eq: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let count = |m: &Map<String, Value>| m.keys().filter(|k| *k != skip).count();
    count(x) == count(y)
        && x.iter()
            .filter(|(k, _)| *k != skip)
            .all(|(k, v)| y.get(k).is_some_and(|w| eq(k, v, w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_by_path() {
        let input = json!({"spec": {"replicas": 1, "bogus": true, "template": {"x": null},
            "containers": [{"name": "a", "nope": 1}]}});
        let normalized =
            json!({"spec": {"replicas": 1, "template": {}, "containers": [{"name": "a"}]}});
        let mut out = Vec::new();
        unknown_fields(&input, &normalized, "", &mut out);
        assert_eq!(out, vec!["spec.bogus", "spec.containers[0].nope"]);
    }

    #[test]
    fn stored_managed_fields_skip_the_codec_in_place() {
        let rt = registry::by_kind("", "ConfigMap").unwrap();
        let fields = json!([{"manager": "m", "operation": "Update", "apiVersion": "v1",
            "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]);
        let old = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "managedFields": fields, "uid": "u"}, "data": {"k": "v"}});
        let mut new = old.clone();
        new["data"]["k"] = json!("w");
        let mut ctx = WriteContext::internal("test");
        let normalized = normalize(rt, new.clone(), &mut ctx, Some(&old)).unwrap();
        assert_eq!(normalized, new);
        let keys: Vec<&String> = normalized["metadata"].as_object().unwrap().keys().collect();
        let typed = normalize(rt, new.clone(), &mut ctx, None).unwrap();
        let typed_keys: Vec<&String> = typed["metadata"].as_object().unwrap().keys().collect();
        assert_eq!(keys, typed_keys);
        // Changed managedFields still go through the codec and its checks.
        let mut bad = new.clone();
        bad["metadata"]["managedFields"] = json!([{"manager": 5}]);
        assert_eq!(
            normalize(rt, bad, &mut ctx, Some(&old))
                .unwrap_err()
                .code
                .as_u16(),
            400
        );
    }

    #[test]
    fn typed_fill_ins_are_pruned() {
        let input = json!({"spec": {"template": {}, "ports": [{"port": 80}]}});
        let mut normalized = json!({"apiVersion": "v1", "kind": "X", "metadata": {},
            "spec": {"selector": {}, "template": {}, "ports": [{"port": 80, "name": ""}]}});
        prune_added(&input, &mut normalized, true);
        assert_eq!(
            normalized,
            json!({"apiVersion": "v1", "kind": "X", "metadata": {},
            "spec": {"template": {}, "ports": [{"port": 80}]}})
        );
    }

    #[test]
    fn equality_ignores_resource_version_and_times() {
        let a = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "m", "time": "t1"}]}});
        let b = json!({"metadata": {"resourceVersion": "2", "managedFields": [{"manager": "m", "time": "t2"}]}});
        assert!(same_object(&a, &b));
        let c = json!({"metadata": {"managedFields": [{"manager": "other", "time": "t2"}]}});
        assert!(!same_object(&a, &c));
        let bare = json!({"spec": {"x": 1}});
        let with_rv = json!({"metadata": {"resourceVersion": "9"}, "spec": {"x": 1}});
        assert!(same_object(&bare, &with_rv));
        let changed = json!({"metadata": {"resourceVersion": "9"}, "spec": {"x": 2}});
        assert!(!same_object(&bare, &changed));
        let extra = json!({"metadata": {"name": "n"}, "spec": {"x": 1}});
        assert!(!same_object(&with_rv, &extra));
    }
}
