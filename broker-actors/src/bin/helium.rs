//! `helium`: the operator's command line.
//!
//! ```text
//! helium creds init   --keys DIR [--resolver-dir DIR]     # the grid's keys + nats-server config
//! helium creds issue  researcher alice --keys DIR > alice.creds
//! helium creds issue  worker w1 --owner gpu-owner-1 --keys DIR > w1.creds
//! helium creds revoke alice --keys DIR --nats nats://…   # refused from now on, at once
//! helium creds list   --keys DIR
//! ```

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use helium_broker_actors::keydir::{push_account, KeyDir};
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
    /// (with --owner, the principal its earnings go to).
    Issue {
        role: String,
        name: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, env = "HELIUM_KEYS")]
        keys: PathBuf,
    },
    /// Revoke every credential issued for NAME; with --nats, the running server refuses them
    /// at once (and drops their connections).
    Revoke {
        name: String,
        /// Only the credentials of this role.
        #[arg(long)]
        role: Option<String>,
        #[arg(long, env = "HELIUM_KEYS")]
        keys: PathBuf,
        #[arg(long, env = "HELIUM_NATS_URL")]
        nats: Option<String>,
        /// A CA certificate to trust for a `tls://` server.
        #[arg(long, env = "HELIUM_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
    /// The credentials issued, one per line.
    List {
        #[arg(long, env = "HELIUM_KEYS")]
        keys: PathBuf,
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
        Command::Creds(Creds::Issue { role, name, owner, keys }) => {
            let role = Role::parse(&role, owner.as_deref()).map_err(anyhow::Error::msg)?;
            print!("{}", KeyDir::open(&keys)?.issue(&role, &name)?.creds);
        }
        Command::Creds(Creds::Revoke { name, role, keys, nats, tls_ca }) => {
            let mut dir = KeyDir::open(&keys)?;
            let revoked = dir.revoke(&name, role.as_deref())?;
            for r in &revoked {
                eprintln!("revoked {} {} ({})", r.role, r.name, r.public_key);
            }
            match nats {
                Some(url) => {
                    let answer = push_account(&url, &dir.system_creds_path(), tls_ca.as_deref(), &dir.account_jwt()?).await?;
                    eprintln!("{url}: {answer}");
                }
                None => eprintln!("not pushed: pass --nats <url> (or restart nats-server) for it to take effect"),
            }
        }
        Command::Creds(Creds::List { keys }) => {
            let dir = KeyDir::open(&keys)?;
            for r in dir.issued()? {
                let revoked = dir.authority.revocations.get(&r.public_key).is_some_and(|&at| r.issued_at <= at);
                let owner = r.owner.map(|o| format!(" owner={o}")).unwrap_or_default();
                let state = if revoked { " revoked" } else { "" };
                println!("{} {}{owner} {} issued_at={}{state}", r.role, r.name, r.public_key, r.issued_at);
            }
        }
    }
    Ok(())
}
