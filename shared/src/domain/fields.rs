//! Reading a JSON request object field by field, so every error names the
//! field it is about and unknown fields are refused rather than ignored
//! (a typo in a PATCH must not silently do nothing).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::Invalid;
use super::duration::parse_go_duration;

pub struct Fields {
    map: Map<String, Value>,
    seen: BTreeSet<String>,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            map,
            seen: BTreeSet::new(),
        }
    }

    fn take(&mut self, name: &str) -> Option<&Value> {
        self.seen.insert(name.to_string());
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn required<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self, &str) -> Result<Option<T>, Invalid>,
    ) -> Result<T, Invalid> {
        f(self, name)?.ok_or_else(|| Invalid::new(name, "is required"))
    }

    pub fn string(&mut self, name: &str) -> Result<Option<String>, Invalid> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(Invalid::new(name, "must be a string")),
        }
    }

    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, Invalid> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Invalid::new(name, "must be true or false")),
        }
    }

    pub fn int(&mut self, name: &str, min: i64, max: i64) -> Result<Option<i64>, Invalid> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
                _ => Err(Invalid::new(
                    name,
                    format!("must be a whole number from {min} to {max}"),
                )),
            },
            Some(_) => Err(Invalid::new(name, "must be a number")),
        }
    }

    pub fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, Invalid> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.trim().to_string()),
                    _ => Err(Invalid::new(name, "must be a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(Invalid::new(name, "must be a list of strings")),
        }
    }

    pub fn duration(
        &mut self,
        name: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Option<Duration>, Invalid> {
        let Some(raw) = self.string(name)? else {
            return Ok(None);
        };
        let d = parse_go_duration(&raw).map_err(|m| Invalid::new(name, m))?;
        if d < min || d > max {
            return Err(Invalid::new(
                name,
                format!(
                    "must be between {} and {}",
                    super::duration::format_go_duration(min),
                    super::duration::format_go_duration(max)
                ),
            ));
        }
        Ok(Some(d))
    }

    /// Refuses any field the reader did not ask for, naming it.
    pub fn finish(self) -> Result<(), Invalid> {
        match self.map.keys().find(|k| !self.seen.contains(*k)) {
            Some(unknown) => Err(Invalid::new(unknown.clone(), "is not a known field")),
            None => Ok(()),
        }
    }
}

/// Overlays a PATCH body on the writable fields of an existing object, so an
/// update is validated by exactly the rules of a create. Fields that cannot
/// be changed are refused by name.
pub fn merge_patch(
    current: Value,
    patch: Map<String, Value>,
    read_only: &[&str],
) -> Result<Map<String, Value>, Invalid> {
    let Value::Object(mut merged) = current else {
        unreachable!("specs serialize to objects")
    };
    for (key, value) in patch {
        if read_only.contains(&key.as_str()) {
            return Err(Invalid::new(key, "cannot be changed"));
        }
        merged.insert(key, value);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        Fields::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn unknown_fields_are_named() {
        let mut f = fields(json!({"name": "a", "nmae": "b"}));
        f.string("name").unwrap();
        assert_eq!(f.finish().unwrap_err().field, "nmae");
    }

    #[test]
    fn wrong_types_and_ranges_name_the_field() {
        let mut f = fields(json!({"n": "x", "m": 5000, "l": [1]}));
        assert_eq!(f.int("n", 0, 10).unwrap_err().field, "n");
        assert!(
            f.int("m", 1, 1000)
                .unwrap_err()
                .message
                .contains("1 to 1000")
        );
        assert_eq!(f.strings("l").unwrap_err().field, "l");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut f = fields(json!({}));
        let err = f.required("name", Fields::string).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.message.as_str()),
            ("name", "is required")
        );
    }

    #[test]
    fn patches_cannot_touch_read_only_fields() {
        let err = merge_patch(
            json!({"a": 1}),
            json!({"id": "x"}).as_object().unwrap().clone(),
            &["id"],
        )
        .unwrap_err();
        assert_eq!(err.field, "id");
    }
}

/// What the property tests of the create bodies check of every answer.
#[cfg(test)]
pub(crate) mod properties {
    use proptest::test_runner::TestCaseError;
    use serde::Serialize;
    use serde_json::{Map, Value};

    use crate::domain::Invalid;

    /// A refusal names the field it is about (one the parser knows, or an
    /// unknown one the body carries) and says why.
    pub fn refusal_names_a_field(
        err: &Invalid,
        body: &Map<String, Value>,
        known: &[&str],
    ) -> Result<(), TestCaseError> {
        proptest::prop_assert!(
            known.contains(&err.field.as_str()) || body.contains_key(&err.field),
            "the refusal names {:?}, which is neither known nor in the body",
            err.field
        );
        proptest::prop_assert!(
            !err.message.is_empty(),
            "the refusal of {:?} says nothing",
            err.field
        );
        Ok(())
    }

    /// What parsed, written back as JSON (as the store and the API do),
    /// parses to the same value.
    pub fn round_trips<T: Serialize + PartialEq + std::fmt::Debug>(
        parsed: &T,
        parse: fn(Map<String, Value>) -> Result<T, Invalid>,
    ) -> Result<(), TestCaseError> {
        let Value::Object(written) =
            serde_json::to_value(parsed).map_err(|e| TestCaseError::fail(e.to_string()))?
        else {
            return Err(TestCaseError::fail("a spec serialises to an object"));
        };
        let reparsed = parse(written);
        proptest::prop_assert_eq!(reparsed.as_ref(), Ok(parsed));
        Ok(())
    }
}
