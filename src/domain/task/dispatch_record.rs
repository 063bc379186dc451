//! The dispatch record on disk, `coordination/worker-specs/<bucket>/<dispatch_id>.json`, and
//! every write of it: its path by bucket, its encoding (checked against the `dispatch` schema
//! before any byte is written) and decoding, its creation (`starting`, in `active/`), its
//! update in place, and its move between buckets (`active/` → `completed/`, `failed/`,
//! `zombie/`; a bad one to `quarantine/`). Each write goes through `store::atomic` (one file) or a `ReplaceBatch` (a group
//! commit); the coordinator, the worker, the heartbeat daemon and `recover-stale` all call here.
//!
//! Every function that writes or moves a record is for a caller holding lock `worker-specs`
//! (except the coordinator's staging of new records, whose temporaries are nobody else's: it
//! takes the lock for their renames). Queries across buckets (find, list, cancel requests,
//! waiting for an end) are in [`super::dispatches`].

use super::model::{DispatchRecord, DispatchStatus};
use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::atomic::{self, Published, ReplaceBatch};
use crate::store::files::DISPATCH_SCHEMA;
use crate::store::home::{Home, SpecBucket};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The path of a dispatch's record in a bucket.
pub fn spec_path(home: &Home, bucket: SpecBucket, dispatch_id: &str) -> PathBuf {
    home.worker_specs(bucket).join(format!("{dispatch_id}.json"))
}

/// The cancel request file of an active dispatch (`<dispatch_id>.cancel` beside its record).
pub fn cancel_request_path(home: &Home, dispatch_id: &str) -> PathBuf {
    home.worker_specs(SpecBucket::Active).join(format!("{dispatch_id}.cancel"))
}

/// Whether a record of the dispatch is in some bucket (`active/`, an end bucket, `zombie/`,
/// quarantine).
pub(crate) fn exists_anywhere(home: &Home, dispatch_id: &str) -> bool {
    SpecBucket::ALL.iter().any(|&b| spec_path(home, b, dispatch_id).exists())
}

/// The bucket a record with this final state moves to.
pub(crate) fn final_bucket(rec: &DispatchRecord) -> SpecBucket {
    match rec.status() {
        DispatchStatus::Completed => SpecBucket::Completed,
        DispatchStatus::Zombie => SpecBucket::Zombie,
        _ => SpecBucket::Failed,
    }
}

/// The records at `paths`, in that order, for a daemon's pass over new specs: a vanished one is
/// skipped, an unreadable one skipped with an error naming it (integration reports and
/// quarantines it).
pub(crate) fn read_specs_logged(store: &Store, paths: Vec<std::path::PathBuf>) -> Vec<DispatchRecord> {
    paths
        .into_iter()
        .filter_map(|path| match read_spec(store, &path) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("skipping unreadable spec {}: {e}", path.display());
                None
            }
        })
        .collect()
}

/// Reads one record (schema-checked; a bad one is quarantined and reported).
pub fn read_spec(store: &Store, path: &Path) -> Result<Option<DispatchRecord>> {
    match store.read_value_at(path, Some(DISPATCH_SCHEMA))? {
        None => Ok(None),
        Some(v) => crate::store::decode_value(&v).map(Some).map_err(|(pointer, expected)| Error::Invalid {
            path: path.to_path_buf(),
            pointer,
            expected,
            quarantined: None,
        }),
    }
}

/// The bytes of a record to be written at `path`: checked against the `dispatch` schema (a
/// violation refuses the write, naming the file and the field), pretty-printed.
pub(crate) fn encode(path: &Path, rec: &DispatchRecord) -> Result<Vec<u8>> {
    let v = serde_json::to_value(rec)
        .map_err(|e| Error::encode(format!("dispatch {} ({})", rec.dispatch_id, path.display()), e))?;
    crate::store::encode_checked(path, &v, Some(DISPATCH_SCHEMA))
}

/// Writes a record at `path` on its own (atomically, durably): an update in place.
pub(crate) fn write(path: &Path, rec: &DispatchRecord) -> Result<()> {
    atomic::write_atomic(path, &encode(path, rec)?)
}

/// Stages a new record (`starting`) in `active/` into the coordinator's group commit.
pub(crate) fn stage_new(batch: &mut ReplaceBatch, home: &Home, rec: &DispatchRecord) -> Result<()> {
    let path = spec_path(home, SpecBucket::Active, &rec.dispatch_id);
    batch.stage(&path, &encode(&path, rec)?)
}

/// Moves a record from one bucket to another, durably (the destination directory is created
/// when missing).
pub(crate) fn move_durable(home: &Home, dispatch_id: &str, from: SpecBucket, to: SpecBucket) -> Result<()> {
    atomic::create_dir_all(&home.worker_specs(to))?;
    atomic::rename_durable(&spec_path(home, from, dispatch_id), &spec_path(home, to, dispatch_id))
}

/// The name in `quarantine/` of a bad record file `name` found in `bucket`:
/// `<bucket>__<name>` (the caller adds a suffix when that name is taken).
pub(crate) fn quarantine_path(home: &Home, bucket: SpecBucket, name: &str) -> PathBuf {
    home.worker_specs(SpecBucket::Quarantine).join(format!("{}__{name}", bucket.dir_name()))
}

/// Moves a bad record file to `dest` in `quarantine/`, durably (`repair`).
pub(crate) fn move_to_quarantine(home: &Home, path: &Path, dest: &Path) -> Result<()> {
    atomic::create_dir_all(&home.worker_specs(SpecBucket::Quarantine))?;
    atomic::rename_durable(path, dest)
}

/// Ends an active dispatch outside the worker (`recover-stale`, the zombie claim): writes its
/// final record in `active/`, then moves it durably to `to`. A crash between the two leaves
/// the final record in `active/`, which the worker (or the heartbeat daemon, for a zombie)
/// moves on.
pub(crate) fn end_in(home: &Home, rec: &DispatchRecord, to: SpecBucket) -> Result<()> {
    write(&spec_path(home, SpecBucket::Active, &rec.dispatch_id), rec)?;
    move_durable(home, &rec.dispatch_id, SpecBucket::Active, to)
}

/// A change to one active record, applied by [`update_active_locked`]; it returns
/// [`NotWritten::MovedOn`] when the record is not in the state the change expects.
pub(crate) type Change = Box<dyn FnOnce(&mut DispatchRecord) -> Result<(), NotWritten>>;

/// Why [`update_active_locked`] did not write a change: the caller's next step differs (give up
/// on it, or keep it and try again), so this is a type of its own, not an [`Error`] variant.
#[derive(Debug)]
pub(crate) enum NotWritten {
    /// The record is no longer the caller's to change: it left `active/` (the heartbeat daemon
    /// claimed it as a zombie) or is not in the state the change expects. Final: its record
    /// stands, and trying again cannot help. Says what was found.
    MovedOn(String),
    /// Reading, encoding or writing failed (a full disk, say): the change may succeed later.
    Failed(Error),
}

impl From<Error> for NotWritten {
    fn from(e: Error) -> Self {
        NotWritten::Failed(e)
    }
}

impl std::fmt::Display for NotWritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotWritten::MovedOn(why) => f.write_str(why),
            NotWritten::Failed(e) => e.fmt(f),
        }
    }
}

/// What [`update_active_locked`] did: one result per change, in order (the record as written);
/// the group commit (None when nothing was written), whose directories the caller fsyncs; and
/// the ids whose record was created anew in its final bucket.
pub(crate) struct Updated {
    pub results: Vec<Result<DispatchRecord, NotWritten>>,
    pub published: Option<Published>,
    pub created: HashSet<String>,
}

/// Read-modify-writes of several active records, staged and published in one group commit (the
/// records are visible when this returns; their directory's fsync is left to the caller).
///
/// A dispatch whose record is in no bucket (removed by hand) gets the change applied to the
/// record `known` gives for it, written in its final bucket (see [`final_bucket`]); any other
/// dispatch with no active record gets [`NotWritten::MovedOn`] (the heartbeat daemon claimed it
/// as a zombie).
pub(crate) fn update_active_locked(
    store: &Store,
    changes: Vec<(String, Change)>,
    known: impl Fn(&str) -> Option<DispatchRecord>,
) -> Updated {
    let home = store.home();
    let mut batch = ReplaceBatch::new();
    let mut results: Vec<Result<DispatchRecord, NotWritten>> = Vec::with_capacity(changes.len());
    let mut created = HashSet::new();
    for (id, change) in changes {
        let mut path = spec_path(home, SpecBucket::Active, &id);
        let staged = read_spec(store, &path)
            .map_err(NotWritten::Failed)
            .and_then(|r| match (r, known(&id)) {
                (Some(rec), _) => Ok(rec),
                (None, Some(known)) if !exists_anywhere(home, &id) => {
                    created.insert(id.clone());
                    Ok(known)
                }
                _ => Err(NotWritten::MovedOn(format!("dispatch {id} has no active spec"))),
            })
            .and_then(|mut rec| {
                change(&mut rec)?;
                if created.contains(&id) {
                    let bucket = final_bucket(&rec);
                    atomic::create_dir_all(&home.worker_specs(bucket))?;
                    path = spec_path(home, bucket, &id);
                }
                batch.stage(&path, &encode(&path, &rec)?)?;
                Ok(rec)
            });
        results.push(staged);
    }
    if batch.is_empty() {
        return Updated { results, published: None, created };
    }
    let published = batch.publish();
    if let Some(e) = published.error() {
        let msg = e.to_string();
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(NotWritten::Failed(Error::other(msg.clone())));
        }
    }
    Updated { results, published: Some(published), created }
}

/// Moves records carrying a final state from `active/` to their buckets (see [`final_bucket`])
/// and removes their cancel requests. Adds the directories of the moves made to `dirs`, which
/// the caller fsyncs (once for a whole step, after releasing the lock). The first error, if any.
pub(crate) fn move_ended_locked(home: &Home, recs: &[&DispatchRecord], dirs: &mut Vec<PathBuf>) -> Result<()> {
    let mut moves = Vec::with_capacity(recs.len());
    for rec in recs {
        let bucket = final_bucket(rec);
        atomic::create_dir_all(&home.worker_specs(bucket))?;
        let id = &rec.dispatch_id;
        moves.push((spec_path(home, SpecBucket::Active, id), spec_path(home, bucket, id)));
    }
    let mut first_error = None;
    let (results, moved) = atomic::rename_many(&moves);
    dirs.extend(moved);
    for (rec, result) in recs.iter().zip(results) {
        match result {
            Ok(()) => {
                let cancel = cancel_request_path(home, &rec.dispatch_id);
                if cancel.exists() {
                    let _ = std::fs::remove_file(cancel);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::model::DispatchState;

    fn record(id: &str) -> DispatchRecord {
        DispatchRecord::sample(id, "t1")
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Home::at(dir.path()));
        for b in SpecBucket::ALL {
            std::fs::create_dir_all(store.home().worker_specs(b)).unwrap();
        }
        (dir, store)
    }

    fn ended(id: &str) -> DispatchRecord {
        DispatchRecord {
            state: DispatchState::Lost {
                ended_at: crate::base::clock::parse_ts("2026-01-01T00:01:00Z").unwrap(),
                reason: "test".into(),
            },
            ..record(id)
        }
    }

    #[test]
    fn a_record_failing_its_schema_is_never_written() {
        let (_dir, store) = store();
        let path = spec_path(store.home(), SpecBucket::Active, "d1");
        let bad = DispatchRecord { attempt: 0, ..record("d1") };
        let err = write(&path, &bad).unwrap_err().to_string();
        assert!(err.contains("attempt"), "{err}");
        assert!(!path.exists());
        write(&path, &record("d1")).unwrap();
        assert_eq!(read_spec(&store, &path).unwrap(), Some(record("d1")));
    }

    #[test]
    fn end_in_writes_the_end_then_moves_it_out_of_active() {
        let (_dir, store) = store();
        let home = store.home();
        write(&spec_path(home, SpecBucket::Active, "d1"), &record("d1")).unwrap();
        end_in(home, &ended("d1"), SpecBucket::Failed).unwrap();
        assert!(!spec_path(home, SpecBucket::Active, "d1").exists());
        assert_eq!(read_spec(&store, &spec_path(home, SpecBucket::Failed, "d1")).unwrap(), Some(ended("d1")));
    }

    #[test]
    fn an_update_of_a_vanished_record_creates_it_in_its_final_bucket_and_one_moved_on_is_refused() {
        let (_dir, store) = store();
        let home = store.home();
        write(&spec_path(home, SpecBucket::Active, "live"), &record("live")).unwrap();
        write(&spec_path(home, SpecBucket::Zombie, "claimed"), &record("claimed")).unwrap();
        let end = |rec: &DispatchRecord| -> Change {
            let state = ended(&rec.dispatch_id).state;
            Box::new(move |r: &mut DispatchRecord| {
                r.state = state;
                Ok(())
            })
        };
        let changes: Vec<(String, Change)> =
            ["live", "gone", "claimed"].iter().map(|id| (id.to_string(), end(&record(id)))).collect();
        let updated = update_active_locked(&store, changes, |id| Some(record(id)));
        let dirs = updated.published.expect("written").into_dirs();
        atomic::fsync_dirs(&dirs).unwrap();
        assert!(updated.results[0].is_ok() && updated.results[1].is_ok());
        assert!(matches!(updated.results[2], Err(NotWritten::MovedOn(_))), "{:?}", updated.results[2]);
        assert_eq!(updated.created, HashSet::from(["gone".to_string()]));
        assert_eq!(read_spec(&store, &spec_path(home, SpecBucket::Active, "live")).unwrap(), Some(ended("live")));
        assert_eq!(read_spec(&store, &spec_path(home, SpecBucket::Failed, "gone")).unwrap(), Some(ended("gone")));
        let rec = ended("live");
        let mut dirs = Vec::new();
        std::fs::write(cancel_request_path(home, "live"), b"{}").unwrap();
        move_ended_locked(home, &[&rec], &mut dirs).unwrap();
        assert!(spec_path(home, SpecBucket::Failed, "live").exists());
        assert!(!cancel_request_path(home, "live").exists());
    }
}
