//! Property-test strategies for hostile outside input: text of every awkward
//! kind and JSON values of every shape, for the parsers that see requests,
//! webhooks, tokens and configuration.
//!
//! The black-box tests use it from this crate. `pacer-shared`'s own unit
//! tests include this very file by path (`#[path]` in `shared/src/lib.rs`):
//! it needs nothing but `proptest` and `serde_json`, and a dev-dependency on
//! this crate, which depends on `pacer-shared`, would build that crate twice.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Text a careless parser trips on: empty, control characters and NUL,
/// multi-byte and right-to-left characters, combining marks, a BOM, the
/// highest code point, separators pacer's formats use, and very long runs.
pub fn hostile_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => "\\PC{0,40}",
        2 => "[\\x00-\\x7f]{0,40}",
        3 => "[a-z0-9€İ\\x{202e}\\x{200f}\\x{0301}\\x{feff}\\x{10ffff}\\x00\\t\\n /.:,=@#_'\"\\\\-]{0,40}",
        1 => Just(String::new()),
        1 => (any::<char>(), 1_000usize..20_000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Numbers at and around the edges: the extremes of i64, u64 and f64,
/// negative zero, fractions, and anything in between.
pub fn hostile_number() -> impl Strategy<Value = Value> + Clone {
    let edges = [
        Value::from(i64::MIN),
        Value::from(i64::MAX),
        Value::from(u64::MAX),
        Value::from(-1),
        Value::from(0),
        Value::from(1),
        Value::from(-0.0),
        Value::from(0.5),
        Value::from(1e308),
        Value::from(-1e308),
        Value::from(f64::MIN_POSITIVE),
    ];
    prop_oneof![
        2 => proptest::sample::select(edges.to_vec()),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        // JSON has no NaN or infinity.
        1 => any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

/// A JSON scalar: null, a boolean, a number or text.
pub fn json_scalar() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_text().prop_map(Value::String),
    ]
}

/// Any JSON value: scalars, arrays and objects a few levels deep, and now
/// and then one nested far past any parser's recursion limit.
pub fn any_json() -> impl Strategy<Value = Value> + Clone {
    let shallow = json_scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((hostile_text(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    });
    prop_oneof![
        9 => shallow,
        1 => deeply_nested(),
    ]
}

/// A scalar inside 100 to 300 arrays or objects.
fn deeply_nested() -> impl Strategy<Value = Value> + Clone {
    (json_scalar(), 100usize..300, any::<bool>()).prop_map(|(leaf, depth, in_objects)| {
        (0..depth).fold(leaf, |inner, _| {
            if in_objects {
                Value::Object(Map::from_iter([("a".to_string(), inner)]))
            } else {
                Value::Array(vec![inner])
            }
        })
    })
}

/// A JSON object as a client might send to a parser that knows `fields`:
/// each known field absent, plausible (one of its `examples`) or any JSON
/// value at all, now and then with an unknown field beside them.
pub fn object_with(
    fields: Vec<(&'static str, Vec<Value>)>,
) -> impl Strategy<Value = Map<String, Value>> {
    let per_field: Vec<_> = fields
        .into_iter()
        .map(|(name, examples)| {
            let value = prop_oneof![
                3 => proptest::sample::select(examples),
                1 => any_json(),
            ];
            proptest::option::weighted(0.8, value).prop_map(move |v| (name, v))
        })
        .collect();
    let unknown = proptest::option::weighted(0.1, (hostile_text(), any_json()));
    (per_field, unknown).prop_map(|(known, unknown)| {
        let mut map: Map<String, Value> = known
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_string(), value?)))
            .collect();
        if let Some((name, value)) = unknown {
            map.insert(name, value);
        }
        map
    })
}
