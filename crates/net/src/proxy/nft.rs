//! The one host side effect of the service proxy: running `nft`. [`Nft`] is the narrow trait;
//! [`NftCli`] runs the real `nft` binary (optionally inside a network namespace, for tests and
//! benchmarks) and [`RecordingNft`] records scripts for unit tests.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use super::rules::TABLE;
use super::transaction::TableObjects;
use crate::netns;

/// Errors from running `nft`. A failed transaction changed nothing (nftables commits all or
/// nothing), so retrying with a full sync is always safe.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running {program}: {source} (is the nftables package installed?)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("nft {step} failed ({status}): {stderr}")]
    Failed {
        step: &'static str,
        status: String,
        stderr: String,
    },
    #[error("parsing the JSON of `nft -j {step}`: {source}")]
    Parse {
        step: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("entering the network namespace for nft: {source}")]
    Netns {
        #[source]
        source: netns::NetnsError,
    },
}

/// What the proxy asks of nftables.
pub trait Nft: Send + Sync {
    /// Runs `script` as one `nft -f` transaction.
    fn apply(&self, script: &str) -> Result<(), NftError>;
    /// Names of the chains and sets in Skiff's table (empty if it does not exist).
    fn list(&self) -> Result<TableObjects, NftError>;
}

/// The `nft` binary.
#[derive(Debug, Clone)]
pub struct NftCli {
    program: PathBuf,
    netns: Option<PathBuf>,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli::new()
    }
}

/// Stderr is cut to this many bytes in errors; an nft error about a 100,000-line script can be
/// long, and the first errors are the useful ones.
const STDERR_LIMIT: usize = 4000;

impl NftCli {
    /// `nft` from PATH, in the caller's network namespace.
    pub fn new() -> Self {
        NftCli {
            program: PathBuf::from("nft"),
            netns: None,
        }
    }

    /// Runs `nft` inside the network namespace at `path` (e.g. `/run/netns/<name>`).
    pub fn in_netns(path: impl Into<PathBuf>) -> Self {
        NftCli {
            program: PathBuf::from("nft"),
            netns: Some(path.into()),
        }
    }

    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, NftError> {
        let spawn = || -> Result<Output, NftError> {
            let mut child = Command::new(&self.program)
                .args(args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| NftError::Spawn {
                    program: self.program.display().to_string(),
                    source,
                })?;
            if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // A write error means nft exited early; its status and stderr say why.
                let _ = pipe.write_all(script.as_bytes());
            }
            child.wait_with_output().map_err(|source| NftError::Spawn {
                program: self.program.display().to_string(),
                source,
            })
        };
        match &self.netns {
            // A child inherits the namespaces of the thread that forks it.
            Some(path) => {
                netns::run_in(path, spawn).map_err(|source| NftError::Netns { source })?
            }
            None => spawn(),
        }
    }

    fn check(step: &'static str, out: Output) -> Result<Output, NftError> {
        if out.status.success() {
            return Ok(out);
        }
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.len() > STDERR_LIMIT {
            let mut cut = STDERR_LIMIT;
            while !stderr.is_char_boundary(cut) {
                cut -= 1;
            }
            stderr.truncate(cut);
            stderr.push_str(" …");
        }
        Err(NftError::Failed {
            step,
            status: out.status.to_string(),
            stderr,
        })
    }

    /// Names of one kind of object (`chains`, `sets`, `maps`) in our table, from `nft -j -t
    /// list <kind> ip` (`-t` leaves set contents out).
    fn names(&self, kind: &'static str, key: &str) -> Result<Vec<String>, NftError> {
        let family = TABLE.split(' ').next().unwrap_or("ip");
        let table = TABLE.split(' ').nth(1).unwrap_or("skiff");
        let out = Self::check(kind, self.run(&["-j", "-t", "list", kind, family], None)?)?;
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|source| NftError::Parse { step: kind, source })?;
        Ok(doc
            .get("nftables")
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.get(key))
                    .filter(|o| o.get("table").and_then(|t| t.as_str()) == Some(table))
                    .filter_map(|o| o.get("name").and_then(|n| n.as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Nft for NftCli {
    fn apply(&self, script: &str) -> Result<(), NftError> {
        Self::check("-f (apply)", self.run(&["-f", "-"], Some(script))?).map(|_| ())
    }

    fn list(&self) -> Result<TableObjects, NftError> {
        let mut objects = TableObjects::default();
        objects.chains.extend(self.names("chains", "chain")?);
        objects.sets.extend(self.names("sets", "set")?);
        objects.sets.extend(self.names("maps", "map")?);
        Ok(objects)
    }
}

/// Records scripts instead of running them; `list` answers from what was set with
/// [`RecordingNft::set_existing`].
#[derive(Debug, Default)]
pub struct RecordingNft {
    scripts: Mutex<Vec<String>>,
    existing: Mutex<TableObjects>,
    fail_next: Mutex<bool>,
}

impl RecordingNft {
    pub fn new() -> Self {
        RecordingNft::default()
    }

    /// Every script applied so far.
    pub fn scripts(&self) -> Vec<String> {
        self.scripts.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set_existing(&self, objects: TableObjects) {
        if let Ok(mut e) = self.existing.lock() {
            *e = objects;
        }
    }

    /// Makes the next `apply` fail, as a kernel rejecting the transaction would.
    pub fn fail_next(&self) {
        if let Ok(mut f) = self.fail_next.lock() {
            *f = true;
        }
    }
}

impl Nft for RecordingNft {
    fn apply(&self, script: &str) -> Result<(), NftError> {
        if let Ok(mut f) = self.fail_next.lock()
            && std::mem::take(&mut *f)
        {
            return Err(NftError::Failed {
                step: "-f (apply)",
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        if let Ok(mut s) = self.scripts.lock() {
            s.push(script.to_string());
        }
        Ok(())
    }

    fn list(&self) -> Result<TableObjects, NftError> {
        Ok(self.existing.lock().map(|e| e.clone()).unwrap_or_default())
    }
}

/// Removes Skiff's table and everything in it; succeeds when it does not exist (adding it first
/// makes the delete always valid, in one transaction).
pub fn delete_table(nft: &dyn Nft) -> Result<(), NftError> {
    nft.apply(&format!("add table {TABLE}\ndelete table {TABLE}\n"))
}

/// Whether `path` looks like a usable nft binary, for callers that want to skip the proxy on a
/// host without nftables.
pub fn nft_available(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
