/* actors/partition.c: computes partition maps (see partition.h). Pure and deterministic:
 * integer arithmetic only (no floating point, so every node agrees bit for bit), input
 * order never matters. Must not allocate more than one scratch array or touch I/O.
 *
 * Allocation is water-filling with largest-remainder rounding: distribute the layers
 * still unassigned among the nodes that still have room, proportionally to their weight;
 * a node that hits its memory cap keeps the cap and the rest goes round again. Each round
 * either finishes or fills at least one node, so it ends within n rounds. */
#include "actors/partition.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct slot {
  uint64_t id;
  uint64_t memory;
  uint64_t weight;
  int cap;      /* layers that fit */
  int assigned; /* layers given so far */
  int quota;    /* layers offered this round */
  int bonus;    /* got a leftover layer this round */
  unsigned __int128 rem; /* remainder of this round, for largest-remainder ordering */
};

static int slot_ring_order(const void *pa, const void *pb)
{
  const struct slot *a = pa, *b = pb;
  if (a->memory != b->memory)
    return a->memory > b->memory ? -1 : 1;
  return a->id < b->id ? -1 : (a->id > b->id);
}

int exo_partition_strategy_parse(const char *name, enum exo_partition_strategy *out)
{
  if (!strcmp(name, "ring") || !strcmp(name, "memory") || !strcmp(name, "ring_memory"))
    *out = EXO_PARTITION_RING_MEMORY;
  else if (!strcmp(name, "even"))
    *out = EXO_PARTITION_EVEN;
  else if (!strcmp(name, "manual"))
    *out = EXO_PARTITION_MANUAL;
  else
    return -EINVAL;
  return 0;
}

static int layers_that_fit(uint64_t memory, const struct exo_partition_model *model)
{
  if (model->bytes_per_layer == 0)
    return model->n_layers;
  if (memory <= model->reserve_bytes)
    return 0;
  uint64_t fit = (memory - model->reserve_bytes) / model->bytes_per_layer;
  return fit > (uint64_t)model->n_layers ? model->n_layers : (int)fit;
}

/* One round: share `remaining` among slots with room, by weight, largest remainder.
 * Returns the layers actually placed (less than remaining when some slot hit its cap). */
static int distribute_round(struct slot *s, size_t n, int remaining)
{
  unsigned __int128 total = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i].assigned < s[i].cap)
      total += s[i].weight;
  if (total == 0)
    return 0;

  int given = 0;
  for (size_t i = 0; i < n; i++) {
    s[i].quota = 0;
    s[i].bonus = 0;
    s[i].rem = 0;
    if (s[i].assigned >= s[i].cap)
      continue;
    unsigned __int128 num = (unsigned __int128)remaining * s[i].weight;
    s[i].quota = (int)(num / total);
    s[i].rem = num % total;
    given += s[i].quota;
  }
  /* Leftover layers go to the largest remainders; ties to the earlier node in ring order. */
  for (int left = remaining - given; left > 0; left--) {
    size_t best = n;
    for (size_t i = 0; i < n; i++) {
      if (s[i].assigned >= s[i].cap || s[i].bonus)
        continue;
      if (best == n || s[i].rem > s[best].rem)
        best = i;
    }
    if (best == n)
      break;
    s[best].quota++;
    s[best].bonus = 1; /* at most one extra per node per round */
  }
  int placed = 0;
  for (size_t i = 0; i < n; i++) {
    int room = s[i].cap - s[i].assigned;
    int take = s[i].quota < room ? s[i].quota : room;
    s[i].assigned += take;
    placed += take;
  }
  return placed;
}

/* Every active node holds at least one layer: take from the node holding the most
 * (ties: the later one in ring order, so the head of the ring keeps its share). */
static void ensure_one_each(struct slot *s, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (s[i].assigned > 0)
      continue;
    size_t donor = n;
    for (size_t j = 0; j < n; j++)
      if (s[j].assigned > 1 && (donor == n || s[j].assigned >= s[donor].assigned))
        donor = j;
    if (donor == n)
      return; /* unreachable while active nodes <= layers */
    s[donor].assigned--;
    s[i].assigned++;
  }
}

static int check_nodes(const struct exo_partition_node *nodes, size_t n_nodes, char *err,
                       size_t errlen)
{
  for (size_t i = 0; i < n_nodes; i++)
    for (size_t j = i + 1; j < n_nodes; j++)
      if (nodes[i].node_id == nodes[j].node_id) {
        snprintf(err, errlen, "partition: node id %" PRIu64 " appears twice in the topology",
                 nodes[i].node_id);
        return -EINVAL;
      }
  return 0;
}

static int compare_range_begin(const void *pa, const void *pb)
{
  const struct exo_partition_range *a = pa, *b = pb;
  return (a->layer_begin > b->layer_begin) - (a->layer_begin < b->layer_begin);
}

static int compute_manual(const struct exo_partition_node *nodes, size_t n_nodes,
                          const struct exo_partition_model *model,
                          const struct exo_partition_range *manual, size_t n_manual,
                          struct exo_partition_range *out, size_t *n_out, char *err,
                          size_t errlen)
{
  if (n_manual == 0 || n_manual > n_nodes) {
    snprintf(err, errlen, "partition: manual map has %zu ranges for %zu nodes", n_manual,
             n_nodes);
    return -EINVAL;
  }
  memcpy(out, manual, n_manual * sizeof *out);
  qsort(out, n_manual, sizeof *out, compare_range_begin);
  int expect = 0;
  for (size_t i = 0; i < n_manual; i++) {
    const struct exo_partition_range *r = &out[i];
    if (r->layer_begin != expect || r->layer_end <= r->layer_begin ||
        r->layer_end > model->n_layers) {
      snprintf(err, errlen,
               "partition: manual range %d:%d of node %" PRIu64
               " does not continue the map (expected a range starting at %d, ending by %d)",
               r->layer_begin, r->layer_end, r->node_id, expect, model->n_layers);
      return -EINVAL;
    }
    expect = r->layer_end;
    const struct exo_partition_node *node = NULL;
    for (size_t j = 0; j < n_nodes; j++)
      if (nodes[j].node_id == r->node_id)
        node = &nodes[j];
    if (!node) {
      snprintf(err, errlen, "partition: manual range %d:%d names node %" PRIu64
               " which is not in the topology", r->layer_begin, r->layer_end, r->node_id);
      return -EINVAL;
    }
    for (size_t j = 0; j < i; j++)
      if (out[j].node_id == r->node_id) {
        snprintf(err, errlen, "partition: node %" PRIu64 " has two manual ranges",
                 r->node_id);
        return -EINVAL;
      }
    int fit = layers_that_fit(node->memory_bytes, model);
    if (r->layer_end - r->layer_begin > fit) {
      snprintf(err, errlen,
               "partition: manual range %d:%d needs %d layers on node %" PRIu64
               " which has room for %d",
               r->layer_begin, r->layer_end, r->layer_end - r->layer_begin, r->node_id, fit);
      return -ENOSPC;
    }
  }
  if (expect != model->n_layers) {
    snprintf(err, errlen, "partition: manual map ends at layer %d, the model has %d", expect,
             model->n_layers);
    return -EINVAL;
  }
  *n_out = n_manual;
  return 0;
}

int exo_partition_compute(enum exo_partition_strategy strategy,
                          const struct exo_partition_node *nodes, size_t n_nodes,
                          const struct exo_partition_model *model,
                          const struct exo_partition_range *manual, size_t n_manual,
                          struct exo_partition_range *out, size_t *n_out, char *err,
                          size_t errlen)
{
  *n_out = 0;
  if (model->n_layers < 1 || n_nodes == 0) {
    snprintf(err, errlen, "partition: need at least one layer and one node (got %d, %zu)",
             model->n_layers, n_nodes);
    return -EINVAL;
  }
  int rc = check_nodes(nodes, n_nodes, err, errlen);
  if (rc)
    return rc;
  if (strategy == EXO_PARTITION_MANUAL)
    return compute_manual(nodes, n_nodes, model, manual, n_manual, out, n_out, err, errlen);
  if (strategy != EXO_PARTITION_RING_MEMORY && strategy != EXO_PARTITION_EVEN) {
    snprintf(err, errlen, "partition: unknown strategy %d", (int)strategy);
    return -EINVAL;
  }

  struct slot *s = calloc(n_nodes, sizeof *s);
  if (!s)
    return -ENOMEM;
  size_t n = 0;
  int capacity = 0;
  for (size_t i = 0; i < n_nodes; i++) {
    int cap = layers_that_fit(nodes[i].memory_bytes, model);
    if (cap < 1)
      continue; /* cannot hold a single layer: not part of this map */
    s[n] = (struct slot){.id = nodes[i].node_id, .memory = nodes[i].memory_bytes, .cap = cap};
    s[n].weight = strategy == EXO_PARTITION_EVEN ? 1 : (nodes[i].memory_bytes ? nodes[i].memory_bytes : 1);
    capacity += cap;
    n++;
  }
  qsort(s, n, sizeof *s, slot_ring_order);
  if (n > (size_t)model->n_layers)
    n = (size_t)model->n_layers; /* one layer each at most this many nodes; the ring's tail idles */
  capacity = 0;
  for (size_t i = 0; i < n; i++)
    capacity += s[i].cap;
  if (capacity < model->n_layers) {
    snprintf(err, errlen,
             "partition: the model does not fit: %d layers of %" PRIu64
             " bytes (plus %" PRIu64 " reserved per node), the %zu usable nodes hold %d layers",
             model->n_layers, model->bytes_per_layer, model->reserve_bytes, n, capacity);
    free(s);
    return -ENOSPC;
  }

  int remaining = model->n_layers;
  for (size_t round = 0; remaining > 0 && round <= n; round++)
    remaining -= distribute_round(s, n, remaining);
  ensure_one_each(s, n);

  int begin = 0;
  for (size_t i = 0; i < n; i++) {
    out[i] = (struct exo_partition_range){
        .node_id = s[i].id, .layer_begin = begin, .layer_end = begin + s[i].assigned};
    begin += s[i].assigned;
  }
  *n_out = n;
  free(s);
  if (begin != model->n_layers) { /* a broken invariant of this file, not of the input */
    snprintf(err, errlen, "partition: internal error: assigned %d of %d layers", begin,
             model->n_layers);
    return -EINVAL;
  }
  return 0;
}
