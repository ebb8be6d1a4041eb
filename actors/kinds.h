/* actors/kinds.h: the table of actor kinds the exo-actors binary knows, for
 * `exo-actors run` (spawning) and `exo-actors check` (names). One line per kind lands in
 * kinds.c; must not hold any state beyond the constant tables. */
#ifndef EXO_ACTORS_KINDS_H
#define EXO_ACTORS_KINDS_H

#include "runtime/actor.h"

/* NULL-terminated. */
extern const struct exo_actor_kind *const exo_kinds[];
/* NULL-terminated names of exo_kinds, in the same order. */
extern const char *const exo_kind_names[];

#endif
