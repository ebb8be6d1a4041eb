/* tests/actors/test_cluster_state.c: the node's cluster state (actors/cluster.h): upserts
 * report what the partitioner cares about, health changes publish, a stale map is
 * refused, epochs only grow, and readers on other threads see whole snapshots while
 * writers publish (run under TSan in the concurrency suite). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "actors/cluster.h"
#include "runtime/node.h"
#include "runtime/shared.h"
#include "tests/test.h"

static struct exo_node *new_node(uint32_t id)
{
  struct exo_node_opts o = {.node_id = id, .loops = 1};
  struct exo_node *n = NULL;
  char err[256];
  if (exo_node_new_opts(&o, &n, err, sizeof err))
    fprintf(stderr, "node: %s\n", err);
  return n;
}

static struct exo_cluster_node entry(uint32_t id, const char *addr, uint64_t instance)
{
  struct exo_cluster_node n = {.id = id, .mem_bytes = 1ull << 30, .instance = instance,
                               .seen_ns = 1};
  snprintf(n.addr, sizeof n.addr, "%s", addr);
  snprintf(n.model, sizeof n.model, "tiny");
  return n;
}

static void upsert_and_health(void)
{
  struct exo_node *node = new_node(1);
  CHECK(node != NULL);
  if (!node)
    return;
  struct exo_cluster *c = exo_cluster_of(node);
  CHECK(c != NULL);
  CHECK(exo_cluster_of(node) == c); /* one per node */
  struct exo_cluster_node a = entry(3, "tcp://h:3", 30), b = entry(2, "tcp://h:2", 20);
  CHECK_INT_EQ(exo_cluster_upsert(c, &a), 1);
  CHECK_INT_EQ(exo_cluster_upsert(c, &b), 1);
  CHECK_INT_EQ(exo_cluster_upsert(c, &a), 0); /* nothing new: no publish */
  a.instance = 31;                            /* a restart matters to the partitioner */
  CHECK_INT_EQ(exo_cluster_upsert(c, &a), 1);
  struct exo_cluster_node got[8];
  CHECK_INT_EQ(exo_cluster_copy_nodes(c, got, 8), 2);
  CHECK_INT_EQ(got[0].id, 2); /* sorted by id */
  CHECK_INT_EQ(got[1].id, 3);
  CHECK_INT_EQ(got[1].instance, 31);
  CHECK_INT_EQ(exo_cluster_set_health(c, 3, EXO_PEER_SUSPECT), 1);
  CHECK_INT_EQ(exo_cluster_set_health(c, 3, EXO_PEER_SUSPECT), 0);
  CHECK_INT_EQ(exo_cluster_set_health(c, 9, EXO_PEER_SUSPECT), -ENOENT);
  CHECK_INT_EQ(exo_cluster_upsert(c, &a), 0); /* an announcement keeps the judged health */
  exo_cluster_copy_nodes(c, got, 8);
  CHECK_INT_EQ(got[1].health, EXO_PEER_SUSPECT);
  exo_node_free(node);
}

static void maps_only_move_forward(void)
{
  struct exo_node *node = new_node(1);
  if (!node)
    return;
  struct exo_cluster *c = exo_cluster_of(node);
  struct exo_live_map m = {.epoch = 5, .n = 1, .n_layers = 4,
                           .ranges = {{1, 7, 0, 4}}};
  struct exo_live_map out;
  CHECK_INT_EQ(exo_cluster_copy_live_map(c, &out), -ENOENT);
  CHECK_INT_EQ(exo_cluster_publish_map(c, &m), 0);
  CHECK_INT_EQ(exo_cluster_max_epoch(c), 5);
  m.epoch = 4;
  CHECK_INT_EQ(exo_cluster_publish_map(c, &m), -ESTALE);
  m.epoch = 5;
  CHECK_INT_EQ(exo_cluster_publish_map(c, &m), -ESTALE);
  CHECK_INT_EQ(exo_cluster_copy_live_map(c, &out), 0);
  CHECK_INT_EQ(out.epoch, 5);
  exo_cluster_note_epoch(c, 9); /* a newer epoch heard of (a READY -ESTALE) */
  exo_cluster_note_epoch(c, 7);
  CHECK_INT_EQ(exo_cluster_max_epoch(c), 9);
  exo_cluster_shard_requests_add(c, 2);
  exo_cluster_shard_requests_add(c, -1);
  CHECK_INT_EQ(exo_cluster_shard_requests(c), 1);
  exo_node_free(node);
}

struct race {
  struct exo_cluster *c;
  atomic_int stop;
  atomic_long reads, torn;
};

/* Each published topology is consistent: ids strictly increase and every entry's address
 * names its id (a writer builds the snapshot before publishing it). */
static void *reader(void *arg)
{
  struct race *r = arg;
  while (!atomic_load(&r->stop)) {
    exo_shared_read_lock();
    const struct exo_topology *t = exo_cluster_topology(r->c, NULL);
    for (size_t i = 0; t && i < t->n; i++) {
      char want[32];
      snprintf(want, sizeof want, "tcp://h:%u", t->nodes[i].id);
      if (strcmp(t->nodes[i].addr, want) || (i && t->nodes[i - 1].id >= t->nodes[i].id))
        atomic_fetch_add(&r->torn, 1);
    }
    const struct exo_live_map *m = exo_cluster_live_map(r->c);
    if (m && m->n != m->ranges[0].b) /* publish writes n == ranges[0].b */
      atomic_fetch_add(&r->torn, 1);
    exo_shared_read_unlock();
    atomic_fetch_add(&r->reads, 1);
  }
  return NULL;
}

static void readers_race_writers(void)
{
  struct exo_node *node = new_node(1);
  if (!node)
    return;
  struct race r = {.c = exo_cluster_of(node)};
  pthread_t th[3];
  for (int i = 0; i < 3; i++)
    pthread_create(&th[i], NULL, reader, &r);
  for (uint32_t k = 0; k < 400; k++) {
    char addr[32];
    uint32_t id = 2 + k % EXO_CLUSTER_MAX_NODES / 2;
    snprintf(addr, sizeof addr, "tcp://h:%u", id);
    struct exo_cluster_node n = entry(id, addr, k);
    CHECK(exo_cluster_upsert(r.c, &n) >= 0);
    (void)exo_cluster_set_health(r.c, id, k % 2 ? EXO_PEER_SUSPECT : EXO_PEER_ALIVE);
    exo_cluster_touch(r.c, id);
    struct exo_live_map m = {.epoch = k + 1, .n = 1 + k % 3};
    m.ranges[0].b = (uint32_t)m.n;
    CHECK_INT_EQ(exo_cluster_publish_map(r.c, &m), 0);
  }
  atomic_store(&r.stop, 1);
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  CHECK(atomic_load(&r.reads) > 0);
  CHECK_INT_EQ(atomic_load(&r.torn), 0);
  exo_node_free(node);
}

int main(void)
{
  EXO_RUN(upsert_and_health);
  EXO_RUN(maps_only_move_forward);
  EXO_RUN(readers_race_writers);
  return exo_test_result();
}
