//! API keys: a read-write key and an optional read-only key, compared in constant time.
//!
//! Clients send `authorization: Bearer <key>` or `x-api-key: <key>`. Without configured keys
//! every request is allowed (the server listens on loopback by default).

use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Searches and reads.
    Read,
    /// Writes and administration.
    Write,
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// Full access.
    pub write: Option<String>,
    /// Reads and searches only.
    pub read_only: Option<String>,
}

fn eq(a: &str, b: &str) -> bool {
    // Constant time in the key's content (the lengths are not secret enough to hide).
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Keys {
    /// True when any key is configured.
    pub fn enabled(&self) -> bool {
        self.write.is_some() || self.read_only.is_some()
    }

    /// Checks the request's key for `access`: UNAUTHENTICATED without a valid key,
    /// PERMISSION_DENIED for a read-only key on a write.
    pub fn check(&self, metadata: &MetadataMap, access: Access) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| metadata.get("x-api-key").and_then(|v| v.to_str().ok()));
        let Some(key) = presented else {
            return Err(Status::unauthenticated(
                "missing API key: send `authorization: Bearer <key>` or `x-api-key: <key>`",
            ));
        };
        if self.write.as_deref().is_some_and(|w| eq(key, w)) {
            return Ok(());
        }
        if self.read_only.as_deref().is_some_and(|r| eq(key, r)) {
            return match access {
                Access::Read => Ok(()),
                Access::Write => Err(Status::permission_denied(
                    "the read-only API key may search and read, not write",
                )),
            };
        }
        Err(Status::unauthenticated("invalid API key"))
    }
}
