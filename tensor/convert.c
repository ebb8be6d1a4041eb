/* tensor/convert.c: HF model directory -> GGUF file or safetensors of another dtype
 * (see convert.h). Reads through exo_model_load (so every check of the loader applies)
 * and converts one tensor at a time, row by row through f32. Q/K rows of "llama" GGUF
 * files are permuted the way llama.cpp's converter does, so files interoperate.
 * Must not hold more than one converted tensor in memory. */
#include "common/err.h"
#include "tensor/convert.h"

#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tensor/dtype.h"
#include "tensor/gguf.h"
#include "tensor/quant.h"

struct exo_conv_item {
  char hf[96], gg[96];
  const struct exo_weight *w;
  int permute_heads; /* > 0: permute rows (llama Q/K) with this head count */
};

/* Every tensor of a model in HF order with its GGUF name. Returns the count. */
static size_t exo_conv_items(const struct exo_model *m, struct exo_conv_item *it, int llama)
{
  const struct exo_model_config *c = &m->cfg;
  size_t n = 0;
#define EXO_ADD(hfname, ggname, wp, ph)                                                     \
  do {                                                                                      \
    if ((wp)->data) {                                                                       \
      snprintf(it[n].hf, sizeof it[n].hf, "%s", hfname);                                    \
      snprintf(it[n].gg, sizeof it[n].gg, "%s", ggname);                                    \
      it[n].w = (wp);                                                                       \
      it[n].permute_heads = (ph);                                                           \
      n++;                                                                                  \
    }                                                                                       \
  } while (0)
  EXO_ADD("model.embed_tokens.weight", "token_embd.weight", &m->embed, 0);
  char hf[96], gg[96];
  static const struct {
    const char *hf, *gg;
    size_t off;
    int kind; /* 1 q, 2 k */
  } L[] = {
    {"input_layernorm.weight", "attn_norm.weight", offsetof(struct exo_layer_weights, attn_norm), 0},
    {"self_attn.q_proj.weight", "attn_q.weight", offsetof(struct exo_layer_weights, wq), 1},
    {"self_attn.k_proj.weight", "attn_k.weight", offsetof(struct exo_layer_weights, wk), 2},
    {"self_attn.v_proj.weight", "attn_v.weight", offsetof(struct exo_layer_weights, wv), 0},
    {"self_attn.q_proj.bias", "attn_q.bias", offsetof(struct exo_layer_weights, bq), 1},
    {"self_attn.k_proj.bias", "attn_k.bias", offsetof(struct exo_layer_weights, bk), 2},
    {"self_attn.v_proj.bias", "attn_v.bias", offsetof(struct exo_layer_weights, bv), 0},
    {"self_attn.o_proj.weight", "attn_output.weight", offsetof(struct exo_layer_weights, wo), 0},
    {"self_attn.o_proj.bias", "attn_output.bias", offsetof(struct exo_layer_weights, bo), 0},
    {"post_attention_layernorm.weight", "ffn_norm.weight", offsetof(struct exo_layer_weights, ffn_norm), 0},
    {"mlp.gate_proj.weight", "ffn_gate.weight", offsetof(struct exo_layer_weights, w_gate), 0},
    {"mlp.up_proj.weight", "ffn_up.weight", offsetof(struct exo_layer_weights, w_up), 0},
    {"mlp.down_proj.weight", "ffn_down.weight", offsetof(struct exo_layer_weights, w_down), 0},
  };
  for (int l = m->layer_begin; l < m->layer_end; l++)
    for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
      const struct exo_weight *w =
          (const struct exo_weight *)((const char *)&m->layers[l - m->layer_begin] + L[k].off);
      snprintf(hf, sizeof hf, "model.layers.%d.%s", l, L[k].hf);
      snprintf(gg, sizeof gg, "blk.%d.%s", l, L[k].gg);
      const int heads = L[k].kind == 1 ? c->n_heads : L[k].kind == 2 ? c->n_kv_heads : 0;
      EXO_ADD(hf, gg, w, llama ? heads : 0);
    }
  EXO_ADD("model.norm.weight", "output_norm.weight", &m->final_norm, 0);
  if (!c->tie_word_embeddings)
    EXO_ADD("lm_head.weight", "output.weight", &m->lm_head, 0);
#undef EXO_ADD
  return n;
}

/* Tensor it as dtype dt (vectors stay F32; block formats fall back to F16 on widths
 * they cannot hold) into a new buffer; *nbytes its size. NULL: out of memory. */
static void *exo_conv_tensor(const struct exo_conv_item *it, enum exo_dtype *dt, size_t *nbytes,
                             int head_dim)
{
  const struct exo_weight *w = it->w;
  const int vec = w->rows == 1;
  if (vec)
    *dt = EXO_DTYPE_F32;
  else if (!exo_dtype_row_bytes(*dt, w->cols))
    *dt = EXO_DTYPE_F16;
  /* a vector converts as rows of one value, so the q/k bias permutation is the rows' */
  const int64_t rows = vec ? w->cols : w->rows, cols = vec ? 1 : w->cols;
  const size_t rb = exo_dtype_row_bytes(*dt, cols);
  unsigned char *out = malloc(rb * (size_t)rows);
  float *row = malloc((size_t)w->cols * sizeof *row);
  if (!out || !row) {
    free(out);
    free(row);
    return NULL;
  }
  for (int64_t r = 0; r < w->rows; r++) {
    exo_weight_row_f32(w, r, row);
    for (int64_t v = 0; v < (vec ? w->cols : 1); v++) {
      const int64_t src = vec ? v : r; /* HF row index */
      int64_t dst = src;
      if (it->permute_heads) { /* HF (h, i, j) -> file (h, j, i): interleaved halves */
        const int64_t h = src / head_dim, k = src % head_dim, half = head_dim / 2;
        dst = h * head_dim + 2 * (k % half) + k / half;
      }
      const float *x = vec ? row + v : row;
      unsigned char *d = out + (size_t)dst * rb;
      switch (*dt) {
      case EXO_DTYPE_F32: memcpy(d, x, rb); break;
      case EXO_DTYPE_F16: exo_f32_to_f16_n(x, (uint16_t *)d, (size_t)cols); break;
      case EXO_DTYPE_BF16: exo_f32_to_bf16_n(x, (uint16_t *)d, (size_t)cols); break;
      case EXO_DTYPE_Q8_0: exo_q8_0_quantize(x, d, cols); break;
      case EXO_DTYPE_Q4_0: exo_q4_0_quantize(x, d, cols); break;
      }
    }
  }
  free(row);
  *nbytes = rb * (size_t)rows;
  return out;
}

static uint32_t exo_file_type(enum exo_dtype dt)
{
  switch (dt) { /* llama.cpp's LLAMA_FTYPE_* */
  case EXO_DTYPE_F32: return 0;
  case EXO_DTYPE_F16: return 1;
  case EXO_DTYPE_Q4_0: return 2;
  case EXO_DTYPE_Q8_0: return 7;
  case EXO_DTYPE_BF16: return 32;
  }
  return 0;
}

int exo_convert_to_gguf(const char *src_dir, const char *out_path, enum exo_dtype dtype,
                        struct exo_convert_stats *stats, char *err, size_t errlen)
{
  struct exo_model *m = NULL;
  struct exo_gguf_writer *w = NULL;
  struct exo_conv_item *items = NULL;
  struct exo_convert_stats st = {0};
  char path[4096], key[128];
  int rc;
  if ((rc = exo_model_load(src_dir, 0, -1, &m, err, errlen)))
    return rc;
  const struct exo_model_config *c = &m->cfg;
  const int qwen2 = !strcmp(c->architecture, "Qwen2ForCausalLM");
  const char *arch = qwen2 ? "qwen2" : "llama";
  if (strcmp(c->architecture, "LlamaForCausalLM") && !qwen2) {
    exo_errf(err, errlen, "%s: architecture %s has no GGUF mapping here (llama, qwen2)",
             src_dir, c->architecture);
    rc = -ENOTSUP;
    goto out;
  }
  if (c->rope_scaling == EXO_ROPE_SCALING_LLAMA3) {
    exo_errf(err, errlen, "%s: llama3 RoPE scaling is not written to GGUF here", src_dir);
    rc = -ENOTSUP;
    goto out;
  }
  if ((rc = exo_gguf_writer_new(&w)))
    goto out;
  struct {
    const char *k;
    uint32_t v;
  } ints[] = {
    {"context_length", (uint32_t)c->max_position_embeddings},
    {"embedding_length", (uint32_t)c->hidden_size},
    {"block_count", (uint32_t)c->n_layers},
    {"feed_forward_length", (uint32_t)c->intermediate_size},
    {"attention.head_count", (uint32_t)c->n_heads},
    {"attention.head_count_kv", (uint32_t)c->n_kv_heads},
    {"attention.key_length", (uint32_t)c->head_dim},
    {"attention.value_length", (uint32_t)c->head_dim},
    {"rope.dimension_count", (uint32_t)c->head_dim},
    {"vocab_size", (uint32_t)c->vocab_size},
  };
  rc = exo_gguf_writer_add_str(w, "general.architecture", arch);
  if (!rc)
    rc = exo_gguf_writer_add_str(w, "general.name", "exo-actors convert");
  if (!rc)
    rc = exo_gguf_writer_add_u32(w, "general.file_type", exo_file_type(dtype));
  for (size_t i = 0; !rc && i < sizeof ints / sizeof ints[0]; i++) {
    snprintf(key, sizeof key, "%s.%s", arch, ints[i].k);
    rc = exo_gguf_writer_add_u32(w, key, ints[i].v);
  }
  snprintf(key, sizeof key, "%s.rope.freq_base", arch);
  if (!rc)
    rc = exo_gguf_writer_add_f32(w, key, c->rope_theta);
  snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
  if (!rc)
    rc = exo_gguf_writer_add_f32(w, key, c->rms_norm_eps);
  if (!rc && c->rope_scaling == EXO_ROPE_SCALING_LINEAR) {
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    rc = exo_gguf_writer_add_str(w, key, "linear");
    snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
    if (!rc)
      rc = exo_gguf_writer_add_f32(w, key, c->rope_factor);
  }
  if (rc) {
    exo_errf(err, errlen, "%s: metadata: %s", out_path, strerror(-rc));
    goto out;
  }
  snprintf(path, sizeof path, "%s/tokenizer.json", src_dir);
  if ((rc = exo_gguf_writer_add_tokenizer(w, path, err, errlen)))
    goto out;
  /* bos from the tokenizer's template wins (already written); else the config's */
  if (c->bos_token_id >= 0 &&
      (rc = exo_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_token_id)) &&
      rc != -EEXIST)
    goto out;
  if (c->n_eos_ids > 0 &&
      (rc = exo_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_token_ids[0])))
    goto out;
  items = calloc((size_t)c->n_layers * 13 + 4, sizeof *items);
  if (!items) {
    rc = -ENOMEM;
    goto out;
  }
  const size_t n = exo_conv_items(m, items, !qwen2);
  for (size_t i = 0; i < n; i++) {
    const struct exo_weight *t = items[i].w;
    enum exo_dtype dt = t->rows == 1 ? EXO_DTYPE_F32 : dtype;
    if (!exo_dtype_row_bytes(dt, t->cols))
      dt = EXO_DTYPE_F16;
    const int64_t ne[2] = {t->cols, t->rows};
    if ((rc = exo_gguf_writer_add_tensor(w, items[i].gg, t->rows == 1 ? 1 : 2, ne, dt))) {
      exo_errf(err, errlen, "%s: tensor '%s': %s", out_path, items[i].gg, strerror(-rc));
      goto out;
    }
  }
  if ((rc = exo_gguf_writer_begin(w, out_path, err, errlen)))
    goto out;
  for (size_t i = 0; i < n; i++) {
    enum exo_dtype dt = dtype;
    size_t nb;
    void *data = exo_conv_tensor(&items[i], &dt, &nb, c->head_dim);
    if (!data) {
      rc = -ENOMEM;
      exo_errf(err, errlen, "%s: out of memory converting '%s'", out_path, items[i].hf);
      goto out;
    }
    st.n_fallback += items[i].w->rows > 1 && dt != dtype;
    st.n_tensors++;
    st.bytes += (double)nb;
    rc = exo_gguf_writer_write_data(w, data, nb, err, errlen);
    free(data);
    if (rc)
      goto out;
  }
  rc = exo_gguf_writer_finish(w, err, errlen);
out:
  if (rc == -ENOMEM && err && errlen && !err[0])
    exo_errf(err, errlen, "%s: out of memory", out_path);
  if (!rc && stats)
    *stats = st;
  free(items);
  exo_gguf_writer_free(w);
  exo_model_free(m);
  return rc;
}

static int exo_copy_file(const char *src_dir, const char *dst_dir, const char *name, char *err,
                         size_t errlen)
{
  char a[4096], b[4096], buf[65536];
  snprintf(a, sizeof a, "%s/%s", src_dir, name);
  snprintf(b, sizeof b, "%s/%s", dst_dir, name);
  FILE *in = fopen(a, "rb");
  if (!in)
    return 0; /* optional files */
  FILE *out = fopen(b, "wb");
  int rc = 0;
  size_t k;
  if (!out)
    rc = -errno;
  while (!rc && (k = fread(buf, 1, sizeof buf, in)) > 0)
    if (fwrite(buf, 1, k, out) != k)
      rc = -EIO;
  if (out && fclose(out))
    rc = -EIO;
  fclose(in);
  if (rc)
    exo_errf(err, errlen, "%s: cannot write: %s", b, strerror(-rc));
  return rc;
}

int exo_convert_to_safetensors(const char *src_dir, const char *out_dir, enum exo_dtype dtype,
                               struct exo_convert_stats *stats, char *err, size_t errlen)
{
  struct exo_model *m = NULL;
  struct exo_conv_item *items = NULL;
  json_t *hdr = NULL, *cfg = NULL;
  char *hjson = NULL;
  FILE *fp = NULL;
  char path[4096];
  struct exo_convert_stats st = {0};
  int rc;
  if (dtype != EXO_DTYPE_F32 && dtype != EXO_DTYPE_F16 && dtype != EXO_DTYPE_BF16) {
    exo_errf(err, errlen, "safetensors holds F32, F16 or BF16 here, not %s",
             exo_dtype_name(dtype));
    return -ENOTSUP;
  }
  if ((rc = exo_model_load(src_dir, 0, -1, &m, err, errlen)))
    return rc;
  if (mkdir(out_dir, 0755) < 0 && errno != EEXIST) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot create: %s", out_dir, strerror(errno));
    goto out;
  }
  items = calloc((size_t)m->cfg.n_layers * 13 + 4, sizeof *items);
  hdr = json_object();
  if (!items || !hdr) {
    rc = -ENOMEM;
    goto out;
  }
  const size_t n = exo_conv_items(m, items, 0);
  uint64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    const struct exo_weight *t = items[i].w;
    const size_t nb = exo_dtype_size(dtype) * (size_t)(t->rows * t->cols);
    json_t *shape = t->rows == 1 ? json_pack("[I]", (json_int_t)t->cols)
                                 : json_pack("[I, I]", (json_int_t)t->rows, (json_int_t)t->cols);
    if (json_object_set_new(hdr, items[i].hf,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", exo_dtype_name(dtype),
                                      "shape", shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + nb)))) {
      rc = -ENOMEM;
      goto out;
    }
    off += nb;
  }
  json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
  if (!(hjson = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS))) {
    rc = -ENOMEM;
    goto out;
  }
  size_t hlen = strlen(hjson), padded = (hlen + 7) & ~(size_t)7;
  snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
  if (!(fp = fopen(path, "wb"))) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    goto out;
  }
  uint64_t hl = padded;
  int bad = fwrite(&hl, 8, 1, fp) != 1 || fwrite(hjson, 1, hlen, fp) != hlen ||
            fwrite("        ", 1, padded - hlen, fp) != padded - hlen;
  /* data in header (name-sorted) order is not needed: offsets say where; write in ours */
  for (size_t i = 0; !bad && i < n; i++) {
    enum exo_dtype dt = dtype;
    size_t nb;
    /* vectors are written in dtype too in safetensors (HF keeps one dtype) */
    const struct exo_weight *t = items[i].w;
    float *row = malloc((size_t)t->cols * sizeof *row);
    unsigned char *data = malloc(exo_dtype_size(dtype) * (size_t)(t->rows * t->cols));
    if (!row || !data) {
      free(row);
      free(data);
      rc = -ENOMEM;
      goto out;
    }
    for (int64_t r = 0; r < t->rows; r++) {
      exo_weight_row_f32(t, r, row);
      unsigned char *d = data + exo_dtype_size(dtype) * (size_t)(r * t->cols);
      if (dt == EXO_DTYPE_F32)
        memcpy(d, row, (size_t)t->cols * 4);
      else if (dt == EXO_DTYPE_F16)
        exo_f32_to_f16_n(row, (uint16_t *)d, (size_t)t->cols);
      else
        exo_f32_to_bf16_n(row, (uint16_t *)d, (size_t)t->cols);
    }
    nb = exo_dtype_size(dtype) * (size_t)(t->rows * t->cols);
    bad = fwrite(data, 1, nb, fp) != nb;
    st.n_tensors++;
    st.bytes += (double)nb;
    free(row);
    free(data);
  }
  if (fclose(fp) || bad) {
    fp = NULL;
    rc = -EIO;
    exo_errf(err, errlen, "%s: write failed", path);
    goto out;
  }
  fp = NULL;
  /* config.json with dtype updated; other files copied as they are */
  json_error_t jerr;
  snprintf(path, sizeof path, "%s/config.json", src_dir);
  if (!(cfg = json_load_file(path, 0, &jerr))) {
    rc = -EINVAL;
    exo_errf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    goto out;
  }
  const char *tname = dtype == EXO_DTYPE_F32 ? "float32" : dtype == EXO_DTYPE_F16 ? "float16"
                                                                                  : "bfloat16";
  json_object_set_new(cfg, json_object_get(cfg, "torch_dtype") ? "torch_dtype" : "dtype",
                      json_string(tname));
  snprintf(path, sizeof path, "%s/config.json", out_dir);
  if (json_dump_file(cfg, path, JSON_INDENT(2) | JSON_SORT_KEYS)) {
    rc = -EIO;
    exo_errf(err, errlen, "%s: cannot write", path);
    goto out;
  }
  static const char *const copies[] = {"generation_config.json", "tokenizer.json",
                                       "tokenizer_config.json"};
  for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++)
    if ((rc = exo_copy_file(src_dir, out_dir, copies[i], err, errlen)))
      goto out;
  rc = 0;
out:
  if (rc == -ENOMEM && err && errlen && !err[0])
    exo_errf(err, errlen, "%s: out of memory", out_dir);
  if (!rc && stats)
    *stats = st;
  if (fp)
    fclose(fp);
  free(hjson);
  json_decref(hdr);
  json_decref(cfg);
  free(items);
  exo_model_free(m);
  return rc;
}
