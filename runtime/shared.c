/* runtime/shared.c: snapshot cell and u64 table over liburcu memb (rules in shared.h).
 * The cell's pointer is published and read with C11 atomics (exchange acq_rel, load
 * acquire): the same orderings rcu_xchg_pointer/rcu_dereference give on x86, but visible
 * to ThreadSanitizer, which cannot see liburcu's volatile loads as synchronization.
 * liburcu's grace periods and call_rcu queue run in uninstrumented library code, so under
 * TSan we state the happens-before edges they guarantee with __tsan_release/acquire on our
 * own objects (read unlock -> deferred free; enqueue -> callback; insert -> lookup). These
 * annotations compile to nothing outside TSan builds; no race report is suppressed. */
#include "runtime/shared.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <urcu/urcu-memb.h>

#include <urcu/rculfhash.h>

#if defined(__SANITIZE_THREAD__)
#define EXO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EXO_TSAN 1
#endif
#endif

#ifdef EXO_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
/* One sync object stands for "a grace period ended": every read unlock releases it and
 * every deferred free acquires it, the edge synchronize_rcu provides. */
static char exo_tsan_grace;
#define TSAN_RELEASE(p) __tsan_release((void *)(p))

/* The only suppression: urcu_memb_barrier() callocs a completion object that liburcu's
 * call_rcu thread frees after a handshake in uninstrumented liburcu code (futex and
 * uatomic), so TSan sees calloc in one thread and free in another with no edge. Both
 * stacks are liburcu's own; the pattern names liburcu's function, never ours. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
  return "race:urcu_memb_barrier\n";
}
#define TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define TSAN_RELEASE(p) ((void)0)
#define TSAN_ACQUIRE(p) ((void)0)
#endif

/* Threads that never called exo_shared_thread_register (loop threads, a command's main
 * thread) are registered on first use and unregistered by a thread-exit destructor, so
 * an actor can read shared state from whatever loop it was placed on. */
static _Thread_local int tls_registered; /* 1: by us (destructor), 2: by the caller */
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_unregister(void *arg)
{
  (void)arg;
  if (tls_registered == 1) {
    urcu_memb_unregister_thread();
    tls_registered = 0;
  }
}

static void tls_key_make(void)
{
  (void)pthread_key_create(&tls_key, tls_unregister);
}

static void ensure_registered(void)
{
  if (tls_registered)
    return;
  pthread_once(&tls_once, tls_key_make);
  urcu_memb_register_thread();
  tls_registered = 1;
  (void)pthread_setspecific(tls_key, &tls_registered); /* non-NULL: the destructor runs */
}

void exo_shared_thread_register(void)
{
  if (tls_registered)
    return;
  urcu_memb_register_thread();
  tls_registered = 2;
}

void exo_shared_thread_unregister(void)
{
  if (tls_registered) {
    urcu_memb_unregister_thread();
    tls_registered = 0;
  }
}

void exo_shared_read_lock(void)
{
  ensure_registered();
  urcu_memb_read_lock();
}

void exo_shared_read_unlock(void)
{
  TSAN_RELEASE(&exo_tsan_grace);
  urcu_memb_read_unlock();
}

/* ---- cell ------------------------------------------------------------------------- */

struct exo_rcu_version {
  struct rcu_head head;
  uint64_t version;
  void *snap;
  exo_shared_free_fn free_fn;
};

struct exo_rcu_cell {
  _Atomic(struct exo_rcu_version *) current;
  pthread_mutex_t write_lock; /* serializes writers so versions follow publish order */
  uint64_t version;           /* last version published; under write_lock */
  exo_shared_free_fn free_fn;
};

static void free_version_now(struct exo_rcu_version *v)
{
  if (!v)
    return;
  if (v->snap)
    v->free_fn(v->snap);
  free(v);
}

static void free_version_cb(struct rcu_head *head)
{
  struct exo_rcu_version *v = caa_container_of(head, struct exo_rcu_version, head);
  TSAN_ACQUIRE(&exo_tsan_grace);
  TSAN_ACQUIRE(v);
  free_version_now(v);
}

static void default_free(void *p)
{
  free(p);
}

struct exo_rcu_cell *exo_rcu_cell_new(exo_shared_free_fn free_fn)
{
  struct exo_rcu_cell *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  if (pthread_mutex_init(&c->write_lock, NULL) != 0) {
    free(c);
    return NULL;
  }
  atomic_init(&c->current, NULL);
  c->free_fn = free_fn ? free_fn : default_free;
  return c;
}

void exo_rcu_cell_free(struct exo_rcu_cell *cell)
{
  if (!cell)
    return;
  /* Pending callbacks may still free versions of this cell; wait for them first. */
  urcu_memb_barrier();
  free_version_now(atomic_load_explicit(&cell->current, memory_order_acquire));
  pthread_mutex_destroy(&cell->write_lock);
  free(cell);
}

int exo_rcu_cell_publish(struct exo_rcu_cell *cell, void *snap, uint64_t *version)
{
  ensure_registered();
  struct exo_rcu_version *v = malloc(sizeof *v);
  if (!v)
    return -ENOMEM;
  v->snap = snap;
  v->free_fn = cell->free_fn;
  pthread_mutex_lock(&cell->write_lock);
  v->version = ++cell->version;
  struct exo_rcu_version *old = atomic_exchange_explicit(&cell->current, v, memory_order_acq_rel);
  pthread_mutex_unlock(&cell->write_lock);
  if (version)
    *version = v->version;
  if (old) {
    TSAN_RELEASE(old);
    urcu_memb_call_rcu(&old->head, free_version_cb);
  }
  return 0;
}

const void *exo_rcu_cell_read(struct exo_rcu_cell *cell, uint64_t *version)
{
  struct exo_rcu_version *v = atomic_load_explicit(&cell->current, memory_order_acquire);
  if (version)
    *version = v ? v->version : 0;
  return v ? v->snap : NULL;
}

/* ---- table ------------------------------------------------------------------------ */

struct exo_rcu_entry {
  struct cds_lfht_node node;
  struct rcu_head head;
  uint64_t key;
  void *value;
  exo_shared_free_fn value_free;
};

struct exo_rcu_table {
  struct cds_lfht *ht;
  exo_shared_free_fn value_free;
};

/* splitmix64 finalizer: keys are often small sequential ids; spread them over buckets. */
static unsigned long hash_key(uint64_t k)
{
  k ^= k >> 30;
  k *= 0xbf58476d1ce4e5b9ull;
  k ^= k >> 27;
  k *= 0x94d049bb133111ebull;
  k ^= k >> 31;
  return (unsigned long)k;
}

static int match_key(struct cds_lfht_node *node, const void *key)
{
  struct exo_rcu_entry *e = caa_container_of(node, struct exo_rcu_entry, node);
  TSAN_ACQUIRE(e);
  return e->key == *(const uint64_t *)key;
}

static void free_entry_cb(struct rcu_head *head)
{
  struct exo_rcu_entry *e = caa_container_of(head, struct exo_rcu_entry, head);
  TSAN_ACQUIRE(&exo_tsan_grace);
  TSAN_ACQUIRE(e);
  e->value_free(e->value);
  free(e);
}

struct exo_rcu_table *exo_rcu_table_new(size_t initial_buckets, exo_shared_free_fn value_free)
{
  unsigned long n = 1;
  while (n < initial_buckets && n < (1ul << 30))
    n <<= 1;
  struct exo_rcu_table *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  t->value_free = value_free ? value_free : default_free;
  /* No CDS_LFHT_AUTO_RESIZE: its worker queue hands work items between threads inside
   * liburcu-cds (uninstrumented), which TSan reports as races on liburcu's own memory.
   * Callers size the table for its load (request table: in-flight requests); past it
   * chains grow longer, lookups stay correct. */
  t->ht = cds_lfht_new_flavor(n, n, n, CDS_LFHT_ACCOUNTING, &urcu_memb_flavor, NULL);
  if (!t->ht) {
    free(t);
    return NULL;
  }
  return t;
}

void exo_rcu_table_free(struct exo_rcu_table *t)
{
  if (!t)
    return;
  struct cds_lfht_iter it;
  struct exo_rcu_entry *e;
  urcu_memb_read_lock();
  cds_lfht_for_each_entry(t->ht, &it, e, node)
  {
    if (cds_lfht_del(t->ht, &e->node) == 0) {
      TSAN_RELEASE(e);
      urcu_memb_call_rcu(&e->head, free_entry_cb);
    }
  }
  exo_shared_read_unlock();
  urcu_memb_barrier();
  cds_lfht_destroy(t->ht, NULL);
  free(t);
}

int exo_rcu_table_insert(struct exo_rcu_table *t, uint64_t key, void *value)
{
  ensure_registered();
  struct exo_rcu_entry *e = malloc(sizeof *e);
  if (!e)
    return -ENOMEM;
  cds_lfht_node_init(&e->node);
  e->key = key;
  e->value = value;
  e->value_free = t->value_free;
  TSAN_RELEASE(e);
  urcu_memb_read_lock();
  struct cds_lfht_node *got = cds_lfht_add_unique(t->ht, hash_key(key), match_key, &key, &e->node);
  exo_shared_read_unlock();
  if (got != &e->node) {
    free(e); /* never visible to anyone: free at once */
    return -EEXIST;
  }
  return 0;
}

int exo_rcu_table_remove(struct exo_rcu_table *t, uint64_t key)
{
  ensure_registered();
  struct cds_lfht_iter it;
  int rc = -ENOENT;
  urcu_memb_read_lock();
  cds_lfht_lookup(t->ht, hash_key(key), match_key, &key, &it);
  struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
  /* cds_lfht_del fails if a racing remover got there first: only one frees. */
  if (n && cds_lfht_del(t->ht, n) == 0) {
    struct exo_rcu_entry *e = caa_container_of(n, struct exo_rcu_entry, node);
    TSAN_RELEASE(e);
    urcu_memb_call_rcu(&e->head, free_entry_cb);
    rc = 0;
  }
  exo_shared_read_unlock();
  return rc;
}

void *exo_rcu_table_lookup(struct exo_rcu_table *t, uint64_t key)
{
  struct cds_lfht_iter it;
  cds_lfht_lookup(t->ht, hash_key(key), match_key, &key, &it);
  struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
  return n ? caa_container_of(n, struct exo_rcu_entry, node)->value : NULL;
}

size_t exo_rcu_table_for_each(struct exo_rcu_table *t,
                              int (*fn)(uint64_t key, void *value, void *arg), void *arg)
{
  struct cds_lfht_iter it;
  struct exo_rcu_entry *e;
  size_t calls = 0;
  cds_lfht_for_each_entry(t->ht, &it, e, node)
  {
    TSAN_ACQUIRE(e);
    calls++;
    if (fn(e->key, e->value, arg))
      break;
  }
  return calls;
}

size_t exo_rcu_table_count(struct exo_rcu_table *t)
{
  long before, after;
  unsigned long count;
  urcu_memb_read_lock();
  cds_lfht_count_nodes(t->ht, &before, &count, &after);
  exo_shared_read_unlock();
  return count;
}
