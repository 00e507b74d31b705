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
}

/// An operator JWT naming its system account (self-signed).
pub fn operator(operator: &KeyPair, name: &str, system_account: &str, iat: i64) -> Result<String, JwtError> {
    let claims = json!({"system_account": system_account, "type": "operator", "version": 2});
    sign(operator, &operator.public_key(), name, claims, iat)
}

/// An account JWT signed by the operator. `jetstream`: unlimited JetStream for the account
/// (stream and bucket limits are set per stream by the broker); `revocations`: user public
/// key → the time before which (inclusive) that user's JWTs are refused.
pub fn account(
    operator: &KeyPair,
    account_public_key: &str,
    name: &str,
    jetstream: bool,
    revocations: &BTreeMap<String, i64>,
    iat: i64,
) -> Result<String, JwtError> {
    let js = if jetstream { -1 } else { 0 };
    let mut claims = json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js,
        },
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    });
    if !revocations.is_empty() {
        claims["revocations"] = json!(revocations);
    }
    sign(operator, account_public_key, name, claims, iat)
}

/// A user JWT signed by the account, carrying the role's permissions and tags.
pub fn user(
    account: &KeyPair,
    user_public_key: &str,
    name: &str,
    role: &Role,
    permissions: &Permissions,
    iat: i64,
) -> Result<String, JwtError> {
    let mut claims = json!({
        "subs": -1, "data": -1, "payload": -1,
        "tags": role.tags(),
        "type": "user",
        "version": 2,
    });
    if !permissions.all {
        claims["pub"] = json!({"allow": permissions.publish, "deny": permissions.deny_publish});
        claims["sub"] = json!({"allow": permissions.subscribe});
    }
    if permissions.responses && !permissions.all {
        claims["resp"] = json!({"max": 1, "ttl": 0});
    }
    sign(account, user_public_key, name, claims, iat)
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    jti: String,
    iat: i64,
    iss: String,
    name: String,
    sub: String,
    nats: Value,
}

fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: Value, iat: i64) -> Result<String, JwtError> {
    let claims = Envelope {
        jti: uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        iat,
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

/// Reads a user JWT, checking that `account_public_key` signed it. Never trusts a claim of an
/// unverified token.
pub fn verify_user(token: &str, account_public_key: &str) -> Result<User, JwtError> {
    let (signed, signature, claims) = split(token)?;
    if claims.iss != account_public_key {
        return Err(JwtError::Issuer { expected: account_public_key.to_string(), found: claims.iss });
    }
    let issuer = KeyPair::from_public_key(account_public_key).map_err(|_| JwtError::Signature)?;
    issuer.verify(signed.as_bytes(), &signature).map_err(|_| JwtError::Signature)?;
    user_of(claims)
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
    Ok(User { public_key: claims.sub, name: claims.name, role: Role::from_tags(&tags), issued_at: claims.iat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::permissions;

    #[test]
    fn a_user_jwt_verifies_against_its_account_only() {
        let account = KeyPair::new_account();
        let user_key = KeyPair::new_user();
        let role = Role::Worker { owner: "gpu-owner-1".into() };
        let token = user(&account, &user_key.public_key(), "w1", &role, &permissions(&role, "w1"), 1_700_000_000).unwrap();
        let read = verify_user(&token, &account.public_key()).unwrap();
        assert_eq!(read.name, "w1");
        assert_eq!(read.role, Some(role));
        assert_eq!(read.public_key, user_key.public_key());
        assert_eq!(issuer(&token).unwrap(), account.public_key());

        let other = KeyPair::new_account();
        assert!(matches!(verify_user(&token, &other.public_key()), Err(JwtError::Issuer { .. })));
        // A forged body under the real issuer's name fails the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = String::from_utf8(BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap())
            .unwrap()
            .replace("gpu-owner-1", "gpu-owner-2");
        let forged_body = BASE64URL_NOPAD.encode(forged_claims.as_bytes());
        parts[1] = &forged_body;
        assert_eq!(verify_user(&parts.join("."), &account.public_key()), Err(JwtError::Signature));
        assert_eq!(verify_user("nope", &account.public_key()), Err(JwtError::Shape));
    }
}
