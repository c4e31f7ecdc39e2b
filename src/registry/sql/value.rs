//! The values the registry binds to statements and reads from rows: NULL, an integer or text,
//! the only types its schema uses (booleans are the integers 0 and 1 on both engines).

use std::error::Error;

/// A value borrowed from a row or a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Text(&'a str),
}

/// An owned value: a marker's sort values, or parameters built up at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
}

/// What can be bound to a placeholder.
pub trait ToSql {
    fn to_sql(&self) -> ValueRef<'_>;
}

/// What a column converts to. `Err` says why it cannot (the caller adds the column).
pub trait FromSql: Sized {
    fn from_sql(value: ValueRef<'_>) -> Result<Self, Box<dyn Error + Send + Sync>>;
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(integer) => ValueRef::Integer(*integer),
            Value::Text(text) => ValueRef::Text(text),
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> ValueRef<'_> {
        self.as_ref()
    }
}

impl ToSql for str {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToSql for String {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> ValueRef<'_> {
        (**self).to_sql()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> ValueRef<'_> {
        match self {
            Some(value) => value.to_sql(),
            None => ValueRef::Null,
        }
    }
}

impl ToSql for bool {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}

macro_rules! integer_to_sql {
    ($($type:ty),*) => {$(
        impl ToSql for $type {
            fn to_sql(&self) -> ValueRef<'_> {
                // Larger than i64 cannot be stored; the largest storable stands in, as the
                // size filters do.
                ValueRef::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
integer_to_sql!(i64, i32, u32, u64, usize);

impl FromSql for Value {
    fn from_sql(value: ValueRef<'_>) -> Result<Value, Box<dyn Error + Send + Sync>> {
        Ok(match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(integer) => Value::Integer(integer),
            ValueRef::Text(text) => Value::Text(text.to_string()),
        })
    }
}

impl FromSql for String {
    fn from_sql(value: ValueRef<'_>) -> Result<String, Box<dyn Error + Send + Sync>> {
        match value {
            ValueRef::Text(text) => Ok(text.to_string()),
            other => Err(format!("expected text, found {other:?}").into()),
        }
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(value: ValueRef<'_>) -> Result<Option<T>, Box<dyn Error + Send + Sync>> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::from_sql(other).map(Some),
        }
    }
}

impl FromSql for bool {
    fn from_sql(value: ValueRef<'_>) -> Result<bool, Box<dyn Error + Send + Sync>> {
        Ok(i64::from_sql(value)? != 0)
    }
}

macro_rules! integer_from_sql {
    ($($type:ty),*) => {$(
        impl FromSql for $type {
            fn from_sql(value: ValueRef<'_>) -> Result<$type, Box<dyn Error + Send + Sync>> {
                match value {
                    ValueRef::Integer(integer) => <$type>::try_from(integer).map_err(|_| {
                        format!("{integer} is out of range for {}", stringify!($type)).into()
                    }),
                    other => Err(format!("expected an integer, found {other:?}").into()),
                }
            }
        }
    )*};
}
integer_from_sql!(i64, i32, u32, u64, usize);
