//! Reading what a person hands the CLI (config files, keys, token files,
//! stdin) with a size limit and a time limit.
//!
//! The limit is enforced while reading, not after: `/dev/zero` stops at the
//! limit, and a named FIFO with no writer, or one that never ends, fails
//! within the time limit instead of hanging the command.

use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long reading one input may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An input that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The input.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// More than the limit.
    #[error("{path}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The input.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// Not all of it arrived in time.
    #[error("{path}: not fully read within {timeout:?} (a FIFO or device that does not end?)")]
    TimedOut {
        /// The input.
        path: String,
        /// The time limit.
        timeout: Duration,
    },
}

/// Reads `path` (`-`: stdin) whole, refusing more than `limit` bytes or
/// taking longer than [`READ_TIMEOUT`].
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, InputError> {
    read_bounded_within(path, limit, READ_TIMEOUT)
}

/// [`read_bounded`] with its own time limit.
pub fn read_bounded_within(
    path: &Path,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, InputError> {
    let name = path.display().to_string();
    let io = |source| InputError::Io {
        path: name.clone(),
        source,
    };
    if path == Path::new("-") {
        // Stdin is the caller's pipe or terminal: read it as it comes (a
        // terminal ends with Ctrl-D), still no more than the limit.
        return read_limited(&mut std::io::stdin().lock(), &name, limit, None);
    }
    // Non-blocking, so opening a FIFO does not wait for a writer; reads
    // from a FIFO, pipe or device then poll until the deadline.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::new(
            ErrorKind::IsADirectory,
            "is a directory",
        )));
    }
    if meta.is_file() && meta.len() > limit as u64 {
        return Err(InputError::TooLarge { path: name, limit });
    }
    read_limited(
        &mut file,
        &name,
        limit,
        Some((Instant::now() + timeout, timeout)),
    )
}

fn read_limited(
    source: &mut impl Read,
    name: &str,
    limit: usize,
    deadline: Option<(Instant, Duration)>,
) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match source.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > limit {
                    return Err(InputError::TooLarge {
                        path: name.to_owned(),
                        limit,
                    });
                }
                out.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => match deadline {
                Some((at, _)) if Instant::now() < at => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Some((_, timeout)) => {
                    return Err(InputError::TimedOut {
                        path: name.to_owned(),
                        timeout,
                    });
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            },
            Err(source) => {
                return Err(InputError::Io {
                    path: name.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rollout-input-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch");
        dir
    }

    #[test]
    fn an_endless_device_stops_at_the_limit() {
        let started = Instant::now();
        let got = read_bounded(Path::new("/dev/zero"), 256 * 1024);
        assert!(
            matches!(got, Err(InputError::TooLarge { limit, .. }) if limit == 256 * 1024),
            "{got:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_file_over_the_limit_is_refused_and_one_within_is_read() {
        let dir = scratch("files");
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; 1001]).expect("write");
        assert!(matches!(
            read_bounded(&big, 1000),
            Err(InputError::TooLarge { .. })
        ));
        let small = dir.join("small.json");
        std::fs::write(&small, b"{}").expect("write");
        assert_eq!(read_bounded(&small, 1000).expect("reads"), b"{}");
        assert!(matches!(
            read_bounded(&dir.join("absent"), 1000),
            Err(InputError::Io { .. })
        ));
        assert!(matches!(
            read_bounded(&dir, 1000),
            Err(InputError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pipe_that_never_ends_fails_at_the_deadline_and_one_that_ends_is_read() {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        // Paths to pipes, as `rollout push <(generate-config)` gives them.
        let (done, mut finished) = std::io::pipe().expect("pipe");
        finished.write_all(b"{}").expect("write");
        drop(finished);
        let path = format!("/proc/self/fd/{}", done.as_raw_fd());
        let got = read_bounded_within(Path::new(&path), 1000, Duration::from_millis(300));
        assert_eq!(got.expect("the writer finished"), b"{}");

        let (open, mut writer) = std::io::pipe().expect("pipe");
        writer.write_all(b"{").expect("write");
        let path = format!("/proc/self/fd/{}", open.as_raw_fd());
        let started = Instant::now();
        let got = read_bounded_within(Path::new(&path), 1000, Duration::from_millis(300));
        assert!(matches!(got, Err(InputError::TimedOut { .. })), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(writer);
    }
}
