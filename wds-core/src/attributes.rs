//! Attributes: the fields of a line beyond `userId` and `alertMessage`
//! (the extra columns of a CSV file with a header, the extra fields of a
//! JSON object), carried with the message to the sink.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Most attributes one line may carry.
pub const MAX_ATTRIBUTES: usize = 32;

/// Longest attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 64;

/// Most bytes one line's attributes may take in all: the sum, over its
/// attributes, of the name's length and the value's (a string's UTF-8
/// length, any other value's compact JSON text).
pub const MAX_ATTRIBUTES_BYTES: usize = 4096;

/// The names a line's own fields use, which no attribute may take: the
/// webhook body has them at its top level beside the attributes.
pub const RESERVED_NAMES: [&str; 2] = ["userId", "alertMessage"];

/// The attributes of a record or message: named JSON values, in the order
/// the input gave them (CSV values are strings; JSON fields keep their JSON
/// type).
///
/// Every `Attributes` keeps the limits: at most [`MAX_ATTRIBUTES`] names,
/// each non-empty, at most [`MAX_ATTRIBUTE_NAME_BYTES`] long and without
/// control characters, distinct, none of [`RESERVED_NAMES`], and at most
/// [`MAX_ATTRIBUTES_BYTES`] in all. [`push`](Attributes::push) refuses what
/// would break them, and so does deserializing.
///
/// Serialized as a JSON object in that order; a record or message with no
/// attributes serializes exactly as before attributes existed.
///
/// ```
/// use serde_json::json;
/// use wds_core::{parse::Record, Attributes, JobId, Message};
///
/// let mut attributes = Attributes::new();
/// attributes.push("orderId", json!("A-17"))?;
/// attributes.push("items", json!(3))?;
/// assert!(attributes.push("userId", json!("x")).is_err());
///
/// let record = Record::new(2, "u1", "Your order shipped").with_attributes(attributes);
/// let message = Message::new(&JobId::from_identity("orders.csv"), record);
/// assert_eq!(message.attributes.get("orderId"), Some(&json!("A-17")));
/// let names: Vec<&str> = message.attributes.iter().map(|(name, _)| name).collect();
/// assert_eq!(names, ["orderId", "items"]);
/// # Ok::<(), wds_core::AttributeError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Names and values in order. An empty `Vec` does not allocate: a
    /// message without attributes costs the three words of this field.
    pairs: Vec<(String, Value)>,
}

/// Why an attribute was refused; its `Display` is the reason an invalid
/// line is reported with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    /// The name is empty.
    #[error("an attribute name is empty")]
    EmptyName,
    /// The name is longer than [`MAX_ATTRIBUTE_NAME_BYTES`].
    #[error("attribute name {name:?} is {len} bytes, longer than the limit of {limit} bytes")]
    NameTooLong {
        /// The name, cut to the limit.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The name contains a control or bidirectional-text character.
    #[error("attribute name {name:?} contains a control character (U+{code:04X})")]
    NameControl {
        /// The name.
        name: String,
        /// The character's code point.
        code: u32,
    },
    /// The name is one of [`RESERVED_NAMES`].
    #[error("{name} cannot be an attribute: the message has its own {name}")]
    Reserved {
        /// The name.
        name: String,
    },
    /// The name is already taken.
    #[error("attribute {name:?} is given twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("more than {limit} attributes")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_ATTRIBUTES_BYTES`] in all.
    #[error("attributes take more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// Why `name` may not name an attribute, if it may not (whatever else the
/// attributes hold).
fn name_problem(name: &str) -> Option<AttributeError> {
    if name.is_empty() {
        return Some(AttributeError::EmptyName);
    }
    if name.len() > MAX_ATTRIBUTE_NAME_BYTES {
        let mut cut = MAX_ATTRIBUTE_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        return Some(AttributeError::NameTooLong {
            name: name[..cut].to_string(),
            len: name.len(),
            limit: MAX_ATTRIBUTE_NAME_BYTES,
        });
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || crate::parse::text::is_bidi_control(c))
    {
        return Some(AttributeError::NameControl {
            name: name.escape_debug().to_string(),
            code: c as u32,
        });
    }
    if RESERVED_NAMES.contains(&name) {
        return Some(AttributeError::Reserved { name: name.into() });
    }
    None
}

/// The bytes a value counts for against [`MAX_ATTRIBUTES_BYTES`].
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Null => 4,
        Value::Bool(b) => 4 + usize::from(!b),
        Value::Number(n) => n.to_string().len(),
        other => serde_json::to_string(other).map_or(usize::MAX, |s| s.len()),
    }
}

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Attributes::default()
    }

    /// Attributes from name and value pairs, in order.
    ///
    /// # Errors
    ///
    /// The first pair that [`push`](Attributes::push) refuses.
    pub fn try_from_pairs<K, V>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, AttributeError>
    where
        K: Into<String>,
        V: Into<Value>,
    {
        let mut attributes = Attributes::new();
        for (name, value) in pairs {
            attributes.push(name, value)?;
        }
        Ok(attributes)
    }

    /// Adds an attribute after the others.
    ///
    /// # Errors
    ///
    /// A name that is empty, too long, has a control character or is
    /// reserved, one already present, or one
    /// attribute too many or too large (see the [limits](Attributes)).
    /// Nothing is added then.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), AttributeError> {
        let name = name.into();
        if let Some(problem) = name_problem(&name) {
            return Err(problem);
        }
        if self.get(&name).is_some() {
            return Err(AttributeError::Duplicate { name });
        }
        if self.pairs.len() >= MAX_ATTRIBUTES {
            return Err(AttributeError::TooMany {
                limit: MAX_ATTRIBUTES,
            });
        }
        let value = value.into();
        let bytes = self
            .size()
            .saturating_add(name.len())
            .saturating_add(value_bytes(&value));
        if bytes > MAX_ATTRIBUTES_BYTES {
            return Err(AttributeError::TooLarge {
                limit: MAX_ATTRIBUTES_BYTES,
            });
        }
        self.pairs.push((name, value));
        Ok(())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// The value of the attribute `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Names and values, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The bytes they count for against [`MAX_ATTRIBUTES_BYTES`].
    pub fn size(&self) -> usize {
        self.pairs
            .iter()
            .map(|(name, value)| name.len().saturating_add(value_bytes(value)))
            .fold(0, usize::saturating_add)
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a str, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.pairs.len()))?;
        for (name, value) in &self.pairs {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;
        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut attributes = Attributes::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    attributes.push(name, value).map_err(de::Error::custom)?;
                }
                Ok(attributes)
            }
        }
        deserializer.deserialize_map(AttributesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_is_kept_and_values_keep_their_type() {
        let a = Attributes::try_from_pairs([
            ("z", json!("last letter")),
            ("a", json!(1)),
            ("m", json!({"k": [true, null]})),
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"z":"last letter","a":1,"m":{"k":[true,null]}}"#
        );
        let back: Attributes =
            serde_json::from_str(r#"{"z":"last letter","a":1,"m":{"k":[true,null]}}"#).unwrap();
        assert_eq!(back, a);
        assert_eq!(a.get("a"), Some(&json!(1)));
        assert_eq!(a.get("b"), None);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn names_are_checked() {
        let mut a = Attributes::new();
        assert_eq!(a.push("", "x"), Err(AttributeError::EmptyName));
        assert_eq!(
            a.push("userId", "x"),
            Err(AttributeError::Reserved {
                name: "userId".into()
            })
        );
        assert!(matches!(
            a.push("alertMessage", "x"),
            Err(AttributeError::Reserved { .. })
        ));
        assert!(matches!(
            a.push("a\tb", "x"),
            Err(AttributeError::NameControl { code: 9, .. })
        ));
        assert!(a.push("n".repeat(MAX_ATTRIBUTE_NAME_BYTES), "x").is_ok());
        let long = "é".repeat(MAX_ATTRIBUTE_NAME_BYTES / 2 + 1);
        assert!(matches!(
            a.push(long, "x"),
            Err(AttributeError::NameTooLong { len: 66, .. })
        ));
        a.push("k", "1").unwrap();
        assert_eq!(
            a.push("k", "2"),
            Err(AttributeError::Duplicate { name: "k".into() })
        );
        assert_eq!(a.len(), 2);
        // Deserializing keeps the same rules.
        assert!(serde_json::from_str::<Attributes>(r#"{"userId":"x"}"#).is_err());
        assert!(serde_json::from_str::<Attributes>(r#"{"a":1,"a":2}"#).is_err());
    }

    #[test]
    fn count_and_size_are_limited() {
        let mut a = Attributes::new();
        for i in 0..MAX_ATTRIBUTES {
            a.push(format!("a{i}"), "v").unwrap();
        }
        assert_eq!(
            a.push("one_more", "v"),
            Err(AttributeError::TooMany {
                limit: MAX_ATTRIBUTES
            })
        );
        // Exactly the limit fits: 1 byte of name and the rest of value.
        let mut a = Attributes::new();
        a.push("n", "x".repeat(MAX_ATTRIBUTES_BYTES - 1)).unwrap();
        assert_eq!(a.size(), MAX_ATTRIBUTES_BYTES);
        assert_eq!(
            a.push("m", json!(null)),
            Err(AttributeError::TooLarge {
                limit: MAX_ATTRIBUTES_BYTES
            })
        );
        let mut a = Attributes::new();
        assert!(a.push("n", "x".repeat(MAX_ATTRIBUTES_BYTES)).is_err());
        // Other values count as their JSON text.
        let mut a = Attributes::new();
        a.push("b", json!(false)).unwrap();
        a.push("n", json!(-12.5)).unwrap();
        a.push("o", json!({"k": "v"})).unwrap();
        assert_eq!(a.size(), 1 + 5 + 1 + 5 + 1 + 9);
    }
}
