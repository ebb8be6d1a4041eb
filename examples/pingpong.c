/* examples/pingpong.c: the `pingpong` actor kind and a driver that runs one node from a
 * config and prints round trips per second.
 *   pingpong examples/pingpong.yaml                  # two actors, two loops, one process
 *   pingpong examples/pingpong-b.yaml & pingpong examples/pingpong-a.yaml   # over tcp
 * Protocol: PING{u64 n} -> peer; the peer answers PING{n} with PONG{n}; the starting actor
 * (count > 0) sends the next PING on each PONG, then DONE to its peer. Options: peer (actor
 * name), peer_node (default: this node), count (0: only answer). */
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "runtime/node.h"

#define MSG_PING (EXO_MSG_APP_BASE + 1)
#define MSG_PONG (EXO_MSG_APP_BASE + 2)
#define MSG_DONE (EXO_MSG_APP_BASE + 3)
#define TIMER_WAIT_PEER 1

static sem_t finished; /* posted by an actor when this process may exit */

struct pp_state {
  struct exo_addr peer;
  uint64_t count, n;
  struct timespec t0;
};

static int pp_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                   const struct exo_actor_config *opts, char *err, size_t errlen)
{
  struct pp_state *s = state;
  const char *allowed[] = {"peer", "peer_node", "count", NULL};
  const char *peer;
  uint64_t peer_node;
  uint32_t self_node = exo_actor_addr(self).node;
  if (!opts)
    return -EINVAL;
  int rc;
  if ((rc = exo_config_check_options(cfg, opts, allowed, err, errlen)) < 0 ||
      (rc = exo_config_option_str(cfg, opts, "peer", NULL, &peer, err, errlen)) < 0 ||
      (rc = exo_config_option_u64(cfg, opts, "peer_node", self_node, 1, UINT32_MAX, &peer_node,
                                  err, errlen)) < 0 ||
      (rc = exo_config_option_u64(cfg, opts, "count", 0, 0, UINT64_MAX, &s->count, err,
                                  errlen)) < 0)
    return rc;
  if (!peer) {
    snprintf(err, errlen, "%s: actor %s: option peer is required", cfg->path, opts->name);
    return -EINVAL;
  }
  s->peer.node = (uint32_t)peer_node;
  s->peer.actor = exo_actor_id(peer);
  /* A remote peer is reachable once its HELLO arrived: poll for it before starting. */
  return s->count ? exo_actor_timer_start(self, TIMER_WAIT_PEER, 10, false) : 0;
}

static int pp_timer(struct exo_actor *self, void *state, uint32_t id)
{
  struct pp_state *s = state;
  (void)id;
  if (s->peer.node != exo_actor_addr(self).node &&
      !exo_node_has_peer(exo_actor_node(self), s->peer.node))
    return exo_actor_timer_start(self, TIMER_WAIT_PEER, 10, false);
  clock_gettime(CLOCK_MONOTONIC, &s->t0);
  return exo_actor_send(self, s->peer, MSG_PING, &s->n, sizeof s->n);
}

static int pp_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  struct pp_state *s = state;
  switch (msg->env.type) {
  case MSG_PING:
    return exo_actor_send(self, msg->env.src, MSG_PONG, msg->payload, msg->env.payload_len);
  case MSG_PONG:
    if (++s->n < s->count)
      return exo_actor_send(self, s->peer, MSG_PING, &s->n, sizeof s->n);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - s->t0.tv_sec) + (double)(t1.tv_nsec - s->t0.tv_nsec) / 1e9;
    printf("%s: %llu round trips in %.3f s: %.0f round trips/s, %.1f us each\n",
           exo_actor_name(self), (unsigned long long)s->n, secs, (double)s->n / secs,
           secs * 1e6 / (double)s->n);
    fflush(stdout);
    exo_actor_send(self, s->peer, MSG_DONE, NULL, 0); /* best effort */
    sem_post(&finished);
    return 0;
  case MSG_DONE:
    sem_post(&finished);
    return 0;
  default:
    return -EPROTO;
  }
}

static const struct exo_actor_kind pingpong_kind = {
    .name = "pingpong", .state_size = sizeof(struct pp_state), .init = pp_init,
    .message = pp_message, .timer = pp_timer};

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: %s CONFIG.yaml\n", argv[0]);
    return 2;
  }
  const char *names[] = {"pingpong", NULL};
  const struct exo_actor_kind *kinds[] = {&pingpong_kind, NULL};
  struct exo_config *cfg;
  struct exo_node *node;
  char err[512];
  if (exo_config_load(argv[1], names, &cfg, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  sem_init(&finished, 0, 0);
  if (exo_node_new(cfg, kinds, &node, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    exo_config_free(cfg);
    return 1;
  }
  if (exo_node_start(node, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    exo_node_free(node);
    exo_config_free(cfg);
    return 1;
  }
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 120;
  int rc = sem_timedwait(&finished, &deadline);
  if (rc < 0)
    fprintf(stderr, "pingpong: no result within 120 s (is the other node running?)\n");
  exo_node_free(node);
  exo_config_free(cfg);
  sem_destroy(&finished);
  return rc < 0 ? 1 : 0;
}
