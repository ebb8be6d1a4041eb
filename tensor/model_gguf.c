/* tensor/model_gguf.c: llama-family models from one GGUF file (architectures "llama"
 * and "qwen2", tensor names and metadata keys as llama.cpp writes them).
 * Matrices stay in their stored type, in place in the mapping, except attn_q / attn_k
 * of "llama" files: llama.cpp stores their rows permuted for interleaved RoPE, so they
 * are un-permuted into owned copies for our rotate_half RoPE. Vectors become F32.
 * Must touch only the tensors of the requested layer range, like model.c. */
#include "common/err.h"
#include "tensor/model_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tensor/quant.h"

int exo_model_path_is_gguf(const char *path)
{
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* An integer key of the architecture's namespace ("<arch>.<key>"). */
static int exo_gguf_cfg_int(const struct exo_gguf *g, const char *arch, const char *key,
                            int required, long long def, long long lo, long long hi, int *out,
                            char *err, size_t errlen)
{
  char full[128];
  int64_t v;
  snprintf(full, sizeof full, "%s.%s", arch, key);
  int rc = exo_gguf_get_int(g, full, &v, err, errlen);
  if (rc == -ENOENT && !required) {
    *out = (int)def;
    return 0;
  }
  if (rc == -ENOENT)
    exo_errf(err, errlen, "GGUF metadata '%s' is missing", full);
  if (rc)
    return -EINVAL;
  if (v < lo || v > hi) {
    exo_errf(err, errlen, "GGUF metadata '%s' is %lld, expected %lld..%lld", full,
             (long long)v, lo, hi);
    return -EINVAL;
  }
  *out = (int)v;
  return 0;
}

static int exo_gguf_cfg_float(const struct exo_gguf *g, const char *arch, const char *key,
                              double def, double *out, char *err, size_t errlen)
{
  char full[128];
  snprintf(full, sizeof full, "%s.%s", arch, key);
  int rc = exo_gguf_get_float(g, full, out, err, errlen);
  if (rc == -ENOENT) {
    *out = def;
    return 0;
  }
  if (rc)
    return rc;
  if (!(*out > 0) || *out > 1e30) {
    exo_errf(err, errlen, "GGUF metadata '%s' is %g, expected > 0", full, *out);
    return -EINVAL;
  }
  return 0;
}

int exo_model_config_from_gguf(const struct exo_gguf *g, struct exo_model_config *cfg,
                               char *err, size_t errlen)
{
  const char *a;
  size_t alen;
  char arch[32];
  int rc;
  memset(cfg, 0, sizeof *cfg);
  if ((rc = exo_gguf_get_str(g, "general.architecture", &a, &alen, err, errlen))) {
    if (rc == -ENOENT)
      exo_errf(err, errlen, "GGUF metadata 'general.architecture' is missing");
    return -EINVAL;
  }
  snprintf(arch, sizeof arch, "%.*s", (int)(alen < 31 ? alen : 31), a);
  int is_qwen2 = !strcmp(arch, "qwen2");
  if (strcmp(arch, "llama") && !is_qwen2) {
    exo_errf(err, errlen, "GGUF general.architecture '%s' is not supported (llama, qwen2)",
             arch);
    return -ENOTSUP;
  }
  snprintf(cfg->architecture, sizeof cfg->architecture, "%s",
           is_qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
  const struct exo_gguf_tensor *emb = exo_gguf_find(g, "token_embd.weight");
  if (!emb || emb->n_dims != 2) {
    exo_errf(err, errlen, "GGUF tensor 'token_embd.weight' is missing or not 2-D");
    return -EINVAL;
  }
  if (emb->ne[1] > (1 << 24)) {
    exo_errf(err, errlen, "GGUF tensor 'token_embd.weight': vocab %lld too large",
             (long long)emb->ne[1]);
    return -EINVAL;
  }
  cfg->vocab_size = (int)emb->ne[1];
  if ((rc = exo_gguf_cfg_int(g, arch, "embedding_length", 1, 0, 1, 1 << 20, &cfg->hidden_size,
                             err, errlen)) ||
      (rc = exo_gguf_cfg_int(g, arch, "feed_forward_length", 1, 0, 1, 1 << 20,
                             &cfg->intermediate_size, err, errlen)) ||
      (rc = exo_gguf_cfg_int(g, arch, "block_count", 1, 0, 1, 4096, &cfg->n_layers, err,
                             errlen)) ||
      (rc = exo_gguf_cfg_int(g, arch, "attention.head_count", 1, 0, 1, 1 << 20, &cfg->n_heads,
                             err, errlen)) ||
      (rc = exo_gguf_cfg_int(g, arch, "attention.head_count_kv", 0, cfg->n_heads, 1, 1 << 20,
                             &cfg->n_kv_heads, err, errlen)) ||
      (rc = exo_gguf_cfg_int(g, arch, "context_length", 0, 2048, 1, INT_MAX,
                             &cfg->max_position_embeddings, err, errlen)))
    return rc;
  if (cfg->hidden_size % cfg->n_heads && !exo_gguf_find(g, "blk.0.attn_q.weight")) {
    exo_errf(err, errlen, "GGUF: embedding_length %d not divisible by head_count %d",
             cfg->hidden_size, cfg->n_heads);
    return -EINVAL;
  }
  if ((rc = exo_gguf_cfg_int(g, arch, "attention.key_length", 0,
                             cfg->hidden_size / cfg->n_heads, 1, 1 << 20, &cfg->head_dim, err,
                             errlen)))
    return rc;
  if (cfg->head_dim % 2 || cfg->n_heads % cfg->n_kv_heads ||
      (long long)cfg->n_heads * cfg->head_dim > (1 << 20)) {
    exo_errf(err, errlen, "GGUF: head_dim %d, head_count %d, head_count_kv %d are "
             "inconsistent", cfg->head_dim, cfg->n_heads, cfg->n_kv_heads);
    return -EINVAL;
  }
  double theta, eps;
  if ((rc = exo_gguf_cfg_float(g, arch, "rope.freq_base", 10000.0, &theta, err, errlen)) ||
      (rc = exo_gguf_cfg_float(g, arch, "attention.layer_norm_rms_epsilon", 1e-6, &eps, err,
                               errlen)))
    return rc;
  cfg->rope_theta = (float)theta;
  cfg->rms_norm_eps = (float)eps;
  cfg->rope_factor = 1.0f;
  char key[128];
  const char *st;
  size_t stlen;
  snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
  if (exo_gguf_get_str(g, key, &st, &stlen, err, errlen) == 0 &&
      !(stlen == 4 && !memcmp(st, "none", 4))) {
    double f;
    if (!(stlen == 6 && !memcmp(st, "linear", 6)) ||
        exo_gguf_cfg_float(g, arch, "rope.scaling.factor", 0, &f, err, errlen) || !(f > 0)) {
      exo_errf(err, errlen, "GGUF metadata '%s' is '%.*s' (supported: none, linear with "
               "rope.scaling.factor)", key, (int)(stlen < 40 ? stlen : 40), st);
      return -ENOTSUP;
    }
    cfg->rope_scaling = EXO_ROPE_SCALING_LINEAR;
    cfg->rope_factor = (float)f;
  }
  if (exo_gguf_find(g, "rope_freqs.weight")) {
    exo_errf(err, errlen, "GGUF tensor 'rope_freqs.weight' (llama3 RoPE scaling as factors) "
             "is not supported");
    return -ENOTSUP;
  }
  cfg->tie_word_embeddings = exo_gguf_find(g, "output.weight") == NULL;
  cfg->attention_bias = is_qwen2 || exo_gguf_find(g, "blk.0.attn_q.bias") != NULL;
  cfg->o_proj_bias = !is_qwen2 && exo_gguf_find(g, "blk.0.attn_output.bias") != NULL;
  cfg->bos_token_id = -1;
  int64_t v;
  if (exo_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, NULL, 0) == 0 && v >= 0 &&
      v < cfg->vocab_size)
    cfg->bos_token_id = (int)v;
  if (exo_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v, NULL, 0) == 0 && v >= 0 &&
      v < cfg->vocab_size)
    cfg->eos_token_ids[cfg->n_eos_ids++] = (int)v;
  if (exo_gguf_get_int(g, "tokenizer.ggml.eot_token_id", &v, NULL, 0) == 0 && v >= 0 &&
      v < cfg->vocab_size && (!cfg->n_eos_ids || v != cfg->eos_token_ids[0]))
    cfg->eos_token_ids[cfg->n_eos_ids++] = (int)v;
  const struct exo_gguf_tensor *q = exo_gguf_find(g, "blk.0.attn_q.weight");
  cfg->dtype = q ? q->dtype : EXO_DTYPE_F32;
  return 0;
}

int exo_model_config_load_gguf(const char *path, struct exo_model_config *cfg, char *err,
                               size_t errlen)
{
  struct exo_gguf *g = NULL;
  int rc = exo_gguf_open(path, &g, err, errlen);
  if (!rc)
    rc = exo_model_config_from_gguf(g, cfg, err, errlen);
  exo_gguf_close(g);
  return rc;
}

/* rows of a permuted Q/K matrix back in HF order: HF row h*hd + i*hd/2 + j is the
 * file's row h*hd + 2j + i (llama.cpp interleaves the two rotary halves). 64-byte
 * aligned, as every copied matrix (exo_model_files_copy_aligned says why). */
static void *exo_unpermute_rows(const void *src, int64_t rows, size_t rb, int head_dim)
{
  unsigned char *dst = aligned_alloc(64, (rb * (size_t)rows + 64) & ~(size_t)63);
  if (!dst)
    return NULL;
  const int half = head_dim / 2;
  for (int64_t r = 0; r < rows; r++) {
    const int64_t h = r / head_dim, k = r % head_dim, i = k / half, j = k % half;
    memcpy(dst + (size_t)r * rb, (const unsigned char *)src + (size_t)(h * head_dim + 2 * j + i) * rb,
           rb);
  }
  return dst;
}

/* Loads tensor name (HF shape [rows, cols], or [rows] when cols == 0) into w. */
static int exo_gguf_load_tensor(struct exo_model *m, struct exo_gguf *g, const char *name,
                                int64_t rows, int64_t cols, int permute, struct exo_weight *w,
                                char *err, size_t errlen)
{
  const struct exo_gguf_tensor *t = exo_gguf_find(g, name);
  if (!t) {
    exo_errf(err, errlen, "GGUF tensor '%s' is missing", name);
    return -ENOENT;
  }
  const int want_dims = cols ? 2 : 1;
  if (t->n_dims != want_dims || (cols ? t->ne[0] != cols || t->ne[1] != rows : t->ne[0] != rows)) {
    exo_errf(err, errlen, "GGUF tensor '%s': ne [%lld, %lld] (%d dims), expected [%lld, %lld]",
             name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
             (long long)(cols ? cols : rows), (long long)(cols ? rows : 1));
    return -EINVAL;
  }
  exo_gguf_willneed(g, t);
  w->rows = cols ? rows : 1;
  w->cols = cols ? cols : rows;
  w->dtype = t->dtype;
  w->data = t->data;
  const size_t rb = exo_dtype_row_bytes(t->dtype, w->cols);
  void *own = NULL;
  if (!cols || (t->dtype == EXO_DTYPE_F32 && (uintptr_t)t->data % 4)) {
    float *f = aligned_alloc(64, ((size_t)(w->rows * w->cols) * 4 + 63) & ~(size_t)63);
    if (f)
      for (int64_t r = 0; r < w->rows; r++)
        exo_weight_row_f32(w, r, f + r * w->cols);
    if (f && permute) { /* a q/k bias is permuted like the rows it adds to */
      void *p = exo_unpermute_rows(f, rows, cols ? (size_t)cols * 4 : 4, m->cfg.head_dim);
      free(f);
      f = p;
    }
    own = f;
    w->dtype = EXO_DTYPE_F32;
  } else if (permute) {
    own = exo_unpermute_rows(t->data, rows, rb, m->cfg.head_dim);
  } else if ((uintptr_t)t->data % 64) {
    /* GGUF aligns to 32 by default: a copy keeps 512-bit loads within one cache line
     * (model.c's exo_load_tensor measured why). */
    if (!(w->data = exo_model_files_copy_aligned(m->files, t->data, rb * (size_t)rows))) {
      exo_errf(err, errlen, "GGUF tensor '%s': out of memory", name);
      return -ENOMEM;
    }
    return 0;
  } else {
    return 0;
  }
  if (!own || exo_model_files_keep(m->files, own)) {
    free(own);
    exo_errf(err, errlen, "GGUF tensor '%s': out of memory", name);
    return -ENOMEM;
  }
  w->data = own;
  return 0;
}

int exo_model_load_gguf(const char *path, int layer_begin, int layer_end,
                        struct exo_model **out, char *err, size_t errlen)
{
  struct exo_gguf *g = NULL;
  struct exo_model *m = NULL;
  int rc;
  *out = NULL;
  if ((rc = exo_gguf_open(path, &g, err, errlen)))
    return rc;
  if (!(m = calloc(1, sizeof *m)) || !(m->files = exo_model_files_new_gguf(g))) {
    exo_gguf_close(g);
    rc = -ENOMEM;
    goto fail;
  }
  if ((rc = exo_model_config_from_gguf(g, &m->cfg, err, errlen)))
    goto fail;
  const struct exo_model_config *c = &m->cfg;
  const int L = c->n_layers;
  if ((rc = exo_model_check_range(L, &layer_begin, &layer_end, err, errlen)))
    goto fail;
  m->layer_begin = layer_begin;
  m->layer_end = layer_end;
  if (!(m->layers = calloc((size_t)(layer_end - layer_begin), sizeof *m->layers))) {
    rc = -ENOMEM;
    goto fail;
  }
  const int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim,
                kv = (int64_t)c->n_kv_heads * c->head_dim, ff = c->intermediate_size;
  const int perm = !strcmp(c->architecture, "LlamaForCausalLM");
  const int last = layer_end == L;
  if (layer_begin == 0 || (last && c->tie_word_embeddings)) {
    struct exo_weight e;
    if ((rc = exo_gguf_load_tensor(m, g, "token_embd.weight", c->vocab_size, h, 0, &e, err,
                                   errlen)))
      goto fail;
    if (layer_begin == 0)
      m->embed = e;
    if (last && c->tie_word_embeddings)
      m->lm_head = e;
  }
  for (int i = layer_begin; i < layer_end; i++) {
    struct exo_layer_weights *l = &m->layers[i - layer_begin];
    struct {
      const char *suffix;
      struct exo_weight *w;
      int64_t rows, cols;
      int needed, permute;
    } items[] = {
      {"attn_norm.weight", &l->attn_norm, h, 0, 1, 0},
      {"attn_q.weight", &l->wq, q, h, 1, perm},
      {"attn_k.weight", &l->wk, kv, h, 1, perm},
      {"attn_v.weight", &l->wv, kv, h, 1, 0},
      {"attn_q.bias", &l->bq, q, 0, c->attention_bias, perm},
      {"attn_k.bias", &l->bk, kv, 0, c->attention_bias, perm},
      {"attn_v.bias", &l->bv, kv, 0, c->attention_bias, 0},
      {"attn_output.weight", &l->wo, h, q, 1, 0},
      {"attn_output.bias", &l->bo, h, 0, c->o_proj_bias, 0},
      {"ffn_norm.weight", &l->ffn_norm, h, 0, 1, 0},
      {"ffn_gate.weight", &l->w_gate, ff, h, 1, 0},
      {"ffn_up.weight", &l->w_up, ff, h, 1, 0},
      {"ffn_down.weight", &l->w_down, h, ff, 1, 0},
    };
    char name[96];
    for (size_t k = 0; k < sizeof items / sizeof items[0]; k++) {
      if (!items[k].needed)
        continue;
      snprintf(name, sizeof name, "blk.%d.%s", i, items[k].suffix);
      if ((rc = exo_gguf_load_tensor(m, g, name, items[k].rows, items[k].cols,
                                     items[k].permute, items[k].w, err, errlen)))
        goto fail;
    }
  }
  if (last) {
    if ((rc = exo_gguf_load_tensor(m, g, "output_norm.weight", h, 0, 0, &m->final_norm, err,
                                   errlen)))
      goto fail;
    if (!c->tie_word_embeddings &&
        (rc = exo_gguf_load_tensor(m, g, "output.weight", c->vocab_size, h, 0, &m->lm_head,
                                   err, errlen)))
      goto fail;
  }
  *out = m;
  return 0;
fail:
  if (rc == -ENOMEM && err && errlen && !err[0])
    exo_errf(err, errlen, "%s: out of memory", path);
  exo_model_free(m);
  return rc;
}
