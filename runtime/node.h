/* runtime/node.h: a node: its loops, its actors, its nanomsg endpoint and peers, and the
 * supervisor over its actors. `exo-actors run CONFIG` is exo_node_new + start + wait.
 * Must not know actor kinds beyond the table it is given, nor models.
 *
 *   exo_node_new[_opts] --spawn/add_peer--> (configured) --exo_node_start--> RUNNING
 *   RUNNING --exo_node_stop(done)--> each loop: actors' stop handlers, then loop exits;
 *   done(node) runs on the last loop to finish --exo_node_join--> STOPPED --exo_node_free
 *
 * Transport between nodes: each node binds one NN_PULL on its listen address (fan-in
 * from any number of peers on one socket, no request/reply coupling) and keeps one NN_PUSH
 * per peer address (sends never block: NN_DONTWAIT, -EAGAIN counted). Peers learn each
 * other's node ids by HELLO frames (resent every 50-800 ms until answered). Loop 0 watches
 * NN_RCVFD and drains at most EXO_NODE_RECV_BUDGET frames per turn.
 * Invariants: the actor set is fixed at start (spawn before start); every frame is opened
 * (checked) before it is trusted; a malformed frame is dropped and counted. */
#ifndef EXO_RUNTIME_NODE_H
#define EXO_RUNTIME_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/actor.h"
#include "runtime/config.h"

#define EXO_NODE_RECV_BUDGET 64u
#define EXO_NODE_DEFAULT_MAILBOX 4096u
/* NN_RCVMAXSIZE we set: nanomsg's 1 MiB default silently drops bigger frames on tcp/ipc.
 * Hidden states of big models are a few MiB; 64 MiB bounds a hostile peer's allocation. */
#define EXO_NODE_DEFAULT_MAX_FRAME (64u << 20)
/* Per sender node: frames/bytes received but not yet handled; more are dropped and
 * counted (frames_throttled), so one flooding peer cannot fill every mailbox or memory. */
#define EXO_NODE_DEFAULT_PEER_FRAMES 1024u
#define EXO_NODE_DEFAULT_PEER_BYTES (256ull << 20)
#define EXO_EXIT_ESCALATED 70 /* exit status of the default escalation (EX_SOFTWARE) */

struct exo_node;

/* Called when supervision gives up (on the failing actor's loop thread, or on the stall
 * watchdog's thread for a stuck handler: it may call exo_node_stop, not free). The default
 * prints reason to stderr and _exit(EXO_EXIT_ESCALATED)s the process. */
typedef void (*exo_node_escalate_fn)(struct exo_node *node, const char *reason, void *arg);
typedef void (*exo_node_done_fn)(struct exo_node *node, void *arg);

struct exo_node_opts {
  uint32_t node_id;          /* non-zero */
  const char *listen;        /* NULL: no inter-node endpoint; else tcp://, ipc:// or inproc:// */
  uint32_t loops;            /* >= 1 */
  uint32_t mailbox_capacity; /* per actor; 0: EXO_NODE_DEFAULT_MAILBOX */
  size_t max_frame;          /* bytes incl. header; 0: EXO_NODE_DEFAULT_MAX_FRAME */
  struct exo_supervision_config supervision; /* intensity 0 escalates at once */
  const char *key_path;      /* cluster key file (runtime/auth.h); NULL: unauthenticated */
  uint32_t peer_max_frames;  /* 0: EXO_NODE_DEFAULT_PEER_FRAMES */
  uint64_t peer_max_bytes;   /* 0: EXO_NODE_DEFAULT_PEER_BYTES */
  const char *faults;        /* transport fault spec (runtime/fault.h); NULL: none. The
                              * environment's EXO_FAULTS, when set, replaces it */
};

struct exo_node_stats {
  uint64_t local_sent, remote_sent, remote_received, delivered;
  uint64_t mailbox_full;     /* sends refused / frames dropped: mailbox at capacity */
  uint64_t send_failed;      /* no route, socket would block, too big */
  uint64_t frames_malformed; /* dropped: bad magic/CRC/length/version... */
  uint64_t frames_misrouted; /* dropped: other node id or unknown actor */
  uint64_t dropped_dead;     /* dropped: destination FAILED or DEAD */
  uint64_t restarts, escalations, handler_failures;
  uint64_t frames_auth_failed; /* dropped: missing/wrong MAC, no session (keyed cluster) */
  uint64_t frames_replayed;    /* dropped: link sequence number already seen or too old */
  uint64_t frames_throttled;   /* dropped: sender over its in-flight frames/bytes bound */
  uint64_t loop_deaths;        /* loops that died (restarted on a fresh thread unless escalated) */
  uint64_t loop_stalls;        /* handlers past the watchdog (each escalated) */
};

/* Test and diagnostic hook: sees each received frame (len bytes) before any check, on
 * loop 0; must not keep the pointer. */
typedef void (*exo_node_tap_fn)(struct exo_node *node, const void *frame, size_t len, void *arg);

/* From a config: opts from cfg (node_id, listen, loops, supervision), one PUSH per
 * cfg->peers, and every cfg->actors[i] spawned with the kind of that name from kinds
 * (NULL-terminated). cfg must outlive the node. Returns 0, -EINVAL (err says which actor
 * or kind), -ENOMEM, -EADDRINUSE / other -errno of nn_bind. */
int exo_node_new(const struct exo_config *cfg, const struct exo_actor_kind *const *kinds,
                 struct exo_node **out, char *err, size_t errlen);
/* Without a config (tests, benchmarks). */
int exo_node_new_opts(const struct exo_node_opts *opts, struct exo_node **out, char *err,
                      size_t errlen);

/* Adds an actor named name (unique, <= EXO_CONFIG_MAX_NAME chars) of kind on loop
 * loop_index, before start. opts: its config entry or NULL. *out (may be NULL) gets it.
 * Returns 0, -EBUSY (started), -EEXIST (name or wire id taken), -EINVAL, -ENOMEM. */
int exo_node_spawn(struct exo_node *node, const char *name, const struct exo_actor_kind *kind,
                   uint32_t loop_index, const struct exo_actor_config *opts,
                   struct exo_actor **out, char *err, size_t errlen);

/* Connects a PUSH socket to a peer's listen address (any time). Returns 0, -EINVAL,
 * -ENOMEM, -errno of nn_connect. */
int exo_node_add_peer(struct exo_node *node, const char *addr);

/* Runs each actor's init (in spawn order, on the caller's thread before the loops start)
 * and starts the loops. A failing init fails the start with its err message (node stays
 * startable only after free). Returns 0, -EALREADY, or init's/pthread's error. */
int exo_node_start(struct exo_node *node, char *err, size_t errlen);

/* Asynchronous stop: actors' stop handlers run on their loops, loops exit, done (may be
 * NULL) runs on the last loop thread. Returns 0 or -EALREADY. */
int exo_node_stop(struct exo_node *node, exo_node_done_fn done, void *arg);
/* Waits for all loop threads (after stop). Returns 0 or -EINVAL (not stopping). */
int exo_node_join(struct exo_node *node);
/* Stops and joins if needed, then frees actors, sockets, loops. NULL ok. */
void exo_node_free(struct exo_node *node);

/* Sends from outside any actor (main thread, tests, benchmarks): src is {node_id, 0}.
 * Same returns as exo_actor_send. */
int exo_node_send(struct exo_node *node, struct exo_addr dst, uint16_t type,
                  const void *payload, size_t len);
/* Zero-copy form (see exo_actor_send_buf); takes ownership of *payload. */
int exo_node_send_buf(struct exo_node *node, const struct exo_envelope *env, void **payload,
                      size_t len);

void exo_node_set_escalate(struct exo_node *node, exo_node_escalate_fn fn, void *arg);
/* Prometheus text (format 0.0.4) of the transport's drop counters in st:
 * exo_node_frames_{auth_failed,replayed,throttled,malformed,misrouted}_total, for a
 * /metrics handler to append. Writes at most cap bytes (NUL-terminated when cap > 0);
 * returns the length it needs, like snprintf. node_auth.c */
size_t exo_node_stats_prometheus(const struct exo_node_stats *st, char *buf, size_t cap);
/* The cluster key the node loaded (`key:` / opts.key_path), NULL when unauthenticated:
 * for actors that tag their own datagrams (discovery: exo_auth_sign/exo_auth_open with
 * EXO_AUTH_DOMAIN_DISCOVERY). Lives as long as the node. node_auth.c */
struct exo_auth;
const struct exo_auth *exo_node_auth(const struct exo_node *node);
/* Installs a receive tap (before start). */
void exo_node_set_tap(struct exo_node *node, exo_node_tap_fn fn, void *arg);

uint32_t exo_node_id(const struct exo_node *node);
struct exo_loop *exo_node_loop(struct exo_node *node, uint32_t index); /* NULL if out of range */
uint32_t exo_node_loop_count(const struct exo_node *node);
struct exo_actor *exo_node_find(struct exo_node *node, const char *name); /* NULL if none */
/* True once a HELLO from node_id arrived, so sends to it have a route. */
bool exo_node_has_peer(struct exo_node *node, uint32_t node_id);
void exo_node_stats(const struct exo_node *node, struct exo_node_stats *out);

/* Ids of the peers whose HELLO arrived (so sends to them have a route), up to max, into
 * ids; returns how many there are (may exceed max). Any thread. */
size_t exo_node_peer_ids(struct exo_node *node, uint32_t *ids, size_t max);

/* One application object per node (the actors layer keeps its cluster state there, so no
 * global is needed). Set before exo_node_start (actors' init runs then); ctx_free (may be
 * NULL) runs in exo_node_free after the loops are joined. Returns 0 or -EBUSY (started or
 * already set). */
int exo_node_set_context(struct exo_node *node, void *ctx, void (*ctx_free)(void *ctx));
void *exo_node_context(struct exo_node *node); /* NULL when none */

#endif
