/* runtime/actor.c: mailboxes, message dispatch, timers and supervision of actors (the
 * lifecycle in actor.h), including loops that die (restart on a fresh thread) and loops
 * that stop turning (the stall watchdog). Must not touch nanomsg sockets (node.c owns
 * them) nor block.
 * Mailbox design: an actor's mailbox is its share of its loop's wait-free queue, bounded
 * by an atomic count (`queued`) reserved before the enqueue. One queue per loop instead
 * of one per actor keeps the wake-up path to a single eventfd per loop and FIFO order
 * per sender; the bound is still per actor. */
#include "runtime/fault.h"
#include "runtime/log.h"
#include "runtime/node_private.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <nanomsg/nn.h>

static void actor_fail(struct exo_actor *a, int rc, const char *where);
static void escalate(struct exo_node *node, const char *reason);

const char *exo_actor_name(const struct exo_actor *a)
{
  return a->name;
}

struct exo_addr exo_actor_addr(const struct exo_actor *a)
{
  return a->addr;
}

struct exo_node *exo_actor_node(struct exo_actor *a)
{
  return a->node;
}

struct exo_loop *exo_actor_loop(struct exo_actor *a)
{
  return a->loop;
}

uint64_t exo_actor_restarts(const struct exo_actor *a)
{
  return atomic_load(&((struct exo_actor *)a)->restarts);
}

bool exo_actor_running(const struct exo_actor *a)
{
  return atomic_load(&((struct exo_actor *)a)->status) == EXO_ACTOR_RUNNING;
}

uint32_t exo_actor_queued(const struct exo_actor *a)
{
  return atomic_load_explicit(&((struct exo_actor *)a)->queued, memory_order_relaxed);
}

int exo_addr_parse(const char *s, uint32_t local_node, struct exo_addr *out)
{
  if (!s || !*s)
    return -EINVAL;
  const char *slash = strchr(s, '/');
  const char *name = s;
  uint32_t node = local_node;
  if (slash) {
    if (slash == s)
      return -EINVAL;
    uint64_t v = 0;
    for (const char *p = s; p < slash; p++) {
      if (*p < '0' || *p > '9')
        return -EINVAL;
      v = v * 10 + (uint64_t)(*p - '0');
      if (v > UINT32_MAX)
        return -EINVAL;
    }
    node = (uint32_t)v;
    name = slash + 1;
  }
  size_t n = strlen(name);
  if (n == 0 || n > EXO_CONFIG_MAX_NAME || strchr(name, '/'))
    return -EINVAL;
  out->node = node;
  out->actor = exo_actor_id(name);
  return 0;
}

/* ---- mailbox ---- */

void exo_msg_box_free(struct exo_msg_box *box)
{
  if (box->inflight) { /* a received frame leaves its sender's flood budget */
    atomic_fetch_sub_explicit(&box->inflight->frames, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&box->inflight->bytes, box->inflight_bytes, memory_order_relaxed);
  }
  if (box->nn_frame)
    nn_freemsg(box->nn_frame);
  free(box);
}

static void after_handler(struct exo_actor *a, int rc, const char *where)
{
  if (a->exit_requested) {
    exo_actor_run_stop(a);
    atomic_store(&a->status, EXO_ACTOR_DEAD);
    return;
  }
  if (rc < 0)
    actor_fail(a, rc, where);
}

static void box_run(struct exo_loop *loop, struct exo_loop_item *item)
{
  (void)loop;
  struct exo_msg_box *box = caa_container_of(item, struct exo_msg_box, item);
  struct exo_actor *a = box->to;
  atomic_fetch_sub_explicit(&a->queued, 1, memory_order_relaxed);
  if (atomic_load(&a->status) != EXO_ACTOR_RUNNING) {
    EXO_COUNT(a->node, dropped_dead);
    exo_msg_box_free(box);
    return;
  }
  int rc;
  if (exo_fault_handler_fails(a->node, a->name)) { /* fail= (runtime/fault.h) */
    rc = -EIO;
  } else {
    exo_loop_busy_enter(a->loop, a->name);
    rc = a->kind->message(a, a->state, &box->msg);
    exo_loop_busy_leave(a->loop);
  }
  EXO_COUNT(a->node, delivered);
  exo_msg_box_free(box);
  after_handler(a, rc, "message");
}

bool exo_actor_dispatch_now(struct exo_actor *a, const struct exo_msg *msg)
{
  /* Only on its own loop and with nothing of its queued: running it here is then exactly
   * what the queue would do next, minus the box, the queue and a loop turn. */
  if (!exo_loop_is_current(a->loop) ||
      atomic_load_explicit(&a->queued, memory_order_relaxed) != 0 ||
      atomic_load(&a->status) != EXO_ACTOR_RUNNING)
    return false;
  int rc;
  if (exo_fault_handler_fails(a->node, a->name)) {
    rc = -EIO;
  } else {
    exo_loop_busy_enter(a->loop, a->name);
    rc = a->kind->message(a, a->state, msg);
    exo_loop_busy_leave(a->loop);
  }
  EXO_COUNT(a->node, delivered);
  after_handler(a, rc, "message");
  return true;
}

static void box_drop(struct exo_loop_item *item)
{
  struct exo_msg_box *box = caa_container_of(item, struct exo_msg_box, item);
  atomic_fetch_sub_explicit(&box->to->queued, 1, memory_order_relaxed);
  exo_msg_box_free(box);
}

int exo_actor_deliver(struct exo_msg_box *box)
{
  struct exo_actor *a = box->to;
  struct exo_node *node = a->node;
  uint32_t before = atomic_fetch_add_explicit(&a->queued, 1, memory_order_relaxed);
  if (before >= node->mailbox_capacity) {
    atomic_fetch_sub_explicit(&a->queued, 1, memory_order_relaxed);
    EXO_COUNT(node, mailbox_full);
    exo_msg_box_free(box);
    return -ENOBUFS;
  }
  box->item.run = box_run;
  box->item.drop = box_drop;
  int rc = exo_loop_enqueue(a->loop, &box->item);
  if (rc < 0) {
    atomic_fetch_sub_explicit(&a->queued, 1, memory_order_relaxed);
    EXO_COUNT(node, send_failed);
    exo_msg_box_free(box);
  }
  return rc;
}

/* ---- sending ---- */

/* Common path: env complete (src, dst, ...); payload either copied (copy != NULL) or a
 * chunk from exo_msg_alloc (*owned, taken). */
static int send_common(struct exo_node *node, struct exo_envelope *env, const void *copy,
                       void **owned, size_t len)
{
  int rc;
  if (len > node->max_frame - EXO_ENVELOPE_HEADER_SIZE) {
    rc = -EMSGSIZE;
    goto fail;
  }
  env->payload_len = (uint32_t)len;
  if (env->dst.node == node->id) {
    struct exo_actor *a = exo_node_lookup(node, env->dst.actor);
    if (!a) {
      rc = -ENOENT;
      goto fail;
    }
    struct exo_msg_box *box;
    if (owned) {
      box = malloc(sizeof *box);
      if (!box) {
        rc = -ENOMEM;
        goto fail;
      }
      box->nn_frame = (uint8_t *)*owned - EXO_ENVELOPE_HEADER_SIZE;
      box->msg.payload = *owned;
      *owned = NULL;
    } else {
      box = malloc(sizeof *box + len);
      if (!box) {
        rc = -ENOMEM;
        goto fail;
      }
      box->nn_frame = NULL;
      if (len && copy)
        memcpy(box + 1, copy, len);
      box->msg.payload = box + 1;
    }
    box->to = a;
    box->inflight = NULL;
    box->msg.env = *env;
    EXO_COUNT(node, local_sent);
    return exo_actor_deliver(box);
  }
  /* Remote: one nanomsg chunk [header][payload], sealed, sent zero-copy. */
  void *frame;
  if (owned) {
    frame = (uint8_t *)*owned - EXO_ENVELOPE_HEADER_SIZE;
    *owned = NULL;
  } else {
    frame = nn_allocmsg(EXO_ENVELOPE_HEADER_SIZE + len + EXO_FRAME_SLACK, 0);
    if (!frame) {
      rc = -ENOMEM;
      goto fail;
    }
    if (len && copy)
      memcpy(exo_envelope_payload(frame), copy, len);
  }
  rc = exo_envelope_seal(env, frame, EXO_ENVELOPE_HEADER_SIZE + len);
  if (rc < 0) {
    nn_freemsg(frame);
    EXO_COUNT(node, send_failed);
    return rc;
  }
  return exo_node_send_remote(node, env->dst.node, frame, EXO_ENVELOPE_HEADER_SIZE + len);
fail:
  if (owned && *owned) {
    exo_msg_free(*owned);
    *owned = NULL;
  }
  EXO_COUNT(node, send_failed);
  return rc;
}

static int send_from(struct exo_node *node, struct exo_addr src, struct exo_addr dst,
                     uint16_t type, const void *payload, size_t len)
{
  struct exo_envelope env = {.type = type, .payload_kind = EXO_PAYLOAD_BYTES, .src = src,
                             .dst = dst};
  return send_common(node, &env, payload, NULL, len);
}

int exo_actor_send(struct exo_actor *self, struct exo_addr dst, uint16_t type,
                   const void *payload, size_t len)
{
  return send_from(self->node, self->addr, dst, type, payload, len);
}

int exo_actor_send_to(struct exo_actor *self, const char *dst, uint16_t type,
                      const void *payload, size_t len)
{
  struct exo_addr a;
  if (exo_addr_parse(dst, self->node->id, &a) < 0) {
    EXO_COUNT(self->node, send_failed);
    return -EINVAL;
  }
  return exo_actor_send(self, a, type, payload, len);
}

int exo_actor_send_buf(struct exo_actor *self, const struct exo_envelope *env, void **payload,
                       size_t len)
{
  struct exo_envelope e = *env;
  e.src = self->addr;
  return send_common(self->node, &e, NULL, payload, len);
}

int exo_node_send(struct exo_node *node, struct exo_addr dst, uint16_t type,
                  const void *payload, size_t len)
{
  struct exo_addr src = {.node = node->id, .actor = 0};
  return send_from(node, src, dst, type, payload, len);
}

int exo_node_send_buf(struct exo_node *node, const struct exo_envelope *env, void **payload,
                      size_t len)
{
  struct exo_envelope e = *env;
  e.src.node = node->id;
  e.src.actor = 0;
  return send_common(node, &e, NULL, payload, len);
}

void *exo_msg_alloc(size_t len)
{
  if (len > UINT32_MAX)
    return NULL;
  uint8_t *frame = nn_allocmsg(EXO_ENVELOPE_HEADER_SIZE + len + EXO_FRAME_SLACK, 0);
  return frame ? frame + EXO_ENVELOPE_HEADER_SIZE : NULL;
}

void exo_msg_free(void *payload)
{
  if (payload)
    nn_freemsg((uint8_t *)payload - EXO_ENVELOPE_HEADER_SIZE);
}

/* ---- timers ---- */

static void timer_fire(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  struct exo_actor_timer *t = arg;
  struct exo_actor *a = t->actor;
  if (atomic_load(&a->status) != EXO_ACTOR_RUNNING)
    return;
  struct exo_loop *loop = a->loop;
  exo_loop_busy_enter(loop, a->name);
  int rc = a->kind->timer ? a->kind->timer(a, a->state, t->id) : 0;
  exo_loop_busy_leave(loop);
  /* t may be freed from here on (a restart cancels timers): do not touch it. */
  after_handler(a, rc, "timer");
}

int exo_actor_timer_start(struct exo_actor *self, uint32_t id, uint32_t ms, bool repeat)
{
  struct exo_actor_timer *t = self->timers;
  while (t && t->id != id)
    t = t->next;
  if (t) {
    event_free(t->ev);
  } else {
    t = calloc(1, sizeof *t);
    if (!t)
      return -ENOMEM;
    t->actor = self;
    t->id = id;
    t->next = self->timers;
    self->timers = t;
  }
  t->ev = event_new(exo_loop_base(self->loop), -1, repeat ? EV_PERSIST : 0, timer_fire, t);
  struct timeval tv = {.tv_sec = ms / 1000u, .tv_usec = (ms % 1000u) * 1000};
  if (!t->ev || event_add(t->ev, &tv) != 0) {
    exo_actor_timer_stop(self, id);
    return -EIO;
  }
  return 0;
}

int exo_actor_timer_stop(struct exo_actor *self, uint32_t id)
{
  for (struct exo_actor_timer **pp = &self->timers; *pp; pp = &(*pp)->next) {
    struct exo_actor_timer *t = *pp;
    if (t->id == id) {
      *pp = t->next;
      if (t->ev)
        event_free(t->ev);
      free(t);
      return 0;
    }
  }
  return -ENOENT;
}

void exo_actor_exit(struct exo_actor *self)
{
  self->exit_requested = true;
}

/* ---- lifecycle and supervision ---- */

int exo_actor_run_init(struct exo_actor *a, char *err, size_t errlen)
{
  if (err && errlen)
    err[0] = '\0';
  a->exit_requested = false;
  int rc = 0;
  bool on_loop = exo_loop_is_current(a->loop); /* a restart, not the node's start */
  if (on_loop)
    exo_loop_busy_enter(a->loop, a->name);
  if (a->kind->init)
    rc = a->kind->init(a, a->state, a->node->cfg, a->opts, err, errlen);
  if (on_loop)
    exo_loop_busy_leave(a->loop);
  if (rc < 0) {
    /* init failed: release whatever timers it armed; stop is not owed. */
    while (a->timers)
      exo_actor_timer_stop(a, a->timers->id);
    memset(a->state, 0, a->kind->state_size);
    atomic_store(&a->status, EXO_ACTOR_FAILED);
    return rc;
  }
  a->inited = true;
  atomic_store(&a->status, EXO_ACTOR_RUNNING);
  return 0;
}

void exo_actor_run_stop(struct exo_actor *a)
{
  while (a->timers)
    exo_actor_timer_stop(a, a->timers->id);
  if (a->inited && a->kind->stop)
    a->kind->stop(a, a->state);
  a->inited = false;
  memset(a->state, 0, a->kind->state_size);
}

static void actor_restart(struct exo_actor *a)
{
  if (atomic_load(&a->status) == EXO_ACTOR_DEAD || atomic_load(&a->node->stopping))
    return;
  exo_actor_run_stop(a);
  atomic_fetch_add(&a->restarts, 1);
  EXO_COUNT(a->node, restarts);
  char err[256];
  int rc = exo_actor_run_init(a, err, sizeof err);
  if (rc < 0)
    actor_fail(a, rc, err[0] ? err : "init");
}

static void restart_posted(struct exo_loop *loop, void *arg)
{
  (void)loop;
  actor_restart(arg);
}

static void default_escalate(struct exo_node *node, const char *reason, void *arg)
{
  (void)node;
  (void)arg;
  fprintf(stderr, "exo-actors: %s\n", reason);
  fflush(stderr);
  _Exit(EXO_EXIT_ESCALATED);
}

static void actor_fail(struct exo_actor *a, int rc, const char *where)
{
  struct exo_node *node = a->node;
  atomic_store(&a->status, EXO_ACTOR_FAILED);
  EXO_COUNT(node, handler_failures);
  uint32_t n = 0;
  enum exo_supervisor_decision d =
      exo_supervisor_failure(node->sup, exo_supervisor_now_ms(), &n);
  const struct exo_supervision_config *sc = exo_supervisor_config(node->sup);
  if (d == EXO_SUPERVISOR_ESCALATE) {
    char reason[512];
    snprintf(reason, sizeof reason,
             "node %u: actor %s failed (%s: %s); restart intensity %u per %u ms exceeded "
             "(%u restarts in window), escalating: node exits",
             node->id, a->name, where, strerror(rc < 0 ? -rc : rc), sc->intensity,
             sc->period_ms, n);
    escalate(node, reason);
    return;
  }
  switch (sc->strategy) {
  case EXO_SUPERVISION_ONE_FOR_ONE:
    actor_restart(a); /* on a's loop already, after its handler returned */
    return;
  case EXO_SUPERVISION_ONE_FOR_ALL:
  case EXO_SUPERVISION_REST_FOR_ONE:
    for (size_t i = 0; i < node->n_actors; i++) {
      struct exo_actor *b = node->actors[i];
      if (sc->strategy == EXO_SUPERVISION_REST_FOR_ONE && b->index < a->index)
        continue;
      /* On each actor's own loop, after what is already queued there. A loop that is
       * stopping refuses: the node is going away anyway. */
      (void)exo_loop_post(b->loop, restart_posted, b);
    }
    return;
  }
}

/* ---- loops that die ----
 * A dead loop counts as one failure in the supervisor's window. Its actors' incarnations
 * end (their timers live on the dead base), the loop gets a fresh event_base and thread,
 * and they are re-initialised there before it turns; one_for_all / rest_for_one restart
 * the others on their own loops as for a handler failure. */

static void escalate(struct exo_node *node, const char *reason)
{
  EXO_COUNT(node, escalations);
  (node->escalate ? node->escalate : default_escalate)(node, reason, node->escalate_arg);
}

int exo_node_loop_died(struct exo_loop *loop, int why, void *arg)
{
  struct exo_node *node = arg;
  if (atomic_load(&node->stopping))
    return -ECANCELED;
  uint32_t li = 0;
  while (li < node->n_loops && node->loops[li] != loop)
    li++;
  EXO_COUNT(node, loop_deaths);
  const char *cause = why == -EIO      ? "event_base_loop failed"
                      : why == -EINTR ? "its thread exited"
                                      : "its event loop ended without a stop";
  uint32_t n = 0;
  enum exo_supervisor_decision d = exo_supervisor_failure(node->sup, exo_supervisor_now_ms(), &n);
  const struct exo_supervision_config *sc = exo_supervisor_config(node->sup);
  char nname[16];
  snprintf(nname, sizeof nname, "%u", node->id);
  size_t first = node->n_actors; /* lowest spawn index on this loop (rest_for_one) */
  for (size_t i = 0; i < node->n_actors; i++) {
    struct exo_actor *a = node->actors[i];
    if (a->loop != loop)
      continue;
    if (first == node->n_actors)
      first = i;
    exo_actor_run_stop(a); /* on the dying thread: still this loop's thread */
    if (atomic_load(&a->status) != EXO_ACTOR_DEAD)
      atomic_store(&a->status, EXO_ACTOR_FAILED);
  }
  exo_node_transport_detach_loop(node, li); /* node.c: loop 0's transport, others' lanes */
  char reason[512];
  if (d == EXO_SUPERVISOR_ESCALATE) {
    snprintf(reason, sizeof reason,
             "node %u: loop %s died (%s); restart intensity %u per %u ms exceeded (%u restarts "
             "in window), escalating: node exits",
             node->id, exo_loop_name(loop), cause, sc->intensity, sc->period_ms, n);
    escalate(node, reason);
    return -ECANCELED;
  }
  exo_log(EXO_LOG_WARN, nname, NULL,
          "loop %s died (%s); restarting its actors on a fresh loop thread (%u restarts in "
          "window)",
          exo_loop_name(loop), cause, n);
  int rc = exo_loop_renew_base(loop);
  if (rc == 0)
    rc = exo_node_transport_attach_loop(node, li);
  if (rc < 0) {
    snprintf(reason, sizeof reason, "node %u: loop %s died (%s) and cannot be renewed: %s",
             node->id, exo_loop_name(loop), cause, strerror(-rc));
    escalate(node, reason);
    return rc;
  }
  for (size_t i = 0; i < node->n_actors; i++) {
    struct exo_actor *a = node->actors[i];
    if (atomic_load(&a->status) == EXO_ACTOR_DEAD)
      continue;
    if (a->loop != loop) {
      if (sc->strategy == EXO_SUPERVISION_ONE_FOR_ALL ||
          (sc->strategy == EXO_SUPERVISION_REST_FOR_ONE && a->index >= first))
        (void)exo_loop_post(a->loop, restart_posted, a);
      continue;
    }
    atomic_fetch_add(&a->restarts, 1);
    EXO_COUNT(node, restarts);
    char err[256];
    int irc = exo_actor_run_init(a, err, sizeof err);
    if (irc < 0)
      actor_fail(a, irc, err[0] ? err : "init");
  }
  return 0;
}

/* ---- stall watchdog ----
 * One thread per node samples every loop's busy bracket (exo_loop_stalled) every quarter
 * of the limit. A handler cannot be interrupted and its thread cannot be reclaimed, so a
 * stall is not restartable: it is reported with the actor's name and escalates (default:
 * the node exits, and the cluster fails over as for a dead node; docs/DESIGN.md). */

struct exo_node_watchdog {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC */
  bool quit;
  uint32_t limit_ms;
};

static void *watchdog_main(void *arg)
{
  struct exo_node *node = arg;
  struct exo_node_watchdog *wd = node->wd;
  uint32_t tick = wd->limit_ms / 4 ? wd->limit_ms / 4 : 1;
  pthread_mutex_lock(&wd->mu);
  while (!wd->quit) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)tick * 1000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(&wd->cv, &wd->mu, &ts);
    if (wd->quit)
      break;
    uint64_t now = exo_supervisor_now_ms();
    for (uint32_t i = 0; i < node->n_loops; i++) {
      const char *label = NULL;
      uint64_t for_ms = 0;
      if (!exo_loop_stalled(node->loops[i], now, wd->limit_ms, &label, &for_ms))
        continue;
      EXO_COUNT(node, loop_stalls);
      char reason[512];
      snprintf(reason, sizeof reason,
               "node %u: loop %s stuck: actor %s's handler has run for %" PRIu64
               " ms (watchdog %u ms); a running handler cannot be stopped, escalating: "
               "node exits",
               node->id, exo_loop_name(node->loops[i]), label ? label : "?", for_ms,
               wd->limit_ms);
      pthread_mutex_unlock(&wd->mu); /* the callback may stop the node */
      escalate(node, reason);
      pthread_mutex_lock(&wd->mu);
    }
  }
  pthread_mutex_unlock(&wd->mu);
  return NULL;
}

int exo_node_watchdog_start(struct exo_node *node, uint32_t limit_ms)
{
  struct exo_node_watchdog *wd = calloc(1, sizeof *wd);
  if (!wd)
    return -ENOMEM;
  wd->limit_ms = limit_ms;
  pthread_mutex_init(&wd->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&wd->cv, &ca);
  pthread_condattr_destroy(&ca);
  node->wd = wd;
  int rc = pthread_create(&wd->thread, NULL, watchdog_main, node);
  if (rc != 0) {
    node->wd = NULL;
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
    free(wd);
    return -rc;
  }
  return 0;
}

void exo_node_watchdog_stop(struct exo_node *node)
{
  struct exo_node_watchdog *wd = node->wd;
  if (!wd || pthread_equal(pthread_self(), wd->thread))
    return; /* an escalation callback stopping the node: exo_node_free joins later */
  pthread_mutex_lock(&wd->mu);
  wd->quit = true;
  pthread_cond_signal(&wd->cv);
  pthread_mutex_unlock(&wd->mu);
  pthread_join(wd->thread, NULL);
  pthread_cond_destroy(&wd->cv);
  pthread_mutex_destroy(&wd->mu);
  free(wd);
  node->wd = NULL;
}

struct exo_actor *exo_node_lookup(struct exo_node *node, uint32_t actor_id)
{
  /* Sorted by addr.actor once started; linear before (spawn time only). */
  size_t lo = 0, hi = node->n_actors;
  if (!atomic_load_explicit(&node->started, memory_order_relaxed)) {
    for (size_t i = 0; i < node->n_actors; i++)
      if (node->actors[i]->addr.actor == actor_id)
        return node->actors[i];
    return NULL;
  }
  struct exo_actor **by_id = node->actors + node->n_actors; /* second half: sorted view */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    uint32_t v = by_id[mid]->addr.actor;
    if (v == actor_id)
      return by_id[mid];
    if (v < actor_id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}
