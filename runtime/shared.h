/* runtime/shared.h: read-mostly state shared across loop threads, over liburcu's memb
 * flavor: a versioned snapshot cell and a u64-keyed lock-free hash table (cds_lfht).
 * Readers never block or take locks; writers publish new immutable data and the old data
 * is freed after a grace period by liburcu's call_rcu thread. Must not know what the
 * data is: callers give a free function.
 *
 * Thread rules (liburcu's, made explicit):
 *  1. A thread that reads, publishes, inserts or removes is registered with liburcu: by
 *     exo_shared_thread_register() / _unregister() around its use, or else automatically
 *     on first use (and unregistered when the thread exits).
 *  2. Reads happen between exo_shared_read_lock() and exo_shared_read_unlock() (nesting ok);
 *     a pointer read inside is valid until the matching unlock and must not be kept.
 *  3. Inside a read section: no blocking, no exo_*_free of a cell or table.
 *  4. Snapshots and values are immutable once published/inserted.
 *  5. exo_rcu_cell_free / exo_rcu_table_free run when no other thread uses the object;
 *     they wait for pending frees (rcu_barrier), so they must not run in a callback. */
#ifndef EXO_RUNTIME_SHARED_H
#define EXO_RUNTIME_SHARED_H

#include <stddef.h>
#include <stdint.h>

typedef void (*exo_shared_free_fn)(void *data);

void exo_shared_thread_register(void);
void exo_shared_thread_unregister(void);
void exo_shared_read_lock(void);
void exo_shared_read_unlock(void);

/* ---- versioned snapshot cell --------------------------------------------------- */
struct exo_rcu_cell;

/* A cell holding no snapshot (version 0). free_fn frees snapshots (NULL: free()).
 * Returns NULL on allocation failure. */
struct exo_rcu_cell *exo_rcu_cell_new(exo_shared_free_fn free_fn);
/* Frees the current snapshot and the cell after pending frees ran. NULL ok. */
void exo_rcu_cell_free(struct exo_rcu_cell *cell);

/* Publishes snap (takes ownership; may be NULL) as version = previous + 1, into *version
 * (may be NULL). The previous snapshot is freed after a grace period. Writers may race:
 * they are serialized, and versions follow publication order. Returns 0 or -ENOMEM (snap
 * is then still the caller's). Must not be called inside a read section. */
int exo_rcu_cell_publish(struct exo_rcu_cell *cell, void *snap, uint64_t *version);

/* Inside a read section: the current snapshot (NULL before the first publish) and its
 * version into *version (may be NULL). Versions a thread sees never go backwards. */
const void *exo_rcu_cell_read(struct exo_rcu_cell *cell, uint64_t *version);

/* ---- u64-keyed table ------------------------------------------------------------- */
struct exo_rcu_table;

/* initial_buckets is rounded up to a power of two (>= 1) and stays fixed (see shared.c:
 * no auto-resize); size it for the expected entries, more only lengthens chains.
 * value_free frees values (NULL: free()). Returns NULL on allocation failure. */
struct exo_rcu_table *exo_rcu_table_new(size_t initial_buckets, exo_shared_free_fn value_free);
/* Removes every entry, waits for pending frees, frees the table. NULL ok. */
void exo_rcu_table_free(struct exo_rcu_table *t);

/* Inserts key -> value if key is absent. Takes ownership of value on success only.
 * Returns 0, -EEXIST, -ENOMEM. Registered thread; takes its own read section. */
int exo_rcu_table_insert(struct exo_rcu_table *t, uint64_t key, void *value);
/* Removes key; its value is freed after a grace period. Returns 0 or -ENOENT. */
int exo_rcu_table_remove(struct exo_rcu_table *t, uint64_t key);
/* Inside a read section: the value of key or NULL. */
void *exo_rcu_table_lookup(struct exo_rcu_table *t, uint64_t key);
/* Inside a read section: calls fn for each entry until fn returns non-zero; returns the
 * number of calls. Entries inserted or removed meanwhile may or may not be seen. */
size_t exo_rcu_table_for_each(struct exo_rcu_table *t,
                              int (*fn)(uint64_t key, void *value, void *arg), void *arg);
/* Approximate entry count (exact when quiescent). */
size_t exo_rcu_table_count(struct exo_rcu_table *t);

#endif
