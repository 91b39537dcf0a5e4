//! Container output in the CRI log format the kubelet reads and `kubectl logs` shows:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n`, `P` marking a partial line that
//! was split (too long, or cut by a restart) and `F` a full one. A last line without a newline
//! at end of stream is written as full, as containerd does.
//!
//! [`LogFile`] rotates like the kubelet's `containerLogMaxSize` / `containerLogMaxFiles`
//! (10 MiB, 5 files): once the file reaches the size, it is renamed `<n>.log.<UTC
//! %Y%m%d-%H%M%S>` and a fresh `<n>.log` started, at a line boundary; the oldest rotated files
//! beyond the limit are removed. Readers that follow the log notice the new file (its inode
//! changed) and carry on there.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The kubelet's default `containerLogMaxSize`.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// The kubelet's default `containerLogMaxFiles` (the live file included).
pub const DEFAULT_MAX_FILES: usize = 5;

/// One container run's log file, shared by its stdout and stderr writers, rotated by size.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl LogFile {
    /// Opens (appending) the log at `path`; `max_size` 0 disables rotation.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> std::io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
        })
    }

    /// Shared handle for the two writers of one run.
    pub fn shared(self) -> Rc<RefCell<LogFile>> {
        Rc::new(RefCell::new(self))
    }

    /// Appends whole lines, rotating first when the file is full.
    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let full =
            self.max_size > 0 && self.size > 0 && self.size + lines.len() as u64 > self.max_size;
        // On failure, keep logging into the full file rather than lose output.
        if full && let Err(e) = self.rotate() {
            eprintln!("skiff shim: rotating {:?}: {e}", self.path);
        }
        self.file.write_all(lines)?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let mut rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let mut n = 1;
        while rotated.exists() {
            // Zero-padded so that names still sort by age.
            rotated = PathBuf::from(format!("{}.{stamp}.{n:04}", self.path.display()));
            n += 1;
        }
        std::fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.prune()
    }

    /// Removes the oldest rotated files so that at most `max_files` remain with the live one.
    fn prune(&self) -> std::io::Result<()> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(());
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        // The timestamp suffix sorts chronologically.
        rotated.sort();
        let keep = self.max_files - 1;
        let excess = rotated.len().saturating_sub(keep);
        for old in &rotated[..excess] {
            std::fs::remove_file(old)?;
        }
        Ok(())
    }
}

/// Lines longer than this are split into `P` chunks (containerd's default `max_container_log_line_size`).
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Splits one stream's bytes into CRI log lines.
#[derive(Debug)]
pub struct CriLogWriter {
    stream: Stream,
    file: Rc<RefCell<LogFile>>,
    pending: Vec<u8>,
}

impl CriLogWriter {
    pub fn new(stream: Stream, file: Rc<RefCell<LogFile>>) -> CriLogWriter {
        CriLogWriter {
            stream,
            file,
            pending: Vec::new(),
        }
    }

    /// Writes every complete line in `data`, keeping the rest for later.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        let mut out = Vec::new();
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            self.format_chunks(&self.pending[start..end], true, &mut out);
            start = end + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE {
            let chunk: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            self.format_one(&chunk, false, &mut out);
        }
        if out.is_empty() {
            Ok(())
        } else {
            self.file.borrow_mut().append(&out)
        }
    }

    /// End of stream: a trailing partial line is written as full.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk: Vec<u8> = self.pending.drain(..).collect();
        let mut out = Vec::new();
        self.format_chunks(&chunk, true, &mut out);
        self.file.borrow_mut().append(&out)
    }

    fn format_chunks(&self, line: &[u8], complete: bool, out: &mut Vec<u8>) {
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if line.is_empty() {
            self.format_one(b"", complete, out);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            self.format_one(chunk, complete && last, out);
        }
    }

    fn format_one(&self, content: &[u8], full: bool, out: &mut Vec<u8>) {
        let stamp = jiff::Timestamp::now();
        let tag = if full { "F" } else { "P" };
        let _ = write!(out, "{stamp} {} {tag} ", self.stream.name());
        out.extend_from_slice(content);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(f: impl FnOnce(&mut CriLogWriter)) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let file = LogFile::open(&path, 0, 1).expect("create").shared();
        let mut w = CriLogWriter::new(Stream::Stderr, file);
        f(&mut w);
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|l| {
                l.split_once(' ')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn splits_lines_and_marks_partials() {
        let lines = lines_of(|w| {
            w.write(b"hel").expect("write");
            w.write(b"lo\n\nwor").expect("write");
            w.finish().expect("finish");
        });
        assert_eq!(lines, ["stderr F hello", "stderr F ", "stderr F wor"]);

        let long = vec![b'x'; MAX_LINE + 5];
        let lines = lines_of(|w| {
            w.write(&long).expect("write");
            w.write(b"\n").expect("write");
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), "stderr P ".len() + MAX_LINE);
        assert!(lines[0].starts_with("stderr P xxx"));
        assert_eq!(lines[1], "stderr F xxxxx");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let file = LogFile::open(&path, 0, 1).expect("create").shared();
        let mut w = CriLogWriter::new(Stream::Stdout, file);
        w.write(b"a\n").expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let stamp = text.split(' ').next().unwrap_or_default();
        assert!(
            stamp.ends_with('Z') && stamp.parse::<jiff::Timestamp>().is_ok(),
            "{stamp}"
        );
    }

    #[test]
    fn rotates_at_line_boundaries_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        // Each formatted line is about 60 bytes: 200-byte files hold three of them.
        let file = LogFile::open(&path, 200, 3).expect("open").shared();
        let mut out = CriLogWriter::new(Stream::Stdout, file.clone());
        let mut err = CriLogWriter::new(Stream::Stderr, file);
        for i in 0..40 {
            let w = if i % 2 == 0 { &mut out } else { &mut err };
            w.write(format!("line {i:03}\n").as_bytes()).expect("write");
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "0.log");
        assert!(
            names[1..].iter().all(|n| n.starts_with("0.log.")),
            "{names:?}"
        );
        let live = std::fs::read_to_string(&path).expect("live");
        assert!(live.len() <= 200, "{}", live.len());
        assert!(live.ends_with("stderr F line 039\n"), "{live}");
        // Every file holds whole lines only.
        for n in &names {
            let text = std::fs::read_to_string(dir.path().join(n)).expect("read");
            assert!(text.lines().all(|l| l.contains(" F line ")), "{text}");
        }
    }
}
