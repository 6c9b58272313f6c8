use super::*;

fn db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
    (dir, db)
}

fn put(state: &[u8], tomb: Option<u8>) -> Write {
    let mut digest = [0; HASH_LEN];
    digest[..state.len().min(HASH_LEN)].copy_from_slice(&state[..state.len().min(HASH_LEN)]);
    Write::Put(Put {
        state: state.to_vec(),
        digest,
        collectable: tomb.map(|t| vec![t]),
        mark: Some(vec![7]),
        seen: Vec::new(),
    })
}

fn write(store: &Eventual, space: &Space, key: &[u8], state: &[u8], tomb: Option<u8>) -> Option<u64> {
    store.update::<_, Error, _>(space, key, true, |_| Ok((put(state, tomb), ()))).unwrap().seq
}

#[tokio::test]
async fn writes_are_logged_in_commit_order_and_keep_logs_nothing() {
    let (_dir, db) = db();
    let store = Eventual::open(&db).unwrap();
    let id = SpaceId::new("ks", 3);
    let space = store.space(&id).unwrap();
    assert_eq!(write(&store, &space, b"a", b"1", None), Some(1));
    assert_eq!(write(&store, &space, b"b", b"2", None), Some(2));
    let kept = store.update::<_, Error, _>(&space, b"a", false, |old| {
        assert_eq!(old, Some(&b"1"[..]));
        Ok((Write::Keep, 42))
    });
    assert_eq!(kept.unwrap().seq, None);
    let refused = store.update::<(), Error, _>(&space, b"a", false, |_| Err(Error::InvalidInput("no".into())));
    assert_eq!(refused.unwrap_err(), Error::InvalidInput("no".into()));
    assert_eq!(space.get(b"a").unwrap(), Some(b"1".to_vec()));
    let log = store.changes(0, store.committed(), 10, usize::MAX).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].0, 2);
    assert_eq!(log[1].1, Record { space: id, key: b"b".to_vec(), state: b"2".to_vec(), local: true, seen: Vec::new() });
    assert_eq!(store.mark().unwrap(), Some(vec![7]));
    let mut durable = store.durable();
    store.flush().await.unwrap();
    assert_eq!(*durable.borrow_and_update(), 2);
}

#[test]
fn hash_tree_and_counts_survive_a_reopen() {
    let (_dir, db) = db();
    let id = SpaceId::new("ks", 1);
    let (root, mids) = {
        let store = Eventual::open(&db).unwrap();
        let space = store.space(&id).unwrap();
        for i in 0..100u32 {
            write(&store, &space, &i.to_be_bytes(), &i.to_le_bytes(), (i % 10 == 0).then_some(1));
        }
        write(&store, &space, &5u32.to_be_bytes(), b"changed", None);
        assert_eq!((space.len(), space.tombstones()), (100, 10));
        (space.root().unwrap(), space.mids().unwrap())
    };
    let store = Eventual::open(&db).unwrap();
    let space = store.space(&id).unwrap();
    assert_eq!(space.root().unwrap(), root);
    assert_eq!(space.mids().unwrap(), mids);
    assert_eq!((space.len(), space.tombstones()), (100, 10));
    let leaf = merkle::bucket(&5u32.to_be_bytes());
    let keys = space.keys(leaf).unwrap();
    assert!(keys.iter().any(|(k, _)| k == &5u32.to_be_bytes()));
    assert_ne!(space.leaves((leaf >> 8) as u8).unwrap()[usize::from(leaf & 0xff)], EMPTY_ROOT);
    assert_eq!(store.committed(), 101);
}

#[test]
fn collect_removes_tombstones_at_or_below_the_watermark() {
    let (_dir, db) = db();
    let store = Eventual::open(&db).unwrap();
    let space = store.space(&SpaceId::new("ks", 1)).unwrap();
    let empty = space.root().unwrap();
    write(&store, &space, b"live", b"v", None);
    let with_live = space.root().unwrap();
    write(&store, &space, b"old", b"t", Some(3));
    write(&store, &space, b"new", b"t", Some(9));
    assert_eq!(store.collect(&space, &[5]).unwrap(), 1);
    assert_eq!(space.get(b"old").unwrap(), None);
    assert_eq!((space.len(), space.tombstones()), (2, 1));
    // A key written again after it became a tombstone candidate is not collected.
    write(&store, &space, b"new", b"v2", None);
    assert_eq!(store.collect(&space, &[10]).unwrap(), 0);
    store.update::<_, Error, _>(&space, b"new", true, |_| Ok((put(b"t", Some(9)), ()))).unwrap();
    assert_eq!(store.collect(&space, &[10]).unwrap(), 1);
    assert_eq!(space.root().unwrap(), with_live);
    assert_ne!(with_live, empty);
    assert_eq!((space.len(), space.tombstones()), (1, 0));
}

#[test]
fn sequence_numbers_survive_trimming_everything() {
    let (_dir, db) = db();
    let id = SpaceId::new("ks", 1);
    {
        let store = Eventual::open(&db).unwrap();
        let space = store.space(&id).unwrap();
        for i in 0..5u8 {
            write(&store, &space, &[i], b"v", None);
        }
        assert_eq!(store.trim_changes(3).unwrap(), 3);
        assert_eq!(store.first_change().unwrap(), Some(4));
        assert_eq!(store.trim_changes(100).unwrap(), 2);
        assert_eq!(store.first_change().unwrap(), None);
    }
    let store = Eventual::open(&db).unwrap();
    let space = store.space(&id).unwrap();
    assert_eq!(write(&store, &space, b"x", b"v", None), Some(6));
}

#[test]
fn dropped_keyspaces_lose_their_trees() {
    let (_dir, db) = db();
    let store = Eventual::open(&db).unwrap();
    let (keep, gone) = (SpaceId::new("keep", 1), SpaceId::new("gone", 2));
    write(&store, &store.space(&keep).unwrap(), b"k", b"v", None);
    write(&store, &store.space(&gone).unwrap(), b"k", b"v", None);
    assert_eq!(store.stored_spaces(), vec![gone.clone(), keep.clone()]);
    assert_eq!(store.retain_spaces(|id| Ok(*id != keep)).unwrap(), 1);
    assert_eq!(store.stored_spaces(), vec![keep.clone()]);
    assert_eq!(store.space(&gone).unwrap().get(b"k").unwrap(), None);
    assert_eq!(SpaceId::of_tree("ev/a@b@7/data"), Some(SpaceId::new("a@b", 7)));
    assert_eq!(SpaceId::of_tree("ev/changes"), None);
    assert_eq!(SpaceId::of_tree("ev/x@1/other"), None);
}

#[test]
fn a_batch_commits_its_good_items_in_order_and_later_items_see_earlier_ones() {
    let (_dir, db) = db();
    let store = Eventual::open(&db).unwrap();
    let (a, b) = (store.space(&SpaceId::new("a", 1)).unwrap(), store.space(&SpaceId::new("b", 2)).unwrap());
    let items = [
        Item { space: &a, key: b"k", local: false },
        Item { space: &b, key: b"k", local: true },
        Item { space: &a, key: b"bad", local: false },
        Item { space: &a, key: b"k", local: false },
    ];
    let results = store
        .update_batch(&items, |i, old| match i {
            2 => Err("refused"),
            3 => Ok((put(&[old.map_or(0, |o| o[0]) + 1], None), old.map(<[u8]>::to_vec))),
            _ => Ok((put(b"\x01", None), None)),
        })
        .unwrap();
    let seqs: Vec<Option<u64>> = results.iter().map(|r| r.as_ref().ok().and_then(|u| u.seq)).collect();
    assert_eq!(seqs, vec![Some(1), Some(2), None, Some(3)]);
    assert_eq!(results[2].as_ref().err(), Some(&"refused"));
    assert_eq!(results[3].as_ref().unwrap().value, Some(vec![1]), "the second write of a key sees the first");
    assert_eq!(a.get(b"k").unwrap(), Some(vec![2]));
    assert_eq!(a.get(b"bad").unwrap(), None);
    assert_eq!((a.len(), b.len()), (1, 1));
    let log = store.changes(0, 10, 10, usize::MAX).unwrap();
    assert_eq!(
        log.iter().map(|(seq, r)| (*seq, r.space.name.as_str(), r.local)).collect::<Vec<_>>(),
        vec![(1, "a", false), (2, "b", true), (3, "a", false)]
    );
}

#[test]
fn stream_positions_locate_changes_even_after_trimming() {
    let (_dir, db) = db();
    let store = Eventual::open(&db).unwrap();
    let space = store.space(&SpaceId::new("ks", 1)).unwrap();
    let at = |seen: u8| {
        Write::Put(Put { state: vec![seen], digest: [seen; HASH_LEN], collectable: None, mark: None, seen: vec![seen] })
    };
    for (key, seen) in [(b"a", 10), (b"b", 20), (b"c", 30), (b"d", 40)] {
        store.update::<_, Error, _>(&space, key, true, |_| Ok((at(seen), ()))).unwrap();
    }
    assert_eq!(store.locate(&[5]).unwrap(), Some(0));
    assert_eq!(store.locate(&[10]).unwrap(), Some(1));
    assert_eq!(store.locate(&[25]).unwrap(), Some(2));
    assert_eq!(store.locate(&[99]).unwrap(), Some(4));
    assert_eq!(store.trim_changes(2).unwrap(), 2);
    // Before the last trimmed change: the log no longer tells what followed the cursor.
    assert_eq!(store.locate(&[10]).unwrap(), None);
    assert_eq!(store.locate(&[20]).unwrap(), Some(2));
    assert_eq!(store.locate(&[35]).unwrap(), Some(3));
    assert_eq!(store.position(|| vec![45]).unwrap(), (4, vec![45]));
    // Everything trimmed: the remembered position still decides.
    store.trim_changes(4).unwrap();
    assert_eq!(store.locate(&[40]).unwrap(), Some(4));
    assert_eq!(store.locate(&[39]).unwrap(), None);
}

#[test]
fn records_of_the_layout_without_positions_still_decode() {
    #[derive(serde::Serialize)]
    struct Old {
        space: SpaceId,
        key: Vec<u8>,
        state: Vec<u8>,
        local: bool,
    }
    let old = Old { space: SpaceId::new("ks", 2), key: b"k".to_vec(), state: b"s".to_vec(), local: true };
    let record = Record::decode(&encode(&old).unwrap()).unwrap();
    assert_eq!(record, Record { space: old.space, key: old.key, state: old.state, local: true, seen: Vec::new() });
}
