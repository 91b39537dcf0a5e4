//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's CRI log as `kubectl logs`
//! shows it (upstream `pkg/kubelet/kuberuntime/logs`).
//!
//! The log of one run of a container is `<pod log dir>/<container>/<restart>.log`, one CRI
//! line per write: `<RFC3339Nano> <stdout|stderr> <F|P> <content>`. The newest restart is the
//! current (or last) run; `previous` reads the one before. Partial (`P`) chunks are joined to
//! their full line; `timestamps` prefixes each line with the time the runtime recorded, as
//! written. `tailLines` counts lines of the file from its end, `sinceSeconds`/`sinceTime`
//! skip older lines, `limitBytes` cuts the output after that many bytes — all as upstream.
//!
//! `follow` keeps reading as the file grows until the run's log is finished: a newer restart
//! file appears, the pod's log directory is removed, or the pod's shim reports the container
//! exited (upstream asks the runtime whether the container still runs). It also ends when
//! the client goes away or the server shuts down.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use runtime::container::{ContainerState, ShimClient};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{PodOnNode, ServerError, ServerState, find_pod};
use crate::paths::NodePaths;

/// How often a followed log is re-read once it is drained.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How often, while a followed log is idle, the server checks whether the run has ended.
const FINISHED_CHECK: Duration = Duration::from_secs(1);
/// Output is sent in chunks of about this size.
const CHUNK: usize = 32 * 1024;

/// A query parameter of `/containerLogs` that is not valid (upstream validates the same in
/// `ValidatePodLogOptions`). Not retryable: the request must change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogOptionsError {
    #[error("{field}: Invalid value: {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "sinceSeconds, sinceTime: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
    )]
    BothSince,
}

/// `PodLogOptions` as the kubelet reads them from the query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub since_seconds: Option<u64>,
    pub since_time: Option<jiff::Timestamp>,
}

impl LogOptions {
    /// Parses `follow`, `previous`, `timestamps`, `tailLines`, `limitBytes`, `sinceSeconds`
    /// and `sinceTime`; unknown parameters are ignored like upstream's parameter codec does.
    pub fn parse(query: Option<&str>) -> Result<LogOptions, LogOptionsError> {
        let mut opts = LogOptions::default();
        let (mut since_seconds, mut since_time) = (None, None);
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "follow" => opts.follow = query_bool(&value),
                "previous" => opts.previous = query_bool(&value),
                "timestamps" => opts.timestamps = query_bool(&value),
                "tailLines" => {
                    opts.tail_lines = Some(non_negative(
                        "tailLines",
                        &value,
                        0,
                        "must be greater than or equal to 0",
                    )?)
                }
                "limitBytes" => {
                    opts.limit_bytes = Some(non_negative(
                        "limitBytes",
                        &value,
                        1,
                        "must be greater than 0",
                    )?)
                }
                "sinceSeconds" => {
                    since_seconds = Some(non_negative(
                        "sinceSeconds",
                        &value,
                        1,
                        "must be greater than 0",
                    )?)
                }
                "sinceTime" => {
                    since_time = Some(value.parse::<jiff::Timestamp>().map_err(|_| {
                        LogOptionsError::Invalid {
                            field: "sinceTime",
                            value: value.to_string(),
                            reason: "must be an RFC 3339 time",
                        }
                    })?)
                }
                _ => {}
            }
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(LogOptionsError::BothSince);
        }
        opts.since_seconds = since_seconds;
        opts.since_time = since_time;
        Ok(opts)
    }

    /// The earliest timestamp shown, if any.
    fn since(&self, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        if let Some(t) = self.since_time {
            return Some(t);
        }
        let secs = i64::try_from(self.since_seconds?).unwrap_or(i64::MAX);
        Some(
            now.checked_sub(jiff::SignedDuration::from_secs(secs))
                .unwrap_or(jiff::Timestamp::MIN),
        )
    }
}

/// Upstream's query-string booleans: absent is false, `0`/`f`/`false` are false, anything
/// else (including an empty value, `?follow`) is true.
fn query_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("f") || value.eq_ignore_ascii_case("false"))
}

fn non_negative(
    field: &'static str,
    value: &str,
    min: i64,
    reason: &'static str,
) -> Result<u64, LogOptionsError> {
    let invalid = || LogOptionsError::Invalid {
        field,
        value: value.to_string(),
        reason,
    };
    let n: i64 = value.trim().parse().map_err(|_| invalid())?;
    if n < min {
        return Err(invalid());
    }
    u64::try_from(n).map_err(|_| invalid())
}

pub(super) async fn container_logs(
    State(state): State<ServerState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    match open_log(&state.paths, &namespace, &pod, &container, query.as_deref()).await {
        Ok(stream) => {
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            tokio::spawn(stream.run(tx, state.paths.clone(), state.shutdown.clone()));
            let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
            }));
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Resolves the log file to read and positions it (tail), before the answer's status is sent.
async fn open_log(
    paths: &NodePaths,
    namespace: &str,
    name: &str,
    container: &str,
    query: Option<&str>,
) -> Result<LogStream, ServerError> {
    let opts = LogOptions::parse(query)?;
    let pod = find_pod(paths, namespace, name, None)?;
    let path = log_file(&pod, container, opts.previous)?;
    let io_err = |source| ServerError::Io {
        path: path.clone(),
        source,
    };
    let start = match opts.tail_lines {
        Some(n) => {
            let p = path.clone();
            tokio::task::spawn_blocking(move || tail_start(&p, n))
                .await
                .map_err(|e| io_err(std::io::Error::other(e)))?
                .map_err(io_err)?
        }
        None => 0,
    };
    let mut file = tokio::fs::File::open(&path).await.map_err(io_err)?;
    file.seek(SeekFrom::Start(start)).await.map_err(io_err)?;
    let formatter = LogFormatter::new(&opts, jiff::Timestamp::now());
    Ok(LogStream {
        pod,
        container: container.to_string(),
        path,
        file: BufReader::new(file),
        formatter,
        follow: opts.follow,
    })
}

/// The restart number of a `<restart>.log` path.
pub(super) fn restart_of(path: &Path) -> Option<u32> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The restart numbers of a container's log files, ascending.
fn restarts(container_dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(container_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| restart_of(&e.path()))
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

/// The newest run's log, or with `previous` the one before it (upstream reads
/// `lastState.terminated`'s log for `previous`).
fn log_file(pod: &PodOnNode, container: &str, previous: bool) -> Result<PathBuf, ServerError> {
    let dir = pod.log_dir.join(container);
    let runs = restarts(&dir);
    let pick = if previous {
        runs.len().checked_sub(2)
    } else {
        runs.len().checked_sub(1)
    };
    match pick.and_then(|i| runs.get(i)) {
        Some(n) => Ok(dir.join(format!("{n}.log"))),
        None if previous => Err(ServerError::NoPreviousContainer {
            pod: pod.name.clone(),
            container: container.to_string(),
        }),
        None => Err(ServerError::ContainerWaiting {
            pod: pod.name.clone(),
            container: container.to_string(),
        }),
    }
}

/// The offset where the last `n` lines of the file begin (upstream `tail.FindTailLineStartIndex`),
/// reading backwards in blocks so a large log is not read whole.
fn tail_start(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut newlines = 0u64;
    let mut block = vec![0u8; 64 * 1024];
    let mut first = true;
    while end > 0 {
        let size = usize::try_from(end.min(block.len() as u64)).unwrap_or(block.len());
        let begin = end - size as u64;
        file.seek(SeekFrom::Start(begin))?;
        file.read_exact(&mut block[..size])?;
        for (i, b) in block[..size].iter().enumerate().rev() {
            if *b != b'\n' {
                continue;
            }
            // The file's final newline ends the last line; it does not start one.
            if first && begin + i as u64 == len - 1 {
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(begin + i as u64 + 1);
            }
        }
        first = false;
        end = begin;
    }
    Ok(0)
}

/// Which stream a CRI line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum LogStreamKind {
    Stdout,
    Stderr,
}

/// One parsed CRI log line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CriLine<'a> {
    pub timestamp: &'a str,
    pub stream: LogStreamKind,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses `<timestamp> <stream> <F|P> <content>` (without its newline). `None` for a line
/// that is not CRI (upstream skips those with an error in its own log).
pub(super) fn parse_cri_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => LogStreamKind::Stdout,
        b"stderr" => LogStreamKind::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(CriLine {
        timestamp,
        stream,
        partial,
        content: parts.next().unwrap_or_default(),
    })
}

/// Turns CRI lines into `kubectl logs` output: joins partials, filters by time, prefixes
/// timestamps, and stops at the byte limit.
#[derive(Debug)]
pub(super) struct LogFormatter {
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    remaining: Option<u64>,
    /// A line's partial chunks so far, per stream, with the first chunk's timestamp.
    partials: HashMap<LogStreamKind, (String, Vec<u8>)>,
}

impl LogFormatter {
    pub(super) fn new(opts: &LogOptions, now: jiff::Timestamp) -> LogFormatter {
        LogFormatter {
            timestamps: opts.timestamps,
            since: opts.since(now),
            remaining: opts.limit_bytes,
            partials: HashMap::new(),
        }
    }

    /// Whether `limitBytes` has been reached (nothing more will be written).
    pub(super) fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Appends the output for one raw file line (newline included or not) to `out`.
    pub(super) fn push(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let Some(cri) = parse_cri_line(line) else {
            tracing::debug!(line = %String::from_utf8_lossy(line), "skipping a log line that is not CRI");
            return;
        };
        if cri.partial {
            let entry = self
                .partials
                .entry(cri.stream)
                .or_insert_with(|| (cri.timestamp.to_string(), Vec::new()));
            entry.1.extend_from_slice(cri.content);
            return;
        }
        let (timestamp, mut content) = match self.partials.remove(&cri.stream) {
            Some((ts, mut joined)) => {
                joined.extend_from_slice(cri.content);
                (ts, joined)
            }
            None => (cri.timestamp.to_string(), cri.content.to_vec()),
        };
        let Ok(at) = timestamp.parse::<jiff::Timestamp>() else {
            tracing::debug!(
                timestamp,
                "skipping a log line with an unreadable timestamp"
            );
            return;
        };
        if self.since.is_some_and(|since| at < since) {
            return;
        }
        content.push(b'\n');
        let mut text = Vec::with_capacity(content.len() + timestamp.len() + 1);
        if self.timestamps {
            text.extend_from_slice(timestamp.as_bytes());
            text.push(b' ');
        }
        text.extend_from_slice(&content);
        if let Some(remaining) = self.remaining.as_mut() {
            let take = usize::try_from(*remaining)
                .unwrap_or(usize::MAX)
                .min(text.len());
            text.truncate(take);
            *remaining -= take as u64;
        }
        out.extend_from_slice(&text);
    }
}

/// One log being streamed to one client.
struct LogStream {
    pod: PodOnNode,
    container: String,
    path: PathBuf,
    file: BufReader<tokio::fs::File>,
    formatter: LogFormatter,
    follow: bool,
}

impl LogStream {
    /// Reads and sends until the end (or, following, until the run's log is finished).
    async fn run(mut self, tx: mpsc::Sender<Bytes>, paths: NodePaths, shutdown: CancellationToken) {
        let mut line = Vec::new();
        let mut out = Vec::new();
        let mut last_check = tokio::time::Instant::now();
        let mut finishing = false;
        loop {
            let read = match self.file.read_until(b'\n', &mut line).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(path = ?self.path, error = %e, "reading a container log failed");
                    break;
                }
            };
            if read > 0 && line.ends_with(b"\n") {
                self.formatter.push(&line, &mut out);
                line.clear();
                if out.len() >= CHUNK && !send(&tx, &mut out).await {
                    return;
                }
                if self.formatter.done() {
                    break;
                }
                continue;
            }
            // At the end of what is written so far (`line` may hold an unfinished line).
            if !send(&tx, &mut out).await {
                return;
            }
            if !self.follow || finishing {
                break;
            }
            // The shim rotated the log (a new file at our path): what is left in the old one
            // was read above, so carry on at the start of the new one.
            if line.is_empty() && self.rotated().await {
                match tokio::fs::File::open(&self.path).await {
                    Ok(file) => {
                        self.file = BufReader::new(file);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(path = ?self.path, error = %e, "reopening a rotated container log failed");
                        break;
                    }
                }
            }
            if last_check.elapsed() >= FINISHED_CHECK {
                last_check = tokio::time::Instant::now();
                if self.finished(&paths).await {
                    // One more pass: the last writes may have landed after the read above.
                    finishing = true;
                    continue;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => break,
            }
        }
        if !line.is_empty() && !self.follow {
            // A last line without its newline: show what there is, as the runtime would once
            // it finishes the line.
            self.formatter.push(&line, &mut out);
        }
        send(&tx, &mut out).await;
    }

    /// Whether the file at our path is no longer the one we read (rotation renamed ours).
    async fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(ours) = self.file.get_ref().metadata().await else {
            return false;
        };
        match tokio::fs::metadata(&self.path).await {
            Ok(now) => now.ino() != ours.ino() || now.dev() != ours.dev(),
            Err(_) => false,
        }
    }

    /// Whether this run of the container will write no more: a newer run started, the pod is
    /// gone, or the shim says the container is no longer running.
    async fn finished(&self, paths: &NodePaths) -> bool {
        if !self.pod.log_dir.exists() {
            return true;
        }
        let ours = restart_of(&self.path);
        if restarts(&self.pod.log_dir.join(&self.container))
            .last()
            .copied()
            > ours
        {
            return true;
        }
        let socket = paths.shim_socket(&self.pod.uid);
        if !socket.exists() {
            return false;
        }
        let Ok(mut shim) = ShimClient::connect(&socket).await else {
            return false;
        };
        match shim.list().await {
            Ok(containers) => !containers
                .iter()
                .any(|c| c.log_path == self.path && c.state == ContainerState::Running),
            Err(_) => false,
        }
    }
}

/// Sends what is buffered; false once the client has gone.
async fn send(tx: &mpsc::Sender<Bytes>, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return !tx.is_closed();
    }
    tx.send(Bytes::from(std::mem::take(out))).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(opts: &LogOptions, lines: &[&str]) -> String {
        let now: jiff::Timestamp = "2025-01-01T00:01:00Z".parse().expect("now");
        let mut f = LogFormatter::new(opts, now);
        let mut out = Vec::new();
        for l in lines {
            f.push(format!("{l}\n").as_bytes(), &mut out);
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn parses_cri_lines() {
        assert_eq!(
            parse_cri_line(b"2025-01-01T00:00:00.5Z stderr P a b"),
            Some(CriLine {
                timestamp: "2025-01-01T00:00:00.5Z",
                stream: LogStreamKind::Stderr,
                partial: true,
                content: b"a b"
            })
        );
        assert_eq!(
            parse_cri_line(b"2025-01-01T00:00:00Z stdout F ").map(|l| l.content),
            Some(&b""[..])
        );
        assert_eq!(
            parse_cri_line(b"2025-01-01T00:00:00Z stdout F").map(|l| l.content),
            Some(&b""[..])
        );
        assert_eq!(parse_cri_line(b"garbage"), None);
        assert_eq!(parse_cri_line(b"2025-01-01T00:00:00Z stdin F x"), None);
        assert_eq!(parse_cri_line(b"2025-01-01T00:00:00Z stdout X x"), None);
    }

    #[test]
    fn joins_partials_per_stream_and_prefixes_timestamps() {
        let lines = [
            "2025-01-01T00:00:01.1Z stdout P hel",
            "2025-01-01T00:00:01.2Z stderr F oops",
            "2025-01-01T00:00:01.3Z stdout F lo",
            "not a cri line",
            "2025-01-01T00:00:02Z stdout F ",
        ];
        assert_eq!(format(&LogOptions::default(), &lines), "oops\nhello\n\n");
        let opts = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            format(&opts, &lines),
            "2025-01-01T00:00:01.2Z oops\n2025-01-01T00:00:01.1Z hello\n2025-01-01T00:00:02Z \n"
        );
    }

    #[test]
    fn since_and_limit() {
        let lines = [
            "2025-01-01T00:00:00Z stdout F old",
            "2025-01-01T00:00:30Z stdout F new",
            "2025-01-01T00:00:50Z stdout F newer",
        ];
        let opts = LogOptions {
            since_seconds: Some(40),
            ..LogOptions::default()
        };
        assert_eq!(format(&opts, &lines), "new\nnewer\n");
        let opts = LogOptions {
            since_time: Some("2025-01-01T00:00:40Z".parse().expect("t")),
            ..LogOptions::default()
        };
        assert_eq!(format(&opts, &lines), "newer\n");
        let opts = LogOptions {
            limit_bytes: Some(6),
            ..LogOptions::default()
        };
        assert_eq!(format(&opts, &lines), "old\nne");
    }

    #[test]
    fn parses_options_like_upstream() {
        let o = LogOptions::parse(Some(
            "follow=true&tailLines=3&timestamps=1&previous=false&limitBytes=10&container=x",
        ))
        .expect("parse");
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                timestamps: true,
                tail_lines: Some(3),
                limit_bytes: Some(10),
                ..LogOptions::default()
            }
        );
        assert!(LogOptions::parse(Some("follow")).expect("parse").follow);
        assert!(matches!(
            LogOptions::parse(Some("tailLines=-1")),
            Err(LogOptionsError::Invalid {
                field: "tailLines",
                ..
            })
        ));
        assert!(matches!(
            LogOptions::parse(Some("limitBytes=0")),
            Err(LogOptionsError::Invalid {
                field: "limitBytes",
                ..
            })
        ));
        assert!(matches!(
            LogOptions::parse(Some("sinceSeconds=x")),
            Err(LogOptionsError::Invalid {
                field: "sinceSeconds",
                ..
            })
        ));
        assert_eq!(
            LogOptions::parse(Some("sinceSeconds=5&sinceTime=2025-01-01T00:00:00Z")),
            Err(LogOptionsError::BothSince)
        );
        assert_eq!(LogOptions::parse(None), Ok(LogOptions::default()));
    }

    #[test]
    fn tail_start_counts_lines_from_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        std::fs::write(&path, "a\nbb\nccc\n").expect("write");
        assert_eq!(tail_start(&path, 0).expect("tail"), 9);
        assert_eq!(tail_start(&path, 1).expect("tail"), 5);
        assert_eq!(tail_start(&path, 2).expect("tail"), 2);
        assert_eq!(tail_start(&path, 3).expect("tail"), 0);
        assert_eq!(tail_start(&path, 10).expect("tail"), 0);
        // A big file crosses block boundaries.
        let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &big).expect("write");
        let start = tail_start(&path, 3).expect("tail") as usize;
        assert_eq!(&big[start..], "line 19997\nline 19998\nline 19999\n");
        std::fs::write(&path, "").expect("write");
        assert_eq!(tail_start(&path, 3).expect("tail"), 0);
    }

    #[test]
    fn restart_numbers() {
        assert_eq!(restart_of(Path::new("/x/c/12.log")), Some(12));
        assert_eq!(restart_of(Path::new("/x/c/0.log.20250101-000000")), None);
        assert_eq!(restart_of(Path::new("/x/c/a.log")), None);
    }
}
