/* runtime/actor.h: actor kinds, messages, sending and timers: what an actor's code sees.
 * An actor lives on one loop of one node; its handlers run only on that loop's thread,
 * one at a time, and never block. Must not expose where a destination lives: a send to
 * an address takes the local path (wait-free queue + eventfd) or nanomsg to a peer.
 *
 * Lifecycle of one actor (driven by node.c and supervision):
 *   SPAWNED --exo_node_start: init ok--> RUNNING --handler returns < 0--> FAILED
 *   FAILED --supervisor restart: stop(state), fresh zeroed state, init--> RUNNING
 *   RUNNING --exo_actor_exit (takes effect after the handler returns)--> DEAD
 *   RUNNING --node stop: stop(state)--> DEAD
 * Messages for a FAILED or DEAD actor are dropped and counted (exo_node_stats). A restart
 * keeps the mailbox: messages queued before it reach the new incarnation.
 * Mailbox: bounded (node opts mailbox_capacity); a full mailbox fails the send with
 * -ENOBUFS for a local sender and drops the frame (counted) for a remote one. */
#ifndef EXO_RUNTIME_ACTOR_H
#define EXO_RUNTIME_ACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/config.h"
#include "runtime/envelope.h"

struct exo_actor;
struct exo_node;
struct exo_loop;

/* Runtime control message types (below EXO_MSG_APP_BASE). */
#define EXO_MSG_HELLO 1u /* node to node: src.node + listen address (payload, text) */

/* A received message: valid only during the handler call. */
struct exo_msg {
  struct exo_envelope env; /* type, src, dst, epoch, request_id, seq, payload_len */
  const void *payload;     /* env.payload_len bytes (a tensor payload if payload_kind says) */
};

/* A kind: the handler table every actor of that kind shares. Every handler returns 0,
 * or a negative errno to report a failure to the supervisor (the actor is restarted or
 * the node escalates). state is state_size zeroed bytes owned by the runtime.
 * opts: the actor's entry of the node config (name, kind, loop, raw options), or NULL
 * when spawned without one; cfg (may be NULL) is the whole config, for the positioned
 * error helpers exo_config_option_*. err: where init explains a failure to a person. */
struct exo_actor_kind {
  const char *name;
  size_t state_size;
  int (*init)(struct exo_actor *self, void *state, const struct exo_config *cfg,
              const struct exo_actor_config *opts, char *err, size_t errlen); /* may be NULL */
  int (*message)(struct exo_actor *self, void *state, const struct exo_msg *msg);
  int (*timer)(struct exo_actor *self, void *state, uint32_t timer_id); /* may be NULL */
  void (*stop)(struct exo_actor *self, void *state); /* release what init took; may be NULL */
};

/* ---- identity ---- */
const char *exo_actor_name(const struct exo_actor *a);
struct exo_addr exo_actor_addr(const struct exo_actor *a);
struct exo_node *exo_actor_node(struct exo_actor *a);
struct exo_loop *exo_actor_loop(struct exo_actor *a);
uint64_t exo_actor_restarts(const struct exo_actor *a); /* times restarted so far */
bool exo_actor_running(const struct exo_actor *a);
/* Messages waiting in a's mailbox, not counting the one being handled: 0 in a handler
 * means nothing else for a has arrived yet (an actor that batches can run now instead of
 * waiting a loop turn for more). */
uint32_t exo_actor_queued(const struct exo_actor *a);

/* Parses "NODE/NAME" (NODE a decimal node id) or "NAME" (this node: pass its id as
 * local_node) into an address. Returns 0 or -EINVAL. */
int exo_addr_parse(const char *s, uint32_t local_node, struct exo_addr *out);

/* ---- sending (from the actor's own loop thread) ----
 * Each returns 0 or a negative errno: -ENOBUFS (local mailbox full), -EHOSTUNREACH (no
 * peer known for dst.node), -ENOENT (no such local actor), -EAGAIN (peer's socket would
 * block: peer slow or gone), -EMSGSIZE (payload over the node's max), -ENOMEM. Failures
 * are counted in exo_node_stats. */

/* Copies len bytes of payload into a new message of type to dst. */
int exo_actor_send(struct exo_actor *self, struct exo_addr dst, uint16_t type,
                   const void *payload, size_t len);
/* Same with a textual address ("2/pong" or "pong"). */
int exo_actor_send_to(struct exo_actor *self, const char *dst, uint16_t type,
                      const void *payload, size_t len);

/* Zero-copy send of a buffer from exo_msg_alloc: env supplies dst, type, payload_kind,
 * epoch, request_id and seq (src is set to self). Takes ownership of *payload on every
 * return and sets *payload to NULL. len must equal the allocated length. */
int exo_actor_send_buf(struct exo_actor *self, const struct exo_envelope *env, void **payload,
                       size_t len);

/* A payload buffer of len bytes for exo_actor_send_buf / exo_node_send_buf (nanomsg
 * chunk with room for the header in front, so tcp/ipc sends do not copy). NULL on ENOMEM.
 * exo_msg_free releases one that was never sent (NULL ok). */
void *exo_msg_alloc(size_t len);
void exo_msg_free(void *payload);

/* ---- timers (actor's loop thread only) ----
 * Calls kind->timer(self, state, id) after ms milliseconds (then every ms if repeat).
 * Starting an id that exists re-arms it. Timers end with the incarnation (restart/stop).
 * Returns 0, -ENOMEM, -EIO. */
int exo_actor_timer_start(struct exo_actor *self, uint32_t id, uint32_t ms, bool repeat);
/* Returns 0 or -ENOENT. */
int exo_actor_timer_stop(struct exo_actor *self, uint32_t id);

/* Marks the actor DEAD once the running handler returns (stop runs then, on its loop). */
void exo_actor_exit(struct exo_actor *self);

#endif
