/* actors/origin.h: the "origin" actor kind, every node's front door for generations
 * (client protocol: actors/gen_request.h). Options: max_requests (256), step_timeout_ms
 * (5000: no token for this long -> re-issue), map_wait_ms (30000: no live map -> error),
 * max_attempts (8). Must not compute anything of the model itself. */
#ifndef EXO_ACTORS_ORIGIN_H
#define EXO_ACTORS_ORIGIN_H

#include "runtime/actor.h"

extern const struct exo_actor_kind exo_origin_kind;

#endif
