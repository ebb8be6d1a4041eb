/* actors/origin_table.h: the origin's request table: wire id -> request, a liburcu
 * lock-free hash table (runtime/shared.h) with one writer (the origin's loop thread) and
 * any number of readers (other loops, a metrics scrape) that take no lock. Owns entry
 * lifetime (a reference count: the writer's reference plus one per wire id the entry is
 * filed under, dropped a grace period after the id is removed), never what a request
 * means. Must not be written from two threads.
 *
 * Invariants:
 *  1. An entry is released (its release function runs) only after the writer dropped its
 *     reference and a grace period passed since its last wire id was removed, so a
 *     reader's entry pointer stays valid until its read unlock.
 *  2. Readers read only the entry's immutable fields and its atomics; everything else in
 *     the struct that embeds the entry is the writer's. */
#ifndef EXO_ACTORS_ORIGIN_TABLE_H
#define EXO_ACTORS_ORIGIN_TABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum exo_origin_phase {
  EXO_ORIGIN_QUEUED = 0,  /* waiting for an active slot (admission) */
  EXO_ORIGIN_WAITING = 1, /* active, not issued: no map yet, or backing off */
  EXO_ORIGIN_PREFILL = 2, /* issued, no token of this attempt yet */
  EXO_ORIGIN_DECODE = 3,  /* issued, tokens arriving */
};

struct exo_origin_entry {
  /* immutable once the entry is first filed */
  uint64_t client_req;
  uint32_t client_node, client_actor;
  uint32_t n_prompt;
  uint64_t submitted_ns;
  /* written by the writer, read by anyone (relaxed: statistics, not synchronization) */
  _Atomic uint32_t generated; /* tokens delivered to the client */
  _Atomic uint32_t attempts;
  _Atomic uint32_t phase; /* enum exo_origin_phase */
  /* private to the table */
  _Atomic int refs;
  void (*release)(struct exo_origin_entry *e); /* runs when refs reaches 0 */
};

struct exo_origin_table;

/* buckets: the expected number of filed entries (fixed; see exo_rcu_table_new). NULL on
 * allocation failure. */
struct exo_origin_table *exo_origin_table_new(size_t buckets);
/* Removes every id and waits until released entries ran their release. Not inside a read
 * section, not in an RCU callback. NULL ok. */
void exo_origin_table_free(struct exo_origin_table *t);

/* Gives e the writer's reference; release frees the struct embedding e. */
void exo_origin_entry_init(struct exo_origin_entry *e, void (*release)(struct exo_origin_entry *));
/* Drops the writer's reference (after removing e's id, if any). */
void exo_origin_entry_drop(struct exo_origin_entry *e);

/* Writer: files e under wire id. 0, -EEXIST, -ENOMEM. */
int exo_origin_table_put(struct exo_origin_table *t, uint64_t wire, struct exo_origin_entry *e);
/* Writer: removes id wire (its reference is dropped after a grace period). 0 or -ENOENT. */
int exo_origin_table_del(struct exo_origin_table *t, uint64_t wire);
/* Writer: the entry filed under wire, or NULL; valid until the writer drops it. No lock. */
struct exo_origin_entry *exo_origin_table_find(struct exo_origin_table *t, uint64_t wire);

/* Any thread, inside exo_shared_read_lock(): the entry filed under wire, or NULL. */
struct exo_origin_entry *exo_origin_table_lookup(struct exo_origin_table *t, uint64_t wire);
/* Any thread; takes its own read section: fn for each filed entry until it returns
 * non-zero. Returns the number of calls. */
size_t exo_origin_table_for_each(struct exo_origin_table *t,
                                 int (*fn)(uint64_t wire, const struct exo_origin_entry *e,
                                           void *arg),
                                 void *arg);
size_t exo_origin_table_count(struct exo_origin_table *t); /* approximate */

/* ---- the origin's counters, for /metrics ------------------------------------------ */
/* One per node (exo_cluster_origin_stats): the origin's thread writes (relaxed: statistics,
 * not synchronization), a metrics scrape on any thread reads. Zero-initialized; counters
 * survive an origin restart, the gauges are rewritten at every handler's end. */
struct exo_origin_stats {
  _Atomic uint64_t refused;        /* SUBMITs refused past the queue (-EBUSY) */
  _Atomic uint64_t completed;      /* requests ended by EOS, length or a cancel */
  _Atomic uint64_t failed;         /* requests ended by an error */
  _Atomic uint64_t reissued;       /* re-issues (map change, loss, timeout, full shard) */
  _Atomic uint64_t shard_full;     /* backoffs after a shard's -ENOSPC / -ENOBUFS */
  _Atomic uint64_t queue_timeouts; /* queued past queue_timeout_ms */
  _Atomic uint64_t admitted;       /* moves from the queue into an active slot */
  _Atomic uint64_t admitted_past;  /* of those, ones that passed an earlier queued request */
  _Atomic uint32_t active, queued; /* gauges */
};
void exo_origin_stats_add(_Atomic uint64_t *counter, uint64_t n);
/* Prometheus text (format 0.0.4) of st, exo_origin_*; at most cap bytes (NUL-terminated
 * when cap > 0); returns the length it needs, like snprintf. */
size_t exo_origin_stats_prometheus(const struct exo_origin_stats *st, char *buf, size_t cap);

/* ---- Retry-After: how long a refused client should wait ------------------------- */
#define EXO_RATE_WINDOW 32u

/* The last EXO_RATE_WINDOW completion times (one thread's: no atomics). */
struct exo_rate_window {
  uint64_t at_ns[EXO_RATE_WINDOW];
  uint64_t n; /* completions recorded in all */
};
void exo_rate_window_note(struct exo_rate_window *w, uint64_t now_ns);
/* Seconds until `ahead` more completions are expected, from the recent completion rate
 * (completions of the last 60 s in the window; without two: 1 s per `per_second_guess`
 * completions), rounded up and clamped to [1, 600]. */
uint32_t exo_rate_window_retry_s(const struct exo_rate_window *w, uint64_t ahead,
                                 uint64_t per_second_guess, uint64_t now_ns);

#endif
