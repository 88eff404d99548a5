/* admission: priority admission control. See admission.h. */
#include "admission.h"

#include <math.h>
#include <string.h>
#include "loop.h" /* thorp_now(): read only when the reserve is needed */

#define HALF_LIFE_MS 10000.0

void thorp_admit_init(thorp_admit *a, double max, double warning, double critical) {
    memset(a, 0, sizeof *a);
    a->max = max;
    a->warning = warning;
    a->critical = critical;
    a->enabled = 1;
}

int thorp_admit_util(const thorp_admit *a) {
    return a->max > 0 ? (int)floor(a->total * 100.0 / a->max + 1e-9) : 100;
}

/* Critical demand: a decaying peak of critical work in flight. */
double thorp_admit_reserve(thorp_admit *a) {
    double now = thorp_now();
    double dt = now - a->crit_peak_at;
    if (dt > 0) {
        a->crit_peak *= exp2(-dt / HALF_LIFE_MS);
        a->crit_peak_at = now;
    }
    if (a->load[ADM_CRITICAL] > a->crit_peak) a->crit_peak = a->load[ADM_CRITICAL];
    /* keep the observed peak plus a quarter for what has not shown yet */
    a->reserve = ceil(a->crit_peak * 1.25);
    return a->reserve;
}

int thorp_admit_try(thorp_admit *a, int prio) {
    if (prio < 0 || prio > 2) prio = ADM_NORMAL;
    a->offered[prio]++;
    double u = a->max > 0 ? a->total / a->max : 1;
    a->last_util = u;
    int r = ADM_OK;
    if (!a->enabled) r = ADM_OK;
    else if (a->total >= a->max) r = ADM_QUEUE_FULL;
    else if (prio != ADM_CRITICAL && u >= a->critical - 1e-12) r = ADM_CRITICAL_OVERLOAD;
    else if (prio == ADM_LOW && u >= a->warning - 1e-12) r = ADM_WARNING;
    else if (prio == ADM_NORMAL && u >= a->warning - 1e-12 &&
             a->total + 1 > a->max - thorp_admit_reserve(a)) r = ADM_RESERVED;
    if (r != ADM_OK) {
        a->rejected[prio]++;
        a->by_reason[r]++;
        /* a refused critical request is demand the reserve has not seen */
        if (prio == ADM_CRITICAL) { thorp_admit_reserve(a); a->crit_peak += 1; }
        return r;
    }
    a->accepted[prio]++;
    a->load[prio]++;
    a->total++;
    if (a->total > a->peak) a->peak = a->total;
    if (prio == ADM_CRITICAL && a->load[ADM_CRITICAL] > a->crit_peak) {
        thorp_admit_reserve(a);
    }
    return ADM_OK;
}

void thorp_admit_release(thorp_admit *a, int prio) {
    if (a->total <= 0) { a->total = 0; return; }
    if (prio >= 0 && prio <= 2 && a->load[prio] >= 1) {
        a->load[prio]--;
    } else { /* unknown priority: take it from each class in proportion */
        double t = a->load[0] + a->load[1] + a->load[2];
        for (int i = 0; i < 3 && t > 0; i++) a->load[i] -= a->load[i] / t;
    }
    a->total--;
    if (a->total < 0.5) { a->total = 0; a->load[0] = a->load[1] = a->load[2] = 0; }
}
