/* tests/runtime/test_shared.c: RCU-shared state under contention (suite concurrency, run
 * under ASan and TSan). Readers race a writer publishing versions and check every snapshot
 * is whole and versions never go backwards; table inserts/removes race lookups; all
 * memory is freed at the end (ASan's leak check), and TSan must report nothing. */
#include "runtime/shared.h"
#include "tests/test.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#define READERS 3
#define VERSIONS 3000
#define KEYS 256

struct snap {
  uint64_t version;
  uint64_t vals[8]; /* version * 8 + i */
  uint64_t sum;
};

static atomic_int stop_flag;
static atomic_int snaps_freed;
static struct exo_rcu_cell *cell;
static atomic_int reader_failures;
static atomic_int readers_ready; /* readers past their first read */

static void snap_free(void *p)
{
  atomic_fetch_add(&snaps_freed, 1);
  free(p);
}

static void *cell_reader(void *arg)
{
  long *reads = arg;
  uint64_t last = 0;
  exo_shared_thread_register();
  while (!atomic_load(&stop_flag)) {
    exo_shared_read_lock();
    uint64_t ver;
    const struct snap *s = exo_rcu_cell_read(cell, &ver);
    if (s) {
      uint64_t sum = 0;
      for (int i = 0; i < 8; i++) {
        if (s->vals[i] != s->version * 8 + (uint64_t)i)
          atomic_fetch_add(&reader_failures, 1);
        sum += s->vals[i];
      }
      if (sum != s->sum || s->version != ver || ver < last)
        atomic_fetch_add(&reader_failures, 1);
      last = ver;
    }
    exo_shared_read_unlock();
    if ((*reads)++ == 0)
      atomic_fetch_add(&readers_ready, 1);
  }
  exo_shared_thread_unregister();
  return NULL;
}

static void test_cell_versions(void)
{
  atomic_store(&stop_flag, 0);
  atomic_store(&snaps_freed, 0);
  atomic_store(&reader_failures, 0);
  atomic_store(&readers_ready, 0);
  cell = exo_rcu_cell_new(snap_free);
  CHECK(cell != NULL);
  if (!cell)
    return;
  exo_shared_thread_register();
  exo_shared_read_lock();
  uint64_t v0 = 99;
  CHECK(exo_rcu_cell_read(cell, &v0) == NULL);
  CHECK_INT_EQ(v0, 0);
  exo_shared_read_unlock();

  pthread_t th[READERS];
  long reads[READERS] = {0};
  for (int i = 0; i < READERS; i++)
    pthread_create(&th[i], NULL, cell_reader, &reads[i]);
  /* On 2 busy vCPUs the writer could finish before a reader runs at all; start racing
   * only once every reader is in its loop. */
  while (atomic_load(&readers_ready) < READERS)
    sched_yield();
  for (uint64_t v = 1; v <= VERSIONS; v++) {
    struct snap *s = malloc(sizeof *s);
    s->version = v;
    s->sum = 0;
    for (int i = 0; i < 8; i++) {
      s->vals[i] = v * 8 + (uint64_t)i;
      s->sum += s->vals[i];
    }
    uint64_t got = 0;
    CHECK_INT_EQ(exo_rcu_cell_publish(cell, s, &got), 0);
    if (got != v)
      CHECK_INT_EQ(got, v);
  }
  atomic_store(&stop_flag, 1);
  for (int i = 0; i < READERS; i++)
    pthread_join(th[i], NULL);
  CHECK_INT_EQ(atomic_load(&reader_failures), 0);
  for (int i = 0; i < READERS; i++)
    CHECK(reads[i] > 0);
  exo_shared_read_lock();
  uint64_t ver;
  const struct snap *s = exo_rcu_cell_read(cell, &ver);
  CHECK(s && s->version == VERSIONS && ver == VERSIONS);
  exo_shared_read_unlock();
  exo_rcu_cell_free(cell);
  cell = NULL;
  /* Every snapshot was freed exactly once: VERSIONS - 1 after grace periods, the last
   * by exo_rcu_cell_free. */
  CHECK_INT_EQ(atomic_load(&snaps_freed), VERSIONS);
  exo_shared_thread_unregister();
  fprintf(stderr, "  reads: %ld %ld %ld\n", reads[0], reads[1], reads[2]);
}

struct entry {
  uint64_t key;
  uint64_t check; /* ~key */
};

static struct exo_rcu_table *table;
static atomic_int values_freed, values_made;

static void entry_free(void *p)
{
  atomic_fetch_add(&values_freed, 1);
  free(p);
}

static int count_and_check(uint64_t key, void *value, void *arg)
{
  const struct entry *e = value;
  if (e->key != key || e->check != ~key)
    atomic_fetch_add(&reader_failures, 1);
  (*(size_t *)arg)++;
  return 0;
}

static void *table_reader(void *arg)
{
  (void)arg;
  uint64_t s = 88172645463325252ull;
  exo_shared_thread_register();
  while (!atomic_load(&stop_flag)) {
    exo_shared_read_lock();
    for (int i = 0; i < 64; i++) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      uint64_t k = s % KEYS;
      const struct entry *e = exo_rcu_table_lookup(table, k);
      if (e && (e->key != k || e->check != ~k))
        atomic_fetch_add(&reader_failures, 1);
    }
    size_t n = 0;
    exo_rcu_table_for_each(table, count_and_check, &n);
    if (n > KEYS)
      atomic_fetch_add(&reader_failures, 1);
    exo_shared_read_unlock();
  }
  exo_shared_thread_unregister();
  return NULL;
}

static void *table_writer(void *arg)
{
  uint64_t s = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
  exo_shared_thread_register();
  for (int i = 0; i < 20000; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    uint64_t k = s % KEYS;
    if (s & 0x100) {
      struct entry *e = malloc(sizeof *e);
      e->key = k;
      e->check = ~k;
      int rc = exo_rcu_table_insert(table, k, e);
      if (rc == 0)
        atomic_fetch_add(&values_made, 1);
      else
        free(e); /* -EEXIST: still ours */
      if (rc != 0 && rc != -EEXIST)
        atomic_fetch_add(&reader_failures, 1);
    } else {
      int rc = exo_rcu_table_remove(table, k);
      if (rc != 0 && rc != -ENOENT)
        atomic_fetch_add(&reader_failures, 1);
    }
  }
  exo_shared_thread_unregister();
  return NULL;
}

static void test_table_races(void)
{
  atomic_store(&stop_flag, 0);
  atomic_store(&reader_failures, 0);
  atomic_store(&values_freed, 0);
  atomic_store(&values_made, 0);
  table = exo_rcu_table_new(16, entry_free);
  CHECK(table != NULL);
  if (!table)
    return;
  exo_shared_thread_register();
  /* Single-threaded semantics first. */
  struct entry *a = malloc(sizeof *a), *b = malloc(sizeof *b);
  a->key = b->key = 7;
  a->check = b->check = ~7ull;
  CHECK_INT_EQ(exo_rcu_table_insert(table, 7, a), 0);
  CHECK_INT_EQ(exo_rcu_table_insert(table, 7, b), -EEXIST);
  free(b);
  exo_shared_read_lock();
  CHECK(exo_rcu_table_lookup(table, 7) == a);
  CHECK(exo_rcu_table_lookup(table, 8) == NULL);
  exo_shared_read_unlock();
  CHECK_INT_EQ(exo_rcu_table_count(table), 1);
  CHECK_INT_EQ(exo_rcu_table_remove(table, 7), 0);
  CHECK_INT_EQ(exo_rcu_table_remove(table, 7), -ENOENT);
  atomic_fetch_add(&values_made, 1);

  pthread_t r[2], w[2];
  for (int i = 0; i < 2; i++)
    pthread_create(&r[i], NULL, table_reader, NULL);
  for (int i = 0; i < 2; i++)
    pthread_create(&w[i], NULL, table_writer, (void *)(uintptr_t)(i + 1));
  for (int i = 0; i < 2; i++)
    pthread_join(w[i], NULL);
  atomic_store(&stop_flag, 1);
  for (int i = 0; i < 2; i++)
    pthread_join(r[i], NULL);
  CHECK_INT_EQ(atomic_load(&reader_failures), 0);
  size_t left = exo_rcu_table_count(table);
  CHECK(left <= KEYS);
  exo_rcu_table_free(table);
  table = NULL;
  CHECK_INT_EQ(atomic_load(&values_freed), atomic_load(&values_made));
  exo_shared_thread_unregister();
  fprintf(stderr, "  inserted %d values, %zu left at the end\n", atomic_load(&values_made), left);
}

int main(void)
{
  EXO_RUN(test_cell_versions);
  EXO_RUN(test_table_races);
  return exo_test_result();
}
