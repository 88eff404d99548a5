/* admission: priority admission control (the Lua face is thorp.backpressure).
 *
 * A bounded count of work in flight, split by priority (critical, normal,
 * low). try_acquire decides from the utilization *before* the request:
 *   load >= max                       -> QUEUE_FULL (every priority)
 *   utilization >= critical_threshold -> non-critical refused, CRITICAL_OVERLOAD
 *   utilization >= warning_threshold  -> low refused, WARNING_THRESHOLD_EXCEEDED;
 *                                        normal refused, RESERVED_FOR_CRITICAL,
 *                                        when it would eat the critical reserve
 * The thresholds are the floor. The reserve is what keeps critical work alive
 * in a burst: it tracks critical demand (in-flight critical work, a peak that
 * decays with a 10 s half-life, plus critical requests that were refused) and
 * keeps that much room free above the warning threshold, so normal work that
 * arrives faster than critical cannot take the last slots. It never refuses
 * anything below the warning threshold.
 *
 * Exported for the FFI: the hot path is one call, no allocation.
 *   thorp_admit a; thorp_admit_init(&a, 10000, 0.8, 0.95);
 *   int r = thorp_admit_try(&a, ADM_NORMAL);   ADM_OK or a reason
 *   thorp_admit_release(&a, ADM_NORMAL);            or -1: proportional
 */
#ifndef THORP_ADMISSION_H
#define THORP_ADMISSION_H

/* ffi:begin */
/* Priorities (index of load[], offered[], ...) and try results (index of by_reason[]). */
enum { ADM_CRITICAL = 0, ADM_NORMAL = 1, ADM_LOW = 2, ADM_PRIORITIES = 3 };
enum { ADM_OK = 0, ADM_CRITICAL_OVERLOAD = 1, ADM_WARNING = 2, ADM_QUEUE_FULL = 3, ADM_RESERVED = 4,
       ADM_RESULTS = 5 };

typedef struct thorp_admit {
    double max, warning, critical; /* capacity, thresholds as fractions */
    int enabled;                   /* 0: admit everything, still count */
    double load[ADM_PRIORITIES], total, peak;
    double offered[ADM_PRIORITIES], accepted[ADM_PRIORITIES], rejected[ADM_PRIORITIES];
    double crit_peak, crit_peak_at, reserve, last_util;
    double by_reason[ADM_RESULTS]; /* refusals by reason (index = ADM_* result) */
} thorp_admit;

void thorp_admit_init(thorp_admit *a, double max, double warning, double critical);
/* The clock is read only when the reserve is consulted (at or above the
 * warning threshold, or on a new critical peak), not on every call. */
int thorp_admit_try(thorp_admit *a, int prio);
void thorp_admit_release(thorp_admit *a, int prio);
/* Utilization in whole percent (floor), as try_acquire reports it. */
int thorp_admit_util(const thorp_admit *a);
/* The critical reserve as of now (slots kept for critical work). */
double thorp_admit_reserve(thorp_admit *a);
/* ffi:end */

#endif
