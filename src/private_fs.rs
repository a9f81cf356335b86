//! Files and directories that can hold PHI — the embedded store and its journal, spools,
//! `processed/` folders — are created owner-only (`0600` files, `0700` directories) whatever
//! the process's umask: outside systemd (the quick start) the umask is usually `022`, which
//! would leave patient data readable by every user of the machine.
//!
//! Files oscarflow writes for OSCAR to read (documents in OSCAR's `DOCUMENT_DIR`) are not made
//! here: OSCAR's web application runs as another user and must read them.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents owner-only. Directories that exist already are left
/// as they are (they may be shared, like `/tmp`, or set up by the operator).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes `path` owner-only (`mode`) if this process owns it; others' files are left alone.
pub fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    if meta.uid() == current_uid() && meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Creates (or truncates) `path` as an owner-only file for writing.
pub fn create_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// [`create_file`] for async writers.
pub async fn create_file_async(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
}

/// Creates `path` as an empty owner-only file if it does not exist (SQLite then gives its
/// journal files the same mode).
pub fn touch_private(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => restrict(path, 0o600),
        Err(e) => Err(e),
    }
}

fn current_uid() -> u32 {
    // The owner of a file this process just made is this process's effective user.
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_files_and_directories_are_owner_only_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("x.db");
        touch_private(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        touch_private(&f).unwrap();
        assert_eq!(mode(&f), 0o600, "an existing file of ours is tightened");
        drop(create_file(&dir.join("y")).unwrap());
        assert_eq!(mode(&dir.join("y")), 0o600);
    }
}
