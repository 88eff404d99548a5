/* sim_ws: the simulator's WebSocket (Solana PubSub) side; see sim_ws.c.
 * sim.c calls sim_ws_listen() once per endpoint after its HTTP side listens
 * and prints the ports on a "SIM_WS" line; sim_ws_free() at exit. */
#ifndef SIM_WS_H
#define SIM_WS_H
#include <event2/event.h>

/* Listen on host:port (0 = a free port) for endpoint index; returns the port or -1. */
int sim_ws_listen(struct event_base *base, const char *host, int port, int index, double t_start);
void sim_ws_free(void);
/* The logs ledger (signatures "simsig<seq>" of logs notifications): entry i of
 * sim_ws_logs_count(), oldest first; 0 when i is out of range (or overwritten). */
int sim_ws_logs(long i, long *seq, long *slot);
long sim_ws_logs_count(void);

#endif
