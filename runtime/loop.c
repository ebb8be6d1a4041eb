/* runtime/loop.c: event-loop threads and their wait-free inbox (see loop.h for the
 * states and invariants). Must not know actors; must not block on the loop thread.
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

enum loop_state { LOOP_NEW = 0, LOOP_RUNNING, LOOP_STOPPED };

struct exo_loop {
  char name[16];
  struct event_base *base;
  struct event *wake_ev;   /* EV_READ|EV_PERSIST on efd */
  int efd;                 /* eventfd, non-blocking */
  struct __cds_wfcq_head head; /* one consumer: the loop thread */
  struct cds_wfcq_tail tail;
  pthread_t thread;
  _Atomic int state;       /* enum loop_state */
  atomic_bool stopping;    /* stop requested: enqueue refuses new items */
  bool quit;               /* loop thread only: the stop item ran */
  bool started, joined;
  exo_loop_fn done;
  void *done_arg;
  struct exo_loop_item stop_item;
  _Atomic uint64_t wake_fd, wake_local;
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
    event_active(loop->wake_ev, EV_READ, 1);
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
    if (loop->quit)
      return;
  }
  /* Budget spent (or a producer is mid-enqueue): producers saw a non-empty queue and
   * will not wake us, so schedule the next turn ourselves. */
  event_active(loop->wake_ev, EV_READ, 1);
}

static void loop_on_wake(evutil_socket_t fd, short what, void *arg)
{
  (void)what;
  struct exo_loop *loop = arg;
  uint64_t v;
  ssize_t n = read(fd, &v, sizeof v); /* resets the counter; EAGAIN when woken locally */
  (void)n;
  loop_run_items(loop);
}

static void loop_stop_run(struct exo_loop *loop, struct exo_loop_item *item)
{
  (void)item;
  loop->quit = true;
  event_base_loopbreak(loop->base);
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
  snprintf(loop->name, sizeof loop->name, "%s", name ? name : "loop");
  __cds_wfcq_init(&loop->head, &loop->tail);
  loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop->efd < 0) {
    rc = -errno;
    goto fail;
  }
  loop->base = event_base_new();
  if (!loop->base) {
    rc = -EIO;
    goto fail;
  }
  loop->wake_ev = event_new(loop->base, loop->efd, EV_READ | EV_PERSIST, loop_on_wake, loop);
  if (!loop->wake_ev || event_add(loop->wake_ev, NULL) != 0) {
    rc = -EIO;
    goto fail;
  }
  loop->stop_item.run = loop_stop_run;
  *out = loop;
  return 0;
fail:
  if (loop->wake_ev)
    event_free(loop->wake_ev);
  if (loop->base)
    event_base_free(loop->base);
  if (loop->efd >= 0)
    close(loop->efd);
  free(loop);
  return rc;
}

static void *loop_thread(void *arg)
{
  struct exo_loop *loop = arg;
  tls_current = loop;
  pthread_setname_np(pthread_self(), loop->name);
  event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
  if (loop->done)
    loop->done(loop, loop->done_arg);
  tls_current = NULL;
  atomic_store(&loop->state, LOOP_STOPPED);
  return NULL;
}

int exo_loop_start(struct exo_loop *loop)
{
  int expect = LOOP_NEW;
  if (atomic_load(&loop->stopping) ||
      !atomic_compare_exchange_strong(&loop->state, &expect, LOOP_RUNNING))
    return -EALREADY;
  int rc = pthread_create(&loop->thread, NULL, loop_thread, loop);
  loop->started = rc == 0;
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
  bool expect = false;
  if (!atomic_compare_exchange_strong(&loop->stopping, &expect, true))
    return -EALREADY;
  loop->done = done;
  loop->done_arg = arg;
  int state = LOOP_NEW;
  if (atomic_compare_exchange_strong(&loop->state, &state, LOOP_STOPPED)) {
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
  if (!loop->started)
    return 0; /* never started */
  int rc = pthread_join(loop->thread, NULL);
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
    if (item != &loop->stop_item && item->drop)
      item->drop(item);
  }
  event_free(loop->wake_ev);
  event_base_free(loop->base);
  close(loop->efd);
  free(loop);
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
