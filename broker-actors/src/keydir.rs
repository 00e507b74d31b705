//! The operator's key directory: the grid's signing keys, what was issued from them, and the
//! nats-server configuration that trusts them. `helium creds` is its command line.
//!
//! Layout (seeds are `0600`; nothing else in it is secret):
//! - `operator.nk`, `account.nk`, `system.nk`: the seeds of [`Authority`].
//! - `nats-auth.conf`: `include` it from nats-server's config (operator mode, the `full`
//!   resolver in `resolver_dir`, the accounts preloaded). Rewritten at every revocation, so a
//!   restarted server starts from the current revocation list.
//! - `system.creds`: a system-account user, to push account updates to a running server.
//! - `issued.jsonl`: one line per credential issued (role, name, owner, public key, time,
//!   expiry), so a credential can be revoked by name; and the history that keeps a worker id
//!   to one owner for good ([`KeyDir::issue`]).
//! - `revocations.json`: user public key → revoked-before time.
//! - `resolver_dir`: the path the server's resolver keeps account JWTs in.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use helium_protocol::auth::{
    authority::{Authority, Issued, CLAIMS_UPDATE},
    Role,
};
use serde::{Deserialize, Serialize};

pub struct KeyDir {
    dir: PathBuf,
    pub authority: Authority,
}

/// One line of `issued.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedRecord {
    pub role: String,
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    pub public_key: String,
    pub issued_at: i64,
    /// Unix seconds from which the credential is refused; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Why `helium creds issue` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueRefused {
    /// A worker id belongs to the first owner it was issued to, for good (revoking its
    /// credentials does not free it): two owners' workers under one id would be one worker to
    /// the grid, each able to publish as the other.
    #[error("worker {worker} was issued to {owner}; it cannot be issued to {claimed} (choose another worker id)")]
    WorkerOwned { worker: String, owner: String, claimed: String },
}

/// A credential lifetime as `helium creds issue --expires` takes it: `<n>d`, `<n>h`, `<n>m`,
/// `<n>s`, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    Never,
    For(std::time::Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a lifetime: <n>d, <n>h, <n>m, <n>s (n > 0) or never")]
pub struct BadLifetime(pub String);

impl std::str::FromStr for Lifetime {
    type Err = BadLifetime;

    fn from_str(text: &str) -> Result<Lifetime, BadLifetime> {
        let bad = || BadLifetime(text.to_string());
        if text == "never" {
            return Ok(Lifetime::Never);
        }
        let unit = match text.chars().last().ok_or_else(bad)? {
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        let secs = n.checked_mul(unit).filter(|&s| s > 0 && s <= i64::MAX as u64 / 2).ok_or_else(bad)?;
        Ok(Lifetime::For(std::time::Duration::from_secs(secs)))
    }
}

impl Lifetime {
    /// The role's default ([`Role::default_lifetime`]).
    pub fn default_for(role: &Role) -> Lifetime {
        role.default_lifetime().map_or(Lifetime::Never, Lifetime::For)
    }

    fn expires_at(self, now: i64) -> Option<i64> {
        match self {
            Lifetime::Never => None,
            Lifetime::For(d) => Some(now.saturating_add(d.as_secs() as i64)),
        }
    }
}

const SEEDS: [&str; 3] = ["operator.nk", "account.nk", "system.nk"];

impl KeyDir {
    /// Makes fresh keys in `dir` (refusing to replace existing ones) and the server config.
    pub fn init(dir: &Path, resolver_dir: &Path) -> Result<KeyDir> {
        if dir.join(SEEDS[0]).exists() {
            bail!("{} already holds a grid's keys; use them, or remove the directory", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let authority = Authority::generate();
        let (o, a, s) = authority.seeds()?;
        for (file, seed) in SEEDS.iter().zip([o, a, s]) {
            write_secret(&dir.join(file), &seed)?;
        }
        std::fs::write(dir.join("resolver_dir"), resolver_dir.display().to_string())?;
        let keys = KeyDir { dir: dir.to_path_buf(), authority };
        write_secret(&dir.join("system.creds"), &keys.authority.system_user(now())?.creds)?;
        keys.write_server_config()?;
        Ok(keys)
    }

    pub fn open(dir: &Path) -> Result<KeyDir> {
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .with_context(|| format!("read {} (make keys with `helium creds init`)", dir.join(file).display()))
        };
        let mut authority = Authority::from_seeds(&read(SEEDS[0])?, &read(SEEDS[1])?, &read(SEEDS[2])?)?;
        if let Ok(text) = std::fs::read_to_string(dir.join("revocations.json")) {
            authority.revocations = serde_json::from_str(&text).context("revocations.json")?;
        }
        Ok(KeyDir { dir: dir.to_path_buf(), authority })
    }

    pub fn server_config_path(&self) -> PathBuf {
        self.dir.join("nats-auth.conf")
    }

    pub fn system_creds_path(&self) -> PathBuf {
        self.dir.join("system.creds")
    }

    /// Issues a credential valid for `lifetime` and records it (not its seed) in
    /// `issued.jsonl`. A worker id ever issued to one owner is refused to any other
    /// ([`IssueRefused::WorkerOwned`]); the same owner may have it again (rotation).
    pub fn issue(&self, role: &Role, name: &str, lifetime: Lifetime) -> Result<Issued> {
        if let Role::Worker { owner } = role {
            let taken = self
                .issued()?
                .into_iter()
                .find(|r| r.role == role.name() && r.name == name && r.owner.as_deref() != Some(owner.as_str()));
            if let Some(first) = taken {
                return Err(IssueRefused::WorkerOwned {
                    worker: name.to_string(),
                    owner: first.owner.unwrap_or_default(),
                    claimed: owner.clone(),
                }
                .into());
            }
        }
        let issued_at = now();
        let expires_at = lifetime.expires_at(issued_at);
        let issued = self.authority.issue_until(role, name, issued_at, expires_at)?;
        let record = IssuedRecord {
            role: role.name().to_string(),
            name: name.to_string(),
            owner: match role {
                Role::Worker { owner } => Some(owner.clone()),
                _ => None,
            },
            public_key: issued.public_key.clone(),
            issued_at,
            expires_at,
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("issued.jsonl"))?;
        writeln!(log, "{}", serde_json::to_string(&record)?)?;
        Ok(issued)
    }

    pub fn issued(&self) -> Result<Vec<IssuedRecord>> {
        let text = match std::fs::read_to_string(self.dir.join("issued.jsonl")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).context("issued.jsonl"))
            .collect()
    }

    /// Revokes every credential issued for `name` (in `role`, if given); returns them. The
    /// account JWT to push to a running server is [`KeyDir::account_jwt`].
    pub fn revoke(&mut self, name: &str, role: Option<&str>) -> Result<Vec<IssuedRecord>> {
        let at = now();
        let revoked: Vec<IssuedRecord> = self
            .issued()?
            .into_iter()
            .filter(|r| r.name == name && role.is_none_or(|role| r.role == role))
            .collect();
        if revoked.is_empty() {
            bail!("no credential was issued for {name} from {}", self.dir.display());
        }
        for r in &revoked {
            self.authority.revoke(&r.public_key, at.max(r.issued_at));
        }
        let text = serde_json::to_string_pretty(&self.authority.revocations)?;
        std::fs::write(self.dir.join("revocations.json"), text)?;
        self.write_server_config()?;
        Ok(revoked)
    }

    pub fn account_jwt(&self) -> Result<String> {
        Ok(self.authority.account_jwt(now())?)
    }

    fn write_server_config(&self) -> Result<()> {
        let resolver_dir = std::fs::read_to_string(self.dir.join("resolver_dir")).context("resolver_dir")?;
        let text = self.authority.server_config(resolver_dir.trim(), now())?;
        std::fs::write(self.server_config_path(), text)?;
        Ok(())
    }
}

/// Sends `account_jwt` to the server at `url` as the system user: the server applies it (its
/// revocations included) without a restart. Returns the server's answer.
pub async fn push_account(url: &str, system_creds: &Path, tls_ca: Option<&Path>, account_jwt: &str) -> Result<String> {
    let mut options = async_nats::ConnectOptions::with_credentials_file(system_creds)
        .await
        .with_context(|| format!("read {}", system_creds.display()))?;
    if let Some(ca) = tls_ca {
        options = options.add_root_certificates(ca.to_path_buf()).require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = helium_protocol::servers::server_list(url)?;
    let client = options
        .connect(servers)
        .await
        .with_context(|| format!("connect to {url} as the system user"))?;
    let reply = client
        .request(CLAIMS_UPDATE, account_jwt.to_string().into())
        .await
        .with_context(|| format!("push the account to {url}"))?;
    let answer: serde_json::Value = serde_json::from_slice(&reply.payload).context("the server's answer")?;
    if let Some(error) = answer.get("error") {
        bail!("the server refused the account update: {error}");
    }
    Ok(answer.get("data").map_or_else(|| answer.to_string(), |d| d.to_string()))
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
