/* journal: durable trade journal on SQLite. See journal.h. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

enum { S_BEGIN, S_DONE, S_SCAN, S_CLAIM, S_UNCLAIM, S_COUNT_OPEN, S_COUNT_DONE, S_COUNT_KEYS, S_N };

static const char *SQL[S_N] = {
    "INSERT OR REPLACE INTO trades(id, kind, meta, run_id, started_at, status) VALUES (?1, ?2, ?3, ?4, ?5, 'open')",
    "UPDATE trades SET status = ?3, ended_at = ?2 WHERE id = ?1 AND status = 'open'",
    "SELECT id, kind, meta, run_id, status, started_at, ended_at FROM trades WHERE status = 'open' "
    "AND (?1 = '' OR run_id <> ?1) ORDER BY started_at, rowid",
    "INSERT INTO idempotency(key, expires_at) VALUES (?1, ?2) "
    "ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at WHERE idempotency.expires_at <= ?3",
    "DELETE FROM idempotency WHERE key = ?1",
    "SELECT count(*) FROM trades WHERE status = 'open'",
    "SELECT count(*) FROM trades WHERE status <> 'open'",
    "SELECT count(*) FROM idempotency",
};

struct thorp_journal {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    int lock_fd;
    char run_id[64];
    char err[512];
};

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS trades(id TEXT PRIMARY KEY, kind TEXT NOT NULL, meta TEXT, run_id TEXT,"
    " started_at REAL, ended_at REAL, status TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS trades_status ON trades(status, ended_at);"
    "CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, expires_at REAL NOT NULL);";

static int mkdirs(const char *dir) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

thorp_journal *thorp_journal_open(const char *dir, const char *synchronous, const char *run_id, char *err, int errlen) {
    char path[4096];
    if (mkdirs(dir) != 0) {
        snprintf(err, errlen, "journal: cannot create state directory %s: %s (set THORP_STATE_DIR to a writable directory)",
                 dir, strerror(errno));
        return NULL;
    }
    snprintf(path, sizeof path, "%s/thorp.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "journal: cannot open lock file %s: %s (is the state directory writable?)", path,
                 strerror(errno));
        return NULL;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        snprintf(err, errlen, "journal: state directory %s is in use by another running thorp host%s%s%s "
                 "(stop it, or give this one its own THORP_STATE_DIR)", dir, *pid ? " (pid " : "", pid, *pid ? ")" : "");
        close(fd);
        return NULL;
    }
    char pidline[32];
    int pl = snprintf(pidline, sizeof pidline, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pidline, pl, 0) != pl) { /* the pid is only informative */ }

    thorp_journal *j = calloc(1, sizeof *j);
    j->lock_fd = fd;
    snprintf(j->run_id, sizeof j->run_id, "%s", run_id ? run_id : "");
    snprintf(path, sizeof path, "%s/journal.db", dir);
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA busy_timeout=2000;",
             synchronous && *synchronous ? synchronous : "NORMAL");
    int rc = sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    const char *why = NULL;
    if (rc == SQLITE_OK) rc = sqlite3_exec(j->db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *qc;
        rc = sqlite3_prepare_v2(j->db, "PRAGMA quick_check", -1, &qc, NULL);
        if (rc == SQLITE_OK) {
            if (sqlite3_step(qc) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(qc, 0), "ok") != 0) {
                why = "the integrity check failed";
                rc = SQLITE_CORRUPT;
            }
            sqlite3_finalize(qc);
        }
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(j->db, SCHEMA, NULL, NULL, NULL);
    for (int i = 0; rc == SQLITE_OK && i < S_N; i++) rc = sqlite3_prepare_v3(j->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &j->st[i], NULL);
    if (rc != SQLITE_OK) {
        const char *msg = why ? why : (j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc));
        const char *hint = (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB)
                               ? "the journal is damaged: move it aside (it may hold open trades) and restart"
                           : (rc == SQLITE_READONLY || rc == SQLITE_CANTOPEN || rc == SQLITE_IOERR)
                               ? "the state directory must be writable"
                               : "check the state directory";
        snprintf(err, errlen, "journal: cannot open %s: %s (%s)", path, msg, hint);
        thorp_journal_close(j);
        return NULL;
    }
    return j;
}

void thorp_journal_close(thorp_journal *j) {
    if (!j) return;
    for (int i = 0; i < S_N; i++) sqlite3_finalize(j->st[i]);
    if (j->db) {
        sqlite3_exec(j->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        sqlite3_close(j->db);
    }
    if (j->lock_fd >= 0) close(j->lock_fd);
    free(j);
}

const char *thorp_journal_error(thorp_journal *j) { return j->err; }

static int finish(thorp_journal *j, sqlite3_stmt *s, int want) {
    int rc = sqlite3_step(s);
    int ok = rc == want;
    if (!ok) snprintf(j->err, sizeof j->err, "journal: %s", sqlite3_errmsg(j->db));
    if (want == SQLITE_DONE) sqlite3_reset(s);
    return ok ? 0 : -1;
}

int thorp_journal_begin(thorp_journal *j, const char *id, const char *kind, const char *meta, double at) {
    sqlite3_stmt *s = j->st[S_BEGIN];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, meta ? meta : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, j->run_id, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 5, at);
    return finish(j, s, SQLITE_DONE);
}

int thorp_journal_done(thorp_journal *j, const char *id, double at, const char *status) {
    sqlite3_stmt *s = j->st[S_DONE];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, at);
    sqlite3_bind_text(s, 3, status ? status : "completed", -1, SQLITE_STATIC);
    return finish(j, s, SQLITE_DONE);
}

int thorp_journal_scan_open(thorp_journal *j, const char *exclude_run) {
    sqlite3_stmt *s = j->st[S_SCAN];
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, exclude_run ? exclude_run : "", -1, SQLITE_TRANSIENT);
    return 0;
}

static const char *col(sqlite3_stmt *s, int i) {
    const char *t = (const char *)sqlite3_column_text(s, i);
    return t ? t : "";
}

int thorp_journal_next(thorp_journal *j, thorp_journal_row *row) {
    sqlite3_stmt *s = j->st[S_SCAN];
    if (sqlite3_step(s) != SQLITE_ROW) { sqlite3_reset(s); return 0; }
    row->id = col(s, 0);
    row->kind = col(s, 1);
    row->meta = col(s, 2);
    row->run_id = col(s, 3);
    row->status = col(s, 4);
    row->started_at = sqlite3_column_double(s, 5);
    row->ended_at = sqlite3_column_double(s, 6);
    return 1;
}

int thorp_journal_claim(thorp_journal *j, const char *key, double now, double ttl_ms) {
    sqlite3_stmt *s = j->st[S_CLAIM];
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, now + ttl_ms);
    sqlite3_bind_double(s, 3, now);
    if (finish(j, s, SQLITE_DONE) != 0) return -1;
    return sqlite3_changes(j->db) > 0 ? 1 : 0;
}

int thorp_journal_unclaim(thorp_journal *j, const char *key) {
    sqlite3_stmt *s = j->st[S_UNCLAIM];
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    return finish(j, s, SQLITE_DONE);
}

int thorp_journal_compact(thorp_journal *j, double before, double now) {
    sqlite3_stmt *s;
    int removed = 0;
    const char *sql[2] = { "DELETE FROM trades WHERE status <> 'open' AND ended_at < ?1",
                           "DELETE FROM idempotency WHERE expires_at <= ?1" };
    for (int i = 0; i < 2; i++) {
        if (sqlite3_prepare_v2(j->db, sql[i], -1, &s, NULL) != SQLITE_OK) return -1;
        sqlite3_bind_double(s, 1, i == 0 ? before : now);
        if (sqlite3_step(s) == SQLITE_DONE) removed += sqlite3_changes(j->db);
        sqlite3_finalize(s);
    }
    sqlite3_exec(j->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    return removed;
}

int thorp_journal_count(thorp_journal *j, int what) {
    sqlite3_stmt *s = j->st[S_COUNT_OPEN + (what < 0 || what > 2 ? 0 : what)];
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_reset(s);
    return n;
}
