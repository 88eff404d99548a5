/* journal: durable trade journal on SQLite. See journal.h. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define ROW_COLS "id, kind, meta, run_id, status, started_at, ended_at, signature, lvbh, tx, outcome"
#define KEY_COLS "key, state, run_id, claimed_at, finished_at, expires_at"

enum { S_BEGIN, S_SEND, S_DONE, S_GET, S_SCAN, S_HISTORY, S_CLAIM, S_KEY_DONE, S_UNCLAIM, S_KEY_GET, S_KEYS,
       S_PROBE, S_COUNT_OPEN, S_COUNT_DONE, S_COUNT_KEYS, S_N };

static const char *SQL[S_N] = {
    "INSERT INTO trades(id, kind, meta, run_id, started_at, status) VALUES (?1, ?2, ?3, ?4, ?5, 'open') "
    "ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, meta = excluded.meta, run_id = excluded.run_id, "
    "started_at = excluded.started_at, ended_at = NULL, status = 'open', signature = NULL, lvbh = NULL, tx = NULL, "
    "outcome = NULL WHERE trades.status <> 'open'",
    "UPDATE trades SET signature = ?2, lvbh = ?3, tx = ?4 WHERE id = ?1 AND status = 'open'",
    "UPDATE trades SET status = ?3, ended_at = ?2, outcome = ?4, signature = coalesce(?5, signature) "
    "WHERE id = ?1 AND status = 'open'",
    "SELECT " ROW_COLS " FROM trades WHERE id = ?1",
    "SELECT " ROW_COLS " FROM trades WHERE status = 'open' AND (?1 = '' OR run_id <> ?1) ORDER BY started_at, rowid",
    "SELECT " ROW_COLS " FROM trades WHERE status <> 'open' AND ended_at >= ?1 AND (?2 = '' OR status = ?2) "
    "ORDER BY ended_at DESC, rowid DESC LIMIT ?3",
    "INSERT INTO idempotency(key, expires_at, claimed_at, state, run_id) VALUES (?1, ?2, ?3, 'claimed', ?4) "
    "ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at, claimed_at = excluded.claimed_at, "
    "state = 'claimed', run_id = excluded.run_id, finished_at = NULL WHERE idempotency.expires_at <= ?3",
    "UPDATE idempotency SET state = 'done', finished_at = ?2 WHERE key = ?1",
    "DELETE FROM idempotency WHERE key = ?1",
    "SELECT " KEY_COLS " FROM idempotency WHERE key = ?1",
    "SELECT " KEY_COLS " FROM idempotency WHERE expires_at > ?1 ORDER BY claimed_at, rowid",
    "INSERT OR REPLACE INTO probe(k, at) VALUES (1, ?1)",
    "SELECT count(*) FROM trades WHERE status = 'open'",
    "SELECT count(*) FROM trades WHERE status <> 'open'",
    "SELECT count(*) FROM idempotency",
};

struct thorp_journal {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    sqlite3_stmt *cur; /* the row cursor: S_SCAN or S_HISTORY */
    int lock_fd;
    char run_id[64];
    char path[4096];
    char sync[16];
    char err[512];
};

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS trades(id TEXT PRIMARY KEY, kind TEXT NOT NULL, meta TEXT, run_id TEXT,"
    " started_at REAL, ended_at REAL, status TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS trades_status ON trades(status, ended_at);"
    "CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, expires_at REAL NOT NULL);"
    "CREATE TABLE IF NOT EXISTS probe(k INTEGER PRIMARY KEY, at REAL);";

/* Columns added since the first schema: added to older journals in place. */
static const char *MIGRATE[] = {
    "ALTER TABLE trades ADD COLUMN signature TEXT",
    "ALTER TABLE trades ADD COLUMN lvbh REAL",
    "ALTER TABLE trades ADD COLUMN tx BLOB",
    "ALTER TABLE trades ADD COLUMN outcome TEXT",
    "ALTER TABLE idempotency ADD COLUMN claimed_at REAL",
    "ALTER TABLE idempotency ADD COLUMN state TEXT NOT NULL DEFAULT 'done'",
    "ALTER TABLE idempotency ADD COLUMN run_id TEXT",
    "ALTER TABLE idempotency ADD COLUMN finished_at REAL",
};

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

static void db_close(thorp_journal *j, int checkpoint) {
    for (int i = 0; i < S_N; i++) { sqlite3_finalize(j->st[i]); j->st[i] = NULL; }
    j->cur = NULL;
    if (j->db) {
        if (checkpoint) sqlite3_exec(j->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        sqlite3_close_v2(j->db);
        j->db = NULL;
    }
}

static int has_column(sqlite3 *db, const char *table, const char *col) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT 1 FROM pragma_table_info('%s') WHERE name = '%s'", table, col);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) return 0;
    int found = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return found;
}

/* Open (or reopen) the database file; message in j->err on failure. */
static int db_open(thorp_journal *j) {
    char sql[192];
    /* EXCLUSIVE before WAL: the WAL index then lives in heap memory, no -shm mmap.
     * The journal is written far more than read, and its hot pages (the tail of the
     * trades table and its indexes) fit in 512 KiB; SQLite's default 2 MiB cache
     * only filled up with cold pages over the first 20 minutes of a run, which
     * read as a memory leak. */
    snprintf(sql, sizeof sql, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
             "PRAGMA mmap_size=0; PRAGMA busy_timeout=2000; PRAGMA cache_size=-512;", j->sync);
    int rc = sqlite3_open_v2(j->path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    const char *why = NULL;
    if (rc == SQLITE_OK) rc = sqlite3_exec(j->db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_stmt *qc;
        rc = sqlite3_prepare_v2(j->db, "PRAGMA quick_check", -1, &qc, NULL);
        if (rc == SQLITE_OK) {
            int st = sqlite3_step(qc);
            if (st == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(qc, 0), "ok") != 0) {
                why = "the integrity check failed";
                rc = SQLITE_CORRUPT;
            } else if (st != SQLITE_ROW && st != SQLITE_DONE) {
                rc = st;
            }
            sqlite3_finalize(qc);
        }
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(j->db, SCHEMA, NULL, NULL, NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof MIGRATE / sizeof *MIGRATE; i++) {
        char table[32], col[32];
        if (sscanf(MIGRATE[i], "ALTER TABLE %31s ADD COLUMN %31s", table, col) == 2 && !has_column(j->db, table, col))
            rc = sqlite3_exec(j->db, MIGRATE[i], NULL, NULL, NULL);
    }
    for (int i = 0; rc == SQLITE_OK && i < S_N; i++)
        rc = sqlite3_prepare_v3(j->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &j->st[i], NULL);
    if (rc != SQLITE_OK) {
        const char *msg = why ? why : (j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc));
        int base = rc & 0xff;
        const char *hint = (base == SQLITE_CORRUPT || base == SQLITE_NOTADB)
                               ? "the journal is damaged: move it aside (it may hold open trades) and restart"
                           : (base == SQLITE_READONLY || base == SQLITE_CANTOPEN || base == SQLITE_IOERR ||
                              base == SQLITE_FULL)
                               ? "the state directory must be writable, with space left"
                               : "check the state directory";
        snprintf(j->err, sizeof j->err, "journal: cannot open %.300s: %s (%s)", j->path, msg, hint);
        db_close(j, 0);
        return -1;
    }
    return 0;
}

thorp_journal *thorp_journal_open(const char *dir, const char *synchronous, const char *run_id, char *err, int errlen) {
    char path[4096];
    /* a file-size limit (ulimit -f) must be a write error here, not a signal that kills the host */
    signal(SIGXFSZ, SIG_IGN);
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
    if (!j) {
        snprintf(err, errlen, "journal: out of memory");
        close(fd);
        return NULL;
    }
    j->lock_fd = fd;
    snprintf(j->run_id, sizeof j->run_id, "%s", run_id ? run_id : "");
    snprintf(j->path, sizeof j->path, "%s/journal.db", dir);
    snprintf(j->sync, sizeof j->sync, "%s", synchronous && *synchronous ? synchronous : "NORMAL");
    if (db_open(j) != 0) {
        snprintf(err, errlen, "%s", j->err);
        thorp_journal_close(j);
        return NULL;
    }
    return j;
}

void thorp_journal_close(thorp_journal *j) {
    if (!j) return;
    db_close(j, 1);
    if (j->lock_fd >= 0) close(j->lock_fd);
    free(j);
}

int thorp_journal_reopen(thorp_journal *j) {
    db_close(j, 0);
    return db_open(j);
}

const char *thorp_journal_error(thorp_journal *j) { return j->err; }

static int no_db(thorp_journal *j) {
    if (j->db) return 0;
    if (!*j->err) snprintf(j->err, sizeof j->err, "journal: %.400s is closed after an error", j->path);
    return 1;
}

static int finish(thorp_journal *j, sqlite3_stmt *s) {
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE)
        snprintf(j->err, sizeof j->err, "journal: %.400s: %s", j->path, sqlite3_errmsg(j->db));
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

int thorp_journal_probe(thorp_journal *j, double at) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_PROBE];
    sqlite3_bind_double(s, 1, at);
    return finish(j, s);
}

int thorp_journal_begin(thorp_journal *j, const char *id, const char *kind, const char *meta, double at) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_BEGIN];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, meta ? meta : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, j->run_id, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 5, at);
    if (finish(j, s) != 0) return -1;
    return sqlite3_changes(j->db) > 0 ? 0 : -2; /* no row changed: the id is open */
}

int thorp_journal_send(thorp_journal *j, const char *id, const char *signature, double lvbh, const char *tx, int tx_len) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_SEND];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, signature, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, lvbh);
    if (tx) sqlite3_bind_blob(s, 4, tx, tx_len, SQLITE_STATIC);
    if (finish(j, s) != 0) return -1;
    return sqlite3_changes(j->db) > 0 ? 0 : -2;
}

int thorp_journal_done(thorp_journal *j, const char *id, double at, const char *status, const char *outcome,
                       const char *signature) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_DONE];
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, at);
    sqlite3_bind_text(s, 3, status ? status : "completed", -1, SQLITE_STATIC);
    if (outcome) sqlite3_bind_text(s, 4, outcome, -1, SQLITE_STATIC);
    if (signature) sqlite3_bind_text(s, 5, signature, -1, SQLITE_STATIC);
    return finish(j, s);
}

static const char *col(sqlite3_stmt *s, int i) {
    const char *t = (const char *)sqlite3_column_text(s, i);
    return t ? t : "";
}

static void read_row(sqlite3_stmt *s, thorp_journal_row *row) {
    row->id = col(s, 0);
    row->kind = col(s, 1);
    row->meta = col(s, 2);
    row->run_id = col(s, 3);
    row->status = col(s, 4);
    row->started_at = sqlite3_column_double(s, 5);
    row->ended_at = sqlite3_column_double(s, 6);
    row->signature = (const char *)sqlite3_column_text(s, 7);
    row->last_valid_block_height = sqlite3_column_type(s, 8) == SQLITE_NULL ? -1 : sqlite3_column_double(s, 8);
    row->tx = sqlite3_column_type(s, 9) == SQLITE_NULL ? NULL : (const char *)sqlite3_column_blob(s, 9);
    row->tx_len = row->tx ? sqlite3_column_bytes(s, 9) : 0;
    row->outcome = (const char *)sqlite3_column_text(s, 10);
}

/* One row by key with statement `which`: 1 (the statement is on the row), 0 none, -1 error. */
static int lookup(thorp_journal *j, int which, const char *key) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[which];
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return 1;
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) return 0;
    snprintf(j->err, sizeof j->err, "journal: %.400s: %s", j->path, sqlite3_errmsg(j->db));
    return -1;
}

int thorp_journal_get(thorp_journal *j, const char *id, thorp_journal_row *row) {
    int rc = lookup(j, S_GET, id);
    if (rc == 1) read_row(j->st[S_GET], row);
    return rc;
}

int thorp_journal_scan_open(thorp_journal *j, const char *exclude_run) {
    if (no_db(j)) return -1;
    j->cur = j->st[S_SCAN];
    sqlite3_reset(j->cur);
    sqlite3_bind_text(j->cur, 1, exclude_run ? exclude_run : "", -1, SQLITE_TRANSIENT);
    return 0;
}

int thorp_journal_scan_history(thorp_journal *j, double since, const char *status, int limit) {
    if (no_db(j)) return -1;
    j->cur = j->st[S_HISTORY];
    sqlite3_reset(j->cur);
    sqlite3_bind_double(j->cur, 1, since);
    sqlite3_bind_text(j->cur, 2, status ? status : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(j->cur, 3, limit);
    return 0;
}

int thorp_journal_next(thorp_journal *j, thorp_journal_row *row) {
    sqlite3_stmt *s = j->cur;
    if (!s) return 0;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) { read_row(s, row); return 1; }
    if (rc != SQLITE_DONE) snprintf(j->err, sizeof j->err, "journal: %.400s: %s", j->path, sqlite3_errmsg(j->db));
    sqlite3_reset(s);
    j->cur = NULL;
    return rc == SQLITE_DONE ? 0 : -1;
}

int thorp_journal_claim(thorp_journal *j, const char *key, double now, double ttl_ms) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_CLAIM];
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, now + ttl_ms);
    sqlite3_bind_double(s, 3, now);
    sqlite3_bind_text(s, 4, j->run_id, -1, SQLITE_STATIC);
    if (finish(j, s) != 0) return -1;
    return sqlite3_changes(j->db) > 0 ? 1 : 0;
}

int thorp_journal_key_done(thorp_journal *j, const char *key, double at) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_KEY_DONE];
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, at);
    return finish(j, s);
}

int thorp_journal_unclaim(thorp_journal *j, const char *key) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_UNCLAIM];
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (finish(j, s) != 0) return -1;
    return sqlite3_changes(j->db) > 0 ? 1 : 0;
}

static void read_key(sqlite3_stmt *s, thorp_journal_key *k) {
    k->key = col(s, 0);
    k->state = col(s, 1);
    k->run_id = col(s, 2);
    k->claimed_at = sqlite3_column_double(s, 3);
    k->finished_at = sqlite3_column_double(s, 4);
    k->expires_at = sqlite3_column_double(s, 5);
}

int thorp_journal_key_get(thorp_journal *j, const char *key, thorp_journal_key *out) {
    int rc = lookup(j, S_KEY_GET, key);
    if (rc == 1) read_key(j->st[S_KEY_GET], out);
    return rc;
}

void thorp_journal_release(thorp_journal *j) {
    if (!j->db) return;
    sqlite3_reset(j->st[S_GET]);
    sqlite3_reset(j->st[S_KEY_GET]);
}

int thorp_journal_scan_keys(thorp_journal *j, double now) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s = j->st[S_KEYS];
    sqlite3_reset(s);
    sqlite3_bind_double(s, 1, now);
    return 0;
}

int thorp_journal_next_key(thorp_journal *j, thorp_journal_key *out) {
    if (!j->db) return 0;
    sqlite3_stmt *s = j->st[S_KEYS];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) { read_key(s, out); return 1; }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

int thorp_journal_compact(thorp_journal *j, double before, double now) {
    if (no_db(j)) return -1;
    sqlite3_stmt *s;
    int removed = 0;
    const char *sql[2] = { "DELETE FROM trades WHERE status <> 'open' AND ended_at < ?1",
                           "DELETE FROM idempotency WHERE expires_at <= ?1" };
    for (int i = 0; i < 2; i++) {
        if (sqlite3_prepare_v2(j->db, sql[i], -1, &s, NULL) != SQLITE_OK) {
            snprintf(j->err, sizeof j->err, "journal: %.400s: %s", j->path, sqlite3_errmsg(j->db));
            return -1;
        }
        sqlite3_bind_double(s, 1, i == 0 ? before : now);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) removed += sqlite3_changes(j->db);
        else snprintf(j->err, sizeof j->err, "journal: %.400s: %s", j->path, sqlite3_errmsg(j->db));
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) return -1;
    }
    sqlite3_exec(j->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    return removed;
}

int thorp_journal_count(thorp_journal *j, int what) {
    if (!j->db) return -1;
    sqlite3_stmt *s = j->st[S_COUNT_OPEN + (what < 0 || what > 2 ? 0 : what)];
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_reset(s);
    return n;
}
