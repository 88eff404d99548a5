/* journal: the durable trade journal and idempotency keys (SQLite, WAL).
 *
 * A trade is written (and committed) before thorp.shutdown.register returns
 * and marked done by complete, so a crash, kill -9 or forced exit leaves it
 * open for the next run to find. Before a transaction is first sent, its
 * signature, last valid block height and signed bytes are written to the
 * trade (record_send), so the next run can reconcile it. Finished trades
 * stay (with their outcome) for the history until compacted.
 *
 * One host per state directory: open takes an exclusive lock on
 * STATE_DIR/thorp.lock and refuses to start when another live host holds
 * it. The database runs with locking_mode=EXCLUSIVE: the WAL index lives
 * in this process's heap, not in a mmapped -shm file, so a damaged or
 * truncated -shm cannot kill the host with SIGBUS, and no other process can
 * open the database while the host runs.
 *
 * Every failure (unwritable directory, corrupt database, disk full, I/O
 * error) comes back as -1 with a message naming the path (open: NULL and
 * err), never as a crash or silent loss; a trade id that is already open
 * comes back as -2. After an I/O failure, reopen() closes and reopens the
 * database (keeping the directory lock); probe() makes a real write to
 * tell whether writes work again.
 *
 *   char err[512];
 *   thorp_journal *j = thorp_journal_open("./thorp-state", "NORMAL", run_id, err, sizeof err);
 *   thorp_journal_begin(j, "t1", "TRADE", "{\"token\":\"BONK\"}", wall_ms);   0, -2 duplicate, -1 error
 *   thorp_journal_send(j, "t1", sig, lvbh, tx, tx_len);                      0, -2 not open, -1 error
 *   thorp_journal_done(j, "t1", wall_ms, "confirmed", "{\"slot\":5}", sig);
 *   thorp_journal_scan_open(j, run_id);  while (thorp_journal_next(j, &row)) ...
 *   thorp_journal_scan_history(j, since, "", 100);  while (thorp_journal_next(j, &row)) ...
 *   thorp_journal_claim(j, "signal:abc", wall_ms, ttl_ms)   1 first time, 0 taken
 *   thorp_journal_close(j);
 */
#ifndef THORP_JOURNAL_H
#define THORP_JOURNAL_H

/* ffi:begin */
typedef struct thorp_journal thorp_journal;

typedef struct thorp_journal_row {
    const char *id, *kind, *meta, *run_id, *status, *signature, *outcome;
    const char *tx; /* signed transaction bytes (tx_len of them), or NULL */
    int tx_len;
    double started_at, ended_at, last_valid_block_height; /* lvbh < 0: none recorded */
} thorp_journal_row;

typedef struct thorp_journal_key {
    const char *key, *state, *run_id; /* state: "claimed" | "done" */
    double claimed_at, finished_at, expires_at;
} thorp_journal_key;

thorp_journal *thorp_journal_open(const char *dir, const char *synchronous, const char *run_id, char *err, int errlen);
void thorp_journal_close(thorp_journal *j);
/* Close and reopen the database (after an I/O failure); the directory lock is kept. 0 or -1. */
int thorp_journal_reopen(thorp_journal *j);
/* A real write: 0 when the journal can write now, -1 otherwise. */
int thorp_journal_probe(thorp_journal *j, double at);
/* 0 on success, -1 with thorp_journal_error() set; begin: -2 when id is already open. */
int thorp_journal_begin(thorp_journal *j, const char *id, const char *kind, const char *meta, double at);
/* Record what is about to be sent for an open trade: -2 when the trade is not open. */
int thorp_journal_send(thorp_journal *j, const char *id, const char *signature, double lvbh, const char *tx, int tx_len);
/* outcome: JSON text or NULL; signature: NULL keeps the recorded one. */
int thorp_journal_done(thorp_journal *j, const char *id, double at, const char *status, const char *outcome,
                       const char *signature);
/* One trade by id (open or finished): 1 found, 0 not. Row valid until the next call. */
int thorp_journal_get(thorp_journal *j, const char *id, thorp_journal_row *row);
/* Iterate open trades not of run_id (NULL or "" = all open), or finished trades newest
 * first (ended at or after since, status "" = any, at most limit); rows valid until the next call. */
int thorp_journal_scan_open(thorp_journal *j, const char *exclude_run);
int thorp_journal_scan_history(thorp_journal *j, double since, const char *status, int limit);
int thorp_journal_next(thorp_journal *j, thorp_journal_row *row);
/* Idempotency: 1 when key was free (or expired) and is now claimed, 0 when taken, -1 on error. */
int thorp_journal_claim(thorp_journal *j, const char *key, double now, double ttl_ms);
/* Mark a claimed key finished (state "done"). */
int thorp_journal_key_done(thorp_journal *j, const char *key, double at);
int thorp_journal_unclaim(thorp_journal *j, const char *key);
/* A key's record: 1 found, 0 not. Iterate live keys (not expired at now). */
int thorp_journal_key_get(thorp_journal *j, const char *key, thorp_journal_key *out);
/* Done with the row of get or key_get (copied out): until then its read stays
 * open, and an open read keeps SQLite from checkpointing the WAL, which then
 * grows by every write for as long as the host runs. */
void thorp_journal_release(thorp_journal *j);
int thorp_journal_scan_keys(thorp_journal *j, double now);
int thorp_journal_next_key(thorp_journal *j, thorp_journal_key *out);
/* Drop done trades ended before `before` and expired keys; checkpoint the WAL. Rows removed or -1. */
int thorp_journal_compact(thorp_journal *j, double before, double now);
const char *thorp_journal_error(thorp_journal *j);
/* Counts for stats: open trades (all runs), done trades, live keys. */
enum { JOURNAL_COUNT_OPEN = 0, JOURNAL_COUNT_DONE = 1, JOURNAL_COUNT_KEYS = 2 };
int thorp_journal_count(thorp_journal *j, int what);
/* ffi:end */

#endif
