//! Where a command's output goes: stdout and stderr, or, when a command runs on several
//! hosts (or follows several logs) at once, whole lines prefixed with the host, so lines
//! written by different threads never mix.

use std::io::{self, Write};

pub struct Io {
    pub out: Box<dyn Write + Send>,
    pub err: Box<dyn Write + Send>,
    /// Whether tables are coloured.
    pub colour: bool,
}

impl Io {
    pub fn std(colour: bool) -> Io {
        Io { out: Box::new(io::stdout()), err: Box::new(io::stderr()), colour }
    }

    /// Whole lines, each prefixed `PREFIX ` when there is one.
    pub fn lines(prefix: Option<&str>, colour: bool) -> Io {
        Io { out: Box::new(Lines::new(prefix, Stream::Out)), err: Box::new(Lines::new(prefix, Stream::Err)), colour }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Writes complete lines only, each with one write to the locked stream.
struct Lines {
    prefix: Vec<u8>,
    stream: Stream,
    line: Vec<u8>,
}

impl Lines {
    fn new(prefix: Option<&str>, stream: Stream) -> Lines {
        let prefix = prefix.map(|prefix| format!("{prefix} ").into_bytes()).unwrap_or_default();
        Lines { line: prefix.clone(), prefix, stream }
    }

    fn emit(&mut self) -> io::Result<()> {
        let written = match self.stream {
            Stream::Out => io::stdout().lock().write_all(&self.line),
            Stream::Err => io::stderr().lock().write_all(&self.line),
        };
        self.line.clear();
        self.line.extend_from_slice(&self.prefix);
        written
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..=end]);
            self.emit()?;
            rest = &rest[end + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if self.line.len() > self.prefix.len() {
            self.line.push(b'\n');
            let _ = self.emit();
        }
    }
}
