/* runtime/node.c: a node's wiring (loops, actors, supervisor) and its nanomsg transport:
 * one NN_PULL bound on the listen address, watched by loop 0 through NN_RCVFD and drained
 * with NN_DONTWAIT under EXO_NODE_RECV_BUDGET (also by every other loop hosting an actor,
 * one drainer at a time under recv_mu: see node_private.h); one NN_PUSH per peer; HELLO frames map
 * peer addresses to node ids. Must not block a loop (every nn_send is NN_DONTWAIT) and
 * must not trust a frame before exo_envelope_open accepted it. */
#include "common/err.h"
#include "runtime/fault.h"
#include "runtime/node_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/tcp.h>

#define HELLO_FIRST_MS 50u
#define HELLO_MAX_MS 800u

/* ---- peers ---- */

static struct exo_peer *peer_find_addr_locked(struct exo_node *node, const char *addr)
{
  for (size_t i = 0; i < node->n_peers; i++)
    if (strcmp(node->peers[i]->addr, addr) == 0)
      return node->peers[i];
  return NULL;
}

/* Adds (or finds) the peer of addr. Returns it or NULL with *rc set. */
static struct exo_peer *peer_add(struct exo_node *node, const char *addr, int *rc)
{
  pthread_rwlock_wrlock(&node->peers_mu);
  struct exo_peer *p = peer_find_addr_locked(node, addr);
  if (p) {
    pthread_rwlock_unlock(&node->peers_mu);
    return p;
  }
  *rc = -ENOMEM;
  if (node->n_peers == node->cap_peers) {
    size_t cap = node->cap_peers ? node->cap_peers * 2 : 4;
    struct exo_peer **np = realloc(node->peers, cap * sizeof *np);
    if (!np)
      goto fail;
    node->peers = np;
    node->cap_peers = cap;
  }
  p = calloc(1, sizeof *p);
  if (!p)
    goto fail;
  p->sock = -1;
  p->addr = strdup(addr);
  if (!p->addr)
    goto fail;
  p->sock = nn_socket(AF_SP, NN_PUSH);
  /* Hidden states are latency-bound single frames: Nagle would hold each one back
   * waiting for an ACK (measured ~250 us vs ~100 us per tcp round trip). */
  int nodelay = 1;
  if (p->sock >= 0)
    (void)nn_setsockopt(p->sock, NN_TCP, NN_TCP_NODELAY, &nodelay, sizeof nodelay);
  if (p->sock < 0 || nn_connect(p->sock, addr) < 0) {
    *rc = -errno;
    goto fail;
  }
  int maxsz = (int)node->max_frame; /* PUSH never receives; kept symmetrical */
  (void)nn_setsockopt(p->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof maxsz);
  p->hello_backoff_ms = HELLO_FIRST_MS;
  exo_node_auth_peer_init(node, p);
  node->peers[node->n_peers++] = p;
  pthread_rwlock_unlock(&node->peers_mu);
  return p;
fail:
  pthread_rwlock_unlock(&node->peers_mu);
  if (p) {
    if (p->sock >= 0)
      nn_close(p->sock);
    free(p->addr);
    free(p);
  }
  return NULL;
}

int exo_node_add_peer(struct exo_node *node, const char *addr)
{
  if (!addr || (strncmp(addr, "tcp://", 6) && strncmp(addr, "ipc://", 6) &&
                strncmp(addr, "inproc://", 9)))
    return -EINVAL;
  int rc = 0;
  return peer_add(node, addr, &rc) ? 0 : rc;
}

bool exo_node_has_peer(struct exo_node *node, uint32_t node_id)
{
  bool found = false;
  pthread_rwlock_rdlock(&node->peers_mu);
  for (size_t i = 0; i < node->n_peers && !found; i++)
    found = atomic_load(&node->peers[i]->node_id) == node_id;
  pthread_rwlock_unlock(&node->peers_mu);
  return found;
}

size_t exo_node_peer_ids(struct exo_node *node, uint32_t *ids, size_t max)
{
  size_t n = 0;
  pthread_rwlock_rdlock(&node->peers_mu);
  for (size_t i = 0; i < node->n_peers; i++) {
    uint32_t id = atomic_load(&node->peers[i]->node_id);
    if (id == 0)
      continue; /* no HELLO yet */
    if (n < max)
      ids[n] = id;
    n++;
  }
  pthread_rwlock_unlock(&node->peers_mu);
  return n;
}

int exo_node_set_context(struct exo_node *node, void *ctx, void (*ctx_free)(void *ctx))
{
  if (atomic_load(&node->started) || node->ctx)
    return -EBUSY;
  node->ctx = ctx;
  node->ctx_free = ctx_free;
  return 0;
}

void *exo_node_context(struct exo_node *node)
{
  return node->ctx;
}

int exo_node_peer_send(struct exo_node *node, int sock, void *frame)
{
  if (nn_send(sock, &frame, NN_MSG, NN_DONTWAIT) < 0) {
    int e = errno;
    nn_freemsg(frame);
    EXO_COUNT(node, send_failed);
    return e == EAGAIN ? -EAGAIN : -e;
  }
  EXO_COUNT(node, remote_sent);
  return 0;
}

/* Unkeyed: [link seq][check] after the sealed envelope (link.h). The chunk has
 * EXO_FRAME_SLACK spare bytes from its allocation, so this only trims it. */
static int link_seal(struct exo_peer *p, void **frame, size_t total)
{
  uint8_t *f = nn_reallocmsg(*frame, total + EXO_LINK_TRAILER);
  if (!f)
    return -ENOMEM;
  *frame = f;
  uint64_t seq = atomic_fetch_add_explicit(&p->link.send_seq, 1, memory_order_relaxed) + 1;
  exo_link_trailer_write(f, total, seq);
  return 0;
}

int exo_node_send_remote(struct exo_node *node, uint32_t node_id, void *frame, size_t total)
{
  int sock = -1, rc = 0;
  pthread_rwlock_rdlock(&node->peers_mu);
  for (size_t i = 0; i < node->n_peers; i++)
    if (atomic_load_explicit(&node->peers[i]->node_id, memory_order_acquire) == node_id) {
      sock = node->peers[i]->sock;
      if (node->auth) /* keyed cluster: [link seq][MAC] trailer (node_auth.c) */
        rc = exo_node_auth_seal(node, node->peers[i], &frame, total);
      else
        rc = link_seal(node->peers[i], &frame, total);
      break;
    }
  pthread_rwlock_unlock(&node->peers_mu);
  if (rc < 0) {
    nn_freemsg(frame);
    EXO_COUNT(node, send_failed);
    return rc;
  }
  if (sock < 0 || node_id == 0) {
    nn_freemsg(frame);
    EXO_COUNT(node, send_failed);
    return -EHOSTUNREACH;
  }
  size_t wire = total + (node->auth ? 8u + EXO_AUTH_MAC_BYTES : EXO_LINK_TRAILER);
  return exo_fault_send(node, node_id, sock, frame, wire); /* plain send when no faults */
}

/* HELLO payload: [u8 want_reply][u64 session][listen address], link seq 0. Periodic
 * HELLOs want a reply; replies do not, so two nodes never bounce HELLOs forever, and a
 * lost reply is repaired by the sender's next periodic HELLO. session: random per
 * process; a new one tells the receiver its sender restarted (link numbering anew). */
#define HELLO_FIXED 9u
static void hello_send(struct exo_node *node, struct exo_peer *p, bool want_reply)
{
  if (node->auth) { /* keyed HELLO: sessions and challenges (node_auth.c) */
    size_t n;
    void *f = exo_node_auth_hello_frame(node, p, want_reply, &n);
    if (f && nn_send(p->sock, &f, NN_MSG, NN_DONTWAIT) < 0)
      nn_freemsg(f);
    return;
  }
  size_t len = strlen(node->listen);
  size_t body = EXO_ENVELOPE_HEADER_SIZE + HELLO_FIXED + len;
  void *frame = nn_allocmsg(body + EXO_LINK_TRAILER, 0);
  if (!frame)
    return;
  uint8_t *pl = exo_envelope_payload(frame);
  pl[0] = want_reply;
  for (int i = 0; i < 8; i++)
    pl[1 + i] = (uint8_t)(node->link_session >> (8 * i));
  memcpy(pl + HELLO_FIXED, node->listen, len);
  struct exo_envelope env = {.type = EXO_MSG_HELLO, .src = {.node = node->id}};
  if (exo_envelope_seal(&env, frame, body) < 0) {
    nn_freemsg(frame);
    return;
  }
  exo_link_trailer_write(frame, body, 0);
  /* EAGAIN while the connection is still being made: the timer (or the peer's) retries. */
  if (nn_send(p->sock, &frame, NN_MSG, NN_DONTWAIT) < 0)
    nn_freemsg(frame);
}

static void hello_tick(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  struct exo_node *node = arg;
  uint64_t now = exo_supervisor_now_ms();
  pthread_rwlock_rdlock(&node->peers_mu);
  for (size_t i = 0; i < node->n_peers; i++) {
    struct exo_peer *p = node->peers[i];
    if (atomic_load(&p->node_id) != 0 || now < p->next_hello_ms)
      continue;
    hello_send(node, p, true);
    p->next_hello_ms = now + p->hello_backoff_ms;
    if (p->hello_backoff_ms < HELLO_MAX_MS)
      p->hello_backoff_ms *= 2;
  }
  pthread_rwlock_unlock(&node->peers_mu);
}

static void hello_received(struct exo_node *node, const struct exo_envelope *env,
                           const void *payload)
{
  char addr[256];
  const uint8_t *pl = payload;
  if (env->payload_len <= HELLO_FIXED || env->payload_len - HELLO_FIXED >= sizeof addr ||
      pl[0] > 1 || env->src.node == 0 || env->src.node == node->id) {
    EXO_COUNT(node, frames_malformed);
    return;
  }
  uint64_t session = 0;
  for (int i = 7; i >= 0; i--)
    session = session << 8 | pl[1 + i];
  memcpy(addr, pl + HELLO_FIXED, env->payload_len - HELLO_FIXED);
  addr[env->payload_len - HELLO_FIXED] = '\0';
  if (session == 0 || exo_node_add_peer(node, addr) < 0) {
    EXO_COUNT(node, frames_malformed);
    return;
  }
  pthread_rwlock_rdlock(&node->peers_mu);
  struct exo_peer *p = peer_find_addr_locked(node, addr);
  if (p) {
    if (p->link.session != session) { /* first HELLO, or the sender restarted */
      p->link.session = session;
      exo_link_window_reset(&p->link.win);
    }
    atomic_store_explicit(&p->node_id, env->src.node, memory_order_release);
    if (pl[0] && node->listen)
      hello_send(node, p, false);
  }
  pthread_rwlock_unlock(&node->peers_mu);
}

/* ---- receive path (loop 0, and every other loop that hosts an actor; under recv_mu) ---- */

/* Unkeyed: the link window of env's sender (link.h). False: dropped and counted. */
static bool link_accept(struct exo_node *node, const struct exo_envelope *env, uint64_t seq)
{
  enum exo_link_verdict v = EXO_LINK_TOO_OLD;
  bool known = false;
  pthread_rwlock_rdlock(&node->peers_mu);
  for (size_t i = 0; i < node->n_peers; i++) {
    struct exo_peer *p = node->peers[i];
    if (atomic_load_explicit(&p->node_id, memory_order_relaxed) == env->src.node &&
        p->link.session) {
      known = true;
      v = exo_link_window_check(&p->link.win, seq);
      break;
    }
  }
  pthread_rwlock_unlock(&node->peers_mu);
  if (!known) { /* no HELLO from it yet: nothing to number its frames against */
    EXO_COUNT(node, frames_misrouted);
    return false;
  }
  if (v != EXO_LINK_ACCEPT) {
    EXO_COUNT(node, frames_replayed);
    return false;
  }
  return true;
}

/* (recv_mu held) may_dispatch: an actor of the calling loop with an empty mailbox may run
 * the frame at once; false when several loops drain, which must not run a handler under
 * recv_mu (it would stall the other drainers) and must not let a frame overtake one the
 * other drainer queued for the same actor. */
static void route_frame(struct exo_node *node, void *frame, size_t len, bool may_dispatch)
{
  struct exo_envelope env;
  const void *payload;
  char err[160];
  if (node->tap)
    node->tap(node, frame, len, node->tap_arg);
  /* Keyed cluster: MAC and replay window before anything is decoded (node_auth.c). */
  if (node->auth && exo_node_auth_receive(node, frame, &len) < 0) {
    nn_freemsg(frame);
    return;
  }
  uint64_t seq = 0;
  int rc = 0;
  if (!node->auth) { /* unkeyed: link trailer (link.h), checked before the envelope */
    rc = exo_link_trailer_read(frame, len, &len, &seq);
    if (rc < 0)
      snprintf(err, sizeof err, "link trailer: frame too short or check mismatch");
  }
  if (rc == 0)
    rc = exo_envelope_open(frame, len, node->max_frame - EXO_ENVELOPE_HEADER_SIZE, &env,
                           &payload, err, sizeof err);
  if (rc < 0) {
    uint64_t n = atomic_fetch_add(&node->c.frames_malformed, 1);
    if ((n & (n + 1)) == 0) /* 1st, 2nd, 4th, ... : visible, never a flood */
      fprintf(stderr, "exo-actors: node %u: dropped malformed frame (%zu bytes): %s\n",
              node->id, len, err);
    nn_freemsg(frame);
    return;
  }
  if (env.type == EXO_MSG_HELLO) {
    if (node->auth)
      exo_node_auth_hello_received(node, &env, payload);
    else
      hello_received(node, &env, payload);
    nn_freemsg(frame);
    return;
  }
  if (!node->auth && !link_accept(node, &env, seq)) {
    nn_freemsg(frame);
    return;
  }
  struct exo_actor *a = env.dst.node == node->id ? exo_node_lookup(node, env.dst.actor) : NULL;
  if (a && may_dispatch) { /* an actor of this loop with an empty mailbox: no box, no hop */
    struct exo_msg m = {.env = env, .payload = payload};
    if (exo_actor_dispatch_now(a, &m)) {
      nn_freemsg(frame);
      return;
    }
  }
  struct exo_msg_box *box = a ? malloc(sizeof *box) : NULL;
  if (!box) {
    EXO_COUNT(node, frames_misrouted);
    nn_freemsg(frame);
    return;
  }
  /* Flood bound: what this sender has queued and unhandled stays under its budget. */
  struct exo_peer_inflight *in = &node->unknown_inflight;
  pthread_rwlock_rdlock(&node->peers_mu);
  for (size_t i = 0; i < node->n_peers; i++)
    if (atomic_load_explicit(&node->peers[i]->node_id, memory_order_relaxed) == env.src.node) {
      in = &node->peers[i]->inflight;
      break;
    }
  pthread_rwlock_unlock(&node->peers_mu);
  uint32_t frames = atomic_fetch_add_explicit(&in->frames, 1, memory_order_relaxed);
  uint64_t bytes = atomic_fetch_add_explicit(&in->bytes, len, memory_order_relaxed);
  if (frames >= node->peer_max_frames || bytes + len > node->peer_max_bytes) {
    atomic_fetch_sub_explicit(&in->frames, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&in->bytes, len, memory_order_relaxed);
    EXO_COUNT(node, frames_throttled);
    free(box);
    nn_freemsg(frame);
    return;
  }
  box->inflight = in;
  box->inflight_bytes = len;
  box->to = a;
  box->nn_frame = frame;
  box->msg.env = env;
  box->msg.payload = payload;
  (void)exo_actor_deliver(box); /* full mailbox: dropped and counted there */
}

/* Drains up to EXO_NODE_RECV_BUDGET frames on the calling loop. With several drainers,
 * both are woken by one frame: the loser of the trylock waits for the winner's few
 * microseconds of routing (never a handler) rather than spin on the readable fd. */
static void drain(struct exo_node *node)
{
  if (pthread_mutex_trylock(&node->recv_mu) != 0)
    pthread_mutex_lock(&node->recv_mu);
  bool may_dispatch = !node->multi_drain;
  for (unsigned i = 0; i < EXO_NODE_RECV_BUDGET; i++) {
    void *buf = NULL;
    int n = nn_recv(node->pull, &buf, NN_MSG, NN_DONTWAIT);
    if (n < 0)
      break; /* EAGAIN: drained. NN_RCVFD stays readable while frames remain. */
    EXO_COUNT(node, remote_received);
    route_frame(node, buf, (size_t)n, may_dispatch);
  }
  pthread_mutex_unlock(&node->recv_mu);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  drain(arg);
}

static void on_readable_lane(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  drain(((struct exo_node_drain *)arg)->node);
}

/* A loop other than 0 drains when it hosts an actor (a compute loop). */
static bool loop_drains(const struct exo_node *node, uint32_t li)
{
  if (li == 0 || node->pull < 0 || !node->drains)
    return false;
  for (size_t i = 0; i < node->n_actors; i++)
    if (node->actors[i]->loop_index == li)
      return true;
  return false;
}

void exo_node_transport_detach_loop(struct exo_node *node, uint32_t li)
{
  if (li == 0) {
    exo_node_transport_detach(node);
    return;
  }
  if (node->drains && li < node->n_loops && node->drains[li].ev) {
    event_free(node->drains[li].ev);
    node->drains[li].ev = NULL;
  }
}

int exo_node_transport_attach_loop(struct exo_node *node, uint32_t li)
{
  if (li == 0)
    return exo_node_transport_attach(node);
  if (!loop_drains(node, li) || li >= node->n_loops || node->drains[li].ev)
    return 0;
  struct exo_node_drain *d = &node->drains[li];
  d->ev = event_new(exo_loop_base(node->loops[li]), node->rcvfd, EV_READ | EV_PERSIST,
                    on_readable_lane, d);
  if (!d->ev || event_add(d->ev, NULL) < 0) {
    if (d->ev)
      event_free(d->ev);
    d->ev = NULL;
    return -EIO;
  }
  return 0;
}

static int transport_open(struct exo_node *node, char *err, size_t errlen)
{
  node->pull = nn_socket(AF_SP, NN_PULL);
  if (node->pull < 0) {
    int e = errno;
    exo_errf(err, errlen, "nn_socket(NN_PULL): %s", nn_strerror(e));
    return -e;
  }
  int maxsz = node->max_frame > INT32_MAX ? INT32_MAX : (int)node->max_frame;
  int nodelay = 1;
  (void)nn_setsockopt(node->pull, NN_TCP, NN_TCP_NODELAY, &nodelay, sizeof nodelay);
  if (nn_setsockopt(node->pull, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof maxsz) < 0 ||
      nn_bind(node->pull, node->listen) < 0) {
    int e = errno;
    exo_errf(err, errlen, "listen %s: %s", node->listen, nn_strerror(e));
    return -e;
  }
  int rcvfd;
  size_t sz = sizeof rcvfd;
  if (nn_getsockopt(node->pull, NN_SOL_SOCKET, NN_RCVFD, &rcvfd, &sz) < 0) {
    int e = errno;
    exo_errf(err, errlen, "NN_RCVFD: %s", nn_strerror(e));
    return -e;
  }
  node->rcvfd = rcvfd;
  if (exo_node_transport_attach(node) < 0) {
    exo_errf(err, errlen, "libevent: cannot watch the listen socket");
    return -EIO;
  }
  return 0;
}

void exo_node_transport_detach(struct exo_node *node)
{
  exo_fault_detach(node); /* held frames and the fault file poll live on loop 0 too */
  if (node->rcv_ev)
    event_free(node->rcv_ev);
  if (node->hello_ev)
    event_free(node->hello_ev);
  node->rcv_ev = node->hello_ev = NULL;
}

int exo_node_transport_attach(struct exo_node *node)
{
  (void)exo_fault_attach(node);
  if (node->pull < 0)
    return 0;
  struct event_base *base = exo_loop_base(node->loops[0]);
  node->rcv_ev = event_new(base, node->rcvfd, EV_READ | EV_PERSIST, on_readable, node);
  node->hello_ev = event_new(base, -1, EV_PERSIST, hello_tick, node);
  struct timeval tv = {.tv_sec = 0, .tv_usec = HELLO_FIRST_MS * 1000};
  if (!node->rcv_ev || !node->hello_ev || event_add(node->rcv_ev, NULL) < 0 ||
      event_add(node->hello_ev, &tv) < 0)
    return -EIO;
  return 0;
}

/* ---- node ---- */

int exo_node_new_opts(const struct exo_node_opts *opts, struct exo_node **out, char *err,
                      size_t errlen)
{
  *out = NULL;
  if (opts->node_id == 0 || opts->loops == 0 || opts->loops > EXO_CONFIG_MAX_LOOPS) {
    exo_errf(err, errlen, "node: node_id must be non-zero and loops in 1..%u (got id %u, loops %u)",
           EXO_CONFIG_MAX_LOOPS, opts->node_id, opts->loops);
    return -EINVAL;
  }
  if (opts->max_frame && opts->max_frame <= EXO_ENVELOPE_HEADER_SIZE) {
    exo_errf(err, errlen, "node: max_frame %zu is not above the header size %u", opts->max_frame,
           EXO_ENVELOPE_HEADER_SIZE);
    return -EINVAL;
  }
  struct exo_node *node = calloc(1, sizeof *node);
  if (!node)
    return -ENOMEM;
  int rc = -ENOMEM;
  node->id = opts->node_id;
  node->pull = -1;
  node->mailbox_capacity = opts->mailbox_capacity ? opts->mailbox_capacity
                                                  : EXO_NODE_DEFAULT_MAILBOX;
  node->max_frame = opts->max_frame ? opts->max_frame : EXO_NODE_DEFAULT_MAX_FRAME;
  exo_auth_random(&node->link_session, sizeof node->link_session);
  node->link_session |= 1; /* never 0: 0 means "no session yet" */
  node->watchdog_ms = opts->supervision.watchdog_ms ? opts->supervision.watchdog_ms
                                                    : EXO_SUPERVISION_WATCHDOG_MS;
  node->peer_max_frames = opts->peer_max_frames ? opts->peer_max_frames
                                                : EXO_NODE_DEFAULT_PEER_FRAMES;
  node->peer_max_bytes = opts->peer_max_bytes ? opts->peer_max_bytes : EXO_NODE_DEFAULT_PEER_BYTES;
  pthread_rwlock_init(&node->peers_mu, NULL);
  pthread_mutex_init(&node->recv_mu, NULL);
  node->loops = calloc(opts->loops, sizeof *node->loops);
  node->drains = calloc(opts->loops, sizeof *node->drains);
  if (!node->loops || !node->drains)
    goto fail;
  for (uint32_t i = 0; i < opts->loops; i++)
    node->drains[i] = (struct exo_node_drain){.node = node, .loop = i};
  node->n_loops = opts->loops;
  for (uint32_t i = 0; i < opts->loops; i++) {
    char name[16];
    snprintf(name, sizeof name, "n%u-l%u", opts->node_id, i);
    rc = exo_loop_new(name, &node->loops[i]);
    if (rc < 0) {
      exo_errf(err, errlen, "node: loop %u: %s", i, strerror(-rc));
      goto fail;
    }
    exo_loop_set_death_handler(node->loops[i], exo_node_loop_died, node); /* actor.c */
  }
  rc = exo_supervisor_new(&opts->supervision, &node->sup);
  if (rc < 0) {
    exo_errf(err, errlen, "node: supervision: intensity %u out of range 0..1024",
           opts->supervision.intensity);
    goto fail;
  }
  rc = exo_faults_new(node, &node->faults);
  if (rc < 0)
    goto fail;
  {
    const char *env = getenv("EXO_FAULTS"); /* the fault harness's switch (docs/CONFIG.md) */
    const char *spec = env && env[0] ? env : opts->faults;
    char ferr[256];
    rc = spec ? exo_node_set_faults(node, spec, ferr, sizeof ferr) : 0;
    if (rc < 0) {
      exo_errf(err, errlen, "%s%s", spec == env ? "EXO_FAULTS: " : "", ferr);
      goto fail;
    }
  }
  if (opts->listen) {
    node->listen = strdup(opts->listen);
    if (!node->listen) {
      rc = -ENOMEM;
      goto fail;
    }
    rc = exo_node_auth_open(node, opts->key_path, err, errlen);
    if (rc < 0)
      goto fail;
    rc = transport_open(node, err, errlen);
    if (rc < 0)
      goto fail;
  }
  *out = node;
  return 0;
fail:
  exo_node_free(node);
  return rc;
}

int exo_node_spawn(struct exo_node *node, const char *name, const struct exo_actor_kind *kind,
                   uint32_t loop_index, const struct exo_actor_config *opts,
                   struct exo_actor **out, char *err, size_t errlen)
{
  if (out)
    *out = NULL;
  if (atomic_load(&node->started)) {
    exo_errf(err, errlen, "spawn %s: node already started", name);
    return -EBUSY;
  }
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > EXO_CONFIG_MAX_NAME || strchr(name, '/') || !kind || !kind->message ||
      loop_index >= node->n_loops) {
    exo_errf(err, errlen, "spawn %s: bad name, kind without message handler, or loop %u >= %u",
           name ? name : "(null)", loop_index, node->n_loops);
    return -EINVAL;
  }
  uint32_t id = exo_actor_id(name);
  struct exo_actor *other = exo_node_lookup(node, id);
  if (other) {
    exo_errf(err, errlen, "spawn %s: wire id 0x%08x already used by actor %s", name, id,
           other->name);
    return -EEXIST;
  }
  if (node->n_actors == node->cap_actors) {
    size_t cap = node->cap_actors ? node->cap_actors * 2 : 8;
    struct exo_actor **na = realloc(node->actors, 2 * cap * sizeof *na); /* 2x: sorted view */
    if (!na)
      return -ENOMEM;
    node->actors = na;
    node->cap_actors = cap;
  }
  struct exo_actor *a = calloc(1, sizeof *a);
  if (!a)
    return -ENOMEM;
  a->state = calloc(1, kind->state_size ? kind->state_size : 1);
  if (!a->state) {
    free(a);
    return -ENOMEM;
  }
  a->node = node;
  a->kind = kind;
  a->opts = opts;
  a->loop = node->loops[loop_index];
  a->loop_index = loop_index;
  a->index = node->n_actors;
  memcpy(a->name, name, n + 1);
  a->addr.node = node->id;
  a->addr.actor = id;
  node->actors[node->n_actors++] = a;
  if (out)
    *out = a;
  return 0;
}

static int cmp_actor_id(const void *x, const void *y)
{
  uint32_t a = (*(struct exo_actor *const *)x)->addr.actor;
  uint32_t b = (*(struct exo_actor *const *)y)->addr.actor;
  return a < b ? -1 : a > b;
}

int exo_node_start(struct exo_node *node, char *err, size_t errlen)
{
  if (atomic_load(&node->started) || atomic_load(&node->stopping))
    return -EALREADY;
  if (node->n_actors) {
    memcpy(node->actors + node->n_actors, node->actors, node->n_actors * sizeof *node->actors);
    qsort(node->actors + node->n_actors, node->n_actors, sizeof *node->actors, cmp_actor_id);
  }
  atomic_store(&node->started, true);
  for (size_t i = 0; i < node->n_actors; i++) {
    struct exo_actor *a = node->actors[i];
    char ierr[256];
    int rc = exo_actor_run_init(a, ierr, sizeof ierr);
    if (rc < 0) {
      exo_errf(err, errlen, "actor %s (kind %s): init failed: %s", a->name, a->kind->name,
             ierr[0] ? ierr : strerror(-rc));
      return rc;
    }
  }
  for (uint32_t i = 1; i < node->n_loops; i++)
    node->multi_drain |= loop_drains(node, i);
  for (uint32_t i = 1; i < node->n_loops; i++) {
    int rc = exo_node_transport_attach_loop(node, i); /* before the loop runs: its base */
    if (rc < 0) {
      exo_errf(err, errlen, "loop %u: cannot watch the listen socket", i);
      return rc;
    }
  }
  for (uint32_t i = 0; i < node->n_loops; i++) {
    int rc = exo_loop_start(node->loops[i]);
    if (rc < 0) {
      exo_errf(err, errlen, "loop %u: start: %s", i, strerror(-rc));
      return rc;
    }
  }
  int rc = exo_node_watchdog_start(node, node->watchdog_ms); /* actor.c */
  if (rc < 0) {
    exo_errf(err, errlen, "stall watchdog: cannot start its thread: %s", strerror(-rc));
    return rc;
  }
  return 0;
}

static void loop_stop_actors(struct exo_loop *loop, void *arg)
{
  struct exo_node *node = arg;
  for (size_t i = 0; i < node->n_actors; i++) {
    struct exo_actor *a = node->actors[i];
    if (a->loop != loop)
      continue;
    exo_actor_run_stop(a);
    atomic_store(&a->status, EXO_ACTOR_DEAD);
  }
  for (uint32_t i = 0; i < node->n_loops; i++)
    if (loop == node->loops[i])
      exo_node_transport_detach_loop(node, i);
}

static void loop_done(struct exo_loop *loop, void *arg)
{
  (void)loop;
  struct exo_node *node = arg;
  if (atomic_fetch_sub(&node->loops_running, 1) == 1 && node->done)
    node->done(node, node->done_arg);
}

int exo_node_stop(struct exo_node *node, exo_node_done_fn done, void *arg)
{
  bool expect = false;
  if (!atomic_compare_exchange_strong(&node->stopping, &expect, true))
    return -EALREADY;
  node->done = done;
  node->done_arg = arg;
  exo_node_watchdog_stop(node); /* no-op on the watchdog's own thread (free joins it) */
  atomic_store(&node->loops_running, node->n_loops);
  bool started = atomic_load(&node->started);
  for (uint32_t i = 0; i < node->n_loops; i++) {
    if (!node->loops[i]) { /* construction failed midway */
      loop_done(NULL, node);
      continue;
    }
    if (started && exo_loop_post(node->loops[i], loop_stop_actors, node) < 0)
      fprintf(stderr, "exo-actors: node %u: loop %u: cannot queue actor stop\n", node->id, i);
    exo_loop_stop(node->loops[i], loop_done, node);
  }
  return 0;
}

int exo_node_join(struct exo_node *node)
{
  if (!atomic_load(&node->stopping))
    return -EINVAL;
  for (uint32_t i = 0; i < node->n_loops; i++)
    if (node->loops[i])
      exo_loop_join(node->loops[i]);
  return 0;
}

void exo_node_free(struct exo_node *node)
{
  if (!node)
    return;
  if (!atomic_load(&node->stopping))
    exo_node_stop(node, NULL, NULL);
  exo_node_join(node);
  exo_node_watchdog_stop(node);
  exo_fault_detach(node); /* loops joined: its timers on loop 0's base go first */
  /* Loops hold boxes pointing at actors: free them first. A loop never started still
   * owns the node's events on its base. */
  if (node->rcv_ev)
    event_free(node->rcv_ev);
  if (node->hello_ev)
    event_free(node->hello_ev);
  for (uint32_t i = 1; node->drains && i < node->n_loops; i++)
    exo_node_transport_detach_loop(node, i);
  for (size_t i = 0; i < node->n_actors; i++) /* init ran but the loop never did */
    exo_actor_run_stop(node->actors[i]);
  for (uint32_t i = 0; node->loops && i < node->n_loops; i++)
    exo_loop_free(node->loops[i]);
  for (size_t i = 0; i < node->n_actors; i++) {
    free(node->actors[i]->state);
    free(node->actors[i]);
  }
  free(node->actors);
  free(node->loops);
  free(node->drains);
  if (node->pull >= 0)
    nn_close(node->pull);
  for (size_t i = 0; i < node->n_peers; i++) {
    nn_close(node->peers[i]->sock);
    free(node->peers[i]->addr);
    free(node->peers[i]);
  }
  free(node->peers);
  pthread_rwlock_destroy(&node->peers_mu);
  pthread_mutex_destroy(&node->recv_mu);
  if (node->ctx_free)
    node->ctx_free(node->ctx);
  exo_faults_free(node->faults); /* after the loops: their dropped items counted there */
  exo_supervisor_free(node->sup);
  exo_auth_free(node->auth);
  free(node->listen);
  free(node);
}

int exo_node_new(const struct exo_config *cfg, const struct exo_actor_kind *const *kinds,
                 struct exo_node **out, char *err, size_t errlen)
{
  *out = NULL;
  if (cfg->node_id_auto || cfg->node_id == 0) {
    exo_errf(err, errlen, "%s: node id: `auto` needs the discovery layer; give a number",
           cfg->path ? cfg->path : "config");
    return -EINVAL;
  }
  if (cfg->key_path) { /* a key file error names the config line that points at it */
    struct exo_auth *key = NULL;
    char kerr[512];
    int krc = exo_auth_load(cfg->key_path, &key, kerr, sizeof kerr);
    exo_auth_free(key);
    if (krc < 0) {
      exo_errf(err, errlen, "%s:%d:%d: key: %s", cfg->path, cfg->key_pos.line, cfg->key_pos.col,
               kerr);
      return krc;
    }
  }
  struct exo_node_opts o = {.node_id = cfg->node_id, .listen = cfg->listen,
                            .loops = cfg->loops, .supervision = cfg->supervision,
                            .key_path = cfg->key_path, .faults = cfg->faults};
  struct exo_node *node;
  int rc = exo_node_new_opts(&o, &node, err, errlen);
  if (rc < 0)
    return rc;
  node->cfg = cfg;
  for (size_t i = 0; i < cfg->n_peers; i++) {
    rc = exo_node_add_peer(node, cfg->peers[i]);
    if (rc < 0) {
      exo_errf(err, errlen, "%s: peers[%zu] %s: %s", cfg->path, i, cfg->peers[i], strerror(-rc));
      goto fail;
    }
  }
  for (size_t i = 0; i < cfg->n_actors; i++) {
    const struct exo_actor_config *ac = &cfg->actors[i];
    const struct exo_actor_kind *kind = NULL;
    for (size_t k = 0; kinds && kinds[k]; k++)
      if (strcmp(kinds[k]->name, ac->kind) == 0)
        kind = kinds[k];
    if (!kind) {
      exo_errf(err, errlen, "%s:%d:%d: actors[%zu].kind: unknown kind \"%s\"", cfg->path,
             ac->kind_pos.line, ac->kind_pos.col, i, ac->kind);
      rc = -EINVAL;
      goto fail;
    }
    rc = exo_node_spawn(node, ac->name, kind, ac->loop, ac, NULL, err, errlen);
    if (rc < 0)
      goto fail;
  }
  *out = node;
  return 0;
fail:
  exo_node_free(node);
  return rc;
}

void exo_node_set_tap(struct exo_node *node, exo_node_tap_fn fn, void *arg)
{
  node->tap = fn;
  node->tap_arg = arg;
}

void exo_node_set_escalate(struct exo_node *node, exo_node_escalate_fn fn, void *arg)
{
  node->escalate = fn;
  node->escalate_arg = arg;
}

uint32_t exo_node_id(const struct exo_node *node)
{
  return node->id;
}

struct exo_loop *exo_node_loop(struct exo_node *node, uint32_t index)
{
  return index < node->n_loops ? node->loops[index] : NULL;
}

uint32_t exo_node_loop_count(const struct exo_node *node)
{
  return node->n_loops;
}

struct exo_actor *exo_node_find(struct exo_node *node, const char *name)
{
  struct exo_actor *a = exo_node_lookup(node, exo_actor_id(name));
  return a && strcmp(a->name, name) == 0 ? a : NULL;
}

void exo_node_stats(const struct exo_node *node, struct exo_node_stats *out)
{
  struct exo_node_counters *c = (struct exo_node_counters *)&node->c;
#define LD(f) out->f = atomic_load_explicit(&c->f, memory_order_relaxed)
  LD(local_sent);
  LD(remote_sent);
  LD(remote_received);
  LD(delivered);
  LD(mailbox_full);
  LD(send_failed);
  LD(frames_malformed);
  LD(frames_misrouted);
  LD(dropped_dead);
  LD(restarts);
  LD(escalations);
  LD(handler_failures);
  LD(frames_auth_failed);
  LD(frames_replayed);
  LD(frames_throttled);
  LD(loop_deaths);
  LD(loop_stalls);
#undef LD
}
