//! One training run per output folder: an exclusive lock on
//! `<output_dir>/.kiln-lock`, held for the run's lifetime.
//!
//! Two processes training into one folder would interleave checkpoints and
//! rotation (one run's weights beside the other's optimizer state), so the
//! second is refused. The lock is an advisory OS file lock (`flock` on
//! Unix), released by the kernel when the holding process exits for any
//! reason, kill -9 included, so a crash never leaves a stale lock. Within
//! one process, locking the same folder again shares the lock (the CLI
//! takes it before tokenising, the [`super::Trainer`] again).

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::{ModelError, Result};

/// The lock file's name inside the output folder.
pub const LOCK_FILE: &str = ".kiln-lock";

/// A held lock on an output folder; dropping the last clone releases it.
#[derive(Debug, Clone)]
pub struct OutputLock {
    _held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    key: PathBuf,
    _file: File,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Remove only this lock's entry: a new lock on the folder may have
        // replaced it already.
        let mut registry = held().lock().expect("lock registry");
        if registry
            .get(&self.key)
            .is_some_and(|w| w.strong_count() == 0)
        {
            registry.remove(&self.key);
        }
    }
}

fn held() -> &'static Mutex<HashMap<PathBuf, Weak<Held>>> {
    static HELD: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Held>>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

impl OutputLock {
    /// Creates `dir` if needed and takes its lock, writing this process's
    /// id into the lock file.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the folder and the holder's pid when
    /// another process holds it; [`ModelError::Io`] if the folder or lock
    /// file cannot be created.
    pub fn acquire(dir: &Path) -> Result<OutputLock> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ModelError::Io { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = dir.canonicalize().map_err(io(dir))?;
        let mut registry = held().lock().expect("lock registry");
        if let Some(h) = registry.get(&key).and_then(Weak::upgrade) {
            return Ok(OutputLock { _held: h });
        }
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() {
                    "another process".to_string()
                } else {
                    format!("another kiln process (pid {pid})")
                };
                return Err(ModelError::Input(format!(
                    "{} is in use by {holder}: two runs in one output folder would mix their checkpoints; wait for it to finish or choose another --output-dir",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        let h = Arc::new(Held {
            key: key.clone(),
            _file: file,
        });
        registry.insert(key, Arc::downgrade(&h));
        Ok(OutputLock { _held: h })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_shares_its_lock_and_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = OutputLock::acquire(dir.path()).unwrap();
        let b = OutputLock::acquire(dir.path()).unwrap();
        drop((a, b));
        // A lock taken through another open file is refused while held:
        // this is what a second process sees.
        let _c = OutputLock::acquire(dir.path()).unwrap();
        let other = File::open(dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(_c);
        assert!(
            other.try_lock().is_ok(),
            "released when the last clone drops"
        );
    }
}
