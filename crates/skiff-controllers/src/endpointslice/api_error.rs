//! Reading API errors the way the endpoint controllers react to them.

/// The error is an API status with this HTTP code.
pub(crate) fn has_code(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// The write was refused because the cache it was based on is out of date:
/// a resourceVersion conflict, a name already taken, an object already gone.
/// The cache catches up by itself; the controller only has to look again.
pub(crate) fn is_stale(error: &kube::Error) -> bool {
    has_code(error, 409) || has_code(error, 404)
}

/// Creation was refused because the namespace is being deleted; nothing
/// will ever be created there again.
pub(crate) fn namespace_terminating(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.details.as_ref().is_some_and(|details| {
            details
                .causes
                .iter()
                .any(|cause| cause.reason == "NamespaceTerminating")
        }),
        _ => false,
    }
}

/// The API's message, or the error itself when it is not an API status.
pub(crate) fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}
