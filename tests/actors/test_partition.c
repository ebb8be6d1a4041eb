/* tests/actors/test_partition.c: the partition map a cluster agrees on: memory-weighted
 * shares, largest-remainder rounding, at least one layer each, memory caps, manual ranges,
 * and determinism whatever order the topology arrives in. */
#include <errno.h>
#include <stdint.h>

#include "actors/partition.h"
#include "tests/test.h"

#define GIB (1024ull * 1024 * 1024)

static int layers_of(const struct exo_partition_range *r, size_t n, uint64_t id)
{
  for (size_t i = 0; i < n; i++)
    if (r[i].node_id == id)
      return r[i].layer_end - r[i].layer_begin;
  return 0;
}

static void check_contiguous(const struct exo_partition_range *r, size_t n, int layers)
{
  int expect = 0;
  for (size_t i = 0; i < n; i++) {
    CHECK_INT_EQ(r[i].layer_begin, expect);
    CHECK(r[i].layer_end > r[i].layer_begin);
    expect = r[i].layer_end;
  }
  CHECK_INT_EQ(expect, layers);
}

static void memory_weighted_shares(void)
{
  struct exo_partition_node nodes[] = {{3, 8 * GIB}, {1, 16 * GIB}, {2, 8 * GIB}};
  struct exo_partition_model model = {.n_layers = 22, .bytes_per_layer = 100 << 20};
  struct exo_partition_range out[3];
  size_t n = 0;
  char err[256] = "";
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_RING_MEMORY, nodes, 3, &model, NULL, 0, out,
                                     &n, err, sizeof err), 0);
  CHECK_INT_EQ(n, 3);
  check_contiguous(out, n, 22);
  /* 22 * (16, 8, 8) / 32 = 11, 5.5, 5.5: the tie for the leftover layer goes to the lower id */
  CHECK_INT_EQ(out[0].node_id, 1);
  CHECK_INT_EQ(layers_of(out, n, 1), 11);
  CHECK_INT_EQ(layers_of(out, n, 2), 6);
  CHECK_INT_EQ(layers_of(out, n, 3), 5);
}

static void largest_remainder_rounding(void)
{
  struct exo_partition_node nodes[] = {{1, 50 * GIB}, {2, 30 * GIB}, {3, 20 * GIB}};
  struct exo_partition_model model = {.n_layers = 7, .bytes_per_layer = 1};
  struct exo_partition_range out[3];
  size_t n = 0;
  char err[256] = "";
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_RING_MEMORY, nodes, 3, &model, NULL, 0, out,
                                     &n, err, sizeof err), 0);
  /* 7 * (.5, .3, .2) = 3.5, 2.1, 1.4: floors 3, 2, 1; the leftover goes to the largest
   * remainder (.5, node 1), not to the node with the most memory by accident of order */
  CHECK_INT_EQ(layers_of(out, n, 1), 4);
  CHECK_INT_EQ(layers_of(out, n, 2), 2);
  CHECK_INT_EQ(layers_of(out, n, 3), 1);

  struct exo_partition_node nodes2[] = {{1, 40 * GIB}, {2, 35 * GIB}, {3, 25 * GIB}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_RING_MEMORY, nodes2, 3, &model, NULL, 0, out,
                                     &n, err, sizeof err), 0);
  /* 2.8, 2.45, 1.75: floors 2, 2, 1; leftover 2 layers to remainders .8 and .75 */
  CHECK_INT_EQ(layers_of(out, n, 1), 3);
  CHECK_INT_EQ(layers_of(out, n, 2), 2);
  CHECK_INT_EQ(layers_of(out, n, 3), 2);
}

static void at_least_one_layer_each(void)
{
  struct exo_partition_node nodes[] = {{1, 1000 * GIB}, {2, 1 * GIB}, {3, 1 * GIB}};
  struct exo_partition_model model = {.n_layers = 4, .bytes_per_layer = 1};
  struct exo_partition_range out[3];
  size_t n = 0;
  char err[256] = "";
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_RING_MEMORY, nodes, 3, &model, NULL, 0, out,
                                     &n, err, sizeof err), 0);
  CHECK_INT_EQ(n, 3);
  check_contiguous(out, n, 4);
  CHECK_INT_EQ(layers_of(out, n, 1), 2);
  CHECK_INT_EQ(layers_of(out, n, 2), 1);
  CHECK_INT_EQ(layers_of(out, n, 3), 1);
}

static void too_small_node_gets_fewer(void)
{
  /* Node 2's memory share is 12 * 11.5 / 61.5 = 2.2 layers, but after the reserve only one
   * layer fits: it gets one and the others take the rest. */
  struct exo_partition_model model = {.n_layers = 12, .bytes_per_layer = 1 * GIB,
                                      .reserve_bytes = 10 * GIB};
  struct exo_partition_node nodes[] = {{1, 30 * GIB}, {2, 23 * GIB / 2}, {3, 20 * GIB}};
  struct exo_partition_range out[3];
  size_t n = 0;
  char err[256] = "";
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_RING_MEMORY, nodes, 3, &model, NULL, 0, out,
                                     &n, err, sizeof err), 0);
  check_contiguous(out, n, 12);
  for (size_t i = 0; i < n; i++) {
    uint64_t mem = 0;
    for (size_t j = 0; j < 3; j++)
      if (nodes[j].node_id == out[i].node_id)
        mem = nodes[j].memory_bytes;
    /* never more layers than fit: no OOM by rounding */
    CHECK((uint64_t)(out[i].layer_end - out[i].layer_begin) * model.bytes_per_layer +
              model.reserve_bytes <= mem);
  }
  CHECK_INT_EQ(layers_of(out, n, 2), 1);
  CHECK_INT_EQ(layers_of(out, n, 1) + layers_of(out, n, 3), 11);

  /* a node that cannot hold a single layer is left out of the map */
  struct exo_partition_node tiny[] = {{1, 30 * GIB}, {2, 10 * GIB}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_RING_MEMORY, tiny, 2, &model, NULL, 0, out,
                                     &n, err, sizeof err), 0);
  CHECK_INT_EQ(n, 1);
  CHECK_INT_EQ(out[0].node_id, 1);

  /* nothing fits: a clear error, not a map that would run out of memory */
  struct exo_partition_node small[] = {{1, 15 * GIB}, {2, 16 * GIB}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_RING_MEMORY, small, 2, &model, NULL, 0, out,
                                     &n, err, sizeof err), -ENOSPC);
  CHECK_STR_CONTAINS(err, "does not fit");
}

static void even_and_determinism(void)
{
  struct exo_partition_model model = {.n_layers = 22, .bytes_per_layer = 1};
  struct exo_partition_node a[] = {{7, 8 * GIB}, {3, 8 * GIB}, {5, 16 * GIB}, {9, 4 * GIB}};
  struct exo_partition_node b[] = {{9, 4 * GIB}, {5, 16 * GIB}, {3, 8 * GIB}, {7, 8 * GIB}};
  for (int strategy = EXO_PARTITION_RING_MEMORY; strategy <= EXO_PARTITION_EVEN; strategy++) {
    struct exo_partition_range ra[4], rb[4];
    size_t na = 0, nb = 0;
    char err[256] = "";
    CHECK_INT_EQ(exo_partition_compute(strategy, a, 4, &model, NULL, 0, ra, &na, err,
                                       sizeof err), 0);
    CHECK_INT_EQ(exo_partition_compute(strategy, b, 4, &model, NULL, 0, rb, &nb, err,
                                       sizeof err), 0);
    CHECK_INT_EQ(na, nb);
    for (size_t i = 0; i < na && i < nb; i++) {
      CHECK_INT_EQ(ra[i].node_id, rb[i].node_id);
      CHECK_INT_EQ(ra[i].layer_begin, rb[i].layer_begin);
      CHECK_INT_EQ(ra[i].layer_end, rb[i].layer_end);
    }
    check_contiguous(ra, na, 22);
    if (strategy == EXO_PARTITION_EVEN)
      for (size_t i = 0; i < na; i++) /* 22 / 4 = 5.5: two nodes 6, two nodes 5 */
        CHECK(ra[i].layer_end - ra[i].layer_begin == (i < 2 ? 6 : 5));
  }
}

static void more_nodes_than_layers(void)
{
  struct exo_partition_model model = {.n_layers = 2, .bytes_per_layer = 1};
  struct exo_partition_node nodes[] = {{1, GIB}, {2, GIB}, {3, GIB}};
  struct exo_partition_range out[3];
  size_t n = 0;
  char err[256] = "";
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_EVEN, nodes, 3, &model, NULL, 0, out, &n,
                                     err, sizeof err), 0);
  CHECK_INT_EQ(n, 2);
  check_contiguous(out, n, 2);
}

static void manual_ranges(void)
{
  struct exo_partition_model model = {.n_layers = 4, .bytes_per_layer = GIB};
  struct exo_partition_node nodes[] = {{1, 8 * GIB}, {2, 8 * GIB}, {3, 2 * GIB}};
  struct exo_partition_range out[3];
  size_t n = 0;
  char err[256] = "";
  struct exo_partition_range good[] = {{2, 1, 3}, {1, 0, 1}, {3, 3, 4}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_MANUAL, nodes, 3, &model, good, 3, out, &n,
                                     err, sizeof err), 0);
  CHECK_INT_EQ(n, 3);
  CHECK_INT_EQ(out[0].node_id, 1);
  CHECK_INT_EQ(out[1].node_id, 2);
  CHECK_INT_EQ(out[2].node_id, 3);

  struct exo_partition_range gap[] = {{1, 0, 1}, {2, 2, 4}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_MANUAL, nodes, 3, &model, gap, 2, out, &n,
                                     err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "expected a range starting at 1");

  struct exo_partition_range overlap[] = {{1, 0, 3}, {2, 2, 4}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_MANUAL, nodes, 3, &model, overlap, 2, out,
                                     &n, err, sizeof err), -EINVAL);

  struct exo_partition_range short_map[] = {{1, 0, 3}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_MANUAL, nodes, 3, &model, short_map, 1, out,
                                     &n, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "ends at layer 3");

  struct exo_partition_range stranger[] = {{1, 0, 2}, {9, 2, 4}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_MANUAL, nodes, 3, &model, stranger, 2, out,
                                     &n, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "node 9");

  struct exo_partition_range too_big[] = {{1, 0, 1}, {3, 1, 4}};
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_MANUAL, nodes, 3, &model, too_big, 2, out,
                                     &n, err, sizeof err), -ENOSPC);
  CHECK_STR_CONTAINS(err, "room for 2");
}

static void bad_topology(void)
{
  struct exo_partition_model model = {.n_layers = 4, .bytes_per_layer = 1};
  struct exo_partition_node dup[] = {{1, GIB}, {1, GIB}};
  struct exo_partition_range out[2];
  size_t n = 0;
  char err[256] = "";
  CHECK_INT_EQ(exo_partition_compute(EXO_PARTITION_EVEN, dup, 2, &model, NULL, 0, out, &n, err,
                                     sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "appears twice");
  enum exo_partition_strategy s;
  CHECK_INT_EQ(exo_partition_strategy_parse("even", &s), 0);
  CHECK_INT_EQ(s, EXO_PARTITION_EVEN);
  CHECK_INT_EQ(exo_partition_strategy_parse("random", &s), -EINVAL);
}

int main(void)
{
  EXO_RUN(memory_weighted_shares);
  EXO_RUN(largest_remainder_rounding);
  EXO_RUN(at_least_one_layer_each);
  EXO_RUN(too_small_node_gets_fewer);
  EXO_RUN(even_and_determinism);
  EXO_RUN(more_nodes_than_layers);
  EXO_RUN(manual_ranges);
  EXO_RUN(bad_topology);
  return exo_test_result();
}
