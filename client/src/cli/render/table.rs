//! `--output table`: aligned text for people. Single results print as `name:  value` lines;
//! lists print as a table with a header row.

use ledge_client::{
    AsOf, DeleteResult, EventKind, IncrementResult, KeyValue, Keyspace, Member, NodeStatus, PutResult, SetResult,
    ValueKind, WatchMessage,
};

use super::millis;

/// Bytes as one line of text: lossy UTF-8 with control characters escaped, so a value with a
/// newline cannot break the layout.
fn text(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes))
}

fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `name  value` lines with the values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(name, _)| name.len() + 1).max().unwrap_or(0);
    rows.iter().map(|(name, value)| format!("{:<width$}  {value}\n", format!("{name}:"))).collect()
}

/// A table with a header row and left-aligned columns; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.push('\n');
        line
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn as_of_text(as_of: &AsOf) -> String {
    if let Some(hlc) = as_of.hlc {
        let stable = as_of.stable_hlc.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        let noun = if as_of.replicas == 1 { "replica" } else { "replicas" };
        return format!("hlc {hlc} on node {}, stable {stable}, {} {noun}", as_of.node_id, as_of.replicas);
    }
    let mut out = format!("revision {} on node {}", as_of.revision, as_of.node_id);
    if as_of.stale {
        out.push_str(&format!(", stale ({} ms behind)", millis(as_of.staleness)));
    }
    out
}

/// An eventual entry's value: bytes, a counter's number, or a set's members in braces.
fn eventual_value(kv: &KeyValue) -> String {
    match kv.kind {
        Some(ValueKind::Set) => format!("{{{}}}", kv.members.iter().map(|m| text(m)).collect::<Vec<_>>().join(", ")),
        Some(ValueKind::Counter) => kv.counter.unwrap_or_default().to_string(),
        _ => text(&kv.value),
    }
}

/// The result of a get.
pub fn get(kv: &KeyValue, as_of: &AsOf) -> String {
    if let Some(hlc) = kv.hlc {
        return fields(&[
            ("key", text(&kv.key)),
            ("kind", kv.kind.map_or("lww", |k| k.as_str()).to_owned()),
            ("value", eventual_value(kv)),
            ("hlc", hlc.to_string()),
            ("as_of", as_of_text(as_of)),
        ]);
    }
    fields(&[
        ("key", text(&kv.key)),
        ("value", text(&kv.value)),
        ("revision", kv.revision.to_string()),
        ("create_revision", kv.create_revision.to_string()),
        ("version", kv.version.to_string()),
        ("as_of", as_of_text(as_of)),
    ])
}

/// The result of a put.
pub fn put(key: &[u8], put: &PutResult) -> String {
    match put.hlc {
        Some(hlc) => fields(&[("key", text(key)), ("hlc", hlc.to_string())]),
        None => fields(&[("key", text(key)), ("revision", put.revision.to_string())]),
    }
}

/// The result of a delete.
pub fn delete(key: &[u8], delete: &DeleteResult) -> String {
    let version = match delete.hlc {
        Some(hlc) => ("hlc", hlc.to_string()),
        None => ("revision", delete.revision.to_string()),
    };
    fields(&[("key", text(key)), version, ("deleted", delete.deleted.to_string())])
}

/// The result of an increment.
pub fn increment(key: &[u8], result: &IncrementResult) -> String {
    fields(&[("key", text(key)), ("counter", result.value.to_string()), ("hlc", result.hlc.to_string())])
}

/// The result of a set add or remove.
pub fn set(key: &[u8], member: &[u8], result: &SetResult) -> String {
    fields(&[
        ("key", text(key)),
        ("member", text(member)),
        ("size", result.size.to_string()),
        ("hlc", result.hlc.to_string()),
    ])
}

/// The entries of a scan.
pub fn scan(kvs: &[KeyValue]) -> String {
    if kvs.iter().any(|kv| kv.hlc.is_some()) {
        let rows: Vec<Vec<String>> = kvs
            .iter()
            .map(|kv| {
                let hlc = kv.hlc.map(|h| h.to_string()).unwrap_or_default();
                vec![text(&kv.key), kv.kind.map_or("", |k| k.as_str()).to_owned(), hlc, eventual_value(kv)]
            })
            .collect();
        return table(&["KEY", "KIND", "HLC", "VALUE"], &rows);
    }
    let rows: Vec<Vec<String>> =
        kvs.iter().map(|kv| vec![text(&kv.key), kv.revision.to_string(), text(&kv.value)]).collect();
    table(&["KEY", "REVISION", "VALUE"], &rows)
}

/// Keyspaces.
pub fn keyspaces(keyspaces: &[Keyspace]) -> String {
    let rows: Vec<Vec<String>> = keyspaces
        .iter()
        .map(|ks| vec![printable(&ks.name), ks.mode.to_string(), ks.scope.to_string(), ks.created_revision.to_string()])
        .collect();
    table(&["NAME", "MODE", "SCOPE", "CREATED_REVISION"], &rows)
}

/// Members of the Raft group.
pub fn members(members: &[Member]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let applied = m.applied_revision.map_or_else(|| "-".to_string(), |r| r.to_string());
            vec![m.id.to_string(), printable(&m.address), printable(&m.role), m.last_applied.to_string(), applied]
        })
        .collect();
    table(&["ID", "ADDRESS", "ROLE", "LAST_APPLIED", "APPLIED_REVISION"], &rows)
}

/// The result of removing a member.
pub fn removed(id: u64, revision: u64) -> String {
    fields(&[("id", id.to_string()), ("revision", revision.to_string())])
}

/// One watch message, a line per event (`PUT key = value (rev N)`, `DELETE key (rev N)`), or
/// for a snapshot a `SNAPSHOT at rev N: K keys` line and then each key, indented.
pub fn watch(message: &WatchMessage) -> String {
    // Strong entries are labelled with their revision, eventual ones with their timestamp.
    let label = |kv: &KeyValue| match kv.hlc {
        Some(hlc) => format!("hlc {hlc}"),
        None => format!("rev {}", kv.revision),
    };
    match message {
        WatchMessage::Snapshot { revision, kvs, cursor } => {
            let noun = if kvs.len() == 1 { "key" } else { "keys" };
            let at = match cursor {
                Some(cursor) => format!("cursor {cursor}"),
                None => format!("rev {revision}"),
            };
            let mut out = format!("SNAPSHOT at {at}: {} {noun}\n", kvs.len());
            for kv in kvs {
                let value = if kv.hlc.is_some() { eventual_value(kv) } else { text(&kv.value) };
                out.push_str(&format!("  {} = {} ({})\n", text(&kv.key), value, label(kv)));
            }
            out
        }
        WatchMessage::Events { events, cursor, .. } => events
            .iter()
            .map(|event| {
                let (value, mut at) = match &event.state {
                    Some(state) => (eventual_value(state), label(state)),
                    None => (text(&event.value), format!("rev {}", event.revision)),
                };
                if let Some(cursor) = cursor {
                    at.push_str(&format!(", cursor {cursor}"));
                }
                match event.kind {
                    EventKind::Put => format!("PUT {} = {value} ({at})\n", text(&event.key)),
                    EventKind::Delete => format!("DELETE {} ({at})\n", text(&event.key)),
                }
            })
            .collect(),
    }
}

/// A byte count in binary units with one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A node's status, its memory budget by part, then its view of the members.
pub fn status(status: &NodeStatus) -> String {
    let leader = match (status.leader_id, status.leader_address.as_deref()) {
        (Some(id), Some(address)) => format!("{id} ({address})"),
        (Some(id), None) => id.to_string(),
        (None, Some(address)) => address.to_owned(),
        (None, None) => "none".to_owned(),
    };
    let mut out = fields(&[
        ("node_id", status.node_id.to_string()),
        ("region", printable(&status.region)),
        ("role", printable(&status.role)),
        ("address", printable(&status.address)),
        ("raft_state", printable(&status.raft_state)),
        ("leader", leader),
        ("term", status.term.to_string()),
        ("last_log_index", status.last_log_index.to_string()),
        ("applied_revision", status.applied_revision.to_string()),
        ("keyspaces", status.keyspaces.to_string()),
        ("eventual_keys", status.eventual_keys.to_string()),
        ("tombstones", status.tombstones.to_string()),
        ("hlc", status.hlc.map_or_else(|| "none".to_owned(), |h| h.to_string())),
        ("version", printable(&status.version)),
        ("memory", format!("{} resident, budget {}", bytes(status.rss), bytes(status.memory_budget))),
        ("disk", {
            let d = &status.disk;
            format!(
                "{} (log {}, db {}, snapshots {})",
                bytes(d.log + d.db + d.snapshots),
                bytes(d.log),
                bytes(d.db),
                bytes(d.snapshots)
            )
        }),
    ]);
    for part in &status.memory {
        let used = part.used.map_or_else(|| "not reported".to_owned(), bytes);
        out.push_str(&format!("  {:<12} {} of {}\n", printable(&part.name), used, bytes(part.limit)));
    }
    out.push('\n');
    out.push_str(&members(&status.members));
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use ledge_client::{Mode, Scope};

    #[test]
    fn get_aligns_fields_and_escapes_control_characters() {
        assert_eq!(
            get(&fixtures::kv(b"user/1", b"line\nbreak"), &fixtures::as_of()),
            concat!(
                "key:              user/1\n",
                "value:            line\\nbreak\n",
                "revision:         7\n",
                "create_revision:  5\n",
                "version:          2\n",
                "as_of:            revision 9 on node 2, stale (120 ms behind)\n",
            )
        );
    }

    #[test]
    fn put_and_delete() {
        assert_eq!(put(b"k", &PutResult { revision: 3, hlc: None }), "key:       k\nrevision:  3\n");
        assert_eq!(
            delete(b"k", &DeleteResult { revision: 4, deleted: true, hlc: None }),
            "key:       k\nrevision:  4\ndeleted:   true\n"
        );
        let hlc = Some(fixtures::hlc());
        assert_eq!(put(b"k", &PutResult { revision: 0, hlc }), "key:  k\nhlc:  1700000000000.3@42\n");
    }

    #[test]
    fn eventual_entries_show_kind_value_and_hlc() {
        assert_eq!(
            get(&fixtures::set(b"tags", &[b"a", b"b"]), &fixtures::eventual_as_of()),
            concat!(
                "key:    tags\n",
                "kind:   set\n",
                "value:  {a, b}\n",
                "hlc:    1700000000000.3@42\n",
                "as_of:  hlc 1700000000001.0@2 on node 2, stable 1700000000000.0@1, 1 replica\n",
            )
        );
        assert_eq!(
            scan(&[fixtures::counter(b"c", -3)]),
            "KEY  KIND     HLC                 VALUE\nc    counter  1700000000000.3@42  -3\n"
        );
        let incremented = IncrementResult { hlc: fixtures::hlc(), value: 7 };
        assert_eq!(increment(b"c", &incremented), "key:      c\ncounter:  7\nhlc:      1700000000000.3@42\n");
    }

    #[test]
    fn scans_and_keyspaces_align_columns() {
        let kvs = [fixtures::kv(b"a", b"1"), fixtures::kv(b"longer-key", &[0xff])];
        assert_eq!(
            scan(&kvs),
            "KEY         REVISION  VALUE\na           7         1\nlonger-key  7         \u{fffd}\n"
        );
        assert_eq!(scan(&[]), "KEY  REVISION  VALUE\n");
        let default =
            Keyspace { name: "default".into(), mode: Mode::Strong, scope: Scope::Region, created_revision: 1 };
        assert_eq!(keyspaces(&[default]), "NAME     MODE    SCOPE   CREATED_REVISION\ndefault  strong  region  1\n");
    }

    #[test]
    fn watch_events_are_one_line_each() {
        let events = WatchMessage::Events { revision: 8, events: fixtures::events(8), cursor: None };
        assert_eq!(watch(&events), "PUT user/1 = alice (rev 8)\nDELETE user/2 (rev 8)\n");
    }

    #[test]
    fn eventual_watch_lines_show_timestamps_and_cursors() {
        let (state, cursor) = (fixtures::counter(b"c", -3), fixtures::cursor());
        let message = fixtures::counter_change();
        assert_eq!(watch(&message), "PUT c = -3 (hlc 1700000000000.3@42, cursor 1700000000001.0@42)\n");
        let snapshot = WatchMessage::Snapshot { revision: 0, kvs: vec![state], cursor: Some(cursor) };
        assert_eq!(
            watch(&snapshot),
            "SNAPSHOT at cursor 1700000000001.0@42: 1 key\n  c = -3 (hlc 1700000000000.3@42)\n"
        );
    }

    #[test]
    fn watch_snapshots_list_their_keys() {
        let snapshot = WatchMessage::Snapshot {
            revision: 9,
            kvs: vec![fixtures::kv(b"a", b"1"), fixtures::kv(b"b", b"two\nlines")],
            cursor: None,
        };
        assert_eq!(watch(&snapshot), "SNAPSHOT at rev 9: 2 keys\n  a = 1 (rev 7)\n  b = two\\nlines (rev 7)\n");
        let one = WatchMessage::Snapshot { revision: 9, kvs: vec![fixtures::kv(b"a", b"1")], cursor: None };
        assert!(watch(&one).starts_with("SNAPSHOT at rev 9: 1 key\n"));
        assert_eq!(
            watch(&WatchMessage::Snapshot { revision: 2, kvs: Vec::new(), cursor: None }),
            "SNAPSHOT at rev 2: 0 keys\n"
        );
    }

    #[test]
    fn members_and_removals() {
        assert_eq!(
            members(&fixtures::status().members),
            concat!(
                "ID  ADDRESS         ROLE      LAST_APPLIED  APPLIED_REVISION\n",
                "1   127.0.0.1:7711  follower  39            -\n",
                "2   127.0.0.1:7712  leader    40            31\n",
            )
        );
        assert_eq!(removed(3, 57), "id:        3\nrevision:  57\n");
    }

    #[test]
    fn status_shows_the_leader_and_the_members() {
        let out = status(&fixtures::status());
        assert!(out.starts_with("node_id:           1\nregion:            r1\n"), "{out}");
        assert!(out.contains("leader:            2 (127.0.0.1:7712)\n"), "{out}");
        assert!(
            out.ends_with(concat!(
                "\nID  ADDRESS         ROLE      LAST_APPLIED  APPLIED_REVISION\n",
                "1   127.0.0.1:7711  follower  39            -\n",
                "2   127.0.0.1:7712  leader    40            31\n",
            )),
            "{out}"
        );
        let leaderless = NodeStatus { leader_id: None, leader_address: None, ..fixtures::status() };
        assert!(status(&leaderless).contains("leader:            none\n"));
    }

    #[test]
    fn status_shows_the_memory_budget_by_part_and_the_disk() {
        let out = status(&fixtures::status());
        assert!(out.contains("memory:            40.0 MiB resident, budget 64.0 MiB\n"), "{out}");
        assert!(out.contains("disk:              5.0 KiB (log 1.0 KiB, db 4.0 KiB, snapshots 0 B)\n"), "{out}");
        assert!(out.contains("  sled_cache   not reported of 25.6 MiB\n"), "{out}");
        assert!(out.contains("  log_cache    2.0 KiB of 9.6 MiB\n"), "{out}");
    }
}
