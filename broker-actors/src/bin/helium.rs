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
//!
//! helium ledger check     --nats nats://… --creds operator.creds [--jobs] [--json]
//! helium ledger balance   alice --nats nats://… --creds operator.creds [--json]
//! helium ledger statement alice --nats nats://… --creds operator.creds [--json]
//!
//! helium workers --nats nats://… --creds operator.creds [--json]
//! helium jobs    --nats nats://… --creds operator.creds [--principal alice] [--json]
//! ```
//!
//! `helium ledger` reads the journal read-only and replays it through the broker's own `Book`
//! (`helium_broker_actors::ledger::{reader, audit}`); `check` exits 0 when every rule holds, 1
//! with each violation printed, 2 when the journal cannot be read. `helium workers` asks the
//! broker (`worker.list`); `helium jobs` reads the job bucket (`helium_broker_actors::ops`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use helium_broker_actors::keydir::{now, push_account, KeyDir, Lifetime};
use helium_broker_actors::ledger::{
    audit::{account_of, credits, utc, Audit},
    reader,
};
use helium_broker_actors::ops;
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
    /// The books, read from the ledger journal (read-only) and replayed through the broker's
    /// own rules.
    #[command(subcommand)]
    Ledger(Ledger),
    /// The grid's workers as the broker lists them: id, owner, device, memory, price per hour,
    /// throughput, the job it is busy with, whether it is alive.
    Workers {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Every principal's jobs from the job bucket, oldest first: id, principal, name, state,
    /// reason, worker, price, paid, epochs done.
    Jobs {
        #[command(flatten)]
        conn: Conn,
        /// Only this principal's jobs.
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Ledger {
    /// Check the ledger's invariants over the whole journal: every entry present and applying,
    /// no transfer twice, balances summing to zero, nobody but the mint negative, every credit
    /// a grant or out of a held escrow. Exit 0: all hold; 1: violations (each printed); 2: the
    /// journal could not be read.
    Check {
        #[command(flatten)]
        conn: Conn,
        /// Also check that no finished job (in the job bucket) still holds credits in escrow.
        #[arg(long)]
        jobs: bool,
        #[arg(long)]
        json: bool,
    },
    /// A principal's balance in credits (micro-credits with --json). `mint` and `escrow:<job>`
    /// name those accounts.
    Balance {
        principal: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// A principal's postings, oldest first: time, transfer, job, counterparty, kind, amount,
    /// balance after.
    Statement {
        principal: String,
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
}

/// Where the journal is, and whose credential reads it (an operator's, or the broker's).
#[derive(Args)]
struct Conn {
    #[arg(long, env = "HELIUM_NATS_URL")]
    nats: String,
    #[arg(long, env = "HELIUM_CREDS")]
    creds: PathBuf,
    /// A CA certificate to trust for a `tls://` server.
    #[arg(long, env = "HELIUM_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// What `read` gave, or exit 2 with why it could not be read.
fn or_exit<T>(what: &str, read: Result<T, reader::ReadError>) -> T {
    read.unwrap_or_else(|e| {
        eprintln!("helium {what}: {e}");
        std::process::exit(2);
    })
}

/// `helium workers`: exit 0 with the table, 2 when the broker cannot be asked.
async fn workers(conn: Conn, json: bool) -> Result<()> {
    let read = async {
        let principal = ops::principal_of(&conn.creds)?;
        let client = reader::connect(&conn.nats, &conn.creds, conn.tls_ca.as_deref()).await?;
        ops::workers(&client, &principal).await
    };
    let workers = or_exit("workers", read.await);
    if json {
        let rows: Vec<ops::WorkerRow> = workers.iter().map(Into::into).collect();
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!("{}", ops::workers_table(&workers));
    }
    Ok(())
}

/// `helium jobs`: exit 0 with the table, 2 when the job bucket cannot be read.
async fn jobs(conn: Conn, principal: Option<String>, json: bool) -> Result<()> {
    let read = async {
        let client = reader::connect(&conn.nats, &conn.creds, conn.tls_ca.as_deref()).await?;
        reader::jobs(&async_nats::jetstream::new(client), principal.as_deref()).await
    };
    let jobs = or_exit("jobs", read.await);
    if json {
        println!("{}", serde_json::to_string(&jobs)?);
    } else {
        println!("{}", ops::jobs_table(&jobs));
    }
    Ok(())
}

/// The journal replayed, and the connection it came over; exits 2 when it cannot be read.
async fn replay(conn: &Conn) -> (Audit, async_nats::jetstream::Context) {
    let read = async {
        let client = reader::connect(&conn.nats, &conn.creds, conn.tls_ca.as_deref()).await?;
        let js = async_nats::jetstream::new(client);
        let entries = reader::read_journal(&js).await?;
        Ok::<_, reader::ReadError>((Audit::replay(entries), js))
    };
    match read.await {
        Ok(done) => done,
        Err(e) => {
            eprintln!("helium ledger: {e}");
            std::process::exit(2);
        }
    }
}

async fn ledger(command: Ledger) -> Result<()> {
    match command {
        Ledger::Check { conn, jobs, json } => {
            let (mut audit, js) = replay(&conn).await;
            if jobs {
                let states = match reader::job_states(&js, audit.open_holds().into_keys()).await {
                    Ok(states) => states,
                    Err(e) => {
                        eprintln!("helium ledger: {e}");
                        std::process::exit(2);
                    }
                };
                audit.check_jobs(|job| states.get(job).copied().flatten());
            }
            let s = audit.summary();
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("entries   {}", s.entries);
                println!("transfers {}", s.transfers);
                println!("accounts  {}", s.accounts);
                println!("sum       {} (minted {} credits)", s.sum, credits(s.minted));
                println!("holds     {} open, {} credits", s.holds_open, credits(s.held));
                for v in &s.violations {
                    println!("VIOLATION {v}");
                }
                println!("{}", if s.ok { "ok" } else { "the books do NOT balance" });
            }
            if !s.ok {
                std::process::exit(1);
            }
        }
        Ledger::Balance { principal, conn, json } => {
            let (audit, _) = replay(&conn).await;
            let account = account_of(&principal);
            let micro = audit.book.balance(&account);
            if json {
                println!("{}", serde_json::json!({ "account": account, "micro": micro }));
            } else {
                println!("{account} {}", credits(micro));
            }
        }
        Ledger::Statement { principal, conn, json } => {
            let (audit, _) = replay(&conn).await;
            let lines = audit.statement(&account_of(&principal));
            if json {
                println!("{}", serde_json::to_string(&lines)?);
            } else {
                for l in &lines {
                    let amount = if l.micro >= 0 { format!("+{}", credits(l.micro)) } else { credits(l.micro) };
                    println!(
                        "{}  {:<28} {:<24} {:<28} {:<6} {:>16} {:>16}",
                        utc(l.time_ms),
                        l.transfer,
                        l.job.as_deref().unwrap_or("-"),
                        l.counterparty,
                        l.kind.name(),
                        amount,
                        credits(l.balance)
                    );
                }
            }
        }
    }
    Ok(())
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
        Command::Ledger(command) => ledger(command).await?,
        Command::Workers { conn, json } => workers(conn, json).await?,
        Command::Jobs { conn, principal, json } => jobs(conn, principal, json).await?,
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
