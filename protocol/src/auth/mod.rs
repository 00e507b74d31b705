//! Identity: who a connection is, and what nats-server lets it do.
//!
//! Every principal connects with its own NATS credential (a `.creds` file: a user JWT signed by
//! the grid's account key, plus the user's nkey seed). nats-server runs in operator mode and
//! enforces the permissions written into each JWT, so the identity token in a subject
//! (`helium.v1.api.<principal>.…`, `helium.v1.worker.<worker>.…`) is the credential's: a
//! connection cannot publish under another principal's token, nor subscribe to another's inbox,
//! events or dispatch subject. The broker then trusts the token it reads from a subject, and
//! checks only what permissions cannot express (see `docs/ARCHITECTURE.md`, "Trust").
//!
//! - [`Role`] and [`permissions`]: the one place a role's subjects are written down.
//! - [`jwt`]: operator, account and user JWTs (NATS JWT v2, signed with nkeys), and reading a
//!   user JWT back with its signature checked.
//! - [`creds`]: the `.creds` file format that nats-py, async-nats and the nats CLI all read.

pub mod authority;
pub mod creds;
pub mod jwt;

use std::time::Duration;

use crate::{
    limits,
    subjects::{self, api},
};

/// What a credential may do. The role and, for a worker, its owner are written into the JWT's
/// tags (`role:<role>`, `owner:<principal>`), signed by the account key, so the broker can read
/// a worker's owner from its credential rather than from anything the worker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The broker: every subject, JetStream included. Only it writes the ledger journal, the
    /// job bucket and the streams.
    Broker,
    /// A researcher with operator rights: mints credits and reads the grid's streams and
    /// services with the nats CLI.
    Operator,
    /// A researcher: its own API subjects (minting excepted), its own inbox, its own job events.
    Researcher,
    /// A GPU owner's worker: its own worker subjects, its own dispatch subject and inbox.
    Worker { owner: String },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Operator => "operator",
            Role::Researcher => "researcher",
            Role::Worker { .. } => "worker",
        }
    }

    /// How long a credential of this role lives unless its issuer says otherwise (the figures
    /// and their reasons are in [`limits`]); `None`: it does not expire.
    pub fn default_lifetime(&self) -> Option<Duration> {
        match self {
            Role::Broker => None,
            Role::Operator => Some(Duration::from_secs(limits::OPERATOR_CREDENTIAL_SECS)),
            Role::Researcher => Some(Duration::from_secs(limits::RESEARCHER_CREDENTIAL_SECS)),
            Role::Worker { .. } => Some(Duration::from_secs(limits::WORKER_CREDENTIAL_SECS)),
        }
    }

    /// The JWT tags that carry the role (and owner).
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![format!("{ROLE_TAG}{}", self.name())];
        if let Role::Worker { owner } = self {
            tags.push(format!("{OWNER_TAG}{owner}"));
        }
        tags
    }

    /// The role written in `tags`, `None` when they name none or an unknown one.
    pub fn from_tags(tags: &[String]) -> Option<Role> {
        let role = tags.iter().find_map(|t| t.strip_prefix(ROLE_TAG))?;
        let owner = tags.iter().find_map(|t| t.strip_prefix(OWNER_TAG));
        match (role, owner) {
            ("broker", _) => Some(Role::Broker),
            ("operator", _) => Some(Role::Operator),
            ("researcher", _) => Some(Role::Researcher),
            ("worker", Some(owner)) if subjects::valid_id(owner) => Some(Role::Worker { owner: owner.to_string() }),
            _ => None,
        }
    }

    /// `researcher`, `operator`, `broker`, or `worker` with its owner.
    pub fn parse(role: &str, owner: Option<&str>) -> Result<Role, String> {
        match (role, owner) {
            ("broker", None) => Ok(Role::Broker),
            ("operator", None) => Ok(Role::Operator),
            ("researcher", None) => Ok(Role::Researcher),
            ("worker", Some(owner)) if subjects::valid_id(owner) => Ok(Role::Worker { owner: owner.to_string() }),
            ("worker", Some(_)) => Err("a worker's owner must be 1-64 of [A-Za-z0-9_-]".into()),
            ("worker", None) => Err("a worker credential names its owner (--owner <principal>)".into()),
            ("broker" | "operator" | "researcher", Some(_)) => Err(format!("only a worker has an owner, not a {role}")),
            _ => Err(format!("unknown role {role:?}: broker, operator, researcher or worker")),
        }
    }
}

pub const ROLE_TAG: &str = "role:";
pub const OWNER_TAG: &str = "owner:";

/// What a credential may do, as written into its JWT: subjects it may publish to and subscribe
/// to (nats-server refuses everything else), and what one of its connections may spend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub deny_publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests it received (and JetStream flow control) on their reply subjects,
    /// without a publish permission for them: so many answers each, within so long.
    pub responses: Option<Responses>,
    /// No restriction on subjects at all (the broker).
    pub all: bool,
    /// Subscriptions one connection may hold (`None`: no limit of its own).
    pub max_subs: Option<u64>,
    /// Largest message one connection may publish, headers included (`None`: the server's).
    pub max_payload: Option<u64>,
}

/// The JWT's response permission: answers per request received, and for how long after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responses {
    pub max: u32,
    pub ttl: Duration,
}

impl Responses {
    /// What every role that answers gets ([`limits::RESPONSE_TTL_SECS`]).
    pub fn bounded() -> Responses {
        Responses { max: limits::RESPONSE_MAX_MESSAGES as u32, ttl: Duration::from_secs(limits::RESPONSE_TTL_SECS) }
    }
}

/// The inbox prefix a credential's connection must use: replies to its requests arrive under
/// it, and nobody else may subscribe there. Researchers and operators are `_INBOX.p.<name>`,
/// workers `_INBOX.w.<id>` (a worker and a principal may share a name).
pub fn inbox_prefix(role: &Role, name: &str) -> String {
    match role {
        Role::Broker => "_INBOX".to_string(),
        Role::Worker { .. } => format!("_INBOX.w.{name}"),
        Role::Operator | Role::Researcher => format!("_INBOX.p.{name}"),
    }
}

/// Who a `.creds` file is for (read from its own JWT, unverified: nats-server checks it at
/// connect), and the inbox prefix its connection must use.
pub fn identity(creds_text: &str) -> Result<(String, Role, String), String> {
    let token = creds::jwt(creds_text).map_err(|e| e.to_string())?;
    let user = jwt::read_own_user(token).map_err(|e| e.to_string())?;
    let role = user.role.ok_or_else(|| "the credential names no Helium role".to_string())?;
    let inbox = inbox_prefix(&role, &user.name);
    Ok((user.name, role, inbox))
}

/// Whether the broker may answer a request on `subject` at `reply`: only inside the caller's
/// own inbox. nats-server does not tie a reply subject to the requester's permissions, and the
/// broker's credential may publish anywhere, so an answer sent where a request asked would let
/// anyone write, through the broker, to the ledger journal, the job bucket or another's events.
pub fn reply_allowed(subject: &str, reply: &str) -> bool {
    let mut tokens = subject.split('.');
    let (Some("helium"), Some("v1"), Some(role), Some(id)) = (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return false;
    };
    if !subjects::valid_id(id) {
        return false;
    }
    let prefix = match role {
        "api" => inbox_prefix(&Role::Researcher, id),
        "worker" => inbox_prefix(&Role::Worker { owner: String::new() }, id),
        _ => return false,
    };
    reply.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
}

/// What `role` named `name` may do: the project's one permission table.
pub fn permissions(role: &Role, name: &str) -> Permissions {
    let inbox = format!("{}.>", inbox_prefix(role, name));
    match role {
        // Unlimited but for the account's own caps (`limits::ACCOUNT_MAX_SUBS_PER_CONNECTION`).
        Role::Broker => Permissions { all: true, ..Permissions::default() },
        Role::Researcher | Role::Operator => {
            let mut p = Permissions {
                // No JetStream API: a consumer's deliver subject is not bound by permissions,
                // so one a researcher created could deliver into the journal. The broker makes
                // the consumer of a researcher's events (`job.follow`), into its own inbox.
                publish: vec![subjects::api(name, ">")],
                deny_publish: vec![subjects::api(name, api::ACCOUNT_GRANT)],
                subscribe: vec![inbox],
                // Flow control of its followed events.
                responses: Some(Responses::bounded()),
                all: false,
                max_subs: Some(limits::RESEARCHER_MAX_SUBS as u64),
                max_payload: Some(limits::PRINCIPAL_MAX_PAYLOAD_BYTES as u64),
            };
            if *role == Role::Operator {
                p.deny_publish.clear();
                // Read-only operations with the nats CLI: services, streams, consumers, KV.
                p.publish.extend(OPERATOR_READS.iter().map(|s| s.to_string()));
                p.publish.push(format!("$JS.API.CONSUMER.INFO.{}.{}", subjects::streams::RUNS, subjects::streams::RUNS_CONSUMER));
            }
            p
        }
        Role::Worker { .. } => Permissions {
            publish: vec![subjects::worker(name, ">")],
            deny_publish: vec![],
            subscribe: vec![subjects::dispatch(name, ">"), inbox],
            // The broker's invitations, awards and cancels.
            responses: Some(Responses::bounded()),
            all: false,
            max_subs: Some(limits::WORKER_MAX_SUBS as u64),
            max_payload: Some(limits::PRINCIPAL_MAX_PAYLOAD_BYTES as u64),
        },
    }
}

/// What an operator's nats CLI may ask JetStream and the micro services, all of it reads. No
/// consumer creation: a consumer's deliver subject is not bound by permissions, so creating
/// one would let its holder have JetStream write anywhere (read messages with `stream get`).
/// Consumer details only of the broker's run-event consumer (its lag is worth watching): the
/// consumers on `HELIUM_EVENTS` are researchers' `job.follow`s, whose info names their inbox
/// subjects, and `CONSUMER.LIST` would show every consumer's; their names stay listable.
const OPERATOR_READS: [&str; 8] = [
    "$SRV.>",
    "$JS.API.INFO",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.NAMES.*",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_answers_only_into_the_callers_own_inbox() {
        assert!(reply_allowed("helium.v1.api.alice.job.submit", "_INBOX.p.alice.abc.1"));
        assert!(reply_allowed("helium.v1.worker.w1.artifact.read", "_INBOX.w.w1.xyz"));
        for (subject, reply) in [
            ("helium.v1.api.alice.job.submit", "helium.v1.ledger.journal"),
            ("helium.v1.api.alice.job.submit", "$KV.helium_jobs.j1"),
            ("helium.v1.api.alice.job.submit", "_INBOX.p.bob.abc"),
            ("helium.v1.api.alice.job.submit", "_INBOX.p.alicex.abc"),
            ("helium.v1.api.alice.job.submit", "_INBOX.p.alice"),
            ("helium.v1.api.alice.job.submit", "_INBOX.w.alice.abc"),
            ("helium.v1.worker.w1.agent.register", "_INBOX.p.w1.abc"),
            ("helium.v1.dispatch.w1.job.award", "_INBOX.w.w1.abc"),
            ("helium.v1.api.a*b.job.submit", "_INBOX.p.a*b.x"),
        ] {
            assert!(!reply_allowed(subject, reply), "{subject} → {reply}");
        }
    }

    #[test]
    fn roles_round_trip_through_tags() {
        for role in [
            Role::Broker,
            Role::Operator,
            Role::Researcher,
            Role::Worker { owner: "gpu-owner-1".into() },
        ] {
            assert_eq!(Role::from_tags(&role.tags()), Some(role));
        }
        assert_eq!(Role::from_tags(&["role:worker".into()]), None, "a worker has an owner");
        assert_eq!(Role::from_tags(&["role:root".into()]), None);
        assert!(Role::parse("worker", None).is_err());
        assert!(Role::parse("worker", Some("a.b")).is_err());
        assert!(Role::parse("researcher", Some("x")).is_err());
    }

    #[test]
    fn a_researcher_publishes_only_under_its_own_name_and_cannot_mint() {
        let p = permissions(&Role::Researcher, "alice");
        assert_eq!(p.publish[0], "helium.v1.api.alice.>");
        assert_eq!(p.deny_publish, ["helium.v1.api.alice.account.grant"]);
        assert_eq!(p.subscribe, ["_INBOX.p.alice.>"]);
        assert_eq!(p.publish.len(), 1, "no JetStream API for researchers");
        assert!(permissions(&Role::Operator, "ops").deny_publish.is_empty());
        let w = permissions(&Role::Worker { owner: "o".into() }, "w1");
        assert_eq!(w.subscribe, ["helium.v1.dispatch.w1.>", "_INBOX.w.w1.>"]);
    }

    /// Every role but the broker is capped per connection, and answers once, within a bound.
    #[test]
    fn every_principal_is_capped_and_answers_once_within_a_bound() {
        for (role, subs) in [
            (Role::Researcher, limits::RESEARCHER_MAX_SUBS),
            (Role::Operator, limits::RESEARCHER_MAX_SUBS),
            (Role::Worker { owner: "o".into() }, limits::WORKER_MAX_SUBS),
        ] {
            let p = permissions(&role, "x");
            assert_eq!(p.max_subs, Some(subs as u64), "{role:?}");
            assert_eq!(p.max_payload, Some(limits::PRINCIPAL_MAX_PAYLOAD_BYTES as u64), "{role:?}");
            let r = p.responses.expect("answers requests");
            assert_eq!((r.max, r.ttl), (1, Duration::from_secs(limits::RESPONSE_TTL_SECS)), "{role:?}");
            assert!(role.default_lifetime().is_some(), "{role:?} never expires");
        }
        // A chunk at its largest, with its envelope, fits a principal's payload cap.
        assert!(limits::chunk_for_payload(u64::MAX) + limits::CHUNK_HEADROOM_BYTES <= limits::PRINCIPAL_MAX_PAYLOAD_BYTES as u64);
        let broker = permissions(&Role::Broker, "broker");
        assert_eq!((broker.max_subs, broker.max_payload), (None, None));
        assert_eq!(Role::Broker.default_lifetime(), None);
    }

    /// An operator reads the broker's run-event consumer, not researchers' `job.follow`
    /// consumers (their info names the researchers' inbox subjects).
    #[test]
    fn an_operator_reads_no_researchers_consumer_info() {
        let ops = permissions(&Role::Operator, "ops");
        assert!(ops.publish.iter().any(|s| s == "$JS.API.CONSUMER.INFO.HELIUM_RUNS.helium-broker-runs"));
        for s in &ops.publish {
            assert!(!s.starts_with("$JS.API.CONSUMER.LIST"), "{s}");
            assert!(!s.starts_with("$JS.API.CONSUMER.INFO") || !s.contains('*'), "{s}");
        }
    }
}
