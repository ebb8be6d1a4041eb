/* actors/partitioner.c: actor kind "partitioner". On every node it applies LIVE maps
 * (publishes them in the cluster state and tells the node's origin). On the coordinator
 * (the lowest live node id) it also proposes maps: when the live set settles on a change,
 * MAP(epoch = highest seen + 1) to every live node's shard-worker, and once all of them
 * answered READY, LIVE to every live node. Pure decisions are actors/partition.c's; this
 * file owns the two-phase protocol and its timeouts. Must not load models or route tokens.
 *
 *   tick (50 ms) -> desired map from the live set (strategy, or a SET_PARTITION override)
 *     differs from the live one (ranges, or a node restarted) and the topology is settled
 *     -> propose; READY all -> LIVE; READY error -> the node sits out a while; -ESTALE ->
 *     outbid at once; no answer by ready_timeout_ms -> retry. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/control.h"
#include "actors/default_model.h"
#include "actors/gen_request.h"
#include "actors/partition.h"
#include "common/err.h"
#include "runtime/log.h"
#include "runtime/node.h"
#include "runtime/shared.h"
#include "tensor/model.h"

#define PLOG(level, ...) exo_log(level, NULL, "partitioner", __VA_ARGS__)
#define TICK_TIMER 1
#define TICK_MS 50
#define MAP_RESEND_NS 500000000ull /* MAP again to targets silent this long */
#define BAD_NODE_NS 10000000000ull /* a node whose shard refused a MAP sits out 10 s */

struct proposal {
  bool active;
  uint64_t epoch, started_ns;
  size_t n;
  struct exo_gen_range ranges[EXO_GEN_MAX_RANGES];
  uint32_t targets[EXO_CLUSTER_MAX_NODES];
  uint64_t instances[EXO_CLUSTER_MAX_NODES];
  bool ready[EXO_CLUSTER_MAX_NODES];
  size_t n_targets;
  uint64_t last_send_ns;
};

struct part_state {
  struct exo_actor *self;
  struct exo_cluster *cluster;
  enum exo_partition_strategy strategy;
  struct exo_partition_range manual[EXO_GEN_MAX_RANGES];
  size_t n_manual;
  /* SET_PARTITION override (n_override > 0) and who waits for it */
  struct exo_gen_range override[EXO_GEN_MAX_RANGES];
  size_t n_override;
  bool override_waiting;
  struct exo_addr override_from;
  uint32_t min_nodes, settle_ms, ready_timeout_ms;
  char model_dir[EXO_GEN_MAX_PATH + 1];
  char model_id[EXO_CLUSTER_MODEL_MAX];
  struct exo_partition_model pm;
  uint64_t topo_version, topo_changed_ns;
  struct proposal prop;
  /* what the live map was built from (coordinator): node instances, to see restarts */
  uint32_t live_ids[EXO_CLUSTER_MAX_NODES];
  uint64_t live_instances[EXO_CLUSTER_MAX_NODES];
  size_t n_live_ids;
  uint64_t live_epoch_built;
  uint64_t live_sent_ns; /* when go_live sent it (our own LIVE comes back through the box) */
  struct { uint32_t id; uint64_t until_ns; } bad[EXO_CLUSTER_MAX_NODES];
  size_t n_bad;
  char last_wait[160]; /* the last "waiting for ..." logged, so it is logged once */
  /* LIVE acknowledgements of the last map this coordinator made live */
  bool acked[EXO_CLUSTER_MAX_NODES];
  bool done_pending; /* SET_PARTITION is answered when every ack is in */
};

static void wait_note(struct part_state *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void wait_note(struct part_state *s, const char *fmt, ...)
{
  char buf[sizeof s->last_wait];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (strcmp(buf, s->last_wait)) {
    snprintf(s->last_wait, sizeof s->last_wait, "%s", buf);
    PLOG(EXO_LOG_INFO, "%s", buf);
  }
}

static bool is_bad(struct part_state *s, uint32_t id, uint64_t now)
{
  for (size_t i = 0; i < s->n_bad; i++)
    if (s->bad[i].id == id && now < s->bad[i].until_ns)
      return true;
  return false;
}

static void mark_bad(struct part_state *s, uint32_t id)
{
  size_t i = 0;
  while (i < s->n_bad && s->bad[i].id != id)
    i++;
  if (i == s->n_bad) {
    if (s->n_bad >= EXO_CLUSTER_MAX_NODES)
      return;
    s->n_bad++;
  }
  s->bad[i].id = id;
  s->bad[i].until_ns = exo_gen_now_ns() + BAD_NODE_NS;
}

/* Parses manual ranges "1=0:4,2=4:8" (node=a:b). Returns 0 or -EINVAL. */
static int parse_manual(const char *text, struct exo_partition_range *out, size_t *n)
{
  *n = 0;
  const char *p = text;
  while (*p) {
    unsigned long node, a, b;
    int used = 0;
    if (sscanf(p, "%lu=%lu:%lu%n", &node, &a, &b, &used) != 3 || node == 0 ||
        node > UINT32_MAX || a >= b || b > 1u << 20 || *n >= EXO_GEN_MAX_RANGES)
      return -EINVAL;
    out[(*n)++] = (struct exo_partition_range){node, (int)a, (int)b};
    p += used;
    if (*p == ',')
      p++;
    else if (*p)
      return -EINVAL;
  }
  return *n ? 0 : -EINVAL;
}

static int ranges_equal(const struct exo_gen_range *a, size_t na, const struct exo_gen_range *b,
                        size_t nb)
{
  return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* ---- MAP / LIVE payloads ---------------------------------------------------------- */

static uint8_t *map_payload(const struct exo_gen_range *r, size_t n, const char *model,
                            size_t extra, size_t *len)
{
  size_t pl = strlen(model);
  *len = EXO_GEN_MAP_HEAD + 16 * n + pl + extra;
  uint8_t *p = exo_msg_alloc(*len);
  if (!p)
    return NULL;
  exo_gen_put_u32(p, (uint32_t)n);
  exo_gen_put_u32(p + 4, (uint32_t)pl);
  for (size_t i = 0; i < n; i++) {
    uint8_t *q = p + EXO_GEN_MAP_HEAD + 16 * i;
    exo_gen_put_u32(q, r[i].node);
    exo_gen_put_u32(q + 4, r[i].actor);
    exo_gen_put_u32(q + 8, r[i].a);
    exo_gen_put_u32(q + 12, r[i].b);
  }
  memcpy(p + EXO_GEN_MAP_HEAD + 16 * n, model, pl);
  return p;
}

static void send_done(struct part_state *s, int status, uint64_t epoch, const char *text)
{
  if (!s->override_waiting)
    return;
  s->override_waiting = false;
  size_t n = strlen(text);
  if (n > 300)
    n = 300;
  uint8_t *p = exo_msg_alloc(16 + n);
  if (!p)
    return;
  exo_gen_put_u32(p, (uint32_t)status);
  exo_gen_put_u32(p + 4, 0);
  exo_gen_put_u64(p + 8, epoch);
  memcpy(p + 16, text, n);
  struct exo_envelope env = {.type = EXO_CTL_MSG_PARTITION_DONE, .dst = s->override_from,
                             .epoch = epoch};
  void *vp = p;
  (void)exo_actor_send_buf(s->self, &env, &vp, 16 + n);
}

/* ---- the coordinator's side ------------------------------------------------------- */

/* The map this coordinator wants for the live nodes, into out; 0, or -EAGAIN (wait), or
 * another error (logged by the caller through s->last_wait). */
static int desired_map(struct part_state *s, const struct exo_cluster_node *live, size_t n_live,
                       struct exo_gen_range *out, size_t *n_out)
{
  uint32_t shard = exo_actor_id(EXO_SHARD_ACTOR_NAME);
  *n_out = 0;
  if (s->n_override) {
    for (size_t i = 0; i < s->n_override; i++) {
      bool found = false;
      for (size_t j = 0; j < n_live; j++)
        found |= live[j].id == s->override[i].node;
      if (!found) {
        send_done(s, -EHOSTUNREACH, 0, "a node of the requested ranges is not live");
        s->n_override = 0;
        return -EAGAIN;
      }
    }
    memcpy(out, s->override, s->n_override * sizeof *out);
    *n_out = s->n_override;
    return 0;
  }
  struct exo_partition_node pn[EXO_CLUSTER_MAX_NODES];
  for (size_t i = 0; i < n_live; i++)
    pn[i] = (struct exo_partition_node){live[i].id, live[i].mem_bytes};
  enum exo_partition_strategy st = s->strategy;
  if (st == EXO_PARTITION_MANUAL) {
    for (size_t i = 0; i < s->n_manual; i++) {
      bool found = false;
      for (size_t j = 0; j < n_live; j++)
        found |= live[j].id == s->manual[i].node_id;
      if (!found) {
        wait_note(s, "manual ranges name node %" PRIu64 ", which is not live: using the "
                  "memory-weighted ring over the live nodes meanwhile", s->manual[i].node_id);
        st = EXO_PARTITION_RING_MEMORY;
        break;
      }
    }
  }
  struct exo_partition_range pr[EXO_CLUSTER_MAX_NODES];
  size_t n = 0;
  char err[256];
  int rc = exo_partition_compute(st, pn, n_live, &s->pm, s->manual, s->n_manual, pr, &n, err,
                                 sizeof err);
  if (rc) {
    wait_note(s, "no map: %s", err);
    return rc;
  }
  /* manual ranges are given in any order: the pipeline runs from layer 0 */
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      if (pr[j].layer_begin < pr[i].layer_begin) {
        struct exo_partition_range t = pr[i];
        pr[i] = pr[j];
        pr[j] = t;
      }
  for (size_t i = 0; i < n && i < EXO_GEN_MAX_RANGES; i++)
    out[i] = (struct exo_gen_range){(uint32_t)pr[i].node_id, shard,
                                    (uint32_t)pr[i].layer_begin, (uint32_t)pr[i].layer_end};
  *n_out = n;
  return 0;
}

/* MAP to every target that has not answered. Returns 0, or the first send error. */
static int send_maps(struct part_state *s)
{
  struct proposal *p = &s->prop;
  size_t len;
  uint8_t *buf = map_payload(p->ranges, p->n, s->model_dir, 0, &len);
  if (!buf)
    return -ENOMEM;
  uint32_t shard = exo_actor_id(EXO_SHARD_ACTOR_NAME);
  int first = 0;
  for (size_t i = 0; i < p->n_targets; i++) {
    if (p->ready[i])
      continue;
    void *m = exo_msg_alloc(len);
    if (!m) {
      first = -ENOMEM;
      break;
    }
    memcpy(m, buf, len);
    struct exo_envelope env = {.type = EXO_GEN_MSG_MAP, .dst = {p->targets[i], shard},
                               .epoch = p->epoch};
    int rc = exo_actor_send_buf(s->self, &env, &m, len);
    if (rc) {
      PLOG(EXO_LOG_WARN, "MAP epoch %" PRIu64 " to node %u: %s", p->epoch, p->targets[i],
           strerror(-rc));
      if (!first)
        first = rc;
    }
  }
  exo_msg_free(buf);
  return first;
}

static void propose(struct part_state *s, const struct exo_cluster_node *live, size_t n_live,
                    const struct exo_gen_range *ranges, size_t n)
{
  struct proposal *p = &s->prop;
  memset(p, 0, sizeof *p);
  uint64_t base = exo_cluster_max_epoch(s->cluster);
  p->epoch = base + 1;
  exo_cluster_note_epoch(s->cluster, p->epoch);
  p->n = n;
  memcpy(p->ranges, ranges, n * sizeof *ranges);
  p->started_ns = exo_gen_now_ns();
  for (size_t i = 0; i < n_live; i++) {
    p->targets[p->n_targets] = live[i].id;
    p->instances[p->n_targets] = live[i].instance;
    p->n_targets++;
  }
  p->last_send_ns = p->started_ns;
  if (send_maps(s) < 0) {
    p->active = false; /* the next tick tries again */
    return;
  }
  p->active = true;
  char text[512];
  size_t o = 0;
  for (size_t i = 0; i < n && o < sizeof text - 40; i++)
    o += (size_t)snprintf(text + o, sizeof text - o, "%s%u:[%u,%u)", i ? " " : "",
                          ranges[i].node, ranges[i].a, ranges[i].b);
  PLOG(EXO_LOG_INFO, "proposing map epoch %" PRIu64 " to %zu nodes: %s", p->epoch, n_live,
       text);
}

static void go_live(struct part_state *s)
{
  struct proposal *p = &s->prop;
  size_t len;
  uint8_t *buf = map_payload(p->ranges, p->n, s->model_dir, 8, &len);
  if (!buf)
    return;
  exo_gen_put_u32(buf + len - 8, (uint32_t)s->pm.n_layers);
  exo_gen_put_u32(buf + len - 4, exo_actor_addr(s->self).node);
  uint32_t me = exo_actor_id(EXO_PARTITIONER_ACTOR_NAME);
  for (size_t i = 0; i < p->n_targets; i++) {
    void *m = exo_msg_alloc(len);
    if (!m)
      break;
    memcpy(m, buf, len);
    struct exo_envelope env = {.type = EXO_CTL_MSG_LIVE, .dst = {p->targets[i], me},
                               .epoch = p->epoch};
    (void)exo_actor_send_buf(s->self, &env, &m, len);
  }
  exo_msg_free(buf);
  s->n_live_ids = p->n_targets;
  memcpy(s->live_ids, p->targets, p->n_targets * sizeof p->targets[0]);
  memcpy(s->live_instances, p->instances, p->n_targets * sizeof p->instances[0]);
  s->live_epoch_built = p->epoch;
  s->live_sent_ns = exo_gen_now_ns();
  memset(s->acked, 0, sizeof s->acked);
  p->active = false;
  s->done_pending = s->n_override && ranges_equal(s->override, s->n_override, p->ranges, p->n);
}

static void on_live_ack(struct part_state *s, const struct exo_msg *msg)
{
  if (msg->env.epoch != s->live_epoch_built)
    return;
  bool all = true;
  for (size_t i = 0; i < s->n_live_ids; i++) {
    if (s->live_ids[i] == msg->env.src.node)
      s->acked[i] = true;
    all &= s->acked[i];
  }
  if (all && s->done_pending) {
    s->done_pending = false;
    send_done(s, 0, s->live_epoch_built, "live on every node");
  }
}

static void coordinate(struct part_state *s)
{
  uint64_t now = exo_gen_now_ns(), version = 0;
  uint32_t self_id = exo_actor_addr(s->self).node;
  struct exo_cluster_node all[EXO_CLUSTER_MAX_NODES], live[EXO_CLUSTER_MAX_NODES];
  size_t n_all = exo_cluster_copy_nodes(s->cluster, all, EXO_CLUSTER_MAX_NODES), n_live = 0;
  exo_shared_read_lock();
  (void)exo_cluster_topology(s->cluster, &version);
  exo_shared_read_unlock();
  if (version != s->topo_version) {
    s->topo_version = version;
    s->topo_changed_ns = now;
  }
  for (size_t i = 0; i < n_all && i < EXO_CLUSTER_MAX_NODES; i++) {
    if (all[i].health != EXO_PEER_ALIVE || is_bad(s, all[i].id, now))
      continue;
    if (all[i].id != self_id && !exo_node_has_peer(exo_actor_node(s->self), all[i].id))
      continue; /* heard of, but its HELLO has not arrived: MAP could not reach it yet */
    if (strcmp(all[i].model, s->model_id)) {
      wait_note(s, "node %u serves model '%s', not '%s': left out", all[i].id, all[i].model,
                s->model_id);
      continue;
    }
    live[n_live++] = all[i];
  }
  if (n_live == 0 || live[0].id != self_id) {
    s->prop.active = false; /* not (or no longer) the coordinator */
    if (s->override_waiting && n_live) { /* epoch field: who is */
      send_done(s, -EXDEV, live[0].id, "this node is not the coordinator");
      s->n_override = 0;
    }
    return;
  }
  struct proposal *p = &s->prop;
  if (p->active) {
    /* a target that stopped answering since (suspected, or gone) will never send READY:
     * give up on this proposal now rather than after ready_timeout_ms */
    for (size_t i = 0; i < p->n_targets && p->active; i++) {
      bool still = false;
      for (size_t j = 0; j < n_live; j++)
        still |= live[j].id == p->targets[i];
      if (!still) {
        PLOG(EXO_LOG_INFO, "map epoch %" PRIu64 ": node %u left the live set; re-proposing",
             p->epoch, p->targets[i]);
        p->active = false;
        s->topo_changed_ns = 0;
      }
    }
  }
  if (p->active) {
    if (now - p->started_ns < (uint64_t)s->ready_timeout_ms * 1000000ull) {
      /* a MAP or READY may have been lost: ask the silent ones again (shards answer a
       * repeated MAP of their epoch with READY, without reloading) */
      if (now - p->last_send_ns > MAP_RESEND_NS) {
        p->last_send_ns = now;
        (void)send_maps(s);
      }
      return;
    }
    char who[256];
    size_t o = 0;
    for (size_t i = 0; i < p->n_targets && o < sizeof who - 16; i++)
      if (!p->ready[i])
        o += (size_t)snprintf(who + o, sizeof who - o, " %u", p->targets[i]);
    PLOG(EXO_LOG_WARN, "map epoch %" PRIu64 ": no READY from node(s)%s within %u ms; retrying",
         p->epoch, who, s->ready_timeout_ms);
    p->active = false;
  }
  if (n_live < s->min_nodes) {
    wait_note(s, "waiting for %u live nodes (have %zu)", s->min_nodes, n_live);
    return;
  }
  struct exo_gen_range want[EXO_GEN_MAX_RANGES];
  size_t n_want = 0;
  if (desired_map(s, live, n_live, want, &n_want))
    return;
  struct exo_live_map cur;
  bool have = exo_cluster_copy_live_map(s->cluster, &cur) == 0;
  /* the map just sent LIVE is not published here until our own LIVE comes back through
   * the mailbox: proposing again meanwhile would outbid it with a copy (seen: epochs 6 and
   * 7 the same map, a request issued under 6 re-issued under 7) */
  if (s->live_epoch_built && (!have || cur.epoch < s->live_epoch_built) &&
      now - s->live_sent_ns < (uint64_t)s->ready_timeout_ms * 1000000ull)
    return;
  bool same = have && ranges_equal(cur.ranges, cur.n, want, n_want) &&
              cur.coordinator == self_id && cur.epoch == s->live_epoch_built;
  if (same) {
    /* a node of the map that restarted (new instance) lost its range: re-propose */
    for (size_t i = 0; i < n_live && same; i++)
      for (size_t j = 0; j < s->n_live_ids; j++)
        if (s->live_ids[j] == live[i].id && s->live_instances[j] != live[i].instance)
          same = false;
    /* a live node that was not told about this map (joined since) needs it too */
    for (size_t i = 0; i < n_live && same; i++) {
      bool told = false;
      for (size_t j = 0; j < s->n_live_ids; j++)
        told |= s->live_ids[j] == live[i].id;
      same = told;
    }
  }
  if (same) {
    if (s->override_waiting && s->n_override && !s->done_pending)
      send_done(s, 0, cur.epoch, "live");
    return;
  }
  if (now - s->topo_changed_ns < (uint64_t)s->settle_ms * 1000000ull)
    return;
  s->last_wait[0] = '\0';
  propose(s, live, n_live, want, n_want);
}

static void on_ready(struct part_state *s, const struct exo_msg *msg)
{
  struct proposal *p = &s->prop;
  if (!p->active || msg->env.epoch != p->epoch || msg->env.payload_len < EXO_GEN_READY_HEAD)
    return;
  const uint8_t *b = msg->payload;
  int status = (int)exo_gen_get_u32(b);
  uint64_t their = exo_gen_get_u64(b + 8);
  size_t tl = msg->env.payload_len - EXO_GEN_READY_HEAD;
  if (tl > 300)
    tl = 300;
  size_t i = 0;
  while (i < p->n_targets && p->targets[i] != msg->env.src.node)
    i++;
  if (i == p->n_targets)
    return;
  if (status == -ESTALE) {
    exo_cluster_note_epoch(s->cluster, their);
    PLOG(EXO_LOG_INFO, "node %u already saw epoch %" PRIu64 ": outbidding", p->targets[i], their);
    p->active = false;
    s->topo_changed_ns = 0; /* no need to settle again */
    return;
  }
  if (status < 0) {
    PLOG(EXO_LOG_ERROR, "node %u refused map epoch %" PRIu64 ": %.*s; it sits out %llu s",
         p->targets[i], p->epoch, (int)tl, (const char *)b + EXO_GEN_READY_HEAD,
         BAD_NODE_NS / 1000000000ull);
    mark_bad(s, p->targets[i]);
    p->active = false;
    if (s->n_override) {
      char text[360];
      snprintf(text, sizeof text, "node %u: %.*s", p->targets[i], (int)tl,
               (const char *)b + EXO_GEN_READY_HEAD);
      send_done(s, status, p->epoch, text);
      s->n_override = 0;
    }
    return;
  }
  p->ready[i] = true;
  for (size_t k = 0; k < p->n_targets; k++)
    if (!p->ready[k])
      return;
  go_live(s);
}

/* ---- every node's side ------------------------------------------------------------ */

static void on_live(struct part_state *s, const struct exo_msg *msg)
{
  const uint8_t *p = msg->payload;
  size_t len = msg->env.payload_len;
  if (len < EXO_GEN_MAP_HEAD + 8)
    return;
  uint32_t n = exo_gen_get_u32(p), pl = exo_gen_get_u32(p + 4);
  if (n < 1 || n > EXO_GEN_MAX_RANGES || pl > EXO_GEN_MAX_PATH ||
      len != EXO_GEN_MAP_HEAD + 16ull * n + pl + 8) {
    PLOG(EXO_LOG_WARN, "malformed LIVE (%zu bytes) from node %u dropped", len,
         msg->env.src.node);
    return;
  }
  struct exo_live_map m;
  memset(&m, 0, sizeof m);
  m.epoch = msg->env.epoch;
  m.n = n;
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *q = p + EXO_GEN_MAP_HEAD + 16 * i;
    m.ranges[i] = (struct exo_gen_range){exo_gen_get_u32(q), exo_gen_get_u32(q + 4),
                                         exo_gen_get_u32(q + 8), exo_gen_get_u32(q + 12)};
  }
  memcpy(m.model, p + EXO_GEN_MAP_HEAD + 16 * n, pl);
  m.model[pl] = '\0';
  m.n_layers = exo_gen_get_u32(p + len - 8);
  m.coordinator = exo_gen_get_u32(p + len - 4);
  exo_cluster_note_epoch(s->cluster, m.epoch);
  if (exo_cluster_publish_map(s->cluster, &m))
    return; /* stale: an older LIVE overtaken by a newer one */
  PLOG(EXO_LOG_INFO, "map epoch %" PRIu64 " is live (%u ranges, coordinator %u)", m.epoch, n,
       m.coordinator);
  struct exo_addr origin = {exo_actor_addr(s->self).node, exo_actor_id(EXO_ORIGIN_ACTOR_NAME)};
  uint8_t one = 0;
  (void)exo_actor_send(s->self, origin, EXO_CTL_MSG_MAP_LIVE, &one, 1);
  struct exo_envelope env = {.type = EXO_CTL_MSG_LIVE_ACK, .dst = msg->env.src,
                             .epoch = m.epoch};
  void *ack = exo_msg_alloc(1);
  if (ack) {
    memset(ack, 0, 1);
    (void)exo_actor_send_buf(s->self, &env, &ack, 1);
  }
}

static void on_set_partition(struct part_state *s, const struct exo_msg *msg)
{
  const uint8_t *p = msg->payload;
  size_t len = msg->env.payload_len;
  if (s->override_waiting)
    send_done(s, -ECANCELED, 0, "superseded by another SET_PARTITION");
  s->override_waiting = true;
  s->override_from = msg->env.src;
  uint32_t n = len >= 4 ? exo_gen_get_u32(p) : UINT32_MAX;
  if (n > EXO_GEN_MAX_RANGES || len != 4 + 16ull * n) {
    send_done(s, -EINVAL, 0, "SET_PARTITION: malformed range list");
    return;
  }
  uint32_t expect = 0;
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *q = p + 4 + 16 * i;
    s->override[i] = (struct exo_gen_range){exo_gen_get_u32(q), exo_gen_get_u32(q + 4),
                                            exo_gen_get_u32(q + 8), exo_gen_get_u32(q + 12)};
    if (s->override[i].a != expect || s->override[i].b <= s->override[i].a) {
      send_done(s, -EINVAL, 0, "SET_PARTITION: ranges must be contiguous from layer 0");
      s->n_override = 0;
      return;
    }
    expect = s->override[i].b;
  }
  if (n && expect != (uint32_t)s->pm.n_layers) {
    char t[96];
    snprintf(t, sizeof t, "SET_PARTITION: ranges end at %u, the model has %d layers", expect,
             s->pm.n_layers);
    send_done(s, -EINVAL, 0, t);
    return;
  }
  s->n_override = n;
  s->topo_changed_ns = 0;
  if (n == 0)
    send_done(s, 0, 0, "back to the configured strategy");
}

/* ---- kind ------------------------------------------------------------------------- */

static int part_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                     const struct exo_actor_config *opts, char *err, size_t errlen)
{
  struct part_state *s = state;
  s->self = self;
  if (!(s->cluster = exo_cluster_of_actor(self, err, errlen)))
    return -ENOMEM;
  uint64_t min_nodes = 1, settle = 300, ready_timeout = 30000;
  const char *strategy = "ring", *ranges = NULL;
  int rc = 0;
  if (cfg && opts) {
    static const char *const allowed[] = {"strategy", "ranges", "min_nodes", "settle_ms",
                                          "ready_timeout_ms", NULL};
    rc = exo_config_check_options(cfg, opts, allowed, err, errlen);
    if (!rc)
      rc = exo_config_option_str(cfg, opts, "strategy", strategy, &strategy, err, errlen);
    if (!rc)
      rc = exo_config_option_str(cfg, opts, "ranges", NULL, &ranges, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "min_nodes", min_nodes, 1, EXO_CLUSTER_MAX_NODES,
                                 &min_nodes, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "settle_ms", settle, 0, 60000, &settle, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "ready_timeout_ms", ready_timeout, 100, 3600000,
                                 &ready_timeout, err, errlen);
    if (rc)
      return rc;
  }
  if (exo_partition_strategy_parse(strategy, &s->strategy)) /* the default parses */
    return exo_config_option_fail(cfg, opts, "strategy", err, errlen,
                                  "expected ring, even or manual, got '%s'", strategy);
  if ((s->strategy == EXO_PARTITION_MANUAL) != (ranges != NULL) ||
      (ranges && parse_manual(ranges, s->manual, &s->n_manual)))
    return exo_config_option_fail(cfg, opts, "ranges", err, errlen,
                                  "expected NODE=A:B,... (e.g. 1=0:11,2=11:22) exactly when "
                                  "strategy is manual, got '%s'", ranges ? ranges : "(none)");
  s->min_nodes = (uint32_t)min_nodes;
  s->settle_ms = (uint32_t)settle;
  s->ready_timeout_ms = (uint32_t)ready_timeout;
  if (cfg && cfg->model)
    snprintf(s->model_dir, sizeof s->model_dir, "%s", cfg->model);
  else if (exo_default_model_dir(s->model_dir, sizeof s->model_dir)) {
    exo_errf(err, errlen, "the config names no `model` and no models/demo was found");
    return -ENOENT;
  }
  struct exo_model_config mc;
  if ((rc = exo_model_config_load(s->model_dir, &mc, err, errlen)))
    return rc;
  s->pm.n_layers = mc.n_layers;
  /* f32 in memory (half weights are widened at load today): what a layer costs */
  uint64_t H = (uint64_t)mc.hidden_size, q = (uint64_t)mc.n_heads * (uint64_t)mc.head_dim,
           kv = (uint64_t)mc.n_kv_heads * (uint64_t)mc.head_dim;
  s->pm.bytes_per_layer = 4 * (H * q * 2 + H * kv * 2 + 3 * H * (uint64_t)mc.intermediate_size + 2 * H);
  s->pm.reserve_bytes = 4 * 2 * H * (uint64_t)mc.vocab_size;
  exo_model_id(s->model_dir, s->model_id, sizeof s->model_id);
  return exo_actor_timer_start(self, TICK_TIMER, TICK_MS, true);
}

static int part_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)self;
  if (id == TICK_TIMER)
    coordinate(state);
  return 0;
}

static int part_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  struct part_state *s = state;
  switch (msg->env.type) {
  case EXO_GEN_MSG_READY:
    on_ready(s, msg);
    break;
  case EXO_CTL_MSG_LIVE:
    on_live(s, msg);
    break;
  case EXO_CTL_MSG_LIVE_ACK:
    on_live_ack(s, msg);
    break;
  case EXO_CTL_MSG_SET_PARTITION:
    on_set_partition(s, msg);
    coordinate(s);
    break;
  default:
    break;
  }
  return 0;
}

const struct exo_actor_kind exo_partitioner_kind = {
  .name = "partitioner",
  .state_size = sizeof(struct part_state),
  .init = part_init,
  .message = part_message,
  .timer = part_timer,
};
