//! Go-compatible decoding for serde payloads ([`Decoding::Go`](super::Decoding::Go)).
//!
//! The payload is read once into a [`Content`] tree (strings and bytes borrowed from the
//! payload where the format allows), then the target type is deserialized from that tree
//! with the semantics of Go's `encoding/json` (JSON) and `vmihailenco/msgpack/v5`
//! (MsgPack), which are what a Go rpcx server applies:
//!
//! * a struct field missing from the payload gets its zero value (`0`, `""`, `false`,
//!   empty sequence or map, `None`, a struct of zeros), with or without `#[serde(default)]`;
//! * `null` / `nil` is the zero value (a field, a nested struct, the whole payload);
//! * duplicate keys: the last one wins;
//! * JSON keys match struct fields exactly first, then case-insensitively (Go's folding);
//!   MsgPack keys match exactly and must be strings (str, bin or nil), as in Go;
//! * bytes after the first JSON value are ignored (Go's codec uses one `json.Decoder`
//!   read); the MsgPack codec also reads one value;
//! * MsgPack integers are converted to the field's integer type with wrap-around, as Go's
//!   `reflect.Value.SetInt` / `SetUint` do (a `uint64` above `i64::MAX` into `i64`);
//! * a JSON array is not a struct (Go rejects it); a MsgPack array is a struct only when
//!   empty (zero value) or exactly as long as the field list (positional), as in Go.
//!
//! Unknown fields are skipped (they still reach the derived impl, so aliases work and
//! `deny_unknown_fields` still rejects them).

use serde::Deserialize;
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Which Go codec's rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    MsgPack,
}

/// One decoded value of either format.
#[derive(Debug)]
pub(crate) enum Content<'de> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'de, str>),
    Bytes(Cow<'de, [u8]>),
    Seq(Vec<Content<'de>>),
    Map(Vec<(Content<'de>, Content<'de>)>),
}

impl<'de> Deserialize<'de> for Content<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

/// Cap on what a length hint may pre-allocate (the hint comes from the peer).
const MAX_PREALLOC: usize = 1024;

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Content::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Content::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Content::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Content::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Str(Cow::Borrowed(v)))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content::Str(Cow::Owned(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Content::Bytes(Cow::Owned(v.to_vec())))
    }
    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Content::Bytes(Cow::Borrowed(v)))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Content::Bytes(Cow::Owned(v)))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Content::Null)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Content::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Content::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Content::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(c) = seq.next_element()? {
            v.push(c);
        }
        Ok(Content::Seq(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(kv) = map.next_entry()? {
            v.push(kv);
        }
        Ok(Content::Map(v))
    }
}

impl Content<'_> {
    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Content::Null => Unexpected::Unit,
            Content::Bool(b) => Unexpected::Bool(*b),
            Content::U64(n) => Unexpected::Unsigned(*n),
            Content::I64(n) => Unexpected::Signed(*n),
            Content::F64(n) => Unexpected::Float(*n),
            Content::Str(s) => Unexpected::Str(s),
            Content::Bytes(b) => Unexpected::Bytes(b),
            Content::Seq(_) => Unexpected::Seq,
            Content::Map(_) => Unexpected::Map,
        }
    }
}

/// Go's `encoding/json` key folding (`foldName`): ASCII letters upper-cased, other
/// characters mapped through lower then upper case.
pub(crate) fn fold(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() {
                return c.to_ascii_uppercase();
            }
            let mut lower = c.to_lowercase();
            let l = match (lower.next(), lower.next()) {
                (Some(l), None) => l,
                _ => c,
            };
            let mut upper = l.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => l,
            }
        })
        .collect()
}

/// Deserializes a [`Content`] with Go's semantics; `E` is the format's error type.
pub(crate) struct ContentDe<'de, E> {
    content: Content<'de>,
    format: Format,
    marker: PhantomData<E>,
}

impl<'de, E> ContentDe<'de, E> {
    pub(crate) fn new(content: Content<'de>, format: Format) -> Self {
        Self { content, format, marker: PhantomData }
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            match self.content {
                Content::Null => v.$visit(0),
                // Go's msgpack decodes any integer into any integer field, wrapping.
                Content::U64(n) if self.format == Format::MsgPack => v.$visit(n as $ty),
                Content::I64(n) if self.format == Format::MsgPack => v.$visit(n as $ty),
                _ => self.deserialize_any(v),
            }
        }
    };
}

macro_rules! zero_or_any {
    ($method:ident, $zero:expr) => {
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            match self.content {
                Content::Null => $zero(v, self.format),
                _ => self.deserialize_any(v),
            }
        }
    };
}

impl<'de, E: de::Error> Deserializer<'de> for ContentDe<'de, E> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        let format = self.format;
        match self.content {
            Content::Null => v.visit_unit(),
            Content::Bool(b) => v.visit_bool(b),
            Content::U64(n) => v.visit_u64(n),
            Content::I64(n) => v.visit_i64(n),
            Content::F64(n) => v.visit_f64(n),
            Content::Str(Cow::Borrowed(s)) => v.visit_borrowed_str(s),
            Content::Str(Cow::Owned(s)) => v.visit_string(s),
            Content::Bytes(Cow::Borrowed(b)) => v.visit_borrowed_bytes(b),
            Content::Bytes(Cow::Owned(b)) => v.visit_byte_buf(b),
            Content::Seq(items) => v.visit_seq(SeqDe::new(items, format)),
            Content::Map(entries) => v.visit_map(MapDe::new(entries, format)),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    zero_or_any!(deserialize_bool, |v: V, _| v.visit_bool(false));
    zero_or_any!(deserialize_f32, |v: V, _| v.visit_f32(0.0));
    zero_or_any!(deserialize_f64, |v: V, _| v.visit_f64(0.0));
    zero_or_any!(deserialize_str, |v: V, _| v.visit_borrowed_str(""));
    zero_or_any!(deserialize_string, |v: V, _| v.visit_borrowed_str(""));
    zero_or_any!(deserialize_bytes, |v: V, _| v.visit_borrowed_bytes(&[]));
    zero_or_any!(deserialize_byte_buf, |v: V, _| v.visit_borrowed_bytes(&[]));
    zero_or_any!(deserialize_seq, |v: V, f| v.visit_seq(SeqDe::<E>::new(Vec::new(), f)));
    zero_or_any!(deserialize_map, |v: V, f| v.visit_map(MapDe::<E>::new(Vec::new(), f)));

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_any(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        match self.content {
            Content::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_any(v)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value, E> {
        self.deserialize_any(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value, E> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, E> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _name: &'static str, _len: usize, v: V) -> Result<V::Value, E> {
        self.deserialize_seq(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, E> {
        let format = self.format;
        match self.content {
            Content::Null => v.visit_map(StructDe::<E>::new(fields, Vec::new(), format, name)?),
            Content::Map(entries) => v.visit_map(StructDe::<E>::new(fields, entries, format, name)?),
            Content::Seq(items) if format == Format::MsgPack => {
                if items.is_empty() {
                    v.visit_map(StructDe::<E>::new(fields, Vec::new(), format, name)?)
                } else if items.len() == fields.len() {
                    v.visit_seq(SeqDe::new(items, format))
                } else {
                    Err(E::custom(format_args!(
                        "msgpack: struct {name} has {} fields, array has {} elements",
                        fields.len(),
                        items.len()
                    )))
                }
            }
            other => Err(E::invalid_type(other.unexpected(), &v)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, E> {
        let format = self.format;
        match self.content {
            Content::Str(s) => v.visit_enum(de::IntoDeserializer::<E>::into_deserializer(s.into_owned())),
            Content::Map(entries) if entries.len() == 1 => {
                v.visit_enum(MapAccessDeserializer::new(MapDe::<E>::new(entries, format)))
            }
            other => Err(E::invalid_type(other.unexpected(), &v)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_any(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        v.visit_unit()
    }
}

struct SeqDe<'de, E> {
    items: std::vec::IntoIter<Content<'de>>,
    format: Format,
    marker: PhantomData<E>,
}

impl<'de, E> SeqDe<'de, E> {
    fn new(items: Vec<Content<'de>>, format: Format) -> Self {
        Self { items: items.into_iter(), format, marker: PhantomData }
    }
}

impl<'de, E: de::Error> SeqAccess<'de> for SeqDe<'de, E> {
    type Error = E;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, E> {
        match self.items.next() {
            Some(c) => seed.deserialize(ContentDe::new(c, self.format)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'de, E> {
    entries: std::vec::IntoIter<(Content<'de>, Content<'de>)>,
    value: Option<Content<'de>>,
    format: Format,
    marker: PhantomData<E>,
}

impl<'de, E> MapDe<'de, E> {
    fn new(entries: Vec<(Content<'de>, Content<'de>)>, format: Format) -> Self {
        Self { entries: entries.into_iter(), value: None, format, marker: PhantomData }
    }
}

impl<'de, E: de::Error> MapAccess<'de> for MapDe<'de, E> {
    type Error = E;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, E> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(ContentDe::new(k, self.format)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, E> {
        let v = self.value.take().ok_or_else(|| E::custom("map value requested before its key"))?;
        seed.deserialize(ContentDe::new(v, self.format))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A struct's map as the derived impl sees it: every declared field once (the last
/// occurrence, or `Null` = zero when absent), then the unknown keys.
struct StructDe<'de, E> {
    fields: std::iter::Enumerate<std::slice::Iter<'static, &'static str>>,
    slots: Vec<Option<Content<'de>>>,
    extra: MapDe<'de, E>,
    value: Option<Content<'de>>,
    format: Format,
}

impl<'de, E: de::Error> StructDe<'de, E> {
    fn new(
        fields: &'static [&'static str],
        entries: Vec<(Content<'de>, Content<'de>)>,
        format: Format,
        name: &'static str,
    ) -> Result<Self, E> {
        let mut slots: Vec<Option<Content<'de>>> = fields.iter().map(|_| None).collect();
        let mut extra = Vec::new();
        let mut folded: Option<Vec<String>> = None;
        for (k, v) in entries {
            let key: Cow<'de, [u8]> = match k {
                Content::Str(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
                Content::Str(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
                Content::Bytes(b) if format == Format::MsgPack => b,
                Content::Null if format == Format::MsgPack => Cow::Borrowed(&[]),
                other => {
                    return Err(E::custom(format_args!(
                        "struct {name}: a field name must be a string, got {}",
                        other.unexpected()
                    )));
                }
            };
            let mut slot = fields.iter().position(|f| f.as_bytes() == &*key);
            if slot.is_none()
                && format == Format::Json
                && let Ok(k) = std::str::from_utf8(&key)
            {
                let folded = folded.get_or_insert_with(|| fields.iter().map(|f| fold(f)).collect());
                let fk = fold(k);
                slot = folded.iter().position(|f| *f == fk);
            }
            match slot {
                Some(i) => slots[i] = Some(v),
                None => {
                    let key = match key {
                        Cow::Borrowed(b) => Content::Bytes(Cow::Borrowed(b)),
                        Cow::Owned(b) => Content::Bytes(Cow::Owned(b)),
                    };
                    extra.push((key, v));
                }
            }
        }
        Ok(Self { fields: fields.iter().enumerate(), slots, extra: MapDe::new(extra, format), value: None, format })
    }
}

impl<'de, E: de::Error> MapAccess<'de> for StructDe<'de, E> {
    type Error = E;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, E> {
        match self.fields.next() {
            Some((i, name)) => {
                self.value = Some(self.slots[i].take().unwrap_or(Content::Null));
                seed.deserialize(BorrowedStrDeserializer::new(name)).map(Some)
            }
            None => self.extra.next_key_seed(seed),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, E> {
        match self.value.take() {
            Some(v) => seed.deserialize(ContentDe::new(v, self.format)),
            None => self.extra.next_value_seed(seed),
        }
    }
}

/// Decode one JSON value with Go's semantics; bytes after it are not read.
pub(crate) fn from_json<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let content = Content::deserialize(&mut de)?;
    T::deserialize(ContentDe::<serde_json::Error>::new(content, Format::Json))
}

/// Decode one MsgPack value with Go's semantics; bytes after it are not read.
pub(crate) fn from_msgpack<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    let content = Content::deserialize(&mut de)?;
    T::deserialize(ContentDe::<rmp_serde::decode::Error>::new(content, Format::MsgPack))
}
