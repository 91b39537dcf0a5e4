//! The per-pod shim: `skiff shim --pod-dir DIR --socket PATH --state-root DIR [--foreground]`.
//!
//! One small single-threaded process per pod. It is the parent of every container process of
//! the pod (libcontainer clones it, and it is a child subreaper), so it alone can reap them and
//! learn their exit codes; it records them in the pod directory's state file and serves them over
//! a unix socket (see `protocol`). It detaches from the agent (new session, its own process
//! tree) so an agent restart restarts no container — the reason containerd has shims too.
//!
//! Single-threaded on purpose: libcontainer forks the calling process with a raw `clone`, and a
//! fork of a multi-threaded process can inherit locks held by other threads. One `poll(2)` loop
//! serves the socket, the containers' output pipes and a self-pipe written by the SIGCHLD handler.
//!
//! Arguments (after `shim`):
//! * `--pod-dir DIR`: the pod's directory; holds `shim-state.json`, `shim.log`, `bundles/<id>/`.
//! * `--socket PATH`: the unix socket to serve.
//! * `--state-root DIR`: libcontainer's state root (one directory per container id).
//! * `--foreground`: do not fork into the background (tests, debugging).
//!
//! When ready (socket bound) the shim writes `ready <pid>\n` to its original stdout and closes it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setsid};

use super::cgroup::CgroupLayout;
use super::cri_log::{CriLogWriter, LogFile, Stream};
use super::protocol::{
    ContainerState, ContainerStatus, LogRotation, Reply, Request, STATE_FILE, ShimState,
};

/// Distinguishes the temporary files of concurrent execs.
static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

/// Receives one descriptor sent with SCM_RIGHTS on `conn` (libcontainer's console socket
/// protocol: the pty master, with its name as payload), waiting at most a few seconds.
fn receive_fd(conn: &UnixStream) -> Result<OwnedFd, String> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| format!("exec: console socket timeout: {e}"))?;
    let mut buf = [0u8; 4096];
    let (_, fds) = super::client::receive(conn.as_raw_fd(), &mut buf)
        .map_err(|e| format!("exec: receiving the terminal: {e}"))?;
    fds.into_iter()
        .next()
        .ok_or_else(|| "exec: the terminal did not arrive on the console socket".to_string())
}

/// Why the shim could not start or stopped. Not retryable without fixing the cause.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(
        "shim arguments: {0} (usage: skiff shim --pod-dir DIR --socket PATH --state-root DIR [--foreground])"
    )]
    Usage(String),
    #[error("shim start-up: {step}")]
    Setup {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("shim start-up: {step}")]
    Sys {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Parsed `skiff shim` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    pub pod_dir: PathBuf,
    pub socket: PathBuf,
    pub state_root: PathBuf,
    pub foreground: bool,
}

impl ShimArgs {
    /// Parses the arguments that follow `shim` on the command line.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<ShimArgs, ShimError> {
        let (mut pod_dir, mut socket, mut state_root, mut foreground) = (None, None, None, false);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| ShimError::Usage(format!("{name} needs a value")))
            };
            match arg.as_str() {
                "--pod-dir" => pod_dir = Some(value("--pod-dir")?),
                "--socket" => socket = Some(value("--socket")?),
                "--state-root" => state_root = Some(value("--state-root")?),
                "--foreground" => foreground = true,
                other => return Err(ShimError::Usage(format!("unknown argument {other:?}"))),
            }
        }
        let missing = |name: &str| ShimError::Usage(format!("{name} is required"));
        Ok(ShimArgs {
            pod_dir: pod_dir.ok_or_else(|| missing("--pod-dir"))?,
            socket: socket.ok_or_else(|| missing("--socket"))?,
            state_root: state_root.ok_or_else(|| missing("--state-root"))?,
            foreground,
        })
    }

    /// The arguments to pass after `shim`.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec![
            "--pod-dir".to_string(),
            self.pod_dir.display().to_string(),
            "--socket".to_string(),
            self.socket.display().to_string(),
            "--state-root".to_string(),
            self.state_root.display().to_string(),
        ];
        if self.foreground {
            out.push("--foreground".to_string());
        }
        out
    }
}

/// Entry point of `skiff shim ARGS…` (`args` excludes `shim`). Call it before any thread or
/// async runtime is started: the shim forks.
pub fn shim_main<I: IntoIterator<Item = String>>(args: I) -> ExitCode {
    let args = match ShimArgs::parse(args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("skiff shim: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.foreground {
        // SAFETY: the shim has not started any thread yet (documented requirement above).
        match unsafe { fork() } {
            Ok(ForkResult::Parent { .. }) => return ExitCode::SUCCESS,
            Ok(ForkResult::Child) => {}
            Err(e) => {
                eprintln!("skiff shim: fork: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match Shim::start(args).and_then(|shim| shim.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff shim: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Write end of the self-pipe the SIGCHLD handler pokes.
static SIGCHLD_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGCHLD_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, a full pipe already
        // means "reap pending".
        unsafe {
            libc::write(fd, [0u8].as_ptr().cast(), 1);
        }
    }
}

struct Output {
    pipe: File,
    writer: CriLogWriter,
}

struct ContainerEntry {
    status: ContainerStatus,
    container: Container,
    outputs: Vec<Output>,
}

#[derive(Debug, Clone, PartialEq)]
enum Waiting {
    Container(String),
    Exec(i32),
}

struct Connection {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    waiting: Option<Waiting>,
    closed: bool,
}

struct Shim {
    args: ShimArgs,
    layout: CgroupLayout,
    listener: UnixListener,
    sigchld: File,
    containers: HashMap<String, ContainerEntry>,
    /// Exec'd processes by pid: `None` while running, the exit code once reaped.
    execs: HashMap<i32, Option<i32>>,
    connections: Vec<Connection>,
    shutting_down: bool,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, signal, _) => Some((pid.as_raw(), 128 + signal as i32)),
        _ => None,
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

impl Shim {
    fn start(args: ShimArgs) -> Result<Shim, ShimError> {
        let setup = |step| move |source| ShimError::Setup { step, source };
        let sys = |step| move |source| ShimError::Sys { step, source };
        std::fs::create_dir_all(&args.pod_dir).map_err(setup("creating the pod directory"))?;
        std::fs::create_dir_all(&args.state_root).map_err(setup("creating the state root"))?;
        if !args.foreground {
            // Detach from the agent's session and terminal so its signals and exit leave the
            // shim alone.
            setsid().map_err(sys("setsid"))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(args.pod_dir.join("shim.log"))
            .map_err(setup("opening shim.log"))?;
        let devnull = File::open("/dev/null").map_err(setup("opening /dev/null"))?;
        // SAFETY: dup2 onto the standard descriptors this process owns.
        unsafe {
            libc::dup2(devnull.as_raw_fd(), 0);
            libc::dup2(log.as_raw_fd(), 2);
        }
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; it makes processes orphaned
        // inside the pod (double forks in exec sessions) our children, so they get reaped.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(ShimError::Setup {
                step: "prctl(PR_SET_CHILD_SUBREAPER)",
                source: io::Error::last_os_error(),
            });
        }
        // Rust ignores SIGPIPE and ignored signals stay ignored across execve: restore the
        // default so container processes see the usual behaviour (`yes | head` ends). Socket
        // writes use MSG_NOSIGNAL instead.
        // SAFETY: installing the default disposition and an async-signal-safe handler.
        unsafe {
            sigaction(
                Signal::SIGPIPE,
                &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
            )
            .map_err(sys("restoring SIGPIPE"))?;
        }
        let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(sys("pipe2"))?;
        SIGCHLD_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        std::mem::forget(write);
        // SAFETY: the handler only calls write(2).
        unsafe {
            sigaction(
                Signal::SIGCHLD,
                &SigAction::new(
                    SigHandler::Handler(on_sigchld),
                    SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
                    SigSet::empty(),
                ),
            )
            .map_err(sys("installing the SIGCHLD handler"))?;
        }
        let _ = std::fs::remove_file(&args.socket);
        if let Some(parent) = args.socket.parent() {
            std::fs::create_dir_all(parent).map_err(setup("creating the socket directory"))?;
        }
        let listener = UnixListener::bind(&args.socket).map_err(setup("binding the socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(setup("making the socket non-blocking"))?;
        let mut shim = Shim {
            layout: CgroupLayout::detect(),
            listener,
            sigchld: File::from(read),
            containers: HashMap::new(),
            execs: HashMap::new(),
            connections: Vec::new(),
            shutting_down: false,
            args,
        };
        shim.adopt_previous_state();
        shim.save_state();
        // Tell whoever started us that the socket is ready, then let go of their pipe.
        let mut stdout = io::stdout();
        let _ = writeln!(stdout, "ready {}", std::process::id());
        let _ = stdout.flush();
        // SAFETY: as above.
        unsafe {
            libc::dup2(devnull.as_raw_fd(), 1);
        }
        Ok(shim)
    }

    /// A previous shim of this pod died: its containers' exit codes are lost. Keep their
    /// records (exited ones verbatim, running ones as `Unknown`) so the agent sees them.
    fn adopt_previous_state(&mut self) {
        let Ok(previous) = super::protocol::read_state_file(&self.args.pod_dir) else {
            return;
        };
        for mut status in previous.containers {
            let Ok(container) = Container::load(self.args.state_root.join(&status.id)) else {
                continue;
            };
            if status.state == ContainerState::Running {
                status.state = ContainerState::Unknown;
            }
            self.containers.insert(
                status.id.clone(),
                ContainerEntry {
                    status,
                    container,
                    outputs: Vec::new(),
                },
            );
        }
    }

    fn save_state(&self) {
        let state = ShimState {
            shim_pid: std::process::id() as i32,
            containers: self.containers.values().map(|e| e.status.clone()).collect(),
        };
        let path = self.args.pod_dir.join(STATE_FILE);
        let tmp = self.args.pod_dir.join(format!("{STATE_FILE}.tmp"));
        let result = serde_json::to_vec(&state)
            .map_err(io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            eprintln!("skiff shim: writing {path:?}: {e}");
        }
    }

    fn run(mut self) -> Result<(), ShimError> {
        loop {
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN));
            for conn in &self.connections {
                let mut flags = PollFlags::POLLIN;
                if !conn.outbuf.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(conn.stream.as_fd(), flags));
            }
            let mut outputs: Vec<(String, usize)> = Vec::new();
            for (id, entry) in &self.containers {
                for (i, out) in entry.outputs.iter().enumerate() {
                    fds.push(PollFd::new(out.pipe.as_fd(), PollFlags::POLLIN));
                    outputs.push((id.clone(), i));
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(source) => {
                    return Err(ShimError::Sys {
                        step: "poll",
                        source,
                    });
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let conn_count = self.connections.len();
            if ready[1] {
                let mut buf = [0u8; 64];
                while matches!(self.sigchld.read(&mut buf), Ok(n) if n > 0) {}
                self.reap();
            }
            for (k, (id, i)) in outputs.iter().enumerate() {
                if ready[2 + conn_count + k] {
                    self.drain_output(id, Some(*i));
                }
            }
            for c in 0..conn_count {
                if ready[2 + c] {
                    self.service_connection(c);
                }
            }
            if ready[0] {
                self.accept();
            }
            self.connections.retain(|c| !c.closed);
            if self.shutting_down && self.connections.iter().all(|c| c.outbuf.is_empty()) {
                let _ = std::fs::remove_file(&self.args.socket);
                let _ = std::fs::remove_file(self.args.pod_dir.join(STATE_FILE));
                return Ok(());
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.connections.push(Connection {
                            stream,
                            inbuf: Vec::new(),
                            outbuf: Vec::new(),
                            waiting: None,
                            closed: false,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("skiff shim: accept: {e}");
                    return;
                }
            }
        }
    }

    fn service_connection(&mut self, c: usize) {
        let mut buf = [0u8; 8192];
        loop {
            match self.connections[c].stream.read(&mut buf) {
                Ok(0) => {
                    self.connections[c].closed = true;
                    return;
                }
                Ok(n) => self.connections[c].inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.connections[c].closed = true;
                    return;
                }
            }
        }
        self.process_requests(c);
        self.flush(c);
    }

    /// Handles the complete request lines of connection `c`, one at a time: a connection
    /// waiting for an exit handles nothing else until the reply is sent.
    fn process_requests(&mut self, c: usize) {
        while self.connections[c].waiting.is_none() && !self.connections[c].closed {
            let Some(pos) = self.connections[c].inbuf.iter().position(|b| *b == b'\n') else {
                return;
            };
            let line: Vec<u8> = self.connections[c].inbuf.drain(..=pos).collect();
            let reply = match serde_json::from_slice::<Request>(&line) {
                Ok(request) => self.handle(c, request),
                Err(e) => Some(Reply::Error {
                    message: format!("malformed request: {e}"),
                }),
            };
            if let Some(reply) = reply {
                self.queue_reply(c, &reply);
            }
        }
    }

    fn queue_reply(&mut self, c: usize, reply: &Reply) {
        let conn = &mut self.connections[c];
        if let Ok(mut bytes) = serde_json::to_vec(reply) {
            bytes.push(b'\n');
            conn.outbuf.extend_from_slice(&bytes);
        }
    }

    fn flush(&mut self, c: usize) {
        let conn = &mut self.connections[c];
        while !conn.outbuf.is_empty() {
            let sent = nix::sys::socket::send(
                conn.stream.as_raw_fd(),
                &conn.outbuf,
                MsgFlags::MSG_NOSIGNAL,
            );
            match sent {
                Ok(n) => {
                    conn.outbuf.drain(..n);
                }
                Err(nix::Error::EAGAIN) => return,
                Err(nix::Error::EINTR) => continue,
                Err(_) => {
                    conn.closed = true;
                    conn.outbuf.clear();
                    return;
                }
            }
        }
    }

    /// `None` means no reply is to be queued: it comes later (a wait) or was sent (exec).
    fn handle(&mut self, c: usize, request: Request) -> Option<Reply> {
        let result = match request {
            Request::Start {
                id,
                spec,
                log_path,
                log_rotation,
            } => self.start_container(&id, &spec, &log_path, log_rotation.unwrap_or_default()),
            Request::Status { id } => self.status(&id).map(|status| Reply::Container { status }),
            Request::List => Ok(Reply::Containers {
                containers: self.containers.values().map(|e| e.status.clone()).collect(),
            }),
            Request::Wait { id } => match self.status(&id) {
                Ok(status) if status.state == ContainerState::Running => {
                    self.connections[c].waiting = Some(Waiting::Container(id));
                    return None;
                }
                other => other.map(|status| Reply::Container { status }),
            },
            Request::Kill { id, signal } => self.kill(&id, signal),
            Request::Delete { id } => self.delete(&id),
            Request::Exec {
                id,
                args,
                env,
                cwd,
                tty,
            } => {
                return self.exec(c, &id, args, env, cwd, tty);
            }
            Request::WaitExec { pid } => match self.execs.get(&pid) {
                None => Err(format!("no exec'd process with pid {pid}")),
                Some(Some(code)) => {
                    let code = *code;
                    self.execs.remove(&pid);
                    Ok(Reply::ExecExited { exit_code: code })
                }
                Some(None) => {
                    self.connections[c].waiting = Some(Waiting::Exec(pid));
                    return None;
                }
            },
            Request::Shutdown => {
                self.shutdown();
                Ok(Reply::Done)
            }
        };
        Some(result.unwrap_or_else(|message| Reply::Error { message }))
    }

    fn status(&self, id: &str) -> Result<ContainerStatus, String> {
        self.containers
            .get(id)
            .map(|e| e.status.clone())
            .ok_or_else(|| format!("container {id:?} not found"))
    }

    fn start_container(
        &mut self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        log_path: &Path,
        rotation: LogRotation,
    ) -> Result<Reply, String> {
        match self.containers.get(id).map(|e| e.status.state) {
            Some(ContainerState::Running) => {
                return Err(format!("container {id:?} is already running"));
            }
            Some(_) => {
                self.delete(id)?;
            }
            None => {}
        }
        let bundle = self.args.pod_dir.join("bundles").join(id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| format!("creating bundle directory {bundle:?}: {e}"))?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| format!("writing {:?}: {e}", bundle.join("config.json")))?;
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating log directory {parent:?}: {e}"))?;
        }
        let log = LogFile::open(log_path, rotation.max_size, rotation.max_files)
            .map_err(|e| format!("opening log file {log_path:?}: {e}"))?
            .shared();
        let log2 = log.clone();
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating an output pipe: {e}"));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
        let cgroup_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let created = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.args.state_root)
            .map_err(|e| format!("libcontainer state root: {e}"))?
            .with_stdin(stdin)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .validate_id()
            .map_err(|e| format!("container id {id:?}: {e}"))?
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build();
        let mut container = match created {
            Ok(container) => container,
            Err(e) => {
                self.discard_failed(id, &bundle);
                return Err(format!("creating container {id:?}: {e}"));
            }
        };
        if let Err(e) = container.start() {
            let _ = container.delete(true);
            self.discard_failed(id, &bundle);
            return Err(format!("starting container {id:?}: {e}"));
        }
        let outputs = [(out_r, Stream::Stdout, log), (err_r, Stream::Stderr, log2)]
            .into_iter()
            .filter_map(|(fd, stream, file)| {
                set_nonblocking(fd.as_fd()).ok()?;
                Some(Output {
                    pipe: File::from(fd),
                    writer: CriLogWriter::new(stream, file),
                })
            })
            .collect();
        let status = ContainerStatus {
            id: id.to_string(),
            state: ContainerState::Running,
            pid: container.pid().map(Pid::as_raw),
            exit_code: None,
            started_at: Some(now()),
            finished_at: None,
            oom_killed: false,
            log_path: log_path.to_path_buf(),
            cgroup_path,
        };
        self.containers.insert(
            id.to_string(),
            ContainerEntry {
                status: status.clone(),
                container,
                outputs,
            },
        );
        self.save_state();
        Ok(Reply::Container { status })
    }

    /// Leaves nothing of a container whose creation failed half-way.
    fn discard_failed(&mut self, id: &str, bundle: &Path) {
        if let Ok(mut c) = Container::load(self.args.state_root.join(id)) {
            let _ = c.delete(true);
        }
        let _ = std::fs::remove_dir_all(self.args.state_root.join(id));
        let _ = std::fs::remove_dir_all(bundle);
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<Reply, String> {
        let entry = self
            .containers
            .get_mut(id)
            .ok_or_else(|| format!("container {id:?} not found"))?;
        if entry.status.state != ContainerState::Running {
            return Ok(Reply::Done);
        }
        let sig = libcontainer::signal::Signal::try_from(signal)
            .map_err(|e| format!("signal {signal}: {e}"))?;
        // SIGKILL goes to every process of the cgroup (as `runc kill --all`), so nothing that
        // left the pid namespace survives; other signals only to init, which may handle them.
        let all = signal == libc::SIGKILL;
        entry
            .container
            .kill(sig, all)
            .map_err(|e| format!("killing container {id:?} with signal {signal}: {e}"))?;
        Ok(Reply::Done)
    }

    fn delete(&mut self, id: &str) -> Result<Reply, String> {
        let entry = self
            .containers
            .get_mut(id)
            .ok_or_else(|| format!("container {id:?} not found"))?;
        if entry.status.state == ContainerState::Running {
            return Err(format!(
                "container {id:?} is running; kill it before deleting"
            ));
        }
        entry
            .container
            .delete(true)
            .map_err(|e| format!("deleting container {id:?}: {e}"))?;
        self.containers.remove(id);
        let _ = std::fs::remove_dir_all(self.args.pod_dir.join("bundles").join(id));
        self.save_state();
        Ok(Reply::Done)
    }

    fn exec(
        &mut self,
        c: usize,
        id: &str,
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
        tty: bool,
    ) -> Option<Reply> {
        match self.status(id) {
            Ok(s) if s.state == ContainerState::Running => {}
            Ok(_) => {
                return Some(Reply::Error {
                    message: format!("container {id:?} is not running"),
                });
            }
            Err(message) => return Some(Reply::Error { message }),
        }
        if args.is_empty() {
            return Some(Reply::Error {
                message: "exec: no command given".into(),
            });
        }
        // The exec'd process is the container's own process definition (user, groups,
        // capabilities, no_new_privs, rlimits, apparmor) with the command, env and cwd
        // replaced, as `runc exec` does; libcontainer's defaults would run it as root.
        let process_file = match self.exec_process_file(id, args, env, cwd, tty) {
            Ok(p) => p,
            Err(message) => return Some(Reply::Error { message }),
        };
        let started = if tty {
            self.exec_on_terminal(id, &process_file)
        } else {
            self.exec_with_pipes(id, &process_file)
        };
        let _ = std::fs::remove_file(&process_file);
        let (pid, fds) = match started {
            Ok(started) => started,
            Err(message) => return Some(Reply::Error { message }),
        };
        self.execs.insert(pid, None);
        // The reply must carry the descriptors, so it is sent here, ahead of anything queued
        // (nothing is: a connection handles one request at a time).
        let mut line = serde_json::to_vec(&Reply::ExecStarted { pid }).unwrap_or_default();
        line.push(b'\n');
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let conn = &mut self.connections[c];
        let iov = [io::IoSlice::new(&line)];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let sent = loop {
            match sendmsg::<()>(
                conn.stream.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::Error::EINTR) => continue,
                other => break other,
            }
        };
        drop(fds);
        match sent {
            Ok(n) => conn.outbuf.extend_from_slice(&line[n..]),
            Err(e) => {
                eprintln!("skiff shim: sending exec descriptors: {e}");
                conn.closed = true;
            }
        }
        // Already written (or the connection is gone): nothing more to queue.
        None
    }

    /// Writes the process definition of an exec into the container's bundle directory.
    fn exec_process_file(
        &self,
        id: &str,
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
        tty: bool,
    ) -> Result<PathBuf, String> {
        let bundle = self.args.pod_dir.join("bundles").join(id);
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            .map_err(|e| format!("exec in container {id:?}: reading its spec: {e}"))?;
        let mut process = spec.process().clone().unwrap_or_default();
        // Extra variables override the container's own by name (runc's rule).
        let mut merged: Vec<String> = process.env().clone().unwrap_or_default();
        for kv in env {
            let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k).to_string();
            merged.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            merged.push(kv);
        }
        process
            .set_args(Some(args))
            .set_env(Some(merged))
            .set_terminal(Some(tty))
            .set_console_size(None);
        if let Some(cwd) = cwd {
            process.set_cwd(PathBuf::from(cwd));
        }
        let n = EXEC_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = bundle.join(format!("exec-{}-{n}.json", std::process::id()));
        let json = serde_json::to_vec(&process)
            .map_err(|e| format!("exec in container {id:?}: encoding its process: {e}"))?;
        std::fs::write(&path, json).map_err(|e| format!("writing {path:?}: {e}"))?;
        Ok(path)
    }

    /// Starts an exec with three pipes; returns its pid and the ends for the client
    /// (stdin's writer, stdout's and stderr's readers).
    fn exec_with_pipes(
        &mut self,
        id: &str,
        process_file: &Path,
    ) -> Result<(i32, Vec<OwnedFd>), String> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("exec: creating a pipe: {e}"));
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let pid = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.args.state_root)
            .and_then(|b| {
                b.with_stdin(in_r)
                    .with_stdout(out_w)
                    .with_stderr(err_w)
                    .as_tenant()
                    .with_process(Some(process_file))
                    .with_detach(true)
                    .build()
            })
            .map_err(|e| format!("exec in container {id:?}: {e}"))?;
        Ok((pid.as_raw(), vec![in_w, out_r, err_r]))
    }

    /// Starts an exec on a new terminal: libcontainer opens the pty inside the container (so
    /// the process has a controlling terminal from the container's own devpts) and hands the
    /// master over a console socket. The client gets the master twice (input and output) and
    /// an already-ended stderr, since a terminal has one output.
    fn exec_on_terminal(
        &mut self,
        id: &str,
        process_file: &Path,
    ) -> Result<(i32, Vec<OwnedFd>), String> {
        let n = EXEC_SEQ.fetch_add(1, Ordering::Relaxed);
        let socket_path = self
            .args
            .pod_dir
            .join(format!("console-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path)
            .map_err(|e| format!("exec: binding the console socket {socket_path:?}: {e}"))?;
        let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.args.state_root)
            .and_then(|b| {
                b.with_console_socket(Some(&socket_path))
                    .as_tenant()
                    .with_process(Some(process_file))
                    .with_detach(true)
                    .build()
            });
        let received = built
            .map_err(|e| format!("exec in container {id:?}: {e}"))
            .and_then(|pid| {
                // libcontainer connected during build; the pty master is on that connection.
                let (conn, _) = listener
                    .accept()
                    .map_err(|e| format!("exec: accepting the console socket: {e}"))?;
                let master = receive_fd(&conn)?;
                Ok((pid, master))
            });
        let _ = std::fs::remove_file(&socket_path);
        let (pid, master) = received?;
        let output = master
            .try_clone()
            .map_err(|e| format!("exec: duplicating the terminal: {e}"))?;
        let (err_r, err_w) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("exec: creating a pipe: {e}"))?;
        drop(err_w);
        Ok((pid.as_raw(), vec![master, output, err_r]))
    }

    fn drain_output(&mut self, id: &str, only: Option<usize>) {
        let Some(entry) = self.containers.get_mut(id) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut finished = Vec::new();
        for (i, out) in entry.outputs.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            loop {
                match out.pipe.read(&mut buf) {
                    Ok(0) => {
                        let _ = out.writer.finish();
                        finished.push(i);
                        break;
                    }
                    Ok(n) => {
                        if let Err(e) = out.writer.write(&buf[..n]) {
                            eprintln!("skiff shim: writing the log of {id:?}: {e}");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        finished.push(i);
                        break;
                    }
                }
            }
        }
        for i in finished.into_iter().rev() {
            entry.outputs.remove(i);
        }
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some((pid, code)) = exit_code(status) else {
                continue;
            };
            if let Some(slot) = self.execs.get_mut(&pid) {
                *slot = Some(code);
                self.wake(&Waiting::Exec(pid));
                continue;
            }
            let id = self
                .containers
                .iter()
                .find(|(_, e)| {
                    e.status.pid == Some(pid) && e.status.state == ContainerState::Running
                })
                .map(|(id, _)| id.clone());
            if let Some(id) = id {
                self.container_exited(&id, code);
            }
        }
    }

    fn container_exited(&mut self, id: &str, code: i32) {
        // The pid namespace's init is gone, so the kernel has killed every writer of the output
        // pipes: read them to the end so the log is complete before anyone hears of the exit.
        self.drain_output(id, None);
        let layout = self.layout;
        if let Some(entry) = self.containers.get_mut(id) {
            entry.status.state = ContainerState::Exited;
            entry.status.exit_code = Some(code);
            entry.status.finished_at = Some(now());
            entry.status.oom_killed = layout
                .oom_kill_count(&entry.status.cgroup_path)
                .is_some_and(|n| n > 0);
        }
        self.save_state();
        self.wake(&Waiting::Container(id.to_string()));
    }

    fn wake(&mut self, what: &Waiting) {
        for c in 0..self.connections.len() {
            if self.connections[c].waiting.as_ref() != Some(what) {
                continue;
            }
            self.connections[c].waiting = None;
            let reply = match what {
                Waiting::Container(id) => self
                    .status(id)
                    .map(|status| Reply::Container { status })
                    .unwrap_or_else(|message| Reply::Error { message }),
                Waiting::Exec(pid) => match self.execs.remove(pid) {
                    Some(Some(exit_code)) => Reply::ExecExited { exit_code },
                    _ => Reply::Error {
                        message: format!("exec'd process {pid} vanished"),
                    },
                },
            };
            self.queue_reply(c, &reply);
            self.process_requests(c);
            self.flush(c);
        }
    }

    /// Kills and deletes every container, waiting for each to exit.
    fn shutdown(&mut self) {
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        for id in &ids {
            let running = self
                .containers
                .get(id)
                .filter(|e| e.status.state == ContainerState::Running)
                .and_then(|e| e.status.pid);
            if let Some(pid) = running {
                let _ = self.kill(id, libc::SIGKILL);
                let code = match waitpid(Pid::from_raw(pid), None) {
                    Ok(status) => exit_code(status).map(|(_, c)| c).unwrap_or(137),
                    Err(_) => 137,
                };
                self.container_exited(id, code);
            }
            if let Err(e) = self.delete(id) {
                eprintln!("skiff shim: shutdown: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(self.args.pod_dir.join("bundles"));
        self.shutting_down = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_and_renders_arguments() {
        let args = ShimArgs::parse(strings(&[
            "--pod-dir",
            "/p",
            "--socket",
            "/p/s.sock",
            "--state-root",
            "/run/skiff",
            "--foreground",
        ]))
        .expect("parse");
        assert_eq!(args.pod_dir, Path::new("/p"));
        assert!(args.foreground);
        assert_eq!(ShimArgs::parse(args.to_args()).expect("round trip"), args);
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(matches!(
            ShimArgs::parse(strings(&["--pod-dir"])),
            Err(ShimError::Usage(_))
        ));
        assert!(matches!(
            ShimArgs::parse(strings(&["--bogus"])),
            Err(ShimError::Usage(_))
        ));
        let missing = ShimArgs::parse(strings(&["--pod-dir", "/p", "--socket", "/s"]));
        assert!(matches!(missing, Err(ShimError::Usage(m)) if m.contains("--state-root")));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let pid = Pid::from_raw(5);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some((5, 3)));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((5, 137))
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
