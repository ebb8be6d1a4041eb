/* actors/client.c: the blocking cluster client (client.h). The calling thread prepares a
 * job under the mutex and hands it to the actor with a local message; the actor sends,
 * collects replies into the job and signals when it is done. A job the caller gave up on
 * (timeout) is inactive: late replies are dropped (checked under the mutex). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/client.h"
#include "actors/control.h"
#include "actors/local_cluster.h"
#include "common/err.h"
#include "runtime/node.h"

#define CLIENT_ACTOR_NAME "client"
#define MSG_KICK 560u /* local only: start the prepared job */
#define EXO_CLIENT_MAX_PEERS 64

enum job_kind { JOB_NONE, JOB_GEN, JOB_PART };

struct exo_client {
  struct exo_node *node;
  struct exo_addr self;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* the job (under mu) */
  enum job_kind kind;
  bool active, done;
  int rc;
  char err[512];
  uint64_t next_req, req;
  uint32_t target;
  void *payload; /* encoded SUBMIT / SET_PARTITION, sent by the actor */
  size_t payload_len;
  void (*on_event)(void *arg, const struct exo_req_event *e);
  void *arg;
  struct exo_client_result res;
  size_t cap;
  uint64_t epoch;
  int redirects;
  /* nodes connected so far (the caller's thread only) */
  struct {
    char addr[128];
    uint32_t id;
  } known[EXO_CLIENT_MAX_PEERS];
  size_t n_known;
};

struct client_state {
  struct exo_client *c;
};

void exo_client_result_fini(struct exo_client_result *r)
{
  if (!r)
    return;
  free(r->ids);
  free(r->events);
  memset(r, 0, sizeof *r);
}

static void job_done(struct exo_client *c, int rc)
{
  if (rc && !c->rc)
    c->rc = rc;
  c->done = true;
  pthread_cond_broadcast(&c->cv);
}

/* (actor, under mu) */
static void send_job(struct exo_actor *self, struct exo_client *c)
{
  uint16_t type = c->kind == JOB_GEN ? EXO_REQ_MSG_SUBMIT : EXO_CTL_MSG_SET_PARTITION;
  uint32_t actor = exo_actor_id(c->kind == JOB_GEN ? EXO_ORIGIN_ACTOR_NAME
                                                   : EXO_PARTITIONER_ACTOR_NAME);
  void *p = exo_msg_alloc(c->payload_len);
  if (!p) {
    job_done(c, -ENOMEM);
    return;
  }
  memcpy(p, c->payload, c->payload_len);
  struct exo_envelope env = {.type = type, .dst = {c->target, actor}, .request_id = c->req};
  int rc = exo_actor_send_buf(self, &env, &p, c->payload_len);
  if (rc) {
    snprintf(c->err, sizeof c->err, "send to node %u: %s", c->target, strerror(-rc));
    job_done(c, rc);
  }
}

static void on_event(struct exo_client *c, const struct exo_msg *msg)
{
  if (c->kind != JOB_GEN || msg->env.request_id != c->req)
    return;
  struct exo_req_event e;
  char err[256];
  if (exo_req_event_decode(msg->payload, msg->env.payload_len, &e, err, sizeof err)) {
    snprintf(c->err, sizeof c->err, "node %u sent a bad EVENT: %s", msg->env.src.node, err);
    job_done(c, -EPROTO);
    return;
  }
  if (e.flags & EXO_REQ_EV_TOKEN) {
    if (c->res.n_ids == c->cap) {
      size_t cap = c->cap * 2 + 64;
      int32_t *ids = realloc(c->res.ids, cap * sizeof *ids);
      if (ids)
        c->res.ids = ids;
      struct exo_req_event *ev = realloc(c->res.events, cap * sizeof *ev);
      if (ev)
        c->res.events = ev;
      if (!ids || !ev) {
        job_done(c, -ENOMEM);
        return;
      }
      c->cap = cap;
    }
    c->res.ids[c->res.n_ids] = e.token;
    c->res.events[c->res.n_ids++] = e;
  }
  if (c->on_event)
    c->on_event(c->arg, &e);
  if (e.flags & EXO_REQ_EV_FINAL) {
    c->res.finish = e.finish;
    c->res.attempts = e.attempts;
    if (e.finish == EXO_REQ_FINISH_ERROR) {
      snprintf(c->err, sizeof c->err, "%s", e.msg);
      job_done(c, e.token < 0 ? e.token : -EIO);
    } else {
      job_done(c, 0);
    }
  }
}

static void on_partition_done(struct exo_actor *self, struct exo_client *c,
                              const struct exo_msg *msg)
{
  if (c->kind != JOB_PART || msg->env.payload_len < 16)
    return;
  const uint8_t *p = msg->payload;
  int status = (int)exo_gen_get_u32(p);
  uint64_t epoch = exo_gen_get_u64(p + 8);
  size_t tl = msg->env.payload_len - 16;
  if (status == -EXDEV && c->redirects++ < 2 && epoch && epoch <= UINT32_MAX &&
      exo_node_has_peer(c->node, (uint32_t)epoch)) {
    c->target = (uint32_t)epoch; /* the coordinator, named by the node we asked */
    send_job(self, c);
    return;
  }
  if (status) {
    snprintf(c->err, sizeof c->err, "node %u: %.*s", msg->env.src.node, (int)(tl > 400 ? 400 : tl),
             (const char *)p + 16);
    job_done(c, status);
    return;
  }
  c->epoch = epoch;
  job_done(c, 0);
}

static int client_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  struct client_state *s = state;
  if (msg->env.type == MSG_KICK) {
    if (msg->env.src.node != exo_actor_addr(self).node ||
        msg->env.payload_len != sizeof(struct exo_client *))
      return 0; /* never from the network */
    memcpy(&s->c, msg->payload, sizeof s->c);
  }
  struct exo_client *c = s->c;
  if (!c)
    return 0;
  pthread_mutex_lock(&c->mu);
  if (c->active && !c->done) {
    if (msg->env.type == MSG_KICK)
      send_job(self, c);
    else if (msg->env.type == EXO_REQ_MSG_EVENT)
      on_event(c, msg);
    else if (msg->env.type == EXO_CTL_MSG_PARTITION_DONE)
      on_partition_done(self, c, msg);
  }
  pthread_mutex_unlock(&c->mu);
  return 0;
}

static const struct exo_actor_kind client_kind = {
  .name = "client",
  .state_size = sizeof(struct client_state),
  .message = client_message,
};

int exo_client_new(const char *listen, struct exo_client **out, char *err, size_t errlen)
{
  return exo_client_new_keyed(listen, NULL, out, err, errlen);
}

int exo_client_new_keyed(const char *listen, const char *key_path, struct exo_client **out,
                         char *err, size_t errlen)
{
  char addr[64];
  if (!listen) {
    int port, rc = exo_local_cluster_pick_port(&port);
    if (rc) {
      exo_errf(err, errlen, "no free port: %s", strerror(-rc));
      return rc;
    }
    snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", port);
    listen = addr;
  }
  struct exo_client *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (sodium_init() < 0) {
    free(c);
    return -EIO;
  }
  uint32_t id = 0;
  randombytes_buf(&id, sizeof id);
  id |= 0x80000000u;
  c->next_req = 1;
  struct exo_node_opts opts = {.node_id = id, .listen = listen, .loops = 1,
                               .supervision = {.intensity = 0, .period_ms = 1000},
                               .key_path = key_path};
  struct exo_actor *a;
  int rc = exo_node_new_opts(&opts, &c->node, err, errlen);
  if (rc)
    goto fail;
  if ((rc = exo_node_spawn(c->node, CLIENT_ACTOR_NAME, &client_kind, 0, NULL, &a, err, errlen)))
    goto fail;
  c->self = exo_actor_addr(a);
  if ((rc = exo_node_start(c->node, err, errlen)))
    goto fail;
  *out = c;
  return 0;
fail:
  exo_client_free(c);
  return rc;
}

void exo_client_free(struct exo_client *c)
{
  if (!c)
    return;
  exo_node_free(c->node);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  exo_client_result_fini(&c->res);
  exo_msg_free(c->payload);
  free(c);
}

int exo_client_connect(struct exo_client *c, const char *addr, int timeout_ms,
                       uint32_t *node_id, char *err, size_t errlen)
{
  for (size_t i = 0; i < c->n_known; i++)
    if (!strcmp(c->known[i].addr, addr)) {
      *node_id = c->known[i].id;
      return 0;
    }
  if (c->n_known == EXO_CLIENT_MAX_PEERS || strlen(addr) >= sizeof c->known[0].addr) {
    exo_errf(err, errlen, "connect %s: too many nodes or address too long", addr);
    return -EINVAL;
  }
  /* the node at addr is the peer id this client has not resolved yet (connects are one at
   * a time, and a retry after a timeout finds the HELLO that came late) */
  int rc = exo_node_add_peer(c->node, addr);
  if (rc) {
    exo_errf(err, errlen, "connect %s: %s", addr, strerror(-rc));
    return rc;
  }
  struct timespec nap = {0, 2000000};
  for (int waited = 0; waited <= timeout_ms; waited += 2) {
    uint32_t now[EXO_CLIENT_MAX_PEERS + 1];
    size_t n = exo_node_peer_ids(c->node, now, EXO_CLIENT_MAX_PEERS + 1);
    for (size_t i = 0; i < n && i <= EXO_CLIENT_MAX_PEERS; i++) {
      bool known = false;
      for (size_t j = 0; j < c->n_known; j++)
        known |= c->known[j].id == now[i];
      if (!known) {
        snprintf(c->known[c->n_known].addr, sizeof c->known[0].addr, "%s", addr);
        c->known[c->n_known++].id = now[i];
        *node_id = now[i];
        return 0;
      }
    }
    nanosleep(&nap, NULL);
  }
  exo_errf(err, errlen, "no answer from %s within %d ms (is `exo-actors run` serving there?)",
           addr, timeout_ms);
  return -ETIMEDOUT;
}

/* Hands the prepared job (under mu, active) to the actor and waits; returns its rc. */
static int run_job(struct exo_client *c, int timeout_ms, char *err, size_t errlen)
{
  struct exo_client *ptr = c;
  int rc = exo_node_send(c->node, c->self, MSG_KICK, &ptr, sizeof ptr);
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&c->mu);
  if (rc) {
    snprintf(c->err, sizeof c->err, "cannot reach the client actor: %s", strerror(-rc));
    c->rc = rc;
    c->done = true;
  }
  while (!c->done) {
    if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT && !c->done) {
      c->rc = -ETIMEDOUT;
      snprintf(c->err, sizeof c->err, "no answer within %d ms", timeout_ms);
      break;
    }
  }
  c->active = false;
  rc = c->rc;
  if (rc)
    exo_errf(err, errlen, "%s", c->err);
  exo_msg_free(c->payload);
  c->payload = NULL;
  pthread_mutex_unlock(&c->mu);
  return rc;
}

static void job_reset(struct exo_client *c, enum job_kind kind, uint32_t target, void *payload,
                      size_t len)
{
  c->kind = kind;
  c->active = true;
  c->done = false;
  c->rc = 0;
  c->err[0] = '\0';
  c->target = target;
  c->req = c->next_req++;
  c->payload = payload;
  c->payload_len = len;
  c->redirects = 0;
}

int exo_client_generate(struct exo_client *c, uint32_t node_id, const struct exo_req_submit *req,
                        void (*on_event_fn)(void *arg, const struct exo_req_event *e), void *arg,
                        int timeout_ms, struct exo_client_result *res, char *err,
                        size_t errlen)
{
  memset(res, 0, sizeof *res);
  void *buf;
  size_t len;
  int rc = exo_req_submit_encode(req, &buf, &len, err, errlen);
  if (rc)
    return rc;
  pthread_mutex_lock(&c->mu);
  exo_client_result_fini(&c->res);
  c->cap = 0;
  job_reset(c, JOB_GEN, node_id, buf, len);
  c->on_event = on_event_fn;
  c->arg = arg;
  uint64_t req_id = c->req;
  pthread_mutex_unlock(&c->mu);
  rc = run_job(c, timeout_ms, err, errlen);
  if (rc == -ETIMEDOUT) { /* tell the origin, so the cluster stops working on it */
    uint8_t reason[4] = {0};
    struct exo_envelope env = {.type = EXO_REQ_MSG_CANCEL,
                               .dst = {node_id, exo_actor_id(EXO_ORIGIN_ACTOR_NAME)},
                               .request_id = req_id};
    void *p = exo_msg_alloc(sizeof reason);
    if (p) {
      memcpy(p, reason, sizeof reason);
      (void)exo_node_send_buf(c->node, &env, &p, sizeof reason);
    }
  }
  pthread_mutex_lock(&c->mu);
  *res = c->res;
  memset(&c->res, 0, sizeof c->res);
  c->on_event = NULL;
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int exo_client_set_partition(struct exo_client *c, uint32_t node_id,
                             const struct exo_gen_range *ranges, size_t n, int timeout_ms,
                             uint64_t *epoch, char *err, size_t errlen)
{
  if (n > EXO_GEN_MAX_RANGES) {
    exo_errf(err, errlen, "set_partition: %zu ranges (max %u)", n, EXO_GEN_MAX_RANGES);
    return -EINVAL;
  }
  size_t len = 4 + 16 * n;
  uint8_t *p = exo_msg_alloc(len);
  if (!p)
    return -ENOMEM;
  exo_gen_put_u32(p, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    exo_gen_put_u32(p + 4 + 16 * i, ranges[i].node);
    exo_gen_put_u32(p + 8 + 16 * i, ranges[i].actor);
    exo_gen_put_u32(p + 12 + 16 * i, ranges[i].a);
    exo_gen_put_u32(p + 16 + 16 * i, ranges[i].b);
  }
  pthread_mutex_lock(&c->mu);
  job_reset(c, JOB_PART, node_id, p, len);
  pthread_mutex_unlock(&c->mu);
  int rc = run_job(c, timeout_ms, err, errlen);
  if (!rc && epoch) {
    pthread_mutex_lock(&c->mu);
    *epoch = c->epoch;
    pthread_mutex_unlock(&c->mu);
  }
  return rc;
}
