//! The version constant, the reply envelope shared by every request/reply endpoint, and the
//! MessagePack codec. Every message is a map with named fields (`to_vec_named`), so Python and
//! other clients see dicts, and fields added later with `#[serde(default)]` stay compatible.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Carried as `v` in every message. A peer that receives another version replies
/// [`ErrorCode::UnsupportedVersion`] instead of guessing.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a request failed, as a stable machine-readable code (the message is for humans).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload is not valid MessagePack for this subject, or a field is out of range.
    BadRequest,
    /// `v` is missing or not [`PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// The caller may not do this (e.g. grant credits without being an operator).
    Unauthorized,
    NotFound,
    /// A payload, chunk or declared artifact is over the grid's limits.
    TooLarge,
    /// A state conflict: an id reused with different content, a job already finished, a worker busy.
    Conflict,
    InsufficientFunds,
    /// The model artifact is not a TorchScript archive.
    InvalidModel,
    /// The data artifact is not safetensors with matching `x` and `y`.
    InvalidData,
    /// A worker's result or checkpoint is not a safetensors state file matching the job's
    /// model (names, shapes, dtypes; see [`crate::state`]).
    InvalidState,
    /// A SHA-256 or size did not match what was declared.
    DigestMismatch,
    /// The caller is over one of its quotas (open jobs, staged bytes, checkpoints per
    /// award); it may try again once under it.
    QuotaExceeded,
    /// The grid cannot serve this now (e.g. a dependency timed out); retrying may work.
    Unavailable,
    Internal,
}

/// The error half of a [`Reply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// The one reply shape of every request/reply endpoint: `{v, ok}` or `{v, error: {code, message}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply<T> {
    pub v: u32,
    // Missing `Option` fields decode as `None` without `default` (which would demand `T: Default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl<T> Reply<T> {
    pub fn ok(body: T) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: Some(body),
            error: None,
        }
    }
    pub fn err(error: WireError) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: None,
            error: Some(error),
        }
    }
    pub fn from_result(result: Result<T, WireError>) -> Self {
        match result {
            Ok(body) => Self::ok(body),
            Err(e) => Self::err(e),
        }
    }
    /// The body, or the peer's error; a reply with neither is a protocol violation.
    pub fn into_result(self) -> Result<T, WireError> {
        match (self.ok, self.error) {
            (_, Some(e)) => Err(e),
            (Some(body), None) => Ok(body),
            (None, None) => Err(WireError::bad_request("reply has neither ok nor error")),
        }
    }
}

/// Encodes any message as a MessagePack map with field names.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising our own plain structs into a Vec cannot fail: no maps with non-string keys,
    // no I/O. A failure here is a programming error, so it is reported loudly but not panicked.
    rmp_serde::to_vec_named(message).unwrap_or_else(|e| {
        rmp_serde::to_vec_named(&Reply::<()>::err(WireError::internal(format!("encode: {e}")))).unwrap_or_default()
    })
}

#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default)]
    v: Option<u32>,
}

/// Decodes a message from the network, checking the version first so that a peer speaking
/// another version gets `unsupported_version` rather than a confusing field error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let probe: VersionProbe = rmp_serde::from_slice(payload)
        .map_err(|e| WireError::bad_request(format!("payload is not a MessagePack map: {e}")))?;
    match probe.v {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(WireError::new(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {other} is not supported; this peer speaks {PROTOCOL_VERSION}"),
            ))
        }
        None => {
            return Err(WireError::new(
                ErrorCode::UnsupportedVersion,
                format!("message has no protocol version field `v` (expected {PROTOCOL_VERSION})"),
            ))
        }
    }
    rmp_serde::from_slice(payload).map_err(|e| WireError::bad_request(format!("malformed message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Ping {
        v: u32,
        n: u64,
    }

    #[test]
    fn round_trips_as_named_map() {
        let bytes = encode(&Ping {
            v: PROTOCOL_VERSION,
            n: 7,
        });
        // A fixmap with two entries, so Python sees {"v": 1, "n": 7}.
        assert_eq!(bytes[0], 0x82);
        assert_eq!(decode::<Ping>(&bytes).unwrap(), Ping { v: 1, n: 7 });
    }

    #[test]
    fn garbage_and_other_versions_are_clear_errors() {
        let e = decode::<Ping>(b"\xc1garbage").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = decode::<Ping>(&encode(&Ping { v: 2, n: 1 })).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        #[derive(Serialize)]
        struct NoV {
            n: u64,
        }
        let e = decode::<Ping>(&encode(&NoV { n: 1 })).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn reply_carries_ok_or_error() {
        let r: Reply<u32> = decode(&encode(&Reply::ok(5u32))).unwrap();
        assert_eq!(r.into_result().unwrap(), 5);
        let r: Reply<u32> = decode(&encode(&Reply::<u32>::err(WireError::new(ErrorCode::NotFound, "x")))).unwrap();
        assert_eq!(r.into_result().unwrap_err().code, ErrorCode::NotFound);
    }
}
