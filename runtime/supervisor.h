/* runtime/supervisor.h: Erlang-style restart decisions. Owns the strategy (which actors
 * a failure restarts) and the intensity window (at most `intensity` restarts within any
 * `period_ms`; one more failure escalates). Must not touch actors or loops: node.c applies
 * the decision. Thread-safe (one mutex; failures are rare, never on a hot path).
 *
 *   failure at t --> drop restarts older than t - period_ms
 *                --> count < intensity ? record t, RESTART : ESCALATE (sticky) */
#ifndef EXO_RUNTIME_SUPERVISOR_H
#define EXO_RUNTIME_SUPERVISOR_H

#include <stdint.h>

#include "runtime/config.h"

enum exo_supervisor_decision {
  EXO_SUPERVISOR_RESTART = 0,
  EXO_SUPERVISOR_ESCALATE = 1,
};

struct exo_supervisor;

/* intensity 0 escalates on the first failure. intensity <= 1024 (the window is an array).
 * Returns 0, -EINVAL, -ENOMEM. */
int exo_supervisor_new(const struct exo_supervision_config *cfg, struct exo_supervisor **out);
void exo_supervisor_free(struct exo_supervisor *sup); /* NULL ok */

/* Records one failure at now_ms (a monotonic clock) and decides. Once it escalated it keeps
 * answering ESCALATE. *in_window (may be NULL) gets the restarts counted in the window. */
enum exo_supervisor_decision exo_supervisor_failure(struct exo_supervisor *sup, uint64_t now_ms,
                                                    uint32_t *in_window);

enum exo_supervision_strategy exo_supervisor_strategy(const struct exo_supervisor *sup);
const struct exo_supervision_config *exo_supervisor_config(const struct exo_supervisor *sup);

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
uint64_t exo_supervisor_now_ms(void);

#endif
