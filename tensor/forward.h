/* tensor/forward.h: the llama-family forward pass over one model's layer range [a, b)
 * for a batch of sequences, each with its own KV cache and its own position.
 * Input: token ids when a == 0, else the hidden state handed over from range [.., a).
 * Output: the hidden state when b < L, else logits (final norm + LM head).
 * Knows nothing of requests, actors or sampling. Not thread-safe per scratch. */
#ifndef EXO_TENSOR_FORWARD_H
#define EXO_TENSOR_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/kv_cache.h"
#include "tensor/model.h"

/* One sequence of a batch: n_tokens new tokens at positions start_pos ..
 * start_pos + n_tokens - 1. start_pos must equal kv->n_pos (truncate first to redo a
 * step); the forward appends the new positions to kv. */
struct exo_forward_seq {
  struct exo_kv_cache *kv; /* this sequence's cache for this model's layer range */
  int n_tokens;            /* >= 1: a prompt chunk (prefill) or 1 (decode) */
  int start_pos;           /* position of the first new token */
};

/* Rows of tokens / hidden_in / out follow the sequences in order: sequence 0's
 * n_tokens rows, then sequence 1's, ... ("total" = sum of n_tokens). */
struct exo_forward_batch {
  int n_seqs;
  const struct exo_forward_seq *seqs;
  const int32_t *tokens;   /* [total], used when the model's layer_begin == 0 */
  const float *hidden_in;  /* [total, hidden], used when layer_begin > 0 */
  int logits_last_only;    /* b == L: logits for the last token of each sequence only */
  int no_head;             /* b == L: output the last layer's raw hidden state instead of
                              logits (no final norm, no LM head) */
  int batch_invariant;     /* every output row depends only on its own sequence (its
                              tokens or hidden_in rows, its cache), never on the other
                              sequences of the batch, their number or order, nor on how a
                              prompt is split into chunks: linear layers go through
                              exo_matmul_rows (each weight row read once for all rows) and
                              attention row by row. The bits differ slightly from the
                              default path (prefill and attention differ), so one
                              request keeps one setting; prefill is slower with it. */
};

struct exo_forward_scratch;

/* Work buffers for model m, sized for max_tokens rows per call and max_positions of
 * context (both grow on demand in exo_forward; decode after a same-sized prefill never
 * allocates). Checks that every weight m's range needs is present, vectors F32 and
 * matrices of a dtype tensor/matmul.c takes at their width.
 * Returns 0, -EINVAL/-ENOTSUP (message in err), -ENOMEM. */
int exo_forward_scratch_new(const struct exo_model *m, int max_tokens, int max_positions,
                            struct exo_forward_scratch **out, char *err, size_t errlen);
void exo_forward_scratch_free(struct exo_forward_scratch *s); /* NULL ok */

struct exo_pool;

/* Threads for the products of our own row kernels (batch_invariant products, and
 * decode rows of every dtype; OpenBLAS's sgemm keeps its own threads): n_threads - 1
 * helpers started now, owned by s (1: none, the default). Logits and hidden states are
 * bit-identical for every thread count (tensor/pool.h, matmul.h). Not during a forward.
 * Returns 0, -EINVAL (outside 1 .. EXO_POOL_MAX_THREADS), -ENOMEM, -EAGAIN. */
int exo_forward_scratch_set_threads(struct exo_forward_scratch *s, int n_threads);
/* The pool set_threads made (NULL with one thread): tests tune its min_work. */
struct exo_pool *exo_forward_scratch_pool(struct exo_forward_scratch *s);

/* Rows of out for this batch: total when b < L or no_head, else total or n_seqs
 * (logits_last_only); columns are hidden, or vocab for logits. */
int exo_forward_out_rows(const struct exo_model *m, const struct exo_forward_batch *b);
int exo_forward_out_cols(const struct exo_model *m, const struct exo_forward_batch *b);

/* Runs layers [m->layer_begin, m->layer_end) on the batch and writes out
 * [out_rows, out_cols]. On success each kv gains its n_tokens positions. On error
 * (-EINVAL bad batch or token id, -ENOSPC a cache at max_positions, -ENOMEM) err says
 * which sequence and why, and no cache is changed. s must have been made for m. */
int exo_forward(const struct exo_model *m, const struct exo_forward_batch *b, float *out,
                struct exo_forward_scratch *s, char *err, size_t errlen);

/* A KV cache shaped for m's layer range. */
int exo_forward_kv_new(const struct exo_model *m, int initial_capacity, int max_positions,
                       struct exo_kv_cache **out);

#endif
