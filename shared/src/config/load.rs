//! From text and environment to a typed [`Config`]: the steps before validation.
//!
//! The YAML is first read into a plain value tree so that the key table can check every key
//! (unknown ones are refused with their full path and a likely correction), tidy loosely written
//! scalars, and merge `PACER_*` variables in as if they had been written in the file. Only then
//! does serde turn the tree into the typed structs, through `serde_path_to_error` so a wrong type
//! is reported against its key.

use super::Config;
use super::error::{ConfigError, one_line};
use super::schema::{self, ENV_PREFIX, Key, Kind, NON_CONFIG_ENV_VARS};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The merged value tree, plus where its values came from.
pub(crate) struct Tree {
    root: Map<String, Value>,
    /// Key path → the `PACER_*` variable that set it.
    pub env_vars: BTreeMap<&'static str, String>,
    /// Keys given a value by the file or the environment (as opposed to left at their default).
    pub explicit: BTreeSet<&'static str>,
}

impl Tree {
    /// Reads YAML text (`None` when there is no file: the environment alone configures pacer,
    /// as in Lambda). `origin` names the file in syntax errors.
    pub fn from_yaml(text: Option<&str>, origin: &Path) -> Result<Self, ConfigError> {
        let root = match text {
            Some(text) => parse_yaml(text, origin)?,
            None => Map::new(),
        };
        let mut tree = Self {
            root: Map::new(),
            env_vars: BTreeMap::new(),
            explicit: BTreeSet::new(),
        };
        tree.root = tree.tidy_section(root, "")?;
        Ok(tree)
    }

    /// Lays `PACER_*` variables over the file's values. Names are resolved against the key table;
    /// a name that matches no key, and is not one pacer reads elsewhere, is an error.
    pub fn overlay_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        for (name, raw) in env {
            if !name.starts_with(ENV_PREFIX) || NON_CONFIG_ENV_VARS.contains(&name.as_str()) {
                continue;
            }
            let Some(key) = schema::find_by_env(name) else {
                let names: Vec<String> = schema::KEYS.iter().map(Key::env_name).collect();
                let suggestion =
                    schema::suggest(name, names.iter().map(String::as_str)).map(str::to_owned);
                return Err(ConfigError::UnknownEnvVar {
                    // Escaped, like an unknown YAML key: one line.
                    name: name.escape_debug().to_string(),
                    suggestion,
                });
            };
            if key.kind.yaml_only() {
                return Err(ConfigError::Invalid {
                    key: key.path.to_owned(),
                    message: format!(
                        "is a {}, written in the YAML file only, never in an environment variable",
                        key.kind.describe()
                    ),
                    env_var: Some(name.clone()),
                });
            }
            let with_env = |err: ConfigError| match err {
                ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                    key,
                    message,
                    env_var: Some(name.clone()),
                },
                other => other,
            };
            let value = env_value(key, raw)
                .map_err(|message| ConfigError::invalid(key.path, message))
                .map_err(with_env)?;
            let value = tidy_leaf(key, value).map_err(with_env)?;
            self.set(key, value);
            self.env_vars.insert(key.path, name.clone());
        }
        Ok(())
    }

    /// Turns the tree into typed structs, leaving the record of sources behind. Errors name the
    /// key (and the variable, if any).
    pub fn deserialize(&mut self) -> Result<Config, ConfigError> {
        let root = std::mem::take(&mut self.root);
        serde_path_to_error::deserialize(Value::Object(root)).map_err(|err| {
            // Escaped: a path may pass through keys the table does not know (the claim names
            // of a trusted identity), and an error is one line.
            let key = err.path().to_string().escape_debug().to_string();
            let env_var = self.env_vars.get(strip_index(&key)).cloned();
            ConfigError::Invalid {
                key,
                message: one_line(&err.inner().to_string()),
                env_var,
            }
        })
    }

    /// Checks a mapping's keys against the table and tidies its leaves, recursively.
    fn tidy_section(
        &mut self,
        section: Map<String, Value>,
        prefix: &str,
    ) -> Result<Map<String, Value>, ConfigError> {
        let mut tidied = Map::new();
        for (name, value) in section {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if let Some(key) = schema::find(&path) {
                if let Some(value) = tidy_leaf(key, value)? {
                    self.explicit.insert(key.path);
                    tidied.insert(name, value);
                }
            } else if schema::is_section(&path) {
                match value {
                    // `server:` with nothing under it: an empty section.
                    Value::Null => {}
                    Value::Object(inner) => {
                        tidied.insert(name, Value::Object(self.tidy_section(inner, &path)?));
                    }
                    other => {
                        return Err(ConfigError::invalid(
                            path,
                            format!("expected a section of keys, found {}", type_name(&other)),
                        ));
                    }
                }
            } else {
                let suggestion = schema::suggest(&path, known_paths()).map(str::to_owned);
                return Err(ConfigError::UnknownKey {
                    // Escaped: a quoted YAML key may hold a line break, and
                    // an error is one line.
                    key: path.escape_debug().to_string(),
                    suggestion,
                });
            }
        }
        Ok(tidied)
    }

    /// Sets (or, for `None`, clears) one key, creating the sections above it.
    fn set(&mut self, key: &'static Key, value: Option<Value>) {
        let (sections, leaf) = key.path.rsplit_once('.').unwrap_or(("", key.path));
        let names = sections.split('.').filter(|name| !name.is_empty());
        let mut section = &mut self.root;
        for name in names {
            let entry = section
                .entry(name)
                .or_insert_with(|| Value::Object(Map::new()));
            section = match entry {
                Value::Object(inner) => inner,
                _ => unreachable!("tidy_section leaves only mappings at section paths"),
            };
        }
        match value {
            Some(value) => {
                section.insert(leaf.to_owned(), value);
                self.explicit.insert(key.path);
            }
            None => {
                section.remove(leaf);
                self.explicit.remove(key.path);
            }
        }
    }
}

fn parse_yaml(text: &str, origin: &Path) -> Result<Map<String, Value>, ConfigError> {
    let yaml_error = |message: String| ConfigError::Yaml {
        path: origin.to_owned(),
        message: one_line(&message),
    };
    let mut yaml: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| yaml_error(e.to_string()))?;
    // Merge keys (`<<: *defaults`) are a YAML convenience operators expect to work.
    yaml.apply_merge().map_err(|e| yaml_error(e.to_string()))?;
    match serde_json::to_value(yaml).map_err(|e| yaml_error(e.to_string()))? {
        Value::Object(map) => Ok(map),
        // An empty file, or one holding only comments.
        Value::Null => Ok(Map::new()),
        other => Err(yaml_error(format!(
            "the top level must be a mapping of sections, found {}",
            type_name(&other)
        ))),
    }
}

/// Converts an environment variable's text to a value of the key's kind.
fn env_value(key: &Key, raw: &str) -> Result<Value, String> {
    match key.kind {
        Kind::Bool => parse_bool(raw)
            .map(Value::Bool)
            .ok_or_else(|| format!("expected true, false, 1 or 0 (got {raw:?})")),
        Kind::Integer => raw
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a whole number (got {raw:?})")),
        Kind::List => parse_env_list(raw),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// A list from the environment: a JSON array, or comma-separated items (blanks dropped).
fn parse_env_list(raw: &str) -> Result<Value, String> {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(trimmed)
            .map_err(|e| format!("not a valid JSON array ({e}); use a JSON array of strings or a comma-separated list"))?;
        return Ok(Value::Array(items));
    }
    Ok(Value::Array(
        trimmed
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Value::String(item.into()))
            .collect(),
    ))
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Tidies one value for its key before typed parsing: `None` means "unset, use the default".
///
/// YAML reads `version: 2` as a number and `secret: 0123` as an integer; the user meant text, so
/// scalars are turned into strings for textual kinds. Choices are lower-cased, surrounding spaces
/// are trimmed (a secret read with `$(cat file)` keeps its newline otherwise), and an empty value
/// of an optional key means unset.
fn tidy_leaf(key: &Key, value: Value) -> Result<Option<Value>, ConfigError> {
    let value = match value {
        Value::Null => return Ok(None),
        Value::Array(items) if key.kind == Kind::List => {
            let mut tidied = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                match scalar_text(&item) {
                    Some(text) => tidied.push(Value::String(text.trim().to_owned())),
                    None => {
                        return Err(ConfigError::invalid(
                            format!("{}[{index}]", key.path),
                            format!("expected text, found {}", type_name(&item)),
                        ));
                    }
                }
            }
            Value::Array(tidied)
        }
        // Each entry's own struct types and checks it.
        value if key.kind.yaml_only() => value,
        Value::Bool(_) | Value::Number(_) | Value::String(_) if key.kind != Kind::List => {
            let text = scalar_text(&value).unwrap_or_default();
            let text = text.trim();
            match key.kind {
                Kind::Bool => match parse_bool(text) {
                    Some(flag) => Value::Bool(flag),
                    None => value,
                },
                Kind::Integer => match text.parse::<u64>() {
                    Ok(number) => Value::from(number),
                    Err(_) => value,
                },
                Kind::Decimal => match text.parse::<f64>() {
                    Ok(number) if number.is_finite() => Value::from(number),
                    _ => value,
                },
                Kind::Choice(_) => Value::String(text.to_ascii_lowercase()),
                _ => Value::String(text.to_owned()),
            }
        }
        other => other,
    };
    if key.optional && value.as_str() == Some("") {
        return Ok(None);
    }
    Ok(Some(value))
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn known_paths() -> impl Iterator<Item = &'static str> {
    schema::KEYS.iter().map(|key| key.path)
}

/// `server.trusted_proxies[2]` → `server.trusted_proxies`.
pub(crate) fn strip_index(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}
