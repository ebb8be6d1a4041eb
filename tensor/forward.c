/* tensor/forward.c: the llama-family forward pass, readable top to bottom (llama2.c
 * style): embed -> for each layer [rmsnorm, q/k/v (+bias), RoPE, causal GQA attention
 * over the KV cache, o_proj, residual, rmsnorm, SwiGLU MLP, residual] -> final norm ->
 * LM head. All sequences of a batch share the matrix products (one sgemm over every
 * row); attention runs per sequence against its own cache. With batch_invariant the
 * products go through exo_matmul_rows and attention always row by row, so a row's bits
 * never depend on the rest of the batch (norms, RoPE, SwiGLU are per row anyway).
 * Must not allocate in a decode step once the scratch has grown, and must not change a
 * cache when it returns an error. */
#include "common/err.h"
#include "tensor/forward.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/matmul.h"
#include "tensor/ops.h"
#include "tensor/pool.h"
#include "tensor/quant.h"

/* Attention of a prompt chunk this long or longer goes through sgemm, a block of this
 * many query rows at a time (bounds the scores buffer to EXO_ATTN_BLOCK x context);
 * shorter chunks (decode) go row by row, a KV head's query group at a time. */
#define EXO_ATTN_GEMM_MIN 16
#define EXO_ATTN_BLOCK 64

struct exo_forward_scratch {
  const struct exo_model *model;
  int cap_tokens;    /* rows every per-token buffer below holds */
  int cap_positions; /* context positions scores has room for */
  float *x;          /* (cap_tokens, hidden) residual stream */
  float *xb;         /* (cap_tokens, hidden) normed input of a block */
  float *q;          /* (cap_tokens, n_heads * head_dim) */
  float *k;          /* (cap_tokens, kv_dim) */
  float *v;          /* (cap_tokens, kv_dim) */
  float *att;        /* (cap_tokens, n_heads * head_dim) attention output, heads concatenated */
  float *hb;         /* (cap_tokens, intermediate) gate, then silu(gate) * up */
  float *hb2;        /* (cap_tokens, intermediate) up */
  float *scores;     /* (max(EXO_ATTN_BLOCK, heads per KV head), cap_positions) */
  float *inv_freq;   /* (head_dim / 2) RoPE frequencies */
  struct exo_matmul_ws ws; /* q8 activation + widened weight tile, reserved up front;
                              ws.pool: owned, from exo_forward_scratch_set_threads */
};

/* Vectors (rows == 1: norms, biases) must be F32; matrices may be any dtype the
 * kernels of tensor/matmul.c take at this width. */
static int exo_forward_check_weight(const struct exo_weight *w, int64_t rows, int64_t cols,
                                    int layer, const char *name, char *err, size_t errlen)
{
  if (!w->data) {
    exo_errf(err, errlen, "layer %d: weight %s missing", layer, name);
    return -EINVAL;
  }
  if (rows == 1 && w->dtype != EXO_DTYPE_F32) {
    exo_errf(err, errlen, "layer %d: weight %s is not F32 (dtype %d)", layer, name,
                    (int)w->dtype);
    return -ENOTSUP;
  }
  if (exo_dtype_row_bytes(w->dtype, cols) == 0) {
    exo_errf(err, errlen, "layer %d: weight %s: dtype %d cannot hold rows of %lld values "
                    "(block formats need a multiple of %d)", layer, name, (int)w->dtype,
                    (long long)cols, EXO_QK);
    return -ENOTSUP;
  }
  if (w->rows != rows || w->cols != cols) {
    exo_errf(err, errlen,
                    "layer %d: weight %s has shape [%lld, %lld], expected [%lld, %lld]", layer,
                    name, (long long)w->rows, (long long)w->cols, (long long)rows,
                    (long long)cols);
    return -EINVAL;
  }
  return 0;
}

/* Everything exo_forward relies on, checked once so the hot path trusts the model. */
static int exo_forward_check_model(const struct exo_model *m, char *err, size_t errlen)
{
  const struct exo_model_config *c = &m->cfg;
  if (c->hidden_size <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
      c->head_dim % 2 || c->intermediate_size <= 0 || c->vocab_size <= 0 ||
      c->n_heads % c->n_kv_heads) {
    exo_errf(err, errlen,
                    "config: unusable dims (hidden %d, heads %d, kv heads %d, head_dim %d, "
                    "intermediate %d, vocab %d)",
                    c->hidden_size, c->n_heads, c->n_kv_heads, c->head_dim,
                    c->intermediate_size, c->vocab_size);
    return -EINVAL;
  }
  if (m->layer_begin < 0 || m->layer_end > c->n_layers || m->layer_begin >= m->layer_end) {
    exo_errf(err, errlen, "layer range [%d, %d) outside [0, %d)", m->layer_begin,
                    m->layer_end, c->n_layers);
    return -EINVAL;
  }
  const int64_t h = c->hidden_size, qd = (int64_t)c->n_heads * c->head_dim,
                kvd = (int64_t)c->n_kv_heads * c->head_dim, ff = c->intermediate_size;
  int rc;
  if (m->layer_begin == 0 &&
      (rc = exo_forward_check_weight(&m->embed, c->vocab_size, h, 0, "embed_tokens", err,
                                     errlen)))
    return rc;
  if (m->layer_end == c->n_layers) {
    if ((rc = exo_forward_check_weight(&m->final_norm, 1, h, c->n_layers, "norm", err,
                                       errlen)) ||
        (rc = exo_forward_check_weight(&m->lm_head, c->vocab_size, h, c->n_layers, "lm_head",
                                       err, errlen)))
      return rc;
  }
  for (int i = m->layer_begin; i < m->layer_end; i++) {
    const struct exo_layer_weights *w = &m->layers[i - m->layer_begin];
    if ((rc = exo_forward_check_weight(&w->attn_norm, 1, h, i, "input_layernorm", err,
                                       errlen)) ||
        (rc = exo_forward_check_weight(&w->wq, qd, h, i, "q_proj", err, errlen)) ||
        (rc = exo_forward_check_weight(&w->wk, kvd, h, i, "k_proj", err, errlen)) ||
        (rc = exo_forward_check_weight(&w->wv, kvd, h, i, "v_proj", err, errlen)) ||
        (rc = exo_forward_check_weight(&w->wo, h, qd, i, "o_proj", err, errlen)) ||
        (rc = exo_forward_check_weight(&w->ffn_norm, 1, h, i, "post_attention_layernorm",
                                       err, errlen)) ||
        (rc = exo_forward_check_weight(&w->w_gate, ff, h, i, "gate_proj", err, errlen)) ||
        (rc = exo_forward_check_weight(&w->w_up, ff, h, i, "up_proj", err, errlen)) ||
        (rc = exo_forward_check_weight(&w->w_down, h, ff, i, "down_proj", err, errlen)))
      return rc;
    if (c->attention_bias &&
        ((rc = exo_forward_check_weight(&w->bq, 1, qd, i, "q_proj.bias", err, errlen)) ||
         (rc = exo_forward_check_weight(&w->bk, 1, kvd, i, "k_proj.bias", err, errlen)) ||
         (rc = exo_forward_check_weight(&w->bv, 1, kvd, i, "v_proj.bias", err, errlen))))
      return rc;
    if (c->o_proj_bias &&
        (rc = exo_forward_check_weight(&w->bo, 1, h, i, "o_proj.bias", err, errlen)))
      return rc;
  }
  return 0;
}

static int exo_forward_grow(float **p, size_t n)
{
  float *q = realloc(*p, n * sizeof(float));
  if (!q)
    return -ENOMEM;
  *p = q;
  return 0;
}

static int exo_forward_scratch_reserve(struct exo_forward_scratch *s, int tokens, int positions)
{
  const struct exo_model_config *c = &s->model->cfg;
  if (tokens > s->cap_tokens) {
    const size_t t = (size_t)tokens, h = (size_t)c->hidden_size,
                 qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->intermediate_size;
    if (exo_forward_grow(&s->x, t * h) || exo_forward_grow(&s->xb, t * h) ||
        exo_forward_grow(&s->q, t * qd) || exo_forward_grow(&s->k, t * kvd) ||
        exo_forward_grow(&s->v, t * kvd) || exo_forward_grow(&s->att, t * qd) ||
        exo_forward_grow(&s->hb, t * ff) || exo_forward_grow(&s->hb2, t * ff))
      return -ENOMEM; /* buffers grown so far stay valid; cap_tokens unchanged */
    s->cap_tokens = tokens;
  }
  if (positions > s->cap_positions) {
    const int group = c->n_heads / c->n_kv_heads;
    const size_t rows = group > EXO_ATTN_BLOCK ? (size_t)group : EXO_ATTN_BLOCK;
    if (exo_forward_grow(&s->scores, rows * (size_t)positions))
      return -ENOMEM;
    s->cap_positions = positions;
  }
  return 0;
}

int exo_forward_scratch_new(const struct exo_model *m, int max_tokens, int max_positions,
                            struct exo_forward_scratch **out, char *err, size_t errlen)
{
  *out = NULL;
  int rc = exo_forward_check_model(m, err, errlen);
  if (rc)
    return rc;
  struct exo_forward_scratch *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->model = m;
  s->inv_freq = malloc((size_t)(m->cfg.head_dim / 2) * sizeof(float));
  if (!s->inv_freq) {
    rc = -ENOMEM;
    goto fail;
  }
  if ((rc = exo_rope_inv_freq(&m->cfg, s->inv_freq))) {
    exo_errf(err, errlen, "config: unusable RoPE parameters (theta %g, scaling %d)",
                    (double)m->cfg.rope_theta, (int)m->cfg.rope_scaling);
    goto fail;
  }
  const struct exo_model_config *c = &m->cfg;
  int64_t max_cols = c->hidden_size;
  if ((int64_t)c->n_heads * c->head_dim > max_cols)
    max_cols = (int64_t)c->n_heads * c->head_dim;
  if (c->intermediate_size > max_cols)
    max_cols = c->intermediate_size;
  if ((rc = exo_matmul_ws_reserve(&s->ws, max_cols, 1)))
    goto fail;
  if ((rc = exo_forward_scratch_reserve(s, max_tokens > 0 ? max_tokens : 1,
                                        max_positions > 0 ? max_positions : 1)))
    goto fail;
  *out = s;
  return 0;
fail:
  if (rc == -ENOMEM)
    exo_errf(err, errlen, "out of memory for forward scratch");
  exo_forward_scratch_free(s);
  return rc;
}

void exo_forward_scratch_free(struct exo_forward_scratch *s)
{
  if (!s)
    return;
  free(s->x);
  free(s->xb);
  free(s->q);
  free(s->k);
  free(s->v);
  free(s->att);
  free(s->hb);
  free(s->hb2);
  free(s->scores);
  free(s->inv_freq);
  exo_matmul_ws_fini(&s->ws);
  exo_pool_free(s->ws.pool);
  free(s);
}

int exo_forward_scratch_set_threads(struct exo_forward_scratch *s, int n_threads)
{
  if (n_threads < 1 || n_threads > EXO_POOL_MAX_THREADS)
    return -EINVAL;
  if (exo_pool_threads(s->ws.pool) == n_threads)
    return 0;
  struct exo_pool *p = NULL;
  if (n_threads > 1) {
    int rc = exo_pool_new(n_threads, &p);
    if (rc)
      return rc;
  }
  exo_pool_free(s->ws.pool);
  s->ws.pool = p;
  return 0;
}

struct exo_pool *exo_forward_scratch_pool(struct exo_forward_scratch *s)
{
  return s->ws.pool;
}

static int exo_forward_head(const struct exo_model *m, const struct exo_forward_batch *b)
{
  return m->layer_end == m->cfg.n_layers && !b->no_head;
}

int exo_forward_out_rows(const struct exo_model *m, const struct exo_forward_batch *b)
{
  int total = 0;
  for (int i = 0; b->seqs && i < b->n_seqs; i++)
    total += b->seqs[i].n_tokens;
  return exo_forward_head(m, b) && b->logits_last_only ? b->n_seqs : total;
}

int exo_forward_out_cols(const struct exo_model *m, const struct exo_forward_batch *b)
{
  return exo_forward_head(m, b) ? m->cfg.vocab_size : m->cfg.hidden_size;
}

int exo_forward_kv_new(const struct exo_model *m, int initial_capacity, int max_positions,
                       struct exo_kv_cache **out)
{
  return exo_kv_cache_new(m->layer_end - m->layer_begin, m->cfg.n_kv_heads * m->cfg.head_dim,
                          initial_capacity, max_positions, out);
}

/* Checks the batch against the model and makes room in scratch and caches, so that
 * nothing after it can fail. Returns the total token count or a negative code. */
static int exo_forward_prepare(const struct exo_model *m, const struct exo_forward_batch *b,
                               struct exo_forward_scratch *s, char *err, size_t errlen)
{
  const int kv_dim = m->cfg.n_kv_heads * m->cfg.head_dim;
  if (b->n_seqs <= 0 || !b->seqs) {
    exo_errf(err, errlen, "batch: %d sequences, expected at least 1", b->n_seqs);
    return -EINVAL;
  }
  if (m->layer_begin == 0 ? !b->tokens : !b->hidden_in) {
    exo_errf(err, errlen, "batch: layer range starts at %d, so %s is required",
                    m->layer_begin, m->layer_begin == 0 ? "tokens" : "hidden_in");
    return -EINVAL;
  }
  long total = 0;
  int max_ctx = 1;
  for (int i = 0; i < b->n_seqs; i++) {
    const struct exo_forward_seq *q = &b->seqs[i];
    if (!q->kv || q->kv->n_layers != m->layer_end - m->layer_begin || q->kv->kv_dim != kv_dim) {
      exo_errf(err, errlen, "sequence %d: KV cache missing or shaped for another model",
                      i);
      return -EINVAL;
    }
    if (q->start_pos != q->kv->n_pos) {
      exo_errf(err, errlen,
                      "sequence %d: start_pos %d but its KV cache holds %d positions "
                      "(truncate it to redo a step)",
                      i, q->start_pos, q->kv->n_pos);
      return -EINVAL;
    }
    if (q->n_tokens <= 0 || q->n_tokens > INT32_MAX - q->start_pos) {
      exo_errf(err, errlen, "sequence %d: n_tokens %d, expected >= 1", i, q->n_tokens);
      return -EINVAL;
    }
    for (int j = 0; j < i; j++)
      if (b->seqs[j].kv == q->kv) {
        exo_errf(err, errlen, "sequences %d and %d share a KV cache", j, i);
        return -EINVAL;
      }
    const int end = q->start_pos + q->n_tokens;
    if (end > q->kv->max_positions) {
      exo_errf(err, errlen, "sequence %d: position %d beyond the cache's limit of %d",
                      i, end - 1, q->kv->max_positions);
      return -ENOSPC;
    }
    if (end > max_ctx)
      max_ctx = end;
    total += q->n_tokens;
    if (total > INT32_MAX / 2) {
      exo_errf(err, errlen, "batch: too many tokens");
      return -EINVAL;
    }
  }
  if (m->layer_begin == 0)
    for (long t = 0; t < total; t++)
      if (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.vocab_size) {
        exo_errf(err, errlen, "token %ld: id %d outside the vocabulary [0, %d)", t,
                        (int)b->tokens[t], m->cfg.vocab_size);
        return -EINVAL;
      }
  if (exo_forward_scratch_reserve(s, (int)total, max_ctx)) {
    exo_errf(err, errlen, "out of memory for %ld tokens", total);
    return -ENOMEM;
  }
  for (int i = 0; i < b->n_seqs; i++) {
    const struct exo_forward_seq *q = &b->seqs[i];
    int rc = exo_kv_cache_reserve(q->kv, q->start_pos + q->n_tokens);
    if (rc) {
      exo_errf(err, errlen, "sequence %d: cannot grow the KV cache to %d positions", i,
                      q->start_pos + q->n_tokens);
      return rc;
    }
  }
  return (int)total;
}

/* Causal attention of one sequence's new rows (already in the cache) for local layer l.
 * q, att: rows of this sequence; query head h reads KV head h / (n_heads / n_kv_heads).
 * Decode-sized chunks, one row at a time: the query heads sharing a KV head are adjacent
 * in q, so each group is one [group, head_dim] matrix and its attention two small
 * sgemms (scores = Q K^T over positions 0..pos, then softmax, then out = scores V). */
static void exo_forward_attention_rows(const struct exo_model_config *c,
                                       const struct exo_forward_seq *seq, int l, const float *q,
                                       float *att, float *scores)
{
  const int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd,
            group = c->n_heads / c->n_kv_heads;
  const float scale = 1.0f / sqrtf((float)hd);
  for (int t = 0; t < seq->n_tokens; t++) {
    const int ctx = seq->start_pos + t + 1; /* attends to positions 0 .. ctx-1 */
    for (int g = 0; g < c->n_kv_heads; g++) {
      const float *qg = q + (size_t)t * q_dim + (size_t)g * group * hd;
      const float *kg = seq->kv->k[l] + (size_t)g * hd, *vg = seq->kv->v[l] + (size_t)g * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, group, ctx, hd, scale, qg, hd, kg,
                  kv_dim, 0.0f, scores, ctx);
      for (int r = 0; r < group; r++)
        exo_softmax(scores + (size_t)r * ctx, ctx);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, group, hd, ctx, 1.0f, scores, ctx,
                  vg, kv_dim, 0.0f, att + (size_t)t * q_dim + (size_t)g * group * hd, hd);
    }
  }
}

/* Same result for prompt chunks, as matrix products: per head and block of query rows,
 * S = Q K^T * scale over the positions the block can see, causal mask by softmaxing only
 * each row's visible prefix (and zeroing the rest), then O = S V. K and V are read in
 * place from the cache (row stride kv_dim, offset of the KV head). */
static void exo_forward_attention_gemm(const struct exo_model_config *c,
                                       const struct exo_forward_seq *seq, int l, const float *q,
                                       float *att, float *scores)
{
  const int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd,
            group = c->n_heads / c->n_kv_heads;
  const float scale = 1.0f / sqrtf((float)hd);
  for (int t0 = 0; t0 < seq->n_tokens; t0 += EXO_ATTN_BLOCK) {
    const int rows = seq->n_tokens - t0 < EXO_ATTN_BLOCK ? seq->n_tokens - t0 : EXO_ATTN_BLOCK;
    const int ctx = seq->start_pos + t0 + rows; /* positions the block's last row sees */
    for (int h = 0; h < c->n_heads; h++) {
      const float *qh = q + (size_t)t0 * q_dim + (size_t)h * hd;
      const float *kh = seq->kv->k[l] + (size_t)(h / group) * hd;
      const float *vh = seq->kv->v[l] + (size_t)(h / group) * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, ctx, hd, scale, qh, q_dim, kh,
                  kv_dim, 0.0f, scores, ctx);
      for (int r = 0; r < rows; r++) {
        float *sr = scores + (size_t)r * ctx;
        const int visible = seq->start_pos + t0 + r + 1;
        exo_softmax(sr, visible);
        memset(sr + visible, 0, (size_t)(ctx - visible) * sizeof(float));
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, ctx, 1.0f, scores, ctx,
                  vh, kv_dim, 0.0f, att + (size_t)t0 * q_dim + (size_t)h * hd, q_dim);
    }
  }
}

/* y = x W^T for the batch's rows: batch-invariant kernels when asked (see forward.h). */
static void exo_forward_linear(struct exo_forward_scratch *s, int invariant, float *y,
                               const float *x, int n, const struct exo_weight *w,
                               const float *bias, int accumulate)
{
  /* exo_forward_check_model vetted every dtype and shape, and the workspace is reserved:
   * neither product can fail here. */
  if (invariant)
    exo_matmul_rows(&s->ws, y, x, n, w, bias, accumulate);
  else
    exo_matmul_ex(&s->ws, y, x, n, w, bias, accumulate);
}

int exo_forward(const struct exo_model *m, const struct exo_forward_batch *b, float *out,
                struct exo_forward_scratch *s, char *err, size_t errlen)
{
  if (s->model != m) {
    exo_errf(err, errlen, "scratch was made for another model");
    return -EINVAL;
  }
  const int total = exo_forward_prepare(m, b, s, err, errlen);
  if (total < 0)
    return total;
  const struct exo_model_config *c = &m->cfg;
  const int dim = c->hidden_size, hd = c->head_dim, q_dim = c->n_heads * hd,
            kv_dim = c->n_kv_heads * hd, ff = c->intermediate_size;
  float *x = s->x;
  const int inv = b->batch_invariant;

  /* Input: embedding rows, or the hidden state of the previous range. */
  if (m->layer_begin == 0) {
    for (int t = 0; t < total; t++)
      exo_weight_row_f32(&m->embed, b->tokens[t], x + (size_t)t * dim);
  } else {
    memcpy(x, b->hidden_in, (size_t)total * dim * sizeof(float));
  }

  for (int li = m->layer_begin; li < m->layer_end; li++) {
    const int l = li - m->layer_begin;
    const struct exo_layer_weights *w = &m->layers[l];

    /* Attention block: x += o_proj(attention(rope(q), rope(k), v)). */
    exo_rmsnorm(s->xb, x, w->attn_norm.data, total, dim, c->rms_norm_eps);
    const int ab = c->attention_bias;
    exo_forward_linear(s, inv, s->q, s->xb, total, &w->wq, ab ? w->bq.data : NULL, 0);
    exo_forward_linear(s, inv, s->k, s->xb, total, &w->wk, ab ? w->bk.data : NULL, 0);
    exo_forward_linear(s, inv, s->v, s->xb, total, &w->wv, ab ? w->bv.data : NULL, 0);
    int row = 0;
    for (int i = 0; i < b->n_seqs; i++) {
      const struct exo_forward_seq *seq = &b->seqs[i];
      for (int t = 0; t < seq->n_tokens; t++) {
        const int pos = seq->start_pos + t;
        float *qr = s->q + (size_t)(row + t) * q_dim, *kr = s->k + (size_t)(row + t) * kv_dim;
        exo_rope_apply(qr, c->n_heads, hd, pos, s->inv_freq);
        exo_rope_apply(kr, c->n_kv_heads, hd, pos, s->inv_freq);
        memcpy(seq->kv->k[l] + (size_t)pos * kv_dim, kr, (size_t)kv_dim * sizeof(float));
        memcpy(seq->kv->v[l] + (size_t)pos * kv_dim, s->v + (size_t)(row + t) * kv_dim,
               (size_t)kv_dim * sizeof(float));
      }
      if (seq->n_tokens >= EXO_ATTN_GEMM_MIN && !inv)
        exo_forward_attention_gemm(c, seq, l, s->q + (size_t)row * q_dim,
                                   s->att + (size_t)row * q_dim, s->scores);
      else
        exo_forward_attention_rows(c, seq, l, s->q + (size_t)row * q_dim,
                                   s->att + (size_t)row * q_dim, s->scores);
      row += seq->n_tokens;
    }
    exo_forward_linear(s, inv, x, s->att, total, &w->wo, c->o_proj_bias ? w->bo.data : NULL,
                       1);

    /* MLP block: x += down(silu(gate(h)) * up(h)), h = rmsnorm(x). */
    exo_rmsnorm(s->xb, x, w->ffn_norm.data, total, dim, c->rms_norm_eps);
    exo_forward_linear(s, inv, s->hb, s->xb, total, &w->w_gate, NULL, 0);
    exo_forward_linear(s, inv, s->hb2, s->xb, total, &w->w_up, NULL, 0);
    exo_silu_mul(s->hb, s->hb2, (size_t)total * ff);
    exo_forward_linear(s, inv, x, s->hb, total, &w->w_down, NULL, 1);
  }
  for (int i = 0; i < b->n_seqs; i++)
    b->seqs[i].kv->n_pos += b->seqs[i].n_tokens;

  if (!exo_forward_head(m, b)) {
    memcpy(out, x, (size_t)total * dim * sizeof(float));
    return 0;
  }
  /* Final norm and LM head, on every row or only each sequence's last. */
  int rows = total;
  if (b->logits_last_only) {
    int row = 0;
    for (int i = 0; i < b->n_seqs; i++) {
      row += b->seqs[i].n_tokens;
      exo_rmsnorm(s->xb + (size_t)i * dim, x + (size_t)(row - 1) * dim, m->final_norm.data, 1,
                  dim, c->rms_norm_eps);
    }
    rows = b->n_seqs;
  } else {
    exo_rmsnorm(s->xb, x, m->final_norm.data, total, dim, c->rms_norm_eps);
  }
  exo_forward_linear(s, inv, out, s->xb, rows, &m->lm_head, NULL, 0);
  return 0;
}
