/* control: the SQLite store. Schema and settings, tokens stored hashed and
 * revoked for good, versions idempotent, desired-state revisions, history
 * written with every mutation and impossible to rewrite, everything there
 * again after reopening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "control/control_int.h"

static char dir[64], db_path[128];
static struct vg__control_store *st;

static const char V1[] = "1111111111111111111111111111111111111111111111111111111111111111";
static const char V2[] = "2222222222222222222222222222222222222222222222222222222222222222";
#define V1_SQL "1111111111111111111111111111111111111111111111111111111111111111"
#define V2_SQL "2222222222222222222222222222222222222222222222222222222222222222"

static void open_store(void)
{
    char err[256];
    int rc = vg__control_store_open(db_path, &st, err, sizeof(err));
    if (rc)
        fail_msg("open: %s", err);
}

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/vg-store-test-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(db_path, sizeof(db_path), "%s/control.db", dir);
    open_store();
    return 0;
}

static int teardown(void **state)
{
    vg__control_store_close(st);
    st = NULL;
    return vg_bundle_rmtree(dir);
}

static int64_t scalar(const char *sql)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(vg__control_store_db(st), sql, -1, &s, NULL), SQLITE_OK);
    int64_t v = -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static char *text(const char *sql)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(vg__control_store_db(st), sql, -1, &s, NULL), SQLITE_OK);
    char *v = NULL;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        v = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return v;
}

static void test_schema_and_settings(void **state)
{
    assert_int_equal(scalar("PRAGMA user_version"), VG__CONTROL_SCHEMA_VERSION);
    char *mode = text("PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(scalar("PRAGMA synchronous"), 1); /* NORMAL */
    assert_int_equal(scalar("PRAGMA foreign_keys"), 1);
    /* a version of an app that does not exist: the foreign key refuses it */
    char *msg = NULL;
    assert_int_not_equal(
        sqlite3_exec(vg__control_store_db(st), "INSERT INTO versions VALUES('x','nope',1,1,1,0,'t')", NULL, NULL, &msg),
        SQLITE_OK);
    sqlite3_free(msg);
}

static void test_newer_schema_refused(void **state)
{
    assert_int_equal(sqlite3_exec(vg__control_store_db(st), "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    vg__control_store_close(st);
    char err[256] = "";
    assert_int_equal(vg__control_store_open(db_path, &st, err, sizeof(err)), VG_EINVAL);
    assert_non_null(strstr(err, "99"));
    /* put it back for teardown */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    char put_back[64];
    snprintf(put_back, sizeof(put_back), "PRAGMA user_version = %d", VG__CONTROL_SCHEMA_VERSION);
    sqlite3_exec(db, put_back, NULL, NULL, NULL);
    sqlite3_close(db);
    open_store();
}

static void test_tokens_hashed_and_revoked(void **state)
{
    char secret[69];
    assert_int_equal(vg__control_secret_new(secret), 0);
    assert_int_equal(strlen(secret), 68);
    assert_memory_equal(secret, "vgt_", 4);
    uint8_t hash[32];
    vg__control_secret_hash(secret, strlen(secret), hash);
    assert_int_equal(vg__control_token_insert(st, "ci", VG__CONTROL_SCOPE_DEPLOY, hash, "admin", 0), 0);
    assert_int_equal(vg__control_token_insert(st, "ci", VG__CONTROL_SCOPE_READ, hash, "admin", 0), VG_EEXIST);
    /* the secret is nowhere in the database, its sha256 is */
    char *hex = text("SELECT hex(hash) FROM tokens WHERE name = 'ci'");
    assert_non_null(hex);
    assert_int_equal(strlen(hex), 64);
    free(hex);
    char q[256];
    snprintf(q, sizeof(q), "SELECT count(*) FROM tokens WHERE name LIKE '%%%s%%' OR hash = '%s'", secret + 4, secret);
    assert_int_equal(scalar(q), 0);

    struct vg__control_auth *a = vg__control_auth_create();
    assert_int_equal(vg__control_auth_load(a, st), 0);
    struct vg__control_actor who;
    assert_int_equal(vg__control_auth_check(a, secret, strlen(secret), &who), 0);
    assert_string_equal(who.name, "ci");
    assert_int_equal(who.scope, VG__CONTROL_SCOPE_DEPLOY);
    assert_int_equal(vg__control_auth_check(a, secret, strlen(secret) - 1, &who), VG_ENOENT);
    secret[10] ^= 1;
    assert_int_equal(vg__control_auth_check(a, secret, strlen(secret), &who), VG_ENOENT);
    secret[10] ^= 1;

    assert_int_equal(vg__control_token_revoke(st, "ci", "admin"), 0);
    assert_int_equal(vg__control_token_revoke(st, "ci", "admin"), VG_ENOENT);
    assert_int_equal(vg__control_token_revoke(st, "nope", "admin"), VG_ENOENT);
    assert_int_equal(vg__control_auth_load(a, st), 0);
    assert_int_equal(vg__control_auth_check(a, secret, strlen(secret), &who), VG_ENOENT);
    /* a revoked name stays taken */
    assert_int_equal(vg__control_token_insert(st, "ci", VG__CONTROL_SCOPE_READ, hash, "admin", 0), VG_EEXIST);
    json_t *list;
    assert_int_equal(vg__control_tokens_list(st, &list), 0);
    assert_int_equal(json_array_size(list), 1);
    assert_true(json_is_string(json_object_get(json_array_get(list, 0), "revoked_at")));
    assert_null(json_object_get(json_array_get(list, 0), "hash"));
    json_decref(list);
    /* an expired token is told apart from an unknown one */
    char old[69];
    assert_int_equal(vg__control_secret_new(old), 0);
    vg__control_secret_hash(old, strlen(old), hash);
    assert_int_equal(vg__control_token_insert(st, "old", VG__CONTROL_SCOPE_READ, hash, "admin", 1), 0);
    assert_int_equal(vg__control_auth_load(a, st), 0);
    assert_int_equal(vg__control_auth_check(a, old, strlen(old), &who), VG_ELIMIT);
    vg__control_auth_destroy(a);
    assert_int_equal(scalar("SELECT count(*) FROM history WHERE action IN ('token.create', 'token.revoke')"), 3);
}

static void test_scopes(void **state)
{
    assert_int_equal(vg__control_scope_parse("read"), VG__CONTROL_SCOPE_READ);
    assert_int_equal(vg__control_scope_parse("node"), VG__CONTROL_SCOPE_NODE);
    assert_int_equal(vg__control_scope_parse("root"), 0);
    assert_int_equal(vg__control_scope_parse(NULL), 0);
    assert_string_equal(vg__control_scope_name(VG__CONTROL_SCOPE_ADMIN), "admin");
    assert_true(vg__control_name_ok("ci-deploy.2_x"));
    assert_false(vg__control_name_ok(""));
    assert_false(vg__control_name_ok("a/b"));
    assert_false(vg__control_name_ok("a b"));
}

static void test_versions_desired_and_history(void **state)
{
    int64_t h0 = scalar("SELECT count(*) FROM history");
    struct vg__control_version v = {.id = V1, .app = "hello", .size = 10, .entries = 2, .unpacked = 20};
    bool created;
    assert_int_equal(vg__control_version_add(st, &v, "dev", &created), 0);
    assert_true(created);
    assert_int_equal(vg__control_version_add(st, &v, "dev", &created), 0); /* same bytes again */
    assert_false(created);
    assert_int_equal(scalar("SELECT count(*) FROM versions"), 1);
    /* the app was created implicitly, in the same transaction */
    assert_int_equal(scalar("SELECT count(*) FROM history") - h0, 2);
    struct vg__control_version other = {.id = V1, .app = "other", .size = 10};
    assert_int_equal(vg__control_version_add(st, &other, "dev", &created), VG_EEXIST);
    assert_int_equal(scalar("SELECT count(*) FROM apps WHERE name = 'other'"), 0); /* rolled back */

    bool changed;
    int64_t dep, rev;
    assert_int_equal(vg__control_rev(st), 0);
    assert_int_equal(vg__control_desired_set(st, "hello", V1, "dev", &changed, &dep, &rev), 0);
    assert_true(changed);
    assert_int_equal(rev, 1);
    assert_int_equal(vg__control_desired_set(st, "hello", V1, "dev", &changed, &dep, &rev), 0);
    assert_false(changed);
    assert_int_equal(rev, 1);
    assert_int_equal(vg__control_desired_set(st, "hello", V2, "dev", &changed, &dep, &rev), VG_ENOENT);
    assert_int_equal(vg__control_desired_set(st, "nope", V1, "dev", &changed, &dep, &rev), VG_ENOENT);
    v.id = V2;
    assert_int_equal(vg__control_version_add(st, &v, "dev", &created), 0);
    assert_int_equal(vg__control_desired_set(st, "hello", V2, "dev", &changed, &dep, &rev), 0);
    assert_int_equal(rev, 2);
    assert_int_equal(vg__control_rev(st), 2);
    assert_int_equal(scalar("SELECT count(*) FROM deployments WHERE state = 'done'"), 1);
    assert_int_equal(scalar("SELECT count(*) FROM deployments WHERE state = 'superseded'"), 1);

    json_t *d;
    assert_int_equal(vg__control_desired_for_node(st, "n1", &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "rev")), 2);
    json_t *app0 = json_array_get(json_object_get(d, "apps"), 0);
    assert_string_equal(json_string_value(json_object_get(app0, "version")), V2);
    json_decref(d);

    /* app.create, version.create x2, desired.set x2 */
    json_t *h;
    assert_int_equal(vg__control_history_list(st, "hello", 100, &h), 0);
    assert_int_equal(json_array_size(h), 5);
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 0), "action")), "desired.set");
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 0), "actor")), "dev");
    json_decref(h);
    assert_int_equal(vg__control_history_list(st, "hello", 2, &h), 0);
    assert_int_equal(json_array_size(h), 2);
    json_decref(h);
}

/* A rollout's per-node rows override the app's desired version for those
 * nodes only; an immediate desired version (rollback) cancels the rollout
 * and drops them, even when it is the version desired already. */
static void test_node_desired_and_cancel(void **state)
{
    struct vg__control_version v = {.id = V1, .app = "hello", .size = 10};
    bool created, changed;
    int64_t dep, rev;
    assert_int_equal(vg__control_version_add(st, &v, "dev", &created), 0);
    v.id = V2;
    assert_int_equal(vg__control_version_add(st, &v, "dev", &created), 0);
    assert_int_equal(vg__control_desired_set(st, "hello", V1, "dev", &changed, &dep, &rev), 0);
    sqlite3 *db = vg__control_store_db(st);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO deployments(app, version, state, rev, created_by, created_at,"
                                  " prev_version, rollout) VALUES('hello', '" V2_SQL
                                  "', 'rolling', 1, 'dev', 0, '" V1_SQL "', '{}');"
                                  "INSERT INTO node_desired VALUES('hello', 'canary', '" V2_SQL "', 2, 1);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    json_t *d;
    assert_int_equal(vg__control_desired_for_node(st, "canary", &d), 0);
    assert_int_equal(json_array_size(json_object_get(d, "apps")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(d, "apps"), 0), "version")),
                        V2);
    json_decref(d);
    assert_int_equal(vg__control_desired_for_node(st, "other", &d), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(d, "apps"), 0), "version")),
                        V1);
    json_decref(d);
    /* V1 is desired already, but a rollout runs: the call cancels it */
    assert_int_equal(vg__control_desired_set(st, "hello", V1, "ops", &changed, &dep, &rev), 0);
    assert_true(changed);
    assert_int_equal(scalar("SELECT count(*) FROM node_desired"), 0);
    assert_int_equal(scalar("SELECT count(*) FROM deployments WHERE state = 'rolling'"), 0);
    assert_int_equal(scalar("SELECT count(*) FROM deployments WHERE state = 'superseded' AND reason IS NOT NULL"), 2);
    assert_int_equal(vg__control_desired_for_node(st, "canary", &d), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(d, "apps"), 0), "version")),
                        V1);
    json_decref(d);
    /* and now it is a no-op again */
    assert_int_equal(vg__control_desired_set(st, "hello", V1, "ops", &changed, &dep, &rev), 0);
    assert_false(changed);
}

static void test_history_append_only(void **state)
{
    bool created;
    assert_int_equal(vg__control_app_create(st, "app1", "dev", &created), 0);
    assert_true(created);
    assert_int_equal(vg__control_app_create(st, "app1", "dev", &created), 0);
    assert_false(created);
    int64_t n = scalar("SELECT count(*) FROM history");
    assert_true(n >= 1);
    char *msg = NULL;
    sqlite3 *db = vg__control_store_db(st);
    assert_int_not_equal(sqlite3_exec(db, "UPDATE history SET actor = 'mallory'", NULL, NULL, &msg), SQLITE_OK);
    assert_non_null(strstr(msg, "append-only"));
    sqlite3_free(msg);
    msg = NULL;
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM history", NULL, NULL, &msg), SQLITE_OK);
    assert_non_null(strstr(msg, "append-only"));
    sqlite3_free(msg);
    assert_int_equal(scalar("SELECT count(*) FROM history"), n);
    assert_int_equal(scalar("SELECT count(*) FROM history WHERE actor = 'mallory'"), 0);
}

static void test_nodes(void **state)
{
    json_t *labels = json_pack("{s:s}", "tier", "edge");
    assert_int_equal(vg__control_node_register(st, "n1", "fra", labels, "node-token"), 0);
    json_decref(labels);
    bool exists;
    assert_int_equal(vg__control_node_exists(st, "n1", &exists), 0);
    assert_true(exists);
    assert_int_equal(vg__control_node_exists(st, "n2", &exists), 0);
    assert_false(exists);
    json_t *report = json_pack("{s:{s:{s:s,s:s}}}", "apps", "hello", "version", V1, "health", "ok");
    assert_int_equal(vg__control_node_heartbeat(st, "n1", report), 0);
    assert_int_equal(vg__control_node_heartbeat(st, "n2", report), VG_ENOENT);
    json_decref(report);
    json_t *list;
    uint64_t now = vg_wall_us() / 1000;
    assert_int_equal(vg__control_nodes_list(st, now, 15000, &list), 0);
    json_t *n1 = json_array_get(list, 0);
    assert_true(json_is_true(json_object_get(n1, "up")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(n1, "labels"), "tier")), "edge");
    json_decref(list);
    assert_int_equal(vg__control_nodes_list(st, now + 60000, 15000, &list), 0);
    assert_true(json_is_false(json_object_get(json_array_get(list, 0), "up")));
    json_decref(list);
}

static void test_reopen_keeps_everything(void **state)
{
    struct vg__control_version v = {.id = V1, .app = "hello", .size = 10};
    bool created, changed;
    int64_t dep, rev;
    assert_int_equal(vg__control_version_add(st, &v, "dev", &created), 0);
    assert_int_equal(vg__control_desired_set(st, "hello", V1, "dev", &changed, &dep, &rev), 0);
    uint8_t hash[32] = {1};
    assert_int_equal(vg__control_token_insert(st, "t", VG__CONTROL_SCOPE_READ, hash, "admin", 0), 0);
    int64_t hist = scalar("SELECT count(*) FROM history");
    vg__control_store_close(st);
    open_store();
    assert_int_equal(vg__control_rev(st), rev);
    int64_t n;
    assert_int_equal(vg__control_tokens_count(st, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(scalar("SELECT count(*) FROM history"), hist);
    json_t *a;
    assert_int_equal(vg__control_app_get(st, "hello", &a), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "desired"), "version")), V1);
    json_decref(a);
    assert_int_equal(vg__control_app_get(st, "nope", &a), VG_ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema_and_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_hashed_and_revoked, setup, teardown),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test_setup_teardown(test_versions_desired_and_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_desired_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_append_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
