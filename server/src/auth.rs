//! API keys: a read-write key, an optional read-only key and an optional metrics key, compared
//! in constant time.
//!
//! Clients send `authorization: Bearer <key>` or `x-api-key: <key>`. Without configured keys
//! every request is allowed (the server listens on loopback by default). Keys are checked at
//! start-up: empty, short or whitespace-bearing keys are refused, so a blank setting can never
//! mean "any key".

use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Shortest key accepted at start-up, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Searches and reads.
    Read,
    /// Writes and administration.
    Write,
    /// The metrics endpoint (any configured key, or the metrics key).
    Metrics,
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// Full access.
    write: Option<String>,
    /// Reads and searches only.
    read_only: Option<String>,
    /// The metrics endpoint only.
    metrics: Option<String>,
}

fn eq(a: &str, b: &str) -> bool {
    // Constant time in the key's content (the lengths are not secret enough to hide).
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn check_key(what: &str, key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!(
            "{what} is empty: an empty key would let any client in; set a random key of at least {MIN_KEY_LEN} characters (e.g. `openssl rand -hex 32`) or leave it unset"
        ));
    }
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "{what} has {} characters: use at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} contains spaces or control characters, which clients cannot send in a header: use printable ASCII"
        ));
    }
    Ok(())
}

impl Keys {
    /// Checks and keeps the keys (`what`: how each was given, for the error).
    pub fn new(
        write: Option<(String, String)>,
        read_only: Option<(String, String)>,
        metrics: Option<(String, String)>,
    ) -> Result<Keys, String> {
        for (key, what) in [&write, &read_only, &metrics].into_iter().flatten() {
            check_key(what, key)?;
        }
        if read_only.is_some() && write.is_none() {
            return Err("--read-only-api-key needs --api-key too (or nobody could write)".into());
        }
        if metrics.is_some() && write.is_none() {
            return Err("--metrics-api-key needs --api-key too".into());
        }
        let keys = [&write, &read_only, &metrics];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                if let (Some((a, wa)), Some((b, wb))) = (a, b)
                    && a == b
                {
                    return Err(format!(
                        "{wa} and {wb} are the same key: use different ones"
                    ));
                }
            }
        }
        Ok(Keys {
            write: write.map(|k| k.0),
            read_only: read_only.map(|k| k.0),
            metrics: metrics.map(|k| k.0),
        })
    }

    /// True when any key is configured.
    pub fn enabled(&self) -> bool {
        self.write.is_some()
    }

    /// Checks the request's key for `access`: UNAUTHENTICATED without a valid key,
    /// PERMISSION_DENIED for a read-only key on a write.
    pub fn check(&self, metadata: &MetadataMap, access: Access) -> Result<(), Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| metadata.get("x-api-key").and_then(|v| v.to_str().ok()));
        self.check_presented(presented, access)
    }

    /// [`check`](Self::check) on a key taken from any transport (the metrics endpoint's HTTP
    /// headers).
    pub fn check_presented(&self, presented: Option<&str>, access: Access) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(key) = presented.map(str::trim).filter(|k| !k.is_empty()) else {
            return Err(Status::unauthenticated(
                "missing API key: send `authorization: Bearer <key>` or `x-api-key: <key>`",
            ));
        };
        let is = |k: &Option<String>| k.as_deref().is_some_and(|w| eq(key, w));
        if is(&self.write) {
            return Ok(());
        }
        if is(&self.read_only) {
            return match access {
                Access::Read | Access::Metrics => Ok(()),
                Access::Write => Err(Status::permission_denied(
                    "the read-only API key may search and read, not write",
                )),
            };
        }
        if is(&self.metrics) {
            return match access {
                Access::Metrics => Ok(()),
                _ => Err(Status::permission_denied(
                    "the metrics API key may read /metrics only",
                )),
            };
        }
        Err(Status::unauthenticated("invalid API key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Option<(String, String)> {
        Some((s.to_string(), "--api-key".to_string()))
    }

    #[test]
    fn empty_short_or_blank_keys_are_refused_at_start_up() {
        for bad in ["", "short", "has a space in it ok", "tab\there-0123456789"] {
            assert!(Keys::new(k(bad), None, None).is_err(), "{bad:?}");
        }
        assert!(Keys::new(None, k("0123456789abcdef"), None).is_err());
        assert!(Keys::new(k("0123456789abcdef"), k("0123456789abcdef"), None).is_err());
        let keys = Keys::new(k("0123456789abcdef"), k("fedcba9876543210"), None).unwrap();
        assert!(keys.check_presented(Some(""), Access::Read).is_err());
        assert!(keys.check_presented(Some("  "), Access::Read).is_err());
        assert!(
            keys.check_presented(Some("0123456789abcdef"), Access::Write)
                .is_ok()
        );
        assert_eq!(
            keys.check_presented(Some("fedcba9876543210"), Access::Write)
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(Keys::default().check_presented(None, Access::Write).is_ok());
    }
}
