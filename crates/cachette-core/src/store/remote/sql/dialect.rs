//! The statements of each SQL dialect for one table. Every value is a bound parameter and only a
//! table name that passed [`valid_table`] is spliced in; lease times are judged on the database's clock.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
  Postgres,
  MySql,
  Sqlite,
}

/// Statements of one dialect for one table.
pub(super) struct Sql {
  pub ddl: Vec<String>,
  pub get: String,
  pub failed_of: String,
  pub take: String,
  pub holder: String,
  pub renew: String,
  pub abort_error: String,
  pub abort: String,
  /// PostgreSQL: one fenced statement. Others: `release` then `upsert`, in a transaction.
  pub commit: Option<String>,
  pub release: String,
  pub upsert: String,
  pub delete: String,
  pub delete_lock: String,
  pub clear: String,
  pub clear_locks: String,
  pub count: String,
  pub reap: String,
}

/// Table names: a letter or `_`, then letters, digits or `_`; short enough for `_locks`.
pub fn valid_table(name: &str) -> bool {
  let mut c = name.chars();
  matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
    && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    && name.len() <= 48
}

impl Sql {
  pub(super) fn new(d: Dialect, t: &str) -> Sql {
    // Placeholders: $n on PostgreSQL, ? elsewhere (every statement binds in order).
    let p = |s: &str| -> String {
      if d != Dialect::Postgres {
        return s.to_owned();
      }
      let mut out = String::with_capacity(s.len() + 8);
      let mut n = 0;
      for ch in s.chars() {
        if ch == '?' {
          n += 1;
          out.push('$');
          out.push_str(&n.to_string());
        } else {
          out.push(ch);
        }
      }
      out
    };
    let now = match d {
      Dialect::Postgres => "(extract(epoch from clock_timestamp()) * 1000)::bigint",
      Dialect::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
      Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    };
    let (q, bin, blob) = match d {
      Dialect::Postgres => ('"', "BYTEA", "BYTEA"),
      Dialect::MySql => ('`', "VARBINARY(16)", "LONGBLOB"),
      Dialect::Sqlite => ('"', "BLOB", "BLOB"),
    };
    let e = format!("{q}{t}{q}");
    let l = format!("{q}{t}_locks{q}");
    let ddl = match d {
      Dialect::MySql => vec![
        format!(
          "CREATE TABLE IF NOT EXISTS {e} (ns {bin} NOT NULL, k {bin} NOT NULL, v {blob} NOT NULL, \
           expires_at BIGINT NOT NULL, PRIMARY KEY (ns, k), INDEX (expires_at))"
        ),
        // `owner` is read back: a BLOB, which the driver decodes as bytes (VARBINARY reads as text).
        format!(
          "CREATE TABLE IF NOT EXISTS {l} (ns {bin} NOT NULL, k {bin} NOT NULL, owner BLOB NOT NULL, \
           expires_at BIGINT NOT NULL, error {blob} NULL, PRIMARY KEY (ns, k))"
        ),
      ],
      _ => vec![
        format!(
          "CREATE TABLE IF NOT EXISTS {e} (ns {bin} NOT NULL, k {bin} NOT NULL, v {blob} NOT NULL, \
           expires_at BIGINT NOT NULL, PRIMARY KEY (ns, k))"
        ),
        format!("CREATE INDEX IF NOT EXISTS {q}{t}_expires{q} ON {e} (expires_at)"),
        format!(
          "CREATE TABLE IF NOT EXISTS {l} (ns {bin} NOT NULL, k {bin} NOT NULL, owner {bin} NOT NULL, \
           expires_at BIGINT NOT NULL, error {blob} NULL, PRIMARY KEY (ns, k))"
        ),
      ],
    };
    // Take the lease if nobody holds it, or if its holder's lease expired (the database's clock).
    let take = match d {
      // The decision is taken once, into a session variable, before any column changes: it then
      // holds whether the assignments run left to right (MySQL) or at once (MariaDB's
      // SIMULTANEOUS_ASSIGNMENT), and MariaDB compares a BLOB it has just assigned wrongly.
      Dialect::MySql => format!(
        "INSERT INTO {l} (ns, k, owner, expires_at, error) VALUES (?, ?, ?, {now} + ?, NULL) \
         ON DUPLICATE KEY UPDATE \
         owner = IF(@cachette_take := (expires_at < {now}), VALUES(owner), owner), \
         error = IF(@cachette_take, NULL, error), \
         expires_at = IF(@cachette_take, VALUES(expires_at), expires_at)"
      ),
      _ => p(&format!(
        "INSERT INTO {l} (ns, k, owner, expires_at, error) VALUES (?, ?, ?, {now} + ?, NULL) \
         ON CONFLICT (ns, k) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, error = NULL \
         WHERE {l}.expires_at < {now}"
      )),
    };
    let upsert = match d {
      Dialect::MySql => format!(
        "INSERT INTO {e} (ns, k, v, expires_at) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE v = VALUES(v), expires_at = VALUES(expires_at)"
      ),
      _ => p(&format!(
        "INSERT INTO {e} (ns, k, v, expires_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (ns, k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at"
      )),
    };
    let commit = (d == Dialect::Postgres).then(|| {
      format!(
        "WITH l AS (DELETE FROM {l} WHERE ns = $1 AND k = $2 AND owner = $3 AND error IS NULL RETURNING 1) \
         INSERT INTO {e} (ns, k, v, expires_at) SELECT $1, $2, $4, $5 FROM l \
         ON CONFLICT (ns, k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at"
      )
    });
    Sql {
      ddl,
      get: p(&format!("SELECT v FROM {e} WHERE ns = ? AND k = ?")),
      failed_of: p(&format!(
        "SELECT error FROM {l} WHERE ns = ? AND k = ? AND owner = ? AND error IS NOT NULL"
      )),
      take,
      holder: p(&format!(
        "SELECT owner, expires_at - {now} AS remaining FROM {l} WHERE ns = ? AND k = ?"
      )),
      renew: p(&format!(
        "UPDATE {l} SET expires_at = {now} + ? WHERE ns = ? AND k = ? AND owner = ? AND error IS NULL"
      )),
      abort_error: p(&format!(
        "UPDATE {l} SET error = ?, expires_at = {now} - 1 WHERE ns = ? AND k = ? AND owner = ?"
      )),
      abort: p(&format!("DELETE FROM {l} WHERE ns = ? AND k = ? AND owner = ?")),
      commit,
      release: p(&format!(
        "DELETE FROM {l} WHERE ns = ? AND k = ? AND owner = ? AND error IS NULL"
      )),
      upsert,
      delete: p(&format!("DELETE FROM {e} WHERE ns = ? AND k = ?")),
      delete_lock: p(&format!("DELETE FROM {l} WHERE ns = ? AND k = ?")),
      clear: p(&format!("DELETE FROM {e} WHERE ns = ?")),
      clear_locks: p(&format!("DELETE FROM {l} WHERE ns = ?")),
      count: p(&format!("SELECT COUNT(*) FROM {e} WHERE ns = ? AND expires_at > ?")),
      reap: p(&format!("DELETE FROM {e} WHERE expires_at < ?")),
    }
  }
}
