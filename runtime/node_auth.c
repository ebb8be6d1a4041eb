/* runtime/node_auth.c: the keyed link layer of a node (docs/PROTOCOL.md, "Authenticated
 * clusters"). With a cluster key every inter-node frame ends in a trailer
 * [u64 link seq][tag]; the tag is checked before anything but the frame's type and
 * source node is read, then the link sequence number against the replay window.
 * Must not trust a byte before its tag verified, and must not block (loop 0).
 *
 * Tags: HELLO: 32-byte keyed BLAKE2b under the cluster key. Other frames: 16-byte
 * XChaCha20-Poly1305 tag (empty message, frame as associated data, seq as nonce) under a
 * subkey of (sender session, receiver session) (auth.h), so a frame captured before
 * either side restarted never verifies again.
 * Sessions: each process draws a random 16-byte session id at start. A peer's session is adopted only from a
 * HELLO that echoes the challenge we sent it (fresh), so an old HELLO cannot roll a
 * session back and reopen a replay window:
 *   A->B HELLO{sA, cA, echo 0, want}  B->A HELLO{sB, cB, echo cA, want}  (A adopts sB)
 *   A->B HELLO{sA, cA', echo cB}                                          (B adopts sA) */
#include "common/err.h"
#include "runtime/log.h"
#include "runtime/node_private.h"
#include "runtime/supervisor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <nanomsg/nn.h>
#include <sodium.h>

#define TRAILER (8u + EXO_AUTH_LINK_TAG_BYTES)           /* data frames */
#define HELLO_TRAILER (8u + EXO_AUTH_MAC_BYTES)          /* HELLO */
_Static_assert(TRAILER <= EXO_FRAME_SLACK, "keyed trailer must fit the frame slack");
#define SESS EXO_AUTH_SESSION_BYTES
/* keyed HELLO payload: [u8 want_reply][session][challenge][echo][listen address] */
#define HELLO_FIXED (1u + 3u * SESS)
#define LOG_INTERVAL_MS 1000u

static uint64_t le64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t le32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool is_zero(const uint8_t *p, size_t n)
{
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

int exo_node_auth_open(struct exo_node *node, const char *key_path, char *err, size_t errlen)
{
  char name[16];
  snprintf(name, sizeof name, "%u", node->id);
  if (!key_path) {
    if (node->listen)
      exo_log(EXO_LOG_WARN, name, NULL,
              "cluster is unauthenticated (no key configured): anyone who reaches %s can "
              "join and send frames (docs/SECURITY.md)",
              node->listen);
    return 0;
  }
  int rc = exo_auth_load(key_path, &node->auth, err, errlen);
  if (rc < 0)
    return rc;
  exo_auth_random(node->session, sizeof node->session);
  char fp[17];
  exo_auth_fingerprint(node->auth, fp);
  exo_log(EXO_LOG_INFO, name, NULL, "cluster key %s (fingerprint %s): frames authenticated",
          key_path, fp);
  return 0;
}

void exo_node_auth_peer_init(struct exo_node *node, struct exo_peer *p)
{
  if (node->auth)
    exo_auth_random(p->la.my_challenge, SESS);
}

/* Rate-limited (1 line per second per node, with the count suppressed meanwhile). */
static void auth_drop(struct exo_node *node, _Atomic uint64_t *counter, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void auth_drop(struct exo_node *node, _Atomic uint64_t *counter, const char *fmt, ...)
{
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
  uint64_t now = exo_supervisor_now_ms();
  if (now < node->auth_log_next_ms) {
    node->auth_log_suppressed++;
    return;
  }
  char msg[256], name[16];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(name, sizeof name, "%u", node->id);
  exo_log(EXO_LOG_WARN, name, NULL, "dropped frame: %s (%" PRIu64 " similar drops suppressed)",
          msg, node->auth_log_suppressed);
  node->auth_log_suppressed = 0;
  node->auth_log_next_ms = now + LOG_INTERVAL_MS;
}

void *exo_node_auth_hello_frame(struct exo_node *node, struct exo_peer *p, bool want_reply,
                                size_t *len)
{
  size_t alen = strlen(node->listen);
  size_t plen = HELLO_FIXED + alen;
  size_t total = EXO_ENVELOPE_HEADER_SIZE + plen + HELLO_TRAILER;
  uint8_t *frame = nn_allocmsg(total, 0);
  if (!frame)
    return NULL;
  uint8_t *pl = exo_envelope_payload(frame);
  pl[0] = want_reply;
  memcpy(pl + 1, node->session, SESS);
  memcpy(pl + 1 + SESS, p->la.my_challenge, SESS);
  memcpy(pl + 1 + 2 * SESS, p->la.their_challenge, SESS);
  memcpy(pl + HELLO_FIXED, node->listen, alen);
  struct exo_envelope env = {.type = EXO_MSG_HELLO, .src = {.node = node->id}};
  if (exo_envelope_seal(&env, frame, EXO_ENVELOPE_HEADER_SIZE + plen) < 0) {
    nn_freemsg(frame);
    return NULL;
  }
  size_t body = total - EXO_AUTH_MAC_BYTES;
  put_le64(frame + body - 8, 0); /* HELLOs are fresh by challenge, not by sequence */
  struct exo_auth_part part = {frame, body};
  exo_auth_mac(node->auth, EXO_AUTH_DOMAIN_HELLO, &part, 1, frame + body);
  *len = total;
  return frame;
}

int exo_node_auth_seal(struct exo_node *node, struct exo_peer *p, void **frame, size_t total)
{
  (void)node; /* the link's subkeys live in p */
  if (!p->la.confirmed)
    return -EHOSTUNREACH;
  /* Chunks from exo_msg_alloc/send carry EXO_FRAME_SLACK spare bytes (>= TRAILER), so
   * this trims in place; a chunk without slack would be copied by nanomsg. */
  uint8_t *f = nn_reallocmsg(*frame, total + TRAILER);
  if (!f)
    return -ENOMEM;
  *frame = f;
  uint64_t seq = atomic_fetch_add_explicit(&p->la.send_seq, 1, memory_order_relaxed) + 1;
  put_le64(f + total, seq);
  exo_auth_link_tag(p->la.send_key, seq, f, total, f + total + 8);
  return 0;
}

/* The confirmed peer of node_id, or NULL. peers_mu held. */
static struct exo_peer *peer_by_id_locked(struct exo_node *node, uint32_t node_id)
{
  for (size_t i = 0; i < node->n_peers; i++) {
    struct exo_peer *p = node->peers[i];
    if (p->la.confirmed && atomic_load_explicit(&p->node_id, memory_order_relaxed) == node_id)
      return p;
  }
  return NULL;
}

/* Replay window: accepts seq once, within EXO_LINK_WINDOW of the highest seen (the same
 * window unkeyed links use, so reordering faults cost keyed links nothing more). (loop 0) */
static bool window_accept(struct exo_link_auth *la, uint64_t seq)
{
  return exo_link_window_check(&la->recv_win, seq) == EXO_LINK_ACCEPT;
}

int exo_node_auth_receive(struct exo_node *node, void *frame, size_t *len)
{
  const uint8_t *f = frame;
  size_t n = *len;
  if (n < EXO_ENVELOPE_HEADER_SIZE + TRAILER) {
    auth_drop(node, &node->c.frames_auth_failed, "%zu bytes from an unknown sender: too short "
                                                 "for a header and MAC trailer (no key?)", n);
    return -EBADMSG;
  }
  /* Only these two fixed-offset fields are read before the MAC is checked. */
  uint16_t type = (uint16_t)(f[4] | f[5] << 8);
  uint32_t src = le32(f + 16);
  if (type == EXO_MSG_HELLO) {
    if (n < EXO_ENVELOPE_HEADER_SIZE + HELLO_TRAILER) {
      auth_drop(node, &node->c.frames_auth_failed, "HELLO claiming node %u: %zu bytes, too short "
                                                   "for a keyed HELLO (no key?)", src, n);
      return -EBADMSG;
    }
    size_t body = n - EXO_AUTH_MAC_BYTES;
    struct exo_auth_part part = {f, body};
    if (exo_auth_verify(node->auth, EXO_AUTH_DOMAIN_HELLO, &part, 1, f + body) < 0) {
      /* the address is only what the unverified payload claims */
      char addr[80] = "?";
      size_t off = EXO_ENVELOPE_HEADER_SIZE + HELLO_FIXED;
      if (body - 8 > off) {
        size_t al = body - 8 - off < sizeof addr - 1 ? body - 8 - off : sizeof addr - 1;
        for (size_t i = 0; i < al; i++)
          addr[i] = f[off + i] >= 0x20 && f[off + i] < 0x7f ? (char)f[off + i] : '?';
        addr[al] = '\0';
      }
      auth_drop(node, &node->c.frames_auth_failed,
                "HELLO claiming node %u at %s: bad MAC (different or no cluster key)", src,
                addr);
      return -EBADMSG;
    }
    *len = n - HELLO_TRAILER;
    return 0;
  }
  size_t body = n - TRAILER; /* header + payload */
  pthread_rwlock_rdlock(&node->peers_mu);
  struct exo_peer *p = peer_by_id_locked(node, src);
  int rc = 0;
  if (!p) {
    pthread_rwlock_unlock(&node->peers_mu);
    auth_drop(node, &node->c.frames_auth_failed,
              "type %u claiming node %u: no authenticated session with that node", type, src);
    return -EBADMSG;
  }
  uint64_t seq = le64(f + body);
  if (exo_auth_link_verify(p->la.recv_key, seq, f, body, f + body + 8) < 0) {
    rc = -EBADMSG;
  } else if (!window_accept(&p->la, seq)) {
    rc = -EALREADY;
  }
  char addr[80];
  snprintf(addr, sizeof addr, "%s", p->addr);
  pthread_rwlock_unlock(&node->peers_mu);
  if (rc == -EBADMSG) {
    auth_drop(node, &node->c.frames_auth_failed, "type %u from node %u (%s): bad MAC", type, src,
              addr);
    return rc;
  }
  if (rc == -EALREADY) {
    auth_drop(node, &node->c.frames_replayed,
              "type %u from node %u (%s): link seq %" PRIu64 " replayed or too old", type, src,
              addr, seq);
    return rc;
  }
  *len = n - TRAILER;
  return 0;
}

void exo_node_auth_hello_received(struct exo_node *node, const struct exo_envelope *env,
                                  const void *payload)
{
  const uint8_t *pl = payload;
  char addr[256];
  size_t n = env->payload_len;
  if (n <= HELLO_FIXED || n - HELLO_FIXED >= sizeof addr || pl[0] > 1 || env->src.node == 0 ||
      env->src.node == node->id) {
    EXO_COUNT(node, frames_malformed);
    return;
  }
  memcpy(addr, pl + HELLO_FIXED, n - HELLO_FIXED);
  addr[n - HELLO_FIXED] = '\0';
  if (memchr(addr, '\0', n - HELLO_FIXED) || exo_node_add_peer(node, addr) < 0) {
    EXO_COUNT(node, frames_malformed);
    return;
  }
  const uint8_t *sess = pl + 1, *chal = pl + 1 + SESS, *echo = pl + 1 + 2 * SESS;
  pthread_rwlock_wrlock(&node->peers_mu);
  struct exo_peer *p = NULL;
  for (size_t i = 0; i < node->n_peers && !p; i++)
    if (strcmp(node->peers[i]->addr, addr) == 0)
      p = node->peers[i];
  if (!p) {
    pthread_rwlock_unlock(&node->peers_mu);
    return;
  }
  memcpy(p->la.their_challenge, chal, SESS);
  if (!is_zero(echo, SESS) && sodium_memcmp(echo, p->la.my_challenge, SESS) == 0) {
    /* Fresh: the sender saw our current challenge, so sess is its live session. */
    if (!p->la.confirmed || memcmp(p->la.peer_session, sess, SESS) != 0) {
      memcpy(p->la.peer_session, sess, SESS);
      exo_link_window_reset(&p->la.recv_win); /* a new session numbers from 1 again */
      exo_auth_link_key(node->auth, node->session, sess, p->la.send_key);
      exo_auth_link_key(node->auth, sess, node->session, p->la.recv_key);
    }
    p->la.confirmed = true;
    exo_auth_random(p->la.my_challenge, SESS); /* each challenge proves freshness once */
    /* One node id, one live session: an entry of the same node under another address
     * (it restarted elsewhere) must not keep verifying with the old session. */
    for (size_t i = 0; i < node->n_peers; i++) {
      struct exo_peer *q = node->peers[i];
      if (q != p && atomic_load_explicit(&q->node_id, memory_order_relaxed) == env->src.node) {
        q->la.confirmed = false;
        atomic_store_explicit(&q->node_id, 0, memory_order_release);
      }
    }
    atomic_store_explicit(&p->node_id, env->src.node, memory_order_release);
  }
  /* We still need a fresh HELLO when we hold no session for it or it announces another. */
  bool need = !p->la.confirmed || memcmp(p->la.peer_session, sess, SESS) != 0;
  if (pl[0] || need) {
    size_t len;
    void *frame = exo_node_auth_hello_frame(node, p, need, &len);
    if (frame && nn_send(p->sock, &frame, NN_MSG, NN_DONTWAIT) < 0)
      nn_freemsg(frame);
  }
  pthread_rwlock_unlock(&node->peers_mu);
}

size_t exo_node_stats_prometheus(const struct exo_node_stats *st, char *buf, size_t cap)
{
  static const struct {
    const char *name, *help;
    size_t off;
  } rows[] = {
      {"auth_failed", "Frames dropped: missing or wrong MAC, or no session (keyed cluster).",
       offsetof(struct exo_node_stats, frames_auth_failed)},
      {"replayed", "Frames dropped: link sequence number already seen or too old.",
       offsetof(struct exo_node_stats, frames_replayed)},
      {"throttled", "Frames dropped: sender over its in-flight frames/bytes budget.",
       offsetof(struct exo_node_stats, frames_throttled)},
      {"malformed", "Frames dropped: bad magic, CRC, length or version.",
       offsetof(struct exo_node_stats, frames_malformed)},
      {"misrouted", "Frames dropped: other node id or unknown actor.",
       offsetof(struct exo_node_stats, frames_misrouted)},
  };
  size_t n = 0;
  char none[1]; /* where the text goes once buf is full (or absent): only lengths count */
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    uint64_t v;
    memcpy(&v, (const char *)st + rows[i].off, sizeof v);
    bool room = buf && n < cap;
    int w = snprintf(room ? buf + n : none, room ? cap - n : sizeof none,
                     "# HELP exo_node_frames_%s_total %s\n# TYPE exo_node_frames_%s_total counter\n"
                     "exo_node_frames_%s_total %" PRIu64 "\n",
                     rows[i].name, rows[i].help, rows[i].name, rows[i].name, v);
    if (w > 0)
      n += (size_t)w;
  }
  return n;
}

const struct exo_auth *exo_node_auth(const struct exo_node *node)
{
  return node->auth;
}
