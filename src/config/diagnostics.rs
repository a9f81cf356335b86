//! [`Diagnostic`]: one configuration problem with its file, line and column.
//!
//! Rendered like a compiler message, `path:line:col: message`. Positions come from byte
//! spans in the TOML text. A diagnostic never quotes the offending *value* of a key whose
//! name ends in `_env`, `password`, `secret`, `token` or `key` — TOML lines can hold
//! secrets, so only key names and positions are printed.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found while loading or validating a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a byte span of `text` (1-based line and column; the column counts
    /// characters, not bytes).
    pub fn at(path: &Path, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        let (line, col) = match span {
            Some(s) => line_col(text, s.start),
            None => (1, 1),
        };
        Diagnostic {
            path: path.to_path_buf(),
            line,
            col,
            message,
        }
    }
}

/// 1-based line and column of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let mut line = 1;
    let mut line_start = 0;
    for (i, b) in text.bytes().enumerate() {
        if i >= pos {
            break;
        }
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
    }
    let col = text
        .get(line_start..pos)
        .map(|s| s.chars().count())
        .unwrap_or(pos - line_start)
        + 1;
    (line, col)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        // byte 9 is the space after 'b' and 'é' (2 bytes): the third character
        assert_eq!(line_col(t, 9), (2, 3));
    }
}
