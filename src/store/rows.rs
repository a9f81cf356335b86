//! Multi-row `INSERT`s: many rows of one table in few statements, and their generated ids
//! in row order.
//!
//! A group commit writes the rows of many files; one statement per row was most of an
//! import's time (a round trip each). [`insert_all`] and [`insert_ids`] cut the rows into
//! statements bounded by the number of bound parameters (SQLite builds before 3.32 take
//! 999) and, for rows that carry a whole message, by bytes (under MariaDB's
//! `max_allowed_packet`).
//!
//! Ids: with `INSERT … RETURNING` (MariaDB 10.5+, SQLite 3.35+) one statement inserts many
//! rows and returns their ids. Auto-increment values grow with each row a statement inserts,
//! so the returned ids, sorted, belong to the rows in `VALUES` order, whatever the server's
//! `innodb_autoinc_lock_mode` (interleaved mode can leave gaps, never reorder). Without it
//! (MySQL), one `INSERT` per row and its reported id. Same rows, same order, same ids on an
//! idle database either way: the golden tests run both paths.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Row as _, Transaction};

use super::Backend;

/// A statement under construction.
pub(crate) type Q<'q> = Query<'q, Any, AnyArguments<'q>>;

/// One row of a multi-row `INSERT`.
pub(crate) trait Row {
    /// Bound parameters per row: the `?` in [`Row::VALUES`].
    const PARAMS: usize;
    /// The row's `VALUES` tuple, e.g. `(?, ?, 'HL7')`.
    const VALUES: &'static str;
    /// Binds the row's values in [`Row::VALUES`] order.
    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q>;
    /// Bytes the row adds to a statement, where that can approach the server's packet
    /// limit (a whole message); 0 for small rows.
    fn bytes(&self) -> usize {
        0
    }
}

/// How much one statement takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// Bound parameters per statement.
    pub params: usize,
    /// Bytes of [`Row::bytes`] per statement (a statement always takes one row).
    pub bytes: usize,
}

impl Limit {
    /// Parameters per statement on `backend`: SQLite builds before 3.32 allow 999; MySQL and
    /// MariaDB 65,535 (kept well under, so a statement stays a few hundred KiB).
    pub fn for_backend(backend: Backend) -> Limit {
        Limit {
            params: match backend {
                Backend::Sqlite => 999,
                Backend::MySql => 8_000,
            },
            bytes: usize::MAX,
        }
    }

    pub fn with_bytes(self, bytes: usize) -> Limit {
        Limit { bytes, ..self }
    }
}

/// `rows` cut into consecutive statements under `limit`.
fn chunks<R: Row>(rows: &[R], limit: Limit) -> Vec<&[R]> {
    let per = (limit.params / R::PARAMS.max(1)).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut end = start;
        let mut bytes = 0usize;
        while end < rows.len() && end - start < per {
            let b = rows[end].bytes();
            if end > start && bytes.saturating_add(b) > limit.bytes {
                break;
            }
            bytes = bytes.saturating_add(b);
            end += 1;
        }
        out.push(&rows[start..end]);
        start = end;
    }
    out
}

fn statement<R: Row>(head: &str, n: usize, tail: &str) -> String {
    format!("{head} VALUES {}{tail}", vec![R::VALUES; n].join(", "))
}

/// Inserts `rows` (`head` is `INSERT INTO t (columns)`); returns the rows written.
pub(crate) async fn insert_all<R: Row>(
    tx: &mut Transaction<'static, Any>,
    head: &str,
    rows: &[R],
    limit: Limit,
) -> Result<u64, sqlx::Error> {
    let mut written = 0;
    for chunk in chunks(rows, limit) {
        let sql = statement::<R>(head, chunk.len(), "");
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = r.bind(q);
        }
        written += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(written)
}

/// Inserts `rows` and returns their auto-increment ids (`id_column`) in row order; see the
/// module docs for `returning`.
pub(crate) async fn insert_ids<R: Row>(
    tx: &mut Transaction<'static, Any>,
    returning: bool,
    (head, id_column): (&str, &str),
    rows: &[R],
    limit: Limit,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut ids = Vec::with_capacity(rows.len());
    if !returning {
        let sql = statement::<R>(head, 1, "");
        for r in rows {
            let res = r.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
            ids.push(super::last_insert_id(tx, res.last_insert_id()).await?);
        }
        return Ok(ids);
    }
    for chunk in chunks(rows, limit) {
        let sql = statement::<R>(head, chunk.len(), &format!(" RETURNING {id_column}"));
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = r.bind(q);
        }
        let mut got = Vec::with_capacity(chunk.len());
        for row in q.fetch_all(&mut **tx).await? {
            got.push(id_column_value(&row)?);
        }
        if got.len() != chunk.len() {
            return Err(sqlx::Error::Protocol(format!(
                "{head} returned {} ids for {} rows",
                got.len(),
                chunk.len()
            )));
        }
        got.sort_unstable();
        ids.extend(got);
    }
    Ok(ids)
}

/// An id column (OSCAR's are `int` or `int unsigned`).
fn id_column_value(row: &sqlx::any::AnyRow) -> Result<i64, sqlx::Error> {
    match row.try_get::<i64, _>(0) {
        Ok(v) => Ok(v),
        Err(_) => row.try_get::<i32, _>(0).map(i64::from),
    }
}

/// Derived-table rows `SELECT ? AS k UNION ALL …` for `n` keys, numbered by position when
/// `numbered` (`SELECT 0 AS n, ? AS k …`): joined to a table, the database compares each key
/// with the column under the column's own collation, exactly as `column = ?` would.
pub(crate) fn keys_table(n: usize, numbered: bool) -> String {
    (0..n)
        .map(|i| {
            if numbered {
                format!("SELECT {i} AS n, ? AS k")
            } else {
                "SELECT ? AS k".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sized(usize);
    impl Row for Sized {
        const PARAMS: usize = 3;
        const VALUES: &'static str = "(?, ?, ?)";
        fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
            q
        }
        fn bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn statements_respect_the_parameter_and_byte_limits_and_keep_every_row_in_order() {
        let rows: Vec<Sized> = (0..1000).map(|i| Sized(i % 7)).collect();
        let limit = Limit {
            params: 30,
            bytes: 20,
        };
        let cut = chunks(&rows, limit);
        let mut seen = 0;
        for c in &cut {
            assert!(!c.is_empty() && c.len() <= 10);
            let bytes: usize = c.iter().map(|r| r.0).sum();
            assert!(
                c.len() == 1 || bytes <= 20,
                "{bytes} bytes in one statement"
            );
            // Consecutive, in order.
            assert!(std::ptr::eq(&c[0], &rows[seen]));
            seen += c.len();
        }
        assert_eq!(seen, rows.len());
        // A row over the byte limit still goes, alone.
        let big = [Sized(5), Sized(100), Sized(5)];
        let cut = chunks(&big, limit);
        assert_eq!(
            cut.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        assert!(chunks::<Sized>(&[], limit).is_empty());
    }
}
