/* actors/kinds.c: the kinds table (see kinds.h). Adding a kind: one line in each table,
 * same order. Must not contain behaviour. */
#include <stddef.h>

#include "actors/kinds.h"
#include "actors/api.h"
#include "actors/control.h"
#include "actors/origin.h"
#include "actors/shard_worker.h"

const struct exo_actor_kind *const exo_kinds[] = {
  &exo_shard_worker_kind,
  &exo_origin_kind,
  &exo_discovery_kind,
  &exo_health_kind,
  &exo_partitioner_kind,
  &exo_api_kind,
  NULL,
};

const char *const exo_kind_names[] = {
  "shard-worker",
  "origin",
  "discovery",
  "health",
  "partitioner",
  "api",
  NULL,
};
