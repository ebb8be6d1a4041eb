/* runtime/node_private.h: the structs actor.c and node.c share; not for actor code.
 * Owns nothing by itself. Threading: fields marked (loop) are touched only on the actor's
 * loop thread (or before start on the starting thread); atomics are read anywhere. */
#ifndef EXO_RUNTIME_NODE_PRIVATE_H
#define EXO_RUNTIME_NODE_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>

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
};

struct exo_peer {
  char *addr;
  int sock;                 /* NN_PUSH */
  _Atomic uint32_t node_id; /* 0 until its HELLO arrives */
  uint64_t next_hello_ms;   /* (loop 0) */
  uint32_t hello_backoff_ms; /* (loop 0) */
};

struct exo_node_counters {
  _Atomic uint64_t local_sent, remote_sent, remote_received, delivered, mailbox_full,
      send_failed, frames_malformed, frames_misrouted, dropped_dead, restarts, escalations,
      handler_failures;
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
  struct event *hello_ev; /* (loop 0) HELLO resend timer */
  pthread_rwlock_t peers_mu;
  struct exo_peer **peers;
  size_t n_peers, cap_peers;
  struct exo_node_counters c;
  /* application context (exo_node_set_context): set before start, freed by node free */
  void *ctx;
  void (*ctx_free)(void *ctx);
};

#define EXO_COUNT(node, field) \
  atomic_fetch_add_explicit(&(node)->c.field, 1, memory_order_relaxed)

/* actor.c */
struct exo_actor *exo_node_lookup(struct exo_node *node, uint32_t actor_id);
/* Queues box for its actor (box->to set). Takes box on every return. 0, -ENOBUFS,
 * -ESHUTDOWN. */
int exo_actor_deliver(struct exo_msg_box *box);
void exo_msg_box_free(struct exo_msg_box *box);
/* Runs init for an actor on its loop (or before start). Returns init's result. */
int exo_actor_run_init(struct exo_actor *a, char *err, size_t errlen);
/* Stops an incarnation: timers, stop handler, state zeroed. (loop) */
void exo_actor_run_stop(struct exo_actor *a);
/* Sends a sealed-or-not frame to a remote node. Takes frame (nn chunk). node.c */
int exo_node_send_remote(struct exo_node *node, uint32_t node_id, void *frame, size_t total);

#endif
