//! Durable file writes that have the right permissions from their first byte.
//!
//! Every crate of hephy that keeps state on disk (accounts, tokens, host keys, the release ledger,
//! the CLI's settings) writes it through this module, so two promises hold everywhere:
//!
//! - **A crash leaves the old content or the new, never half of one.** The bytes go to a
//!   temporary file in the same directory, which is fsynced, renamed over the target, and then
//!   the directory is fsynced so the rename itself survives a power cut. Temporary files start
//!   with `.` and end with `.tmp`.
//! - **A secret is never readable by others, not even for a moment.** The temporary file is
//!   created with its final mode ([`FileMode::Private`] is 0600), instead of being created with
//!   the default mode and `chmod`ed afterwards, which leaves a window in which another user can
//!   open it and keep the descriptor.
//!
//! It uses only the standard library. On platforms other than Unix the modes are not applied.
//!
//! ```
//! use hephy_core::fs::{create_dir_all, write_atomic, FileMode};
//! let dir = tempfile::tempdir()?;
//! let secrets = dir.path().join("secrets");
//! create_dir_all(&secrets, FileMode::Private)?;
//! write_atomic(&secrets.join("token"), b"s3cret\n", FileMode::Private)?;
//! assert_eq!(std::fs::read(secrets.join("token"))?, b"s3cret\n");
//! # #[cfg(unix)] {
//! use std::os::unix::fs::PermissionsExt;
//! assert_eq!(std::fs::metadata(secrets.join("token"))?.permissions().mode() & 0o777, 0o600);
//! assert_eq!(std::fs::metadata(&secrets)?.permissions().mode() & 0o777, 0o700);
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who may read what [`write_atomic`], [`create_atomic`] and [`create_dir_all`] create.
///
/// The process's umask can only take permissions away from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileMode {
    /// Only the owner: files 0600, directories 0700. For tokens, keys, passwords and config vars.
    Private,
    /// Everyone may read: files 0644, directories 0755.
    Public,
}

#[cfg(unix)]
impl FileMode {
    fn file_bits(self) -> u32 {
        match self {
            FileMode::Private => 0o600,
            FileMode::Public => 0o644,
        }
    }

    fn dir_bits(self) -> u32 {
        match self {
            FileMode::Private => 0o700,
            FileMode::Public => 0o755,
        }
    }
}

/// Writes `bytes` to `path`, replacing what was there, so that a crash leaves either the old or
/// the new content; the file has `mode` from the moment it exists.
///
/// The directory of `path` must exist. A file replaced this way gets `mode`, whatever the mode of
/// the file it replaces.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: FileMode) -> io::Result<()> {
    write_via_temp(path, bytes, mode, |tmp| std::fs::rename(tmp, path))
}

/// Like [`write_atomic`], but never replaces a file: fails with
/// [`io::ErrorKind::AlreadyExists`] if `path` exists, also when another process creates it at the
/// same moment. For files that must be made once, like a host key or an immutable release.
pub fn create_atomic(path: &Path, bytes: &[u8], mode: FileMode) -> io::Result<()> {
    write_via_temp(path, bytes, mode, |tmp| {
        // A hard link fails if the name exists, where a rename would silently replace it.
        std::fs::hard_link(tmp, path)?;
        std::fs::remove_file(tmp)
    })
}

/// Creates `dir` and its missing parents; every directory it creates gets `mode`.
///
/// Directories that exist already are left as they are.
pub fn create_dir_all(dir: &Path, mode: FileMode) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode.dir_bits());
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir)
}

/// Fsyncs a directory, so that renames and new entries in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    // Elsewhere a directory cannot be opened like a file, and its entries are durable with the
    // files' own sync.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Distinguishes the temporary files of concurrent writes within one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many temporary names are tried before giving up: a name is taken only if a crashed
/// process with the same id left it behind.
const NAME_ATTEMPTS: u32 = 16;

fn write_via_temp(
    path: &Path,
    bytes: &[u8],
    mode: FileMode,
    put_in_place: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name to write to", path.display()),
        )
    })?;
    let (tmp, mut file) = create_temp(dir, &name.to_string_lossy(), mode)?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            put_in_place(&tmp)
        })
        .and_then(|()| sync_dir(dir));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn create_temp(dir: &Path, name: &str, mode: FileMode) -> io::Result<(std::path::PathBuf, File)> {
    let mut options = OpenOptions::new();
    // create_new also refuses to follow a symlink planted at the temporary name.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode.file_bits());
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut last = None;
    for _ in 0..NAME_ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn names(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> io::Result<u32> {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", FileMode::Public)?;
        write_atomic(&path, b"two", FileMode::Public)?;
        assert_eq!(std::fs::read(&path)?, b"two");
        assert_eq!(names(dir.path())?, vec!["state.json".to_owned()]);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn private_files_and_dirs_are_owner_only_even_when_replacing_an_open_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let secrets = dir.path().join("a/b");
        create_dir_all(&secrets, FileMode::Private)?;
        assert_eq!(mode_of(&dir.path().join("a"))?, 0o700, "parents too");
        assert_eq!(mode_of(&secrets)?, 0o700);
        let path = secrets.join("token");
        std::fs::write(&path, "old")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        write_atomic(&path, b"new", FileMode::Private)?;
        assert_eq!(mode_of(&path)?, 0o600);
        write_atomic(&dir.path().join("public"), b"x", FileMode::Public)?;
        assert_eq!(mode_of(&dir.path().join("public"))? & 0o600, 0o600);
        Ok(())
    }

    #[test]
    fn create_atomic_never_replaces() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("host_key");
        create_atomic(&path, b"first", FileMode::Private)?;
        let err = create_atomic(&path, b"second", FileMode::Private)
            .err()
            .ok_or("an existing file was replaced")?;
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&path)?, b"first");
        assert_eq!(names(dir.path())?, vec!["host_key".to_owned()]);
        Ok(())
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() -> TestResult {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("missing/file");
        assert!(write_atomic(&missing, b"x", FileMode::Private).is_err());
        let err = write_atomic(Path::new("/"), b"x", FileMode::Private)
            .err()
            .ok_or("wrote to /")?;
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        // Renaming a file over a directory fails after the temporary file was written.
        std::fs::create_dir(dir.path().join("taken"))?;
        assert!(write_atomic(&dir.path().join("taken"), b"x", FileMode::Private).is_err());
        assert_eq!(names(dir.path())?, vec!["taken".to_owned()]);
        Ok(())
    }
}
