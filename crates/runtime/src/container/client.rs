//! [`ShimClient`]: the agent's side of a pod's shim (async, tokio).
//!
//! Each client is one connection, and a connection carries one request at a time; waits
//! ([`ShimClient::wait`], [`ShimClient::wait_exec`]) hold theirs until the process exits, so
//! use a separate client for them ([`ShimClient::connect`] is cheap).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use oci_spec::runtime::Spec;
use std::pin::Pin;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;

use super::protocol::{ContainerStatus, LogRotation, Reply, Request};
use super::shim::ShimArgs;

/// A failed shim request. `Connect` and `Io` are retryable (the shim may be restarting);
/// `Shim` carries the shim's own message about the request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("starting shim {binary:?}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim {binary:?} exited before it was ready (see its shim.log)")]
    NotReady { binary: PathBuf },
    #[error("connecting to shim socket {socket:?}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the shim")]
    Io(#[source] std::io::Error),
    #[error("shim closed the connection")]
    Closed,
    #[error("unreadable shim reply")]
    Decode(#[source] serde_json::Error),
    #[error("shim: {0}")]
    Shim(String),
    #[error("unexpected shim reply {0:?}")]
    Unexpected(Box<Reply>),
}

/// The input of an exec'd process: a pipe, or its terminal.
pub type ExecInput = Pin<Box<dyn AsyncWrite + Send>>;
/// An output of an exec'd process: a pipe, or its terminal.
pub type ExecOutput = Pin<Box<dyn AsyncRead + Send>>;

/// A process exec'd in a container: its pid (for [`ShimClient::wait_exec`]) and its stdio.
/// On a terminal, stdin and stdout are the pty master, stderr ends at once, and `terminal`
/// sets the window size.
pub struct ExecProcess {
    pub pid: i32,
    pub stdin: ExecInput,
    pub stdout: ExecOutput,
    pub stderr: ExecOutput,
    pub terminal: Option<Terminal>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("pid", &self.pid)
            .field("terminal", &self.terminal.is_some())
            .finish_non_exhaustive()
    }
}

/// The pty master of an exec on a terminal.
#[derive(Debug)]
pub struct Terminal(OwnedFd);

impl Terminal {
    /// Sets the terminal's window size (what `kubectl exec -t` sends on the resize channel);
    /// the process gets SIGWINCH.
    pub fn resize(&self, columns: u16, rows: u16) -> std::io::Result<()> {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
        unsafe { set_window_size(self.0.as_raw_fd(), &size) }
            .map(drop)
            .map_err(std::io::Error::from)
    }
}

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, nix::pty::Winsize);

/// Async reads and writes on a pty master. Once the last process holding the terminal's other
/// side has exited, Linux answers reads with EIO: that is the end of the output.
struct PtyStream(tokio::io::unix::AsyncFd<OwnedFd>);

impl PtyStream {
    fn new(fd: OwnedFd) -> std::io::Result<PtyStream> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: an OwnedFd's descriptor stays open and the same until the AsyncFd drops it.
        let registered = unsafe { tokio::io::unix::AsyncFd::register(fd) }?;
        Ok(PtyStream(registered))
    }
}

impl AsyncRead for PtyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), unfilled).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| {
                nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)
            }) {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[derive(Debug)]
pub struct ShimClient {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl ShimClient {
    /// Starts `skiff_binary shim ARGS` for a pod, detached (it forks into its own session), and
    /// connects once it reports ready.
    pub async fn spawn_shim(
        skiff_binary: &Path,
        args: &ShimArgs,
    ) -> Result<ShimClient, ClientError> {
        let spawn_err = |source| ClientError::Spawn {
            binary: skiff_binary.to_path_buf(),
            source,
        };
        let mut child = tokio::process::Command::new(skiff_binary)
            .arg("shim")
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(spawn_err)?;
        let stdout = child.stdout.take();
        let mut line = String::new();
        if let Some(stdout) = stdout {
            let mut reader = tokio::io::BufReader::new(stdout);
            reader.read_line(&mut line).await.map_err(spawn_err)?;
        }
        // The first process exits right after forking (or, with --foreground, keeps running
        // and is reaped by tokio when it exits).
        if !args.foreground {
            let _ = child.wait().await;
        }
        if !line.starts_with("ready") {
            return Err(ClientError::NotReady {
                binary: skiff_binary.to_path_buf(),
            });
        }
        ShimClient::connect(&args.socket).await
    }

    /// Connects to a running shim (re-adoption after an agent restart).
    pub async fn connect(socket: &Path) -> Result<ShimClient, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(ShimClient {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        })
    }

    /// Like [`ShimClient::connect`], retrying for up to `timeout` while the socket appears.
    pub async fn connect_timeout(
        socket: &Path,
        timeout: Duration,
    ) -> Result<ShimClient, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match ShimClient::connect(socket).await {
                Ok(client) => return Ok(client),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let mut line = serde_json::to_vec(request).map_err(ClientError::Decode)?;
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .await
            .map_err(ClientError::Io)?;
        let reply = self.read_reply().await?;
        match reply {
            Reply::Error { message } => Err(ClientError::Shim(message)),
            reply => Ok(reply),
        }
    }

    /// Reads one reply line with recvmsg, keeping any descriptors passed with it.
    async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return serde_json::from_slice(&line).map_err(ClientError::Decode);
            }
            let mut chunk = vec![0u8; 8192];
            let fd = self.stream.as_raw_fd();
            let (n, fds) = self
                .stream
                .async_io(Interest::READABLE, || receive(fd, &mut chunk))
                .await
                .map_err(ClientError::Io)?;
            self.fds.extend(fds);
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn status_reply(reply: Reply) -> Result<ContainerStatus, ClientError> {
        match reply {
            Reply::Container { status } => Ok(status),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    fn done_reply(reply: Reply) -> Result<(), ClientError> {
        match reply {
            Reply::Done => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Creates and starts container `id`; output goes to `log_path` (CRI format).
    pub async fn start(
        &mut self,
        id: &str,
        spec: &Spec,
        log_path: &Path,
    ) -> Result<ContainerStatus, ClientError> {
        self.start_with(id, spec, log_path, LogRotation::default()).await
    }

    /// [`ShimClient::start`] with the log rotated per `rotation`.
    pub async fn start_with(
        &mut self,
        id: &str,
        spec: &Spec,
        log_path: &Path,
        rotation: LogRotation,
    ) -> Result<ContainerStatus, ClientError> {
        let request = Request::Start {
            id: id.to_string(),
            spec: Box::new(spec.clone()),
            log_path: log_path.to_path_buf(),
            log_rotation: Some(rotation),
        };
        Self::status_reply(self.call(&request).await?)
    }

    pub async fn status(&mut self, id: &str) -> Result<ContainerStatus, ClientError> {
        Self::status_reply(self.call(&Request::Status { id: id.to_string() }).await?)
    }

    pub async fn list(&mut self) -> Result<Vec<ContainerStatus>, ClientError> {
        match self.call(&Request::List).await? {
            Reply::Containers { containers } => Ok(containers),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Waits until container `id` has exited and returns its final status.
    pub async fn wait(&mut self, id: &str) -> Result<ContainerStatus, ClientError> {
        Self::status_reply(self.call(&Request::Wait { id: id.to_string() }).await?)
    }

    pub async fn kill(&mut self, id: &str, signal: i32) -> Result<(), ClientError> {
        Self::done_reply(
            self.call(&Request::Kill {
                id: id.to_string(),
                signal,
            })
            .await?,
        )
    }

    pub async fn delete(&mut self, id: &str) -> Result<(), ClientError> {
        Self::done_reply(self.call(&Request::Delete { id: id.to_string() }).await?)
    }

    /// Runs `args` inside running container `id` with piped stdio.
    pub async fn exec(
        &mut self,
        id: &str,
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
    ) -> Result<ExecProcess, ClientError> {
        self.exec_with(id, args, env, cwd, false).await
    }

    /// Runs `args` inside running container `id`, on a new terminal when `tty`.
    pub async fn exec_with(
        &mut self,
        id: &str,
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
        tty: bool,
    ) -> Result<ExecProcess, ClientError> {
        self.fds.clear();
        let reply = self
            .call(&Request::Exec {
                id: id.to_string(),
                args,
                env,
                cwd,
                tty,
            })
            .await?;
        let Reply::ExecStarted { pid } = reply else {
            return Err(ClientError::Unexpected(Box::new(reply)));
        };
        let mut fds = std::mem::take(&mut self.fds).into_iter();
        let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
            return Err(ClientError::Shim(format!(
                "exec {pid}: the stdio descriptors did not arrive"
            )));
        };
        let stderr: ExecOutput =
            Box::pin(pipe::Receiver::from_owned_fd(stderr).map_err(ClientError::Io)?);
        if tty {
            let resize = stdin.try_clone().map_err(ClientError::Io)?;
            return Ok(ExecProcess {
                pid,
                stdin: Box::pin(PtyStream::new(stdin).map_err(ClientError::Io)?),
                stdout: Box::pin(PtyStream::new(stdout).map_err(ClientError::Io)?),
                stderr,
                terminal: Some(Terminal(resize)),
            });
        }
        Ok(ExecProcess {
            pid,
            stdin: Box::pin(pipe::Sender::from_owned_fd(stdin).map_err(ClientError::Io)?),
            stdout: Box::pin(pipe::Receiver::from_owned_fd(stdout).map_err(ClientError::Io)?),
            stderr,
            terminal: None,
        })
    }

    /// Waits for an exec'd process and returns its exit code (`128 + signal` if killed).
    pub async fn wait_exec(&mut self, pid: i32) -> Result<i32, ClientError> {
        match self.call(&Request::WaitExec { pid }).await? {
            Reply::ExecExited { exit_code } => Ok(exit_code),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// SIGKILLs and deletes every container; the shim then exits.
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        Self::done_reply(self.call(&Request::Shutdown).await?)
    }
}

/// One non-blocking recvmsg: bytes read and descriptors received (close-on-exec).
pub(crate) fn receive(fd: RawFd, chunk: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [IoSliceMut::new(chunk)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this process for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}
