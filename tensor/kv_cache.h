/* tensor/kv_cache.h: the key/value cache of one sequence for one layer range.
 * Holds post-RoPE keys and values, per local layer [positions, n_kv_heads * head_dim].
 * Grows by doubling up to max_positions; truncate rolls back (retries re-run a step).
 * Knows nothing of requests or actors: the caller maps a request to its cache.
 *
 *   new -> (reserve -> forward appends n positions)* -> truncate(n) -> ... -> free */
#ifndef EXO_TENSOR_KV_CACHE_H
#define EXO_TENSOR_KV_CACHE_H

#include <stddef.h>

struct exo_kv_cache {
  int n_layers;      /* local layers (b - a) */
  int kv_dim;        /* n_kv_heads * head_dim */
  int n_pos;         /* positions filled: 0 .. n_pos-1 */
  int capacity;      /* positions allocated per layer */
  int max_positions; /* hard ceiling on capacity */
  float **k;         /* [n_layers][capacity * kv_dim] */
  float **v;         /* [n_layers][capacity * kv_dim] */
};

/* Allocates a cache with room for initial_capacity positions (0 picks a small default;
 * clamped to max_positions). Returns 0, -EINVAL (a dimension <= 0) or -ENOMEM;
 * *out is the caller's to exo_kv_cache_free. */
int exo_kv_cache_new(int n_layers, int kv_dim, int initial_capacity, int max_positions,
                     struct exo_kv_cache **out);
void exo_kv_cache_free(struct exo_kv_cache *c); /* NULL ok */

/* Makes room for n_positions in total (filled or not). Returns 0, -ENOSPC beyond
 * max_positions, -ENOMEM (cache unchanged). */
int exo_kv_cache_reserve(struct exo_kv_cache *c, int n_positions);

/* Forgets positions >= n_positions (capacity kept). Returns 0 or -EINVAL when
 * n_positions is negative or beyond n_pos. */
int exo_kv_cache_truncate(struct exo_kv_cache *c, int n_positions);

/* Bytes held now (allocated capacity), and bytes a cache of the given shape needs for
 * n_positions, for memory budgeting before anything is allocated. */
size_t exo_kv_cache_bytes(const struct exo_kv_cache *c);
size_t exo_kv_cache_bytes_for(int n_layers, int kv_dim, int n_positions);

#endif
