/* SQL prepared per call, for the parts of the control plane that keep
 * their own statements (rollouts, placement: a handful per tick). Each
 * accepts a NULL statement (a failed prepare) and fails then. */
#include "control_int.h"

#include <sqlite3.h>

sqlite3_stmt *vg__control_sql_prep(struct vg_control_server *srv, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(vg__control_store_db(srv->store), sql, -1, &st, NULL) != SQLITE_OK) {
        vg_log(VG_LOG_ERROR, "database error", "op", "prepare", "reason",
               sqlite3_errmsg(vg__control_store_db(srv->store)), NULL);
        return NULL;
    }
    return st;
}

const char *vg__control_sql_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : NULL;
}

/* Runs a prepared statement that returns no rows, then finalizes it. */
int vg__control_sql_run(struct vg_control_server *srv, sqlite3_stmt *st, const char *what)
{
    if (!st)
        return VG_EIO;
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r == SQLITE_DONE)
        return 0;
    vg_log(VG_LOG_ERROR, "database error", "op", what, "reason", sqlite3_errmsg(vg__control_store_db(srv->store)),
           NULL);
    return VG_EIO;
}

void vg__control_sql_text(sqlite3_stmt *st, int i, const char *v)
{
    if (!st)
        return;
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

void vg__control_sql_int(sqlite3_stmt *st, int i, int64_t v)
{
    if (st)
        sqlite3_bind_int64(st, i, v);
}
