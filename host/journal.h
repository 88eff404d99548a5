/* journal: the durable trade journal and idempotency keys (SQLite, WAL).
 *
 * A trade is written (and committed) before thorp.shutdown.register returns
 * and marked done by complete, so a crash, kill -9 or forced exit leaves it
 * open for the next run to find. One host per state directory: open takes
 * an exclusive lock on STATE_DIR/thorp.lock and refuses to start when
 * another live host holds it. Every failure (unwritable directory, corrupt
 * database, lock held) comes back as a message naming the path and what to
 * do, never as silent loss.
 *
 *   char err[512];
 *   thorp_journal *j = thorp_journal_open("./thorp-state", "NORMAL", run_id, err, sizeof err);
 *   thorp_journal_begin(j, "t1", "TRADE", "{\"token\":\"BONK\"}", wall_ms);
 *   thorp_journal_done(j, "t1", wall_ms, "completed");
 *   thorp_journal_scan_open(j, run_id);  while (thorp_journal_next(j, &row)) ...
 *   thorp_journal_claim(j, "signal:abc", wall_ms, ttl_ms)   1 first time, 0 duplicate
 *   thorp_journal_close(j);
 */
#ifndef THORP_JOURNAL_H
#define THORP_JOURNAL_H

/* ffi:begin */
typedef struct thorp_journal thorp_journal;

typedef struct thorp_journal_row {
    const char *id, *kind, *meta, *run_id, *status;
    double started_at, ended_at;
} thorp_journal_row;

thorp_journal *thorp_journal_open(const char *dir, const char *synchronous, const char *run_id, char *err, int errlen);
void thorp_journal_close(thorp_journal *j);
/* 0 on success, -1 with thorp_journal_error() set. */
int thorp_journal_begin(thorp_journal *j, const char *id, const char *kind, const char *meta, double at);
int thorp_journal_done(thorp_journal *j, const char *id, double at, const char *status);
/* Iterate open trades not of run_id (NULL or "" = all open); rows are valid until the next call. */
int thorp_journal_scan_open(thorp_journal *j, const char *exclude_run);
int thorp_journal_next(thorp_journal *j, thorp_journal_row *row);
/* Idempotency: 1 when key was free (or expired) and is now taken, 0 when taken, -1 on error. */
int thorp_journal_claim(thorp_journal *j, const char *key, double now, double ttl_ms);
int thorp_journal_unclaim(thorp_journal *j, const char *key);
/* Drop done trades ended before `before` and expired keys; checkpoint the WAL. Returns rows removed. */
int thorp_journal_compact(thorp_journal *j, double before, double now);
const char *thorp_journal_error(thorp_journal *j);
/* Counts for stats: open trades (all runs), done trades, live keys. */
enum { JOURNAL_COUNT_OPEN = 0, JOURNAL_COUNT_DONE = 1, JOURNAL_COUNT_KEYS = 2 };
int thorp_journal_count(thorp_journal *j, int what);
/* ffi:end */

#endif
