/* sim.h: what the simulator's files share.
 *
 * sim.c is the HTTP/JSON-RPC front (endpoints, faults, admin); sim_tx.c is
 * the ledger behind every endpoint of one simulator process (one chain:
 * clock, blockhashes, signed transactions, balances, statuses). sim.c asks
 * sim_tx.c first for each method (simtx_rpc) and answers the rest itself.
 */
#ifndef THORP_SIM_H
#define THORP_SIM_H
#include <stddef.h>
#include <event2/buffer.h>

/* tiny JSON scanning (sim.c) */
const char *skip_ws(const char *p, const char *e);
const char *value_end(const char *p, const char *e);
int obj_get(const char *p, const char *e, const char *key, const char **vs, const char **ve);
void rpc_error(struct evbuffer *out, const char *id, int idlen, int code, const char *msg);

/* the ledger (sim_tx.c) */
long simtx_slot(void);
/* 1 when it answered `method` into out (2: it was a sendTransaction); 0 to
 * let sim.c answer (a method it does not own, or a "transaction" that is not
 * one: tests send junk bytes) */
int simtx_rpc(const char *method, const char *id, int idlen, const char *ps, const char *pe, long lag,
              struct evbuffer *out);
/* POST /admin/chain: clock and ledger controls; writes the chain's stats */
void simtx_admin(const char *body, size_t len, struct evbuffer *out);

#endif
