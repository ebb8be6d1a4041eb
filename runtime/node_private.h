/* runtime/node_private.h: the structs actor.c and node.c share; not for actor code.
 * Owns nothing by itself. Threading: fields marked (loop) are touched only on the actor's
 * loop thread (or before start on the starting thread); atomics are read anywhere. */
#ifndef EXO_RUNTIME_NODE_PRIVATE_H
#define EXO_RUNTIME_NODE_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>

#include "runtime/auth.h"
#include "runtime/link.h"
#include "runtime/loop.h"
#include "runtime/node.h"
#include "runtime/supervisor.h"

enum exo_actor_status {
  EXO_ACTOR_SPAWNED = 0,
  EXO_ACTOR_RUNNING,
  EXO_ACTOR_FAILED,
  EXO_ACTOR_DEAD,
};

struct exo_actor_timer {
  struct exo_actor_timer *next;
  struct event *ev;
  struct exo_actor *actor;
  uint32_t id;
};

struct exo_actor {
  struct exo_node *node;
  const struct exo_actor_kind *kind;
  const struct exo_actor_config *opts; /* may be NULL */
  struct exo_loop *loop;
  uint32_t loop_index;
  size_t index; /* spawn order: rest_for_one restarts index >= the failed one */
  char name[EXO_CONFIG_MAX_NAME + 1];
  struct exo_addr addr;
  void *state;                   /* (loop) kind->state_size bytes */
  struct exo_actor_timer *timers; /* (loop) */
  bool inited;                   /* (loop) init succeeded: stop is owed */
  bool exit_requested;           /* (loop) */
  _Atomic int status;            /* enum exo_actor_status */
  _Atomic uint32_t queued;       /* messages in its mailbox */
  _Atomic uint64_t restarts;
};

/* One message in flight to a local actor. Payload inline after the struct, or inside a
 * nanomsg chunk (nn_frame: header + payload) for received frames and zero-copy sends. */
struct exo_msg_box {
  struct exo_loop_item item;
  struct exo_actor *to;
  struct exo_msg msg;
  void *nn_frame; /* NULL: inline */
  struct exo_peer_inflight *inflight; /* received frame: its sender's budget, else NULL */
  uint64_t inflight_bytes;            /* what it counts against that budget */
};

/* Frames (and bytes) of one sender queued in mailboxes and not yet handled: bounded so
 * a flooding peer cannot take every mailbox slot or grow memory without limit. */
struct exo_peer_inflight {
  _Atomic uint32_t frames;
  _Atomic uint64_t bytes;
};

/* Authenticated link state of one peer (node_auth.c); unused without a cluster key.
 * Written on loop 0 with peers_mu held for writing; senders read it under the read lock. */
struct exo_link_auth {
  bool confirmed;                                   /* peer's session proven fresh */
  uint8_t peer_session[EXO_AUTH_SESSION_BYTES];     /* its process session id */
  uint8_t my_challenge[EXO_AUTH_SESSION_BYTES];     /* the peer must echo this */
  uint8_t their_challenge[EXO_AUTH_SESSION_BYTES];  /* we echo this back */
  uint8_t send_key[EXO_AUTH_LINK_KEY_BYTES];        /* subkey (our session, its session) */
  uint8_t recv_key[EXO_AUTH_LINK_KEY_BYTES];        /* subkey (its session, our session) */
  _Atomic uint64_t send_seq;                        /* last link sequence number sent */
  struct exo_link_window recv_win; /* (loop 0) replay window (runtime/link.h) */
};

/* Link numbering of an unkeyed cluster (link.h). send_seq: any sender thread; the
 * rest (loop 0). */
struct exo_peer_link {
  _Atomic uint64_t send_seq;  /* last link seq sent to this peer */
  struct exo_link_window win; /* frames received from this peer's node id */
  uint64_t session;           /* its process session id from its HELLO, 0: none yet */
};

/* Room every outgoing frame chunk gets past its payload, so a link trailer (12 bytes
 * unkeyed, 40 keyed) is written in place instead of growing (copying) the chunk. */
#define EXO_FRAME_SLACK 64u

struct exo_peer {
  char *addr;
  int sock;                 /* NN_PUSH */
  _Atomic uint32_t node_id; /* 0 until its HELLO arrives */
  uint64_t next_hello_ms;   /* (loop 0) */
  uint32_t hello_backoff_ms; /* (loop 0) */
  struct exo_link_auth la;    /* node_auth.c */
  struct exo_peer_inflight inflight; /* frames from this peer's node id */
  struct exo_peer_link link;          /* unkeyed link numbering (node.c, link.h) */
};

struct exo_node_counters {
  _Atomic uint64_t local_sent, remote_sent, remote_received, delivered, mailbox_full,
      send_failed, frames_malformed, frames_misrouted, dropped_dead, restarts, escalations,
      handler_failures, frames_auth_failed, frames_replayed, frames_throttled;
  _Atomic uint64_t loop_deaths, loop_stalls; /* actor.c: dead loops, watchdog reports */
};

struct exo_node {
  uint32_t id;
  uint32_t mailbox_capacity;
  size_t max_frame;
  char *listen;
  const struct exo_config *cfg; /* may be NULL */
  struct exo_loop **loops;
  uint32_t n_loops;
  struct exo_actor **actors; /* spawn order; fixed once started */
  size_t n_actors, cap_actors;
  struct exo_supervisor *sup;
  exo_node_escalate_fn escalate;
  void *escalate_arg;
  atomic_bool started, stopping;
  _Atomic uint32_t loops_running;
  exo_node_done_fn done;
  void *done_arg;
  /* transport */
  int pull;              /* NN_PULL bound on listen, or -1 */
  struct event *rcv_ev;  /* (loop 0) NN_RCVFD watcher */
  /* Receive lanes (node.c "receive path"): besides loop 0, every other loop that hosts an
   * actor watches NN_RCVFD too, so a frame for a compute loop's actor is drained by that
   * loop itself when it is idle (no cross-thread wake); loop 0 drains while it computes.
   * recv_mu serializes whoever drains: link windows, MAC checks, HELLOs and mailbox order
   * are as with one drainer. Held only for nn_recv, the checks and the enqueue, never
   * for a handler. */
  struct exo_node_drain *drains; /* n_loops entries; [0] unused (rcv_ev) */
  bool multi_drain;              /* set at start: some loop besides 0 drains */
  pthread_mutex_t recv_mu;
  struct event *hello_ev; /* (loop 0) HELLO resend timer */
  pthread_rwlock_t peers_mu;
  struct exo_peer **peers;
  size_t n_peers, cap_peers;
  struct exo_node_counters c;
  /* application context (exo_node_set_context): set before start, freed by node free */
  void *ctx;
  void (*ctx_free)(void *ctx);
  /* cluster key (node_auth.c): NULL when the cluster is unauthenticated */
  struct exo_auth *auth;
  uint8_t session[EXO_AUTH_SESSION_BYTES]; /* this process's session id */
  uint64_t auth_log_next_ms, auth_log_suppressed; /* (loop 0) log rate limit */
  /* per-peer flood bound (node.c): frames from unknown senders share one budget */
  uint32_t peer_max_frames;
  uint64_t peer_max_bytes;
  struct exo_peer_inflight unknown_inflight;
  struct exo_node_watchdog *wd; /* actor.c: stall watchdog thread, NULL when not running */
  uint32_t watchdog_ms;         /* stall limit (supervision.watchdog_ms) */
  uint64_t link_session;        /* random per process, announced in HELLO (unkeyed) */
  struct exo_faults *faults;    /* fault.c: transport fault injection (off unless set) */
  int rcvfd;                    /* NN_RCVFD of pull (exo_node_transport_attach) */
  exo_node_tap_fn tap; /* tests: sees every received frame before any check */
  void *tap_arg;
};

/* One loop's NN_RCVFD watcher (loops >= 1; node.c). ev: (that loop) NULL when the loop
 * does not drain or is between incarnations. */
struct exo_node_drain {
  struct exo_node *node;
  uint32_t loop;
  struct event *ev;
};

#define EXO_COUNT(node, field) \
  atomic_fetch_add_explicit(&(node)->c.field, 1, memory_order_relaxed)

/* actor.c */
struct exo_actor *exo_node_lookup(struct exo_node *node, uint32_t actor_id);
/* Queues box for its actor (box->to set). Takes box on every return. 0, -ENOBUFS,
 * -ESHUTDOWN. */
int exo_actor_deliver(struct exo_msg_box *box);
void exo_msg_box_free(struct exo_msg_box *box);
/* Runs a's message handler on msg right now when the caller is on a's loop and a has
 * nothing queued (order kept); false: the caller queues it as usual. (loop) */
bool exo_actor_dispatch_now(struct exo_actor *a, const struct exo_msg *msg);
/* Runs init for an actor on its loop (or before start). Returns init's result. */
int exo_actor_run_init(struct exo_actor *a, char *err, size_t errlen);
/* Stops an incarnation: timers, stop handler, state zeroed. (loop) */
void exo_actor_run_stop(struct exo_actor *a);
/* Death handler of every loop of a node (exo_loop_set_death_handler; arg: the node):
 * supervision of the dead loop's actors on a fresh thread (runtime/loop.h). */
int exo_node_loop_died(struct exo_loop *loop, int why, void *arg);
/* The stall watchdog (exo_node_start / exo_node_stop). stop: NULL-safe, joins. */
int exo_node_watchdog_start(struct exo_node *node, uint32_t limit_ms);
void exo_node_watchdog_stop(struct exo_node *node);
/* node.c: loop 0's transport events (NN_RCVFD watcher, HELLO timer): detach frees them
 * (before loop 0's base is renewed), attach re-creates them on the current base. */
void exo_node_transport_detach(struct exo_node *node);
int exo_node_transport_attach(struct exo_node *node);
/* node.c: the same for any loop li (0: the two above; others: their NN_RCVFD watcher if
 * they drain). On that loop's thread, or before start / after join. */
void exo_node_transport_detach_loop(struct exo_node *node, uint32_t li);
int exo_node_transport_attach_loop(struct exo_node *node, uint32_t li);
/* node.c: one nn_send (NN_DONTWAIT) of a finished frame on a peer socket, counted. Takes
 * frame. Returns 0, -EAGAIN or another -errno. */
int exo_node_peer_send(struct exo_node *node, int sock, void *frame);
/* Sends a sealed-or-not frame to a remote node. Takes frame (nn chunk). node.c */
int exo_node_send_remote(struct exo_node *node, uint32_t node_id, void *frame, size_t total);

/* node_auth.c: the keyed link layer (docs/PROTOCOL.md "Authenticated clusters").
 * open: loads the key (key_path NULL: unauthenticated, logs so). hello_frame: a keyed
 * HELLO to p in a new nn chunk (*len set) or NULL; peers_mu held. seal: appends
 * [link seq][MAC] to *frame (may move it; on error the caller still owns *frame); peers_mu
 * read-held. receive: (loop 0) verifies a received frame before anything but its type and
 * source node is read; 0 with *len cut to header + payload, or <0: dropped, counted and
 * logged (caller frees). hello_received: (loop 0) the challenge handshake. */
int exo_node_auth_open(struct exo_node *node, const char *key_path, char *err, size_t errlen);
void exo_node_auth_peer_init(struct exo_node *node, struct exo_peer *p);
void *exo_node_auth_hello_frame(struct exo_node *node, struct exo_peer *p, bool want_reply,
                                size_t *len);
int exo_node_auth_seal(struct exo_node *node, struct exo_peer *p, void **frame, size_t total);
int exo_node_auth_receive(struct exo_node *node, void *frame, size_t *len);
void exo_node_auth_hello_received(struct exo_node *node, const struct exo_envelope *env,
                                  const void *payload);

#endif
