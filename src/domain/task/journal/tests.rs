//! Unit tests of the queue's snapshot + journal storage.

use super::*;
use crate::domain::task::model::{Task, TaskState};
use crate::store::files::TASK_QUEUE_JOURNAL;
use crate::store::fresh_store as store;

fn task(id: &str) -> Task {
    Task::sample(id)
}

/// A queue read, changed by `change` and written back the way `task::queue::update` does.
fn change(store: &Store, f: impl FnOnce(&mut TaskQueue)) {
    let _g = store.lock(TASK_QUEUE).unwrap();
    let loaded = load(store).unwrap();
    let mut pos = loaded.pos;
    let before = loaded.queue.clone();
    let mut after = loaded.queue;
    f(&mut after);
    write_change(store, &before, &after, &mut pos).unwrap();
}

fn ids(q: &TaskQueue) -> Vec<String> {
    q.tasks.iter().map(|t| t.task_id.clone()).collect()
}

fn journal_bytes(store: &Store) -> Vec<u8> {
    std::fs::read(store.path(TASK_QUEUE_JOURNAL)).unwrap_or_default()
}

#[test]
fn an_old_queue_loads_unchanged_and_its_first_write_adds_the_header() {
    let (_d, store) = store();
    let old = "{\"tasks\": [], \"updated_at\": null}";
    std::fs::write(store.path(TASK_QUEUE), old).unwrap();
    let l = load(&store).unwrap();
    assert_eq!(l.pos.generation, 0);
    assert!(l.queue.tasks.is_empty());
    change(&store, |q| q.tasks.push(task("task-a")));
    let snap: serde_json::Value = serde_json::from_slice(&std::fs::read(store.path(TASK_QUEUE)).unwrap()).unwrap();
    assert!(snap["journal_generation"].as_u64().unwrap() > 0, "{snap}");
    assert_eq!(snap["tasks"][0]["task_id"], "task-a");
    assert!(journal_bytes(&store).is_empty());
}

#[test]
fn a_change_is_appended_not_rewritten_and_every_reader_sees_it() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.extend([task("task-a"), task("task-b")]));
    let snapshot = std::fs::read(store.path(TASK_QUEUE)).unwrap();
    change(&store, |q| {
        q.tasks[1].state = TaskState::Cancelled {
            started_at: None,
            completed_at: crate::base::clock::parse_ts("2026-01-01T00:00:01.000000Z").unwrap(),
        }
    });
    change(&store, |q| q.tasks.retain(|t| t.task_id != "task-a"));
    assert_eq!(std::fs::read(store.path(TASK_QUEUE)).unwrap(), snapshot, "the snapshot is not rewritten");
    let text = String::from_utf8(journal_bytes(&store)).unwrap();
    assert_eq!(text.lines().count(), 4, "two commits of one change each: {text}");
    let q: TaskQueue = store.load().unwrap();
    assert_eq!(ids(&q), vec!["task-b".to_string()]);
    assert_eq!(q.tasks[0].status(), crate::domain::task::TaskStatus::Cancelled);
    let counts = load(&store).unwrap().counts.unwrap();
    assert_eq!((counts.total, counts.cancelled), (1, 1));
}

#[test]
fn a_torn_or_uncommitted_tail_is_ignored_and_truncated_by_the_next_writer() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.push(task("task-a")));
    change(&store, |q| q.tasks.push(task("task-b")));
    let committed = journal_bytes(&store);
    let generation = load(&store).unwrap().pos.generation;
    // A writer killed mid-append: a whole task line without its commit, then half a line.
    let mut tail = serde_json::to_vec(&serde_json::json!({"generation": generation, "task": task("task-c")})).unwrap();
    tail.push(b'\n');
    tail.extend_from_slice(b"{\"generation\":");
    crate::store::jsonl::append_raw(&store.path(TASK_QUEUE_JOURNAL), &tail).unwrap();
    let l = load(&store).unwrap();
    assert_eq!(ids(&l.queue), vec!["task-a", "task-b"]);
    assert_eq!((l.bad_lines, l.pos.end), (0, committed.len() as u64));
    change(&store, |q| q.tasks.push(task("task-d")));
    let bytes = journal_bytes(&store);
    assert_eq!(&bytes[..committed.len()], &committed[..]);
    assert!(!String::from_utf8_lossy(&bytes).contains("task-c"), "the uncommitted tail was truncated");
    assert_eq!(ids(&store.load::<TaskQueue>().unwrap()), vec!["task-a", "task-b", "task-d"]);
}

#[test]
fn lines_of_an_older_generation_are_never_applied_again() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.push(task("task-a")));
    change(&store, |q| q.tasks.push(task("task-b")));
    let journal = journal_bytes(&store);
    // A compaction killed between the snapshot's replace and the journal's reset: the new
    // snapshot holds every change, the journal still has the old generation's lines.
    let q: TaskQueue = store.load().unwrap();
    {
        let g = store.lock(TASK_QUEUE).unwrap();
        let mut q2 = q.clone();
        q2.tasks.retain(|t| t.task_id != "task-b");
        store.write_locked(&g, &q2).unwrap();
    }
    std::fs::write(store.path(TASK_QUEUE_JOURNAL), &journal).unwrap();
    let l = load(&store).unwrap();
    assert_eq!(ids(&l.queue), vec!["task-a"], "task-b's old line is not applied to the new snapshot");
    assert_eq!(l.stale_lines, 2, "task-b and its commit");
    assert_eq!(l.pos.end, 0, "the next writer truncates the stale lines");
    change(&store, |q| q.tasks.push(task("task-c")));
    assert_eq!(ids(&store.load::<TaskQueue>().unwrap()), vec!["task-a", "task-c"]);
    assert!(!String::from_utf8_lossy(&journal_bytes(&store)).contains("task-b"));
}

#[test]
fn a_snapshot_reset_by_hand_does_not_adopt_the_journal() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.push(task("task-a")));
    change(&store, |q| q.tasks.push(task("task-b")));
    // The runbook's reset.
    std::fs::write(store.path(TASK_QUEUE), "{\"tasks\": []}").unwrap();
    assert!(store.load::<TaskQueue>().unwrap().tasks.is_empty());
    change(&store, |q| q.tasks.push(task("task-c")));
    assert_eq!(ids(&store.load::<TaskQueue>().unwrap()), vec!["task-c"]);
}

#[test]
fn a_bad_line_in_a_commit_is_skipped_counted_and_quarantined() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.push(task("task-a")));
    let generation = load(&store).unwrap().pos.generation;
    let start = journal_bytes(&store).len() as u64;
    let mut bytes = b"{not json\n".to_vec();
    let good = encode_commit(generation, start, [&task("task-b")], &[], Commit::default()).unwrap();
    // The commit counts the bad line too (it is one of the group's lines).
    let text = String::from_utf8(good).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let commit_line = lines.pop().unwrap().replace("\"lines\":1", "\"lines\":2");
    for l in lines {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(commit_line.as_bytes());
    bytes.push(b'\n');
    crate::store::jsonl::append_raw(&store.path(TASK_QUEUE_JOURNAL), &bytes).unwrap();
    let l = load(&store).unwrap();
    assert_eq!(ids(&l.queue), vec!["task-a", "task-b"]);
    assert_eq!(l.bad_lines, 1);
    assert!(std::fs::read_dir(store.home().quarantine_dir()).unwrap().count() >= 1);
}

#[test]
fn compaction_is_due_only_past_the_journal_share_of_the_snapshot() {
    let snap = |len| Some(FileIdentity { dev: 1, ino: 2, len, mtime_ns: 0, ctime_ns: 0 });
    let pos = |len, end| JournalPos { snapshot: snap(len), generation: 5, end, len: end, ..JournalPos::default() };
    assert!(needs_compaction(&JournalPos { generation: 0, ..pos(0, 0) }, 10), "generation 0 is never appended to");
    assert!(!needs_compaction(&pos(100, 0), 10), "a short journal waits for COMPACT_MIN_BYTES");
    assert!(!needs_compaction(&pos(10 * COMPACT_MIN_BYTES, COMPACT_MIN_BYTES), 10));
    assert!(needs_compaction(&pos(10 * COMPACT_MIN_BYTES, 5 * COMPACT_MIN_BYTES), 10));
    assert!(needs_compaction(&pos(COMPACT_MIN_BYTES, COMPACT_MIN_BYTES), 10));
}

#[test]
fn many_changes_compact_and_the_queue_stays_exact() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.extend((0..50).map(|i| task(&format!("task-{i}")))));
    let mut expected: Vec<String> = (0..50).map(|i| format!("task-{i}")).collect();
    let mut compactions = 0;
    let mut generation = load(&store).unwrap().pos.generation;
    for round in 0..400 {
        let id = format!("task-r{round}");
        change(&store, |q| {
            q.tasks.push(Task { description: "x".repeat(1500), ..task(&id) });
            q.tasks.remove(0);
        });
        expected.push(id);
        expected.remove(0);
        let g = load(&store).unwrap().pos.generation;
        if g != generation {
            compactions += 1;
            generation = g;
        }
    }
    assert!(compactions >= 1, "the journal was compacted");
    assert_eq!(ids(&store.load::<TaskQueue>().unwrap()), expected);
    assert!((journal_len(&store)) < 2 * COMPACT_MIN_BYTES);
}

#[test]
fn catch_up_reads_only_what_others_appended() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.push(task("task-a")));
    let mut l = load(&store).unwrap();
    change(&store, |q| q.tasks.push(task("task-b")));
    assert!(catch_up(&store, &mut l.queue, &mut l.pos).unwrap());
    assert_eq!(ids(&l.queue), vec!["task-a", "task-b"]);
    assert_eq!(l.pos.end, journal_len(&store));
    // A journal emptied by a compaction does not continue from the position.
    let q: TaskQueue = store.load().unwrap();
    let g = store.lock(TASK_QUEUE).unwrap();
    store.write_locked(&g, &q).unwrap();
    assert!(!catch_up(&store, &mut l.queue, &mut l.pos).unwrap());
}

#[test]
fn counts_are_read_from_the_header_and_the_last_commit_without_loading() {
    let (_d, store) = store();
    assert_eq!(read_counts(&store).unwrap(), None, "a queue without a generation is counted by loading it");
    change(&store, |q| q.tasks.extend([task("task-a"), task("task-b")]));
    assert_eq!(read_counts(&store).unwrap().map(|c| (c.total, c.queued)), Some((2, 2)), "from the header");
    change(&store, |q| {
        q.tasks[0].state = TaskState::Cancelled {
            started_at: None,
            completed_at: crate::base::clock::parse_ts("2026-01-01T00:00:01.000000Z").unwrap(),
        }
    });
    let c = read_counts(&store).unwrap().unwrap();
    assert_eq!((c.total, c.queued, c.cancelled), (2, 1, 1), "from the journal's last commit");
    assert_eq!(c, QueueCounts::of(&store.load::<TaskQueue>().unwrap().tasks));
}

#[test]
fn check_lines_names_bad_lines_by_offset_and_leaves_a_partial_line() {
    let good = encode_commit(7, 0, [&task("task-a")], &["task-b".to_string()], Commit::default()).unwrap();
    let mut bytes = good.clone();
    bytes.extend_from_slice(b"{\"generation\":7,\"task\":{\"task_id\":\"\"}}\n[1]\n{\"generation\":7,\"tas");
    let c = check_lines(&bytes, 100);
    assert_eq!((c.lines, c.bad), (5, 2));
    assert_eq!(c.consumed as usize, bytes.len() - b"{\"generation\":7,\"tas".len());
    assert!(c.problems[0].starts_with(&format!("byte {}", 100 + good.len())), "{:?}", c.problems);
}

fn state_ids(s: &TaskStates) -> Vec<String> {
    let mut ids: Vec<String> = s.tasks.keys().map(|k| k.to_string()).collect();
    ids.sort();
    ids
}

fn cancelled(id: &str) -> Task {
    Task {
        state: TaskState::Cancelled {
            started_at: None,
            completed_at: crate::base::clock::parse_ts("2026-01-01T00:00:01.000000Z").unwrap(),
        },
        ..task(id)
    }
}

/// A commit taken back after its flush failed (the journal truncated), then another of the same
/// length appended: a follower that read the first must not keep it (its length alone says
/// nothing changed).
#[test]
fn a_follower_does_not_keep_a_commit_taken_back_when_the_journal_regrows_to_its_length() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.extend([task("task-a"), task("task-b")]));
    let before = load(&store).unwrap().pos;
    let commit =
        Commit { updated_at: crate::base::clock::parse_ts("2026-01-01T00:00:02.000000Z"), ..Commit::default() };
    let cancel_a = encode_commit(before.generation, before.end, [&cancelled("task-a")], &[], commit.clone()).unwrap();
    let cancel_b = encode_commit(before.generation, before.end, [&cancelled("task-b")], &[], commit).unwrap();
    assert_eq!(cancel_a.len(), cancel_b.len());
    let mut pos = before;
    {
        let _g = store.lock(TASK_QUEUE).unwrap();
        append_commit(&store, &mut pos, &cancel_a).unwrap();
    }
    let mut f = Follower::default();
    let cancelled_state = HeldState::Other(crate::domain::task::TaskStatus::Cancelled);
    assert_eq!(f.refresh(&store).unwrap().tasks["task-a"], cancelled_state);
    {
        let _g = store.lock(TASK_QUEUE).unwrap();
        assert!(roll_back(&store, &mut pos, before));
        append_commit(&store, &mut pos, &cancel_b).unwrap();
    }
    assert_eq!(journal_len(&store), before.end + cancel_a.len() as u64, "the same length again");
    let states = f.refresh(&store).unwrap();
    assert_eq!(states.tasks["task-a"], HeldState::Other(crate::domain::task::TaskStatus::Queued), "taken back");
    assert_eq!(states.tasks["task-b"], cancelled_state);
    // The coordinator's way (a queue held whole) the same.
    let mut l = load(&store).unwrap();
    {
        let _g = store.lock(TASK_QUEUE).unwrap();
        let mut p = l.pos;
        assert!(roll_back(&store, &mut p, before));
        append_commit(&store, &mut p, &cancel_a).unwrap();
    }
    assert!(!catch_up(&store, &mut l.queue, &mut l.pos).unwrap(), "does not continue: load again");
}

#[test]
fn a_follower_reads_appends_by_offset_and_reloads_after_a_compaction() {
    let (_d, store) = store();
    change(&store, |q| q.tasks.push(task("task-a")));
    let mut f = Follower::default();
    assert_eq!(state_ids(f.refresh(&store).unwrap()), vec!["task-a"]);
    change(&store, |q| q.tasks.push(task("task-b")));
    assert_eq!(state_ids(f.refresh(&store).unwrap()), vec!["task-a", "task-b"]);
    assert_eq!(f.pos.end, journal_len(&store), "read up to the journal's end");
    let q: TaskQueue = store.load().unwrap();
    {
        let g = store.lock(TASK_QUEUE).unwrap();
        let mut q = q.clone();
        q.tasks.remove(0);
        store.write_locked(&g, &q).unwrap();
    }
    assert_eq!(state_ids(f.refresh(&store).unwrap()), vec!["task-b"], "a compaction is loaded whole");
}
