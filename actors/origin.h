/* actors/origin.h: the "origin" actor kind, every node's front door for generations
 * (client protocol: actors/gen_request.h). Options (docs/CONFIG.md): max_active, max_queued,
 * admission (fixed | adaptive), prefill_budget, short_prompt, step_timeout_ms (5000: no
 * token for this long -> re-issue), map_wait_ms (30000: no live map -> error),
 * max_attempts (8), queue_timeout_ms (60000: still queued -> error). Must not compute
 * anything of the model itself. */
#ifndef EXO_ACTORS_ORIGIN_H
#define EXO_ACTORS_ORIGIN_H

#include "runtime/actor.h"

#define EXO_ORIGIN_MAX_ACTIVE 32u  /* default: requests issued into the pipeline at once */
#define EXO_ORIGIN_MAX_QUEUED 224u /* default: SUBMITs waiting for an active slot */

extern const struct exo_actor_kind exo_origin_kind;

#endif
