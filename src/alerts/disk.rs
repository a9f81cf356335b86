//! Free space of the directories oscarflow writes to: the state directory (the embedded
//! store, spool files, dead letters) and OSCAR's `DOCUMENT_DIR` (each `document_dir` of the
//! fax sinks). [`space`] asks the file system (`statvfs`); [`conditions`] makes the disk
//! rule's conditions from a floor given as a share and, optionally, a size.

use std::path::{Path, PathBuf};

use super::config::Rule;
use super::engine::Condition;
use crate::config::PipelineConfig;
use crate::sinks::SinkConfig;

/// A file system's space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Free for an unprivileged process (what the daemon can still write).
    pub available: u64,
    pub total: u64,
}

impl Space {
    pub fn free_percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.available as f64 * 100.0 / self.total as f64
        }
    }
}

/// The space of the file system holding `path`.
pub fn space(path: &Path) -> std::io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated path; `st` is written by statvfs before it is read.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(Space {
        available: (st.f_bavail as u64).saturating_mul(frsize),
        total: (st.f_blocks as u64).saturating_mul(frsize),
    })
}

/// The directories to watch: the state directory and every `document_dir`, each once, with
/// what it is.
pub fn watched(state_dir: &Path, pipelines: &[PipelineConfig]) -> Vec<(String, PathBuf)> {
    let mut v = vec![("the state directory".to_string(), state_dir.to_path_buf())];
    for p in pipelines {
        for s in &p.sinks {
            let dir = match &s.config {
                SinkConfig::OscarFax(c) => &c.document_dir,
                SinkConfig::RingCentralFax(c) => &c.document_dir,
                _ => continue,
            };
            if !v.iter().any(|(_, d)| d == dir) {
                v.push((
                    format!("pipeline {}, sink {}: document_dir", p.name, s.id),
                    dir.clone(),
                ));
            }
        }
    }
    v
}

/// Whether `s` is below the floor: `min_percent` of its file system, or `min_bytes` (0: no
/// size floor).
pub fn is_low(s: Space, min_percent: f64, min_bytes: u64) -> bool {
    s.free_percent() < min_percent || (min_bytes > 0 && s.available < min_bytes)
}

/// The disk rule's conditions for `dirs`. A directory that does not exist (yet) is left out:
/// its component reports it.
pub fn conditions(dirs: &[(String, PathBuf)], min_percent: f64, min_bytes: u64) -> Vec<Condition> {
    let mib = |b: u64| b / (1024 * 1024);
    dirs.iter()
        .filter_map(|(what, dir)| {
            let s = space(dir).ok()?;
            is_low(s, min_percent, min_bytes).then(|| Condition {
                rule: Rule::Disk,
                key: format!("disk:{}", dir.display()),
                summary: format!("low disk space: {what} ({})", dir.display()),
                details: vec![
                    ("directory".into(), dir.display().to_string()),
                    (
                        "free".into(),
                        format!("{} MiB ({:.1} %)", mib(s.available), s.free_percent()),
                    ),
                    ("size".into(), format!("{} MiB", mib(s.total))),
                    (
                        "alerts below".into(),
                        if min_bytes > 0 {
                            format!("{min_percent} % or {} MiB", mib(min_bytes))
                        } else {
                            format!("{min_percent} %")
                        },
                    ),
                ],
                page: "",
                since: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_low_below_its_share_or_its_size_floor() {
        let s = Space {
            available: 5 << 30,
            total: 100 << 30,
        };
        assert!(is_low(s, 10.0, 0));
        assert!(!is_low(s, 5.0, 0));
        assert!(is_low(s, 5.0, 6 << 30));
        assert!(!is_low(s, 5.0, 4 << 30));
    }

    #[test]
    fn the_free_space_of_a_real_directory_is_read_and_a_missing_one_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let s = space(dir.path()).unwrap();
        assert!(s.total > 0 && s.available <= s.total);
        let dirs = vec![
            ("the state directory".to_string(), dir.path().to_path_buf()),
            ("gone".to_string(), dir.path().join("missing")),
        ];
        // Any real file system has less than 100.5 % free: the state directory alerts.
        let c = conditions(&dirs, 100.5, 0);
        assert_eq!(c.len(), 1);
        assert!(c[0].summary.contains("the state directory"));
        assert!(conditions(&dirs, 0.0, 0).is_empty());
    }
}
