/* tensor/pool.h: a small fork-join pool for the matrix products: n_threads - 1 helper
 * threads plus the caller split a range [0, n) (a product's output rows) into chunks
 * that each thread claims in turn, so they finish together however the cores are shared.
 * Owns its threads and knows nothing of matrices. Idle helpers sleep on a condition
 * variable after a spin of a few microseconds (the vCPUs are shared with other
 * processes). One caller at a time per pool; the caller never waits for a helper that
 * has not claimed work (a late helper finds the job gone and goes back to sleep). */
#ifndef EXO_TENSOR_POOL_H
#define EXO_TENSOR_POOL_H

#include <stdint.h>

#define EXO_POOL_MAX_THREADS 64

/* Products with fewer multiply-adds than this run on the caller alone: waking a helper
 * costs ~20-25 us on this machine (docs/BENCHMARKS.md, issue 9 section), about what
 * one thread needs for 1M multiply-adds of Q4_0. */
#define EXO_POOL_MIN_WORK ((int64_t)1 << 20)

struct exo_pool;

/* Runs fn(arg, begin, end) over disjoint [begin, end) covering [0, n) once each. */
typedef void (*exo_pool_fn)(void *arg, int64_t begin, int64_t end);

/* A pool of n_threads (1 .. EXO_POOL_MAX_THREADS, the caller included: n_threads - 1
 * helpers are started). Returns 0, -EINVAL, -ENOMEM, or the negated pthread_create error. */
int exo_pool_new(int n_threads, struct exo_pool **out);
void exo_pool_free(struct exo_pool *p); /* joins the helpers; NULL ok; not during a run */

int exo_pool_threads(const struct exo_pool *p); /* 1 for NULL */

/* The work below which a product stays on the caller (multiply-adds; default
 * EXO_POOL_MIN_WORK). Tests set 0 to split even the fixtures' tiny products. Set it
 * before sharing the pool's runs with anything else (plain field, caller's thread). */
void exo_pool_set_min_work(struct exo_pool *p, int64_t macs);
int64_t exo_pool_min_work(const struct exo_pool *p); /* INT64_MAX for NULL */

/* Calls fn over [0, n) in chunks of `chunk` (the last may be shorter) on the caller and
 * the helpers; returns when every chunk is done (their writes are visible then).
 * p NULL, one thread or n <= chunk: fn(arg, 0, n) on the caller. n >= 0, chunk >= 1. */
void exo_pool_run(struct exo_pool *p, int64_t n, int64_t chunk, exo_pool_fn fn, void *arg);

#endif
