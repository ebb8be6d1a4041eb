/* tensor/model_writer.c: the seeded random model writer (see model_writer.h).
 * Each tensor gets its own xoshiro256** stream seeded by splitmix64(seed ^ hash(name)),
 * normals by Box-Muller, scaled like the reference fixtures: norm weights 1 + 0.2 N,
 * biases 0.1 N, embeddings and lm_head (2 / sqrt(hidden)) N, other matrices
 * N / sqrt(in_features). Data is produced and written in fixed-size chunks. */
#include "common/err.h"
#include "tensor/model_writer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor/dtype.h"

#define EXO_WRITER_CHUNK 65536 /* elements generated per fwrite */

enum exo_wt_kind { EXO_WT_NORM, EXO_WT_BIAS, EXO_WT_EMBED, EXO_WT_LINEAR };

struct exo_wt {
  char name[96];
  int64_t rows, cols;  /* cols 0 for a vector */
  enum exo_wt_kind kind;
  uint64_t bytes;
  int shard;
  uint64_t begin;      /* offset inside its shard's data region */
};

struct exo_rng {
  uint64_t s[4];
  int have_spare;
  double spare;
};

static uint64_t exo_splitmix64(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t exo_rotl(uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

static uint64_t exo_xoshiro_next(struct exo_rng *r)
{
  uint64_t *s = r->s;
  uint64_t out = exo_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = exo_rotl(s[3], 45);
  return out;
}

static void exo_rng_seed(struct exo_rng *r, uint64_t seed, const char *name)
{
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a: ties the stream to the tensor's name */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    h = (h ^ *p) * 0x100000001b3ull;
  uint64_t x = seed ^ h;
  for (int i = 0; i < 4; i++)
    r->s[i] = exo_splitmix64(&x);
  r->have_spare = 0;
}

static double exo_rng_normal(struct exo_rng *r)
{
  if (r->have_spare) {
    r->have_spare = 0;
    return r->spare;
  }
  /* u1 in (0, 1] so log(u1) is finite. */
  double u1 = (double)((exo_xoshiro_next(r) >> 11) + 1) * 0x1.0p-53;
  double u2 = (double)(exo_xoshiro_next(r) >> 11) * 0x1.0p-53;
  double rad = sqrt(-2.0 * log(u1));
  double a = 2.0 * M_PI * u2;
  r->spare = rad * sin(a);
  r->have_spare = 1;
  return rad * cos(a);
}

static int exo_spec_check(const struct exo_model_spec *s, int *head_dim, char *err,
                          size_t errlen)
{
  struct {
    const char *name;
    int v, max;
  } dims[] = {
    {"vocab", s->vocab_size, 1 << 24}, {"hidden", s->hidden_size, 1 << 20},
    {"intermediate", s->intermediate_size, 1 << 20}, {"layers", s->n_layers, 4096},
    {"heads", s->n_heads, 1 << 16}, {"kv-heads", s->n_kv_heads, 1 << 16},
  };
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
    if (dims[i].v < 1 || dims[i].v > dims[i].max) {
      exo_errf(err, errlen, "%s is %d, expected 1..%d", dims[i].name, dims[i].v,
                     dims[i].max);
      return -EINVAL;
    }
  *head_dim = s->head_dim;
  if (!*head_dim) {
    if (s->hidden_size % s->n_heads) {
      exo_errf(err, errlen, "hidden %d is not divisible by heads %d (give --head-dim)",
                     s->hidden_size, s->n_heads);
      return -EINVAL;
    }
    *head_dim = s->hidden_size / s->n_heads;
  }
  if (*head_dim < 2 || *head_dim % 2 || *head_dim > (1 << 16)) {
    exo_errf(err, errlen, "head-dim %d must be even and 2..65536", *head_dim);
    return -EINVAL;
  }
  if (s->n_heads % s->n_kv_heads) {
    exo_errf(err, errlen, "heads %d is not a multiple of kv-heads %d", s->n_heads,
                   s->n_kv_heads);
    return -EINVAL;
  }
  if (s->arch != EXO_MODEL_ARCH_LLAMA && s->arch != EXO_MODEL_ARCH_QWEN2) {
    exo_errf(err, errlen, "unknown arch %d", (int)s->arch);
    return -EINVAL;
  }
  if (s->dtype != EXO_DTYPE_F32 && s->dtype != EXO_DTYPE_F16 && s->dtype != EXO_DTYPE_BF16) {
    exo_errf(err, errlen, "unknown dtype %d", (int)s->dtype);
    return -EINVAL;
  }
  if (s->n_shards < 0 || s->n_shards > 99999) {
    exo_errf(err, errlen, "shards %d, expected 1..99999", s->n_shards);
    return -EINVAL;
  }
  if (s->rope_theta < 0 || s->rms_norm_eps < 0 || s->max_position_embeddings < 0) {
    exo_errf(err, errlen, "rope theta, rms eps and max positions must be positive");
    return -EINVAL;
  }
  return 0;
}

/* The tensor list in file order; caller frees. */
static struct exo_wt *exo_writer_tensors(const struct exo_model_spec *s, int hd, size_t *n_out)
{
  int64_t h = s->hidden_size, in = s->intermediate_size, q = (int64_t)s->n_heads * hd;
  int64_t kv = (int64_t)s->n_kv_heads * hd;
  int bias = s->arch == EXO_MODEL_ARCH_QWEN2;
  size_t cap = 3 + (size_t)s->n_layers * 12;
  struct exo_wt *t = calloc(cap, sizeof *t);
  size_t n = 0;
  if (!t)
    return NULL;
#define EXO_ADD(kind_, rows_, cols_, ...)                              \
  do {                                                                 \
    snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__);                \
    t[n].kind = (kind_);                                               \
    t[n].rows = (rows_);                                               \
    t[n].cols = (cols_);                                               \
    n++;                                                               \
  } while (0)
  EXO_ADD(EXO_WT_EMBED, s->vocab_size, h, "model.embed_tokens.weight");
  for (int i = 0; i < s->n_layers; i++) {
    EXO_ADD(EXO_WT_NORM, h, 0, "model.layers.%d.input_layernorm.weight", i);
    EXO_ADD(EXO_WT_LINEAR, q, h, "model.layers.%d.self_attn.q_proj.weight", i);
    EXO_ADD(EXO_WT_LINEAR, kv, h, "model.layers.%d.self_attn.k_proj.weight", i);
    EXO_ADD(EXO_WT_LINEAR, kv, h, "model.layers.%d.self_attn.v_proj.weight", i);
    if (bias) {
      EXO_ADD(EXO_WT_BIAS, q, 0, "model.layers.%d.self_attn.q_proj.bias", i);
      EXO_ADD(EXO_WT_BIAS, kv, 0, "model.layers.%d.self_attn.k_proj.bias", i);
      EXO_ADD(EXO_WT_BIAS, kv, 0, "model.layers.%d.self_attn.v_proj.bias", i);
    }
    EXO_ADD(EXO_WT_LINEAR, h, q, "model.layers.%d.self_attn.o_proj.weight", i);
    EXO_ADD(EXO_WT_NORM, h, 0, "model.layers.%d.post_attention_layernorm.weight", i);
    EXO_ADD(EXO_WT_LINEAR, in, h, "model.layers.%d.mlp.gate_proj.weight", i);
    EXO_ADD(EXO_WT_LINEAR, in, h, "model.layers.%d.mlp.up_proj.weight", i);
    EXO_ADD(EXO_WT_LINEAR, h, in, "model.layers.%d.mlp.down_proj.weight", i);
  }
  EXO_ADD(EXO_WT_NORM, h, 0, "model.norm.weight");
  if (!s->tie_word_embeddings)
    EXO_ADD(EXO_WT_EMBED, s->vocab_size, h, "lm_head.weight");
#undef EXO_ADD
  *n_out = n;
  return t;
}

static char *exo_writer_path(const char *dir, const char *name)
{
  size_t len = strlen(dir) + strlen(name) + 2;
  char *p = malloc(len);
  if (p)
    snprintf(p, len, "%s/%s", dir, name);
  return p;
}

static void exo_shard_name(char *buf, size_t len, int k, int n)
{
  if (n <= 1)
    snprintf(buf, len, "model.safetensors");
  else
    snprintf(buf, len, "model-%05d-of-%05d.safetensors", k + 1, n);
}

/* Streams one tensor's values (converted to dtype) to fp. */
static int exo_write_tensor_data(FILE *fp, const struct exo_model_spec *s,
                                 const struct exo_wt *t, float *fbuf, uint16_t *hbuf)
{
  struct exo_rng rng;
  exo_rng_seed(&rng, s->seed, t->name);
  double scale = 1.0, offset = 0.0;
  switch (t->kind) {
  case EXO_WT_NORM: offset = 1.0; scale = 0.2; break;
  case EXO_WT_BIAS: scale = 0.1; break;
  case EXO_WT_EMBED: scale = 2.0 / sqrt((double)s->hidden_size); break;
  case EXO_WT_LINEAR: scale = 1.0 / sqrt((double)t->cols); break;
  }
  uint64_t n = (uint64_t)t->rows * (uint64_t)(t->cols ? t->cols : 1);
  for (uint64_t done = 0; done < n;) {
    size_t m = n - done < EXO_WRITER_CHUNK ? (size_t)(n - done) : EXO_WRITER_CHUNK;
    for (size_t i = 0; i < m; i++)
      fbuf[i] = (float)(offset + scale * exo_rng_normal(&rng));
    size_t w;
    if (s->dtype == EXO_DTYPE_F32) {
      w = fwrite(fbuf, sizeof(float), m, fp); /* x86-64 and arm64 are little-endian */
    } else {
      if (s->dtype == EXO_DTYPE_F16)
        exo_f32_to_f16_n(fbuf, hbuf, m);
      else
        exo_f32_to_bf16_n(fbuf, hbuf, m);
      w = fwrite(hbuf, sizeof(uint16_t), m, fp);
    }
    if (w != m)
      return -EIO;
    done += m;
  }
  return 0;
}

static int exo_write_shard(const char *dir, const struct exo_model_spec *s, struct exo_wt *t,
                           size_t n, int k, int n_shards, float *fbuf, uint16_t *hbuf,
                           char *err, size_t errlen)
{
  char name[64];
  exo_shard_name(name, sizeof name, k, n_shards);
  const char *dt = exo_dtype_name(s->dtype);
  json_t *hdr = json_object();
  json_t *meta = json_object();
  char *text = NULL, *path = NULL;
  FILE *fp = NULL;
  int rc = -ENOMEM;
  if (!hdr || !meta || json_object_set_new(meta, "format", json_string("pt")) ||
      json_object_set_new(hdr, "__metadata__", meta)) {
    json_decref(meta);
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    if (t[i].shard != k)
      continue;
    json_t *e = json_pack("{s:s, s:[I], s:[I, I]}", "dtype", dt, "shape", (json_int_t)t[i].rows,
                          "data_offsets", (json_int_t)t[i].begin,
                          (json_int_t)(t[i].begin + t[i].bytes));
    if (!e)
      goto fail;
    if (t[i].cols && json_array_append_new(json_object_get(e, "shape"),
                                           json_integer((json_int_t)t[i].cols))) {
      json_decref(e);
      goto fail;
    }
    if (json_object_set_new(hdr, t[i].name, e))
      goto fail;
  }
  text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
  path = exo_writer_path(dir, name);
  if (!text || !path)
    goto fail;
  size_t tlen = strlen(text);
  size_t padded = (tlen + 7) & ~(size_t)7; /* data region 8-byte aligned, as HF writes it */
  fp = fopen(path, "wb");
  if (!fp) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    goto fail;
  }
  unsigned char len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  rc = -EIO;
  if (fwrite(len8, 1, 8, fp) != 8 || fwrite(text, 1, tlen, fp) != tlen)
    goto io_fail;
  for (size_t i = tlen; i < padded; i++)
    if (fputc(' ', fp) == EOF)
      goto io_fail;
  for (size_t i = 0; i < n; i++)
    if (t[i].shard == k && exo_write_tensor_data(fp, s, &t[i], fbuf, hbuf) < 0)
      goto io_fail;
  if (fclose(fp) != 0) {
    fp = NULL;
    goto io_fail;
  }
  fp = NULL;
  rc = 0;
  goto done;
io_fail:
  exo_errf(err, errlen, "%s: write failed: %s", name, strerror(errno ? errno : EIO));
fail:
  if (rc == -ENOMEM)
    exo_errf(err, errlen, "%s: out of memory", name);
  if (fp)
    fclose(fp);
  if (path)
    unlink(path);
done:
  free(path);
  free(text);
  json_decref(hdr);
  return rc;
}

/* Writes doc as dir/name. Takes ownership of doc; NULL means building it ran out of memory. */
static int exo_write_json(const char *dir, const char *name, json_t *doc, char *err,
                          size_t errlen)
{
  char *path = exo_writer_path(dir, name);
  int rc = 0;
  if (!doc || !path) {
    rc = -ENOMEM;
    exo_errf(err, errlen, "%s: out of memory", name);
  } else if (json_dump_file(doc, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
    rc = -EIO;
    exo_errf(err, errlen, "%s: write failed", path);
  }
  json_decref(doc);
  free(path);
  return rc;
}

static int exo_write_config(const char *dir, const struct exo_model_spec *s, int hd, char *err,
                            size_t errlen)
{
  int qwen = s->arch == EXO_MODEL_ARCH_QWEN2;
  const char *dt = s->dtype == EXO_DTYPE_F32 ? "float32"
                   : s->dtype == EXO_DTYPE_F16 ? "float16" : "bfloat16";
  json_t *c = json_pack(
      "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:{s:s, s:f}, s:b, s:s, s:s}",
      "architectures", qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM",
      "model_type", qwen ? "qwen2" : "llama",
      "vocab_size", s->vocab_size, "hidden_size", s->hidden_size,
      "intermediate_size", s->intermediate_size, "num_hidden_layers", s->n_layers,
      "num_attention_heads", s->n_heads, "num_key_value_heads", s->n_kv_heads,
      "head_dim", hd,
      "max_position_embeddings", s->max_position_embeddings ? s->max_position_embeddings : 2048,
      "rms_norm_eps", s->rms_norm_eps > 0 ? s->rms_norm_eps : 1e-5,
      "rope_parameters", "rope_type", "default", "rope_theta",
      s->rope_theta > 0 ? s->rope_theta : 10000.0,
      "tie_word_embeddings", s->tie_word_embeddings,
      "hidden_act", "silu", "dtype", dt);
  if (c && qwen &&
      (json_object_set_new(c, "use_sliding_window", json_false()) ||
       json_object_set_new(c, "sliding_window", json_null()))) {
    json_decref(c);
    c = NULL;
  }
  if (c && !qwen && json_object_set_new(c, "attention_bias", json_false())) {
    json_decref(c);
    c = NULL;
  }
  return exo_write_json(dir, "config.json", c, err, errlen);
}

static int exo_write_index(const char *dir, const struct exo_wt *t, size_t n, int n_shards,
                           uint64_t total, char *err, size_t errlen)
{
  json_t *root = json_pack("{s:{s:I}, s:{}}", "metadata", "total_size", (json_int_t)total,
                           "weight_map");
  json_t *wm = root ? json_object_get(root, "weight_map") : NULL;
  char name[64];
  for (size_t i = 0; wm && i < n; i++) {
    exo_shard_name(name, sizeof name, t[i].shard, n_shards);
    if (json_object_set_new(wm, t[i].name, json_string(name))) {
      json_decref(root);
      root = wm = NULL;
    }
  }
  return exo_write_json(dir, "model.safetensors.index.json", root, err, errlen);
}

int exo_model_write_random(const char *dir, const struct exo_model_spec *spec,
                           struct exo_model_write_stats *stats, char *err, size_t errlen)
{
  int hd, rc;
  size_t n = 0;
  struct exo_wt *t = NULL;
  float *fbuf = NULL;
  uint16_t *hbuf = NULL;
  if ((rc = exo_spec_check(spec, &hd, err, errlen)) < 0)
    return rc;
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot create directory: %s", dir, strerror(errno));
    return rc;
  }
  t = exo_writer_tensors(spec, hd, &n);
  fbuf = malloc(EXO_WRITER_CHUNK * sizeof *fbuf);
  hbuf = malloc(EXO_WRITER_CHUNK * sizeof *hbuf);
  if (!t || !fbuf || !hbuf) {
    rc = -ENOMEM;
    exo_errf(err, errlen, "out of memory");
    goto out;
  }
  int n_shards = spec->n_shards > 1 ? spec->n_shards : 1;
  if ((size_t)n_shards > n) {
    rc = -EINVAL;
    exo_errf(err, errlen, "shards %d exceeds the %zu tensors", n_shards, n);
    goto out;
  }
  uint64_t total = 0, params = 0, esize = exo_dtype_size(spec->dtype);
  for (size_t i = 0; i < n; i++) {
    uint64_t ne = (uint64_t)t[i].rows * (uint64_t)(t[i].cols ? t[i].cols : 1);
    t[i].bytes = ne * esize;
    params += ne;
    total += t[i].bytes;
  }
  /* Balance shards by bytes, in file order, leaving at least one tensor per shard. */
  int k = 0;
  uint64_t in_shard = 0, cum = 0;
  for (size_t i = 0; i < n; i++) {
    size_t left = n - i;
    if (k < n_shards - 1 && i > 0 && in_shard > 0 &&
        (cum >= (uint64_t)(k + 1) * (total / (uint64_t)n_shards) ||
         left <= (size_t)(n_shards - 1 - k))) {
      k++;
      in_shard = 0;
    }
    t[i].shard = k;
    t[i].begin = in_shard;
    in_shard += t[i].bytes;
    cum += t[i].bytes;
  }
  /* A stale file of the other layout would shadow this one (model.safetensors wins). */
  char *stale = exo_writer_path(dir, n_shards > 1 ? "model.safetensors"
                                                  : "model.safetensors.index.json");
  if (stale)
    unlink(stale);
  free(stale);
  for (int s = 0; s < n_shards; s++)
    if ((rc = exo_write_shard(dir, spec, t, n, s, n_shards, fbuf, hbuf, err, errlen)) < 0)
      goto out;
  if (n_shards > 1 && (rc = exo_write_index(dir, t, n, n_shards, total, err, errlen)) < 0)
    goto out;
  if ((rc = exo_write_config(dir, spec, hd, err, errlen)) < 0)
    goto out;
  if (stats) {
    stats->n_tensors = n;
    stats->n_params = params;
    stats->bytes = total;
    stats->n_files = n_shards;
  }
out:
  free(t);
  free(fbuf);
  free(hbuf);
  return rc;
}
