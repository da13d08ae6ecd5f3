//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log,
//! with the query of `PodLogOptions`, streamed as it is read.
//!
//! Errors are plain text with upstream kubelet's codes and words: 400 for a
//! query that does not parse or a container with no log yet, 422 for options
//! that are out of range, 404 for an unknown pod or container.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::locate::PodLocator;
use crate::logs::{LogOptions, write_logs};

/// Buffer between the file reader and the response body.
const PIPE_BYTES: usize = 64 * 1024;

/// The parsed query: the output options plus which instance to read.
#[derive(Debug, Default, PartialEq, Eq)]
struct LogQuery {
    options: LogOptions,
    previous: bool,
}

/// A query error: the status and the text upstream's kubelet answers with.
#[derive(Debug, PartialEq, Eq)]
struct Rejection(StatusCode, String);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

fn undecodable() -> Rejection {
    Rejection(
        StatusCode::BAD_REQUEST,
        r#"{"message": "Unable to decode query."}"#.into(),
    )
}

fn invalid() -> Rejection {
    Rejection(
        StatusCode::UNPROCESSABLE_ENTITY,
        r#"{"message": "Invalid request."}"#.into(),
    )
}

/// Go's `strconv.ParseBool`, which the kubelet's query decoding uses.
fn parse_bool(value: &str) -> Result<bool, Rejection> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(undecodable()),
    }
}

fn parse_int(value: &str) -> Result<i64, Rejection> {
    value.parse().map_err(|_| undecodable())
}

/// Parses and validates the query as upstream does, with `now` for
/// `sinceSeconds`.
fn parse_query(raw: Option<&str>, now: Timestamp) -> Result<LogQuery, Rejection> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.unwrap_or_default()).map_err(|_| undecodable())?;
    let mut query = LogQuery::default();
    let (mut tail, mut since_seconds, mut limit) = (None, None, None);
    let mut legacy_tail = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "follow" => query.options.follow = parse_bool(value)?,
            "previous" => query.previous = parse_bool(value)?,
            "timestamps" => query.options.timestamps = parse_bool(value)?,
            "tailLines" => tail = Some(parse_int(value)?),
            // The old spelling; `all` means no limit.
            "tail" => legacy_tail = Some(value.as_str()),
            "sinceSeconds" => since_seconds = Some(parse_int(value)?),
            "limitBytes" => limit = Some(parse_int(value)?),
            "sinceTime" => {
                query.options.since_time = Some(value.parse().map_err(|_| undecodable())?);
            }
            _ => {}
        }
    }
    match legacy_tail {
        Some("all") => tail = None,
        Some(value) => tail = Some(parse_int(value)?),
        None => {}
    }
    if since_seconds.is_some() && query.options.since_time.is_some() {
        return Err(invalid());
    }
    query.options.tail_lines = tail
        .map(|n| u64::try_from(n).map_err(|_| invalid()))
        .transpose()?;
    query.options.limit_bytes = limit
        .map(|n| u64::try_from(n).ok().filter(|n| *n > 0).ok_or_else(invalid))
        .transpose()?;
    if let Some(seconds) = since_seconds {
        if seconds < 1 {
            return Err(invalid());
        }
        // Further back than the calendar goes means everything.
        query.options.since_time = now.checked_sub(SignedDuration::from_secs(seconds)).ok();
    }
    Ok(query)
}

/// The handler.
pub(super) async fn container_logs(
    State(locator): State<Arc<dyn PodLocator>>,
    Path((namespace, pod_name, container_name)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    match stream_logs(locator, &namespace, &pod_name, &container_name, raw).await {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    }
}

async fn stream_logs(
    locator: Arc<dyn PodLocator>,
    namespace: &str,
    pod_name: &str,
    container_name: &str,
    raw: Option<String>,
) -> Result<Response, Rejection> {
    let query = parse_query(raw.as_deref(), Timestamp::now())?;
    let pod = locator.pod(namespace, pod_name).await.ok_or_else(|| {
        Rejection(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} does not exist"),
        )
    })?;
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == container_name)
        .ok_or_else(|| {
            Rejection(
                StatusCode::NOT_FOUND,
                format!("container {container_name:?} not found in pod {pod_name:?}"),
            )
        })?;
    let (path, follow_id) = if query.previous {
        let path = container.previous_log_path.clone().ok_or_else(|| {
            Rejection(
                StatusCode::BAD_REQUEST,
                format!(
                    "previous terminated container {container_name:?} in pod {pod_name:?} not found"
                ),
            )
        })?;
        // A previous instance never writes again.
        (path, None)
    } else {
        let path = container.log_path.clone().ok_or_else(|| {
            Rejection(
                StatusCode::BAD_REQUEST,
                format!("container {container_name:?} in pod {pod_name:?} is waiting to start"),
            )
        })?;
        (path, container.id.clone().filter(|_| container.running))
    };
    // Fail before the 200 goes out if the file cannot be read at all.
    if let Err(e) = tokio::fs::File::open(&path).await {
        return Err(Rejection(
            StatusCode::BAD_REQUEST,
            format!("failed to open log file {}: {e}", path.display()),
        ));
    }

    let (reader, mut writer) = tokio::io::duplex(PIPE_BYTES);
    // Dropping the body (the client went away) stops the reader, even one
    // following a container that writes nothing.
    let gone = CancellationToken::new();
    let guard = gone.clone().drop_guard();
    let options = query.options;
    tokio::spawn(async move {
        let still_running = move || {
            let locator = Arc::clone(&locator);
            let id = follow_id.clone();
            async move {
                match id {
                    Some(id) => locator.container_running(&id).await,
                    None => false,
                }
            }
            .boxed()
        };
        tokio::select! {
            _ = gone.cancelled() => {}
            result = write_logs(&path, &options, still_running, &mut writer) => {
                if let Err(e) = result {
                    tracing::debug!(path = %path.display(), error = %e, "log stream ended");
                }
            }
        }
    });
    let body = ReaderStream::new(reader).map(move |chunk| {
        let _keep = &guard;
        chunk
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<LogQuery, Rejection> {
        parse_query(Some(raw), "2024-01-01T00:01:00Z".parse().expect("now"))
    }

    #[test]
    fn query_parses_like_the_kubelet() {
        let q =
            parse("follow=true&previous=1&timestamps=T&tailLines=10&limitBytes=5").expect("valid");
        assert!(q.options.follow && q.previous && q.options.timestamps);
        assert_eq!(q.options.tail_lines, Some(10));
        assert_eq!(q.options.limit_bytes, Some(5));

        let q = parse("sinceSeconds=60").expect("valid");
        assert_eq!(
            q.options.since_time,
            Some("2024-01-01T00:00:00Z".parse().expect("time"))
        );
        let q = parse("sinceTime=2024-01-01T00:00:30%2B00:00").expect("valid");
        assert_eq!(
            q.options.since_time,
            Some("2024-01-01T00:00:30Z".parse().expect("time"))
        );
        assert_eq!(
            parse("tail=all&tailLines=3")
                .expect("valid")
                .options
                .tail_lines,
            None
        );
        assert_eq!(parse("tail=4").expect("valid").options.tail_lines, Some(4));
        assert_eq!(parse("").expect("valid"), LogQuery::default());
    }

    #[test]
    fn bad_queries_are_refused_with_upstream_codes() {
        for raw in ["follow=yes", "tailLines=ten", "sinceTime=yesterday"] {
            assert_eq!(
                parse(raw).expect_err(raw).0,
                StatusCode::BAD_REQUEST,
                "{raw}"
            );
        }
        for raw in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z",
        ] {
            assert_eq!(
                parse(raw).expect_err(raw).0,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{raw}"
            );
        }
    }
}
