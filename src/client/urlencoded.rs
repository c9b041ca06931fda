//! `application/x-www-form-urlencoded` from any `Serialize` value, for the
//! client handle's `query` and `form`.
//!
//! The crate's own rather than `serde_urlencoded`: that crate turns on
//! `form_urlencoded`'s `default` feature, a feature set a user's `url`
//! (below reqwest) does not have, so adding tower-lb would compile `url`,
//! `reqwest` and `tower-http` again in the user's build. The accepted
//! shapes are serde_urlencoded's: a struct, a map, or a sequence of
//! `(key, value)` pairs, at the top; scalars (strings, numbers, booleans,
//! chars, unit enum variants) as keys and values; `None` values leave the
//! pair out.

use std::fmt::{self, Write as _};

use serde::ser::{self, Impossible, Serialize};

/// Why a value could not be encoded as pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlEncodeError(String);

impl fmt::Display for UrlEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlEncodeError {}

impl ser::Error for UrlEncodeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

fn unsupported<T>(what: &str, place: &str) -> Result<T, UrlEncodeError> {
    Err(UrlEncodeError(format!(
        "{what} cannot be {place} of a URL-encoded form"
    )))
}

/// `value` as `key=value&key=value`, percent-encoded.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String, UrlEncodeError> {
    let mut out = String::new();
    value.serialize(Pairs { out: &mut out })?;
    Ok(out)
}

/// Appends `bytes` form-encoded: ASCII letters, digits and `*-._` as they
/// are, a space as `+`, every other byte as `%XX` (the WHATWG URL
/// standard's application/x-www-form-urlencoded serializer).
fn push_encoded(out: &mut String, text: &str) {
    for &byte in text.as_bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                // Writing into a String cannot fail.
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
}

fn push_pair(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    push_encoded(out, key);
    out.push('=');
    push_encoded(out, value);
}

/// The top level: a struct, a map or a sequence of pairs.
struct Pairs<'a> {
    out: &'a mut String,
}

macro_rules! top_level_unsupported {
    ($($method:ident($($arg:ty),*) $what:literal;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), UrlEncodeError> {
            unsupported($what, "the top level")
        })*
    };
}

impl<'a> ser::Serializer for Pairs<'a> {
    type Ok = ();
    type Error = UrlEncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), UrlEncodeError>;
    type SerializeMap = MapPairs<'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), UrlEncodeError>;

    top_level_unsupported! {
        serialize_bool(bool) "a boolean";
        serialize_i8(i8) "a number";
        serialize_i16(i16) "a number";
        serialize_i32(i32) "a number";
        serialize_i64(i64) "a number";
        serialize_u8(u8) "a number";
        serialize_u16(u16) "a number";
        serialize_u32(u32) "a number";
        serialize_u64(u64) "a number";
        serialize_f32(f32) "a number";
        serialize_f64(f64) "a number";
        serialize_char(char) "a character";
        serialize_str(&str) "a string";
        serialize_bytes(&[u8]) "bytes";
        serialize_unit_variant(&'static str, u32, &'static str) "an enum variant";
    }

    fn serialize_none(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), UrlEncodeError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), UrlEncodeError> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), UrlEncodeError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), UrlEncodeError> {
        unsupported("an enum variant", "the top level")
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, UrlEncodeError> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, UrlEncodeError> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, UrlEncodeError> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, UrlEncodeError> {
        unsupported("an enum variant", "the top level")
    }

    fn serialize_map(self, _: Option<usize>) -> Result<MapPairs<'a>, UrlEncodeError> {
        Ok(MapPairs {
            out: self.out,
            key: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, UrlEncodeError> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, UrlEncodeError> {
        unsupported("an enum variant", "the top level")
    }
}

/// Each element of a top-level sequence is one `(key, value)` pair.
impl ser::SerializeSeq for Pairs<'_> {
    type Ok = ();
    type Error = UrlEncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, pair: &T) -> Result<(), UrlEncodeError> {
        let mut collected = PairParts::default();
        pair.serialize(&mut collected)?;
        match collected {
            PairParts {
                key: Some(key),
                value: Some(value),
                count: 2,
            } => push_pair(self.out, &key, &value),
            // `(key, None)`: the pair is left out, as serde_urlencoded does.
            PairParts {
                key: Some(_),
                value: None,
                count: 2,
            } => {}
            _ => return unsupported("an element that is not a (key, value) pair", "an element"),
        }
        Ok(())
    }

    fn end(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }
}

impl ser::SerializeTuple for Pairs<'_> {
    type Ok = ();
    type Error = UrlEncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, pair: &T) -> Result<(), UrlEncodeError> {
        ser::SerializeSeq::serialize_element(self, pair)
    }

    fn end(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Pairs<'_> {
    type Ok = ();
    type Error = UrlEncodeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, pair: &T) -> Result<(), UrlEncodeError> {
        ser::SerializeSeq::serialize_element(self, pair)
    }

    fn end(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }
}

impl ser::SerializeStruct for Pairs<'_> {
    type Ok = ();
    type Error = UrlEncodeError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), UrlEncodeError> {
        if let Some(value) = value.serialize(Scalar)? {
            push_pair(self.out, key, &value);
        }
        Ok(())
    }

    fn end(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }
}

/// A top-level map: keys and values are scalars.
struct MapPairs<'a> {
    out: &'a mut String,
    key: Option<String>,
}

impl ser::SerializeMap for MapPairs<'_> {
    type Ok = ();
    type Error = UrlEncodeError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), UrlEncodeError> {
        match key.serialize(Scalar)? {
            Some(key) => {
                self.key = Some(key);
                Ok(())
            }
            None => unsupported("`None`", "a key"),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), UrlEncodeError> {
        let Some(key) = self.key.take() else {
            return Err(UrlEncodeError("a map value came without its key".into()));
        };
        if let Some(value) = value.serialize(Scalar)? {
            push_pair(self.out, &key, &value);
        }
        Ok(())
    }

    fn end(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }
}

/// The parts of one `(key, value)` element of a sequence.
#[derive(Default)]
struct PairParts {
    key: Option<String>,
    value: Option<String>,
    count: usize,
}

impl PairParts {
    fn push<T: Serialize + ?Sized>(&mut self, part: &T) -> Result<(), UrlEncodeError> {
        let text = part.serialize(Scalar)?;
        match self.count {
            0 => match text {
                Some(key) => self.key = Some(key),
                None => return unsupported("`None`", "a key"),
            },
            1 => self.value = text,
            _ => return unsupported("a tuple of more than two", "an element"),
        }
        self.count += 1;
        Ok(())
    }
}

macro_rules! pair_unsupported {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), UrlEncodeError> {
            unsupported("anything but a (key, value) pair", "an element")
        })*
    };
}

impl ser::Serializer for &mut PairParts {
    type Ok = ();
    type Error = UrlEncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Impossible<(), UrlEncodeError>;
    type SerializeTupleVariant = Impossible<(), UrlEncodeError>;
    type SerializeMap = Impossible<(), UrlEncodeError>;
    type SerializeStruct = Impossible<(), UrlEncodeError>;
    type SerializeStructVariant = Impossible<(), UrlEncodeError>;

    pair_unsupported! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, pair: &T) -> Result<(), UrlEncodeError> {
        pair.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        pair: &T,
    ) -> Result<(), UrlEncodeError> {
        pair.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), UrlEncodeError> {
        unsupported("an enum variant", "an element")
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, UrlEncodeError> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, UrlEncodeError> {
        Ok(self)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, UrlEncodeError> {
        unsupported("a tuple struct", "an element")
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, UrlEncodeError> {
        unsupported("an enum variant", "an element")
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, UrlEncodeError> {
        unsupported("a map", "an element")
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, UrlEncodeError> {
        unsupported("a struct", "an element")
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, UrlEncodeError> {
        unsupported("an enum variant", "an element")
    }
}

impl ser::SerializeSeq for &mut PairParts {
    type Ok = ();
    type Error = UrlEncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, part: &T) -> Result<(), UrlEncodeError> {
        self.push(part)
    }

    fn end(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut PairParts {
    type Ok = ();
    type Error = UrlEncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, part: &T) -> Result<(), UrlEncodeError> {
        self.push(part)
    }

    fn end(self) -> Result<(), UrlEncodeError> {
        Ok(())
    }
}

/// A key or a value: its text, or `None` for a `None` (left out).
struct Scalar;

type Text = Option<String>;

fn text(value: impl fmt::Display) -> Result<Text, UrlEncodeError> {
    Ok(Some(value.to_string()))
}

impl ser::Serializer for Scalar {
    type Ok = Text;
    type Error = UrlEncodeError;
    type SerializeSeq = Impossible<Text, UrlEncodeError>;
    type SerializeTuple = Impossible<Text, UrlEncodeError>;
    type SerializeTupleStruct = Impossible<Text, UrlEncodeError>;
    type SerializeTupleVariant = Impossible<Text, UrlEncodeError>;
    type SerializeMap = Impossible<Text, UrlEncodeError>;
    type SerializeStruct = Impossible<Text, UrlEncodeError>;
    type SerializeStructVariant = Impossible<Text, UrlEncodeError>;

    fn serialize_bool(self, v: bool) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_i8(self, v: i8) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_i16(self, v: i16) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_i32(self, v: i32) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_i64(self, v: i64) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_u8(self, v: u8) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_u16(self, v: u16) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_u32(self, v: u32) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_u64(self, v: u64) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    // `Debug`, not `Display`: `3.0` stays `3.0`, as serde_urlencoded
    // writes it.
    fn serialize_f32(self, v: f32) -> Result<Text, UrlEncodeError> {
        Ok(Some(format!("{v:?}")))
    }
    fn serialize_f64(self, v: f64) -> Result<Text, UrlEncodeError> {
        Ok(Some(format!("{v:?}")))
    }
    fn serialize_char(self, v: char) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_str(self, v: &str) -> Result<Text, UrlEncodeError> {
        text(v)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Text, UrlEncodeError> {
        unsupported("bytes", "a key or value")
    }
    fn serialize_none(self) -> Result<Text, UrlEncodeError> {
        Ok(None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Text, UrlEncodeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Text, UrlEncodeError> {
        text("")
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Text, UrlEncodeError> {
        text(name)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Text, UrlEncodeError> {
        text(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Text, UrlEncodeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Text, UrlEncodeError> {
        unsupported("an enum variant with data", "a key or value")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, UrlEncodeError> {
        unsupported("a sequence", "a key or value")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, UrlEncodeError> {
        unsupported("a tuple", "a key or value")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, UrlEncodeError> {
        unsupported("a tuple struct", "a key or value")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, UrlEncodeError> {
        unsupported("an enum variant with data", "a key or value")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, UrlEncodeError> {
        unsupported("a map", "a key or value")
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, UrlEncodeError> {
        unsupported("a struct", "a key or value")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, UrlEncodeError> {
        unsupported("an enum variant with data", "a key or value")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::encode;

    #[derive(Serialize)]
    struct Search<'a> {
        q: &'a str,
        page: u32,
        exact: bool,
        lang: Option<&'a str>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    enum Sort {
        Newest,
    }

    #[test]
    fn structs_maps_and_pairs() {
        let search = Search {
            q: "a b&c=d/é",
            page: 2,
            exact: true,
            lang: None,
        };
        assert_eq!(
            encode(&search).unwrap(),
            "q=a+b%26c%3Dd%2F%C3%A9&page=2&exact=true"
        );
        let map = BTreeMap::from([("b", 1.5), ("a", -3.0)]);
        assert_eq!(encode(&map).unwrap(), "a=-3.0&b=1.5");
        assert_eq!(encode(&[("sort", Sort::Newest)]).unwrap(), "sort=newest");
        assert_eq!(
            encode(&vec![("k", Some("v")), ("gone", None)]).unwrap(),
            "k=v"
        );
        assert_eq!(encode(&[["k", "v"]]).unwrap(), "k=v");
        assert_eq!(encode(&()).unwrap(), "");
        assert_eq!(encode(&[("safe", "*-._~")]).unwrap(), "safe=*-._%7E");
    }

    #[test]
    fn what_has_no_pair_shape_is_an_error_naming_it() {
        let error = encode(&[("k", vec![1, 2])]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a sequence cannot be a key or value of a URL-encoded form"
        );
        assert!(encode(&"text").is_err());
        assert!(encode(&[("a", "b", "c")]).is_err());
        assert!(encode(&[1, 2]).is_err());
    }
}
