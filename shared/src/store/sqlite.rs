//! The SQLite adapter: the embedded default for one process (`pacer serve`).
//!
//! One file in WAL mode with `synchronous=NORMAL`, migrations applied at
//! open (`PRAGMA user_version` counts them). Each object is a row holding
//! the columns pacer queries or constrains on plus the whole object as JSON
//! in `data`, so adding a field never needs a migration; adding a query
//! path adds a column and an index in a new migration.
//!
//! Constraints do the work the rules need: UNIQUE for names, repos, GitHub
//! job ids and emails; foreign keys (RESTRICT) so a project with pools or
//! bindings cannot be deleted; conditional `UPDATE … WHERE state = ?` for
//! transitions and `active_runners < max_runners` for capacity. One
//! connection behind a mutex serialises writers, as SQLite would anyway.
//!
//! Checkpoints (copying the WAL back into the database file, with its
//! fsync) run on a background thread with its own connection, not inside
//! whichever write happens to fill the WAL: SQLite's automatic checkpoint
//! made one accepted webhook in about a hundred wait for the disk.
//!
//! The methods here and in the other store adapter look alike on purpose:
//! the same trait signatures, the same bind-write-map-the-error shape. The
//! conformance suite (`store/conformance/`) is what keeps the two the same;
//! a body shared between them would tie SQL to DynamoDB expressions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use base64::Engine;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::calls::{Call, CallCounts, Calls};
use crate::domain::budget::{BudgetLine, BudgetStanding};
use crate::domain::cost::MicroUsd;
use crate::domain::usage::{UsageDims, UsageFigures};

const MIGRATIONS: &[&str] = &[
    // 1: the foundation schema.
    r#"
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name_key TEXT NOT NULL UNIQUE,
        data TEXT NOT NULL
    );
    CREATE TABLE pools (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE RESTRICT,
        name_key TEXT NOT NULL,
        max_runners INTEGER NOT NULL,
        active_runners INTEGER NOT NULL DEFAULT 0 CHECK (active_runners >= 0),
        data TEXT NOT NULL,
        UNIQUE (project_id, name_key)
    );
    CREATE TABLE bindings (
        id TEXT PRIMARY KEY,
        repo_key TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE RESTRICT,
        data TEXT NOT NULL
    );
    CREATE INDEX bindings_by_project ON bindings(project_id, id);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        github_job_id INTEGER NOT NULL UNIQUE,
        state TEXT NOT NULL,
        repo_key TEXT NOT NULL,
        project_id TEXT,
        pool_id TEXT,
        created_us INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs(state, id);
    CREATE INDEX jobs_by_repo ON jobs(repo_key, id);
    CREATE INDEX jobs_by_pool ON jobs(pool_id, id);
    CREATE INDEX jobs_by_created ON jobs(created_us);
    CREATE TABLE runners (
        id TEXT PRIMARY KEY,
        pool_id TEXT NOT NULL,
        instance_id TEXT,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX runners_by_instance ON runners(instance_id);
    CREATE INDEX runners_by_pool_state ON runners(pool_id, state, id);
    CREATE INDEX runners_by_name ON runners(name);
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        oidc_subject TEXT UNIQUE,
        data TEXT NOT NULL
    );
    CREATE TABLE audit (
        id TEXT PRIMARY KEY,
        at_us INTEGER NOT NULL,
        action TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX audit_by_action ON audit(action, id);
    CREATE INDEX audit_by_actor ON audit(actor_id, id);
    "#,
    // 2: console auth support.
    r#"
    CREATE TABLE counters (
        key TEXT NOT NULL,
        window_us INTEGER NOT NULL,
        count INTEGER NOT NULL,
        expires_us INTEGER NOT NULL,
        PRIMARY KEY (key, window_us)
    );
    CREATE INDEX counters_by_expiry ON counters(expires_us);
    CREATE TABLE revoked_sessions (
        id TEXT PRIMARY KEY,
        expires_us INTEGER NOT NULL
    );
    CREATE INDEX revoked_by_expiry ON revoked_sessions(expires_us);
    "#,
    // 3: self-service runners.
    r#"
    CREATE TABLE token_uses (
        issuer TEXT NOT NULL,
        jti TEXT NOT NULL,
        expires_us INTEGER NOT NULL,
        PRIMARY KEY (issuer, jti)
    );
    CREATE INDEX token_uses_by_expiry ON token_uses(expires_us);
    CREATE TABLE self_runners (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        status TEXT NOT NULL,
        deleted_us INTEGER,
        data TEXT NOT NULL
    );
    CREATE INDEX self_runners_by_owner ON self_runners(owner, status, id);
    CREATE INDEX self_runners_by_status ON self_runners(status, id);
    CREATE TABLE label_policies (
        id TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE security_events (
        id TEXT PRIMARY KEY,
        at_us INTEGER NOT NULL,
        kind TEXT NOT NULL,
        identity TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX security_events_by_kind ON security_events(kind, id);
    CREATE INDEX security_events_by_identity ON security_events(identity, id);
    "#,
    // 4: a self-service runner's name is held only while it is not deleted,
    // so a name GitHub has freed can be used again (migration 3 made names
    // unique for as long as the deleted record is kept). SQLite cannot drop
    // a column's UNIQUE: the table is copied.
    r#"
    CREATE TABLE self_runners_4 (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        status TEXT NOT NULL,
        deleted_us INTEGER,
        data TEXT NOT NULL
    );
    INSERT INTO self_runners_4 (id, name, owner, status, deleted_us, data)
        SELECT id, name, owner, status, deleted_us, data FROM self_runners;
    DROP TABLE self_runners;
    ALTER TABLE self_runners_4 RENAME TO self_runners;
    CREATE INDEX self_runners_by_owner ON self_runners(owner, status, id);
    CREATE INDEX self_runners_by_status ON self_runners(status, id);
    CREATE INDEX self_runners_by_name ON self_runners(name, id);
    CREATE UNIQUE INDEX self_runners_holding_name ON self_runners(name)
        WHERE status <> 'deleted';
    "#,
    // 5: usage roll-ups, and the contributions already added to them.
    r#"
    CREATE TABLE usage_marks (
        id TEXT PRIMARY KEY,
        at_us INTEGER NOT NULL
    );
    CREATE TABLE usage_buckets (
        period TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        project_id TEXT NOT NULL,
        pool_id TEXT NOT NULL,
        repo TEXT NOT NULL,
        sender TEXT NOT NULL,
        market TEXT NOT NULL,
        conclusion TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (period, start_us, project_id, pool_id, repo, sender, market, conclusion)
    );
    "#,
    // 6: what each budget spent in a month, and when it crossed its lines.
    r#"
    CREATE TABLE budget_standings (
        month TEXT NOT NULL,
        budget TEXT NOT NULL,
        spent_micro_usd INTEGER NOT NULL DEFAULT 0,
        counted_us INTEGER,
        warned_us INTEGER,
        exceeded_us INTEGER,
        PRIMARY KEY (month, budget)
    );
    "#,
];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    calls: Arc<CallCounts>,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the
    /// database at `path`. The file holds password hashes and audit trails:
    /// a new one is created readable by its owner only (0600, and SQLite
    /// gives its `-wal` and `-shm` files the same mode), a new directory
    /// 0700; existing files readable by others are reported with a WARN.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private::create_dir(dir)
                .with_context(|| format!("creating the database directory {}", dir.display()))?;
        }
        private::create_file(path)
            .with_context(|| format!("creating the SQLite database {}", path.display()))?;
        for (file, mode) in private::readable_by_others(path) {
            tracing::warn!(
                file = %file.display(),
                mode = format!("{mode:04o}"),
                "the SQLite database holds password hashes but others may read it; run chmod 600 on it"
            );
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the SQLite database {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .context("turning on WAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .context("handing checkpoints to the background")?;
        let store = Self::setup(conn)
            .with_context(|| format!("preparing the SQLite database {}", path.display()))?;
        spawn_checkpointer(path.to_path_buf(), Arc::downgrade(&store.conn))?;
        Ok(store)
    }

    /// Copies what the WAL holds into the database file now, as the
    /// background checkpointer does every [`CHECKPOINT_EVERY`]; answers
    /// (frames in the WAL, frames copied).
    pub fn checkpoint(&self) -> anyhow::Result<(i64, i64)> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        passive_checkpoint(&conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> anyhow::Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> anyhow::Result<Self> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            calls: Arc::default(),
        })
    }

    /// The reads and writes made so far (one per trip to the connection).
    pub fn calls(&self) -> Calls {
        self.calls.snapshot()
    }

    /// A trip that only reads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.calls.count(Call::StoreRead);
        self.with(f).await
    }

    /// The `data` column of the one row `sql` selects by `key`, read back.
    async fn data_where<T: DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        key: String,
    ) -> StoreResult<Option<T>> {
        self.read(move |c| get_data(c, sql, key)).await
    }

    /// A trip that writes (whatever it reads on the way).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.calls.count(Call::StoreWrite);
        self.with(f).await
    }

    /// One write statement whose only possible failure is the backend's.
    async fn execute(&self, sql: &'static str, params: Vec<SqlValue>) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(sql, rusqlite::params_from_iter(params))
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on the connection off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .context("the SQLite worker task failed")?
    }
}

/// Files and directories only their owner may use.
pub mod private {
    use std::path::{Path, PathBuf};

    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    /// `dir` and its missing parents, new ones 0700.
    pub fn create_dir(dir: &Path) -> std::io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(dir)
    }

    /// `path`, created empty with mode 0600 when it does not exist yet (an
    /// empty file is a valid, empty SQLite database).
    pub fn create_file(path: &Path) -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        match options.open(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The database's files (`path`, `-wal`, `-shm`) that exist and that
    /// users other than their owner may read or write, with their modes.
    pub fn readable_by_others(path: &Path) -> Vec<(PathBuf, u32)> {
        let mut files = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        files
            .into_iter()
            .filter_map(|file| {
                let mode = mode_of(&file)?;
                (mode & 0o077 != 0).then_some((file, mode))
            })
            .collect()
    }

    #[cfg(unix)]
    fn mode_of(file: &Path) -> Option<u32> {
        Some(std::fs::metadata(file).ok()?.permissions().mode() & 0o7777)
    }

    #[cfg(not(unix))]
    fn mode_of(_: &Path) -> Option<u32> {
        None
    }
}

/// How often the background thread checkpoints the WAL.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A checkpoint that never waits for a writer or blocks one: it copies the
/// frames no reader still needs, and the next write after a complete one
/// starts the WAL over.
fn passive_checkpoint(conn: &Connection) -> anyhow::Result<(i64, i64)> {
    let (_busy, log, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((log, copied))
}

/// Checkpoints `path` every [`CHECKPOINT_EVERY`] on a connection of its own,
/// until the store (whose connection `alive` watches) is dropped.
fn spawn_checkpointer(path: PathBuf, alive: Weak<Mutex<Connection>>) -> anyhow::Result<()> {
    let conn = Connection::open(&path)
        .with_context(|| format!("opening {} for checkpoints", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = passive_checkpoint(&conn) {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "SQLite checkpoint failed; the next one retries"
                    );
                }
            }
        })
        .context("starting the SQLite checkpoint thread")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if applied > MIGRATIONS.len() {
        anyhow::bail!(
            "the database was written by a newer pacer (schema version {applied}, this build knows {})",
            MIGRATIONS.len()
        );
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {}", n + 1))?;
        tx.pragma_update(None, "user_version", n + 1)?;
        tx.commit()?;
        tracing::info!(version = n + 1, "applied SQLite migration");
    }
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    Ok(serde_json::to_string(value).context("encoding a row")?)
}

fn from_json<T: DeserializeOwned>(data: &str) -> StoreResult<T> {
    Ok(serde_json::from_str(data).context("decoding a stored row")?)
}

fn micros(t: Time) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Time {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn constraint(err: &rusqlite::Error) -> Option<i32> {
    match err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::ConstraintViolation => {
            Some(e.extended_code)
        }
        _ => None,
    }
}

const UNIQUE: i32 = rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE;
const PRIMARY_KEY: i32 = rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY;
const FOREIGN_KEY: i32 = rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY;

/// Maps a write's error: uniqueness to `Conflict(what)`, a missing parent to
/// `MissingParent(parent)`, anything else to `Backend`.
fn write_err(err: rusqlite::Error, what: &str, parent: &'static str) -> StoreError {
    match constraint(&err) {
        Some(UNIQUE | PRIMARY_KEY) => StoreError::Conflict(what.to_string()),
        Some(FOREIGN_KEY) => StoreError::MissingParent(parent),
        _ => StoreError::Backend(anyhow::Error::new(err).context(format!("writing ({what})"))),
    }
}

fn backend(err: rusqlite::Error) -> StoreError {
    StoreError::Backend(err.into())
}

fn exactly_one(changed: usize) -> StoreResult<()> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// The outcome of a compare-and-swap update: the row moved, or another
/// writer moved it first.
fn swapped(changed: usize) -> StoreResult<()> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Stale)
    }
}

/// A project's key columns and its JSON, for its insert and its update.
fn project_row(project: &Project) -> StoreResult<(String, String, String, String)> {
    Ok((
        project.id.clone(),
        project.spec.name.to_lowercase(),
        to_json(project)?,
        format!("a project named {:?} exists", project.spec.name),
    ))
}

/// A repository bound twice, for a binding's insert and its update.
fn binding_taken(e: rusqlite::Error, binding: &RepoBinding) -> StoreError {
    write_err(
        e,
        &format!("{} is bound to a project already", binding.spec.repo),
        "project",
    )
}

fn encode_cursor(last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_id)
}

fn decode_cursor(cursor: &Option<String>) -> StoreResult<Option<String>> {
    let Some(c) = cursor else { return Ok(None) };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| StoreError::BadCursor)?;
    let id = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(StoreError::BadCursor);
    }
    Ok(Some(id))
}

/// A list query over one table's `data`, ordered by id, with optional
/// conditions; one more row than the limit tells whether a next page exists.
struct ListQuery {
    table: &'static str,
    newest_first: bool,
    conditions: Vec<String>,
    params: Vec<SqlValue>,
}

impl ListQuery {
    fn new(table: &'static str, newest_first: bool) -> Self {
        Self {
            table,
            newest_first,
            conditions: Vec::new(),
            params: Vec::new(),
        }
    }

    fn and(mut self, condition: &str, value: impl Into<SqlValue>) -> Self {
        self.conditions.push(condition.to_string());
        self.params.push(value.into());
        self
    }

    fn and_if<V: Into<SqlValue>>(self, condition: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.and(condition, v),
            None => self,
        }
    }

    fn run<T: DeserializeOwned>(
        mut self,
        conn: &Connection,
        page: &PageRequest,
    ) -> StoreResult<Page<T>> {
        if let Some(after) = decode_cursor(&page.cursor)? {
            let op = if self.newest_first {
                "id < ?"
            } else {
                "id > ?"
            };
            self = self.and(op, after);
        }
        let limit = page.limit();
        let mut sql = format!("SELECT id, data FROM {}", self.table);
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conditions.join(" AND "));
        }
        sql.push_str(if self.newest_first {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id ASC"
        });
        sql.push_str(&format!(" LIMIT {}", limit + 1));
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        let rows: Vec<(String, String)> = stmt
            .query_map(rusqlite::params_from_iter(self.params.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let more = rows.len() > limit;
        let rows = rows.get(..limit).unwrap_or(&rows);
        let next_cursor = if more {
            rows.last().map(|(id, _)| encode_cursor(id))
        } else {
            None
        };
        let items = rows
            .iter()
            .map(|(_, data)| from_json(data))
            .collect::<StoreResult<Vec<T>>>()?;
        Ok(Page { items, next_cursor })
    }
}

fn get_data<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    key: impl rusqlite::ToSql,
) -> StoreResult<Option<T>> {
    let data: Option<String> = conn
        .prepare_cached(sql)
        .map_err(backend)?
        .query_row([key], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    data.map(|d| from_json(&d)).transpose()
}

fn read_pool(conn: &Connection, sql: &str, key: impl rusqlite::ToSql) -> StoreResult<Option<Pool>> {
    let row: Option<(String, u32)> = conn
        .prepare_cached(sql)
        .map_err(backend)?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(backend)?;
    row.map(|(data, active)| {
        let mut pool: Pool = from_json(&data)?;
        // The counter column is the truth; the JSON copy may be stale.
        pool.active_runners = active;
        Ok(pool)
    })
    .transpose()
}

impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn create_project(&self, project: &Project) -> StoreResult<()> {
        let (id, key, data, taken) = project_row(project)?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO projects (id, name_key, data) VALUES (?1, ?2, ?3)",
                params![id, key, data],
            )
            .map_err(|e| write_err(e, &taken, "project"))?;
            Ok(())
        })
        .await
    }

    async fn get_project(&self, id: &str) -> StoreResult<Option<Project>> {
        self.data_where("SELECT data FROM projects WHERE id = ?1", id.to_string())
            .await
    }

    async fn list_projects(&self, page: &PageRequest) -> StoreResult<Page<Project>> {
        let page = page.clone();
        self.read(move |c| ListQuery::new("projects", false).run(c, &page))
            .await
    }

    async fn update_project(&self, project: &Project) -> StoreResult<()> {
        let (id, key, data, taken) = project_row(project)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE projects SET name_key = ?2, data = ?3 WHERE id = ?1",
                    params![id, key, data],
                )
                .map_err(|e| write_err(e, &taken, "project"))?;
            exactly_one(n)
        })
        .await
    }

    async fn delete_project(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |c| {
            // RESTRICT reports a plain constraint violation, not the
            // foreign-key extended code: any constraint here is a dependent.
            let n = c
                .execute("DELETE FROM projects WHERE id = ?1", [&id])
                .map_err(|e| match constraint(&e) {
                    Some(_) => {
                        StoreError::InUse("the project still has pools or repo bindings".into())
                    }
                    _ => backend(e),
                })?;
            exactly_one(n)
        })
        .await
    }

    async fn create_pool(&self, pool: &Pool) -> StoreResult<()> {
        let p = pool.clone();
        let data = to_json(pool)?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO pools (id, project_id, name_key, max_runners, active_runners, data) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                params![p.id, p.spec.project_id, p.spec.name.to_lowercase(), p.spec.max_runners, data],
            )
            .map_err(|e| write_err(e, &format!("the project has a pool named {:?}", p.spec.name), "project"))?;
            Ok(())
        })
        .await
    }

    async fn get_pool(&self, id: &str) -> StoreResult<Option<Pool>> {
        let id = id.to_string();
        self.read(move |c| {
            read_pool(
                c,
                "SELECT data, active_runners FROM pools WHERE id = ?1",
                id,
            )
        })
        .await
    }

    async fn list_pools(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<Pool>> {
        let (project_id, page) = (project_id.map(str::to_string), page.clone());
        self.read(move |c| {
            let mut listed: Page<Pool> = ListQuery::new("pools", false)
                .and_if("project_id = ?", project_id)
                .run(c, &page)?;
            for pool in &mut listed.items {
                pool.active_runners = c
                    .query_row(
                        "SELECT active_runners FROM pools WHERE id = ?1",
                        [&pool.id],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
            }
            Ok(listed)
        })
        .await
    }

    async fn update_pool(&self, pool: &Pool) -> StoreResult<()> {
        let p = pool.clone();
        let data = to_json(pool)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE pools SET project_id = ?2, name_key = ?3, max_runners = ?4, data = ?5 WHERE id = ?1",
                    params![p.id, p.spec.project_id, p.spec.name.to_lowercase(), p.spec.max_runners, data],
                )
                .map_err(|e| write_err(e, &format!("the project has a pool named {:?}", p.spec.name), "project"))?;
            exactly_one(n)
        })
        .await
    }

    async fn delete_pool(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |c| {
            let active: Option<u32> = c
                .query_row(
                    "SELECT active_runners FROM pools WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            match active {
                None => Err(StoreError::NotFound),
                Some(n) if n > 0 => Err(StoreError::InUse(format!(
                    "the pool has {n} live runner(s)"
                ))),
                Some(_) => exactly_one(
                    c.execute(
                        "DELETE FROM pools WHERE id = ?1 AND active_runners = 0",
                        [&id],
                    )
                    .map_err(backend)?,
                ),
            }
        })
        .await
    }

    async fn create_binding(&self, binding: &RepoBinding) -> StoreResult<()> {
        let b = binding.clone();
        let data = to_json(binding)?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO bindings (id, repo_key, project_id, data) VALUES (?1, ?2, ?3, ?4)",
                params![b.id, b.spec.repo.key(), b.spec.project_id, data],
            )
            .map_err(|e| binding_taken(e, &b))?;
            Ok(())
        })
        .await
    }

    async fn get_binding(&self, id: &str) -> StoreResult<Option<RepoBinding>> {
        self.data_where("SELECT data FROM bindings WHERE id = ?1", id.to_string())
            .await
    }

    async fn binding_for_repo(&self, repo_key: &str) -> StoreResult<Option<RepoBinding>> {
        self.data_where(
            "SELECT data FROM bindings WHERE repo_key = ?1",
            repo_key.to_lowercase(),
        )
        .await
    }

    async fn list_bindings(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<RepoBinding>> {
        let (project_id, page) = (project_id.map(str::to_string), page.clone());
        self.read(move |c| {
            ListQuery::new("bindings", false)
                .and_if("project_id = ?", project_id)
                .run(c, &page)
        })
        .await
    }

    async fn update_binding(&self, binding: &RepoBinding) -> StoreResult<()> {
        let b = binding.clone();
        let data = to_json(binding)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE bindings SET repo_key = ?2, project_id = ?3, data = ?4 WHERE id = ?1",
                    params![b.id, b.spec.repo.key(), b.spec.project_id, data],
                )
                .map_err(|e| binding_taken(e, &b))?;
            exactly_one(n)
        })
        .await
    }

    async fn delete_binding(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |c| {
            exactly_one(
                c.execute("DELETE FROM bindings WHERE id = ?1", [&id])
                    .map_err(backend)?,
            )
        })
        .await
    }
}

#[async_trait]
impl RunnerStore for SqliteStore {
    async fn reserve_capacity(&self, pool_id: &str) -> StoreResult<bool> {
        let id = pool_id.to_string();
        self.write(move |c| reserve_row(c, &id)).await
    }

    async fn release_capacity(&self, pool_id: &str) -> StoreResult<bool> {
        let id = pool_id.to_string();
        self.write(move |c| {
            let n = c
                .execute("UPDATE pools SET active_runners = active_runners - 1 WHERE id = ?1 AND active_runners > 0", [&id])
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_capacity(&self, pool_id: &str, expected: u32, actual: u32) -> StoreResult<bool> {
        let id = pool_id.to_string();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE pools SET active_runners = ?3 WHERE id = ?1 AND active_runners = ?2",
                    params![id, expected, actual],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn insert_runner(&self, runner: &Runner) -> StoreResult<()> {
        let r = runner.clone();
        let data = to_json(runner)?;
        self.write(move |c| insert_runner_row(c, &r, &data)).await
    }

    async fn get_runner(&self, id: &str) -> StoreResult<Option<Runner>> {
        self.data_where("SELECT data FROM runners WHERE id = ?1", id.to_string())
            .await
    }

    async fn runner_by_instance(&self, instance_id: &str) -> StoreResult<Option<Runner>> {
        let id = instance_id.to_string();
        self.read(move |c| {
            get_data(
                c,
                "SELECT data FROM runners WHERE instance_id = ?1 ORDER BY id DESC LIMIT 1",
                id,
            )
        })
        .await
    }

    async fn runner_by_name(&self, name: &str) -> StoreResult<Option<Runner>> {
        let name = name.to_string();
        self.read(move |c| {
            get_data(
                c,
                "SELECT data FROM runners WHERE name = ?1 ORDER BY id DESC LIMIT 1",
                name,
            )
        })
        .await
    }

    async fn list_runners(
        &self,
        filter: &RunnerFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Runner>> {
        let (f, page) = (filter.clone(), page.clone());
        self.read(move |c| {
            let mut q = ListQuery::new("runners", true).and_if("pool_id = ?", f.pool_id);
            if !f.states.is_empty() {
                // States are a closed set of known words: safe to inline.
                let states: Vec<String> = f
                    .states
                    .iter()
                    .map(|s| format!("'{}'", s.as_str()))
                    .collect();
                q.conditions
                    .push(format!("state IN ({})", states.join(", ")));
            }
            q.run(c, &page)
        })
        .await
    }

    async fn transition_runner(&self, from: RunnerState, runner: &Runner) -> StoreResult<()> {
        let r = runner.clone();
        let data = to_json(runner)?;
        self.write(move |c| swapped(move_runner_row(c, from, &r, &data)?))
            .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_job(&self, job: &Job) -> StoreResult<Inserted> {
        let j = job.clone();
        let data = to_json(job)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO jobs (id, github_job_id, state, repo_key, project_id, pool_id, created_us, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (github_job_id) DO NOTHING",
                    params![
                        j.id,
                        j.github_job_id,
                        j.state.as_str(),
                        j.repo.to_lowercase(),
                        j.project_id,
                        j.pool_id,
                        micros(j.created_at),
                        data
                    ],
                )
                .map_err(backend)?;
            if n == 1 {
                return Ok(Inserted::Created);
            }
            let existing: Job = get_data(c, "SELECT data FROM jobs WHERE github_job_id = ?1", j.github_job_id)?
                .ok_or_else(|| StoreError::Backend(anyhow::anyhow!("job {} vanished during insert", j.github_job_id)))?;
            Ok(Inserted::Existing(Box::new(existing)))
        })
        .await
    }

    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        self.data_where("SELECT data FROM jobs WHERE id = ?1", id.to_string())
            .await
    }

    async fn job_by_github_id(&self, github_job_id: i64) -> StoreResult<Option<Job>> {
        self.read(move |c| {
            get_data(
                c,
                "SELECT data FROM jobs WHERE github_job_id = ?1",
                github_job_id,
            )
        })
        .await
    }

    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        let (f, page) = (filter.clone(), page.clone());
        self.read(move |c| {
            ListQuery::new("jobs", !f.oldest_first)
                .and_if("state = ?", f.state.map(|s| s.as_str().to_string()))
                .and_if("project_id = ?", f.project_id)
                .and_if("pool_id = ?", f.pool_id)
                .and_if("repo_key = ?", f.repo.map(|r| r.to_lowercase()))
                .and_if("github_job_id = ?", f.github_job_id)
                .and_if("created_us >= ?", f.from.map(micros))
                .and_if("created_us < ?", f.to.map(micros))
                .run(c, &page)
        })
        .await
    }

    async fn transition_job(&self, from: JobState, job: &Job) -> StoreResult<()> {
        let j = job.clone();
        let data = to_json(job)?;
        self.write(move |c| swapped(move_job_row(c, from, &j, &data)?))
            .await
    }

    async fn claim_for_launch(
        &self,
        from: JobState,
        job: &Job,
        runner: &Runner,
    ) -> StoreResult<Claim> {
        let (j, r) = (job.clone(), runner.clone());
        let (job_data, runner_data) = (to_json(job)?, to_json(runner)?);
        self.write(move |c| {
            let tx = c.transaction().map_err(backend)?;
            if move_job_row(&tx, from, &j, &job_data)? != 1 {
                return Ok(Claim::Stale);
            }
            if !reserve_row(&tx, &r.pool_id)? {
                return Ok(Claim::PoolFull);
            }
            insert_runner_row(&tx, &r, &runner_data)?;
            tx.commit().map_err(backend)?;
            Ok(Claim::Claimed)
        })
        .await
    }

    async fn transition_job_and_runner(
        &self,
        job_from: JobState,
        job: &Job,
        runner_from: RunnerState,
        runner: &Runner,
    ) -> StoreResult<()> {
        let (j, r) = (job.clone(), runner.clone());
        let (job_data, runner_data) = (to_json(job)?, to_json(runner)?);
        self.write(move |c| {
            let tx = c.transaction().map_err(backend)?;
            swapped(move_job_row(&tx, job_from, &j, &job_data)?)?;
            swapped(move_runner_row(&tx, runner_from, &r, &runner_data)?)?;
            tx.commit().map_err(backend)
        })
        .await
    }
}

/// A job's conditional move (see [`JobStore::transition_job`]): the rows changed.
fn move_job_row(c: &Connection, from: JobState, j: &Job, data: &str) -> StoreResult<usize> {
    c.execute(
        "UPDATE jobs SET state = ?2, project_id = ?3, pool_id = ?4, data = ?5
         WHERE id = ?1 AND state = ?6 AND IFNULL(json_extract(data, '$.version'), 0) = ?7",
        params![
            j.id,
            j.state.as_str(),
            j.project_id,
            j.pool_id,
            data,
            from.as_str(),
            j.version.saturating_sub(1) as i64
        ],
    )
    .map_err(backend)
}

/// A runner's conditional move (see [`RunnerStore::transition_runner`]): the rows changed.
fn move_runner_row(
    c: &Connection,
    from: RunnerState,
    r: &Runner,
    data: &str,
) -> StoreResult<usize> {
    c.execute(
        "UPDATE runners SET state = ?2, instance_id = ?3, name = ?4, data = ?5
         WHERE id = ?1 AND state = ?6 AND IFNULL(json_extract(data, '$.version'), 0) = ?7",
        params![
            r.id,
            r.state.as_str(),
            r.instance_id,
            r.name,
            data,
            from.as_str(),
            r.version.saturating_sub(1) as i64
        ],
    )
    .map_err(backend)
}

/// One unit of a pool's capacity, if it has one free: whether it did.
fn reserve_row(c: &Connection, pool_id: &str) -> StoreResult<bool> {
    let n = c
        .execute(
            "UPDATE pools SET active_runners = active_runners + 1 WHERE id = ?1 AND active_runners < max_runners",
            [pool_id],
        )
        .map_err(backend)?;
    Ok(n == 1)
}

fn insert_runner_row(c: &Connection, r: &Runner, data: &str) -> StoreResult<()> {
    c.execute(
        "INSERT INTO runners (id, pool_id, instance_id, name, state, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![r.id, r.pool_id, r.instance_id, r.name, r.state.as_str(), data],
    )
    .map_err(|e| write_err(e, "the runner exists already", "pool"))?;
    Ok(())
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let u = user.clone();
        let data = user_json(user)?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO users (id, email, oidc_subject, data) VALUES (?1, ?2, ?3, ?4)",
                params![u.id, u.email, u.oidc_subject, data],
            )
            .map_err(|e| write_err(e, &format!("a user with email {} exists", u.email), "user"))?;
            Ok(())
        })
        .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_string();
        self.read(move |c| get_user_row(c, "SELECT data FROM users WHERE id = ?1", id))
            .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.trim().to_lowercase();
        self.read(move |c| get_user_row(c, "SELECT data FROM users WHERE email = ?1", email))
            .await
    }

    async fn user_by_oidc_subject(&self, subject: &str) -> StoreResult<Option<User>> {
        let subject = subject.to_string();
        self.read(move |c| {
            get_user_row(c, "SELECT data FROM users WHERE oidc_subject = ?1", subject)
        })
        .await
    }

    async fn list_users(&self, page: &PageRequest) -> StoreResult<Page<User>> {
        let page = page.clone();
        self.read(move |c| {
            let listed: Page<UserRow> = ListQuery::new("users", false).run(c, &page)?;
            Ok(Page {
                items: listed.items.into_iter().map(|r| r.0).collect(),
                next_cursor: listed.next_cursor,
            })
        })
        .await
    }

    async fn update_user(&self, user: &User) -> StoreResult<()> {
        let u = user.clone();
        let data = user_json(user)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET email = ?2, oidc_subject = ?3, data = ?4 WHERE id = ?1",
                    params![u.id, u.email, u.oidc_subject, data],
                )
                .map_err(|e| {
                    write_err(e, &format!("a user with email {} exists", u.email), "user")
                })?;
            exactly_one(n)
        })
        .await
    }

    async fn hit_counter(
        &self,
        key: &str,
        window_start: Time,
        expires_at: Time,
    ) -> StoreResult<u64> {
        let (key, window, expires) = (key.to_string(), micros(window_start), micros(expires_at));
        self.write(move |c| {
            // Expired windows go as new ones come: the table stays small.
            c.execute("DELETE FROM counters WHERE expires_us < ?1", [window])
                .map_err(backend)?;
            let count: i64 = c
                .query_row(
                    "INSERT INTO counters (key, window_us, count, expires_us) VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT (key, window_us) DO UPDATE SET count = count + 1 RETURNING count",
                    params![key, window, expires],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(count as u64)
        })
        .await
    }

    async fn refund_hit(&self, key: &str, window_start: Time) -> StoreResult<()> {
        self.execute(
            "UPDATE counters SET count = count - 1 WHERE key = ?1 AND window_us = ?2 AND count > 0",
            vec![key.to_string().into(), micros(window_start).into()],
        )
        .await
    }

    async fn revoke_session(&self, session_id: &str, expires_at: Time) -> StoreResult<()> {
        self.execute(
            "INSERT INTO revoked_sessions (id, expires_us) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
            vec![session_id.to_string().into(), micros(expires_at).into()],
        )
        .await
    }

    async fn is_session_revoked(&self, session_id: &str) -> StoreResult<bool> {
        let id = session_id.to_string();
        self.read(move |c| {
            let found: Option<i64> = c
                .query_row("SELECT 1 FROM revoked_sessions WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)?;
            Ok(found.is_some())
        })
        .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let e = event.clone();
        let data = to_json(event)?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO audit (id, at_us, action, actor_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.id, micros(e.at), e.action, e.actor.id, data],
            )
            .map_err(|err| write_err(err, "the audit event exists already", "audit"))?;
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        let (f, page) = (filter.clone(), page.clone());
        self.read(move |c| {
            ListQuery::new("audit", true)
                .and_if("action = ?", f.action)
                // A range rather than LIKE, so audit_by_action serves it:
                // U+10FFFF sorts after anything that can follow the prefix.
                .and_if("action >= ?", f.action_prefix.clone())
                .and_if(
                    "action < ?",
                    f.action_prefix.map(|p| format!("{p}\u{10FFFF}")),
                )
                .and_if("actor_id = ?", f.actor)
                .and_if("at_us >= ?", f.from.map(micros))
                .and_if("at_us < ?", f.to.map(micros))
                .run(c, &page)
        })
        .await
    }
}

#[async_trait]
impl SelfServiceStore for SqliteStore {
    async fn use_token(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: Time,
        now: Time,
    ) -> StoreResult<bool> {
        let (issuer, jti) = (issuer.to_string(), jti.to_string());
        let (expires, now) = (micros(expires_at), micros(now));
        self.write(move |c| {
            // A use that expired is forgotten: the token is refused by its
            // `exp` anyway, and its jti may come round again.
            let n = c
                .execute(
                    "INSERT INTO token_uses (issuer, jti, expires_us) VALUES (?1, ?2, ?3)
                     ON CONFLICT (issuer, jti) DO UPDATE SET expires_us = excluded.expires_us
                     WHERE token_uses.expires_us < ?4",
                    params![issuer, jti, expires, now],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn create_self_runner(
        &self,
        runner: &SelfServiceRunner,
        max_live: u32,
    ) -> StoreResult<bool> {
        if runner.status == SelfRunnerStatus::Deleted {
            return Err(StoreError::runner_left_deleted(runner));
        }
        let r = runner.clone();
        let data = to_json(runner)?;
        self.write(move |c| {
            // One writer at a time (the connection's mutex): counting and
            // inserting cannot interleave with another request's.
            let live: u32 = c
                .query_row(
                    "SELECT COUNT(*) FROM self_runners WHERE owner = ?1 AND status IN (?2, ?3)",
                    params![
                        r.owner,
                        SelfRunnerStatus::Pending.as_str(),
                        SelfRunnerStatus::Active.as_str()
                    ],
                    |row| row.get(0),
                )
                .map_err(backend)?;
            if r.status.is_live() && live >= max_live {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO self_runners (id, name, owner, status, deleted_us, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.id, r.name, r.owner, r.status.as_str(), r.deleted_at.map(micros), data],
            )
            .map_err(|e| match constraint(&e) {
                Some(UNIQUE | PRIMARY_KEY) => StoreError::runner_name_taken(&r.name),
                _ => backend(e),
            })?;
            Ok(true)
        })
        .await
    }

    async fn get_self_runner(&self, name: &str) -> StoreResult<Option<SelfServiceRunner>> {
        // The one holding the name, else the newest deleted one.
        self.data_where(
            "SELECT data FROM self_runners WHERE name = ?1
             ORDER BY status = 'deleted', id DESC LIMIT 1",
            name.to_string(),
        )
        .await
    }

    async fn list_self_runners(
        &self,
        filter: &SelfRunnerFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SelfServiceRunner>> {
        let (f, page) = (filter.clone(), page.clone());
        self.read(move |c| {
            ListQuery::new("self_runners", true)
                .and_if("owner = ?", f.owner)
                .and_if("status = ?", f.status.map(|s| s.as_str().to_string()))
                .run(c, &page)
        })
        .await
    }

    async fn update_self_runner(
        &self,
        from: SelfRunnerStatus,
        runner: &SelfServiceRunner,
    ) -> StoreResult<()> {
        if from == SelfRunnerStatus::Deleted && runner.status != SelfRunnerStatus::Deleted {
            return Err(StoreError::runner_left_deleted(runner));
        }
        let r = runner.clone();
        let data = to_json(runner)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE self_runners SET status = ?2, deleted_us = ?3, data = ?4
                     WHERE id = ?1 AND status = ?5 AND json_extract(data, '$.version') = ?6",
                    params![
                        r.id,
                        r.status.as_str(),
                        r.deleted_at.map(micros),
                        data,
                        from.as_str(),
                        r.version.saturating_sub(1) as i64
                    ],
                )
                .map_err(backend)?;
            swapped(n)
        })
        .await
    }

    async fn put_label_policy(&self, policy: &IdentityPolicy) -> StoreResult<()> {
        let identity = policy.identity.clone();
        let data = to_json(policy)?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO label_policies (id, data) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                params![identity, data],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get_label_policy(&self, identity: &str) -> StoreResult<Option<IdentityPolicy>> {
        self.data_where(
            "SELECT data FROM label_policies WHERE id = ?1",
            identity.to_string(),
        )
        .await
    }

    async fn list_label_policies(&self, page: &PageRequest) -> StoreResult<Page<IdentityPolicy>> {
        let page = page.clone();
        self.read(move |c| ListQuery::new("label_policies", false).run(c, &page))
            .await
    }

    async fn delete_label_policy(&self, identity: &str) -> StoreResult<()> {
        let identity = identity.to_string();
        self.write(move |c| {
            exactly_one(
                c.execute("DELETE FROM label_policies WHERE id = ?1", [&identity])
                    .map_err(backend)?,
            )
        })
        .await
    }

    async fn append_security_event(&self, event: &SecurityEvent) -> StoreResult<()> {
        let e = event.clone();
        let data = to_json(event)?;
        self.write(move |c| {
            c.execute(
                "INSERT INTO security_events (id, at_us, kind, identity, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.id, micros(e.at), e.kind.as_str(), e.identity, data],
            )
            .map_err(|err| write_err(err, "the security event exists already", "security event"))?;
            Ok(())
        })
        .await
    }

    async fn list_security_events(
        &self,
        filter: &SecurityEventFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SecurityEvent>> {
        let (f, page) = (filter.clone(), page.clone());
        self.read(move |c| {
            ListQuery::new("security_events", true)
                .and_if("kind = ?", f.kind.map(|k| k.as_str().to_string()))
                .and_if("identity = ?", f.identity)
                .and_if("at_us >= ?", f.from.map(micros))
                .and_if("at_us < ?", f.to.map(micros))
                .run(c, &page)
        })
        .await
    }

    async fn sweep_self_service(&self, now: Time, deleted_before: Time) -> StoreResult<u64> {
        let (now, before) = (micros(now), micros(deleted_before));
        self.write(move |c| {
            let tokens = c
                .execute("DELETE FROM token_uses WHERE expires_us < ?1", [now])
                .map_err(backend)?;
            let runners = c
                .execute(
                    "DELETE FROM self_runners WHERE deleted_us IS NOT NULL AND deleted_us < ?1",
                    [before],
                )
                .map_err(backend)?;
            Ok((tokens + runners) as u64)
        })
        .await
    }
}

/// Users keep their password hash in the store, though `User` never
/// serialises it to clients: the row carries it beside the object.
#[derive(serde::Serialize, serde::Deserialize)]
struct UserRow(#[serde(with = "user_with_hash")] User);

mod user_with_hash {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Stored {
        #[serde(flatten)]
        user: User,
        password_hash: Option<String>,
    }

    pub fn serialize<S: serde::Serializer>(u: &User, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            user: u.clone(),
            password_hash: u.password_hash.clone(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<User, D::Error> {
        let stored = <Stored as serde::Deserialize>::deserialize(d)?;
        Ok(User {
            password_hash: stored.password_hash,
            ..stored.user
        })
    }
}

fn user_json(user: &User) -> StoreResult<String> {
    to_json(&UserRow(user.clone()))
}

fn get_user_row(conn: &Connection, sql: &str, key: String) -> StoreResult<Option<User>> {
    Ok(get_data::<UserRow>(conn, sql, key)?.map(|r| r.0))
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn add_usage(&self, contribution: &Contribution) -> StoreResult<bool> {
        let c = contribution.clone();
        self.write(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let fresh = tx
                .execute(
                    "INSERT INTO usage_marks (id, at_us) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
                    params![c.id, micros(c.at)],
                )
                .map_err(backend)?;
            if fresh == 0 {
                return Ok(false);
            }
            let d = &c.dims;
            for period in Period::ALL {
                let start = micros(period.start_of(c.at));
                let mut key: Vec<SqlValue> = vec![period.as_str().to_string().into(), start.into()];
                key.extend(
                    [&d.project_id, &d.pool_id, &d.repo, &d.sender, &d.market, &d.conclusion]
                        .map(|v| SqlValue::from(v.clone())),
                );
                let mut figures: UsageFigures = tx
                    .query_row(
                        "SELECT data FROM usage_buckets WHERE period = ?1 AND start_us = ?2
                         AND project_id = ?3 AND pool_id = ?4 AND repo = ?5 AND sender = ?6
                         AND market = ?7 AND conclusion = ?8",
                        rusqlite::params_from_iter(&key),
                        |row| row.get::<_, String>(0),
                    )
                    .optional()
                    .map_err(backend)?
                    .map(|data| from_json(&data))
                    .transpose()?
                    .unwrap_or_default();
                figures.merge(&c.figures);
                key.push(to_json(&figures)?.into());
                tx.execute(
                    "INSERT INTO usage_buckets
                     (period, start_us, project_id, pool_id, repo, sender, market, conclusion, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (period, start_us, project_id, pool_id, repo, sender, market, conclusion)
                     DO UPDATE SET data = excluded.data",
                    rusqlite::params_from_iter(&key),
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn usage_buckets(
        &self,
        period: Period,
        from: Time,
        to: Time,
    ) -> StoreResult<Vec<UsageBucket>> {
        let (from, to) = (micros(from), micros(to));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT start_us, project_id, pool_id, repo, sender, market, conclusion, data
                     FROM usage_buckets WHERE period = ?1 AND start_us >= ?2 AND start_us < ?3
                     ORDER BY start_us",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![period.as_str(), from, to], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        UsageDims {
                            project_id: row.get(1)?,
                            pool_id: row.get(2)?,
                            repo: row.get(3)?,
                            sender: row.get(4)?,
                            market: row.get(5)?,
                            conclusion: row.get(6)?,
                        },
                        row.get::<_, String>(7)?,
                    ))
                })
                .map_err(backend)?;
            let mut buckets = Vec::new();
            for row in rows {
                let (start, dims, data) = row.map_err(backend)?;
                buckets.push(UsageBucket {
                    period,
                    start: from_micros(start),
                    dims,
                    figures: from_json(&data)?,
                });
            }
            Ok(buckets)
        })
        .await
    }

    async fn put_budget_spend(
        &self,
        month: &str,
        budget: &str,
        spent: MicroUsd,
        at: Time,
    ) -> StoreResult<()> {
        let (month, budget) = (month.to_string(), budget.to_string());
        let spent = i64::try_from(spent).unwrap_or(i64::MAX);
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO budget_standings (month, budget, spent_micro_usd, counted_us)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (month, budget) DO UPDATE
                 SET spent_micro_usd = excluded.spent_micro_usd, counted_us = excluded.counted_us",
                params![month, budget, spent, micros(at)],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn mark_budget_line(
        &self,
        month: &str,
        budget: &str,
        line: BudgetLine,
        at: Time,
    ) -> StoreResult<bool> {
        let (month, budget) = (month.to_string(), budget.to_string());
        let column = match line {
            BudgetLine::Warning => "warned_us",
            BudgetLine::Exceeded => "exceeded_us",
        };
        self.write(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            tx.execute(
                "INSERT INTO budget_standings (month, budget) VALUES (?1, ?2)
                 ON CONFLICT (month, budget) DO NOTHING",
                params![month, budget],
            )
            .map_err(backend)?;
            let marked = tx
                .execute(
                    &format!(
                        "UPDATE budget_standings SET {column} = ?3
                         WHERE month = ?1 AND budget = ?2 AND {column} IS NULL"
                    ),
                    params![month, budget, micros(at)],
                )
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(marked == 1)
        })
        .await
    }

    async fn budget_standings(&self, month: &str) -> StoreResult<Vec<BudgetStanding>> {
        let month = month.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT budget, spent_micro_usd, counted_us, warned_us, exceeded_us
                     FROM budget_standings WHERE month = ?1 ORDER BY budget",
                )
                .map_err(backend)?;
            let time = |us: Option<i64>| us.map(from_micros);
            let rows = stmt
                .query_map(params![month], |row| {
                    Ok(BudgetStanding {
                        month: month.clone(),
                        budget: row.get(0)?,
                        spent_micro_usd: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        counted_at: time(row.get(2)?),
                        warned_at: time(row.get(3)?),
                        exceeded_at: time(row.get(4)?),
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{job, t0};

    #[tokio::test]
    async fn writes_wait_in_the_wal_for_the_checkpoint_not_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pacer.db")).unwrap();
        let auto: i64 = store
            .conn
            .lock()
            .unwrap()
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "no write ever runs a checkpoint itself");

        for n in 0..50 {
            store.insert_job(&job(n, "acme/app", t0())).await.unwrap();
        }
        let (in_wal, copied) = store.checkpoint().unwrap();
        assert!(in_wal > 0, "the writes are in the WAL");
        assert_eq!(
            copied, in_wal,
            "a passive checkpoint with no reader copies every frame"
        );

        // What was checkpointed reads back from a fresh open.
        drop(store);
        let reopened = SqliteStore::open(&dir.path().join("pacer.db")).unwrap();
        assert!(reopened.job_by_github_id(49).await.unwrap().is_some());
    }

    /// Migration 3 kept a self-service runner's name unique for as long as
    /// the deleted record was kept; a database written then keeps its
    /// runners through migration 4 and frees the names of deleted ones.
    #[tokio::test]
    async fn a_schema_3_database_keeps_its_runners_and_frees_deleted_names() {
        use crate::store::conformance::self_runner;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacer.db");
        let mut deleted = self_runner("ci-old", "ci:alice", t0());
        deleted.status = SelfRunnerStatus::Deleted;
        deleted.deleted_at = Some(t0());
        let live = self_runner("ci-live", "ci:alice", t0());
        {
            let mut conn = Connection::open(&path).unwrap();
            for (n, sql) in MIGRATIONS.iter().take(3).enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", n + 1).unwrap();
            }
            let tx = conn.transaction().unwrap();
            for r in [&deleted, &live] {
                tx.execute(
                    "INSERT INTO self_runners (id, name, owner, status, deleted_us, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![r.id, r.name, r.owner, r.status.as_str(), r.deleted_at.map(micros), to_json(r).unwrap()],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.get_self_runner("ci-old").await.unwrap(),
            Some(deleted)
        );
        assert_eq!(store.get_self_runner("ci-live").await.unwrap(), Some(live));
        let reuse = self_runner("ci-old", "ci:bob", t0() + chrono::Duration::seconds(1));
        assert!(store.create_self_runner(&reuse, 5).await.unwrap());
        let taken = self_runner("ci-live", "ci:bob", t0() + chrono::Duration::seconds(2));
        assert!(matches!(
            store.create_self_runner(&taken, 5).await,
            Err(StoreError::Conflict(_))
        ));
    }

    /// The database holds password hashes; it was created 0644 (readable by
    /// every local user), and its WAL files with it.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_and_its_wal_files_are_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let path = data.join("pacer.db");
        let store = SqliteStore::open(&path).unwrap();
        store.insert_job(&job(1, "acme/app", t0())).await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700, "the directory pacer made");
        for file in ["pacer.db", "pacer.db-wal", "pacer.db-shm"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        assert!(private::readable_by_others(&path).is_empty());
        drop(store);
        assert!(
            SqliteStore::open(&path)
                .unwrap()
                .job_by_github_id(1)
                .await
                .unwrap()
                .is_some(),
            "reopens"
        );
    }

    #[cfg(unix)]
    #[test]
    fn existing_files_others_may_read_are_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacer.db");
        drop(SqliteStore::open(&path).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loose = private::readable_by_others(&path);
        assert_eq!(loose, vec![(path.clone(), 0o644)]);
        SqliteStore::open(&path).expect("still opens; the WARN says what to do");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_cursor_text_is_one_this_store_wrote_or_refused(
            raw in proptest::prop_oneof![crate::arbitrary::hostile_text(), "[A-Za-z0-9_-]{0,100}"],
        ) {
            match decode_cursor(&Some(raw.clone())) {
                Ok(Some(id)) => {
                    proptest::prop_assert!(id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    proptest::prop_assert_eq!(encode_cursor(&id), raw, "only the one spelling this store writes");
                }
                Ok(None) => proptest::prop_assert!(false, "a cursor given is never read as none"),
                Err(e) => proptest::prop_assert!(matches!(e, StoreError::BadCursor)),
            }
        }

        #[test]
        fn every_cursor_this_store_writes_reads_back(id in "[A-Za-z0-9_]{1,64}") {
            proptest::prop_assert_eq!(decode_cursor(&Some(encode_cursor(&id))).ok().flatten(), Some(id));
        }
    }
}
