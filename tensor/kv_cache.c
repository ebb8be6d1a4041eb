/* tensor/kv_cache.c: growth, rollback and accounting of one sequence's KV cache.
 * Invariants: 0 <= n_pos <= capacity <= max_positions; every k[l], v[l] holds
 * capacity * kv_dim floats. The forward pass writes rows; this file never reads them. */
#include "tensor/kv_cache.h"

#include <errno.h>
#include <stdlib.h>

#define EXO_KV_DEFAULT_CAPACITY 64

int exo_kv_cache_new(int n_layers, int kv_dim, int initial_capacity, int max_positions,
                     struct exo_kv_cache **out)
{
  *out = NULL;
  if (n_layers <= 0 || kv_dim <= 0 || max_positions <= 0 || initial_capacity < 0)
    return -EINVAL;
  int cap = initial_capacity ? initial_capacity : EXO_KV_DEFAULT_CAPACITY;
  if (cap > max_positions)
    cap = max_positions;
  struct exo_kv_cache *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->n_layers = n_layers;
  c->kv_dim = kv_dim;
  c->max_positions = max_positions;
  c->k = calloc((size_t)n_layers, sizeof *c->k);
  c->v = calloc((size_t)n_layers, sizeof *c->v);
  if (!c->k || !c->v)
    goto fail;
  for (int l = 0; l < n_layers; l++) {
    c->k[l] = malloc((size_t)cap * kv_dim * sizeof(float));
    c->v[l] = malloc((size_t)cap * kv_dim * sizeof(float));
    if (!c->k[l] || !c->v[l])
      goto fail;
  }
  c->capacity = cap;
  *out = c;
  return 0;
fail:
  exo_kv_cache_free(c);
  return -ENOMEM;
}

void exo_kv_cache_free(struct exo_kv_cache *c)
{
  if (!c)
    return;
  for (int l = 0; l < c->n_layers; l++) {
    if (c->k)
      free(c->k[l]);
    if (c->v)
      free(c->v[l]);
  }
  free(c->k);
  free(c->v);
  free(c);
}

int exo_kv_cache_reserve(struct exo_kv_cache *c, int n_positions)
{
  if (n_positions < 0)
    return -EINVAL;
  if (n_positions <= c->capacity)
    return 0;
  if (n_positions > c->max_positions)
    return -ENOSPC;
  int cap = c->capacity;
  while (cap < n_positions)
    cap = cap > c->max_positions / 2 ? c->max_positions : cap * 2;
  /* realloc layer by layer: a failure part way leaves some layers bigger than
   * capacity says, which is harmless (capacity is a lower bound of every buffer). */
  const size_t bytes = (size_t)cap * c->kv_dim * sizeof(float);
  for (int l = 0; l < c->n_layers; l++) {
    float *k = realloc(c->k[l], bytes);
    if (!k)
      return -ENOMEM;
    c->k[l] = k;
    float *v = realloc(c->v[l], bytes);
    if (!v)
      return -ENOMEM;
    c->v[l] = v;
  }
  c->capacity = cap;
  return 0;
}

int exo_kv_cache_truncate(struct exo_kv_cache *c, int n_positions)
{
  if (n_positions < 0 || n_positions > c->n_pos)
    return -EINVAL;
  c->n_pos = n_positions;
  return 0;
}

size_t exo_kv_cache_bytes_for(int n_layers, int kv_dim, int n_positions)
{
  return 2u * (size_t)n_layers * (size_t)kv_dim * (size_t)n_positions * sizeof(float);
}

size_t exo_kv_cache_bytes(const struct exo_kv_cache *c)
{
  return exo_kv_cache_bytes_for(c->n_layers, c->kv_dim, c->capacity);
}
