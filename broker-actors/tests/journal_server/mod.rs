//! A nats-server configured like the local grid's (`deploy/grid.sh`): JetStream on file storage
//! with `sync_interval: always`, so a publish is acknowledged only after nats-server fsynced it.
//! The shared fixture (`helium_test_support::NatsServer`) starts the server without a config
//! file; the ledger's tests and benchmark need the fsync, and the benchmark needs the server's
//! pid to read its CPU time.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use helium_test_support::{free_port, nats_server_binary};

pub struct SyncedNats {
    child: Child,
    pub url: String,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl SyncedNats {
    /// Starts the server (`fsync`: `sync_interval: always`; otherwise nats-server's default of
    /// syncing every two minutes) and returns once it logs that it is ready.
    pub fn start(fsync: bool) -> Result<SyncedNats> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("nats.conf");
        let sync = if fsync { ", sync_interval: always" } else { "" };
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\"{sync} }}\n",
                dir.path().join("jetstream").display()
            ),
        )?;
        let child = spawn(&conf)?;
        Ok(SyncedNats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            conf,
            _dir: dir,
        })
    }

    /// Kills the server and starts it again on the same port and store (data survives).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = spawn(&self.conf)?;
        Ok(())
    }

    /// Kills the server, keeping its store for [`SyncedNats::restart`].
    pub fn stop(&mut self) {
        self.kill();
    }

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

fn spawn(conf: &std::path::Path) -> Result<Child> {
    let binary = nats_server_binary();
    let mut child = Command::new(&binary)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
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
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        bail!("nats-server ({}) did not become ready", conf.display());
    }
    Ok(child)
}

impl Drop for SyncedNats {
    fn drop(&mut self) {
        self.kill();
    }
}
