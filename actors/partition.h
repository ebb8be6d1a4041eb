/* actors/partition.h: the deterministic partition map, pure computation.
 * Given the live nodes (id, memory) and the model's size, decides which contiguous layer
 * range each node owns. No I/O, no actors, no clocks: every node computes the same map
 * from the same topology, which is what lets any node check the coordinator's choice. */
#ifndef EXO_ACTORS_PARTITION_H
#define EXO_ACTORS_PARTITION_H

#include <stddef.h>
#include <stdint.h>

enum exo_partition_strategy {
  EXO_PARTITION_RING_MEMORY = 0, /* shares proportional to memory, as exo does (default) */
  EXO_PARTITION_EVEN = 1,        /* equal shares */
  EXO_PARTITION_MANUAL = 2,      /* ranges from the config */
};

struct exo_partition_node {
  uint64_t node_id;
  uint64_t memory_bytes; /* memory the node offers for weights and caches */
};

struct exo_partition_range {
  uint64_t node_id;
  int layer_begin; /* a */
  int layer_end;   /* b, exclusive; a == b never appears in a map */
};

struct exo_partition_model {
  int n_layers;
  uint64_t bytes_per_layer; /* weights of one decoder layer */
  uint64_t reserve_bytes;   /* kept free on every node: embeddings, LM head, KV, scratch */
};

/* Computes the ranges in ring order. Nodes are ordered by memory (descending), then id
 * (ascending), the order the ring visits them. A node's share never exceeds what fits in
 * (memory - reserve) / bytes_per_layer; what it cannot hold goes to the others. Every
 * node that can hold one layer gets at least one; a node that cannot hold any is left
 * out of the map. For MANUAL, `manual` lists the ranges (any order) and is validated.
 * out must have room for n_nodes entries; *n_out receives the count.
 * Returns 0, -EINVAL (bad input) or -ENOSPC (the model does not fit), with err filled. */
int exo_partition_compute(enum exo_partition_strategy strategy,
                          const struct exo_partition_node *nodes, size_t n_nodes,
                          const struct exo_partition_model *model,
                          const struct exo_partition_range *manual, size_t n_manual,
                          struct exo_partition_range *out, size_t *n_out,
                          char *err, size_t errlen);

/* Parses "even", "ring" / "memory" or "manual". Returns 0 or -EINVAL. */
int exo_partition_strategy_parse(const char *name, enum exo_partition_strategy *out);

#endif
