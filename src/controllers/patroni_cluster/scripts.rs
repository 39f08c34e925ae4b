//! Pure: the shell scripts of the backup, restore-check and restore pods. Each writes a JSON
//! report to its termination message on success, and one line saying why on failure, so the
//! operator reads results from the pods instead of assuming them.

use super::names::PG_PORT;
use crate::crd::PatroniCluster;
use kube::ResourceExt;

/// Shared prelude: PostgreSQL's binaries for the spec's version, `fail`, and the members'
/// stable DNS names.
fn prelude(pc: &PatroniCluster) -> String {
    let name = pc.name_any();
    let hosts = (0..pc.spec.members)
        .map(|i| format!("{name}-{i}.{name}-headless"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"set -eu
BIN=/usr/lib/postgresql/{version}/bin
export PGPORT={PG_PORT} PGCONNECT_TIMEOUT=5 PGDATABASE=postgres
HOSTS="{hosts}"
fail() {{ echo "$1" | tee /dev/termination-log >&2; exit 1; }}
"#,
        version = pc.spec.postgresql.version,
    )
}

/// `pg_dump -Fc` of every database (and the roles, without passwords) from a streaming
/// replica when one answers, else from the primary, into `/backup/<name>-<UTC time>/`;
/// keeps the newest `$RETENTION`.
pub fn backup(pc: &PatroniCluster) -> String {
    let name = pc.name_any();
    format!(
        r#"{prelude}pick=""; primary=""
for h in $HOSTS; do
  r=$("$BIN/psql" -h "$h" -XAtc "SELECT pg_is_in_recovery(), coalesce((SELECT status FROM pg_stat_wal_receiver), '')" 2>/dev/null) || continue
  case "$r" in
    "t|streaming") pick="$h"; break ;;
    f\|*) primary="$h" ;;
  esac
done
[ -n "$pick" ] || pick="$primary"
[ -n "$pick" ] || fail "no PostgreSQL member answered (tried $HOSTS)"
rm -rf /backup/{name}-*.partial
set_name="{name}-$(date -u +%Y%m%dT%H%M%SZ)"
dir="/backup/$set_name.partial"
mkdir "$dir"
"$BIN/pg_dumpall" -h "$pick" --globals-only --no-role-passwords -f "$dir/globals.sql" || fail "pg_dumpall --globals-only from $pick failed"
dbs=""
for db in $("$BIN/psql" -h "$pick" -XAtc "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"); do
  "$BIN/pg_dump" -h "$pick" -d "$db" -Fc -f "$dir/$db.dump" || fail "pg_dump of database $db from $pick failed"
  dbs="$dbs${{dbs:+,}}\"$db\""
done
mv "$dir" "/backup/$set_name"
size=$(du -sb "/backup/$set_name" | cut -f1)
ls -1d /backup/{name}-*Z | sort -r | tail -n +$((RETENTION + 1)) | while read -r old; do rm -rf -- "$old"; done
printf '{{"file":"%s","sizeBytes":%s,"source":"%s","databases":[%s]}}' "$set_name" "$size" "${{pick%%.*}}" "$dbs" > /dev/termination-log
echo "backup $set_name ($size bytes) from $pick"
"#,
        prelude = prelude(pc)
    )
}

/// Restores `$SOURCE` (a backup directory, a single `.dump`, or the newest backup when empty)
/// with `pg_restore` against `$PGHOST`; `$1` says what may already be there. Shared by the
/// restore check (a scratch server) and a new cluster's restore (its primary).
fn restore_function() -> &'static str {
    r#"restore() {
  src="$SOURCE"
  [ -n "$src" ] || src=$(ls -1d /backup/*-[0-9]*Z 2>/dev/null | sort | tail -n 1)
  [ -n "$src" ] || fail "no backup found on the backup claim"
  case "$src" in /*) ;; *) src="/backup/$src" ;; esac
  [ -e "$src" ] || fail "backup ${src#/backup/} does not exist on the claim"
  if [ -d "$src" ]; then
    [ ! -f "$src/globals.sql" ] || "$BIN/psql" -Xq -f "$src/globals.sql" >/tmp/globals.log 2>&1 || true
    files=$(ls -1 "$src"/*.dump 2>/dev/null) || fail "backup ${src#/backup/} holds no .dump file"
  else
    files="$src"
  fi
  dbs=""; tables=0
  for f in $files; do
    db=$(basename "$f" .dump)
    exists=$("$BIN/psql" -XAtc "SELECT count(*) FROM pg_database WHERE datname = '$db'")
    if [ "$exists" = 1 ]; then
      used=$("$BIN/psql" -d "$db" -XAtc "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema')")
      [ "$used" = 0 ] || fail "database $db already holds tables; refusing to restore over it"
    else
      "$BIN/createdb" "$db" || fail "cannot create database $db"
    fi
    "$BIN/pg_restore" -d "$db" --exit-on-error "$f" 2>/tmp/restore.err || fail "${f#/backup/} does not restore: $(tail -n 2 /tmp/restore.err | tr '\n"' ' ')"
    n=$("$BIN/psql" -d "$db" -XAtc "SELECT count(*) FROM pg_stat_user_tables")
    tables=$((tables + n))
    dbs="$dbs${dbs:+,}\"$db\""
  done
  report=$(printf '{"file":"%s","databases":[%s],"tables":%s}' "${src#/backup/}" "$dbs" "$tables")
}
"#
}

/// Restores the newest backup into a throw-away server inside the pod (never the live
/// cluster) and reports what it restored.
pub fn restore_check(pc: &PatroniCluster) -> String {
    format!(
        r#"{prelude}{restore}export PGDATA=/tmp/check PGHOST=/tmp PGUSER=postgres
unset PGPASSWORD
"$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust >/tmp/initdb.log 2>&1 || fail "initdb of the scratch server failed: $(tail -n 1 /tmp/initdb.log)"
"$BIN/pg_ctl" -D "$PGDATA" -l /tmp/server.log -w -o "-c listen_addresses='' -c unix_socket_directories=/tmp -c fsync=off" start >/dev/null || fail "the scratch server did not start: $(tail -n 1 /tmp/server.log)"
trap '"$BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true' EXIT
SOURCE=""
restore
printf '%s' "$report" > /dev/termination-log
echo "restore check passed: $report"
"#,
        prelude = prelude(pc),
        restore = restore_function(),
    )
}

/// Finds the member that is not in recovery and exports it as `PGHOST`.
const FIND_PRIMARY: &str = r#"PGHOST=""
for h in $HOSTS; do
  r=$("$BIN/psql" -h "$h" -XAtc "SELECT pg_is_in_recovery()" 2>/dev/null) || continue
  [ "$r" != f ] || { PGHOST="$h"; break; }
done
[ -n "$PGHOST" ] || fail "no primary answered (tried $HOSTS)"
export PGHOST
"#;

/// Restores `$SOURCE` into a new cluster through its primary.
pub fn restore(pc: &PatroniCluster) -> String {
    format!(
        r#"{prelude}{restore}{FIND_PRIMARY}restore
printf '%s' "$report" > /dev/termination-log
echo "restored: $report"
"#,
        prelude = prelude(pc),
        restore = restore_function(),
    )
}

/// Creates or updates the spec's roles (passwords from `$PW_<i>`) and databases through the
/// primary. Idempotent: it runs again after every change of the spec or of a user's Secret.
pub fn roles(pc: &PatroniCluster) -> String {
    let mut sql = String::new();
    let mut vars = String::new();
    // Names are SQL identifiers by the schema's rules (lower case, digits, underscore), so they
    // need no quoting; passwords go through psql variables, never through the shell or SQL text.
    for (i, u) in pc.spec.users.iter().enumerate() {
        let name = &u.name;
        let createdb = if u.create_db {
            "CREATEDB"
        } else {
            "NOCREATEDB"
        };
        sql += &format!(
            "SELECT 'CREATE ROLE {name} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}')\\gexec\nALTER ROLE {name} WITH LOGIN {createdb} PASSWORD :'pw_{i}';\n"
        );
        vars += &format!(" -v pw_{i}=\"$PW_{i}\"");
    }
    for d in &pc.spec.databases {
        let (name, owner) = (&d.name, d.owner.as_deref().unwrap_or("postgres"));
        sql += &format!(
            "SELECT 'CREATE DATABASE {name} OWNER {owner}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{name}')\\gexec\nALTER DATABASE {name} OWNER TO {owner};\n"
        );
    }
    format!(
        r#"{prelude}{FIND_PRIMARY}"$BIN/psql" -X -q -v ON_ERROR_STOP=1{vars} -f - >/tmp/roles.log 2>&1 <<'SQL' || fail "creating roles and databases on $PGHOST failed: $(tail -n 1 /tmp/roles.log)"
{sql}SQL
printf '{{"file":"roles","source":"%s"}}' "${{PGHOST%%.*}}" > /dev/termination-log
echo "roles and databases in place on $PGHOST"
"#,
        prelude = prelude(pc),
    )
}
