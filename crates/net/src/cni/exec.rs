//! Running one plugin binary per the CNI spec's protocol: the operation and its parameters in
//! `CNI_*` environment variables, the plugin's config on stdin, the result (or an error object)
//! on stdout.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::libc;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::CniError;

/// Directories plugins need on PATH besides the caller's: bridge (ipMasq) and portmap run
/// `iptables`, which Debian installs in /usr/sbin.
const SYSTEM_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        })
    }
}

/// Everything one invocation needs besides the plugin's stdin.
pub(crate) struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    /// Empty when the namespace is gone (allowed for DEL).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub plugin_dirs: &'a [PathBuf],
    pub timeout: Duration,
    pub host_netns: Option<&'a Path>,
}

/// The error object a failing plugin prints (spec "Error" output).
#[derive(Debug, serde::Deserialize)]
struct PluginError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Finds the binary for plugin `plugin_type` in the first plugin dir that has it.
pub(crate) fn find_plugin(plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    dirs.iter()
        .map(|d| d.join(plugin_type))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin_type.to_string(),
            dirs: join_paths(dirs),
        })
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// The PATH plugins run with: the caller's, then the system directories it lacks.
fn plugin_path() -> String {
    let current = std::env::var("PATH").unwrap_or_default();
    let mut parts: Vec<&str> = current.split(':').filter(|p| !p.is_empty()).collect();
    for dir in SYSTEM_PATH {
        if !parts.contains(&dir) {
            parts.push(dir);
        }
    }
    parts.join(":")
}

/// Runs plugin `plugin_type` with `stdin`; returns its stdout parsed as JSON (None when it
/// printed nothing, as DEL and CHECK may).
pub(crate) async fn run_plugin(
    plugin_type: &str,
    inv: &Invocation<'_>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let binary = find_plugin(plugin_type, inv.plugin_dirs)?;
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.env("CNI_COMMAND", inv.command.to_string())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.cni_args)
        .env("CNI_PATH", join_paths(inv.plugin_dirs))
        .env("PATH", plugin_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A plugin past its timeout is killed when the future waiting for it is dropped.
        .kill_on_drop(true);

    // Opened here, in the parent, so the child only has to call setns (async-signal-safe).
    // O_CLOEXEC (std's default) closes it again at exec.
    let host_ns = match inv.host_netns {
        Some(path) => Some(File::open(path).map_err(|source| CniError::HostNetns {
            path: path.to_path_buf(),
            source,
        })?),
        None => None,
    };
    if let Some(ns) = &host_ns {
        let fd = ns.as_raw_fd();
        // SAFETY: between fork and exec the closure only makes one raw syscall on an fd that
        // stays open until spawn() returns; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    let spawn_err = |source| CniError::Spawn {
        plugin: plugin_type.to_string(),
        command: inv.command,
        path: binary.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    drop(host_ns);

    let run = async {
        if let Some(mut input) = child.stdin.take() {
            // A plugin may exit without reading all of stdin (e.g. on a usage error); its
            // exit status and output then say why, so a broken pipe here is not the error.
            let _ = input.write_all(stdin).await;
            drop(input);
        }
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(inv.timeout, run).await {
        Ok(out) => out.map_err(spawn_err)?,
        Err(_) => {
            return Err(CniError::Timeout {
                plugin: plugin_type.to_string(),
                command: inv.command,
                timeout: inv.timeout,
            });
        }
    };

    if !output.status.success() {
        if let Ok(err) = serde_json::from_slice::<PluginError>(&output.stdout) {
            return Err(CniError::Plugin {
                plugin: plugin_type.to_string(),
                command: inv.command,
                code: err.code,
                msg: err.msg,
                details: err.details,
            });
        }
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        return Err(CniError::PluginFailed {
            plugin: plugin_type.to_string(),
            command: inv.command,
            status: output.status.to_string(),
            output: text,
        });
    }
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&output.stdout)
        .map(Some)
        .map_err(|e| CniError::InvalidResult {
            plugin: plugin_type.to_string(),
            command: inv.command,
            reason: format!("stdout is not JSON: {e}"),
        })
}
