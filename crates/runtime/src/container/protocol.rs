//! The shim's wire protocol and its state file.
//!
//! One JSON object per line in each direction over the shim's unix socket; every request gets
//! exactly one reply, in order. `wait` and `wait_exec` replies come when the process exits, so
//! a client that waits uses a connection of its own. The reply to `exec` carries the client's
//! ends of the process's stdin, stdout and stderr pipes as `SCM_RIGHTS` file descriptors, in
//! that order, attached to the reply's first byte.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

/// The shim's state file in the pod directory, rewritten (atomically) on every change so an
/// agent restarted while the shim is down can still read exit codes.
pub const STATE_FILE: &str = "shim-state.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create and start a container from `spec`; its stdout and stderr go to `log_path` in the
    /// CRI format. An exited container of the same id is deleted first.
    Start {
        id: String,
        spec: Box<Spec>,
        log_path: PathBuf,
        /// Rotation of the log (the kubelet's containerLogMaxSize / MaxFiles); absent means
        /// the kubelet's defaults, 10 MiB and 5 files.
        #[serde(default)]
        log_rotation: Option<LogRotation>,
    },
    Status {
        id: String,
    },
    List,
    /// Replies when the container has exited (at once if it has).
    Wait {
        id: String,
    },
    /// Sends `signal` to the container's init process (`SIGKILL` to every process of its
    /// cgroup). A no-op on an exited container.
    Kill {
        id: String,
        signal: i32,
    },
    /// Removes an exited container: its runtime state, cgroup and bundle. Its log stays.
    Delete {
        id: String,
    },
    /// Runs a process in a running container's namespaces and cgroup.
    Exec {
        id: String,
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
        /// Run on a terminal: the reply carries the pty master instead of pipes.
        #[serde(default)]
        tty: bool,
    },
    /// Replies with the exit code of an exec'd process once it has exited.
    WaitExec {
        pid: i32,
    },
    /// SIGKILLs and deletes every container, then the shim exits.
    Shutdown,
}

/// When a container's log file is rotated, and how many files are kept (live one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    /// Bytes; 0 never rotates.
    pub max_size: u64,
    pub max_files: usize,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            max_size: super::cri_log::DEFAULT_MAX_SIZE,
            max_files: super::cri_log::DEFAULT_MAX_FILES,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Container { status: ContainerStatus },
    Containers { containers: Vec<ContainerStatus> },
    ExecStarted { pid: i32 },
    ExecExited { exit_code: i32 },
    Done,
    Error { message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Running,
    Exited,
    /// Was running when a previous shim of this pod died; its exit code is lost.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub state: ContainerState,
    /// Host pid of the container's init process.
    pub pid: Option<i32>,
    /// The exit status, `128 + signal` when killed by a signal (as a shell reports it).
    pub exit_code: Option<i32>,
    /// RFC 3339 timestamps.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The kernel OOM killer killed a process of the container's cgroup (containerd reports
    /// `OOMKilled` on any OOM kill in the container, whatever the exit code).
    pub oom_killed: bool,
    pub log_path: PathBuf,
    pub cgroup_path: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShimState {
    pub shim_pid: i32,
    pub containers: Vec<ContainerStatus>,
}

/// Why the state file could not be read. Not retryable unless the file is being replaced.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("reading shim state file {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing shim state file {path:?}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the state file a pod's shim keeps in `pod_dir`.
pub fn read_state_file(pod_dir: &Path) -> Result<ShimState, StateFileError> {
    let path = pod_dir.join(STATE_FILE);
    let text = std::fs::read(&path).map_err(|source| StateFileError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| StateFileError::Parse { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let line = serde_json::to_string(&Request::Kill {
            id: "c".into(),
            signal: 15,
        })
        .expect("serialize");
        assert_eq!(line, r#"{"op":"kill","id":"c","signal":15}"#);
        let parsed: Request = serde_json::from_str(r#"{"op":"wait_exec","pid":7}"#).expect("parse");
        assert!(matches!(parsed, Request::WaitExec { pid: 7 }));
        let reply: Reply =
            serde_json::from_str(r#"{"reply":"error","message":"x"}"#).expect("parse");
        assert!(matches!(reply, Reply::Error { message } if message == "x"));
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            read_state_file(dir.path()),
            Err(StateFileError::Read { .. })
        ));
        let state = ShimState {
            shim_pid: 9,
            containers: vec![ContainerStatus {
                id: "c".into(),
                state: ContainerState::Exited,
                pid: Some(10),
                exit_code: Some(3),
                started_at: None,
                finished_at: None,
                oom_killed: false,
                log_path: "/l".into(),
                cgroup_path: "/x".into(),
            }],
        };
        std::fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_vec(&state).expect("json"),
        )
        .expect("write");
        let read = read_state_file(dir.path()).expect("read");
        assert_eq!(read.containers, state.containers);
    }
}
