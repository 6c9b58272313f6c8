//! What each command does: one client call (or a loop of them, for `kv scan`), then printing.
//! `kv watch` is the exception: it prints each message of the stream as it arrives, flushing
//! after each, so that a script reading through a pipe sees every change at once.

use std::io::{self, Write};

use ledge_client::{Client, Code, Error, KeyValue, ReadOptions, ScanOptions, WatchMessage, WatchOptions};
use serde::Serialize;

use super::{
    args::{ClusterCommand, Command, KeyspaceCommand, KvCommand, Output, ReadArgs, WatchFrom},
    render,
};

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The call failed; printed as `<Code>: <message>`.
    Client(Error),
    /// Printing the result failed (for example, a closed pipe).
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Client(error)
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        Failure::Output(error)
    }
}

/// Prints results in the chosen format.
pub struct Printer<W: Write> {
    out: W,
    format: Output,
}

impl<W: Write> Printer<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, format: Output) -> Printer<W> {
        Printer { out, format }
    }

    /// Prints one result, rendered by whichever function matches the format.
    fn one<J: Serialize>(&mut self, json: impl FnOnce() -> J, table: impl FnOnce() -> String) -> io::Result<()> {
        match self.format {
            Output::Json => self.json_line(&json()),
            Output::Table => self.out.write_all(table().as_bytes()),
        }
    }

    fn json_line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// Prints many results: one JSON line per item, or one table for all of them.
    fn many<T, J: Serialize>(
        &mut self,
        items: &[T],
        json: impl Fn(&T) -> J,
        table: impl FnOnce(&[T]) -> String,
    ) -> io::Result<()> {
        match self.format {
            Output::Json => items.iter().try_for_each(|item| self.json_line(&json(item))),
            Output::Table => self.out.write_all(table(items).as_bytes()),
        }
    }

    /// Prints one watch message (several JSON lines for a snapshot or a multi-key revision)
    /// and flushes it.
    fn watch(&mut self, message: &WatchMessage) -> io::Result<()> {
        match self.format {
            Output::Json => render::json::watch(message).iter().try_for_each(|line| self.json_line(line))?,
            Output::Table => self.out.write_all(render::table::watch(message).as_bytes())?,
        }
        self.out.flush()
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Runs one command against `client`.
pub async fn run<W: Write>(client: &Client, command: Command, printer: &mut Printer<W>) -> Result<(), Failure> {
    match command {
        Command::Kv(command) => kv(client, command, printer).await,
        Command::Keyspace(command) => keyspace(client, command, printer).await,
        Command::Cluster(command) => cluster(client, command, printer).await,
    }
}

async fn cluster<W: Write>(client: &Client, command: ClusterCommand, printer: &mut Printer<W>) -> Result<(), Failure> {
    match command {
        ClusterCommand::Status => {
            let status = client.status().await?;
            printer.one(|| render::json::status(&status), || render::table::status(&status))?;
        }
        ClusterCommand::Members => {
            let members = client.members().await?;
            printer.many(&members, render::json::member, render::table::members)?;
        }
        ClusterCommand::Remove { node_id } => {
            let revision = client.remove_member(node_id).await?;
            printer.one(|| render::json::removed(node_id, revision), || render::table::removed(node_id, revision))?;
        }
    }
    Ok(())
}

async fn kv<W: Write>(client: &Client, command: KvCommand, printer: &mut Printer<W>) -> Result<(), Failure> {
    match command {
        KvCommand::Put { key, value, keyspace, level } => {
            let put = match level {
                Some(level) => client.put_with(&keyspace, key.as_bytes(), value, level.into()).await?,
                None => client.put(&keyspace, key.as_bytes(), value).await?,
            };
            let key = key.as_bytes();
            printer.one(|| render::json::put(key, &put), || render::table::put(key, &put))?;
        }
        KvCommand::Get { key, keyspace, read } => {
            let options = read_options(read);
            let got = client.get(&keyspace, key.as_bytes(), options).await?;
            let Some(kv) = got.kv else {
                let message = format!("key {key:?} not found in keyspace {keyspace:?}");
                return Err(Error::status(Code::NotFound, message).into());
            };
            printer.one(|| render::json::get(&kv, &got.as_of), || render::table::get(&kv, &got.as_of))?;
        }
        KvCommand::Del { key, keyspace, level } => {
            let deleted = match level {
                Some(level) => client.delete_with(&keyspace, key.as_bytes(), level.into()).await?,
                None => client.delete(&keyspace, key.as_bytes()).await?,
            };
            let key = key.as_bytes();
            printer.one(|| render::json::delete(key, &deleted), || render::table::delete(key, &deleted))?;
        }
        KvCommand::Incr { key, delta, keyspace, level } => {
            let incremented = match level {
                Some(level) => client.increment_with(&keyspace, key.as_bytes(), delta, level.into()).await?,
                None => client.increment(&keyspace, key.as_bytes(), delta).await?,
            };
            let key = key.as_bytes();
            printer
                .one(|| render::json::increment(key, &incremented), || render::table::increment(key, &incremented))?;
        }
        KvCommand::Sadd { key, member, keyspace, level } => {
            let (k, m) = (key.as_bytes(), member.as_bytes());
            let added = match level {
                Some(level) => client.set_add_with(&keyspace, k, m, level.into()).await?,
                None => client.set_add(&keyspace, k, m).await?,
            };
            printer.one(|| render::json::set(k, m, &added), || render::table::set(k, m, &added))?;
        }
        KvCommand::Srem { key, member, keyspace, level } => {
            let (k, m) = (key.as_bytes(), member.as_bytes());
            let removed = match level {
                Some(level) => client.set_remove_with(&keyspace, k, m, level.into()).await?,
                None => client.set_remove(&keyspace, k, m).await?,
            };
            printer.one(|| render::json::set(k, m, &removed), || render::table::set(k, m, &removed))?;
        }
        KvCommand::Scan { prefix, limit, keyspace, read } => {
            let read = read_options(read);
            let options = ScanOptions::new(keyspace).prefix(prefix.unwrap_or_default()).read(read);
            let kvs = scan(client, options, limit).await?;
            printer.many(&kvs, render::json::kv, render::table::scan)?;
        }
        KvCommand::Watch { key, prefix, from, keyspace } => {
            let options = match key {
                Some(key) => WatchOptions::key(keyspace, key),
                None => WatchOptions::prefix(keyspace, prefix.unwrap_or_default()),
            };
            let options = match from {
                None => options,
                Some(WatchFrom::Revision(revision)) => options.from_revision(revision),
                Some(WatchFrom::Cursor(cursor)) => options.from_cursor(cursor),
            };
            watch(client, options, printer).await?;
        }
    }
    Ok(())
}

/// The read options of `kv get` and `kv scan`. A staleness bound or a session revision only
/// makes sense for a stale read, so either one selects `stale` unless a consistency is named.
fn read_options(read: ReadArgs) -> ReadOptions {
    let ReadArgs { consistency, max_staleness, min_revision } = read;
    let consistency = consistency
        .map(Into::into)
        .or_else(|| (max_staleness.is_some() || min_revision.is_some()).then_some(ledge_client::Consistency::Stale));
    ReadOptions { consistency, max_staleness, min_revision }
}

/// Prints a watch's messages as they arrive, until the server ends the stream (success) or it
/// fails. Interrupting the process is the usual way out; every message printed before that has
/// been flushed.
async fn watch<W: Write>(client: &Client, options: WatchOptions, printer: &mut Printer<W>) -> Result<(), Failure> {
    let mut stream = client.watch(options).await?;
    while let Some(message) = stream.next().await {
        printer.watch(&message?)?;
    }
    Ok(())
}

/// Scans everything, or at most `limit` keys, following page tokens either way.
async fn scan(client: &Client, mut options: ScanOptions, limit: Option<u64>) -> Result<Vec<KeyValue>, Error> {
    let Some(limit) = limit else {
        return client.scan_all(options).await;
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut kvs = Vec::new();
    while kvs.len() < limit {
        options.limit = u32::try_from(limit - kvs.len()).unwrap_or(u32::MAX);
        let page = client.scan(options.clone()).await?;
        kvs.extend(page.kvs);
        match page.next_page_token {
            Some(token) if token != options.page_token => options.page_token = token,
            Some(token) => return Err(Error::invalid_response(format!("scan returned page token {token:?} twice"))),
            None => break,
        }
    }
    kvs.truncate(limit);
    Ok(kvs)
}

async fn keyspace<W: Write>(
    client: &Client,
    command: KeyspaceCommand,
    printer: &mut Printer<W>,
) -> Result<(), Failure> {
    match command {
        KeyspaceCommand::Create { name, mode, scope } => {
            let created = client.create_keyspace(&name, mode.into(), scope.into()).await?;
            let created = [created];
            printer.many(&created, render::json::keyspace, render::table::keyspaces)?;
        }
        KeyspaceCommand::List => {
            let keyspaces = client.list_keyspaces().await?;
            printer.many(&keyspaces, render::json::keyspace, render::table::keyspaces)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledge_client::{EventKind, WatchEvent};

    /// Records what had been written at each flush.
    #[derive(Default)]
    struct Recorder {
        written: Vec<u8>,
        flushed: Vec<String>,
    }

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushed.push(String::from_utf8_lossy(&self.written).into_owned());
            Ok(())
        }
    }

    fn put(key: &str, revision: u64) -> WatchMessage {
        let event = WatchEvent { kind: EventKind::Put, key: key.into(), value: b"v".to_vec(), revision, state: None };
        WatchMessage::Events { revision, events: vec![event], cursor: None }
    }

    #[test]
    fn each_watch_message_is_flushed_as_soon_as_it_is_printed() {
        let mut printer = Printer::new(io::BufWriter::new(Recorder::default()), Output::Json);
        printer.watch(&put("a", 4)).unwrap();
        printer.watch(&put("b", 5)).unwrap();
        let recorder = printer.out.into_inner().map_err(|_| "flush failed").unwrap();
        let first = "{\"type\":\"put\",\"key\":\"a\",\"value\":\"v\",\"revision\":4}\n";
        let second = "{\"type\":\"put\",\"key\":\"b\",\"value\":\"v\",\"revision\":5}\n";
        assert_eq!(recorder.flushed, [first.to_owned(), format!("{first}{second}")]);
    }

    #[test]
    fn table_watch_output_is_flushed_too() {
        let mut printer = Printer::new(Recorder::default(), Output::Table);
        printer.watch(&put("a", 4)).unwrap();
        assert_eq!(printer.out.flushed, ["PUT a = v (rev 4)\n"]);
    }
}
