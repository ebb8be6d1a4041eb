/* tests/tensor/test_pool.c: tensor/pool.c, the fork-join pool of the matrix products:
 * every index of a run is covered exactly once for 1..4 threads and many (n, chunk)
 * shapes, runs right after each other (helpers still spinning or arriving late) and
 * after a pause (helpers asleep), the caller-alone cases, bad arguments, and teardown
 * with helpers asleep or never used. Also in the 'concurrency' suite (TSan in CI). */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/pool.h"
#include "tests/test.h"

#define MAX_N 5000

struct cover {
  atomic_int hits[MAX_N];
  atomic_int calls;
  atomic_int bad; /* a range outside [0, n) or empty */
  int64_t n;
};

static void cover_fn(void *arg, int64_t b, int64_t e)
{
  struct cover *c = arg;
  atomic_fetch_add(&c->calls, 1);
  if (b < 0 || e > c->n || b >= e) {
    atomic_fetch_add(&c->bad, 1);
    return;
  }
  for (int64_t i = b; i < e; i++)
    atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
}

/* Runs [0, n) in chunks and checks exact coverage; returns the number of fn calls. */
static int run_and_check(struct exo_pool *p, int64_t n, int64_t chunk)
{
  static struct cover c;
  for (int64_t i = 0; i < MAX_N; i++)
    atomic_store_explicit(&c.hits[i], 0, memory_order_relaxed);
  atomic_store(&c.calls, 0);
  atomic_store(&c.bad, 0);
  c.n = n;
  exo_pool_run(p, n, chunk, cover_fn, &c);
  int wrong = 0;
  for (int64_t i = 0; i < MAX_N; i++)
    wrong += atomic_load_explicit(&c.hits[i], memory_order_relaxed) != (i < n ? 1 : 0);
  CHECK_INT_EQ(wrong, 0);
  CHECK_INT_EQ(atomic_load(&c.bad), 0);
  const int calls = atomic_load(&c.calls);
  const int alone = exo_pool_threads(p) == 1 || n <= chunk;
  CHECK_INT_EQ(calls, n == 0 ? 0 : alone ? 1 : (n + chunk - 1) / chunk);
  return calls;
}

static void sleep_ms(int ms)
{
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

static void test_cover_shapes(void)
{
  static const int64_t ns[] = {0, 1, 2, 7, 48, 97, 256, 1000, 4999};
  static const int64_t chunks[] = {1, 3, 16, 48, 100, 5000};
  for (int t = 1; t <= 4; t++) {
    struct exo_pool *p = NULL;
    CHECK_INT_EQ(exo_pool_new(t, &p), 0);
    if (!p)
      return;
    CHECK_INT_EQ(exo_pool_threads(p), t);
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
      for (size_t j = 0; j < sizeof chunks / sizeof *chunks; j++)
        run_and_check(p, ns[i], chunks[j]);
    exo_pool_free(p);
  }
}

/* Back-to-back runs: helpers finishing one run while the next is published, helpers
 * waking after the caller did everything (their CAS must fail, not run stale chunks). */
static void test_back_to_back(void)
{
  struct exo_pool *p = NULL;
  CHECK_INT_EQ(exo_pool_new(3, &p), 0);
  if (!p)
    return;
  for (int r = 0; r < 400; r++)
    run_and_check(p, 2 + r % 61, 1 + r % 5);
  exo_pool_free(p);
}

/* Runs after the helpers have gone to sleep (past their spin): the condvar path. */
static void test_after_sleep(void)
{
  struct exo_pool *p = NULL;
  CHECK_INT_EQ(exo_pool_new(2, &p), 0);
  if (!p)
    return;
  for (int r = 0; r < 5; r++) {
    sleep_ms(3);
    run_and_check(p, 1000, 10);
  }
  exo_pool_free(p);
}

static void test_caller_alone(void)
{
  /* NULL pool and n <= chunk: one call on the caller with the whole range */
  CHECK_INT_EQ(run_and_check(NULL, 100, 7), 1);
  struct exo_pool *p = NULL;
  CHECK_INT_EQ(exo_pool_new(2, &p), 0);
  CHECK_INT_EQ(run_and_check(p, 100, 100), 1);
  CHECK_INT_EQ(run_and_check(p, 0, 5), 0);
  CHECK_INT_EQ(exo_pool_threads(NULL), 1);
  CHECK(exo_pool_min_work(NULL) == INT64_MAX);
  CHECK(exo_pool_min_work(p) == EXO_POOL_MIN_WORK);
  exo_pool_set_min_work(p, -5);
  CHECK(exo_pool_min_work(p) == 0);
  exo_pool_free(p);
}

static void test_bad_args_and_teardown(void)
{
  struct exo_pool *p = (struct exo_pool *)&p;
  CHECK_INT_EQ(exo_pool_new(0, &p), -EINVAL);
  CHECK(p == NULL);
  CHECK_INT_EQ(exo_pool_new(EXO_POOL_MAX_THREADS + 1, &p), -EINVAL);
  CHECK_INT_EQ(exo_pool_new(-3, &p), -EINVAL);
  exo_pool_free(NULL);
  /* never used, and just started (helpers may not have reached their wait yet) */
  CHECK_INT_EQ(exo_pool_new(4, &p), 0);
  exo_pool_free(p);
  CHECK_INT_EQ(exo_pool_new(1, &p), 0);
  CHECK_INT_EQ(run_and_check(p, 300, 7), 1); /* one thread: the caller, whole range */
  exo_pool_free(p);
}

int main(void)
{
  EXO_RUN(test_cover_shapes);
  EXO_RUN(test_back_to_back);
  EXO_RUN(test_after_sleep);
  EXO_RUN(test_caller_alone);
  EXO_RUN(test_bad_args_and_teardown);
  return exo_test_result();
}
