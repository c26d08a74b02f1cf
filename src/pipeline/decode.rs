//! Decoding a record's bytes into its key, timestamp and values: a pure function of the
//! bytes and the input spec (no I/O, no metrics), so it can be fuzzed and benchmarked.
//!
//! JSON objects are walked once (sonic-rs, a SIMD parser, through serde) with a visitor that
//! keeps only the configured fields and skips the rest without allocating.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Timestamp;
use crate::config::{InputShape, InputSpec};

/// Why a record could not be decoded. The code is a stable label for metrics and the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorCode {
    InvalidJson,
    MissingField,
    NotANumber,
    NotFinite,
    OutOfRange,
    WrongLength,
    InvalidKey,
    InvalidTimestamp,
}

impl DecodeErrorCode {
    pub const ALL: [DecodeErrorCode; 8] = [
        DecodeErrorCode::InvalidJson,
        DecodeErrorCode::MissingField,
        DecodeErrorCode::NotANumber,
        DecodeErrorCode::NotFinite,
        DecodeErrorCode::OutOfRange,
        DecodeErrorCode::WrongLength,
        DecodeErrorCode::InvalidKey,
        DecodeErrorCode::InvalidTimestamp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorCode::InvalidJson => "invalid_json",
            DecodeErrorCode::MissingField => "missing_field",
            DecodeErrorCode::NotANumber => "not_a_number",
            DecodeErrorCode::NotFinite => "not_finite",
            DecodeErrorCode::OutOfRange => "out_of_range",
            DecodeErrorCode::WrongLength => "wrong_length",
            DecodeErrorCode::InvalidKey => "invalid_key",
            DecodeErrorCode::InvalidTimestamp => "invalid_timestamp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {detail}", code.as_str())]
pub struct DecodeError {
    pub code: DecodeErrorCode,
    pub detail: String,
}

impl DecodeError {
    pub fn new(code: DecodeErrorCode, detail: impl Into<String>) -> Self {
        DecodeError {
            code,
            detail: detail.into(),
        }
    }
}

/// What a record yields: the vector's values (one value in window mode), key and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub key: Option<Box<str>>,
    pub timestamp: Timestamp,
    pub values: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Value(usize),
    Array,
    Key,
    Timestamp,
}

/// A decoder for one input spec.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Field name -> role. foldhash: the map is fixed at start-up and only looked up (once
    /// per field of every record), so a fast non-cryptographic hash is safe here.
    slots: HashMap<Box<str>, Slot, foldhash::fast::RandomState>,
    names: Vec<String>,
}

impl Decoder {
    pub fn new(spec: &InputSpec) -> Self {
        let mut slots = HashMap::default();
        // Inserted first so that the value roles win when a name is configured twice.
        if let Some(k) = &spec.key_field {
            slots.insert(k.as_str().into(), Slot::Key);
        }
        if let Some(t) = &spec.timestamp_field {
            slots.insert(t.as_str().into(), Slot::Timestamp);
        }
        let names = match &spec.shape {
            InputShape::Fields { names } => {
                for (i, n) in names.iter().enumerate() {
                    slots.insert(n.as_str().into(), Slot::Value(i));
                }
                names.clone()
            }
            InputShape::Array { field, names } => {
                slots.insert(field.as_str().into(), Slot::Array);
                names.clone()
            }
            InputShape::Window { field, .. } => {
                slots.insert(field.as_str().into(), Slot::Value(0));
                vec![field.clone()]
            }
        };
        Decoder { slots, names }
    }

    /// How many values a decoded record carries.
    pub fn width(&self) -> usize {
        self.names.len()
    }

    /// Decodes one JSON object. A leading UTF-8 byte order mark is ignored (RFC 8259
    /// allows a parser to).
    pub fn decode(&self, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let payload = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
        let mut out = Decoded {
            key: None,
            timestamp: Timestamp::None,
            values: vec![f32::NAN; self.names.len()],
        };
        let mut failure = None;
        let mut de = sonic_rs::Deserializer::from_slice(payload);
        let parsed = RecordSeed {
            decoder: self,
            out: &mut out,
            failure: &mut failure,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if let Err(e) = parsed {
            return Err(failure.unwrap_or_else(|| json_error(&e)));
        }
        if let Some(i) = out.values.iter().position(|v| v.is_nan()) {
            return Err(DecodeError::new(
                DecodeErrorCode::MissingField,
                format!("field `{}` is missing", self.names[i]),
            ));
        }
        Ok(out)
    }

    /// Decodes one value given as text (CSV cells), with the same codes as JSON.
    pub fn parse_text_value(&self, index: usize, text: &str) -> Result<f32, DecodeError> {
        let v: f64 = text.trim().parse().map_err(|_| {
            DecodeError::new(
                DecodeErrorCode::NotANumber,
                format!("field `{}` is {text:?}, not a number", self.names[index]),
            )
        })?;
        finite(&self.names[index], v)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// A value the model can take: NaN and infinities are `not_finite`; a finite number beyond
/// the 32-bit float range (about 3.4e38) is `out_of_range`, since it would become infinite.
fn finite(name: &str, v: f64) -> Result<f32, DecodeError> {
    if !v.is_finite() {
        return Err(DecodeError::new(
            DecodeErrorCode::NotFinite,
            format!("field `{name}` is {v}, not a finite number"),
        ));
    }
    let f = v as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(DecodeError::new(
            DecodeErrorCode::OutOfRange,
            format!("field `{name}` is {v}, beyond the 32-bit float range"),
        ))
    }
}

/// A JSON syntax error; a number literal beyond even the 64-bit float range (`1e309`) is
/// reported as `out_of_range`, like one beyond the 32-bit range.
fn json_error(e: &sonic_rs::Error) -> DecodeError {
    let detail = e.to_string();
    // sonic-rs's messages for a literal beyond f64 (its NumberOutOfRange, FloatMustBeFinite).
    let code = if detail.starts_with("Number is bigger than the maximum value")
        || detail.starts_with("Float number must be finite")
    {
        DecodeErrorCode::OutOfRange
    } else {
        DecodeErrorCode::InvalidJson
    };
    DecodeError::new(code, detail)
}

/// Records the precise failure, and aborts the parse with a serde error.
fn fail<E: de::Error>(failure: &mut Option<DecodeError>, err: DecodeError) -> E {
    let msg = err.to_string();
    *failure = Some(err);
    E::custom(msg)
}

struct RecordSeed<'a> {
    decoder: &'a Decoder,
    out: &'a mut Decoded,
    failure: &'a mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(slot) = map.next_key_seed(KeySeed(self.decoder))? {
            match slot {
                Some(Slot::Value(i)) => {
                    let name = &self.decoder.names[i];
                    let v = map.next_value_seed(NumberSeed {
                        name,
                        failure: self.failure,
                    })?;
                    self.out.values[i] = v;
                }
                Some(Slot::Array) => map.next_value_seed(ArraySeed {
                    names: &self.decoder.names,
                    values: &mut self.out.values,
                    failure: self.failure,
                })?,
                Some(Slot::Key) => {
                    self.out.key = map.next_value_seed(KeyValueSeed {
                        failure: self.failure,
                    })?;
                }
                Some(Slot::Timestamp) => {
                    self.out.timestamp = map.next_value_seed(TimestampSeed {
                        failure: self.failure,
                    })?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Maps an object key to its role without allocating.
struct KeySeed<'a>(&'a Decoder);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<Slot>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Slot>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<Slot>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Slot>, E> {
        Ok(self.0.slots.get(v).copied())
    }
}

struct NumberSeed<'a> {
    name: &'a str,
    failure: &'a mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for NumberSeed<'_> {
    type Value = f32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumberSeed<'_> {
    type Value = f32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f32, E> {
        finite(self.name, v).map_err(|e| fail(self.failure, e))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f32, E> {
        Ok(v as f32)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f32, E> {
        Ok(v as f32)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f32, E> {
        Err(self.not_a_number(&format!("the string {v:?}")))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<f32, E> {
        Err(self.not_a_number(&v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f32, E> {
        Err(self.not_a_number("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<f32, A::Error> {
        Err(self.not_a_number("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<f32, A::Error> {
        Err(self.not_a_number("an object"))
    }
}

impl NumberSeed<'_> {
    fn not_a_number<E: de::Error>(self, what: &str) -> E {
        let err = DecodeError::new(
            DecodeErrorCode::NotANumber,
            format!("field `{}` is {what}, not a number", self.name),
        );
        fail(self.failure, err)
    }
}

struct ArraySeed<'a> {
    names: &'a [String],
    values: &'a mut [f32],
    failure: &'a mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {} numbers", self.names.len())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0;
        loop {
            let name = self.names.get(n).map(String::as_str).unwrap_or("extra");
            let seed = NumberSeed {
                name,
                failure: &mut *self.failure,
            };
            match seq.next_element_seed(seed)? {
                Some(v) if n < self.values.len() => self.values[n] = v,
                Some(_) => {}
                None => break,
            }
            n += 1;
        }
        if n != self.values.len() {
            let err = DecodeError::new(
                DecodeErrorCode::WrongLength,
                format!("array has {n} values, expected {}", self.values.len()),
            );
            return Err(fail(self.failure, err));
        }
        Ok(())
    }
}

struct KeyValueSeed<'a> {
    failure: &'a mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for KeyValueSeed<'_> {
    type Value = Option<Box<str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyValueSeed<'_> {
    type Value = Option<Box<str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or number key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string().into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string().into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string().into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.invalid())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.invalid())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.invalid())
    }
}

impl KeyValueSeed<'_> {
    fn invalid<E: de::Error>(self) -> E {
        let err = DecodeError::new(DecodeErrorCode::InvalidKey, "key is not a string or number");
        fail(self.failure, err)
    }
}

struct TimestampSeed<'a> {
    failure: &'a mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for TimestampSeed<'_> {
    type Value = Timestamp;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TimestampSeed<'_> {
    type Value = Timestamp;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or number timestamp")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        Ok(Timestamp::Text(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
        Ok(Timestamp::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        Ok(Timestamp::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
        Ok(Timestamp::Number(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Timestamp, E> {
        Ok(Timestamp::None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Timestamp, E> {
        Err(self.invalid())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Timestamp, A::Error> {
        Err(self.invalid())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Timestamp, A::Error> {
        Err(self.invalid())
    }
}

impl TimestampSeed<'_> {
    fn invalid<E: de::Error>(self) -> E {
        let err = DecodeError::new(
            DecodeErrorCode::InvalidTimestamp,
            "timestamp is not a string or number",
        );
        fail(self.failure, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: InputShape) -> InputSpec {
        InputSpec {
            shape,
            key_field: Some("host".into()),
            timestamp_field: Some("ts".into()),
        }
    }

    fn fields() -> Decoder {
        Decoder::new(&spec(InputShape::Fields {
            names: vec!["cpu".into(), "mem".into()],
        }))
    }

    fn code(d: &Decoder, s: &str) -> DecodeErrorCode {
        d.decode(s.as_bytes()).expect_err(s).code
    }

    #[test]
    fn decodes_fields_in_configured_order() {
        let d = fields();
        let r = d
            .decode(br#"{"mem": 2.5, "x": {"deep": [1, 2]}, "host": "a", "cpu": 3, "ts": "2024-01-01"}"#)
            .expect("valid");
        assert_eq!(r.values, vec![3.0, 2.5]);
        assert_eq!(r.key.as_deref(), Some("a"));
        assert_eq!(r.timestamp, Timestamp::Text("2024-01-01".into()));
    }

    #[test]
    fn numeric_key_and_timestamp() {
        let r = fields()
            .decode(br#"{"cpu": 1, "mem": 2, "host": 17, "ts": 1700000000000}"#)
            .expect("valid");
        assert_eq!(r.key.as_deref(), Some("17"));
        assert_eq!(r.timestamp, Timestamp::Number(1.7e12));
    }

    #[test]
    fn escaped_field_names_match() {
        let r = fields()
            .decode(br#"{"c\u0070u": 1, "mem": 2}"#)
            .expect("valid");
        assert_eq!(r.values, vec![1.0, 2.0]);
    }

    #[test]
    fn error_codes() {
        let d = fields();
        assert_eq!(code(&d, "{not json"), DecodeErrorCode::InvalidJson);
        assert_eq!(code(&d, "[1, 2]"), DecodeErrorCode::InvalidJson);
        assert_eq!(
            code(&d, r#"{"cpu": 1, "mem": 2} trailing"#),
            DecodeErrorCode::InvalidJson
        );
        assert_eq!(code(&d, r#"{"cpu": 1}"#), DecodeErrorCode::MissingField);
        assert_eq!(
            code(&d, r#"{"cpu": "1", "mem": 2}"#),
            DecodeErrorCode::NotANumber
        );
        assert_eq!(
            code(&d, r#"{"cpu": "NaN", "mem": 2}"#),
            DecodeErrorCode::NotANumber
        );
        assert_eq!(
            code(&d, r#"{"cpu": null, "mem": 2}"#),
            DecodeErrorCode::NotANumber
        );
        assert_eq!(
            code(&d, r#"{"cpu": 1e300, "mem": 2}"#),
            DecodeErrorCode::OutOfRange
        );
        assert_eq!(
            code(&d, r#"{"cpu": -3.5e38, "mem": 2}"#),
            DecodeErrorCode::OutOfRange
        );
        assert_eq!(
            code(&d, r#"{"cpu": 1e309, "mem": 2}"#),
            DecodeErrorCode::OutOfRange
        );
        assert_eq!(
            code(&d, r#"{"cpu": NaN, "mem": 2}"#),
            DecodeErrorCode::InvalidJson
        );
        // The largest finite 32-bit value and a u64 counter glitch are in range.
        assert!(
            d.decode(br#"{"cpu": 3.4e38, "mem": 18446744073709551615}"#)
                .is_ok()
        );
        // A byte order mark is skipped.
        assert!(d.decode(b"\xEF\xBB\xBF{\"cpu\": 1, \"mem\": 2}").is_ok());
        assert_eq!(
            code(&d, r#"{"cpu": 1, "mem": 2, "host": [1]}"#),
            DecodeErrorCode::InvalidKey
        );
        assert_eq!(
            code(&d, r#"{"cpu": 1, "mem": 2, "ts": {}}"#),
            DecodeErrorCode::InvalidTimestamp
        );
        let missing = d.decode(br#"{"mem": 1}"#).expect_err("missing");
        assert!(missing.detail.contains("cpu"), "{missing}");
    }

    #[test]
    fn array_field() {
        let d = Decoder::new(&spec(InputShape::Array {
            field: "v".into(),
            names: vec!["a".into(), "b".into(), "c".into()],
        }));
        assert_eq!(
            d.decode(br#"{"v": [1, 2, 3]}"#).expect("valid").values,
            vec![1.0, 2.0, 3.0]
        );
        assert_eq!(code(&d, r#"{"v": [1, 2]}"#), DecodeErrorCode::WrongLength);
        assert_eq!(
            code(&d, r#"{"v": [1, 2, 3, 4]}"#),
            DecodeErrorCode::WrongLength
        );
        assert_eq!(
            code(&d, r#"{"v": [1, "x", 3]}"#),
            DecodeErrorCode::NotANumber
        );
        assert_eq!(
            code(&d, r#"{"w": [1, 2, 3]}"#),
            DecodeErrorCode::MissingField
        );
    }

    #[test]
    fn text_values() {
        let d = fields();
        assert_eq!(d.parse_text_value(0, " 4.5 ").expect("number"), 4.5);
        assert_eq!(
            d.parse_text_value(1, "abc").expect_err("text").code,
            DecodeErrorCode::NotANumber
        );
        assert_eq!(
            d.parse_text_value(1, "NaN").expect_err("nan").code,
            DecodeErrorCode::NotFinite
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// A JSON value of any kind, nested a little.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>()
                    .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                    .prop_map(serde_json::Value::from),
                ".{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map("(cpu|mem|host|ts|[a-z]{1,3})", inner, 0..5)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn decoder() -> Decoder {
            // Key "host" and timestamp "ts" too (see `spec`).
            Decoder::new(&spec(InputShape::Fields {
                names: vec!["cpu".into(), "mem".into()],
            }))
        }

        /// Every outcome is a record of finite values or an error with a code and a
        /// detail: never a panic.
        fn check(d: &Decoder, bytes: &[u8]) -> Result<(), TestCaseError> {
            match d.decode(bytes) {
                Ok(r) => {
                    prop_assert_eq!(r.values.len(), 2);
                    prop_assert!(r.values.iter().all(|v| v.is_finite()), "{:?}", r.values);
                }
                Err(e) => {
                    prop_assert!(DecodeErrorCode::ALL.contains(&e.code));
                    prop_assert!(!e.detail.is_empty());
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                check(&decoder(), &bytes)?;
            }

            #[test]
            fn arbitrary_json_never_panics(v in json_value()) {
                let text = serde_json::to_vec(&v).expect("json");
                check(&decoder(), &text)?;
                // Cut anywhere: still a code, never a panic.
                for cut in [1, text.len() / 2, text.len().saturating_sub(1)] {
                    check(&decoder(), &text[..cut.min(text.len())])?;
                }
            }

            #[test]
            fn records_with_numbers_decode_to_their_values(
                cpu in -1e30f64..1e30, mem in any::<i32>(), host in "[a-z0-9-]{0,16}",
            ) {
                let text = serde_json::json!({"mem": mem, "cpu": cpu, "host": host}).to_string();
                let r = decoder().decode(text.as_bytes()).expect("valid record");
                prop_assert_eq!(r.values, vec![cpu as f32, mem as f32]);
                prop_assert_eq!(r.key.as_deref(), Some(host.as_str()));
            }
        }
    }
}
