//! Container output in the CRI log format the kubelet reads and `kubectl logs` shows:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n`, `P` marking a partial line that
//! was split (too long, or cut by a restart) and `F` a full one. A last line without a newline
//! at end of stream is written as full, as containerd does.

use std::fs::File;
use std::io::Write;

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
    file: File,
    pending: Vec<u8>,
}

impl CriLogWriter {
    pub fn new(stream: Stream, file: File) -> CriLogWriter {
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
            self.file.write_all(&out)
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
        self.file.write_all(&out)
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
        let file = File::create(&path).expect("create");
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
        let mut w = CriLogWriter::new(Stream::Stdout, File::create(&path).expect("create"));
        w.write(b"a\n").expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let stamp = text.split(' ').next().unwrap_or_default();
        assert!(
            stamp.ends_with('Z') && stamp.parse::<jiff::Timestamp>().is_ok(),
            "{stamp}"
        );
    }
}
