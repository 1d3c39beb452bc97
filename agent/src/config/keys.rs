//! The keys a table of the config accepts, read from its serde derive (the field list serde
//! gives `deserialize_struct`), so that an unknown key can be answered with the closest one.

use std::cell::Cell;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// The field names `T` declares.
pub fn of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let fields = Cell::new(&[][..]);
    let _ = T::deserialize(Catcher(&fields));
    fields.get()
}

/// A deserializer that only notes the fields it is asked for, then gives up.
struct Catcher<'a>(&'a Cell<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for Catcher<'_> {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set(fields);
        Err(de::Error::custom("fields noted"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// "unknown key `start_sec` (did you mean `start_secs`?)", or the keys when none is close.
pub fn unknown(key: &str, fields: &[&str]) -> String {
    match crate::suggest::closest(key, fields.iter().copied()) {
        Some(close) => format!("unknown key `{key}` (did you mean `{close}`?)"),
        None => format!("unknown key `{key}`; the keys are {}", fields.join(", ")),
    }
}
