/* runtime/loop.h: event-loop threads. Owns one libevent event_base per thread, the
 * thread's lifecycle (start, asynchronous stop with a completion, join) and the
 * cross-thread hand-off: an intrusive wait-free queue (liburcu wfcqueue) drained by the
 * loop, woken through an eventfd only when the queue goes from empty to non-empty.
 * Must not know actors or transports; must not block inside a loop callback.
 *
 * States (exo_loop_*):
 *   NEW --start--> RUNNING --stop--> STOPPING --(queue drained to the stop item,
 *   completion called on the loop thread)--> STOPPED --join/free--> (gone)
 * A NEW loop that is stopped goes to STOPPED at once; its completion runs in the caller.
 *
 * Death: a loop dies when its thread leaves event_base_loop without having run the stop
 * item (event_base_loop failed, something broke the base loop, exo_loop_kill) or the
 * thread exits under it (pthread_exit from a callback). The dying thread calls the death
 * handler; when that returns 0 (after exo_loop_renew_base) a fresh thread takes the same
 * loop (queue, eventfd, producers untouched) and the old one is joined by the new one:
 *   RUNNING --death, handler 0--> RUNNING (new thread, new event_base)
 *   RUNNING --death, no handler / handler < 0 / stop requested--> DEAD (items wait for
 *   free; a later stop completes at once)
 *
 * Stall watchdog: code that runs user handlers brackets them with exo_loop_busy_enter /
 * _leave (two relaxed stores, no clock); exo_loop_stalled, called from a watchdog thread,
 * says when one bracket has lasted past a limit. A thread cannot be killed, so acting on
 * a stall is the caller's decision (node: escalate, docs/DESIGN.md).
 *
 * Invariants:
 *  1. Items run on the loop thread in enqueue order (FIFO per loop, any producer).
 *  2. At most EXO_LOOP_BUDGET items run per wake-up; the rest wait for the next turn so
 *     timers and sockets of the same loop are never starved.
 *  3. An item enqueued to a loop that never runs it again is dropped (its drop
 *     function called) by exo_loop_free, never leaked. */
#ifndef EXO_RUNTIME_LOOP_H
#define EXO_RUNTIME_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include <urcu/wfcqueue.h>

struct event_base;
struct exo_loop;

#define EXO_LOOP_BUDGET 256u /* items run per wake-up */

/* An intrusive queue item: embed it, fill run (and drop), enqueue. run is called on the
 * loop thread and owns the item from then on; drop (may be NULL: nothing to release) is
 * called instead when the loop is freed before running it. */
struct exo_loop_item {
  struct cds_wfcq_node qnode; /* private */
  void (*run)(struct exo_loop *loop, struct exo_loop_item *item);
  void (*drop)(struct exo_loop_item *item);
};

typedef void (*exo_loop_fn)(struct exo_loop *loop, void *arg);

/* Creates a loop (not started). name (copied, <= 15 chars shown) names the thread.
 * Calls evthread_use_pthreads() once per process first. Returns 0, -ENOMEM, -EMFILE
 * (eventfd), -EIO (libevent). */
int exo_loop_new(const char *name, struct exo_loop **out);

/* Starts the loop's thread. Returns 0, -EALREADY (not NEW), or -errno of pthread_create. */
int exo_loop_start(struct exo_loop *loop);

/* Enqueues item to run on the loop thread (any thread, wait-free, never allocates).
 * Returns 0 or -ESHUTDOWN when the loop is stopping or stopped (item not taken). */
int exo_loop_enqueue(struct exo_loop *loop, struct exo_loop_item *item);

/* Runs fn(loop, arg) on the loop thread (allocates one item). Returns 0, -ENOMEM or
 * -ESHUTDOWN. arg is not released if the loop is freed first: post only what the
 * caller can account for, or use exo_loop_enqueue with a drop function. */
int exo_loop_post(struct exo_loop *loop, exo_loop_fn fn, void *arg);

/* Asks the loop to stop after the items already enqueued; done(loop, arg) (may be NULL)
 * runs on the loop thread as its last act (in the caller for a loop never started).
 * Returns 0 or -EALREADY (stop already requested). Non-blocking; exo_loop_join waits. */
int exo_loop_stop(struct exo_loop *loop, exo_loop_fn done, void *arg);

/* Waits for a stopped (or stopping) loop's thread to exit. Returns 0 or -EINVAL if never
 * started or stop was not requested; joining twice is 0. Never call on the loop itself. */
int exo_loop_join(struct exo_loop *loop);

/* Stops (if needed), joins, drops unrun items and frees. NULL ok. Not on the loop thread. */
void exo_loop_free(struct exo_loop *loop);

/* The loop's event_base: add timers and fd watchers from the loop thread only (or before
 * start). */
struct event_base *exo_loop_base(struct exo_loop *loop);
const char *exo_loop_name(const struct exo_loop *loop);

/* The loop whose thread is calling, or NULL on a thread that is not a loop. */
struct exo_loop *exo_loop_current(void);
bool exo_loop_is_current(const struct exo_loop *loop);

/* ---- death and restart ----
 * why: -EIO (event_base_loop returned an error), -ECANCELED (the base loop was broken
 * without a stop: exo_loop_kill EXO_LOOP_KILL_BREAK), -EINTR (the thread exited under the
 * loop: EXO_LOOP_KILL_EXIT or a callback's pthread_exit). Runs on the dying thread, which
 * is still the loop's thread (exo_loop_is_current is true): release what lives on the old
 * base, call exo_loop_renew_base, re-arm, return 0 for a fresh thread; < 0 leaves it DEAD. */
typedef int (*exo_loop_death_fn)(struct exo_loop *loop, int why, void *arg);
/* Before start. */
void exo_loop_set_death_handler(struct exo_loop *loop, exo_loop_death_fn fn, void *arg);
/* Only inside the death handler: frees the old event_base (every event on it must be
 * freed already) and makes a fresh one. Returns 0 or -EIO (the loop then stays DEAD). */
int exo_loop_renew_base(struct exo_loop *loop);

enum exo_loop_kill_mode {
  EXO_LOOP_KILL_BREAK = 0, /* break the base loop without a stop (as a failed base would) */
  EXO_LOOP_KILL_EXIT = 1,  /* pthread_exit on the loop thread */
};
/* Test and fault hook: makes the loop die at its next turn (any thread; on the loop
 * thread, once the running item returns). Returns 0, -ESHUTDOWN (stopping or dead),
 * -EALREADY (a kill is pending). */
int exo_loop_kill(struct exo_loop *loop, enum exo_loop_kill_mode mode);
uint64_t exo_loop_deaths(const struct exo_loop *loop); /* times this loop died */
bool exo_loop_dead(const struct exo_loop *loop);       /* died and not restarted */

/* ---- stall watchdog ----
 * enter/leave: loop thread only, around one user handler; label (kept, not copied: must
 * outlive the bracket) names it for the report. */
void exo_loop_busy_enter(struct exo_loop *loop, const char *label);
void exo_loop_busy_leave(struct exo_loop *loop);
/* From one watchdog thread per loop: true once the same bracket has been open at least
 * limit_ms (by now_ms, monotonic), once per bracket; *label (may be NULL) gets its label,
 * *for_ms how long it has been open as far as the watchdog saw. */
bool exo_loop_stalled(struct exo_loop *loop, uint64_t now_ms, uint64_t limit_ms,
                      const char **label, uint64_t *for_ms);

/* Wake-ups that went through the eventfd (a write syscall) vs those that stayed on the
 * loop's own thread (event_active, no syscall). For benchmarks and tests. */
uint64_t exo_loop_wakeups(const struct exo_loop *loop, uint64_t *same_thread);

#endif
