//! `helium`: the operator's command line.
//!
//! ```text
//! helium creds init   --keys DIR [--resolver-dir DIR]     # the grid's keys + nats-server config
//! helium creds issue  researcher alice --keys DIR > alice.creds
//! helium creds issue  worker w1 --owner gpu-owner-1 --keys DIR [--expires 90d|never] > w1.creds
//! helium creds revoke alice --keys DIR --nats nats://…   # refused from now on, at once
//! helium creds revoke alice --keys DIR --offline         # only when the server next restarts
//! helium creds list   --keys DIR
//! helium creds resolver --dir DIR                      # a cluster node's own resolver line
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use helium_broker_actors::keydir::{now, push_account, KeyDir, Lifetime};
use helium_protocol::auth::Role;

#[derive(Parser)]
#[command(name = "helium", version, about = "Helium operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// NATS credentials: one per researcher, operator, broker and worker.
    #[command(subcommand)]
    Creds(Creds),
}

#[derive(Subcommand)]
enum Creds {
    /// Make the grid's keys and the nats-server config that trusts them (`nats-auth.conf`).
    Init {
        #[arg(long, env = "HELIUM_KEYS")]
        keys: PathBuf,
        /// Where nats-server keeps account JWTs (default: <keys>/jwt).
        #[arg(long)]
        resolver_dir: Option<PathBuf>,
    },
    /// Print a new `.creds` file for a principal: broker, operator, researcher, or worker
    /// (with --owner, the principal its earnings go to). A worker id belongs to the first owner
    /// it was issued to, for good.
    Issue {
        role: String,
        name: String,
        #[arg(long)]
        owner: Option<String>,
        /// How long it works: `<n>d`, `<n>h`, `<n>m`, `<n>s` or `never`. Default: researcher
        /// 90d, worker 90d, operator 30d, broker never.
        #[arg(long)]
        expires: Option<Lifetime>,
        #[arg(long, env = "HELIUM_KEYS")]
        keys: PathBuf,
    },
    /// Revoke every credential issued for NAME. With --nats, the running server refuses them at
    /// once (and drops their connections); with --offline, only the server config is rewritten
    /// and a running server keeps accepting them until it restarts. One of the two is required.
    #[command(group = clap::ArgGroup::new("apply").required(true).args(["nats", "offline"]))]
    Revoke {
        name: String,
        /// Only the credentials of this role.
        #[arg(long)]
        role: Option<String>,
        #[arg(long, env = "HELIUM_KEYS")]
        keys: PathBuf,
        /// The running server to apply the revocation to, at once (a cluster's nodes
        /// separated by commas: one of them takes it, the others sync from it).
        #[arg(long, env = "HELIUM_NATS_URL")]
        nats: Option<String>,
        /// Do not contact a server: rewrite `nats-auth.conf` only (no server running, or one
        /// to restart). A running server goes on accepting the credential until it restarts.
        #[arg(long)]
        offline: bool,
        /// A CA certificate to trust for a `tls://` server.
        #[arg(long, env = "HELIUM_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
    /// The credentials issued, one per line.
    List {
        #[arg(long, env = "HELIUM_KEYS")]
        keys: PathBuf,
    },
    /// Print the `resolver` line of `nats-auth.conf` for another JWT directory: each node of a
    /// cluster writes it after including `nats-auth.conf`, as a full resolver owns its
    /// directory (`deploy/nats-cluster.sh`).
    Resolver {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Creds(Creds::Init { keys, resolver_dir }) => {
            let resolver = resolver_dir.unwrap_or_else(|| keys.join("jwt"));
            let dir = KeyDir::init(&keys, &resolver)?;
            println!("{}", dir.server_config_path().display());
        }
        Command::Creds(Creds::Issue { role, name, owner, expires, keys }) => {
            let role = Role::parse(&role, owner.as_deref()).map_err(anyhow::Error::msg)?;
            let lifetime = expires.unwrap_or_else(|| Lifetime::default_for(&role));
            print!("{}", KeyDir::open(&keys)?.issue(&role, &name, lifetime)?.creds);
        }
        Command::Creds(Creds::Revoke { name, role, keys, nats, offline: _, tls_ca }) => {
            let mut dir = KeyDir::open(&keys)?;
            let revoked = dir.revoke(&name, role.as_deref())?;
            for r in &revoked {
                eprintln!("revoked {} {} ({})", r.role, r.name, r.public_key);
            }
            let config = dir.server_config_path();
            match nats {
                Some(url) => {
                    let answer = push_account(&url, &dir.system_creds_path(), tls_ca.as_deref(), &dir.account_jwt()?)
                        .await
                        .with_context(|| {
                            format!(
                                "NOT APPLIED: {} is rewritten, but {url} still accepts the credential; run again with \
                                 --nats once the server is reachable, or restart it",
                                config.display()
                            )
                        })?;
                    eprintln!("{url}: {answer}");
                }
                None => eprintln!(
                    "WARNING: offline: only {} is rewritten. A running nats-server keeps accepting the revoked \
                     credential, and its open connections, until it is restarted with that config (or until \
                     `helium creds revoke {name} --nats <url>` pushes the account to it).",
                    config.display()
                ),
            }
        }
        Command::Creds(Creds::Resolver { dir }) => {
            let dir = std::path::absolute(&dir).with_context(|| format!("{}", dir.display()))?;
            println!("{}", helium_protocol::auth::authority::resolver_config(&dir.to_string_lossy()));
        }
        Command::Creds(Creds::List { keys }) => {
            let dir = KeyDir::open(&keys)?;
            let now = now();
            for r in dir.issued()? {
                let revoked = dir.authority.revocations.get(&r.public_key).is_some_and(|&at| r.issued_at <= at);
                let owner = r.owner.map(|o| format!(" owner={o}")).unwrap_or_default();
                let expires = r.expires_at.map(|at| format!(" expires_at={at}")).unwrap_or_default();
                let state = match (revoked, r.expires_at.is_some_and(|at| at <= now)) {
                    (true, _) => " revoked",
                    (false, true) => " expired",
                    (false, false) => "",
                };
                println!("{} {}{owner} {} issued_at={}{expires}{state}", r.role, r.name, r.public_key, r.issued_at);
            }
        }
    }
    Ok(())
}
