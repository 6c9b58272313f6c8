use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;
use crate::command::{Command, Op};
use crate::error::encode;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An entry whose content follows from its index and term, with a size that varies.
fn ent(term: u64, index: u64) -> Entry<TypeConfig> {
    let value = vec![(index % 251) as u8; (index % 37) as usize * 3];
    let cmd = Command::Batch {
        keyspace: "default".into(),
        conditions: Vec::new(),
        ops: vec![Op::Put(index.to_be_bytes().to_vec(), value)],
    };
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(crate::Proposal(vec![crate::Request::new(cmd)])),
    }
}

fn same(a: &Entry<TypeConfig>, b: &Entry<TypeConfig>) -> bool {
    a.log_id == b.log_id && encode(a).ok() == encode(b).ok()
}

fn opts(segment_bytes: u64, flush: FlushPolicy) -> LogOptions {
    LogOptions { segment_bytes, cache_bytes: 1024, flush, ..LogOptions::default() }
}

fn open(dir: &Path, flush: FlushPolicy) -> Wal {
    Wal::open(dir, opts(512, flush)).unwrap()
}

/// Appends and waits until the entries are durable.
fn append(wal: &Wal, entries: Vec<Entry<TypeConfig>>) {
    let (tx, rx) = mpsc::channel();
    wal.append(
        entries,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
}

fn append_range(wal: &Wal, term: u64, indexes: std::ops::RangeInclusive<u64>) {
    for i in indexes {
        append(wal, vec![ent(term, i)]);
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn all(wal: &Wal) -> Vec<Entry<TypeConfig>> {
    wal.read(0, u64::MAX).unwrap()
}

fn indexes(wal: &Wal) -> Vec<u64> {
    all(wal).iter().map(|e| e.log_id.index).collect()
}

fn segments(dir: &Path) -> Vec<u64> {
    segment::list_segments(dir).unwrap()
}

/// Writes entries 1..=30 into a closed log in `dir`; returns its segments.
fn thirty_entries(dir: &Path) -> Vec<u64> {
    {
        let wal = open(dir, FlushPolicy::Inline);
        append(&wal, (1..=30).map(|i| ent(1, i)).collect());
    }
    segments(dir)
}

fn copy_dir(from: &Path, to: &Path) {
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
    }
}

fn record_len(entry: &Entry<TypeConfig>) -> u64 {
    let mut buf = Vec::new();
    u64::from(record::encode_into(entry, &mut buf).unwrap())
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn entries_survive_a_reopen_across_segments() {
    for flush in [FlushPolicy::Inline, FlushPolicy::Background] {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = open(dir.path(), flush);
            append(&wal, (1..=5).map(|i| ent(1, i)).collect());
            append_range(&wal, 1, 6..=40);
            assert_eq!(indexes(&wal), (1..=40).collect::<Vec<_>>());
        }
        assert!(segments(dir.path()).len() > 3, "small segments rotate");
        let wal = open(dir.path(), flush);
        let got = all(&wal);
        assert_eq!(got.len(), 40);
        for (k, e) in got.iter().enumerate() {
            assert!(same(e, &ent(1, k as u64 + 1)));
        }
        assert_eq!(wal.log_state(), (None, Some(log_id(1, 40))));
        assert_eq!(wal.read(10, 13).unwrap().iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![10, 11, 12]);
        // Every segment is named after its first entry.
        for first in segments(dir.path()) {
            let head = wal.read(first, first + 1).unwrap();
            assert_eq!(head[0].log_id.index, first);
        }
    }
}

#[test]
fn appends_are_readable_before_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    // No cache budget at all: unwritten entries stay pinned in the cache until written.
    let wal =
        Wal::open(dir.path(), LogOptions { segment_bytes: 256, cache_bytes: 0, ..LogOptions::default() }).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 1..=200 {
        let tx = tx.clone();
        wal.append(
            vec![ent(1, i)],
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .unwrap();
        let got = wal.read(i, i + 1).unwrap();
        assert!(same(&got[0], &ent(1, i)), "entry {i} readable as soon as append returns");
    }
    for _ in 1..=200 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    }
    // Now from the segment files.
    let got = all(&wal);
    assert_eq!(got.len(), 200);
    assert!(got.iter().zip(1..).all(|(e, i)| same(e, &ent(1, i))));
}

#[test]
fn inline_appends_are_durable_before_append_returns() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path(), FlushPolicy::Inline);
    let done = Arc::new(AtomicU64::new(0));
    for i in 1..=20 {
        let d = done.clone();
        wal.append(
            vec![ent(1, i)],
            Box::new(move |r| {
                assert!(r.is_ok());
                d.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), i);
    }
    assert_eq!(wal.syncs(), 20);
}

#[test]
fn group_commit_syncs_fewer_times_than_appends() {
    const THREADS: u64 = 4;
    const EACH: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), LogOptions { segment_bytes: 64 << 10, ..LogOptions::default() }).unwrap();
    let next = Arc::new(Mutex::new(1u64));
    let completed = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let (wal, next, completed, tx) = (wal.clone(), next.clone(), completed.clone(), tx.clone());
            s.spawn(move || {
                for _ in 0..EACH {
                    // openraft appends one batch at a time; the lock stands for that.
                    let mut next = next.lock().unwrap();
                    let index = *next;
                    let (completed, tx) = (completed.clone(), tx.clone());
                    wal.append(
                        vec![ent(1, index)],
                        Box::new(move |r| {
                            completed.lock().unwrap().push(index);
                            let _ = tx.send(r);
                        }),
                    )
                    .unwrap();
                    *next += 1;
                }
            });
        }
    });
    for _ in 0..THREADS * EACH {
        rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    }
    let syncs = wal.syncs();
    assert!(syncs < THREADS * EACH, "{syncs} syncs for {} appends", THREADS * EACH);
    let completed = completed.lock().unwrap().clone();
    assert_eq!(completed, (1..=THREADS * EACH).collect::<Vec<_>>(), "completions come in append order");
    eprintln!("group commit: {} appends, {syncs} data syncs", THREADS * EACH);
}

#[test]
fn torn_last_segment_at_every_offset_keeps_the_longest_valid_prefix() {
    let original = tempfile::tempdir().unwrap();
    let entries: Vec<_> = (1..=14).map(|i| ent(1, i)).collect();
    {
        let wal = open(original.path(), FlushPolicy::Inline);
        for e in &entries {
            append(&wal, vec![e.clone()]);
        }
    }
    let segs = segments(original.path());
    assert!(segs.len() >= 2);
    let last = *segs.last().unwrap();
    let last_name = segment::segment_name(last);
    let full_len = std::fs::metadata(original.path().join(&last_name)).unwrap().len();
    // Record boundaries in the last segment.
    let mut ends = Vec::new();
    let mut at = 0;
    for e in entries.iter().filter(|e| e.log_id.index >= last) {
        at += record_len(e);
        ends.push(at);
    }
    assert_eq!(at, full_len);
    for cut in 0..=full_len {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let path = dir.path().join(&last_name);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let kept_in_last = ends.iter().filter(|&&end| end <= cut).count() as u64;
        let valid_len = ends.iter().copied().filter(|&end| end <= cut).max().unwrap_or(0);
        let expect_last = last - 1 + kept_in_last;
        {
            let wal = open(dir.path(), FlushPolicy::Inline);
            let got = all(&wal);
            assert_eq!(got.len() as u64, expect_last, "cut at {cut}");
            assert!(got.iter().zip(&entries).all(|(a, b)| same(a, b)), "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), valid_len, "torn tail cut off at {cut}");
            assert_eq!(wal.log_state().1, Some(log_id(1, expect_last)));
            // Appends continue after the kept prefix.
            append_range(&wal, 2, expect_last + 1..=expect_last + 3);
        }
        let wal = open(dir.path(), FlushPolicy::Inline);
        let got = all(&wal);
        assert_eq!(got.len() as u64, expect_last + 3, "cut at {cut}, after appending");
        assert!(got[..expect_last as usize].iter().zip(&entries).all(|(a, b)| same(a, b)));
        assert!(same(&got[expect_last as usize], &ent(2, expect_last + 1)));
    }
}

#[test]
fn damage_in_a_closed_segment_refuses_to_open() {
    let original = tempfile::tempdir().unwrap();
    let entries: Vec<_> = (1..=20).map(|i| ent(1, i)).collect();
    {
        let wal = open(original.path(), FlushPolicy::Inline);
        append(&wal, entries.clone());
    }
    let segs = segments(original.path());
    assert!(segs.len() >= 3);
    let mut rng = Rng(0x5eed_1e06e);
    for &victim in &segs[..segs.len() - 1] {
        let name = segment::segment_name(victim);
        let bytes = std::fs::read(original.path().join(&name)).unwrap();
        // Record start offsets in this segment.
        let mut starts = Vec::new();
        let mut at = 0;
        for e in entries.iter().filter(|e| e.log_id.index >= victim) {
            if at >= bytes.len() as u64 {
                break;
            }
            starts.push(at);
            at += record_len(e);
        }
        for _ in 0..60 {
            let bit = rng.below(bytes.len() as u64 * 8);
            let byte = bit / 8;
            let mut damaged = bytes.clone();
            damaged[byte as usize] ^= 1 << (bit % 8);
            let dir = tempfile::tempdir().unwrap();
            copy_dir(original.path(), dir.path());
            std::fs::write(dir.path().join(&name), &damaged).unwrap();
            let record = starts.iter().copied().filter(|&s| s <= byte).max().unwrap();
            match Wal::open(dir.path(), opts(512, FlushPolicy::Inline)) {
                Err(Error::Corrupt(msg)) => {
                    let path = dir.path().join(&name);
                    let want = format!("{} at byte {record}:", path.display());
                    assert!(msg.contains(&want), "flip of bit {bit}: {msg:?} should name {want:?}");
                }
                Err(e) => panic!("flip of bit {bit}: unexpected error {e}"),
                Ok(_) => panic!("flip of bit {bit} in closed segment {name} went unnoticed"),
            }
        }
    }
}

#[test]
fn oversized_length_header_is_corrupt_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path(), FlushPolicy::Inline);
        append(&wal, (1..=20).map(|i| ent(1, i)).collect());
    }
    let first = segments(dir.path())[0];
    let path = dir.path().join(segment::segment_name(first));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match Wal::open(dir.path(), opts(512, FlushPolicy::Inline)) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("exceeds the limit"), "{msg}"),
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn missing_middle_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let segs = thirty_entries(dir.path());
    std::fs::remove_file(dir.path().join(segment::segment_name(segs[1]))).unwrap();
    assert!(matches!(Wal::open(dir.path(), opts(512, FlushPolicy::Inline)), Err(Error::Corrupt(_))));
}

#[test]
fn truncate_and_purge_across_segments() {
    for flush in [FlushPolicy::Inline, FlushPolicy::Background] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let wal = open(d, flush);
        append_range(&wal, 1, 1..=30);
        let before = segments(d);
        assert!(before.len() >= 4);

        // Truncate in the middle of a segment.
        block(wal.truncate(17)).unwrap();
        assert_eq!(indexes(&wal), (1..=16).collect::<Vec<_>>());
        assert!(segments(d).iter().all(|&s| s <= 16), "later segments removed: {:?}", segments(d));
        drop(wal);
        let wal = open(d, flush);
        assert_eq!(indexes(&wal), (1..=16).collect::<Vec<_>>());
        append_range(&wal, 2, 17..=25);
        drop(wal);
        let wal = open(d, flush);
        let got = all(&wal);
        assert!(got.iter().zip(1..=16).all(|(e, i)| same(e, &ent(1, i))));
        assert!(got[16..].iter().zip(17..=25).all(|(e, i)| same(e, &ent(2, i))));
        assert_eq!(got.len(), 25);

        // Truncate exactly at a segment's first entry: that segment goes too.
        let segs = segments(d);
        let boundary = segs[segs.len() - 1];
        block(wal.truncate(boundary)).unwrap();
        assert_eq!(*segments(d).last().unwrap(), segs[segs.len() - 2]);
        assert_eq!(wal.log_state().1.map(|l| l.index), Some(boundary - 1));
        append_range(&wal, 3, boundary..=25);
        drop(wal);
        let wal = open(d, flush);
        assert_eq!(indexes(&wal), (1..=25).collect::<Vec<_>>());
        assert!(same(&all(&wal)[24], &ent(3, 25)));

        // Purge into the middle of a segment: whole segments before it are removed, the partly
        // purged one stays but serves nothing purged.
        block(wal.purge(log_id(1, 9))).unwrap();
        assert_eq!(indexes(&wal), (10..=25).collect::<Vec<_>>());
        assert_eq!(wal.read(0, 12).unwrap().len(), 2);
        let left = segments(d);
        assert!(left[0] <= 10, "the segment holding 10 stays: {left:?}");
        assert!(left.len() == 1 || left[1] > 10, "segments wholly purged are gone: {left:?}");
        assert_eq!(wal.log_state(), (Some(log_id(1, 9)), Some(log_id(3, 25))));
        drop(wal);
        let wal = open(d, flush);
        assert_eq!(indexes(&wal), (10..=25).collect::<Vec<_>>());
        assert_eq!(wal.log_state(), (Some(log_id(1, 9)), Some(log_id(3, 25))));

        // Purge a point that went back is ignored.
        block(wal.purge(log_id(1, 5))).unwrap();
        assert_eq!(wal.log_state().0, Some(log_id(1, 9)));

        // Purge everything: no segment left, the log state is the purge point.
        block(wal.purge(log_id(3, 25))).unwrap();
        assert_eq!(indexes(&wal), Vec::<u64>::new());
        assert_eq!(segments(d), Vec::<u64>::new());
        assert_eq!(wal.log_state(), (Some(log_id(3, 25)), Some(log_id(3, 25))));
        drop(wal);
        let wal = open(d, flush);
        assert_eq!(wal.log_state(), (Some(log_id(3, 25)), Some(log_id(3, 25))));
        append_range(&wal, 4, 26..=28);
        drop(wal);
        let wal = open(d, flush);
        assert_eq!(indexes(&wal), vec![26, 27, 28]);

        // Purge beyond the end (a snapshot installed), then the log resumes after it.
        block(wal.purge(log_id(5, 40))).unwrap();
        assert_eq!(wal.log_state(), (Some(log_id(5, 40)), Some(log_id(5, 40))));
        append_range(&wal, 5, 41..=42);
        drop(wal);
        let wal = open(d, flush);
        assert_eq!(indexes(&wal), vec![41, 42]);
        assert_eq!(wal.log_state(), (Some(log_id(5, 40)), Some(log_id(5, 42))));
        assert_eq!(segments(d), vec![41]);
    }
}

#[test]
fn interrupted_purge_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let segs = thirty_entries(dir.path());
    // The purge point persisted, the segments not yet removed.
    segment::write_meta(dir.path(), &Meta { last_purged: Some(log_id(1, segs[2] - 1)), ..Meta::default() }).unwrap();
    let wal = open(dir.path(), FlushPolicy::Inline);
    assert_eq!(indexes(&wal), (segs[2]..=30).collect::<Vec<_>>());
    assert_eq!(segments(dir.path())[0], segs[2]);
}

#[test]
fn vote_and_committed_persist() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(3, 2);
    {
        let wal = open(dir.path(), FlushPolicy::Background);
        append_range(&wal, 1, 1..=5);
        wal.save_committed(Some(log_id(1, 4)));
        assert_eq!(wal.committed(), Some(log_id(1, 4)));
        block(wal.save_vote(vote)).unwrap();
        // Saved in memory only until the next vote or purge.
        wal.save_committed(Some(log_id(1, 5)));
    }
    let wal = open(dir.path(), FlushPolicy::Background);
    assert_eq!(wal.vote(), Some(vote));
    assert_eq!(wal.committed(), Some(log_id(1, 4)));
}

#[test]
fn committed_never_persists_past_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path(), FlushPolicy::Inline);
        append_range(&wal, 1, 1..=3);
        wal.save_committed(Some(log_id(1, 9)));
        block(wal.save_vote(Vote::new(1, 1))).unwrap();
    }
    let wal = open(dir.path(), FlushPolicy::Inline);
    assert_eq!(wal.committed(), None);
}

#[test]
fn appends_that_leave_a_hole_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path(), FlushPolicy::Inline);
    append_range(&wal, 1, 1..=3);
    let refused = wal.append(vec![ent(1, 5)], Box::new(|_| panic!("a refused append never completes")));
    assert!(matches!(refused, Err(Error::InvalidInput(_))));
    assert_eq!(indexes(&wal), vec![1, 2, 3]);
}

const CHILD_ENV: &str = "LEDGE_WAL_KILL_CHILD_DIR";

/// The child side of [`kill_9_keeps_every_acknowledged_entry`]: appends until killed, printing
/// each index once its append is durable. Does nothing unless started by that test.
#[test]
fn kill_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let wal = Wal::open(Path::new(&dir), LogOptions { segment_bytes: 8 << 10, ..LogOptions::default() }).unwrap();
    let mut next = wal.log_state().1.map_or(1, |l| l.index + 1);
    let acked = Arc::new(AtomicU64::new(next - 1));
    let mut rng = Rng(std::process::id() as u64 | 1);
    loop {
        // Keep a bounded number of appends in flight.
        while next - acked.load(Ordering::SeqCst) > 2000 {
            std::thread::yield_now();
        }
        let n = 1 + rng.below(8);
        let acked = acked.clone();
        let last = next + n - 1;
        wal.append(
            (next..=last).map(|i| ent(i / 100 + 1, i)).collect(),
            Box::new(move |r| {
                if r.is_ok() {
                    let mut out = std::io::stdout().lock();
                    for i in last + 1 - n..=last {
                        let _ = writeln!(out, "{i}");
                    }
                    let _ = out.flush();
                    acked.store(last, Ordering::SeqCst);
                }
            }),
        )
        .unwrap();
        next = last + 1;
    }
}

#[test]
fn kill_9_keeps_every_acknowledged_entry() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut max_acked = 0;
    for round in 0..20 {
        let mut child = Process::new(&exe)
            .args(["wal::tests::kill_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                // A line cut short by the kill is not an acknowledgement.
                if line.ends_with(b"\n") {
                    if let Ok(i) = std::str::from_utf8(&line[..line.len() - 1]).unwrap_or("").parse::<u64>() {
                        acked.push(i);
                    }
                }
                line.clear();
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        let wal = Wal::open(dir.path(), opts(8 << 10, FlushPolicy::Inline)).unwrap();
        let last = wal.log_state().1.map_or(0, |l| l.index);
        let got = all(&wal);
        assert_eq!(got.len() as u64, last, "round {round}: the log is contiguous from 1");
        for (k, e) in got.iter().enumerate() {
            let i = k as u64 + 1;
            assert!(same(e, &ent(i / 100 + 1, i)), "round {round}: entry {i} intact");
        }
        if let Some(&top) = acked.iter().max() {
            assert!(top <= last, "round {round}: acknowledged {top} but the log ends at {last} (seed {seed:#x})");
            max_acked = max_acked.max(top);
        }
        assert!(acked.iter().all(|&i| i >= 1 && i <= last));
    }
    assert!(max_acked > 0, "the children acknowledged something");
    eprintln!("kill -9: 20 rounds, {max_acked} entries acknowledged, {:?}", started.elapsed());
}

#[test]
fn damaged_meta_file_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path(), FlushPolicy::Inline);
        append_range(&wal, 1, 1..=3);
        block(wal.save_vote(Vote::new(2, 1))).unwrap();
    }
    let path = dir.path().join("meta");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match Wal::open(dir.path(), opts(512, FlushPolicy::Inline)) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("meta"), "{msg}"),
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
}

fn append_result(wal: &Wal, entries: Vec<Entry<TypeConfig>>) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel();
    wal.append(
        entries,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn a_failed_write_completes_with_the_error_and_so_does_everything_after() {
    for flush in [FlushPolicy::Inline, FlushPolicy::Background] {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("raft");
        // Every append starts a new segment.
        let wal = Wal::open(&wal_dir, LogOptions { segment_bytes: 1, cache_bytes: 0, flush, ..LogOptions::default() })
            .unwrap();
        append_result(&wal, vec![ent(1, 1)]).unwrap();
        std::fs::remove_dir_all(&wal_dir).unwrap();
        assert!(append_result(&wal, vec![ent(1, 2)]).is_err(), "creating a segment fails");
        std::fs::create_dir_all(&wal_dir).unwrap();
        assert!(append_result(&wal, vec![ent(1, 3)]).is_err(), "the log accepts no writes after a failure");
        assert!(block(wal.save_vote(Vote::new(1, 1))).is_err());
    }
}

#[test]
fn replication_reads_stop_at_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of about three small records; segments and cache small so both paths are read.
    let options = LogOptions { segment_bytes: 512, cache_bytes: 256, max_read_bytes: 300, ..LogOptions::default() };
    let wal = Wal::open(dir.path(), options).unwrap();
    append_range(&wal, 1, 1..=60);
    let mut start = 1;
    while start <= 60 {
        let got = wal.read_limited(start, 61).unwrap();
        assert!(!got.is_empty(), "at least one entry from {start}");
        let bytes: usize = got.iter().map(|e| encode(e).unwrap().len() + 8).sum();
        assert!(got.len() == 1 || bytes <= 300, "{} entries of {bytes} bytes from {start}", got.len());
        for (k, e) in got.iter().enumerate() {
            assert!(same(e, &ent(1, start + k as u64)));
        }
        // The next entry would not have fit.
        if let Some(next) = wal.read(start + got.len() as u64, start + got.len() as u64 + 1).unwrap().first() {
            assert!(bytes + encode(next).unwrap().len() + 8 > 300);
        }
        start += got.len() as u64;
    }
    // The end of the range still bounds the read.
    assert_eq!(wal.read_limited(5, 6).unwrap().len(), 1);
    assert!(wal.read_limited(61, 70).unwrap().is_empty());
}
