//! The grid's signing authority: an operator key, the `HELIUM` account every principal lives in,
//! and the system account nats-server reports and takes account updates on.
//!
//! Issuing a credential is local: a user JWT signed by the account key, which nats-server
//! checks against the account JWT it already has, so a new credential works at once without
//! touching the server. Revoking one changes the account JWT (its revocation list); the operator
//! pushes the re-signed account JWT to the running server (`$SYS.REQ.CLAIMS.UPDATE`, see
//! [`CLAIMS_UPDATE`]), which then refuses and disconnects the revoked user.

use std::collections::BTreeMap;

use nkeys::KeyPair;

use super::{
    creds, jwt,
    jwt::{AccountLimits, JwtError},
    permissions, Permissions, Role,
};

/// Where a system-account user sends an updated account JWT (nats-server's `full` resolver).
pub const CLAIMS_UPDATE: &str = "$SYS.REQ.CLAIMS.UPDATE";
pub const OPERATOR_NAME: &str = "helium";
pub const ACCOUNT_NAME: &str = "HELIUM";
pub const SYSTEM_ACCOUNT_NAME: &str = "SYS";

pub struct Authority {
    operator: KeyPair,
    account: KeyPair,
    system: KeyPair,
    /// User public key → revoked are JWTs issued at or before this time (unix seconds).
    pub revocations: BTreeMap<String, i64>,
}

/// A credential just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub public_key: String,
    pub jwt: String,
    /// The `.creds` file's text (JWT and seed): hand it to its owner only.
    pub creds: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{0} is not a valid {1} seed")]
    Seed(&'static str, String),
    #[error("{0} must be 1-64 of [A-Za-z0-9_-]")]
    Name(String),
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

impl Authority {
    /// Fresh keys.
    pub fn generate() -> Authority {
        Authority {
            operator: KeyPair::new_operator(),
            account: KeyPair::new_account(),
            system: KeyPair::new_account(),
            revocations: BTreeMap::new(),
        }
    }

    /// The keys of [`Authority::seeds`], read back.
    pub fn from_seeds(operator: &str, account: &str, system: &str) -> Result<Authority, AuthorityError> {
        let key = |what: &'static str, seed: &str| {
            KeyPair::from_seed(seed.trim()).map_err(|e| AuthorityError::Seed(what, e.to_string()))
        };
        Ok(Authority {
            operator: key("operator", operator)?,
            account: key("account", account)?,
            system: key("system account", system)?,
            revocations: BTreeMap::new(),
        })
    }

    /// (operator, account, system account) seeds: the secrets to keep.
    pub fn seeds(&self) -> Result<(String, String, String), AuthorityError> {
        let seed = |k: &KeyPair| k.seed().map_err(|e| AuthorityError::Jwt(JwtError::Sign(e.to_string())));
        Ok((seed(&self.operator)?, seed(&self.account)?, seed(&self.system)?))
    }

    /// The account every Helium principal belongs to: what a user JWT's issuer must be.
    pub fn account_public_key(&self) -> String {
        self.account.public_key()
    }

    /// A credential for `role` named `name` (a principal or a worker id) that does not expire.
    pub fn issue(&self, role: &Role, name: &str, now: i64) -> Result<Issued, AuthorityError> {
        self.issue_until(role, name, now, None)
    }

    /// A credential for `role` named `name`, refused from `expires_at` (unix seconds) if given.
    pub fn issue_until(&self, role: &Role, name: &str, now: i64, expires_at: Option<i64>) -> Result<Issued, AuthorityError> {
        self.issue_with(role, name, &permissions(role, name), now, expires_at)
    }

    /// As [`Authority::issue_until`], with other permissions than the role's (tests of what
    /// nats-server makes of a field).
    pub fn issue_with(
        &self,
        role: &Role,
        name: &str,
        permissions: &Permissions,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<Issued, AuthorityError> {
        if !crate::subjects::valid_id(name) {
            return Err(AuthorityError::Name(name.to_string()));
        }
        self.issue_in(&self.account, role, name, permissions, now, expires_at)
    }

    /// A user of the system account, allowed everything there: to push account updates.
    pub fn system_user(&self, now: i64) -> Result<Issued, AuthorityError> {
        let all = Permissions { all: true, ..Permissions::default() };
        self.issue_in(&self.system, &Role::Broker, "system", &all, now, None)
    }

    fn issue_in(
        &self,
        account: &KeyPair,
        role: &Role,
        name: &str,
        p: &Permissions,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<Issued, AuthorityError> {
        let user = KeyPair::new_user();
        let token = jwt::user(account, &user.public_key(), name, role, p, now, expires_at)?;
        let seed = user.seed().map_err(|e| JwtError::Sign(e.to_string()))?;
        Ok(Issued { public_key: user.public_key(), creds: creds::render(&token, &seed), jwt: token })
    }

    /// Refuse, from now on, every JWT of `public_key` issued at or before `at`.
    pub fn revoke(&mut self, public_key: &str, at: i64) {
        self.revocations.insert(public_key.to_string(), at);
    }

    /// The `HELIUM` account's JWT: JetStream, the account's limits
    /// ([`AccountLimits::helium`]) and the current revocations.
    pub fn account_jwt(&self, now: i64) -> Result<String, AuthorityError> {
        let limits = AccountLimits::helium();
        Ok(jwt::account(&self.operator, &self.account.public_key(), ACCOUNT_NAME, &limits, &self.revocations, now)?)
    }

    /// The nats-server configuration that puts the server in operator mode with these keys: to
    /// `include` from the server's config. `resolver_dir` is where the server keeps the account
    /// JWTs it is sent (the `full` resolver); the preload seeds it.
    pub fn server_config(&self, resolver_dir: &str, now: i64) -> Result<String, AuthorityError> {
        let operator = jwt::operator(&self.operator, OPERATOR_NAME, &self.system.public_key(), now)?;
        let limits = AccountLimits::system();
        let system = jwt::account(&self.operator, &self.system.public_key(), SYSTEM_ACCOUNT_NAME, &limits, &BTreeMap::new(), now)?;
        Ok(format!(
            "# Generated by `helium creds`: operator mode, every connection needs a credential.\n\
             operator: \"{operator}\"\n\
             system_account: \"{sys}\"\n\
             {resolver}\n\
             resolver_preload: {{\n  \"{acc}\": \"{acc_jwt}\"\n  \"{sys}\": \"{system}\"\n}}\n",
            sys = self.system.public_key(),
            resolver = resolver_config(resolver_dir),
            acc = self.account.public_key(),
            acc_jwt = self.account_jwt(now)?,
        ))
    }
}

/// The `resolver` line of a nats-server config: a `full` resolver keeping the account JWTs in
/// `dir`. [`Authority::server_config`] writes it with the grid's one directory; each node of a
/// cluster needs a directory of its own (a full resolver owns its directory), so
/// `deploy/nats-cluster.sh` writes this line again after the include, per node
/// (`helium creds resolver --dir DIR`); the later key wins.
pub fn resolver_config(dir: &str) -> String {
    format!(
        "resolver: {{ type: full, dir: \"{dir}\", allow_delete: false, interval: \"2m\", timeout: \"1s\" }}",
        dir = dir.replace('\\', "\\\\").replace('"', "\\\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_round_trip_and_issued_users_verify() {
        let a = Authority::generate();
        let (o, acc, s) = a.seeds().unwrap();
        let b = Authority::from_seeds(&o, &acc, &s).unwrap();
        assert_eq!(a.account_public_key(), b.account_public_key());
        let issued = b.issue(&Role::Researcher, "alice", 1).unwrap();
        let user = jwt::verify_user(&issued.jwt, &a.account_public_key(), 1).unwrap();
        assert_eq!((user.name.as_str(), user.role), ("alice", Some(Role::Researcher)));
        assert_eq!(creds::jwt(&issued.creds).unwrap(), issued.jwt);
        assert!(b.issue(&Role::Researcher, "../x", 1).is_err());
        assert!(Authority::from_seeds("x", &acc, &s).is_err());
        assert!(b.server_config("/tmp/jwt", 1).unwrap().contains(&a.account_public_key()));
    }
}
