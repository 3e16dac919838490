//! The schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Migration `n` (in `sql/<n>_*.sql`) takes a database from version `n - 1`
//! to `n`; each runs in its own transaction together with the version bump,
//! so a crash mid-migration leaves the previous version intact. A database
//! of a newer version than this code knows is refused, never written.

use rusqlite::{Connection, TransactionBehavior};

/// The migrations, in order: `MIGRATIONS[i]` makes version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../sql/1_initial.sql"),
    include_str!("../sql/2_failed.sql"),
    include_str!("../sql/3_detail.sql"),
    include_str!("../sql/4_control.sql"),
    include_str!("../sql/5_dead_reasons.sql"),
    include_str!("../sql/6_circuits.sql"),
    include_str!("../sql/7_workers.sql"),
    include_str!("../sql/8_payloads.sql"),
];

/// The schema version this code writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Why a database could not be brought to [`VERSION`].
#[derive(Debug)]
pub(crate) enum MigrateError {
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// The file was written by a newer WDS (its version).
    Newer(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

/// Brings the database up to [`VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > VERSION {
            return Err(MigrateError::Newer(version));
        }
        let Some(sql) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "sqlite schema migrated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(MigrateError::Newer(v)) if v == VERSION + 1));
    }

    #[test]
    fn version_3_counts_every_earlier_reject_as_kept_in_detail() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO jobs (job, meta, invalid, duplicate) VALUES ('j', '{}', 5, 2)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let kept: i64 = conn
            .query_row("SELECT kept_rejects FROM jobs WHERE job = 'j'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kept, 7);
    }

    #[test]
    fn version_5_counts_earlier_dead_letters_by_their_kind() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO jobs (no, job, meta, dead, in_doubt) VALUES (1, 'j', '{}', 6, 1)",
            [],
        )
        .unwrap();
        // Kinds 1 permanent, 2 exhausted, 3 in doubt; one letter of another job.
        for (job, kind) in [(1, 1), (1, 1), (1, 1), (1, 2), (1, 2), (1, 3), (2, 2)] {
            conn.execute(
                "INSERT INTO dead (job, message, kind, detail, at_ms) VALUES (?1, x'', ?2, '', 0)",
                [job, kind],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let counts: (i64, i64, i64) = conn
            .query_row(
                "SELECT permanent, exhausted, in_doubt FROM jobs WHERE job = 'j'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(counts, (3, 2, 1));
    }

    #[test]
    fn version_8_moves_every_batch_payload_into_its_own_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
        // A ready batch and a leased one.
        conn.execute(
            "INSERT INTO batches (id, n, payload, pos, lease, deadline, job) VALUES \
             (4, 2, x'0102', 4, NULL, NULL, 1), (5, 1, x'03', NULL, 9, 1000, 1)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let payloads: Vec<(i64, Vec<u8>)> = conn
            .prepare("SELECT id, payload FROM payloads ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(payloads, vec![(4, vec![1, 2]), (5, vec![3])]);
        let batches: Vec<(i64, i64, Option<i64>, Option<i64>)> = conn
            .prepare("SELECT id, n, pos, lease FROM batches ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(batches, vec![(4, 2, Some(4), None), (5, 1, None, Some(9))]);
        assert!(
            conn.prepare("SELECT payload FROM batches").is_err(),
            "the batches keep no copy of their payload"
        );
        let ready_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'batches_ready'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ready_index, 0, "no index on pos alone");
    }
}
