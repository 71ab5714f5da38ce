//! Shard iterator strings.
//!
//! An iterator carries its whole state (shard, position, issue time) inside the string, signed
//! with a per-simulator secret. Nothing is stored per iterator, so a consumer that polls for days
//! does not grow the simulator, and an expired iterator is still recognised as expired (not as
//! garbage) however old it is.

use std::time::Duration;

use super::util::{fnv1a64, hex_decode, hex_encode};

/// What an iterator string stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IteratorState {
    pub(super) shard_id: String,
    /// Records with a sequence value above this one are still to be read.
    pub(super) after: u128,
    /// Sim time at which the iterator was issued.
    pub(super) issued_at: Duration,
    /// The stream's newest sequence value when the iterator was issued: records and shard
    /// closings after it "race" the iterator (see `end_race_probability`).
    pub(super) issued_seq: u128,
}

const TAG_HEX: usize = 16;

/// Shaped like the real service's iterators (`<stream arn>|1|<opaque>`).
pub(super) fn encode(arn: &str, secret: u64, serial: u64, state: &IteratorState) -> String {
    let payload = format!(
        "{}/{}/{}/{}/{}",
        state.shard_id,
        state.after,
        state.issued_at.as_nanos(),
        state.issued_seq,
        serial
    );
    let body = hex_encode(payload.as_bytes());
    let tag = tag(secret, arn, &body);
    format!("{arn}|1|{body}{tag:016x}")
}

/// `None` for anything this simulator did not issue.
pub(super) fn decode(arn: &str, secret: u64, iterator: &str) -> Option<IteratorState> {
    let rest = iterator.strip_prefix(arn)?.strip_prefix("|1|")?;
    let split = rest.len().checked_sub(TAG_HEX)?;
    if !rest.is_char_boundary(split) {
        return None;
    }
    let (body, tag_hex) = rest.split_at(split);
    if !tag_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if u64::from_str_radix(tag_hex, 16).ok()? != tag(secret, arn, body) {
        return None;
    }
    let payload = String::from_utf8(hex_decode(body)?).ok()?;
    let mut parts = payload.split('/');
    let shard_id = parts.next()?.to_owned();
    let after = parts.next()?.parse().ok()?;
    let nanos: u128 = parts.next()?.parse().ok()?;
    let issued_seq: u128 = parts.next()?.parse().ok()?;
    let _serial: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let issued_at = Duration::from_nanos(u64::try_from(nanos).ok()?);
    Some(IteratorState {
        shard_id,
        after,
        issued_at,
        issued_seq,
    })
}

fn tag(secret: u64, arn: &str, body: &str) -> u64 {
    let mut bytes = Vec::with_capacity(8 + arn.len() + body.len());
    bytes.extend_from_slice(&secret.to_le_bytes());
    bytes.extend_from_slice(arn.as_bytes());
    bytes.extend_from_slice(body.as_bytes());
    fnv1a64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/x";

    #[test]
    fn round_trips_and_rejects_tampering() {
        let state = IteratorState {
            shard_id: "shardId-00000000000000000001-00000001".into(),
            after: 100_000_000_000_000_000_042,
            issued_at: Duration::from_millis(1234),
            issued_seq: 100_000_000_000_000_000_050,
        };
        let it = encode(ARN, 99, 7, &state);
        assert!(it.starts_with(ARN));
        assert_eq!(decode(ARN, 99, &it), Some(state));
        assert_eq!(decode(ARN, 98, &it), None, "another simulator's secret");
        assert_eq!(decode("arn:other", 99, &it), None);
        let mut tampered = it.clone().into_bytes();
        let i = ARN.len() + 5;
        tampered[i] = if tampered[i] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(decode(ARN, 99, &tampered), None);
        for garbage in [
            "",
            "garbage",
            &format!("{ARN}|1|"),
            &format!("{ARN}|1|é{}", "0".repeat(16)),
        ] {
            assert_eq!(decode(ARN, 99, garbage), None, "{garbage:?}");
        }
    }
}
