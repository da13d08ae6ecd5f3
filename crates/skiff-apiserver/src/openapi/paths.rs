//! The routes of each registry row, as OpenAPI operations.
//!
//! One neutral model ([`Route`]) is built per row and rendered into either
//! dialect, so the v2 and v3 documents describe exactly the same operations.
//! Operation ids, `x-kubernetes-action` values and path shapes follow upstream's
//! installer: `readAppsV1NamespacedDeployment`, actions `get`/`list`/`post`/`put`/
//! `patch`/`delete`/`deletecollection`/`watch`/`watchlist`/`connect`, and the
//! deprecated `/watch/` paths. Every PATCH lists `fieldValidation`, because
//! kubectl looks for it there before it sends `fieldValidation=Strict`.

use serde_json::{Map, Value, json};
use skiff_api::registry::{ResourceType, Subresource};

use super::schemas::{
    DELETE_OPTIONS, Definitions, Dialect, Gvk, PATCH, REF_PREFIX, STATUS, WATCH_EVENT,
};

/// Media types object responses are served in.
const PRODUCES: &[&str] = &["application/json", "application/yaml"];
/// Media types of list and watch responses.
const PRODUCES_STREAM: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];
/// Media types of connect (exec, attach, port-forward, proxy) responses.
const PRODUCES_ANY: &[&str] = &["*/*"];
/// Media types of `pods/log`.
const PRODUCES_TEXT: &[&str] = &["text/plain", "application/json", "application/yaml"];
/// Bodies of create, update and delete.
const CONSUMES_ANY: &[&str] = &["*/*"];
/// The patch types every PATCH accepts.
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// One operation on one path.
#[derive(Debug, Clone)]
pub(super) struct Route {
    /// Absolute path, e.g. `/apis/apps/v1/namespaces/{namespace}/deployments/{name}`.
    pub(super) path: String,
    /// Lowercase HTTP method: `get`, `put`, `post`, `patch`, `delete`.
    pub(super) method: &'static str,
    /// `x-kubernetes-action`.
    pub(super) action: &'static str,
    /// Upstream-style id, e.g. `readAppsV1NamespacedDeployment`.
    pub(super) operation_id: String,
    /// One line for humans.
    pub(super) description: String,
    /// `group_version` tag, e.g. `apps_v1`.
    pub(super) tag: String,
    /// `x-kubernetes-group-version-kind` of the operation.
    pub(super) gvk: Gvk,
    /// Path parameters, then query parameters sorted by name.
    params: Vec<Param>,
    /// The request body, if the operation takes one.
    body: Option<RequestBody>,
    /// Responses by status code, 401 always last.
    responses: Vec<Response>,
    /// Media types of successful responses.
    produces: &'static [&'static str],
}

/// A path or query parameter.
#[derive(Debug, Clone)]
struct Param {
    name: &'static str,
    in_path: bool,
    ty: &'static str,
    description: String,
}

/// A request body: which definition, under which media types.
#[derive(Debug, Clone)]
struct RequestBody {
    definition: String,
    required: bool,
    content_types: &'static [&'static str],
}

/// One documented response.
#[derive(Debug, Clone)]
struct Response {
    code: &'static str,
    description: &'static str,
    payload: Payload,
}

/// What a response or body carries.
#[derive(Debug, Clone)]
enum Payload {
    /// A definition by name.
    Definition(String),
    /// Free-form text (logs, streams).
    Text,
    /// Nothing documented (a subresource kind without a schema).
    Unknown,
}

/// Everything about a row the route builders need.
struct Ctx<'a> {
    rt: &'a ResourceType,
    defs: &'a Definitions,
    /// `/api/v1` or `/apis/{group}/{version}`.
    prefix: String,
    /// Operation id infix, e.g. `AppsV1`.
    id_prefix: String,
    tag: String,
    /// `Namespaced` for namespaced rows, otherwise empty.
    namespaced: &'static str,
}

/// Every route of one registry row.
pub(super) fn routes(rt: &ResourceType, defs: &Definitions) -> Vec<Route> {
    let prefix = if rt.group.is_empty() {
        format!("/api/{}", rt.version)
    } else {
        format!("/apis/{}/{}", rt.group, rt.version)
    };
    let ctx = Ctx {
        rt,
        defs,
        prefix,
        id_prefix: operation_prefix(rt.group, rt.version),
        tag: tag(rt.group, rt.version),
        namespaced: if rt.namespaced() { "Namespaced" } else { "" },
    };
    let mut out = Vec::new();
    ctx.resource_routes(&mut out);
    for sub in rt.subresources {
        ctx.subresource_routes(sub, &mut out);
    }
    out
}

impl Ctx<'_> {
    fn gvk(&self) -> Gvk {
        (self.rt.group, self.rt.version, self.rt.kind)
    }

    fn has(&self, verb: &str) -> bool {
        self.rt.verbs.contains(&verb)
    }

    fn object(&self) -> Payload {
        self.defs
            .kind(self.gvk())
            .map_or(Payload::Unknown, |d| Payload::Definition(d.into()))
    }

    fn list(&self) -> Payload {
        self.defs
            .list(self.gvk())
            .map_or(Payload::Unknown, |d| Payload::Definition(d.into()))
    }

    /// `(collection path, item path, path params of the collection)`, optionally
    /// under `/watch`.
    fn paths(&self, watch: bool) -> (String, String, Vec<Param>) {
        let watch = if watch { "/watch" } else { "" };
        let (collection, params) = if self.rt.namespaced() {
            (
                format!(
                    "{}{watch}/namespaces/{{namespace}}/{}",
                    self.prefix, self.rt.plural
                ),
                vec![namespace_param()],
            )
        } else {
            (
                format!("{}{watch}/{}", self.prefix, self.rt.plural),
                Vec::new(),
            )
        };
        let item = format!("{collection}/{{name}}");
        (collection, item, params)
    }

    fn route(&self, path: &str, method: &'static str, action: &'static str, id: String) -> Route {
        Route {
            path: path.to_string(),
            method,
            action,
            operation_id: id,
            description: String::new(),
            tag: self.tag.clone(),
            gvk: self.gvk(),
            params: Vec::new(),
            body: None,
            responses: Vec::new(),
            produces: PRODUCES,
        }
    }

    /// `{verb}{AppsV1}{rest}`, upstream's operation id shape.
    fn id(&self, verb: &str, rest: &str) -> String {
        format!("{verb}{}{rest}", self.id_prefix)
    }

    fn resource_routes(&self, out: &mut Vec<Route>) {
        let kind = self.rt.kind;
        let ns = self.namespaced;
        let (collection, item, path_params) = self.paths(false);
        // Path params sorted by name, as upstream lists them: `name`, `namespace`.
        let with_name = |mut params: Vec<Param>| {
            params.push(name_param(kind));
            params.sort_by_key(|p| p.name);
            params
        };
        let object = self.object();

        if self.has("list") {
            let mut r = self.route(
                &collection,
                "get",
                "list",
                self.id("list", &format!("{ns}{kind}")),
            );
            r.description = format!("list or watch objects of kind {kind}");
            r.params = params(path_params.clone(), &[LIST, &[PRETTY]]);
            r.responses = ok(self.list());
            r.produces = PRODUCES_STREAM;
            out.push(r);
            if self.rt.namespaced() {
                let all = format!("{}/{}", self.prefix, self.rt.plural);
                let mut r = self.route(
                    &all,
                    "get",
                    "list",
                    self.id("list", &format!("{kind}ForAllNamespaces")),
                );
                r.description = format!("list or watch objects of kind {kind} in all namespaces");
                r.params = params(Vec::new(), &[LIST, &[PRETTY]]);
                r.responses = ok(self.list());
                r.produces = PRODUCES_STREAM;
                out.push(r);
            }
        }
        if self.has("create") {
            let mut r = self.route(
                &collection,
                "post",
                "post",
                self.id("create", &format!("{ns}{kind}")),
            );
            r.description = format!("create {} {kind}", article(kind));
            r.params = params(path_params.clone(), &[WRITE, &[PRETTY]]);
            r.body = Some(body(&object, CONSUMES_ANY, true));
            r.responses = responses(
                &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                &object,
            );
            out.push(r);
        }
        if self.has("deletecollection") {
            let mut r = self.route(
                &collection,
                "delete",
                "deletecollection",
                self.id("delete", &format!("Collection{ns}{kind}")),
            );
            r.description = format!("delete collection of {kind}");
            r.params = params(path_params.clone(), &[DELETE, LIST_FOR_DELETE, &[PRETTY]]);
            r.body = Some(body(
                &Payload::Definition(DELETE_OPTIONS.into()),
                CONSUMES_ANY,
                false,
            ));
            r.responses = ok(Payload::Definition(STATUS.into()));
            out.push(r);
        }
        if self.has("get") {
            let mut r = self.route(&item, "get", "get", self.id("read", &format!("{ns}{kind}")));
            r.description = format!("read the specified {kind}");
            r.params = params(with_name(path_params.clone()), &[&[PRETTY]]);
            r.responses = ok(object.clone());
            out.push(r);
        }
        if self.has("update") {
            let mut r = self.route(
                &item,
                "put",
                "put",
                self.id("replace", &format!("{ns}{kind}")),
            );
            r.description = format!("replace the specified {kind}");
            r.params = params(with_name(path_params.clone()), &[WRITE, &[PRETTY]]);
            r.body = Some(body(&object, CONSUMES_ANY, true));
            r.responses = responses(&[("200", "OK"), ("201", "Created")], &object);
            out.push(r);
        }
        if self.has("patch") {
            let mut r = self.route(
                &item,
                "patch",
                "patch",
                self.id("patch", &format!("{ns}{kind}")),
            );
            r.description = format!("partially update the specified {kind}");
            r.params = params(with_name(path_params.clone()), &[WRITE, &[FORCE, PRETTY]]);
            r.body = Some(body(&Payload::Definition(PATCH.into()), PATCH_TYPES, true));
            r.responses = responses(&[("200", "OK"), ("201", "Created")], &object);
            out.push(r);
        }
        if self.has("delete") {
            let mut r = self.route(
                &item,
                "delete",
                "delete",
                self.id("delete", &format!("{ns}{kind}")),
            );
            r.description = format!("delete {} {kind}", article(kind));
            r.params = params(with_name(path_params.clone()), &[DELETE, &[PRETTY]]);
            r.body = Some(body(
                &Payload::Definition(DELETE_OPTIONS.into()),
                CONSUMES_ANY,
                false,
            ));
            r.responses = responses(
                &[("200", "OK"), ("202", "Accepted")],
                &Payload::Definition(STATUS.into()),
            );
            out.push(r);
        }
        if self.has("watch") {
            let (w_collection, w_item, w_params) = self.paths(true);
            let event = Payload::Definition(WATCH_EVENT.into());
            let mut r = self.route(
                &w_item,
                "get",
                "watch",
                self.id("watch", &format!("{ns}{kind}")),
            );
            r.description = format!(
                "watch changes to an object of kind {kind}; deprecated, use a list with watch=true and a fieldSelector"
            );
            r.params = params(with_name(w_params.clone()), &[LIST, &[PRETTY]]);
            r.responses = ok(event.clone());
            r.produces = PRODUCES_STREAM;
            out.push(r);
            if self.has("list") {
                let mut r = self.route(
                    &w_collection,
                    "get",
                    "watchlist",
                    self.id("watch", &format!("{ns}{kind}List")),
                );
                r.description = format!(
                    "watch changes to a list of {kind}; deprecated, use a list with watch=true"
                );
                r.params = params(w_params, &[LIST, &[PRETTY]]);
                r.responses = ok(event.clone());
                r.produces = PRODUCES_STREAM;
                out.push(r);
                if self.rt.namespaced() {
                    let all = format!("{}/watch/{}", self.prefix, self.rt.plural);
                    let mut r = self.route(
                        &all,
                        "get",
                        "watchlist",
                        self.id("watch", &format!("{kind}ListForAllNamespaces")),
                    );
                    r.description = format!(
                        "watch changes to a list of {kind} in all namespaces; deprecated, use a list with watch=true"
                    );
                    r.params = params(Vec::new(), &[LIST, &[PRETTY]]);
                    r.responses = ok(event);
                    r.produces = PRODUCES_STREAM;
                    out.push(r);
                }
            }
        }
    }

    fn subresource_routes(&self, sub: &Subresource, out: &mut Vec<Route>) {
        let kind = self.rt.kind;
        let ns = self.namespaced;
        let (_, item, mut path_params) = self.paths(false);
        path_params.push(name_param(kind));
        path_params.sort_by_key(|p| p.name);
        let path = format!("{item}/{}", sub.name);
        let title = title_case(sub.name);
        let gvk: Gvk = (sub.group, sub.version, sub.kind);
        let payload = self
            .defs
            .kind(gvk)
            .map_or(Payload::Unknown, |d| Payload::Definition(d.to_string()));
        let shape = SubresourceShape::of(sub.name);

        for verb in sub.verbs {
            let name = sub.name;
            let (method, action, id, description) = match (shape, *verb) {
                (SubresourceShape::Connect, verb) => {
                    let Some((method, word)) = connect_method(verb) else {
                        continue;
                    };
                    (
                        method,
                        "connect",
                        self.id("connect", &format!("{word}{ns}{kind}{title}")),
                        format!(
                            "connect {} requests to {name} of {kind}",
                            method.to_uppercase()
                        ),
                    )
                }
                (SubresourceShape::Object | SubresourceShape::Text, "get") => (
                    "get",
                    "get",
                    self.id("read", &format!("{ns}{kind}{title}")),
                    format!("read {name} of the specified {kind}"),
                ),
                (SubresourceShape::Object, "update") => (
                    "put",
                    "put",
                    self.id("replace", &format!("{ns}{kind}{title}")),
                    format!("replace {name} of the specified {kind}"),
                ),
                (SubresourceShape::Object, "patch") => (
                    "patch",
                    "patch",
                    self.id("patch", &format!("{ns}{kind}{title}")),
                    format!("partially update {name} of the specified {kind}"),
                ),
                (SubresourceShape::Object, "create") => (
                    "post",
                    "post",
                    self.id("create", &format!("{ns}{kind}{title}")),
                    format!("create {name} of {} {kind}", article(kind)),
                ),
                _ => continue,
            };
            let mut r = self.route(&path, method, action, id);
            r.description = description;
            r.gvk = gvk;
            match shape {
                SubresourceShape::Object => {
                    let groups: &[&[ParamSpec]] = match method {
                        "get" => &[&[PRETTY]],
                        "patch" => &[WRITE, &[FORCE, PRETTY]],
                        _ => &[WRITE, &[PRETTY]],
                    };
                    r.params = params(path_params.clone(), groups);
                    r.body = match method {
                        "patch" => {
                            Some(body(&Payload::Definition(PATCH.into()), PATCH_TYPES, true))
                        }
                        "put" | "post" => Some(body(&payload, CONSUMES_ANY, true)),
                        _ => None,
                    };
                    r.responses = match method {
                        "get" => ok(payload.clone()),
                        "post" => responses(
                            &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                            &payload,
                        ),
                        _ => responses(&[("200", "OK"), ("201", "Created")], &payload),
                    };
                }
                SubresourceShape::Text => {
                    r.params = params(path_params.clone(), &[LOG, &[PRETTY]]);
                    r.responses = ok(Payload::Text);
                    r.produces = PRODUCES_TEXT;
                }
                SubresourceShape::Connect => {
                    r.params = params(path_params.clone(), &[connect_params(sub.name)]);
                    r.responses = ok(Payload::Text);
                    r.produces = PRODUCES_ANY;
                }
            }
            out.push(r);
        }
    }
}

/// How a subresource behaves over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubresourceShape {
    /// Reads and writes an object (`status`, `scale`, `binding`, `eviction`, ...).
    Object,
    /// Streams text (`log`).
    Text,
    /// Upgrades or proxies the connection (`exec`, `attach`, `portforward`, `proxy`).
    Connect,
}

impl SubresourceShape {
    fn of(name: &str) -> SubresourceShape {
        match name {
            "log" => SubresourceShape::Text,
            "exec" | "attach" | "portforward" | "proxy" => SubresourceShape::Connect,
            _ => SubresourceShape::Object,
        }
    }
}

/// The HTTP method of a connect verb, and the capitalized word upstream puts in
/// connect operation ids.
fn connect_method(verb: &str) -> Option<(&'static str, &'static str)> {
    Some(match verb {
        "get" => ("get", "Get"),
        "create" => ("post", "Post"),
        "update" => ("put", "Put"),
        "patch" => ("patch", "Patch"),
        "delete" => ("delete", "Delete"),
        _ => return None,
    })
}

/// A query parameter: name, JSON type, description.
type ParamSpec = (&'static str, &'static str, &'static str);

const PRETTY: ParamSpec = ("pretty", "string", "If 'true', the output is indented.");
const FORCE: ParamSpec = (
    "force",
    "boolean",
    "Server-side apply only: take ownership of fields that conflict with other managers.",
);
const WRITE: &[ParamSpec] = &[
    (
        "dryRun",
        "string",
        "'All' runs every stage of the request but persists nothing.",
    ),
    (
        "fieldManager",
        "string",
        "Name of the actor making the change, recorded in managedFields.",
    ),
    (
        "fieldValidation",
        "string",
        "What to do with unknown or duplicate fields: Ignore, Warn or Strict.",
    ),
];
const LIST: &[ParamSpec] = &[
    (
        "allowWatchBookmarks",
        "boolean",
        "Ask a watch to send BOOKMARK events.",
    ),
    (
        "continue",
        "string",
        "Token from a previous paginated list to fetch the next page.",
    ),
    ("fieldSelector", "string", "Select objects by field values."),
    ("labelSelector", "string", "Select objects by label."),
    (
        "limit",
        "integer",
        "Return at most this many objects and a continue token for the rest.",
    ),
    (
        "resourceVersion",
        "string",
        "Serve the request from this resource version or newer.",
    ),
    (
        "resourceVersionMatch",
        "string",
        "How resourceVersion constrains a list: Exact or NotOlderThan.",
    ),
    (
        "sendInitialEvents",
        "boolean",
        "Start a watch with ADDED events for the current state, then an initial-events-end BOOKMARK.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "End the list or watch after this many seconds.",
    ),
    (
        "watch",
        "boolean",
        "Stream changes instead of returning a list.",
    ),
];
/// The list options a deletecollection accepts (no watching).
const LIST_FOR_DELETE: &[ParamSpec] = &[
    (
        "continue",
        "string",
        "Token from a previous paginated list to fetch the next page.",
    ),
    ("fieldSelector", "string", "Select objects by field values."),
    ("labelSelector", "string", "Select objects by label."),
    ("limit", "integer", "Delete at most this many objects."),
    (
        "resourceVersion",
        "string",
        "Serve the request from this resource version or newer.",
    ),
    (
        "resourceVersionMatch",
        "string",
        "How resourceVersion constrains the list: Exact or NotOlderThan.",
    ),
    (
        "sendInitialEvents",
        "boolean",
        "Accepted for symmetry with list; has no effect on a delete.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "Give up after this many seconds.",
    ),
];
const DELETE: &[ParamSpec] = &[
    (
        "dryRun",
        "string",
        "'All' runs every stage of the request but persists nothing.",
    ),
    (
        "gracePeriodSeconds",
        "integer",
        "Seconds to wait before deleting; 0 deletes at once.",
    ),
    (
        "ignoreStoreReadErrorWithClusterBreakingPotential",
        "boolean",
        "Delete an object that can no longer be read from storage, skipping finalizers.",
    ),
    (
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy=Orphan.",
    ),
    (
        "propagationPolicy",
        "string",
        "Garbage collection of dependents: Orphan, Background or Foreground.",
    ),
];
const LOG: &[ParamSpec] = &[
    (
        "container",
        "string",
        "Container to read logs of; optional when the pod has one.",
    ),
    ("follow", "boolean", "Keep streaming new log lines."),
    (
        "insecureSkipTLSVerifyBackend",
        "boolean",
        "Skip verifying the serving certificate of the node.",
    ),
    ("limitBytes", "integer", "Stop after this many bytes."),
    (
        "previous",
        "boolean",
        "Logs of the previous, terminated instance of the container.",
    ),
    (
        "sinceSeconds",
        "integer",
        "Only lines newer than this many seconds.",
    ),
    ("stream", "string", "All, Stdout or Stderr."),
    ("tailLines", "integer", "Only this many lines from the end."),
    (
        "timestamps",
        "boolean",
        "Prefix every line with its RFC3339 timestamp.",
    ),
];
const EXEC: &[ParamSpec] = &[
    (
        "command",
        "string",
        "Command to run; repeat the parameter for each argument.",
    ),
    ("container", "string", "Container to run the command in."),
    ("stderr", "boolean", "Stream the command's standard error."),
    ("stdin", "boolean", "Stream standard input to the command."),
    ("stdout", "boolean", "Stream the command's standard output."),
    ("tty", "boolean", "Allocate a terminal."),
];
const ATTACH: &[ParamSpec] = &[
    ("container", "string", "Container to attach to."),
    (
        "stderr",
        "boolean",
        "Stream the container's standard error.",
    ),
    (
        "stdin",
        "boolean",
        "Stream standard input to the container.",
    ),
    (
        "stdout",
        "boolean",
        "Stream the container's standard output.",
    ),
    ("tty", "boolean", "The container has a terminal."),
];
const PORT_FORWARD: &[ParamSpec] = &[(
    "ports",
    "integer",
    "Ports to forward; repeat for each port.",
)];
const PROXY: &[ParamSpec] = &[("path", "string", "Path to send the proxied request to.")];

fn connect_params(sub: &str) -> &'static [ParamSpec] {
    match sub {
        "exec" => EXEC,
        "attach" => ATTACH,
        "portforward" => PORT_FORWARD,
        "proxy" => PROXY,
        _ => &[],
    }
}

fn namespace_param() -> Param {
    Param {
        name: "namespace",
        in_path: true,
        ty: "string",
        description: "object name and auth scope, such as for teams and projects".into(),
    }
}

fn name_param(kind: &str) -> Param {
    Param {
        name: "name",
        in_path: true,
        ty: "string",
        description: format!("name of the {kind}"),
    }
}

/// Path params first, then the query params of `groups` sorted by name.
fn params(path: Vec<Param>, groups: &[&[ParamSpec]]) -> Vec<Param> {
    let mut query: Vec<Param> = groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|(name, ty, description)| Param {
            name,
            in_path: false,
            ty,
            description: (*description).to_string(),
        })
        .collect();
    query.sort_by_key(|p| p.name);
    query.dedup_by_key(|p| p.name);
    path.into_iter().chain(query).collect()
}

fn body(payload: &Payload, content_types: &'static [&'static str], required: bool) -> RequestBody {
    let definition = match payload {
        Payload::Definition(d) => d.clone(),
        // Without a schema the body is documented as a generic object.
        Payload::Text | Payload::Unknown => PATCH.into(),
    };
    RequestBody {
        definition,
        required,
        content_types,
    }
}

fn ok(payload: Payload) -> Vec<Response> {
    responses(&[("200", "OK")], &payload)
}

fn responses(codes: &[(&'static str, &'static str)], payload: &Payload) -> Vec<Response> {
    let mut out: Vec<Response> = codes
        .iter()
        .map(|(code, description)| Response {
            code,
            description,
            payload: payload.clone(),
        })
        .collect();
    out.push(Response {
        code: "401",
        description: "Unauthorized",
        payload: Payload::Unknown,
    });
    out
}

/// `a` or `an`, or nothing before a plural-looking kind, as upstream phrases it.
fn article(kind: &str) -> &'static str {
    if kind.ends_with('s') && !kind.ends_with("ss") {
        return "";
    }
    match kind.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// `status` → `Status`, `portforward` → `Portforward`.
fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The camel-cased group words: `rbac.authorization.k8s.io` → `["rbac", "Authorization"]`
/// joined; the core group is `core`.
fn group_words(group: &str) -> String {
    if group.is_empty() {
        return "core".into();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed
        .split('.')
        .enumerate()
        .map(|(i, w)| if i == 0 { w.to_string() } else { title_case(w) })
        .collect()
}

/// `AppsV1`, `CoreV1`, `RbacAuthorizationV1`.
pub(super) fn operation_prefix(group: &str, version: &str) -> String {
    format!("{}{}", title_case(&group_words(group)), title_case(version))
}

/// `apps_v1`, `core_v1`, `rbacAuthorization_v1`.
pub(super) fn tag(group: &str, version: &str) -> String {
    format!("{}_{}", group_words(group), version)
}

impl Route {
    /// The operation object in `dialect`.
    pub(super) fn render(&self, dialect: Dialect) -> Value {
        let mut op = Map::new();
        op.insert("description".into(), self.description.clone().into());
        op.insert("operationId".into(), self.operation_id.clone().into());
        if dialect == Dialect::Swagger2 {
            let consumes = self.body.as_ref().map_or(CONSUMES_ANY, |b| b.content_types);
            op.insert("consumes".into(), consumes.into());
            op.insert("produces".into(), self.produces.into());
            op.insert("schemes".into(), json!(["https"]));
        }
        let mut params: Vec<Value> = self.params.iter().map(|p| p.render(dialect)).collect();
        if let (Dialect::Swagger2, Some(body)) = (dialect, &self.body) {
            params.push(json!({
                "name": "body",
                "in": "body",
                "required": body.required,
                "schema": reference(&body.definition, dialect),
            }));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), params.into());
        }
        if let (Dialect::OpenApi3, Some(body)) = (dialect, &self.body) {
            let content: Map<String, Value> = body
                .content_types
                .iter()
                .map(|ct| {
                    (
                        ct.to_string(),
                        json!({"schema": reference(&body.definition, dialect)}),
                    )
                })
                .collect();
            op.insert(
                "requestBody".into(),
                json!({"content": content, "required": body.required}),
            );
        }
        let responses: Map<String, Value> = self
            .responses
            .iter()
            .map(|r| (r.code.to_string(), r.render(self.produces, dialect)))
            .collect();
        op.insert("responses".into(), responses.into());
        op.insert("tags".into(), json!([self.tag]));
        op.insert("x-kubernetes-action".into(), self.action.into());
        let (group, version, kind) = self.gvk;
        op.insert(
            "x-kubernetes-group-version-kind".into(),
            json!({"group": group, "kind": kind, "version": version}),
        );
        Value::Object(op)
    }

    /// Definitions this operation references.
    pub(super) fn definitions(&self) -> impl Iterator<Item = &str> {
        let body = self.body.as_ref().map(|b| b.definition.as_str());
        let responses = self.responses.iter().filter_map(|r| match &r.payload {
            Payload::Definition(d) => Some(d.as_str()),
            Payload::Text | Payload::Unknown => None,
        });
        body.into_iter().chain(responses)
    }
}

impl Param {
    fn render(&self, dialect: Dialect) -> Value {
        let mut p = Map::new();
        p.insert("description".into(), self.description.clone().into());
        p.insert(
            "in".into(),
            if self.in_path { "path" } else { "query" }.into(),
        );
        p.insert("name".into(), self.name.into());
        if self.in_path {
            p.insert("required".into(), true.into());
        }
        match dialect {
            Dialect::Swagger2 => {
                p.insert("type".into(), self.ty.into());
                p.insert("uniqueItems".into(), true.into());
            }
            Dialect::OpenApi3 => {
                p.insert(
                    "schema".into(),
                    json!({"type": self.ty, "uniqueItems": true}),
                );
            }
        }
        Value::Object(p)
    }
}

impl Response {
    fn render(&self, produces: &[&str], dialect: Dialect) -> Value {
        let schema = match &self.payload {
            Payload::Definition(d) => reference(d, dialect),
            Payload::Text => json!({"type": "string"}),
            Payload::Unknown => return json!({"description": self.description}),
        };
        match dialect {
            Dialect::Swagger2 => json!({"description": self.description, "schema": schema}),
            Dialect::OpenApi3 => {
                let content: Map<String, Value> = produces
                    .iter()
                    .map(|ct| (ct.to_string(), json!({"schema": schema})))
                    .collect();
                json!({"description": self.description, "content": content})
            }
        }
    }
}

fn reference(definition: &str, dialect: Dialect) -> Value {
    match dialect {
        Dialect::Swagger2 => json!({"$ref": format!("#/definitions/{definition}")}),
        Dialect::OpenApi3 => json!({"$ref": format!("{REF_PREFIX}{definition}")}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_follow_upstream() {
        assert_eq!(operation_prefix("", "v1"), "CoreV1");
        assert_eq!(operation_prefix("apps", "v1"), "AppsV1");
        assert_eq!(
            operation_prefix("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(
            operation_prefix("flowcontrol.apiserver.k8s.io", "v1"),
            "FlowcontrolApiserverV1"
        );
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("", "v1"), "core_v1");
        assert_eq!(article("Endpoints"), "");
        assert_eq!(article("Ingress"), "an");
        assert_eq!(article("Pod"), "a");
    }

    #[test]
    fn every_object_subresource_kind_has_a_schema() {
        let defs = Definitions::build();
        for rt in skiff_api::registry::all() {
            for sub in rt.subresources {
                if SubresourceShape::of(sub.name) == SubresourceShape::Object {
                    assert!(
                        defs.kind((sub.group, sub.version, sub.kind)).is_some(),
                        "{}/{}: no schema for {}/{} {}",
                        rt.plural,
                        sub.name,
                        sub.group,
                        sub.version,
                        sub.kind
                    );
                }
            }
        }
    }

    #[test]
    fn connect_and_log_subresources_stream_text() {
        let defs = Definitions::build();
        let Some(pods) = skiff_api::registry::all()
            .iter()
            .find(|rt| rt.group.is_empty() && rt.plural == "pods")
        else {
            panic!("pods are served");
        };
        let routes = routes(pods, &defs);
        let log = routes
            .iter()
            .find(|r| r.path.ends_with("/pods/{name}/log"))
            .expect("pods/log route");
        assert_eq!(log.operation_id, "readCoreV1NamespacedPodLog");
        assert!(
            log.definitions().next().is_none(),
            "logs are text, not a definition"
        );
        if let Some(exec) = routes
            .iter()
            .find(|r| r.path.ends_with("/pods/{name}/exec"))
        {
            assert_eq!(exec.action, "connect");
            assert!(exec.operation_id.starts_with("connectCoreV1"));
        }
    }
}
