//! The output messages: scores, alerts and dead letters, as JSON. Shared by the Kafka sink
//! and `anomalyd score`, so both write the same schema.

use serde::Serialize;

use super::{Contribution, Meta, Scored, Timestamp};
use crate::model::sha256_hex;

#[derive(Debug, Serialize)]
pub struct ScoreMessage<'a> {
    pub key: Option<&'a str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: &'a Timestamp,
    pub score: f32,
    pub threshold: f32,
    pub normalized_score: f32,
    pub is_anomaly: bool,
    /// With `threshold.kind = "likelihood"`: the anomaly likelihood that decided
    /// `is_anomaly` (alert at >= 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likelihood: Option<f32>,
    /// With `threshold.likelihood.input = "discord"`: the distance from the record's window
    /// to its key's nearest earlier window, which fed the likelihood (absent when it has
    /// none: a window with a missing value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discord: Option<f32>,
    pub model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_features: Option<Vec<FeatureShare<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct FeatureShare<'a> {
    pub feature: &'a str,
    pub share: f32,
}

/// How many bytes of the original record a dead letter carries at most. Escaped as JSON
/// (at worst six bytes a byte) a dead letter stays far below the broker's default 1 MB
/// message limit, so a huge or binary record cannot make its own dead letter fail.
pub const DLQ_PAYLOAD_MAX: usize = 32 * 1024;

#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
    pub detail: &'a str,
    /// The original bytes when they are UTF-8 (their first [`DLQ_PAYLOAD_MAX`] bytes when
    /// longer), else absent (see `payload_base64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// The length of the whole original payload, and its SHA-256 (hex), so a truncated
    /// payload can still be matched against the input topic.
    pub payload_bytes: usize,
    pub payload_sha256: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
}

impl<'a> DeadLetter<'a> {
    pub fn new(meta: (i32, i64), reason: &'a str, detail: &'a str, bytes: &'a [u8]) -> Self {
        let (kept, truncated) = prefix(bytes, DLQ_PAYLOAD_MAX);
        let text = std::str::from_utf8(kept).ok();
        DeadLetter {
            partition: meta.0,
            offset: meta.1,
            reason,
            detail,
            payload: text,
            payload_base64: match text {
                Some(_) => None,
                None => Some(base64_encode(kept)),
            },
            payload_bytes: bytes.len(),
            payload_sha256: sha256_hex(bytes),
            payload_truncated: truncated,
        }
    }
}

/// The first `max` bytes of `bytes`, cut back to a UTF-8 character boundary when the bytes
/// are text, and whether anything was cut.
fn prefix(bytes: &[u8], max: usize) -> (&[u8], bool) {
    if bytes.len() <= max {
        return (bytes, false);
    }
    let cut = match std::str::from_utf8(&bytes[..max]) {
        Ok(_) => max,
        // Text cut inside a character: drop the partial character only.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => max,
    };
    (&bytes[..cut], true)
}

/// Standard base64 with padding (RFC 4648), for non-UTF-8 dead letters.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Builds the score message of record `i`; alerts carry `top_features`.
pub fn score_message<'a>(
    scored: &'a Scored,
    i: usize,
    explanation: Option<&'a [Contribution]>,
    names: &'a [String],
) -> ScoreMessage<'a> {
    let meta: &Meta = &scored.metas[i];
    let score = scored.scores[i];
    ScoreMessage {
        key: meta.key.as_deref(),
        partition: meta.partition,
        offset: meta.offset,
        timestamp: &meta.timestamp,
        score,
        threshold: scored.thresholds[i],
        normalized_score: scored.normalized[i],
        is_anomaly: scored.is_anomaly(i),
        likelihood: scored.likelihood.get(i).copied(),
        discord: scored.discord.get(i).copied().filter(|d| d.is_finite()),
        model_version: scored.model_version,
        top_features: explanation.map(|e| {
            e.iter()
                .map(|c| FeatureShare {
                    feature: names.get(c.feature).map_or("?", String::as_str),
                    share: c.share,
                })
                .collect()
        }),
    }
}

/// Writes a message as one line of JSON into `buf` (cleared first).
pub fn encode<T: Serialize>(msg: &T, buf: &mut Vec<u8>) {
    buf.clear();
    // Serialising these plain structs to memory cannot fail.
    let _ = serde_json::to_writer(&mut *buf, msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_keeps_bytes_faithfully() {
        let dl = DeadLetter::new((1, 9), "invalid_json", "x", b"{bad");
        let mut buf = Vec::new();
        encode(&dl, &mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(v["payload"], "{bad");
        assert_eq!(v["reason"], "invalid_json");
        assert_eq!(v["offset"], 9);
        let dl = DeadLetter::new((0, 0), "invalid_json", "x", &[0xff, 0x00]);
        encode(&dl, &mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(v["payload_base64"], "/wA=");
        assert!(v.get("payload").is_none());
        assert_eq!(v["payload_bytes"], 2);
        assert_eq!(
            v["payload_sha256"],
            "ea5dbf9596d187e9500f23e9a680109475341cf4e81f7e043f7d97152c10772f"
        );
    }

    #[test]
    fn dead_letter_of_a_huge_record_is_bounded_and_identifies_the_whole() {
        // 200k control bytes: escaped whole they would be 1.2 MB of JSON.
        let huge = vec![0x01u8; 200_000];
        let dl = DeadLetter::new((0, 1), "invalid_json", "x", &huge);
        let mut buf = Vec::new();
        encode(&dl, &mut buf);
        assert!(buf.len() < 7 * DLQ_PAYLOAD_MAX, "{} bytes", buf.len());
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(v["payload"].as_str().map(str::len), Some(DLQ_PAYLOAD_MAX));
        assert_eq!(v["payload_bytes"], 200_000);
        assert_eq!(v["payload_truncated"], true);
        assert_eq!(v["payload_sha256"], sha256_hex(&huge));
        // Multi-byte text is cut at a character boundary, never inside one.
        let text = "é".repeat(DLQ_PAYLOAD_MAX);
        let dl = DeadLetter::new((0, 2), "invalid_json", "x", text.as_bytes());
        assert_eq!(dl.payload.map(str::len), Some(DLQ_PAYLOAD_MAX));
        let odd = format!("a{text}");
        let dl = DeadLetter::new((0, 3), "invalid_json", "x", odd.as_bytes());
        assert_eq!(dl.payload.map(str::len), Some(DLQ_PAYLOAD_MAX - 1));
        assert!(dl.payload_truncated);
    }
}
