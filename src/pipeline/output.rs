//! The output messages: scores, alerts and dead letters, as JSON. Shared by the Kafka sink
//! and `anomalyd score`, so both write the same schema.

use serde::Serialize;

use super::{Contribution, Meta, Scored, Timestamp};

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

#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
    pub detail: &'a str,
    /// The original bytes when they are UTF-8, else absent (see `payload_base64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl<'a> DeadLetter<'a> {
    pub fn new(meta: (i32, i64), reason: &'a str, detail: &'a str, bytes: &'a [u8]) -> Self {
        let text = std::str::from_utf8(bytes).ok();
        DeadLetter {
            partition: meta.0,
            offset: meta.1,
            reason,
            detail,
            payload: text,
            payload_base64: match text {
                Some(_) => None,
                None => Some(base64_encode(bytes)),
            },
        }
    }
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
    }
}
