/* actors/cluster.c: the node's cluster state (actors/cluster.h): topology and live map as
 * RCU snapshots, the writers' mutex, and a side table of last-heard times that heartbeats
 * update without republishing (they arrive every 100 ms from every peer).
 * The one lock here serializes writers only (topology changes, map go-lives: a few per
 * minute); readers on the per-token path never take it. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/origin_table.h"
#include "common/err.h"
#include "runtime/actor.h"
#include "runtime/node.h"
#include "runtime/shared.h"

struct exo_cluster {
  struct exo_rcu_cell *topo;    /* struct exo_topology */
  struct exo_rcu_cell *map;     /* struct exo_live_map */
  pthread_mutex_t write_mu;
  _Atomic uint64_t max_epoch;
  _Atomic int64_t shard_requests;
  struct exo_origin_stats origin_stats;
  uint32_t self;
  /* seen_ns per node id slot; ids are looked up linearly (<= EXO_CLUSTER_MAX_NODES) */
  _Atomic uint32_t seen_id[EXO_CLUSTER_MAX_NODES];
  _Atomic uint64_t seen_ns[EXO_CLUSTER_MAX_NODES];
};

static void cluster_free(void *p)
{
  struct exo_cluster *c = p;
  if (!c)
    return;
  exo_rcu_cell_free(c->topo);
  exo_rcu_cell_free(c->map);
  pthread_mutex_destroy(&c->write_mu);
  free(c);
}

/* The context a node carries when it is ours: tagged so another owner's context is not
 * mistaken for a cluster. */
struct cluster_ctx {
  uint64_t tag;
  struct exo_cluster *c;
};
#define CLUSTER_TAG 0x65786f636c757374ull /* "exoclust" */

static void ctx_free(void *p)
{
  struct cluster_ctx *x = p;
  if (x)
    cluster_free(x->c);
  free(x);
}

struct exo_cluster *exo_cluster_of(struct exo_node *node)
{
  struct cluster_ctx *x = exo_node_context(node);
  if (x)
    return x->tag == CLUSTER_TAG ? x->c : NULL;
  struct exo_cluster *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  pthread_mutex_init(&c->write_mu, NULL);
  c->self = exo_node_id(node);
  c->topo = exo_rcu_cell_new(NULL);
  c->map = exo_rcu_cell_new(NULL);
  x = calloc(1, sizeof *x);
  struct exo_topology *t = calloc(1, sizeof *t);
  if (!x || !c->topo || !c->map || !t)
    goto fail;
  x->tag = CLUSTER_TAG;
  x->c = c;
  t->self = c->self;
  if (exo_rcu_cell_publish(c->topo, t, NULL))
    goto fail;
  t = NULL;
  if (exo_node_set_context(node, x, ctx_free))
    goto fail;
  return c;
fail:
  free(t);
  free(x);
  cluster_free(c);
  return NULL;
}

const struct exo_topology *exo_cluster_topology(struct exo_cluster *c, uint64_t *version)
{
  return exo_rcu_cell_read(c->topo, version);
}

const struct exo_live_map *exo_cluster_live_map(struct exo_cluster *c)
{
  return exo_rcu_cell_read(c->map, NULL);
}

int exo_cluster_copy_live_map(struct exo_cluster *c, struct exo_live_map *out)
{
  exo_shared_read_lock();
  const struct exo_live_map *m = exo_rcu_cell_read(c->map, NULL);
  if (m)
    *out = *m;
  exo_shared_read_unlock();
  return m ? 0 : -ENOENT;
}

static uint64_t seen_of(struct exo_cluster *c, uint32_t id)
{
  for (size_t i = 0; i < EXO_CLUSTER_MAX_NODES; i++)
    if (atomic_load_explicit(&c->seen_id[i], memory_order_acquire) == id)
      return atomic_load_explicit(&c->seen_ns[i], memory_order_relaxed);
  return 0;
}

int exo_cluster_find_node(struct exo_cluster *c, uint32_t id, struct exo_cluster_node *out)
{
  int rc = -ENOENT;
  exo_shared_read_lock();
  const struct exo_topology *t = exo_rcu_cell_read(c->topo, NULL);
  for (size_t i = 0; t && i < t->n; i++)
    if (t->nodes[i].id == id) {
      *out = t->nodes[i];
      rc = 0;
      break;
    }
  exo_shared_read_unlock();
  if (rc == 0) {
    uint64_t s = seen_of(c, id);
    if (s > out->seen_ns)
      out->seen_ns = s;
  }
  return rc;
}

struct exo_cluster *exo_cluster_of_actor(struct exo_actor *self, char *err, size_t errlen)
{
  struct exo_cluster *c = exo_cluster_of(exo_actor_node(self));
  if (!c)
    exo_errf(err, errlen, "%s: no cluster state (out of memory, or the node's context is "
             "something else)", exo_actor_name(self));
  return c;
}

size_t exo_cluster_copy_nodes(struct exo_cluster *c, struct exo_cluster_node *out, size_t max)
{
  exo_shared_read_lock();
  const struct exo_topology *t = exo_rcu_cell_read(c->topo, NULL);
  size_t n = t ? t->n : 0;
  for (size_t i = 0; i < n && i < max; i++) {
    out[i] = t->nodes[i];
    uint64_t s = seen_of(c, out[i].id);
    if (s > out[i].seen_ns)
      out[i].seen_ns = s;
  }
  exo_shared_read_unlock();
  return n;
}

/* A writable copy of the current topology with room for one more node. (write_mu) */
static struct exo_topology *topo_copy(struct exo_cluster *c)
{
  exo_shared_read_lock();
  const struct exo_topology *t = exo_rcu_cell_read(c->topo, NULL);
  size_t n = t ? t->n : 0;
  struct exo_topology *nt = malloc(sizeof *nt + (n + 1) * sizeof nt->nodes[0]);
  if (nt) {
    nt->self = c->self;
    nt->n = n;
    if (n)
      memcpy(nt->nodes, t->nodes, n * sizeof t->nodes[0]);
  }
  exo_shared_read_unlock();
  return nt;
}

static int publish_topo(struct exo_cluster *c, struct exo_topology *nt)
{
  int rc = exo_rcu_cell_publish(c->topo, nt, NULL);
  if (rc)
    free(nt);
  return rc;
}

int exo_cluster_upsert(struct exo_cluster *c, const struct exo_cluster_node *n)
{
  pthread_mutex_lock(&c->write_mu);
  int rc = -ENOMEM;
  struct exo_topology *nt = topo_copy(c);
  if (!nt)
    goto out;
  size_t i = 0;
  while (i < nt->n && nt->nodes[i].id < n->id)
    i++;
  bool found = i < nt->n && nt->nodes[i].id == n->id;
  int changed;
  if (found) {
    struct exo_cluster_node *o = &nt->nodes[i];
    changed = strcmp(o->addr, n->addr) || strcmp(o->model, n->model) ||
              o->mem_bytes != n->mem_bytes || o->instance != n->instance;
    enum exo_peer_health h = o->health;
    uint64_t hns = o->health_ns;
    *o = *n;
    o->health = h;
    o->health_ns = hns;
    if (!changed) { /* nothing the partitioner reads: skip the publish */
      free(nt);
      rc = 0;
      goto touch;
    }
  } else {
    if (nt->n >= EXO_CLUSTER_MAX_NODES) {
      free(nt);
      rc = -ENOSPC;
      goto out;
    }
    memmove(&nt->nodes[i + 1], &nt->nodes[i], (nt->n - i) * sizeof nt->nodes[0]);
    nt->nodes[i] = *n;
    nt->nodes[i].health = EXO_PEER_ALIVE;
    nt->nodes[i].health_ns = n->seen_ns;
    nt->n++;
    changed = 1;
  }
  if ((rc = publish_topo(c, nt)))
    goto out;
  rc = changed;
touch:
  pthread_mutex_unlock(&c->write_mu);
  exo_cluster_touch(c, n->id);
  return rc;
out:
  pthread_mutex_unlock(&c->write_mu);
  return rc;
}

int exo_cluster_set_health(struct exo_cluster *c, uint32_t id, enum exo_peer_health h)
{
  pthread_mutex_lock(&c->write_mu);
  int rc = -ENOMEM;
  struct exo_topology *nt = topo_copy(c);
  if (!nt)
    goto out;
  rc = -ENOENT;
  for (size_t i = 0; i < nt->n; i++) {
    if (nt->nodes[i].id != id)
      continue;
    if (nt->nodes[i].health == h) {
      rc = 0;
      break;
    }
    nt->nodes[i].health = h;
    nt->nodes[i].health_ns = exo_gen_now_ns();
    rc = publish_topo(c, nt);
    nt = NULL;
    if (rc == 0)
      rc = 1;
    break;
  }
  free(nt);
out:
  pthread_mutex_unlock(&c->write_mu);
  return rc;
}

void exo_cluster_touch(struct exo_cluster *c, uint32_t id)
{
  uint64_t now = exo_gen_now_ns();
  for (size_t i = 0; i < EXO_CLUSTER_MAX_NODES; i++) {
    uint32_t cur = atomic_load_explicit(&c->seen_id[i], memory_order_acquire);
    if (cur == 0) {
      uint32_t zero = 0;
      if (!atomic_compare_exchange_strong(&c->seen_id[i], &zero, id) && zero != id)
        continue; /* another writer took the slot for another id */
      cur = id;
    }
    if (cur == id) {
      atomic_store_explicit(&c->seen_ns[i], now, memory_order_relaxed);
      return;
    }
  }
}

int exo_cluster_publish_map(struct exo_cluster *c, const struct exo_live_map *map)
{
  pthread_mutex_lock(&c->write_mu);
  int rc = 0;
  exo_shared_read_lock();
  const struct exo_live_map *cur = exo_rcu_cell_read(c->map, NULL);
  if (cur && cur->epoch >= map->epoch)
    rc = -ESTALE;
  exo_shared_read_unlock();
  if (rc == 0) {
    struct exo_live_map *m = malloc(sizeof *m);
    if (!m) {
      rc = -ENOMEM;
    } else {
      *m = *map;
      m->live_ns = exo_gen_now_ns();
      if ((rc = exo_rcu_cell_publish(c->map, m, NULL)))
        free(m);
      else
        exo_cluster_note_epoch(c, map->epoch);
    }
  }
  pthread_mutex_unlock(&c->write_mu);
  return rc;
}

uint64_t exo_cluster_max_epoch(struct exo_cluster *c)
{
  return atomic_load(&c->max_epoch);
}

void exo_cluster_note_epoch(struct exo_cluster *c, uint64_t epoch)
{
  uint64_t cur = atomic_load(&c->max_epoch);
  while (cur < epoch && !atomic_compare_exchange_weak(&c->max_epoch, &cur, epoch))
    ;
}

void exo_cluster_shard_requests_add(struct exo_cluster *c, int delta)
{
  atomic_fetch_add_explicit(&c->shard_requests, delta, memory_order_relaxed);
}

int64_t exo_cluster_shard_requests(struct exo_cluster *c)
{
  return atomic_load_explicit(&c->shard_requests, memory_order_relaxed);
}

struct exo_origin_stats *exo_cluster_origin_stats(struct exo_cluster *c)
{
  return &c->origin_stats;
}
