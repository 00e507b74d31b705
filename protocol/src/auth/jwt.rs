//! NATS JWTs (v2): an operator, its accounts and their users, each signed with an nkey.
//!
//! The format is nats-server's: `base64url(header).base64url(claims).base64url(signature)`,
//! header `{"typ":"JWT","alg":"ed25519-nkey"}`, the signature an ed25519 signature by the
//! issuer's nkey over the first two parts. The server checks each user JWT against the account
//! JWT that the operator signed, and the account JWT's revocation list, on every connect.

use std::collections::BTreeMap;

use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Permissions, Role};
use crate::limits;

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT (three base64url parts)")]
    Shape,
    #[error("JWT claims are not valid JSON: {0}")]
    Claims(String),
    #[error("JWT is signed by {found}, not by the grid's account {expected}")]
    Issuer { expected: String, found: String },
    #[error("JWT signature does not verify")]
    Signature,
    #[error("JWT is not a user credential")]
    NotUser,
    #[error("JWT expired at {expired_at} (unix seconds)")]
    Expired { expired_at: i64 },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// What the broker reads back from a user JWT whose signature it checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's public nkey (`U…`).
    pub public_key: String,
    /// The principal or worker id the credential was issued for.
    pub name: String,
    pub role: Option<Role>,
    pub issued_at: i64,
    /// When it stops working (unix seconds), if ever: nats-server refuses it at connect from
    /// then on and drops its connections.
    pub expires_at: Option<i64>,
}

/// What an account's connections may spend (nats-server enforces it); `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLimits {
    /// Unlimited JetStream (stream and bucket limits are set per stream by the broker), or none.
    pub jetstream: bool,
    /// Connections of the account at once.
    pub max_connections: Option<u64>,
    /// Subscriptions of each connection of the account (nats-server applies it per connection).
    pub max_subs: Option<u64>,
    pub max_leaf_nodes: Option<u64>,
}

impl AccountLimits {
    /// The `HELIUM` account's ([`crate::limits`]).
    pub fn helium() -> AccountLimits {
        AccountLimits {
            jetstream: true,
            max_connections: Some(limits::ACCOUNT_MAX_CONNECTIONS as u64),
            max_subs: Some(limits::ACCOUNT_MAX_SUBS_PER_CONNECTION as u64),
            max_leaf_nodes: Some(limits::ACCOUNT_MAX_LEAF_NODES as u64),
        }
    }

    /// The system account's: no JetStream, and nothing a full `HELIUM` account could use up,
    /// so the operator can always connect to push a revocation.
    pub fn system() -> AccountLimits {
        AccountLimits { jetstream: false, max_connections: None, max_subs: None, max_leaf_nodes: None }
    }
}

/// NATS JWTs write "no limit" as -1.
fn limit(value: Option<u64>) -> Value {
    value.map_or(json!(-1), |v| json!(v))
}

/// An operator JWT naming its system account (self-signed).
pub fn operator(operator: &KeyPair, name: &str, system_account: &str, iat: i64) -> Result<String, JwtError> {
    let claims = json!({"system_account": system_account, "type": "operator", "version": 2});
    sign(operator, &operator.public_key(), name, claims, iat, None)
}

/// An account JWT signed by the operator, with `limits`; `revocations`: user public key → the
/// time before which (inclusive) that user's JWTs are refused.
pub fn account(
    operator: &KeyPair,
    account_public_key: &str,
    name: &str,
    limits: &AccountLimits,
    revocations: &BTreeMap<String, i64>,
    iat: i64,
) -> Result<String, JwtError> {
    let js = if limits.jetstream { -1 } else { 0 };
    let mut claims = json!({
        "limits": {
            // `data` and `payload` stay unlimited: nats-server does not enforce `data`, and the
            // broker's messages may be as large as the server's `max_payload`.
            "subs": limit(limits.max_subs), "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": limit(limits.max_connections), "leaf": limit(limits.max_leaf_nodes),
            "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js,
        },
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    });
    if !revocations.is_empty() {
        claims["revocations"] = json!(revocations);
    }
    sign(operator, account_public_key, name, claims, iat, None)
}

/// A user JWT signed by the account, carrying the role's permissions, limits and tags, valid
/// until `expires_at` (unix seconds) if given.
pub fn user(
    account: &KeyPair,
    user_public_key: &str,
    name: &str,
    role: &Role,
    permissions: &Permissions,
    iat: i64,
    expires_at: Option<i64>,
) -> Result<String, JwtError> {
    let mut claims = json!({
        // nats-server does not enforce `data` (a bandwidth cap); it is written unlimited.
        "subs": limit(permissions.max_subs), "data": -1, "payload": limit(permissions.max_payload),
        "tags": role.tags(),
        "type": "user",
        "version": 2,
    });
    if !permissions.all {
        claims["pub"] = json!({"allow": permissions.publish, "deny": permissions.deny_publish});
        claims["sub"] = json!({"allow": permissions.subscribe});
        if let Some(r) = permissions.responses {
            // `ttl` is a Go `time.Duration`: nanoseconds. 0 would leave it to the server.
            let ttl = u64::try_from(r.ttl.as_nanos()).unwrap_or(u64::MAX).max(1);
            claims["resp"] = json!({"max": r.max, "ttl": ttl});
        }
    }
    sign(account, user_public_key, name, claims, iat, expires_at)
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    jti: String,
    iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    iss: String,
    name: String,
    sub: String,
    nats: Value,
}

fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: Value, iat: i64, exp: Option<i64>) -> Result<String, JwtError> {
    let claims = Envelope {
        jti: uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        iat,
        exp,
        iss: issuer.public_key(),
        name: name.to_string(),
        sub: subject.to_string(),
        nats,
    };
    let body = serde_json::to_vec(&claims).map_err(|e| JwtError::Claims(e.to_string()))?;
    let signed = format!("{}.{}", BASE64URL_NOPAD.encode(HEADER.as_bytes()), BASE64URL_NOPAD.encode(&body));
    let signature = issuer.sign(signed.as_bytes()).map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature)))
}

/// Reads a user JWT, checking that `account_public_key` signed it and that it has not expired
/// by `now` (unix seconds), as nats-server does at connect. Never trusts a claim of an
/// unverified token. (Revocation is the server's: the account JWT it holds.)
pub fn verify_user(token: &str, account_public_key: &str, now: i64) -> Result<User, JwtError> {
    let (signed, signature, claims) = split(token)?;
    if claims.iss != account_public_key {
        return Err(JwtError::Issuer { expected: account_public_key.to_string(), found: claims.iss });
    }
    let issuer = KeyPair::from_public_key(account_public_key).map_err(|_| JwtError::Signature)?;
    issuer.verify(signed.as_bytes(), &signature).map_err(|_| JwtError::Signature)?;
    match claims.exp {
        Some(expired_at) if expired_at <= now => Err(JwtError::Expired { expired_at }),
        _ => user_of(claims),
    }
}

/// Reads one's own user JWT without checking its signature (nats-server does, at connect):
/// which name and role a credential file is for. Never use it on a token from elsewhere.
pub fn read_own_user(token: &str) -> Result<User, JwtError> {
    user_of(split(token)?.2)
}

/// The issuer (`iss`) of a JWT, unverified: which account a credential belongs to.
pub fn issuer(token: &str) -> Result<String, JwtError> {
    Ok(split(token)?.2.iss)
}

fn split(token: &str) -> Result<(&str, Vec<u8>, Envelope), JwtError> {
    let token = token.trim();
    let (signed, signature) = token.rsplit_once('.').ok_or(JwtError::Shape)?;
    let body = signed.split_once('.').ok_or(JwtError::Shape)?.1;
    if body.contains('.') {
        return Err(JwtError::Shape);
    }
    let claims_bytes = BASE64URL_NOPAD.decode(body.as_bytes()).map_err(|_| JwtError::Shape)?;
    let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).map_err(|_| JwtError::Shape)?;
    let claims: Envelope = serde_json::from_slice(&claims_bytes).map_err(|e| JwtError::Claims(e.to_string()))?;
    Ok((signed, signature, claims))
}

fn user_of(claims: Envelope) -> Result<User, JwtError> {
    if claims.nats.get("type").and_then(Value::as_str) != Some("user") {
        return Err(JwtError::NotUser);
    }
    let tags: Vec<String> = claims
        .nats
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok(User {
        public_key: claims.sub,
        name: claims.name,
        role: Role::from_tags(&tags),
        issued_at: claims.iat,
        expires_at: claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::permissions;

    const NOW: i64 = 1_700_000_100;

    fn claims_of(token: &str) -> Value {
        let body = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&BASE64URL_NOPAD.decode(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn an_expired_user_jwt_does_not_verify() {
        let account = KeyPair::new_account();
        let user_key = KeyPair::new_user();
        let role = Role::Worker { owner: "o".into() };
        let p = permissions(&role, "w1");
        let until = NOW + 60;
        let token = user(&account, &user_key.public_key(), "w1", &role, &p, NOW - 10, Some(until)).unwrap();
        assert_eq!(claims_of(&token)["exp"], until);
        assert_eq!(verify_user(&token, &account.public_key(), NOW).unwrap().expires_at, Some(until));
        assert_eq!(verify_user(&token, &account.public_key(), until), Err(JwtError::Expired { expired_at: until }));
        assert_eq!(read_own_user(&token).unwrap().expires_at, Some(until));
        let forever = user(&account, &user_key.public_key(), "w1", &role, &p, NOW, None).unwrap();
        assert!(claims_of(&forever).get("exp").is_none());
        assert!(verify_user(&forever, &account.public_key(), i64::MAX).is_ok());
    }

    /// The limits and the response permission land in the claims nats-server reads: `resp.ttl`
    /// in nanoseconds, never 0 (which leaves it to the server).
    #[test]
    fn limits_and_a_bounded_response_permission_are_written() {
        let account = KeyPair::new_account();
        let user_key = KeyPair::new_user();
        let role = Role::Researcher;
        let token = user(&account, &user_key.public_key(), "alice", &role, &permissions(&role, "alice"), NOW, None).unwrap();
        let nats = &claims_of(&token)["nats"];
        assert_eq!(nats["subs"], limits::RESEARCHER_MAX_SUBS);
        assert_eq!(nats["payload"], limits::PRINCIPAL_MAX_PAYLOAD_BYTES);
        assert_eq!(nats["resp"]["max"], 1);
        assert_eq!(nats["resp"]["ttl"], limits::RESPONSE_TTL_SECS * 1_000_000_000);
        let broker = user(&account, &user_key.public_key(), "b", &Role::Broker, &permissions(&Role::Broker, "b"), NOW, None).unwrap();
        let nats = &claims_of(&broker)["nats"];
        assert_eq!((nats["subs"].clone(), nats["payload"].clone()), (json!(-1), json!(-1)));
        assert!(nats.get("pub").is_none() && nats.get("resp").is_none());
        let operator = KeyPair::new_operator();
        let acc = account_jwt_claims(&operator, &account, &AccountLimits::helium());
        assert_eq!(acc["limits"]["conn"], limits::ACCOUNT_MAX_CONNECTIONS);
        assert_eq!(acc["limits"]["subs"], limits::ACCOUNT_MAX_SUBS_PER_CONNECTION);
        assert_eq!(acc["limits"]["leaf"], 0);
        assert_eq!(acc["limits"]["payload"], -1);
        let sys = account_jwt_claims(&operator, &account, &AccountLimits::system());
        assert_eq!((sys["limits"]["conn"].clone(), sys["limits"]["streams"].clone()), (json!(-1), json!(0)));
    }

    fn account_jwt_claims(operator: &KeyPair, account: &KeyPair, limits: &AccountLimits) -> Value {
        let token = super::account(operator, &account.public_key(), "A", limits, &BTreeMap::new(), NOW).unwrap();
        claims_of(&token)["nats"].clone()
    }

    #[test]
    fn a_user_jwt_verifies_against_its_account_only() {
        let account = KeyPair::new_account();
        let user_key = KeyPair::new_user();
        let role = Role::Worker { owner: "gpu-owner-1".into() };
        let token = user(&account, &user_key.public_key(), "w1", &role, &permissions(&role, "w1"), 1_700_000_000, None).unwrap();
        let read = verify_user(&token, &account.public_key(), NOW).unwrap();
        assert_eq!(read.name, "w1");
        assert_eq!(read.role, Some(role));
        assert_eq!(read.public_key, user_key.public_key());
        assert_eq!(issuer(&token).unwrap(), account.public_key());

        let other = KeyPair::new_account();
        assert!(matches!(verify_user(&token, &other.public_key(), NOW), Err(JwtError::Issuer { .. })));
        // A forged body under the real issuer's name fails the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = String::from_utf8(BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap())
            .unwrap()
            .replace("gpu-owner-1", "gpu-owner-2");
        let forged_body = BASE64URL_NOPAD.encode(forged_claims.as_bytes());
        parts[1] = &forged_body;
        assert_eq!(verify_user(&parts.join("."), &account.public_key(), NOW), Err(JwtError::Signature));
        assert_eq!(verify_user("nope", &account.public_key(), NOW), Err(JwtError::Shape));
    }
}
