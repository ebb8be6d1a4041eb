/* tests/actors/test_origin_table.c: the origin's request table (actors/origin_table.c)
 * under the origin's access pattern: one writer thread files many requests, re-files each
 * under new wire ids (re-issues), updates their atomics and finishes them, while reader
 * threads walk and look up the table lock-free and check what they see. Every entry is
 * released exactly once, after the last reader could see it (ASan: no use after free;
 * TSan, concurrency suite: no race). Also the Retry-After estimate. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "actors/origin_table.h"
#include "runtime/shared.h"
#include "tests/test.h"

#define N_REQS 4000
#define LIVE 256
#define ATTEMPTS 3

struct req {
  struct exo_origin_entry e; /* first, as in the origin */
  uint64_t wire;
  uint64_t magic; /* written once before filing, read by readers through e only */
};

static atomic_int released;
static atomic_bool stop;
static atomic_long seen_any; /* entries the readers met, for the writer to wait on */
static struct exo_origin_table *table;

static void req_release(struct exo_origin_entry *e)
{
  struct req *r = (struct req *)e;
  r->magic = 0;
  free(r);
  atomic_fetch_add(&released, 1);
}

static uint64_t wire_of(uint64_t seq, uint32_t attempt)
{
  return (7ull << 32) | seq << 12 | attempt;
}

struct seen {
  long entries, bad;
};

static int check_entry(uint64_t wire, const struct exo_origin_entry *e, void *arg)
{
  struct seen *s = arg;
  s->entries++;
  atomic_fetch_add_explicit(&seen_any, 1, memory_order_relaxed);
  /* immutable fields were written before the first filing: client_req is the sequence */
  if (e->client_req != (wire >> 12 & 0xfffff) || e->n_prompt != 5 ||
      atomic_load_explicit(&e->generated, memory_order_relaxed) > ATTEMPTS * 10)
    s->bad++;
  return 0;
}

static void *reader(void *arg)
{
  struct seen *s = arg;
  exo_shared_thread_register();
  unsigned seed = 1;
  while (!atomic_load(&stop)) {
    exo_origin_table_for_each(table, check_entry, s);
    exo_shared_read_lock();
    for (int k = 0; k < 64; k++) {
      seed = seed * 1103515245u + 12345u;
      uint64_t seq = seed % N_REQS;
      uint64_t w = wire_of(seq, 1 + seed % ATTEMPTS);
      struct exo_origin_entry *e = exo_origin_table_lookup(table, w);
      if (e)
        check_entry(w, e, s);
    }
    exo_shared_read_unlock();
  }
  exo_shared_thread_unregister();
  return NULL;
}

static void test_table_concurrent(void)
{
  table = exo_origin_table_new(2 * LIVE);
  CHECK(table != NULL);
  atomic_store(&released, 0);
  atomic_store(&stop, false);
  atomic_store(&seen_any, 0);
  struct seen seen[2] = {{0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, reader, &seen[i]);
  exo_shared_thread_register();
  static struct req *live[LIVE];
  int filed = 0, finds = 0;
  for (uint64_t seq = 0; seq < N_REQS; seq++) {
    int slot = (int)(seq % LIVE);
    if (live[slot]) { /* finish the oldest: its id out, the writer's reference dropped */
      CHECK_INT_EQ(exo_origin_table_del(table, live[slot]->wire), 0);
      exo_origin_entry_drop(&live[slot]->e);
      live[slot] = NULL;
    }
    struct req *r = calloc(1, sizeof *r);
    exo_origin_entry_init(&r->e, req_release);
    r->e.client_req = seq;
    r->e.n_prompt = 5;
    r->magic = 42;
    for (uint32_t a = 1; a <= ATTEMPTS; a++) { /* re-issues: new id filed, old removed */
      uint64_t w = wire_of(seq, a);
      CHECK_INT_EQ(exo_origin_table_put(table, w, &r->e), 0);
      if (a > 1)
        CHECK_INT_EQ(exo_origin_table_del(table, r->wire), 0);
      r->wire = w;
      atomic_store_explicit(&r->e.attempts, a, memory_order_relaxed);
      for (int t = 0; t < 10; t++) { /* tokens: the O(1) lookup of the per-token path */
        finds += exo_origin_table_find(table, w) == &r->e;
        atomic_fetch_add_explicit(&r->e.generated, 1, memory_order_relaxed);
      }
    }
    CHECK_INT_EQ(exo_origin_table_put(table, r->wire, &r->e), -EEXIST);
    live[slot] = r;
    filed++;
  }
  CHECK_INT_EQ(finds, N_REQS * ATTEMPTS * 10);
  CHECK(exo_origin_table_count(table) == LIVE);
  /* the writer can finish before a reader is first scheduled (seen in CI on a loaded
   * host): the last LIVE entries stay filed until the readers have met some (5 s at most) */
  for (int t = 0; t < 5000 && atomic_load(&seen_any) == 0; t++)
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  atomic_store(&stop, true);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < LIVE; i++) {
    if (live[i]) {
      CHECK_INT_EQ(exo_origin_table_del(table, live[i]->wire), 0);
      exo_origin_entry_drop(&live[i]->e);
      live[i] = NULL;
    }
  }
  exo_origin_table_free(table); /* waits for the grace periods: every entry released */
  exo_shared_thread_unregister();
  CHECK_INT_EQ(atomic_load(&released), filed);
  CHECK_INT_EQ(seen[0].bad + seen[1].bad, 0);
  fprintf(stderr, "# %d requests x %d attempts; readers saw %ld entries, %ld bad\n", filed,
          ATTEMPTS, seen[0].entries + seen[1].entries, seen[0].bad + seen[1].bad);
  CHECK(seen[0].entries + seen[1].entries > 0);
}

static void test_retry_after(void)
{
  struct exo_rate_window w = {0};
  uint64_t s = 1000000000ull, t = 100 * s;
  /* no history: ahead / guess, at least 1 */
  CHECK_INT_EQ(exo_rate_window_retry_s(&w, 1, 32, t), 1);
  CHECK_INT_EQ(exo_rate_window_retry_s(&w, 100, 10, t), 10);
  /* 10 completions over the last 5 s: 2/s -> 20 ahead wait 10 s */
  for (int i = 0; i < 10; i++)
    exo_rate_window_note(&w, t - 5 * s + (uint64_t)i * s / 2);
  CHECK_INT_EQ(exo_rate_window_retry_s(&w, 20, 1, t), 10);
  CHECK_INT_EQ(exo_rate_window_retry_s(&w, 1, 1, t), 1);
  CHECK_INT_EQ(exo_rate_window_retry_s(&w, 1000000, 1, t), 600);
  /* all older than a minute: back to the guess */
  CHECK_INT_EQ(exo_rate_window_retry_s(&w, 20, 4, t + 120 * s), 5);
}

int main(void)
{
  EXO_RUN(test_table_concurrent);
  EXO_RUN(test_retry_after);
  return exo_test_result();
}
