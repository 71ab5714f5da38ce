//! Hashing, sizes, hex and dates for the simulator.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::{AttributeValue, Item};

/// 64-bit FNV-1a: stable across runs and platforms, unlike `std`'s randomly keyed hasher.
pub(super) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The position of a key in the shards' 64-bit hash space: FNV-1a, then murmur3's finalizer.
///
/// FNV-1a alone leaves the high bits, which pick the shard, poorly mixed for keys that differ
/// only in their last bytes ("k1", "k2"), so such keys would crowd into one shard; the
/// finalizer spreads every input bit over the whole word. Both steps are stable, so a key lands
/// in the same shard on every run.
pub(super) fn key_hash(bytes: &[u8]) -> u64 {
    let mut hash = fnv1a64(bytes);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Approximately how DynamoDB counts an item's size: attribute names plus values.
pub(super) fn item_size(item: &Item) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len() as u64,
        AttributeValue::B(b) => b.len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() as u64 + value_size(v))
                .sum::<u64>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<u64>(),
        AttributeValue::Ss(s) | AttributeValue::Ns(s) => s.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Bs(b) => b.iter().map(|b| b.len() as u64).sum(),
    }
}

pub(super) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub(super) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Milliseconds since the Unix epoch; times before it count as 0.
pub(super) fn epoch_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmm` in UTC, the label DynamoDB puts at the end of a stream ARN.
pub(super) fn iso_label(t: SystemTime) -> String {
    let (y, m, d, h, mi, sec, ms) = crate::record::utc_parts(t);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn key_hash_spreads_keys_that_differ_in_the_last_byte() {
        let upper_half = (0..10)
            .filter(|i| key_hash(format!("pk=\"k{i}\"").as_bytes()) > u64::MAX / 2)
            .count();
        assert!(
            (2..=8).contains(&upper_half),
            "{upper_half} of 10 in the upper half"
        );
        assert_eq!(key_hash(b"pk=\"a\""), key_hash(b"pk=\"a\""));
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = b"shardId-1/2/3";
        assert_eq!(hex_decode(&hex_encode(bytes)).as_deref(), Some(&bytes[..]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn iso_label_formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(iso_label(t), "2023-11-14T22:13:20.123");
        assert_eq!(iso_label(UNIX_EPOCH), "1970-01-01T00:00:00.000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso_label(leap), "2000-02-29T00:00:00.000");
    }
}
