/* actors/health.c: actor kind "health" (the health-monitor): sends a heartbeat to every
 * node of the topology each interval (default 100 ms), feeds arrivals to one failure
 * detector per peer (actors/failure_detector.h: phi accrual, hard bound 450 ms), and marks
 * peers suspect or alive again in the cluster state, which the partitioner watches.
 * Must not decide maps; must stay on a loop that never runs model compute, or a long
 * prefill would look like silence. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/control.h"
#include "actors/failure_detector.h"
#include "runtime/log.h"
#include "runtime/node.h"

#define HLOG(level, ...) exo_log(level, NULL, "health", __VA_ARGS__)
#define BEAT_TIMER 1

struct peer_fd {
  uint32_t id;
  uint64_t added_us; /* when it entered the topology (silence from then counts) */
  struct exo_failure_detector fd;
};

struct health_state {
  struct exo_actor *self;
  struct exo_cluster *cluster;
  uint32_t interval_ms, max_silence_ms;
  struct peer_fd peers[EXO_CLUSTER_MAX_NODES];
  size_t n_peers;
  uint64_t suspicions, recoveries;
  uint64_t ticks;
};

static uint64_t now_us(void)
{
  return exo_gen_now_ns() / 1000;
}

static struct peer_fd *peer_get(struct health_state *s, uint32_t id, bool create)
{
  for (size_t i = 0; i < s->n_peers; i++)
    if (s->peers[i].id == id)
      return &s->peers[i];
  if (!create || s->n_peers >= EXO_CLUSTER_MAX_NODES)
    return NULL;
  struct peer_fd *p = &s->peers[s->n_peers++];
  p->id = id;
  p->added_us = now_us();
  exo_failure_detector_init(&p->fd, (uint64_t)s->interval_ms * 1000,
                            (uint64_t)s->max_silence_ms * 1000);
  return p;
}

static void judge(struct health_state *s, const struct exo_cluster_node *n)
{
  struct peer_fd *p = peer_get(s, n->id, true);
  if (!p)
    return;
  uint64_t now = now_us();
  /* never heard: silent since it joined the topology */
  bool suspect = p->fd.last_us ? exo_failure_detector_suspect(&p->fd, now)
                               : now - p->added_us > (uint64_t)s->max_silence_ms * 1000;
  /* two heartbeats in a row lost on a lossy link are not a failure: phi, fed a very
   * regular history, would call a 300 ms gap impossible; 3.5 intervals of silence at
   * least (350 ms by default, still under the 450 ms hard bound) */
  if (suspect && p->fd.last_us && now - p->fd.last_us < (uint64_t)s->interval_ms * 3500)
    suspect = false;
  if (suspect && n->health == EXO_PEER_ALIVE) {
    if (exo_cluster_set_health(s->cluster, n->id, EXO_PEER_SUSPECT) == 1) {
      s->suspicions++;
      HLOG(EXO_LOG_WARN, "node %u suspected: silent for %" PRIu64 " ms (phi %.1f)", n->id,
           (now - (p->fd.last_us ? p->fd.last_us : p->added_us)) / 1000,
           p->fd.last_us ? exo_failure_detector_phi(&p->fd, now) : 0.0);
    }
  } else if (!suspect && n->health == EXO_PEER_SUSPECT && p->fd.last_us) {
    if (exo_cluster_set_health(s->cluster, n->id, EXO_PEER_ALIVE) == 1) {
      s->recoveries++;
      HLOG(EXO_LOG_INFO, "node %u answers again", n->id);
    }
  }
}

/* Runs every half interval: heartbeats go out every other tick, and judging twice per
 * interval keeps "silent past the bound" to "suspected" within half an interval. */
static void tick(struct health_state *s)
{
  s->ticks++;
  struct exo_cluster_node nodes[EXO_CLUSTER_MAX_NODES];
  size_t n = exo_cluster_copy_nodes(s->cluster, nodes, EXO_CLUSTER_MAX_NODES);
  uint32_t self_id = exo_actor_addr(s->self).node;
  uint8_t beat[8] = {0};
  for (size_t i = 0; i < n && i < EXO_CLUSTER_MAX_NODES; i++) {
    if (nodes[i].id == self_id)
      continue;
    struct exo_addr dst = {nodes[i].id, exo_actor_id(EXO_HEALTH_ACTOR_NAME)};
    if (s->ticks % 2 == 0)
      (void)exo_actor_send(s->self, dst, EXO_CTL_MSG_HEARTBEAT, beat, sizeof beat);
    judge(s, &nodes[i]);
  }
}

static int health_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                       const struct exo_actor_config *opts, char *err, size_t errlen)
{
  struct health_state *s = state;
  s->self = self;
  if (!(s->cluster = exo_cluster_of_actor(self, err, errlen)))
    return -ENOMEM;
  uint64_t interval = 100, silence = 450;
  if (cfg && opts) {
    static const char *const allowed[] = {"interval_ms", "max_silence_ms", NULL};
    int rc = exo_config_check_options(cfg, opts, allowed, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "interval_ms", interval, 5, 60000, &interval, err,
                                 errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "max_silence_ms", silence, 20, 600000, &silence,
                                 err, errlen);
    if (rc)
      return rc;
  }
  if (silence <= 2 * interval) /* the defaults satisfy it: only a configured pair can fail */
    return exo_config_option_fail(cfg, opts, "max_silence_ms", err, errlen,
                                  "%" PRIu64 " must exceed twice interval_ms (%" PRIu64 "), or "
                                  "one late heartbeat reads as a failure", silence, interval);
  s->interval_ms = (uint32_t)interval;
  s->max_silence_ms = (uint32_t)silence;
  return exo_actor_timer_start(self, BEAT_TIMER, s->interval_ms / 2 ? s->interval_ms / 2 : 1,
                               true);
}

static int health_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)self;
  if (id == BEAT_TIMER)
    tick(state);
  return 0;
}

static int health_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  struct health_state *s = state;
  if (msg->env.type != EXO_CTL_MSG_HEARTBEAT)
    return 0;
  uint32_t from = msg->env.src.node;
  struct peer_fd *p = peer_get(s, from, true);
  if (!p)
    return 0;
  exo_failure_detector_heartbeat(&p->fd, now_us());
  exo_cluster_touch(s->cluster, from);
  /* a suspected node that speaks again is judged at once, not at the next tick */
  struct exo_cluster_node n;
  if (exo_cluster_find_node(s->cluster, from, &n) == 0 && n.health == EXO_PEER_SUSPECT)
    judge(s, &n);
  return 0;
}

const struct exo_actor_kind exo_health_kind = {
  .name = "health",
  .state_size = sizeof(struct health_state),
  .init = health_init,
  .message = health_message,
  .timer = health_timer,
};
