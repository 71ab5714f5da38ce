//! Every sink of the crate behind one face, with what the suite needs to look at its storage
//! from outside: reopen it (a restart), dump it (to prove nothing changed), and break its
//! checkpoint writes (a failure between the rows and the checkpoint).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use dynamodb_stream::record::Item;
use dynamodb_stream::replicate::{PostgresReplica, ReplicaSink, SqliteReplica};

use crate::common::by_key;
use crate::postgres;

/// Which sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Every kind, for suites that run against each.
pub const KINDS: [Kind; 2] = [Kind::Sqlite, Kind::Postgres];

/// The storage of one sink under test: a SQLite file or a PostgreSQL database of its own.
pub struct Storage {
    pub kind: Kind,
    /// The SQLite file.
    path: PathBuf,
    /// The PostgreSQL database URL.
    url: String,
    _dir: tempfile::TempDir,
}

/// An open sink: the trait object the suite drives, and the concrete type for reading items.
#[derive(Clone)]
pub struct Sink {
    pub sink: Arc<dyn ReplicaSink>,
    concrete: Concrete,
}

#[derive(Clone)]
enum Concrete {
    Sqlite(SqliteReplica),
    Postgres(PostgresReplica),
}

impl Storage {
    /// Fresh, empty storage of `kind` for the test `name`.
    pub async fn new(kind: Kind, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = match kind {
            Kind::Sqlite => String::new(),
            Kind::Postgres => postgres::database(name).await,
        };
        Self {
            kind,
            path: dir.path().join("replica.sqlite"),
            url,
            _dir: dir,
        }
    }

    /// Open a sink on this storage (again: a restarted process does the same).
    pub async fn open(&self) -> Sink {
        match self.kind {
            Kind::Sqlite => {
                let r = SqliteReplica::open(&self.path).await.expect("open SQLite");
                Sink {
                    sink: Arc::new(r.clone()),
                    concrete: Concrete::Sqlite(r),
                }
            }
            Kind::Postgres => {
                let r = PostgresReplica::connect(&self.url)
                    .await
                    .expect("connect to PostgreSQL");
                Sink {
                    sink: Arc::new(r.clone()),
                    concrete: Concrete::Postgres(r),
                }
            }
        }
    }

    /// Everything stored, as text: equal dumps mean nothing changed.
    pub fn dump(&self) -> String {
        match self.kind {
            Kind::Sqlite => {
                // The file and its write-ahead log (where recent commits live).
                let mut wal = self.path.clone().into_os_string();
                wal.push("-wal");
                let main = std::fs::read(&self.path).unwrap_or_default();
                let wal = std::fs::read(PathBuf::from(wal)).unwrap_or_default();
                format!("{main:?}\n{wal:?}")
            }
            Kind::Postgres => postgres::server().dump(postgres::database_name(&self.url)),
        }
    }

    /// From now on, every write of a checkpoint fails inside the database (after the rows of
    /// the same transaction are written); `false` turns it off again.
    pub async fn fail_checkpoint_writes(&self, on: bool) {
        match self.kind {
            Kind::Sqlite => {
                let conn = rusqlite::Connection::open(&self.path).expect("open");
                let sql = if on {
                    "CREATE TRIGGER fail_insert BEFORE INSERT ON checkpoints
                         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
                     CREATE TRIGGER fail_update BEFORE UPDATE ON checkpoints
                         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
                } else {
                    "DROP TRIGGER fail_insert; DROP TRIGGER fail_update;"
                };
                conn.execute_batch(sql).expect("triggers");
            }
            Kind::Postgres => {
                let client = postgres::connect(&self.url).await;
                let sql = if on {
                    "CREATE FUNCTION public.injected_failure() RETURNS trigger
                         LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
                     CREATE TRIGGER fail BEFORE INSERT OR UPDATE
                         ON ddbstream.ddbstream_checkpoints
                         FOR EACH ROW EXECUTE FUNCTION public.injected_failure();"
                } else {
                    "DROP TRIGGER fail ON ddbstream.ddbstream_checkpoints;
                     DROP FUNCTION public.injected_failure();"
                };
                client.batch_execute(sql).await.expect("triggers");
            }
        }
    }
}

impl Sink {
    /// Every item, by key.
    pub async fn items(&self) -> BTreeMap<String, Item> {
        by_key(self.items_list().await)
    }

    /// Every item.
    pub async fn items_list(&self) -> Vec<Item> {
        match &self.concrete {
            Concrete::Sqlite(r) => r.items().await.expect("items"),
            Concrete::Postgres(r) => r.items().await.expect("items"),
        }
    }

    /// One item.
    pub async fn get(&self, keys: &Item) -> Option<Item> {
        match &self.concrete {
            Concrete::Sqlite(r) => r.get(keys).await.expect("get"),
            Concrete::Postgres(r) => r.get(keys).await.expect("get"),
        }
    }
}
