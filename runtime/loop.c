/* runtime/loop.c: event-loop threads and their wait-free inbox (see loop.h for the
 * states, death and the stall watchdog). Must not know actors; must not block on the
 * loop thread. Thread handles: each successor thread joins its predecessor, and
 * exo_loop_join waits (mu + cv) until the state is final before joining the last one, so
 * every thread is joined exactly once.
 * We call liburcu's wfcqueue through the library (no _LGPL_SOURCE): its inline versions
 * are volatile accesses and inline asm that ThreadSanitizer would flag, and the library
 * calls are uninstrumented, so we annotate the hand-off with __tsan_release/acquire. */
#include "runtime/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define EXO_TSAN_RELEASE(p) __tsan_release(p)
#define EXO_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define EXO_TSAN_RELEASE(p) ((void)(p))
#define EXO_TSAN_ACQUIRE(p) ((void)(p))
#endif

enum loop_state { LOOP_NEW = 0, LOOP_RUNNING, LOOP_STOPPED, LOOP_DEAD };

struct exo_loop {
  char name[16];
  struct event_base *base;
  struct event *wake_ev;   /* EV_READ|EV_PERSIST on efd: wakes from other threads */
  struct event *turn_ev;   /* no fd: a turn asked for on the loop's own thread */
  int efd;                 /* eventfd, non-blocking */
  struct __cds_wfcq_head head; /* one consumer: the loop thread */
  struct cds_wfcq_tail tail;
  pthread_mutex_t mu;      /* thread, prev, state changes to final */
  pthread_cond_t cv;       /* state became STOPPED or DEAD */
  pthread_t thread;        /* the current loop thread (mu) */
  pthread_t prev;          /* a dead predecessor the current thread joins first */
  bool has_prev;
  _Atomic int state;       /* enum loop_state */
  atomic_bool stopping;    /* stop requested: enqueue refuses new items */
  bool quit;               /* loop thread only: the stop item ran */
  bool started, joined;
  exo_loop_fn done;
  void *done_arg;
  struct exo_loop_item stop_item;
  _Atomic uint64_t wake_fd, wake_local;
  /* death */
  exo_loop_death_fn death;
  void *death_arg;
  bool dying;              /* loop thread only: a kill ran, leave the turn */
  bool in_death;           /* loop thread only: inside the death handler */
  _Atomic int kill_mode;   /* -1: none pending */
  struct exo_loop_item kill_item;
  _Atomic uint64_t deaths;
  /* watchdog: busy_seq is odd while a bracket is open */
  _Atomic uint64_t busy_seq;
  _Atomic(const char *) busy_label;
  uint64_t wd_seq, wd_since_ms; /* watchdog thread only */
  bool wd_reported;             /* watchdog thread only */
};

static _Thread_local struct exo_loop *tls_current; /* per thread, not shared */
static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;
static int evthread_rc;

static void evthread_init_once(void)
{
  evthread_rc = evthread_use_pthreads();
}

static void loop_wake(struct exo_loop *loop)
{
  if (tls_current == loop) {
    atomic_fetch_add_explicit(&loop->wake_local, 1, memory_order_relaxed);
    event_active(loop->turn_ev, EV_READ, 1); /* no eventfd write, and no read to undo it */
    return;
  }
  atomic_fetch_add_explicit(&loop->wake_fd, 1, memory_order_relaxed);
  uint64_t one = 1;
  /* EAGAIN means the counter is already non-zero: the loop is woken anyway. */
  ssize_t n = write(loop->efd, &one, sizeof one);
  (void)n;
}

static void loop_push(struct exo_loop *loop, struct exo_loop_item *item)
{
  cds_wfcq_node_init(&item->qnode);
  EXO_TSAN_RELEASE(item);
  /* false: the queue was empty, so the loop may be idle and must be woken. When it was
   * not empty the loop is draining or already woken and will reach this item. */
  if (!cds_wfcq_enqueue(&loop->head, &loop->tail, &item->qnode))
    loop_wake(loop);
}

static void loop_run_items(struct exo_loop *loop)
{
  for (unsigned n = 0; n < EXO_LOOP_BUDGET; n++) {
    struct cds_wfcq_node *node = __cds_wfcq_dequeue_nonblocking(&loop->head, &loop->tail);
    if (node == CDS_WFCQ_WOULDBLOCK)
      break; /* a producer is mid-enqueue: come back next turn rather than sleep */
    if (!node)
      return;
    struct exo_loop_item *item = caa_container_of(node, struct exo_loop_item, qnode);
    EXO_TSAN_ACQUIRE(item);
    item->run(loop, item);
    if (loop->quit || loop->dying)
      return;
  }
  /* Budget spent (or a producer is mid-enqueue): producers saw a non-empty queue and
   * will not wake us, so schedule the next turn ourselves. */
  event_active(loop->turn_ev, EV_READ, 1);
}

static void loop_on_wake(evutil_socket_t fd, short what, void *arg)
{
  (void)what;
  struct exo_loop *loop = arg;
  uint64_t v;
  ssize_t n = read(fd, &v, sizeof v); /* resets the counter */
  (void)n;
  loop_run_items(loop);
}

static void loop_on_turn(evutil_socket_t fd, short what, void *arg)
{
  (void)fd, (void)what;
  loop_run_items(arg);
}

static void loop_stop_run(struct exo_loop *loop, struct exo_loop_item *item)
{
  (void)item;
  loop->quit = true;
  event_base_loopbreak(loop->base);
}

static void loop_kill_run(struct exo_loop *loop, struct exo_loop_item *item)
{
  (void)item;
  int mode = atomic_exchange(&loop->kill_mode, -1);
  if (mode == EXO_LOOP_KILL_EXIT)
    pthread_exit(NULL); /* the cleanup handler in loop_thread sees the death */
  loop->dying = true;
  event_base_loopbreak(loop->base);
}

static int base_open(struct exo_loop *loop)
{
  loop->base = event_base_new();
  if (!loop->base)
    return -EIO;
  loop->wake_ev = event_new(loop->base, loop->efd, EV_READ | EV_PERSIST, loop_on_wake, loop);
  loop->turn_ev = event_new(loop->base, -1, EV_PERSIST, loop_on_turn, loop);
  if (!loop->wake_ev || !loop->turn_ev || event_add(loop->wake_ev, NULL) != 0) {
    if (loop->wake_ev)
      event_free(loop->wake_ev);
    if (loop->turn_ev)
      event_free(loop->turn_ev);
    event_base_free(loop->base);
    loop->wake_ev = loop->turn_ev = NULL;
    loop->base = NULL;
    return -EIO;
  }
  return 0;
}

int exo_loop_new(const char *name, struct exo_loop **out)
{
  *out = NULL;
  pthread_once(&evthread_once, evthread_init_once);
  if (evthread_rc != 0)
    return -EIO;
  struct exo_loop *loop = calloc(1, sizeof *loop);
  if (!loop)
    return -ENOMEM;
  int rc;
  loop->efd = -1;
  atomic_init(&loop->kill_mode, -1);
  pthread_mutex_init(&loop->mu, NULL);
  pthread_cond_init(&loop->cv, NULL);
  snprintf(loop->name, sizeof loop->name, "%s", name ? name : "loop");
  __cds_wfcq_init(&loop->head, &loop->tail);
  loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop->efd < 0) {
    rc = -errno;
    goto fail;
  }
  rc = base_open(loop);
  if (rc < 0)
    goto fail;
  loop->stop_item.run = loop_stop_run;
  loop->kill_item.run = loop_kill_run;
  *out = loop;
  return 0;
fail:
  if (loop->efd >= 0)
    close(loop->efd);
  pthread_cond_destroy(&loop->cv);
  pthread_mutex_destroy(&loop->mu);
  free(loop);
  return rc;
}

static void *loop_thread(void *arg);

/* The loop's thread ends for good: wake exo_loop_join. Called with mu not held. */
static void loop_final(struct exo_loop *loop, int state)
{
  pthread_mutex_lock(&loop->mu);
  atomic_store(&loop->state, state);
  pthread_cond_broadcast(&loop->cv);
  pthread_mutex_unlock(&loop->mu);
}

/* The loop died on its own thread (why: see exo_loop_death_fn). Returns true when a
 * fresh thread took over (this one must just return). */
static bool loop_died(struct exo_loop *loop, int why)
{
  atomic_fetch_add(&loop->deaths, 1);
  loop->dying = false;
  int rc = -ECANCELED;
  if (!atomic_load(&loop->stopping) && loop->death) {
    loop->in_death = true;
    rc = loop->death(loop, why, loop->death_arg);
    loop->in_death = false;
  }
  if (rc == 0 && loop->base) {
    pthread_mutex_lock(&loop->mu);
    /* A stop that raced the handler left its item queued: the new thread runs it. */
    loop->prev = pthread_self();
    loop->has_prev = true;
    pthread_t t;
    rc = pthread_create(&t, NULL, loop_thread, loop);
    if (rc == 0)
      loop->thread = t;
    else
      loop->has_prev = false;
    pthread_mutex_unlock(&loop->mu);
    if (rc == 0)
      return true;
    fprintf(stderr, "exo-actors: loop %s: cannot start a fresh thread: %s\n", loop->name,
            strerror(rc));
  }
  /* DEAD under mu: a stop from now on completes in its caller; one before us left its
   * completion here, since the stop item will never run. */
  pthread_mutex_lock(&loop->mu);
  bool stopping = atomic_load(&loop->stopping);
  exo_loop_fn done = loop->done;
  void *done_arg = loop->done_arg;
  atomic_store(&loop->state, LOOP_DEAD);
  pthread_mutex_unlock(&loop->mu);
  if (stopping && done)
    done(loop, done_arg);
  tls_current = NULL;
  loop_final(loop, LOOP_DEAD);
  return false;
}

/* pthread_exit under the loop (never on a normal return: popped with 0). */
static void loop_thread_exited(void *arg)
{
  struct exo_loop *loop = arg;
  (void)loop_died(loop, -EINTR);
}

static void *loop_thread(void *arg)
{
  struct exo_loop *loop = arg;
  pthread_mutex_lock(&loop->mu);
  bool join_prev = loop->has_prev;
  pthread_t prev = loop->prev;
  loop->has_prev = false;
  pthread_mutex_unlock(&loop->mu);
  if (join_prev)
    pthread_join(prev, NULL); /* it returned right after creating us */
  tls_current = loop;
  pthread_setname_np(pthread_self(), loop->name);
  /* A predecessor may have died with items queued and the eventfd already read:
   * producers saw a non-empty queue and will not wake us, so look once. */
  event_active(loop->turn_ev, EV_READ, 1);
  int rc;
  pthread_cleanup_push(loop_thread_exited, loop);
  rc = event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
  pthread_cleanup_pop(0);
  if (!loop->quit) {
    (void)loop_died(loop, rc < 0 ? -EIO : -ECANCELED);
    return NULL;
  }
  if (loop->done)
    loop->done(loop, loop->done_arg);
  tls_current = NULL;
  loop_final(loop, LOOP_STOPPED);
  return NULL;
}

int exo_loop_start(struct exo_loop *loop)
{
  int expect = LOOP_NEW;
  if (atomic_load(&loop->stopping) ||
      !atomic_compare_exchange_strong(&loop->state, &expect, LOOP_RUNNING))
    return -EALREADY;
  pthread_mutex_lock(&loop->mu);
  int rc = pthread_create(&loop->thread, NULL, loop_thread, loop);
  loop->started = rc == 0;
  pthread_mutex_unlock(&loop->mu);
  if (rc != 0) {
    atomic_store(&loop->state, LOOP_NEW);
    return -rc;
  }
  return 0;
}

int exo_loop_enqueue(struct exo_loop *loop, struct exo_loop_item *item)
{
  if (atomic_load_explicit(&loop->stopping, memory_order_acquire))
    return -ESHUTDOWN;
  loop_push(loop, item);
  return 0;
}

struct post_item {
  struct exo_loop_item item;
  exo_loop_fn fn;
  void *arg;
};

static void post_run(struct exo_loop *loop, struct exo_loop_item *item)
{
  struct post_item *p = caa_container_of(item, struct post_item, item);
  exo_loop_fn fn = p->fn;
  void *arg = p->arg;
  free(p);
  fn(loop, arg);
}

static void post_drop(struct exo_loop_item *item)
{
  free(caa_container_of(item, struct post_item, item));
}

int exo_loop_post(struct exo_loop *loop, exo_loop_fn fn, void *arg)
{
  struct post_item *p = malloc(sizeof *p);
  if (!p)
    return -ENOMEM;
  p->item.run = post_run;
  p->item.drop = post_drop;
  p->fn = fn;
  p->arg = arg;
  int rc = exo_loop_enqueue(loop, &p->item);
  if (rc < 0)
    free(p);
  return rc;
}

int exo_loop_stop(struct exo_loop *loop, exo_loop_fn done, void *arg)
{
  pthread_mutex_lock(&loop->mu);
  bool expect = false;
  if (!atomic_compare_exchange_strong(&loop->stopping, &expect, true)) {
    pthread_mutex_unlock(&loop->mu);
    return -EALREADY;
  }
  loop->done = done;
  loop->done_arg = arg;
  /* NEW and DEAD loops never run the stop item: complete here. One dying right now
   * sees `stopping` in loop_died and completes there (mu orders the two). */
  int state = LOOP_NEW;
  bool now = atomic_compare_exchange_strong(&loop->state, &state, LOOP_STOPPED) ||
             state == LOOP_DEAD;
  pthread_mutex_unlock(&loop->mu);
  if (now) {
    if (done)
      done(loop, arg);
    return 0;
  }
  loop_push(loop, &loop->stop_item); /* after every item already enqueued */
  return 0;
}

int exo_loop_join(struct exo_loop *loop)
{
  if (!atomic_load(&loop->stopping))
    return -EINVAL;
  if (loop->joined)
    return 0;
  pthread_mutex_lock(&loop->mu);
  if (!loop->started) {
    pthread_mutex_unlock(&loop->mu);
    return 0; /* never started */
  }
  int st;
  while ((st = atomic_load(&loop->state)) != LOOP_STOPPED && st != LOOP_DEAD)
    pthread_cond_wait(&loop->cv, &loop->mu);
  pthread_t t = loop->thread;
  pthread_mutex_unlock(&loop->mu);
  int rc = pthread_join(t, NULL);
  if (rc != 0)
    return -rc;
  loop->joined = true;
  return 0;
}

void exo_loop_free(struct exo_loop *loop)
{
  if (!loop)
    return;
  if (!atomic_load(&loop->stopping))
    exo_loop_stop(loop, NULL, NULL);
  exo_loop_join(loop);
  /* Drop what never ran: items enqueued after the stop item or racing with it. */
  struct cds_wfcq_node *node;
  while ((node = __cds_wfcq_dequeue_blocking(&loop->head, &loop->tail)) != NULL) {
    struct exo_loop_item *item = caa_container_of(node, struct exo_loop_item, qnode);
    EXO_TSAN_ACQUIRE(item);
    if (item != &loop->stop_item && item != &loop->kill_item && item->drop)
      item->drop(item);
  }
  if (loop->wake_ev)
    event_free(loop->wake_ev);
  if (loop->turn_ev)
    event_free(loop->turn_ev);
  if (loop->base)
    event_base_free(loop->base);
  close(loop->efd);
  pthread_cond_destroy(&loop->cv);
  pthread_mutex_destroy(&loop->mu);
  free(loop);
}

void exo_loop_set_death_handler(struct exo_loop *loop, exo_loop_death_fn fn, void *arg)
{
  loop->death = fn;
  loop->death_arg = arg;
}

int exo_loop_renew_base(struct exo_loop *loop)
{
  if (!loop->in_death)
    return -EINVAL;
  event_free(loop->wake_ev);
  event_free(loop->turn_ev);
  event_base_free(loop->base);
  loop->wake_ev = loop->turn_ev = NULL;
  loop->base = NULL;
  return base_open(loop);
}

int exo_loop_kill(struct exo_loop *loop, enum exo_loop_kill_mode mode)
{
  int st = atomic_load(&loop->state);
  if (atomic_load(&loop->stopping) || st == LOOP_DEAD || st == LOOP_STOPPED)
    return -ESHUTDOWN;
  int none = -1;
  if (!atomic_compare_exchange_strong(&loop->kill_mode, &none, (int)mode))
    return -EALREADY;
  loop_push(loop, &loop->kill_item);
  return 0;
}

uint64_t exo_loop_deaths(const struct exo_loop *loop)
{
  return atomic_load(&((struct exo_loop *)loop)->deaths);
}

bool exo_loop_dead(const struct exo_loop *loop)
{
  return atomic_load(&((struct exo_loop *)loop)->state) == LOOP_DEAD;
}

void exo_loop_busy_enter(struct exo_loop *loop, const char *label)
{
  atomic_store_explicit(&loop->busy_label, label, memory_order_relaxed);
  atomic_fetch_add_explicit(&loop->busy_seq, 1, memory_order_release);
}

void exo_loop_busy_leave(struct exo_loop *loop)
{
  atomic_fetch_add_explicit(&loop->busy_seq, 1, memory_order_release);
}

bool exo_loop_stalled(struct exo_loop *loop, uint64_t now_ms, uint64_t limit_ms,
                      const char **label, uint64_t *for_ms)
{
  uint64_t seq = atomic_load_explicit(&loop->busy_seq, memory_order_acquire);
  if (!(seq & 1) || seq != loop->wd_seq) { /* idle, or another bracket since last look */
    loop->wd_seq = seq;
    loop->wd_since_ms = now_ms;
    loop->wd_reported = false;
    return false;
  }
  uint64_t open_ms = now_ms - loop->wd_since_ms;
  if (for_ms)
    *for_ms = open_ms;
  if (open_ms < limit_ms || loop->wd_reported)
    return false;
  loop->wd_reported = true;
  if (label)
    *label = atomic_load_explicit(&loop->busy_label, memory_order_relaxed);
  return true;
}

struct event_base *exo_loop_base(struct exo_loop *loop)
{
  return loop->base;
}

const char *exo_loop_name(const struct exo_loop *loop)
{
  return loop->name;
}

struct exo_loop *exo_loop_current(void)
{
  return tls_current;
}

bool exo_loop_is_current(const struct exo_loop *loop)
{
  return tls_current == loop;
}

uint64_t exo_loop_wakeups(const struct exo_loop *loop, uint64_t *same_thread)
{
  if (same_thread)
    *same_thread = atomic_load_explicit(&loop->wake_local, memory_order_relaxed);
  return atomic_load_explicit(&loop->wake_fd, memory_order_relaxed);
}
