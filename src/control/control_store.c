/* The control plane's state in SQLite (docs/decisions.md "Control-plane
 * store"): WAL + synchronous=NORMAL, foreign keys, a versioned schema,
 * prepared statements made once, one transaction per mutation with its
 * history row inside it. The history table refuses UPDATE and DELETE
 * (triggers), so no code path can rewrite it. */
#include "control_int.h"

#include <sqlite3.h>
#include <string.h>
#include <time.h>

/* ---- schema ---- */

static const char schema_v1[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT INTO meta VALUES('desired_rev', 0);"
    "CREATE TABLE tokens(name TEXT PRIMARY KEY,"
    " scope TEXT NOT NULL CHECK(scope IN ('read','deploy','admin','node')),"
    " hash BLOB NOT NULL CHECK(length(hash) = 32), created_at INTEGER NOT NULL, created_by TEXT NOT NULL,"
    " revoked_at INTEGER);"
    "CREATE TABLE apps(name TEXT PRIMARY KEY, created_at INTEGER NOT NULL, created_by TEXT NOT NULL);"
    "CREATE TABLE versions(id TEXT PRIMARY KEY, app TEXT NOT NULL REFERENCES apps(name), size INTEGER NOT NULL,"
    " entries INTEGER NOT NULL, unpacked INTEGER NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL);"
    "CREATE INDEX versions_app ON versions(app, created_at);"
    /* a deployment is one decision to run a version of an app; rollouts
     * (waves, canaries) will hang their steps off it */
    "CREATE TABLE deployments(id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL REFERENCES apps(name),"
    " version TEXT NOT NULL REFERENCES versions(id), state TEXT NOT NULL, rev INTEGER NOT NULL,"
    " created_by TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE desired(app TEXT PRIMARY KEY REFERENCES apps(name), version TEXT NOT NULL REFERENCES versions(id),"
    " deployment INTEGER NOT NULL REFERENCES deployments(id), rev INTEGER NOT NULL);"
    "CREATE TABLE nodes(id TEXT PRIMARY KEY, location TEXT NOT NULL, labels TEXT NOT NULL, token TEXT NOT NULL,"
    " registered_at INTEGER NOT NULL, last_seen INTEGER NOT NULL, report TEXT);"
    "CREATE TABLE history(id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,"
    " action TEXT NOT NULL, app TEXT, subject TEXT NOT NULL, detail TEXT NOT NULL);"
    "CREATE INDEX history_app ON history(app, id);"
    "CREATE TRIGGER history_no_update BEFORE UPDATE ON history"
    " BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;"
    "CREATE TRIGGER history_no_delete BEFORE DELETE ON history"
    " BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;";

/* Version 2: rollouts. A gated deployment ('rolling') keeps its plan and
 * progress as JSON in deployments.rollout; while it runs, the nodes it has
 * reached get the new version from node_desired, which overrides the app's
 * desired row for them (everyone else keeps the previous version). The
 * version's own manifest `rollout:` settings are kept at upload. */
static const char schema_v2[] =
    "ALTER TABLE deployments ADD COLUMN prev_version TEXT;"
    "ALTER TABLE deployments ADD COLUMN rollout TEXT;"
    "ALTER TABLE deployments ADD COLUMN reason TEXT;"
    "ALTER TABLE deployments ADD COLUMN finished_at INTEGER;"
    "UPDATE deployments SET state = 'done' WHERE state = 'active';"
    "CREATE INDEX deployments_app ON deployments(app, id);"
    "ALTER TABLE versions ADD COLUMN rollout TEXT;"
    "CREATE TABLE node_desired(app TEXT NOT NULL REFERENCES apps(name), node TEXT NOT NULL,"
    " version TEXT NOT NULL REFERENCES versions(id), deployment INTEGER NOT NULL REFERENCES deployments(id),"
    " rev INTEGER NOT NULL, PRIMARY KEY(app, node));";

/* Version 3: tokens may expire (NULL: never). */
static const char schema_v3[] = "ALTER TABLE tokens ADD COLUMN expires_at INTEGER;";

/* Version 4: placement. A version keeps its manifest's `placement:` policy
 * as JSON (NULL: every location); `placements` holds where the scheduler
 * last put each app (control_place.c's document), so a restarted control
 * plane carries on from there. */
static const char schema_v4[] = "ALTER TABLE versions ADD COLUMN placement TEXT;"
                                "CREATE TABLE placements(app TEXT PRIMARY KEY REFERENCES apps(name),"
                                " doc TEXT NOT NULL, updated_at INTEGER NOT NULL);";

/* ---- statements ---- */

#define STMTS(X)                                                                                                       \
    X(BEGIN, "BEGIN IMMEDIATE")                                                                                        \
    X(COMMIT, "COMMIT")                                                                                                \
    X(ROLLBACK, "ROLLBACK")                                                                                            \
    X(HISTORY_ADD, "INSERT INTO history(at, actor, action, app, subject, detail) VALUES(?,?,?,?,?,?)")                 \
    X(HISTORY_ALL, "SELECT id, at, actor, action, app, subject, detail FROM history ORDER BY id DESC LIMIT ?")         \
    X(HISTORY_APP,                                                                                                     \
      "SELECT id, at, actor, action, app, subject, detail FROM history WHERE app = ? ORDER BY id DESC LIMIT ?")        \
    X(REV_GET, "SELECT value FROM meta WHERE key = 'desired_rev'")                                                     \
    X(REV_SET, "UPDATE meta SET value = ? WHERE key = 'desired_rev'")                                                  \
    X(TOKEN_ADD, "INSERT INTO tokens(name, scope, hash, created_at, created_by, expires_at) VALUES(?,?,?,?,?,?)")      \
    X(TOKEN_REVOKE, "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")                          \
    X(TOKENS_LIVE, "SELECT name, scope, hash, expires_at FROM tokens WHERE revoked_at IS NULL ORDER BY name")          \
    X(TOKENS_ALL, "SELECT name, scope, created_at, created_by, revoked_at, expires_at FROM tokens ORDER BY name")      \
    X(TOKENS_COUNT, "SELECT count(*) FROM tokens")                                                                     \
    X(APP_ADD, "INSERT INTO apps(name, created_at, created_by) VALUES(?,?,?) ON CONFLICT(name) DO NOTHING")            \
    X(APP_GET, "SELECT a.name, a.created_at, a.created_by, d.version, d.deployment, d.rev,"                            \
               " (SELECT count(*) FROM versions v WHERE v.app = a.name),"                                              \
               " (SELECT id FROM versions v WHERE v.app = a.name ORDER BY created_at DESC, rowid DESC LIMIT 1)"        \
               " FROM apps a LEFT JOIN desired d ON d.app = a.name WHERE a.name = ?")                                  \
    X(APPS_ALL, "SELECT a.name, a.created_at, a.created_by, d.version, d.deployment, d.rev,"                           \
                " (SELECT count(*) FROM versions v WHERE v.app = a.name),"                                             \
                " (SELECT id FROM versions v WHERE v.app = a.name ORDER BY created_at DESC, rowid DESC LIMIT 1)"       \
                " FROM apps a LEFT JOIN desired d ON d.app = a.name ORDER BY a.name")                                  \
    X(VERSION_FIND, "SELECT app FROM versions WHERE id = ?")                                                           \
    X(VERSION_ADD, "INSERT INTO versions(id, app, size, entries, unpacked, created_at, created_by, rollout,"           \
                   " placement) VALUES(?,?,?,?,?,?,?,?,?)")                                                            \
    X(VERSION_GET, "SELECT v.id, v.app, v.size, v.entries, v.unpacked, v.created_at, v.created_by, d.version IS NOT "  \
                   "NULL FROM versions v LEFT JOIN desired d ON d.app = v.app AND d.version = v.id"                    \
                   " WHERE v.app = ? AND v.id = ?")                                                                    \
    X(VERSIONS_APP, "SELECT v.id, v.app, v.size, v.entries, v.unpacked, v.created_at, v.created_by, d.version IS NOT " \
                    "NULL FROM versions v LEFT JOIN desired d ON d.app = v.app AND d.version = v.id"                   \
                    " WHERE v.app = ? ORDER BY v.created_at DESC, v.rowid DESC")                                       \
    X(DESIRED_GET, "SELECT version FROM desired WHERE app = ?")                                                        \
    X(DEPLOY_SUPERSEDE, "UPDATE deployments SET state = 'superseded', finished_at = coalesce(finished_at, ?),"         \
                        " reason = coalesce(reason, ?) WHERE app = ? AND state IN ('done', 'rolling')")                \
    X(DEPLOY_ROLLING, "SELECT id FROM deployments WHERE app = ? AND state = 'rolling'")                                \
    X(DEPLOY_ADD, "INSERT INTO deployments(app, version, state, rev, created_by, created_at, finished_at,"             \
                  " prev_version) VALUES(?,?,'done',?,?,?,?,?)")                                                       \
    X(NODE_DESIRED_CLEAR, "DELETE FROM node_desired WHERE app = ?")                                                    \
    X(DESIRED_SET, "INSERT INTO desired(app, version, deployment, rev) VALUES(?,?,?,?) ON CONFLICT(app) DO UPDATE"     \
                   " SET version = excluded.version, deployment = excluded.deployment, rev = excluded.rev")            \
    X(DESIRED_ALL, "SELECT app, version, deployment, rev FROM desired"                                                 \
                   " WHERE app NOT IN (SELECT app FROM node_desired WHERE node = ?1)"                                  \
                   " UNION ALL SELECT app, version, deployment, rev FROM node_desired WHERE node = ?1 ORDER BY 1")     \
    X(NODE_UPSERT, "INSERT INTO nodes(id, location, labels, token, registered_at, last_seen) VALUES(?,?,?,?,?,?)"      \
                   " ON CONFLICT(id) DO UPDATE SET location = excluded.location, labels = excluded.labels,"            \
                   " token = excluded.token, registered_at = excluded.registered_at,"                                  \
                   " last_seen = excluded.last_seen")                                                                  \
    X(NODE_BEAT, "UPDATE nodes SET last_seen = ?, report = ? WHERE id = ?")                                            \
    X(NODE_EXISTS, "SELECT 1 FROM nodes WHERE id = ?")                                                                 \
    X(NODES_ALL, "SELECT id, location, labels, registered_at, last_seen, report FROM nodes ORDER BY id")

enum stmt {
#define STMT_ENUM(name, sql) ST_##name,
    STMTS(STMT_ENUM)
#undef STMT_ENUM
        ST__COUNT
};

static const char *const stmt_sql[] = {
#define STMT_SQL(name, sql) sql,
    STMTS(STMT_SQL)
#undef STMT_SQL
};

struct vg__control_store {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    int64_t rev;
};

sqlite3 *vg__control_store_db(struct vg__control_store *s)
{
    return s->db;
}

static int64_t now_ms(void)
{
    return (int64_t)(vg_wall_us() / 1000);
}

void vg__control_time_format(int64_t ms, char buf[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static json_t *json_time(int64_t ms)
{
    char b[32];
    vg__control_time_format(ms, b);
    return json_string(b);
}

static void log_sql(struct vg__control_store *s, const char *what)
{
    vg_log(VG_LOG_ERROR, "database error", "op", what, "reason", sqlite3_errmsg(s->db), NULL);
}

/* The statement, reset and unbound, ready for binds. */
static sqlite3_stmt *q(struct vg__control_store *s, enum stmt id)
{
    sqlite3_stmt *st = s->st[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* Runs a statement that returns no rows; 0, VG_EEXIST on a constraint, else VG_EIO. */
static int exec_done(struct vg__control_store *s, sqlite3_stmt *st, const char *what)
{
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r == SQLITE_DONE)
        return 0;
    if (r == SQLITE_CONSTRAINT)
        return VG_EEXIST;
    log_sql(s, what);
    return VG_EIO;
}

static int tx_begin(struct vg__control_store *s)
{
    return exec_done(s, q(s, ST_BEGIN), "begin");
}

static int tx_end(struct vg__control_store *s, int rc)
{
    if (rc == 0 && (rc = exec_done(s, q(s, ST_COMMIT), "commit")) == 0)
        return 0;
    if (!sqlite3_get_autocommit(s->db))
        (void)exec_done(s, q(s, ST_ROLLBACK), "rollback");
    return rc;
}

static void tx_abort(struct vg__control_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        (void)exec_done(s, q(s, ST_ROLLBACK), "rollback");
}

/* Appends one history row (inside the caller's transaction); takes detail. */
static int history_add(struct vg__control_store *s, const char *actor, const char *action, const char *app,
                       const char *subject, json_t *detail)
{
    char *d = detail ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(detail);
    sqlite3_stmt *st = q(s, ST_HISTORY_ADD);
    sqlite3_bind_int64(st, 1, now_ms());
    bind_text(st, 2, actor);
    bind_text(st, 3, action);
    bind_text(st, 4, app);
    bind_text(st, 5, subject);
    bind_text(st, 6, d ? d : "{}");
    free(d);
    return exec_done(s, st, "history");
}

/* ---- for the other files of the module (control_rollout.c) ---- */

int vg__control_store_begin(struct vg__control_store *s)
{
    return tx_begin(s);
}

int vg__control_store_end(struct vg__control_store *s, int rc)
{
    return tx_end(s, rc);
}

int vg__control_store_history(struct vg__control_store *s, const char *actor, const char *action, const char *app,
                              const char *subject, json_t *detail)
{
    return history_add(s, actor, action, app, subject, detail);
}

int vg__control_store_rev_next(struct vg__control_store *s, int64_t *rev)
{
    *rev = s->rev + 1;
    sqlite3_stmt *st = q(s, ST_REV_SET);
    sqlite3_bind_int64(st, 1, *rev);
    return exec_done(s, st, "rev set");
}

void vg__control_store_rev_committed(struct vg__control_store *s, int64_t rev)
{
    s->rev = rev;
}

/* ---- open ---- */

static int migrate(struct vg__control_store *s, char *err, size_t errcap)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (version < 0)
        goto sqlerr;
    if (version > VG__CONTROL_SCHEMA_VERSION) {
        snprintf(err, errcap, "the database has schema %d; this verge knows up to %d", version,
                 VG__CONTROL_SCHEMA_VERSION);
        return VG_EINVAL;
    }
    if (version == VG__CONTROL_SCHEMA_VERSION)
        return 0;
    /* each step in the same transaction as its user_version bump */
    char *sql = vg_xasprintf("BEGIN IMMEDIATE;%s%s%s%sPRAGMA user_version = %d;COMMIT;", version < 1 ? schema_v1 : "",
                             version < 2 ? schema_v2 : "", version < 3 ? schema_v3 : "", version < 4 ? schema_v4 : "",
                             VG__CONTROL_SCHEMA_VERSION);
    char *msg = NULL;
    int r = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    free(sql);
    if (r != SQLITE_OK) {
        snprintf(err, errcap, "creating the schema: %s", msg ? msg : sqlite3_errstr(r));
        sqlite3_free(msg);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return VG_EIO;
    }
    return 0;
sqlerr:
    snprintf(err, errcap, "%s", sqlite3_errmsg(s->db));
    return VG_EIO;
}

int vg__control_store_open(const char *path, struct vg__control_store **out, char *err, size_t errcap)
{
    struct vg__control_store *s = vg_xcalloc(1, sizeof(*s));
    int rc = VG_EIO;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errcap, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        goto out;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* WAL: readers never block the writer and a commit is one append;
     * NORMAL: a commit survives a crash of the process (the WAL is written
     * before COMMIT returns), the last ones may be lost with the machine's
     * power (fsync at checkpoints only) — docs/decisions.md */
    char *msg = NULL;
    if (sqlite3_exec(s->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                     "PRAGMA trusted_schema=OFF;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errcap, "%s: %s", path, msg ? msg : "pragma failed");
        sqlite3_free(msg);
        goto out;
    }
    if ((rc = migrate(s, err, errcap)) != 0)
        goto out;
    rc = VG_EIO;
    for (int i = 0; i < ST__COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) != SQLITE_OK) {
            snprintf(err, errcap, "preparing '%.60s': %s", stmt_sql[i], sqlite3_errmsg(s->db));
            goto out;
        }
    }
    sqlite3_stmt *st = q(s, ST_REV_GET);
    if (sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, errcap, "no desired_rev: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    s->rev = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    rc = 0;
out:
    if (rc == 0)
        *out = s;
    else
        vg__control_store_close(s);
    return rc;
}

void vg__control_store_close(struct vg__control_store *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    free(s);
}

/* ---- scopes ---- */

static const char *const scope_names[] = {"read", "deploy", "admin", "node"};

unsigned vg__control_scope_parse(const char *s)
{
    for (unsigned i = 0; s && i < VG_ARRAY_LEN(scope_names); i++)
        if (strcmp(s, scope_names[i]) == 0)
            return 1u << i;
    return 0;
}

const char *vg__control_scope_name(unsigned scope)
{
    for (unsigned i = 0; i < VG_ARRAY_LEN(scope_names); i++)
        if (scope == 1u << i)
            return scope_names[i];
    return "?";
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* Ends a row loop: SQLITE_DONE is success. */
static int rows_end(struct vg__control_store *s, sqlite3_stmt *st, int r, const char *what)
{
    sqlite3_reset(st);
    if (r == SQLITE_DONE)
        return 0;
    log_sql(s, what);
    return VG_EIO;
}

/* ---- tokens ---- */

int vg__control_token_insert(struct vg__control_store *s, const char *name, unsigned scope, const uint8_t hash[32],
                             const char *actor, int64_t expires_at_ms)
{
    int rc = tx_begin(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = q(s, ST_TOKEN_ADD);
    bind_text(st, 1, name);
    bind_text(st, 2, vg__control_scope_name(scope));
    sqlite3_bind_blob(st, 3, hash, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, now_ms());
    bind_text(st, 5, actor);
    if (expires_at_ms)
        sqlite3_bind_int64(st, 6, expires_at_ms);
    else
        sqlite3_bind_null(st, 6);
    rc = exec_done(s, st, "token insert");
    if (rc == 0)
        rc = history_add(s, actor, "token.create", NULL, name,
                         json_pack("{s:s,s:o}", "scope", vg__control_scope_name(scope), "expires_at",
                                   expires_at_ms ? json_time(expires_at_ms) : json_null()));
    return tx_end(s, rc);
}

int vg__control_token_revoke(struct vg__control_store *s, const char *name, const char *actor)
{
    int rc = tx_begin(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = q(s, ST_TOKEN_REVOKE);
    sqlite3_bind_int64(st, 1, now_ms());
    bind_text(st, 2, name);
    rc = exec_done(s, st, "token revoke");
    if (rc == 0 && sqlite3_changes(s->db) == 0)
        rc = VG_ENOENT;
    if (rc == 0)
        rc = history_add(s, actor, "token.revoke", NULL, name, NULL);
    return tx_end(s, rc);
}

int vg__control_tokens_each(struct vg__control_store *s, vg__control_token_fn cb, void *data)
{
    sqlite3_stmt *st = q(s, ST_TOKENS_LIVE);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 2) != 32)
            continue;
        cb(data, col_text(st, 0), vg__control_scope_parse(col_text(st, 1)), sqlite3_column_blob(st, 2),
           sqlite3_column_int64(st, 3)); /* NULL reads as 0: never */
    }
    return rows_end(s, st, r, "tokens");
}

int vg__control_tokens_count(struct vg__control_store *s, int64_t *n)
{
    sqlite3_stmt *st = q(s, ST_TOKENS_COUNT);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *n = sqlite3_column_int64(st, 0);
        r = sqlite3_step(st);
    }
    return rows_end(s, st, r, "tokens count");
}

int vg__control_tokens_list(struct vg__control_store *s, json_t **out)
{
    sqlite3_stmt *st = q(s, ST_TOKENS_ALL);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *t = json_pack("{s:s,s:s,s:o,s:s}", "name", col_text(st, 0), "scope", col_text(st, 1), "created_at",
                              json_time(sqlite3_column_int64(st, 2)), "created_by", col_text(st, 3));
        bool revoked = sqlite3_column_type(st, 4) != SQLITE_NULL;
        json_object_set_new(t, "revoked_at", revoked ? json_time(sqlite3_column_int64(st, 4)) : json_null());
        bool expires = sqlite3_column_type(st, 5) != SQLITE_NULL;
        json_object_set_new(t, "expires_at", expires ? json_time(sqlite3_column_int64(st, 5)) : json_null());
        json_array_append_new(arr, t);
    }
    int rc = rows_end(s, st, r, "tokens list");
    if (rc)
        json_decref(arr);
    else
        *out = arr;
    return rc;
}

/* ---- apps and versions ---- */

static int app_insert(struct vg__control_store *s, const char *app, const char *actor, bool *created)
{
    sqlite3_stmt *st = q(s, ST_APP_ADD);
    bind_text(st, 1, app);
    sqlite3_bind_int64(st, 2, now_ms());
    bind_text(st, 3, actor);
    int rc = exec_done(s, st, "app insert");
    *created = rc == 0 && sqlite3_changes(s->db) > 0;
    if (rc == 0 && *created)
        rc = history_add(s, actor, "app.create", app, app, NULL);
    return rc;
}

int vg__control_app_create(struct vg__control_store *s, const char *app, const char *actor, bool *created)
{
    int rc = tx_begin(s);
    if (rc)
        return rc;
    return tx_end(s, app_insert(s, app, actor, created));
}

static json_t *app_row(sqlite3_stmt *st)
{
    json_t *a =
        json_pack("{s:s,s:o,s:s,s:I}", "name", col_text(st, 0), "created_at", json_time(sqlite3_column_int64(st, 1)),
                  "created_by", col_text(st, 2), "versions", (json_int_t)sqlite3_column_int64(st, 6));
    if (sqlite3_column_type(st, 3) != SQLITE_NULL)
        json_object_set_new(a, "desired",
                            json_pack("{s:s,s:I,s:I}", "version", col_text(st, 3), "deployment",
                                      (json_int_t)sqlite3_column_int64(st, 4), "rev",
                                      (json_int_t)sqlite3_column_int64(st, 5)));
    else
        json_object_set_new(a, "desired", json_null());
    json_object_set_new(a, "latest_version",
                        sqlite3_column_type(st, 7) != SQLITE_NULL ? json_string(col_text(st, 7)) : json_null());
    return a;
}

int vg__control_apps_list(struct vg__control_store *s, json_t **out)
{
    sqlite3_stmt *st = q(s, ST_APPS_ALL);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, app_row(st));
    int rc = rows_end(s, st, r, "apps list");
    if (rc)
        json_decref(arr);
    else
        *out = arr;
    return rc;
}

int vg__control_app_get(struct vg__control_store *s, const char *app, json_t **out)
{
    sqlite3_stmt *st = q(s, ST_APP_GET);
    bind_text(st, 1, app);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *out = app_row(st);
        sqlite3_reset(st);
        return 0;
    }
    int rc = rows_end(s, st, r, "app get");
    return rc ? rc : VG_ENOENT;
}

static json_t *version_row(sqlite3_stmt *st)
{
    json_t *v = json_pack("{s:s,s:s,s:I,s:I,s:I,s:o,s:s,s:b}", "id", col_text(st, 0), "app", col_text(st, 1), "size",
                          (json_int_t)sqlite3_column_int64(st, 2), "entries", (json_int_t)sqlite3_column_int64(st, 3),
                          "unpacked_bytes", (json_int_t)sqlite3_column_int64(st, 4), "created_at",
                          json_time(sqlite3_column_int64(st, 5)), "created_by", col_text(st, 6), "desired",
                          sqlite3_column_int(st, 7));
    char *b = vg_xasprintf("/v1/bundles/%s", col_text(st, 0));
    json_object_set_new(v, "bundle", json_string(b));
    free(b);
    return v;
}

int vg__control_version_add(struct vg__control_store *s, const struct vg__control_version *v, const char *actor,
                            bool *created)
{
    *created = false;
    int rc = tx_begin(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = q(s, ST_VERSION_FIND);
    bind_text(st, 1, v->id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        rc = strcmp(col_text(st, 0), v->app) == 0 ? 0 : VG_EEXIST;
        sqlite3_reset(st);
        tx_abort(s); /* nothing to write */
        return rc;
    }
    if ((rc = rows_end(s, st, r, "version find")) != 0)
        return tx_end(s, rc);
    bool app_created;
    if ((rc = app_insert(s, v->app, actor, &app_created)) != 0)
        return tx_end(s, rc);
    st = q(s, ST_VERSION_ADD);
    bind_text(st, 1, v->id);
    bind_text(st, 2, v->app);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)v->size);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)v->entries);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)v->unpacked);
    sqlite3_bind_int64(st, 6, now_ms());
    bind_text(st, 7, actor);
    bind_text(st, 8, v->rollout);
    bind_text(st, 9, v->placement);
    if ((rc = exec_done(s, st, "version insert")) == 0)
        rc = history_add(s, actor, "version.create", v->app, v->id,
                         json_pack("{s:I,s:I,s:I}", "size", (json_int_t)v->size, "entries", (json_int_t)v->entries,
                                   "unpacked_bytes", (json_int_t)v->unpacked));
    *created = rc == 0;
    rc = tx_end(s, rc);
    if (rc)
        *created = false;
    return rc;
}

static int app_known(struct vg__control_store *s, const char *app)
{
    json_t *a;
    int rc = vg__control_app_get(s, app, &a);
    if (rc == 0)
        json_decref(a);
    return rc;
}

int vg__control_versions_list(struct vg__control_store *s, const char *app, json_t **out)
{
    int rc = app_known(s, app);
    if (rc)
        return rc;
    sqlite3_stmt *st = q(s, ST_VERSIONS_APP);
    bind_text(st, 1, app);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, version_row(st));
    rc = rows_end(s, st, r, "versions list");
    if (rc)
        json_decref(arr);
    else
        *out = arr;
    return rc;
}

int vg__control_version_get(struct vg__control_store *s, const char *app, const char *id, json_t **out)
{
    sqlite3_stmt *st = q(s, ST_VERSION_GET);
    bind_text(st, 1, app);
    bind_text(st, 2, id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *out = version_row(st);
        sqlite3_reset(st);
        return 0;
    }
    int rc = rows_end(s, st, r, "version get");
    return rc ? rc : VG_ENOENT;
}

int vg__control_bundle_known(struct vg__control_store *s, const char *id, bool *known)
{
    sqlite3_stmt *st = q(s, ST_VERSION_FIND);
    bind_text(st, 1, id);
    int r = sqlite3_step(st);
    *known = r == SQLITE_ROW;
    if (r == SQLITE_ROW)
        r = SQLITE_DONE;
    return rows_end(s, st, r, "bundle known");
}

/* ---- desired state ---- */

int64_t vg__control_rev(struct vg__control_store *s)
{
    return s->rev;
}

int vg__control_desired_set(struct vg__control_store *s, const char *app, const char *version, const char *actor,
                            bool *changed, int64_t *deployment, int64_t *rev)
{
    *changed = false;
    json_t *v;
    int rc = vg__control_version_get(s, app, version, &v);
    if (rc)
        return rc;
    json_decref(v);
    if ((rc = tx_begin(s)) != 0)
        return rc;
    sqlite3_stmt *st = q(s, ST_DESIRED_GET);
    bind_text(st, 1, app);
    int r = sqlite3_step(st);
    bool same = r == SQLITE_ROW && strcmp(col_text(st, 0), version) == 0;
    char *prev = r == SQLITE_ROW ? vg_xstrdup(col_text(st, 0)) : NULL;
    if (r == SQLITE_ROW)
        r = SQLITE_DONE;
    rc = rows_end(s, st, r, "desired get");
    /* a rollout in progress is cancelled even when the version is the one
     * desired already: that is `verge rollback` during a rollout */
    int64_t rolling = 0;
    if (rc == 0) {
        st = q(s, ST_DEPLOY_ROLLING);
        bind_text(st, 1, app);
        if ((r = sqlite3_step(st)) == SQLITE_ROW) {
            rolling = sqlite3_column_int64(st, 0);
            r = SQLITE_DONE;
        }
        rc = rows_end(s, st, r, "deployment rolling");
    }
    if (rc != 0 || (same && !rolling)) {
        *rev = s->rev;
        free(prev);
        tx_abort(s); /* nothing to write */
        return rc;
    }
    int64_t new_rev = s->rev + 1, now = now_ms();
    char *why = vg_xasprintf("superseded by %.12s (set at once by %s)", version, actor);
    st = q(s, ST_DEPLOY_SUPERSEDE);
    sqlite3_bind_int64(st, 1, now);
    bind_text(st, 2, why);
    bind_text(st, 3, app);
    free(why);
    if ((rc = exec_done(s, st, "deployment supersede")) != 0)
        goto fail;
    st = q(s, ST_NODE_DESIRED_CLEAR);
    bind_text(st, 1, app);
    if ((rc = exec_done(s, st, "node desired clear")) != 0)
        goto fail;
    st = q(s, ST_DEPLOY_ADD);
    bind_text(st, 1, app);
    bind_text(st, 2, version);
    sqlite3_bind_int64(st, 3, new_rev);
    bind_text(st, 4, actor);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_int64(st, 6, now);
    bind_text(st, 7, prev);
    if ((rc = exec_done(s, st, "deployment insert")) != 0)
        goto fail;
    int64_t dep = sqlite3_last_insert_rowid(s->db);
    st = q(s, ST_DESIRED_SET);
    bind_text(st, 1, app);
    bind_text(st, 2, version);
    sqlite3_bind_int64(st, 3, dep);
    sqlite3_bind_int64(st, 4, new_rev);
    if ((rc = exec_done(s, st, "desired set")) != 0)
        goto fail;
    st = q(s, ST_REV_SET);
    sqlite3_bind_int64(st, 1, new_rev);
    if ((rc = exec_done(s, st, "rev set")) != 0)
        goto fail;
    if (rolling)
        rc = history_add(s, actor, "deployment.cancel", app, version,
                         json_pack("{s:I,s:I}", "deployment", (json_int_t)rolling, "by", (json_int_t)dep));
    if (rc == 0)
        rc = history_add(s, actor, "desired.set", app, version,
                         json_pack("{s:I,s:I}", "deployment", (json_int_t)dep, "rev", (json_int_t)new_rev));
    if ((rc = tx_end(s, rc)) != 0) {
        free(prev);
        return rc;
    }
    free(prev);
    s->rev = new_rev;
    *changed = true;
    *deployment = dep;
    *rev = new_rev;
    return 0;
fail:
    free(prev);
    return tx_end(s, rc);
}

int vg__control_desired_for_node(struct vg__control_store *s, const char *node, json_t **out)
{
    /* every node runs every app's desired version, except the nodes a
     * rollout has reached (node_desired); placement narrows this (the
     * caller, control_place.c) */
    sqlite3_stmt *st = q(s, ST_DESIRED_ALL);
    bind_text(st, 1, node);
    json_t *apps = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        char *b = vg_xasprintf("/v1/bundles/%s", col_text(st, 1));
        json_array_append_new(apps, json_pack("{s:s,s:s,s:I,s:I,s:s}", "app", col_text(st, 0), "version",
                                              col_text(st, 1), "deployment", (json_int_t)sqlite3_column_int64(st, 2),
                                              "rev", (json_int_t)sqlite3_column_int64(st, 3), "bundle", b));
        free(b);
    }
    int rc = rows_end(s, st, r, "desired list");
    if (rc) {
        json_decref(apps);
        return rc;
    }
    *out = json_pack("{s:s,s:I,s:o}", "node", node, "rev", (json_int_t)s->rev, "apps", apps);
    return 0;
}

/* ---- nodes ---- */

int vg__control_node_register(struct vg__control_store *s, const char *id, const char *location, json_t *labels,
                              const char *actor)
{
    char *l = json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = tx_begin(s);
    if (rc) {
        free(l);
        return rc;
    }
    int64_t now = now_ms();
    sqlite3_stmt *st = q(s, ST_NODE_UPSERT);
    bind_text(st, 1, id);
    bind_text(st, 2, location);
    bind_text(st, 3, l ? l : "{}");
    bind_text(st, 4, actor);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_int64(st, 6, now);
    rc = exec_done(s, st, "node register");
    if (rc == 0)
        rc = history_add(s, actor, "node.register", NULL, id,
                         json_pack("{s:s,s:O}", "location", location, "labels", labels));
    free(l);
    return tx_end(s, rc);
}

int vg__control_node_heartbeat(struct vg__control_store *s, const char *id, json_t *report)
{
    char *r = json_dumps(report, JSON_COMPACT);
    sqlite3_stmt *st = q(s, ST_NODE_BEAT);
    sqlite3_bind_int64(st, 1, now_ms());
    bind_text(st, 2, r ? r : "{}");
    bind_text(st, 3, id);
    free(r);
    /* an observation, not a change: no history row (it would drown the
     * changes), and one statement is its own transaction */
    int rc = exec_done(s, st, "node heartbeat");
    return rc == 0 && sqlite3_changes(s->db) == 0 ? VG_ENOENT : rc;
}

int vg__control_node_exists(struct vg__control_store *s, const char *id, bool *exists)
{
    sqlite3_stmt *st = q(s, ST_NODE_EXISTS);
    bind_text(st, 1, id);
    int r = sqlite3_step(st);
    *exists = r == SQLITE_ROW;
    if (r == SQLITE_ROW)
        r = SQLITE_DONE;
    return rows_end(s, st, r, "node exists");
}

int vg__control_nodes_list(struct vg__control_store *s, uint64_t now, uint64_t up_ms, json_t **out)
{
    sqlite3_stmt *st = q(s, ST_NODES_ALL);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seen = sqlite3_column_int64(st, 4);
        json_t *labels = json_loads(col_text(st, 2), 0, NULL);
        json_t *report = sqlite3_column_type(st, 5) != SQLITE_NULL ? json_loads(col_text(st, 5), 0, NULL) : NULL;
        json_array_append_new(arr, json_pack("{s:s,s:s,s:o,s:o,s:o,s:b,s:o}", "id", col_text(st, 0), "location",
                                             col_text(st, 1), "labels", labels ? labels : json_object(),
                                             "registered_at", json_time(sqlite3_column_int64(st, 3)), "last_seen",
                                             json_time(seen), "up", (int64_t)now - seen <= (int64_t)up_ms, "report",
                                             report ? report : json_null()));
    }
    int rc = rows_end(s, st, r, "nodes list");
    if (rc)
        json_decref(arr);
    else
        *out = arr;
    return rc;
}

/* ---- history ---- */

int vg__control_history_list(struct vg__control_store *s, const char *app, int64_t limit, json_t **out)
{
    sqlite3_stmt *st = q(s, app ? ST_HISTORY_APP : ST_HISTORY_ALL);
    int i = 1;
    if (app)
        bind_text(st, i++, app);
    sqlite3_bind_int64(st, i, limit);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *detail = json_loads(col_text(st, 6), 0, NULL);
        json_t *h = json_pack("{s:I,s:o,s:s,s:s,s:s,s:o}", "id", (json_int_t)sqlite3_column_int64(st, 0), "at",
                              json_time(sqlite3_column_int64(st, 1)), "actor", col_text(st, 2), "action",
                              col_text(st, 3), "subject", col_text(st, 5), "detail", detail ? detail : json_object());
        json_object_set_new(h, "app",
                            sqlite3_column_type(st, 4) != SQLITE_NULL ? json_string(col_text(st, 4)) : json_null());
        json_array_append_new(arr, h);
    }
    int rc = rows_end(s, st, r, "history list");
    if (rc)
        json_decref(arr);
    else
        *out = arr;
    return rc;
}
