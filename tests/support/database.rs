//! The platform's database opened beside it, as someone with access to the database would:
//! for tests that tamper with records, or look for what must never be stored.

use std::path::PathBuf;

/// Where a platform keeps its store.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

/// A column's value, as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer (booleans are 0 and 1).
    Int(i64),
    /// Text.
    Text(String),
    /// NULL, or a type the tests do not read.
    Null,
}

impl Value {
    /// The integer, or a panic naming what it is instead.
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// The text, or a panic naming what it is instead.
    pub fn text(&self) -> String {
        match self {
            Value::Text(text) => text.clone(),
            other => panic!("not text: {other:?}"),
        }
    }
}

/// Runs `work` on a thread of its own: the PostgreSQL client blocks, and must not run on
/// an async runtime's thread.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().expect("database work"))
}

impl Database {
    /// The location as the platform's `database` setting names it.
    pub fn setting(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => url.clone(),
        }
    }

    fn sqlite(path: &PathBuf) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(path).expect("open the database");
        db.busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        db
    }

    fn postgres(url: &str) -> postgres::Client {
        postgres::Client::connect(url, postgres::NoTls).expect("connect to the database")
    }

    /// Runs `sql` (no parameters); how many rows it changed.
    pub fn execute(&self, sql: &str) -> u64 {
        match self {
            Database::Sqlite(path) => {
                let changed = Self::sqlite(path).execute(sql, []).expect(sql);
                u64::try_from(changed).expect("count")
            }
            Database::Postgres(url) => {
                off_runtime(|| Self::postgres(url).execute(sql, &[]).expect(sql))
            }
        }
    }

    /// The rows `sql` returns.
    pub fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        match self {
            Database::Sqlite(path) => {
                let db = Self::sqlite(path);
                let mut statement = db.prepare(sql).expect(sql);
                let columns = statement.column_count();
                let rows = statement.query_map([], |row| {
                    (0..columns)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Integer(n) => Value::Int(n),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Value::Text(String::from_utf8_lossy(t).into_owned())
                                }
                                _ => Value::Null,
                            })
                        })
                        .collect()
                });
                rows.expect(sql).collect::<Result<_, _>>().expect(sql)
            }
            Database::Postgres(url) => off_runtime(|| {
                let rows = Self::postgres(url).query(sql, &[]).expect(sql);
                rows.iter().map(postgres_values).collect()
            }),
        }
    }

    /// Whether any row of any table holds `text`.
    pub fn holds_text(&self, text: &str) -> bool {
        match self {
            Database::Sqlite(path) => {
                let mut bytes = std::fs::read(path).expect("read the database");
                bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
                bytes
                    .windows(text.len())
                    .any(|window| window == text.as_bytes())
            }
            Database::Postgres(url) => off_runtime(|| {
                let mut db = Self::postgres(url);
                let tables = db
                    .query(
                        "SELECT table_name::TEXT FROM information_schema.tables \
                         WHERE table_schema = 'public'",
                        &[],
                    )
                    .expect("tables");
                tables.iter().any(|table| {
                    let table: String = table.get(0);
                    let sql = format!("SELECT COUNT(*) FROM {table} t WHERE t::TEXT LIKE $1");
                    let found: i64 = db
                        .query_one(&sql, &[&format!("%{text}%")])
                        .expect(&sql)
                        .get(0);
                    found > 0
                })
            }),
        }
    }
}

fn postgres_values(row: &postgres::Row) -> Vec<Value> {
    use postgres::types::Type;
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            Type::INT8 => row.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int),
            Type::INT4 => row
                .get::<_, Option<i32>>(i)
                .map_or(Value::Null, |n| Value::Int(n.into())),
            Type::BOOL => row
                .get::<_, Option<bool>>(i)
                .map_or(Value::Null, |b| Value::Int(b.into())),
            Type::TEXT | Type::VARCHAR => row
                .get::<_, Option<String>>(i)
                .map_or(Value::Null, Value::Text),
            _ => Value::Null,
        })
        .collect()
}
