//! Runs real `ledged` processes for integration tests: each in its own temp data dir on a free
//! loopback port, killable with SIGKILL and restartable on the same data dir.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ledge_client::{Client, ReadOptions, WatchMessage, WatchStream};

/// Path of a binary of this workspace, building it first when it is missing (a `-p` test run
/// builds only the binaries of its own package).
pub fn binary(name: &str) -> PathBuf {
    let ledged = PathBuf::from(env!("CARGO_BIN_EXE_ledged"));
    let path = ledged.with_file_name(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // `ledge` lives in the client package; `ledged` and the rest in this one.
        let package = if name == "ledge" { "ledge-client" } else { env!("CARGO_PKG_NAME") };
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", name]);
        if ledged.parent().and_then(Path::file_name).is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The status of the node at `addr` over the raw protocol, if it answers within 2 s.
pub async fn raw_status_at(addr: &str) -> Option<ledge_proto::v1::StatusResponse> {
    let mut admin = ledge_proto::v1::admin_client::AdminClient::connect(format!("http://{addr}")).await.ok()?;
    let mut req = tonic::Request::new(ledge_proto::v1::StatusRequest {});
    req.set_timeout(Duration::from_secs(2));
    admin.status(req).await.ok().map(|r| r.into_inner())
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM` in `/proc/PID/status`),
/// in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// One `ledged` process and its data dir.
pub struct Node {
    pub dir: PathBuf,
    pub addr: String,
    pub args: Vec<String>,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a one-node region in a fresh temp dir.
    pub fn start_single() -> Node {
        Node::start_single_with(&[])
    }

    /// Starts a one-node region in a fresh temp dir, with `extra` flags.
    pub fn start_single_with(extra: &[&str]) -> Node {
        let temp = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut node = Node::new(temp.path().join("data"), addr, &extra);
        node._temp = Some(temp);
        node.spawn();
        node
    }

    /// A node (not started) with its data in `dir`, listening on `addr`, with `extra` flags.
    pub fn new(dir: PathBuf, addr: String, extra: &[String]) -> Node {
        let mut args = vec![
            "--region".to_string(),
            "test".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            addr.clone(),
        ];
        args.extend_from_slice(extra);
        Node { dir, addr, args, child: None, _temp: None }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args([format!("-{sig}"), child.id().to_string()]).status();
        }
    }

    /// Starts (or restarts) the process with the node's arguments.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log_path = self.dir.with_file_name(format!("ledged-{}.log", self.addr.replace(':', "_")));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("open node log");
        let child = Command::new(binary("ledged"))
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ledged");
        self.child = Some(child);
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 ledged");
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's status over the raw protocol (fields the client library does not surface).
    pub async fn raw_status(&self) -> Option<ledge_proto::v1::StatusResponse> {
        raw_status_at(&self.addr).await
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        memory_kib(self.pid()?)
    }

    /// A client connected to this node.
    pub async fn client(&self) -> Client {
        Client::builder().endpoint(self.addr.clone()).timeout(Duration::from_secs(10)).connect().await.expect("client")
    }

    /// Waits until the node answers status with a known leader.
    pub async fn wait_ready(&self) -> Client {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = client.status().await {
                if status.leader_id.is_some() {
                    return client;
                }
            }
            assert!(Instant::now() < deadline, "node {} not ready in 30 s; log:\n{}", self.addr, self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        let log_path = self.dir.with_file_name(format!("ledged-{}.log", self.addr.replace(':', "_")));
        std::fs::read_to_string(log_path).unwrap_or_default()
    }

    /// Runs the `ledge` CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary("ledge")).arg("--endpoints").arg(&self.addr).args(args).output().expect("run ledge")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A region of `ledged` processes formed from identical flags.
pub struct Region {
    pub nodes: Vec<Node>,
    pub seeds: String,
    temp: tempfile::TempDir,
}

impl Region {
    /// A client of each node, once each has learnt of keyspace `ks` (created through Raft, so a
    /// node knows of it once it applied the creation).
    pub async fn clients_knowing(&self, ks: &str) -> Vec<Client> {
        let mut clients = Vec::new();
        for node in &self.nodes {
            let client = node.client().await;
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Err(e) = client.get(ks, "probe", ReadOptions::one()).await {
                assert!(Instant::now() < deadline, "{} never learnt of the keyspace: {e}", node.addr);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            clients.push(client);
        }
        clients
    }

    /// Starts `n` nodes with `--join <all> --bootstrap-expect n` plus `extra` flags.
    pub fn start(n: usize, extra: &[&str]) -> Region {
        let temp = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let seeds = addrs.join(",");
        let mut flags: Vec<String> = vec!["--join".into(), seeds.clone(), "--bootstrap-expect".into(), n.to_string()];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut node = Node::new(temp.path().join(format!("n{i}")), addr.clone(), &flags);
                node.spawn();
                node
            })
            .collect();
        Region { nodes, seeds, temp }
    }

    /// Starts one more node that joins through the seeds (no expected size: join only).
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let i = self.nodes.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut flags: Vec<String> = vec!["--join".into(), self.seeds.clone()];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node::new(self.temp.path().join(format!("n{i}")), addr, &flags);
        node.spawn();
        self.nodes.push(node);
        i
    }

    /// Endpoints of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A client that knows every node.
    pub async fn client(&self) -> Client {
        Client::builder().endpoints(self.endpoints()).timeout(Duration::from_secs(10)).connect().await.expect("client")
    }

    /// Index of the node every running node agrees is the leader, once they agree.
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = self.agreed_leader().await {
                return i;
            }
            assert!(Instant::now() < deadline, "no agreed leader in 30 s; logs:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let status = node.raw_status().await?;
            if status.leader_id == 0 || leader.is_some_and(|l| l != status.leader_id) {
                return None;
            }
            leader = Some(status.leader_id);
        }
        let leader = leader?;
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.is_running()) {
            if node.raw_status().await?.node_id == leader {
                return Some(i);
            }
        }
        None
    }

    /// Waits until the leader lists `voters` voters and `learners` learners.
    pub async fn wait_members(&self, voters: usize, learners: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(i) = self.agreed_leader().await {
                if let Some(status) = self.nodes[i].raw_status().await {
                    let v = status.members.iter().filter(|m| m.role != "learner").count();
                    let l = status.members.iter().filter(|m| m.role == "learner").count();
                    if (v, l) == (voters, learners) {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "members never became {voters} voters + {learners} learners");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("=== {}\n{}", n.addr, n.log())).collect::<Vec<_>>().join("\n")
    }
}

/// Acknowledged writes: key → (value, revision).
pub type Acked = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, (String, u64)>>>;

/// Runs `n` writers putting fresh keys under `prefix` until `stop` is set; records every
/// acknowledged write, counts failed ones, and returns the writers' handles.
pub fn spawn_writers(
    client: &Client,
    n: usize,
    prefix: &str,
    acked: &Acked,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..n)
        .map(|w| {
            let (client, acked, stop, prefix) = (client.clone(), acked.clone(), stop.clone(), prefix.to_string());
            tokio::spawn(async move {
                let mut failures = 0;
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (key, value) = (format!("{prefix}/w{w}/{i}"), format!("v{w}-{i}"));
                    i += 1;
                    match client.put("default", key.clone(), value.clone()).await {
                        Ok(put) => {
                            acked.lock().unwrap().insert(key, (value, put.revision));
                        }
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                failures
            })
        })
        .collect()
}

/// Checks that every acknowledged write is readable, linearizably, with its revision.
pub async fn verify_acked(client: &Client, acked: &Acked) -> usize {
    let acked = acked.lock().unwrap().clone();
    for (key, (value, revision)) in &acked {
        let got = client.get("default", key.clone(), ledge_client::ReadOptions::linearizable()).await;
        let kv = got.unwrap_or_else(|e| panic!("read {key}: {e}")).kv;
        let kv = kv.unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(kv.value, value.as_bytes(), "{key}");
        assert_eq!(kv.revision, *revision, "{key}");
    }
    acked.len()
}

/// The next message of a watch, within 20 s.
pub async fn next_message(stream: &mut WatchStream) -> WatchMessage {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("watch message within 20 s")
        .expect("stream open")
        .expect("watch message")
}
