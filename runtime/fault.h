/* runtime/fault.h: transport fault injection for tests and the fault harness (issue 6).
 * Owns the fault spec (parse, precise errors), the seeded decisions per link, and the
 * frames it holds back (delay, jitter, reorder, bandwidth cap) on loop 0 timers. Off
 * unless configured; when off, a send pays one pointer test. Must never block a loop
 * (a held frame waits on a timer, never in a sleep) and never deliver what it corrupts:
 * it flips bits after the checksum and link trailer are written, so the receiver rejects.
 *
 * Spec (one grammar for `faults:` in the config, EXO_FAULTS and exo_node_set_faults):
 *   items separated by ';', each a ','-separated list of key=value:
 *   seed=N                  RNG seed (default 1); every link draws from its own stream
 *   fail=ACTOR[@P]          ACTOR's message handler fails (-EIO, message consumed) with
 *                           probability P (default 1): exercises supervision
 *   a rule: optional selectors to=NODE (destination node id), type=T (envelope type),
 *   then effects: drop=P dup=P reorder=P corrupt=P (probabilities in [0,1]),
 *   delay=MS jitter=MS (held MS +- uniform jitter, >= 0), bw=BYTES_PER_S (k/M/G suffix:
 *   x1e3/1e6/1e9; frames paced through a per-link token bucket).
 *   The first rule whose selectors match a frame applies to it. HELLOs are exempt.
 *   "@PATH" instead of a spec: read the spec from PATH and re-read it when the file
 *   changes (polled every EXO_FAULT_POLL_MS on loop 0); missing or empty = off. This is
 *   how a harness switches faults of a running node process from outside.
 * Example: "seed=7; to=2,drop=0.1,delay=20,jitter=5; type=300,dup=0.05; fail=sampler@0.5"
 *
 * Order per frame: drop, duplicate (the copy sent right after, same bytes, so the link
 * window rejects it), corrupt (one random bit of the wire frame), then the hold time
 * (bw pacing + delay + jitter), then reorder (held until the next frame of that link
 * has gone, at most EXO_FAULT_REORDER_MAX_MS). Held frames are dropped at node stop. */
#ifndef EXO_RUNTIME_FAULT_H
#define EXO_RUNTIME_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct exo_node;
struct exo_faults;

#define EXO_FAULT_POLL_MS 100u
#define EXO_FAULT_REORDER_MAX_MS 20u
#define EXO_FAULT_MAX_RULES 32u
#define EXO_FAULT_MAX_LINKS 64u /* links with their own RNG stream and bucket; more share one */

struct exo_fault_stats {
  uint64_t dropped, duplicated, corrupted, delayed, reordered, paced;
  uint64_t handler_failures; /* injected by fail= */
  uint64_t held_dropped;     /* still held when the node stopped */
  uint64_t reloads;          /* spec (re)loaded from an @PATH file */
};

/* Checks a spec without applying it. Returns 0 or -EINVAL with err naming the item, e.g.
 * "faults: item 2 (drop=1.5): drop must be a probability in [0, 1]". NULL/"" is valid. */
int exo_faults_check(const char *spec, char *err, size_t errlen);

/* Sets (replaces) the node's faults, any time, any thread: spec as above; NULL or "" turns
 * them off. Decisions restart from the seed. Returns 0, -EINVAL (err says why; the old
 * faults stay), -ENOMEM. An @PATH spec reads the file now and then polls it. */
int exo_node_set_faults(struct exo_node *node, const char *spec, char *err, size_t errlen);
void exo_node_fault_stats(struct exo_node *node, struct exo_fault_stats *out);

/* ---- runtime-internal (node.c, actor.c) ---- */
/* A node's fault state, off (node.c, at node creation). Returns 0 or -ENOMEM. */
int exo_faults_new(struct exo_node *node, struct exo_faults **out);
/* Frees the node's fault state (NULL ok); held frames were dropped by detach. */
void exo_faults_free(struct exo_faults *f);
/* Sends frame (len bytes, sealed with its trailer) to sock through the faults, or plainly
 * when none apply. Takes frame. Returns what a plain send would (0 when dropped). */
int exo_fault_send(struct exo_node *node, uint32_t dst, int sock, void *frame, size_t len);
/* True when fail= says this handler call of actor fails. */
bool exo_fault_handler_fails(struct exo_node *node, const char *actor);
/* Loop 0 only: drop held frames and the poll timer (stop, or before loop 0's base is
 * renewed) / re-arm the poll timer on the current base. */
void exo_fault_detach(struct exo_node *node);
int exo_fault_attach(struct exo_node *node);

#endif
