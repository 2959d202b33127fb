//! A fresh database per test, on SQLite (a temp file) or PostgreSQL (a schema of its own).
//!
//! PostgreSQL is found at `QALOOP_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it does not answer, PostgreSQL tests print a notice and pass vacuously — except in CI
//! (`CI=true`), where they fail, so a green CI run always means both backends were tested.

use std::str::FromStr;
use std::time::Duration;

use qaloop::store::Store;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Where the test PostgreSQL server is.
pub fn pg_url() -> String {
    std::env::var("QALOOP_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test database; dropped (file removed / schema dropped) when the value is.
pub struct TestDb {
    /// The store under test.
    pub store: Store,
    /// How to open another connection pool to the same database (for concurrency tests).
    pub target: Target,
    _dir: Option<tempfile::TempDir>,
}

/// How to reach a test database again.
#[derive(Clone)]
pub enum Target {
    /// A SQLite URL.
    Sqlite(String),
    /// A PostgreSQL server and schema.
    Postgres { url: String, schema: String },
}

impl TestDb {
    /// A fresh, migrated SQLite database in a temp folder.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("qaloop.db").display());
        let store = Store::connect(&url, 5).await.unwrap();
        store.migrate().await.unwrap();
        TestDb {
            store,
            target: Target::Sqlite(url),
            _dir: Some(dir),
        }
    }

    /// A fresh, migrated schema on the test PostgreSQL server, or `None` (with a notice) when it
    /// is not reachable outside CI.
    pub async fn postgres() -> Option<TestDb> {
        let url = pg_url();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await;
        let admin = match admin {
            Ok(pool) => pool,
            Err(e) if in_ci() => panic!("CI=true but PostgreSQL at {url} is unreachable: {e}"),
            Err(e) => {
                eprintln!(
                    "NOTICE: skipping PostgreSQL test: {url} unreachable ({e}); set QALOOP_TEST_PG_URL"
                );
                return None;
            }
        };
        let schema = format!("qaloop_test_{}", fastrand::u64(..));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let store = Self::open_pg(&url, &schema).await;
        store.migrate().await.unwrap();
        Some(TestDb {
            store,
            target: Target::Postgres { url, schema },
            _dir: None,
        })
    }

    async fn open_pg(url: &str, schema: &str) -> Store {
        let options = PgConnectOptions::from_str(url)
            .unwrap()
            .options([("search_path", schema)]);
        Store::connect_postgres(options, 5).await.unwrap()
    }

    /// Another, independent connection pool to the same database: a second qaloop process.
    pub async fn second_store(&self) -> Store {
        match &self.target {
            Target::Sqlite(url) => Store::connect(url, 5).await.unwrap(),
            Target::Postgres { url, schema } => Self::open_pg(url, schema).await,
        }
    }
}

impl TestDb {
    /// Runs raw SQL on a connection of its own, bypassing the store (to test database guards).
    pub async fn execute_raw(&self, sql: &'static str) -> Result<u64, sqlx::Error> {
        match &self.target {
            Target::Sqlite(url) => {
                let pool = sqlx::SqlitePool::connect(url).await?;
                let result = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                result
            }
            Target::Postgres { url, schema } => {
                let options =
                    PgConnectOptions::from_str(url)?.options([("search_path", schema.as_str())]);
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await?;
                let result = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                result
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Target::Postgres { url, schema } = &self.target {
            let (url, schema) = (url.clone(), schema.clone());
            // Drop the schema from a thread of its own: Drop cannot await, and this runs even
            // when the test panicked.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA {schema} CASCADE"
                        )))
                        .execute(&pool)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Runs an `async fn(TestDb)` against SQLite and PostgreSQL as two tests.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::store::TestDb::sqlite().await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::support::store::TestDb::postgres().await {
                        super::$name(db).await;
                    }
                }
            }
        )+
    };
}
