/* actors/failure_detector.h: decides, from heartbeat arrival times alone, whether a peer
 * is suspected. Pure computation on caller-given timestamps (no clock reads, no I/O), so
 * the health-monitor actor owns time and the tests own it too.
 * Phi accrual (Hayashibara et al.) over a window of inter-arrival times, with a hard upper
 * bound so that a silent node is suspected within `max_silence_us` whatever the history. */
#ifndef EXO_ACTORS_FAILURE_DETECTOR_H
#define EXO_ACTORS_FAILURE_DETECTOR_H

#include <stdint.h>

#define EXO_FD_WINDOW 64

struct exo_failure_detector {
  uint64_t interval_us;      /* expected heartbeat interval */
  uint64_t max_silence_us;   /* suspect after this much silence, always */
  uint64_t min_stddev_us;    /* floor on the spread, so a perfectly regular peer is not */
                             /* suspected after one late packet */
  double phi_threshold;      /* suspect when phi exceeds this */
  uint64_t last_us;          /* arrival of the latest heartbeat; 0 = none yet */
  uint64_t samples[EXO_FD_WINDOW]; /* inter-arrival times, a ring */
  unsigned n_samples;
  unsigned next;
};

/* interval 100 ms and max silence 450 ms give "suspected within 500 ms" with margin. */
void exo_failure_detector_init(struct exo_failure_detector *fd, uint64_t interval_us,
                               uint64_t max_silence_us);

void exo_failure_detector_heartbeat(struct exo_failure_detector *fd, uint64_t now_us);

/* Suspicion level at now_us: 0 when fine; grows as silence becomes unlikely. */
double exo_failure_detector_phi(const struct exo_failure_detector *fd, uint64_t now_us);

/* 1 when the peer should be suspected at now_us. A peer never heard from is not judged
 * here: the health-monitor decides how long a configured peer may stay silent at start. */
int exo_failure_detector_suspect(const struct exo_failure_detector *fd, uint64_t now_us);

#endif
