//! Standard Webhooks signatures (symmetric `v1` scheme), shared by
//! [`HttpSink`](crate::HttpSink) and the receiver (`wds_server::Receiver`).
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, signed with
//! HMAC-SHA256 under the key that a `whsec_<base64>` secret encodes; the
//! `webhook-signature` header holds one or more space-separated `v1,<base64>`
//! entries, one per secret, so that a key can be rotated without downtime.
//! See <https://www.standardwebhooks.com/>.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use wds_http::signature::{sign, verify, Secret};
//!
//! let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
//! let now = SystemTime::now();
//! let ts = wds_http::signature::unix_seconds(now).to_string();
//! let header = sign(std::slice::from_ref(&secret), "job:1", &ts, br#"{"userId":"u"}"#);
//! verify(&[secret], "job:1", &ts, &header, br#"{"userId":"u"}"#, Duration::from_secs(300), now)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a serialized symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The version tag of a symmetric (HMAC-SHA256) signature.
pub const SIGNATURE_VERSION: &str = "v1";

/// The shortest key the specification allows (24 bytes, 192 bits).
pub const MIN_KEY_LEN: usize = 24;

/// The longest key the specification allows (64 bytes, 512 bits).
pub const MAX_KEY_LEN: usize = 64;

/// The replay window the specification recommends (5 minutes either way).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

// Secrets are often pasted without their trailing `=`; accepting both forms
// costs nothing and the decoded key is the same.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An HMAC-SHA256 signing key, parsed from its `whsec_<base64>` form.
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
    /// HMAC's state after the key: cloned per signature, so that each one
    /// hashes only its message, not the key's two padded blocks again.
    keyed: HmacSha256,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Secret {}

impl Secret {
    /// Parses every secret of a list (the old and the new one during a
    /// rotation, say), in order: the one list parser of the sink and the
    /// receiver.
    ///
    /// # Errors
    ///
    /// The position (from 0) of the first secret that is not valid, and why.
    pub fn parse_all<S: AsRef<str>>(
        secrets: impl IntoIterator<Item = S>,
    ) -> Result<Vec<Secret>, (usize, SecretError)> {
        secrets
            .into_iter()
            .enumerate()
            .map(|(index, s)| Secret::parse(s.as_ref()).map_err(|e| (index, e)))
            .collect()
    }

    /// Parses a `whsec_<base64>` secret.
    ///
    /// # Errors
    ///
    /// [`SecretError`] when the prefix is missing, the rest is not base64, or
    /// the key is not 24 to 64 bytes long as the specification requires.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|e| SecretError::NotBase64(e.to_string()))?;
        Secret::from_key(key)
    }

    /// The secret of a key whose length was checked.
    fn keyed(key: Vec<u8>) -> Self {
        // HMAC accepts keys of any length, so this cannot fail; the
        // fallback keeps the function total without an `expect`.
        let keyed = HmacSha256::new_from_slice(&key)
            .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
        Secret { key, keyed }
    }

    /// A secret from raw key bytes (for generating a new `whsec_` secret).
    ///
    /// # Errors
    ///
    /// [`SecretError::BadLength`] unless the key is 24 to 64 bytes long.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let key = key.into();
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Secret::keyed(key))
    }

    /// A new random 32-byte secret from the operating system's generator,
    /// for a deployment (or a test) that runs both ends itself.
    ///
    /// # Errors
    ///
    /// When the operating system cannot provide random bytes.
    pub fn generate() -> std::io::Result<Self> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Secret::keyed(key))
    }

    /// The secret in its `whsec_<base64>` form (this reveals the key).
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The MAC over `{id}.{timestamp}.{body}`, before finalization, so the
    /// verifier can compare it against several candidates in constant time.
    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// One `v1,<base64>` signature of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut signature = String::with_capacity(48);
        self.sign_into(id, timestamp, body, &mut signature);
        signature
    }

    /// [`Secret::sign`], appended to `out`.
    fn sign_into(&self, id: &str, timestamp: &str, body: &[u8], out: &mut String) {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        out.push_str(SIGNATURE_VERSION);
        out.push(',');
        STANDARD.encode_string(tag, out);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_***)")
    }
}

impl FromStr for Secret {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, SecretError> {
        Secret::parse(s)
    }
}

/// Why a secret was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret does not start with `whsec_`.
    #[error("a webhook secret must look like whsec_<base64> (the whsec_ prefix is missing)")]
    MissingPrefix,
    /// The part after `whsec_` is not base64.
    #[error("the part after whsec_ is not valid base64: {0}")]
    NotBase64(String),
    /// The decoded key is too short or too long.
    #[error("a webhook secret must decode to 24..=64 bytes, this one has {0}")]
    BadLength(usize),
}

/// Why a request's signature was refused. Every variant means "answer 401".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A `webhook-*` header is missing (or not valid text).
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("webhook-timestamp is not an integer unix timestamp")]
    InvalidTimestamp,
    /// `webhook-timestamp` is outside the allowed window (a replay or a bad clock).
    #[error("webhook-timestamp is {skew_secs} s away from now, beyond the tolerance")]
    TimestampOutOfTolerance {
        /// How far the timestamp is from now, in seconds (negative: in the past).
        skew_secs: i64,
    },
    /// No `v1` signature matched any configured secret.
    #[error("no webhook-signature matched")]
    NoMatch,
}

/// Unix seconds of `t` (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` entry per secret,
/// space-separated, in the order given (empty when `secrets` is empty).
///
/// `timestamp` is the exact text sent in `webhook-timestamp`.
pub fn sign(secrets: &[Secret], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut header = String::with_capacity(secrets.len() * 48);
    for secret in secrets {
        if !header.is_empty() {
            header.push(' ');
        }
        secret.sign_into(id, timestamp, body, &mut header);
    }
    header
}

/// Verifies a request per the specification: `timestamp` must be within
/// `tolerance` of `now`, and at least one `v1` entry of `signature_header`
/// must match the HMAC under at least one of `secrets`.
///
/// Entries of other versions (such as asymmetric `v1a`) and entries that are
/// not base64 are skipped, as the specification asks for forward
/// compatibility. Tags are compared in constant time.
///
/// # Errors
///
/// [`VerifyError`] saying why the request must be refused.
pub fn verify(
    secrets: &[Secret],
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let skew = ts.saturating_sub(unix_seconds(now));
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if skew.unsigned_abs() > tolerance.unsigned_abs() {
        return Err(VerifyError::TimestampOutOfTolerance { skew_secs: skew });
    }
    // Decode the candidates once, then try each secret against each.
    let candidates: Vec<Vec<u8>> = signature_header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
        .collect();
    for secret in secrets {
        let mac = secret.mac(id, timestamp, body);
        for candidate in &candidates {
            // `verify_slice` compares in constant time.
            if mac.clone().verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks reference libraries' test suites.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(ts: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(ts as u64)
    }

    #[test]
    fn matches_the_reference_vector() {
        let s: Secret = SECRET.parse().unwrap();
        assert_eq!(s.sign(ID, TS, BODY), SIG);
        verify(&[s], ID, TS, SIG, BODY, DEFAULT_TOLERANCE, at(1614265330)).unwrap();
    }

    #[test]
    fn several_secrets_give_space_separated_entries_and_any_matches() {
        let old = Secret::from_key([1u8; 32]).unwrap();
        let new: Secret = SECRET.parse().unwrap();
        let header = sign(&[old.clone(), new.clone()], ID, TS, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], SIG);
        let now = at(1614265330);
        verify(&[new], ID, TS, &header, BODY, DEFAULT_TOLERANCE, now).unwrap();
        verify(&[old], ID, TS, &header, BODY, DEFAULT_TOLERANCE, now).unwrap();
    }

    #[test]
    fn refuses_tampering_wrong_key_and_stale_timestamps() {
        let s: Secret = SECRET.parse().unwrap();
        let now = at(1614265330);
        let tol = DEFAULT_TOLERANCE;
        let e = verify(std::slice::from_ref(&s), ID, TS, SIG, b"{}", tol, now);
        assert_eq!(e, Err(VerifyError::NoMatch));
        let other = Secret::from_key([7u8; 24]).unwrap();
        assert_eq!(
            verify(&[other], ID, TS, SIG, BODY, tol, now),
            Err(VerifyError::NoMatch)
        );
        let late = at(1614265330 + 301);
        assert!(matches!(
            verify(std::slice::from_ref(&s), ID, TS, SIG, BODY, tol, late),
            Err(VerifyError::TimestampOutOfTolerance { skew_secs: -301 })
        ));
        // Exactly at the edge of the window is still accepted.
        verify(
            std::slice::from_ref(&s),
            ID,
            TS,
            SIG,
            BODY,
            tol,
            at(1614265330 - 300),
        )
        .unwrap();
        assert_eq!(
            verify(std::slice::from_ref(&s), ID, "soon", SIG, BODY, tol, now),
            Err(VerifyError::InvalidTimestamp)
        );
        // Other versions and garbage are skipped, not errors.
        let mixed = format!("v1a,AAAA v1,!!! junk {SIG}");
        verify(&[s], ID, TS, &mixed, BODY, tol, now).unwrap();
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        assert_eq!(Secret::parse("MfKQ9r8G"), Err(SecretError::MissingPrefix));
        assert!(matches!(
            Secret::parse("whsec_not base64!"),
            Err(SecretError::NotBase64(_))
        ));
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ="),
            Err(SecretError::BadLength(5))
        );
        let s = Secret::from_key([9u8; 64]).unwrap();
        assert_eq!(Secret::parse(&s.to_whsec()).unwrap(), s);
        // Unpadded base64 decodes to the same key.
        let padded = Secret::from_key([3u8; 25]).unwrap().to_whsec();
        assert!(padded.ends_with('='));
        assert_eq!(
            Secret::parse(padded.trim_end_matches('=')).unwrap(),
            Secret::parse(&padded).unwrap()
        );
        assert_eq!(format!("{s:?}"), "Secret(whsec_***)");
    }
}
