/* tensor/pool.c: the fork-join pool of pool.h.
 * A run publishes one job (fn, arg, n, chunk) and a claim word: the run's tag in the
 * high bits, the next unclaimed row in the low EXO_POOL_ROW_BITS. Threads claim a chunk
 * by compare-and-swap on it; the job fields are re-published per run like a seqlock
 * (claim closed, fields written, claim opened), so a helper that wakes after its run
 * ended reads fields that may be newer, but then its CAS fails (the claim moved on) and
 * it runs nothing. The caller waits only for rows actually claimed (done == n).
 * Invariants: 1. only the caller writes the job, and only while the claim is closed;
 * 2. a chunk runs only after a CAS that saw the claim unchanged since the fields were
 * read; 3. the caller returns only when done == n, so fn and arg outlive every chunk.
 * Must not spin for long: helpers sleep after EXO_POOL_SPIN_NS without a job. */
#include "tensor/pool.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

/* Rows below 2^32 and chunks below 2^32 keep row + chunk inside the row bits; the tag's
 * 30 bits make a claim word repeat only after 2^30 runs (a helper stalled between its
 * read and its CAS for that long is the one way to fool the CAS). */
#define EXO_POOL_ROW_BITS 34
#define EXO_POOL_ROW_MASK ((UINT64_C(1) << EXO_POOL_ROW_BITS) - 1)
#define EXO_POOL_TAG_MASK ((UINT64_C(1) << (64 - EXO_POOL_ROW_BITS)) - 1)

/* A few microseconds: consecutive products (q, k, v; gate, up) arrive within it, and a
 * helper that waits longer gives the shared vCPU back. */
#define EXO_POOL_SPIN_NS 5000

struct exo_pool {
  int n_threads;
  int n_started; /* helpers running */
  pthread_t *threads;
  int64_t min_work;
  uint64_t seq; /* caller only: runs so far */

  pthread_mutex_t mu;
  pthread_cond_t wake;    /* helpers: gen moved (under mu) */
  pthread_cond_t done_cv; /* caller: done reached n (under mu) */
  int sleepers;           /* helpers waiting on wake (under mu) */
  _Atomic uint64_t gen;   /* last run's seq, stored under mu; helpers watch it */
  atomic_int stop;

  _Atomic uint64_t claim; /* tag << ROW_BITS | next row; row ROW_MASK: closed */
  _Atomic int64_t done;   /* rows of the current run finished */
  _Atomic(exo_pool_fn) fn;
  _Atomic(void *) arg;
  _Atomic int64_t n, chunk;
  atomic_int in_run; /* one caller at a time (asserted) */
};

static uint64_t exo_pool_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void exo_pool_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Claims and runs chunks of the current run until none is left. */
static void exo_pool_work(struct exo_pool *p)
{
  for (;;) {
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    const int64_t row = (int64_t)(c & EXO_POOL_ROW_MASK);
    const exo_pool_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
    void *arg = atomic_load_explicit(&p->arg, memory_order_relaxed);
    const int64_t n = atomic_load_explicit(&p->n, memory_order_relaxed);
    const int64_t chunk = atomic_load_explicit(&p->chunk, memory_order_relaxed);
    if (row >= n)
      return;
    /* Orders the field reads before the CAS: if any of them saw a newer run's value,
     * the claim had been closed before, and the CAS below fails. */
    atomic_thread_fence(memory_order_acquire);
    if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + (uint64_t)chunk,
                                               memory_order_acq_rel, memory_order_relaxed))
      continue;
    const int64_t end = n - row < chunk ? n : row + chunk;
    fn(arg, row, end);
    if (atomic_fetch_add_explicit(&p->done, end - row, memory_order_acq_rel) + (end - row) ==
        n) {
      pthread_mutex_lock(&p->mu); /* the caller may be asleep in exo_pool_run */
      pthread_cond_signal(&p->done_cv);
      pthread_mutex_unlock(&p->mu);
    }
  }
}

/* Waits (spin, then sleep) until gen differs from seen; returns it. */
static uint64_t exo_pool_wait_gen(struct exo_pool *p, uint64_t seen)
{
  const uint64_t t0 = exo_pool_now_ns();
  for (unsigned i = 1;; i++) {
    const uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
    if (g != seen)
      return g;
    if (i % 64 == 0 && exo_pool_now_ns() - t0 > EXO_POOL_SPIN_NS)
      break;
    exo_pool_pause();
  }
  pthread_mutex_lock(&p->mu);
  uint64_t g;
  while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
    p->sleepers++;
    pthread_cond_wait(&p->wake, &p->mu);
    p->sleepers--;
  }
  pthread_mutex_unlock(&p->mu);
  return g;
}

static void *exo_pool_main(void *arg)
{
  struct exo_pool *p = arg;
  uint64_t seen = 0;
  for (;;) {
    seen = exo_pool_wait_gen(p, seen);
    if (atomic_load_explicit(&p->stop, memory_order_acquire))
      return NULL;
    exo_pool_work(p);
  }
}

static void exo_pool_stop(struct exo_pool *p)
{
  pthread_mutex_lock(&p->mu);
  atomic_store_explicit(&p->stop, 1, memory_order_release);
  atomic_store_explicit(&p->gen, ++p->seq, memory_order_release);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->n_started; i++)
    pthread_join(p->threads[i], NULL);
  p->n_started = 0;
}

int exo_pool_new(int n_threads, struct exo_pool **out)
{
  *out = NULL;
  if (n_threads < 1 || n_threads > EXO_POOL_MAX_THREADS)
    return -EINVAL;
  struct exo_pool *p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  p->n_threads = n_threads;
  p->min_work = EXO_POOL_MIN_WORK;
  atomic_init(&p->claim, EXO_POOL_ROW_MASK);
  atomic_init(&p->n, 0);
  int rc = 0;
  if ((rc = -pthread_mutex_init(&p->mu, NULL))) {
    free(p);
    return rc;
  }
  if ((rc = -pthread_cond_init(&p->wake, NULL)))
    goto fail_mu;
  if ((rc = -pthread_cond_init(&p->done_cv, NULL)))
    goto fail_wake;
  if (n_threads > 1 && !(p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads))) {
    rc = -ENOMEM;
    goto fail_done;
  }
  for (int i = 0; i < n_threads - 1; i++) {
    if ((rc = -pthread_create(&p->threads[i], NULL, exo_pool_main, p)))
      goto fail_threads;
    p->n_started++;
  }
  *out = p;
  return 0;
fail_threads:
  exo_pool_stop(p);
  free(p->threads);
fail_done:
  pthread_cond_destroy(&p->done_cv);
fail_wake:
  pthread_cond_destroy(&p->wake);
fail_mu:
  pthread_mutex_destroy(&p->mu);
  free(p);
  return rc;
}

void exo_pool_free(struct exo_pool *p)
{
  if (!p)
    return;
  exo_pool_stop(p);
  free(p->threads);
  pthread_cond_destroy(&p->done_cv);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

int exo_pool_threads(const struct exo_pool *p)
{
  return p ? p->n_threads : 1;
}

void exo_pool_set_min_work(struct exo_pool *p, int64_t macs)
{
  p->min_work = macs < 0 ? 0 : macs;
}

int64_t exo_pool_min_work(const struct exo_pool *p)
{
  return p ? p->min_work : INT64_MAX;
}

void exo_pool_run(struct exo_pool *p, int64_t n, int64_t chunk, exo_pool_fn fn, void *arg)
{
  assert(n >= 0 && chunk >= 1);
  if (!p || p->n_threads == 1 || n <= chunk) {
    if (n > 0)
      fn(arg, 0, n);
    return;
  }
  assert(n < (INT64_C(1) << 32) && chunk < (INT64_C(1) << 32));
  const int was = atomic_exchange_explicit(&p->in_run, 1, memory_order_relaxed);
  assert(!was && "exo_pool_run: one caller at a time");
  (void)was;
  const uint64_t tag = (++p->seq & EXO_POOL_TAG_MASK) << EXO_POOL_ROW_BITS;
  /* Close the claim before rewriting the job (invariant 1). */
  atomic_store_explicit(&p->claim, tag | EXO_POOL_ROW_MASK, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
  atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
  atomic_store_explicit(&p->n, n, memory_order_relaxed);
  atomic_store_explicit(&p->chunk, chunk, memory_order_relaxed);
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  atomic_store_explicit(&p->claim, tag, memory_order_release);

  pthread_mutex_lock(&p->mu);
  atomic_store_explicit(&p->gen, p->seq, memory_order_release);
  if (p->sleepers)
    pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);

  exo_pool_work(p);

  /* Only chunks a helper claimed are left: they are running now, so a short spin
   * usually sees them end; a helper preempted mid-chunk gets the wait below. */
  const uint64_t t0 = exo_pool_now_ns();
  for (unsigned i = 1; atomic_load_explicit(&p->done, memory_order_acquire) != n; i++) {
    if (i % 64 == 0 && exo_pool_now_ns() - t0 > EXO_POOL_SPIN_NS) {
      pthread_mutex_lock(&p->mu);
      while (atomic_load_explicit(&p->done, memory_order_acquire) != n)
        pthread_cond_wait(&p->done_cv, &p->mu);
      pthread_mutex_unlock(&p->mu);
      break;
    }
    exo_pool_pause();
  }
  atomic_store_explicit(&p->in_run, 0, memory_order_relaxed);
}
