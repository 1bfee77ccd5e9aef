//! Expressions: condition, filter and update expressions with their
//! placeholders.

use super::*;

/// The placeholders of one request's expressions. Every attribute name goes
/// through a `#name` placeholder (`name`, `state` and `type` are reserved
/// words), every value through `:vN`; only what an expression uses is sent,
/// as DynamoDB refuses unused placeholders.
#[derive(Debug, Clone, Default)]
pub(super) struct Expr {
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl Expr {
    pub(super) fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#{attribute}");
        self.names
            .insert(placeholder.clone(), attribute.to_string());
        placeholder
    }

    pub(super) fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub(super) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// A condition (or filter) expression with its placeholders.
#[derive(Debug, Clone, Default)]
pub(super) struct Cond {
    pub(super) text: String,
    pub(super) expr: Expr,
}

impl Cond {
    pub(super) fn new(build: impl FnOnce(&mut Expr) -> String) -> Self {
        let mut expr = Expr::default();
        let text = build(&mut expr);
        Self { text, expr }
    }

    /// The item does not exist yet.
    pub(super) fn absent() -> Self {
        Self::new(|e| format!("attribute_not_exists({})", e.name(PK)))
    }

    /// The item exists.
    pub(super) fn exists() -> Self {
        Self::new(|e| format!("attribute_exists({})", e.name(PK)))
    }

    /// The item exists and `build` holds for it.
    pub(super) fn exists_and(build: impl FnOnce(&mut Expr) -> String) -> Self {
        Self::new(|e| {
            let exists = format!("attribute_exists({})", e.name(PK));
            format!("{exists} AND ({})", build(e))
        })
    }

    /// The item exists, is in state `from`, and is at the version before
    /// `version` (the writer read it, changed it and counted one more write);
    /// an item written before versions existed counts as version 0.
    pub(super) fn in_state_before(from: &str, version: u64) -> Self {
        let previous = version.saturating_sub(1);
        Self::exists_and(|e| {
            let name = e.name("version");
            let matches_version = if previous == 0 {
                format!(
                    "(attribute_not_exists({name}) OR {name} = {})",
                    e.value(n(0))
                )
            } else {
                format!("{name} = {}", e.value(n(previous as i64)))
            };
            format!(
                "{} = {} AND {matches_version}",
                e.name(STATE),
                e.value(s(from))
            )
        })
    }

    /// A guard still owned by `owner`.
    pub(super) fn owned_by(owner: &str) -> Self {
        Self::new(|e| format!("{} = {}", e.name(OWNER), e.value(s(owner))))
    }

    /// An `AND` of equality tests, for filters; `None` when there are none.
    pub(super) fn all_equal(tests: Vec<(&str, AttributeValue)>) -> Option<Self> {
        Self::all_of(tests, Vec::new())
    }

    /// An `AND` of equality tests and prefix tests (`begins_with`), for
    /// filters; `None` when there are none.
    pub(super) fn all_of(
        equal: Vec<(&str, AttributeValue)>,
        prefixed: Vec<(&str, AttributeValue)>,
    ) -> Option<Self> {
        if equal.is_empty() && prefixed.is_empty() {
            return None;
        }
        Some(Self::new(|e| {
            let equal = equal
                .into_iter()
                .map(|(name, value)| format!("{} = {}", e.name(name), e.value(value)));
            let equal: Vec<String> = equal.collect();
            let prefixed = prefixed
                .into_iter()
                .map(|(name, value)| format!("begins_with({}, {})", e.name(name), e.value(value)));
            equal
                .into_iter()
                .chain(prefixed)
                .collect::<Vec<_>>()
                .join(" AND ")
        }))
    }
}
