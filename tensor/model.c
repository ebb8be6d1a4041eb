/* tensor/model.c: config.json parsing and weight loading for one layer range [a, b).
 * Owns the safetensors mappings and the widened (half vectors -> F32) buffers of a model;
 * matrices keep their stored dtype. A GGUF file path goes to tensor/gguf.c instead.
 * Must touch only the tensors of its range: it maps files read-only, issues
 * madvise(WILLNEED) on exactly the needed byte ranges and never reads a whole file.
 * Everything read from disk is validated against config.json with named errors. */
#include "common/err.h"
#include "tensor/model.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tensor/dtype.h"
#include "tensor/gguf.h"
#include "tensor/model_internal.h"
#include "tensor/safetensors.h"

#define EXO_CFG "config.json"
#define EXO_GEN_CFG "generation_config.json"
#define EXO_SINGLE "model.safetensors"
#define EXO_INDEX "model.safetensors.index.json"
#define EXO_MAX_DIM (1 << 20)     /* hidden, intermediate, heads, head_dim */
#define EXO_MAX_VOCAB (1 << 24)
#define EXO_MAX_LAYERS 4096

struct exo_model_file {
  char *name; /* as listed in the index, relative to dir */
  struct exo_safetensors *st;
};

struct exo_model_files {
  char *dir;
  json_t *weight_map;            /* name -> file name, or NULL for one model.safetensors */
  struct exo_model_file *files;  /* opened lazily: only files holding needed tensors */
  size_t n_files, cap_files;
  void **bufs;                   /* widened or realigned copies */
  size_t n_bufs, cap_bufs;
  struct exo_gguf *gguf;         /* a GGUF model's one file (model_gguf.c), else NULL */
};

static char *exo_path_join(const char *dir, const char *name)
{
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* ---- config.json ------------------------------------------------------------------ */

/* An integer field. Absent or null gives def when !required; must lie in [lo, hi]. */
static int exo_cfg_int(json_t *root, const char *field, int required, long long def,
                       long long lo, long long hi, int *out, char *err, size_t errlen)
{
  json_t *v = json_object_get(root, field);
  if (!v || json_is_null(v)) {
    if (required) {
      exo_errf(err, errlen, EXO_CFG ": field '%s' is missing", field);
      return -EINVAL;
    }
    *out = (int)def;
    return 0;
  }
  if (!json_is_integer(v)) {
    exo_errf(err, errlen, EXO_CFG ": field '%s' must be an integer", field);
    return -EINVAL;
  }
  long long x = json_integer_value(v);
  if (x < lo || x > hi) {
    exo_errf(err, errlen, EXO_CFG ": field '%s' is %lld, expected %lld..%lld", field, x,
                  lo, hi);
    return -EINVAL;
  }
  *out = (int)x;
  return 0;
}

/* A number field of obj (named prefix.field in messages); must be > 0 when positive. */
static int exo_cfg_num(json_t *obj, const char *prefix, const char *field, int required,
                       double def, int positive, double *out, char *err, size_t errlen)
{
  json_t *v = json_object_get(obj, field);
  if (!v || json_is_null(v)) {
    if (required) {
      exo_errf(err, errlen, EXO_CFG ": field '%s%s' is missing", prefix, field);
      return -EINVAL;
    }
    *out = def;
    return 0;
  }
  if (!json_is_number(v)) {
    exo_errf(err, errlen, EXO_CFG ": field '%s%s' must be a number", prefix, field);
    return -EINVAL;
  }
  *out = json_number_value(v);
  if (positive && !(*out > 0)) {
    exo_errf(err, errlen, EXO_CFG ": field '%s%s' is %g, expected > 0", prefix, field,
                  *out);
    return -EINVAL;
  }
  /* Callers store these as float: a value past FLT_MAX would be UB to convert, and a
   * positive one under FLT_MIN would flush to 0 (found by tests/fuzz). */
  if (!(*out >= -FLT_MAX && *out <= FLT_MAX) || (positive && *out < FLT_MIN)) {
    exo_errf(err, errlen, EXO_CFG ": field '%s%s' is %g, outside the float range", prefix,
                  field, *out);
    return -EINVAL;
  }
  return 0;
}

static int exo_cfg_bool(json_t *root, const char *field, int def, int *out, char *err,
                        size_t errlen)
{
  json_t *v = json_object_get(root, field);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_boolean(v)) {
    exo_errf(err, errlen, EXO_CFG ": field '%s' must be true or false", field);
    return -EINVAL;
  }
  *out = json_is_true(v);
  return 0;
}

/* bos_token_id / eos_token_id from file (config.json or generation_config.json).
 * eos may be an integer, a list of integers or null. Absent fields leave cfg as is. */
static int exo_cfg_special_ids(json_t *root, const char *file, struct exo_model_config *cfg,
                               char *err, size_t errlen)
{
  json_t *b = json_object_get(root, "bos_token_id");
  if (b && json_is_null(b)) {
    cfg->bos_token_id = -1;
  } else if (b) {
    if (!json_is_integer(b) || json_integer_value(b) < 0 ||
        json_integer_value(b) >= cfg->vocab_size) {
      exo_errf(err, errlen, "%s: field 'bos_token_id' must be an integer in 0..%d", file,
                    cfg->vocab_size - 1);
      return -EINVAL;
    }
    cfg->bos_token_id = (int)json_integer_value(b);
  }
  json_t *e = json_object_get(root, "eos_token_id");
  if (!e)
    return 0;
  cfg->n_eos_ids = 0;
  if (json_is_null(e))
    return 0;
  size_t n = json_is_array(e) ? json_array_size(e) : 1;
  if (!json_is_array(e) && !json_is_integer(e)) {
    exo_errf(err, errlen, "%s: field 'eos_token_id' must be an integer or a list of "
                  "integers", file);
    return -EINVAL;
  }
  if (n > EXO_MAX_EOS_IDS) {
    exo_errf(err, errlen, "%s: field 'eos_token_id' lists %zu ids, at most %d supported",
                  file, n, EXO_MAX_EOS_IDS);
    return -EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *x = json_is_array(e) ? json_array_get(e, i) : e;
    if (!json_is_integer(x) || json_integer_value(x) < 0 ||
        json_integer_value(x) >= cfg->vocab_size) {
      exo_errf(err, errlen, "%s: field 'eos_token_id' entries must be integers in 0..%d",
                    file, cfg->vocab_size - 1);
      return -EINVAL;
    }
    cfg->eos_token_ids[cfg->n_eos_ids++] = (int)json_integer_value(x);
  }
  return 0;
}

static int exo_cfg_dtype(json_t *root, struct exo_model_config *cfg, char *err, size_t errlen)
{
  const char *field = "dtype";
  json_t *v = json_object_get(root, field);
  if (!v || json_is_null(v)) {
    field = "torch_dtype";
    v = json_object_get(root, field);
  }
  cfg->dtype = EXO_DTYPE_F32;
  if (!v || json_is_null(v))
    return 0;
  const char *s = json_is_string(v) ? json_string_value(v) : "";
  if (!strcmp(s, "float32"))
    cfg->dtype = EXO_DTYPE_F32;
  else if (!strcmp(s, "float16"))
    cfg->dtype = EXO_DTYPE_F16;
  else if (!strcmp(s, "bfloat16"))
    cfg->dtype = EXO_DTYPE_BF16;
  else {
    exo_errf(err, errlen, EXO_CFG ": field '%s' is '%s' (supported: float32, float16, "
                  "bfloat16)", field, s);
    return -EINVAL;
  }
  return 0;
}

/* RoPE: transformers 5 writes rope_parameters {rope_type, rope_theta, ...}; older files a
 * top-level rope_theta plus rope_scaling (null, or {rope_type | type, factor, ...}). */
static int exo_cfg_rope(json_t *root, struct exo_model_config *cfg, char *err, size_t errlen)
{
  json_t *rp = json_object_get(root, "rope_parameters");
  json_t *rs = json_object_get(root, "rope_scaling");
  json_t *params = NULL;
  const char *prefix = "";
  double theta;
  int rc;
  if (rp && !json_is_null(rp)) {
    if (!json_is_object(rp)) {
      exo_errf(err, errlen, EXO_CFG ": field 'rope_parameters' must be an object");
      return -EINVAL;
    }
    if (!json_object_get(rp, "rope_type") && !json_object_get(rp, "type") &&
        !json_object_get(rp, "rope_theta")) {
      exo_errf(err, errlen, EXO_CFG ": field 'rope_parameters' has neither 'rope_type' "
                    "nor 'rope_theta' (per-layer-type RoPE is not supported)");
      return -EINVAL;
    }
    params = rp;
    prefix = "rope_parameters.";
  } else if (rs && !json_is_null(rs)) {
    if (!json_is_object(rs)) {
      exo_errf(err, errlen, EXO_CFG ": field 'rope_scaling' must be null or an object");
      return -EINVAL;
    }
    params = rs;
    prefix = "rope_scaling.";
  }
  if ((rc = exo_cfg_num(root, "", "rope_theta", 0, 10000.0, 1, &theta, err, errlen)) < 0)
    return rc;
  if (params == rp && params &&
      (rc = exo_cfg_num(rp, prefix, "rope_theta", 0, theta, 1, &theta, err, errlen)) < 0)
    return rc;
  cfg->rope_theta = (float)theta;
  cfg->rope_scaling = EXO_ROPE_SCALING_NONE;
  cfg->rope_factor = 1.0f;
  if (!params)
    return 0;
  const char *tfield = "rope_type";
  json_t *t = json_object_get(params, tfield);
  if (!t || json_is_null(t)) {
    tfield = "type";
    t = json_object_get(params, tfield);
  }
  const char *type = "default";
  if (t && !json_is_null(t)) {
    if (!json_is_string(t)) {
      exo_errf(err, errlen, EXO_CFG ": field '%s%s' must be a string", prefix, tfield);
      return -EINVAL;
    }
    type = json_string_value(t);
  } else if (params == rs) {
    exo_errf(err, errlen, EXO_CFG ": field 'rope_scaling' has no 'rope_type' (or 'type')");
    return -EINVAL;
  }
  double f, lo, hi;
  int omax;
  if (!strcmp(type, "default"))
    return 0;
  if (!strcmp(type, "linear")) {
    if ((rc = exo_cfg_num(params, prefix, "factor", 1, 0, 1, &f, err, errlen)) < 0)
      return rc;
    cfg->rope_scaling = EXO_ROPE_SCALING_LINEAR;
    cfg->rope_factor = (float)f;
    return 0;
  }
  if (!strcmp(type, "llama3")) {
    if ((rc = exo_cfg_num(params, prefix, "factor", 1, 0, 1, &f, err, errlen)) < 0 ||
        (rc = exo_cfg_num(params, prefix, "low_freq_factor", 1, 0, 1, &lo, err, errlen)) < 0 ||
        (rc = exo_cfg_num(params, prefix, "high_freq_factor", 1, 0, 1, &hi, err, errlen)) < 0)
      return rc;
    json_t *o = json_object_get(params, "original_max_position_embeddings");
    if (!json_is_integer(o) || json_integer_value(o) <= 0 || json_integer_value(o) > INT_MAX) {
      exo_errf(err, errlen, EXO_CFG ": field '%soriginal_max_position_embeddings' must be "
                    "a positive integer", prefix);
      return -EINVAL;
    }
    omax = (int)json_integer_value(o);
    if (!(hi > lo)) {
      exo_errf(err, errlen, EXO_CFG ": %shigh_freq_factor %g must exceed low_freq_factor %g",
                    prefix, hi, lo);
      return -EINVAL;
    }
    cfg->rope_scaling = EXO_ROPE_SCALING_LLAMA3;
    cfg->rope_factor = (float)f;
    cfg->rope_low_freq_factor = (float)lo;
    cfg->rope_high_freq_factor = (float)hi;
    cfg->rope_original_max_position = omax;
    return 0;
  }
  exo_errf(err, errlen, EXO_CFG ": %s%s '%s' is not supported (supported: default, "
                "linear, llama3)", prefix, tfield, type);
  return -EINVAL;
}

/* Sliding-window attention changes the math once a sequence outgrows the window; we
 * implement full attention only, so refuse any window smaller than max positions. */
static int exo_cfg_sliding(json_t *root, struct exo_model_config *cfg, char *err,
                           size_t errlen)
{
  json_t *w = json_object_get(root, "sliding_window");
  long long window = -1;
  if (w && !json_is_null(w)) {
    if (!json_is_integer(w)) {
      exo_errf(err, errlen, EXO_CFG ": field 'sliding_window' must be an integer or null");
      return -EINVAL;
    }
    window = json_integer_value(w);
  } else if (!w && !strcmp(cfg->architecture, "MistralForCausalLM")) {
    window = 4096; /* MistralConfig's default when the field is absent */
  }
  int enabled = 0;
  if (!strcmp(cfg->architecture, "MistralForCausalLM")) {
    enabled = 1; /* Mistral has no switch: a non-null window is used */
  } else if (!strcmp(cfg->architecture, "Qwen2ForCausalLM")) {
    int rc = exo_cfg_bool(root, "use_sliding_window", 0, &enabled, err, errlen);
    if (rc < 0)
      return rc;
    json_t *lt = json_object_get(root, "layer_types");
    size_t i;
    json_t *x;
    json_array_foreach(lt, i, x) if (json_is_string(x) &&
                                     !strcmp(json_string_value(x), "sliding_attention"))
      enabled = 1;
  }
  if (enabled && window >= 0 && window < cfg->max_position_embeddings) {
    exo_errf(err, errlen, EXO_CFG ": sliding-window attention (sliding_window %lld < "
                  "max_position_embeddings %d) is not supported", window,
                  cfg->max_position_embeddings);
    return -ENOTSUP;
  }
  return 0;
}

static const char *const exo_archs[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                        "Qwen2ForCausalLM"};

static int exo_cfg_parse(json_t *root, struct exo_model_config *cfg, char *err, size_t errlen)
{
  int rc;
  if (!json_is_object(root)) {
    exo_errf(err, errlen, EXO_CFG ": top level is not an object");
    return -EINVAL;
  }
  json_t *archs = json_object_get(root, "architectures");
  json_t *a0 = json_array_get(archs, 0);
  if (!json_is_string(a0)) {
    exo_errf(err, errlen, EXO_CFG ": field 'architectures' must be a non-empty list of "
                  "strings");
    return -EINVAL;
  }
  const char *arch = json_string_value(a0);
  int known = 0;
  for (size_t i = 0; i < sizeof exo_archs / sizeof exo_archs[0]; i++)
    known |= !strcmp(arch, exo_archs[i]);
  if (!known) {
    exo_errf(err, errlen, EXO_CFG ": architecture '%.100s' is not supported (supported: "
                  "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)", arch);
    return -ENOTSUP;
  }
  snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch);
  int is_qwen2 = !strcmp(arch, "Qwen2ForCausalLM");
  int is_llama = !strcmp(arch, "LlamaForCausalLM");

  if ((rc = exo_cfg_int(root, "vocab_size", 1, 0, 1, EXO_MAX_VOCAB, &cfg->vocab_size, err,
                        errlen)) < 0 ||
      (rc = exo_cfg_int(root, "hidden_size", 1, 0, 1, EXO_MAX_DIM, &cfg->hidden_size, err,
                        errlen)) < 0 ||
      (rc = exo_cfg_int(root, "intermediate_size", 1, 0, 1, EXO_MAX_DIM,
                        &cfg->intermediate_size, err, errlen)) < 0 ||
      (rc = exo_cfg_int(root, "num_hidden_layers", 1, 0, 1, EXO_MAX_LAYERS, &cfg->n_layers, err,
                        errlen)) < 0 ||
      (rc = exo_cfg_int(root, "num_attention_heads", 1, 0, 1, EXO_MAX_DIM, &cfg->n_heads, err,
                        errlen)) < 0 ||
      (rc = exo_cfg_int(root, "num_key_value_heads", 0, cfg->n_heads, 1, EXO_MAX_DIM,
                        &cfg->n_kv_heads, err, errlen)) < 0 ||
      (rc = exo_cfg_int(root, "head_dim", 0, 0, 1, EXO_MAX_DIM, &cfg->head_dim, err,
                        errlen)) < 0 ||
      (rc = exo_cfg_int(root, "max_position_embeddings", 0,
                        is_qwen2 ? 32768 : is_llama ? 2048 : 131072, 1, INT_MAX,
                        &cfg->max_position_embeddings, err, errlen)) < 0)
    return rc;
  if (!cfg->head_dim) {
    if (cfg->hidden_size % cfg->n_heads) {
      exo_errf(err, errlen, EXO_CFG ": hidden_size %d is not divisible by "
                    "num_attention_heads %d (and no head_dim is given)", cfg->hidden_size,
                    cfg->n_heads);
      return -EINVAL;
    }
    cfg->head_dim = cfg->hidden_size / cfg->n_heads;
  }
  if (cfg->head_dim % 2) {
    exo_errf(err, errlen, EXO_CFG ": head_dim %d is odd (RoPE rotates pairs)",
                  cfg->head_dim);
    return -EINVAL;
  }
  if (cfg->n_heads % cfg->n_kv_heads) {
    exo_errf(err, errlen, EXO_CFG ": num_attention_heads %d is not a multiple of "
                  "num_key_value_heads %d", cfg->n_heads, cfg->n_kv_heads);
    return -EINVAL;
  }
  if ((long long)cfg->n_heads * cfg->head_dim > EXO_MAX_DIM) {
    exo_errf(err, errlen, EXO_CFG ": num_attention_heads * head_dim = %lld exceeds %d",
                  (long long)cfg->n_heads * cfg->head_dim, EXO_MAX_DIM);
    return -EINVAL;
  }
  double eps;
  if ((rc = exo_cfg_num(root, "", "rms_norm_eps", 0, 1e-6, 1, &eps, err, errlen)) < 0)
    return rc;
  cfg->rms_norm_eps = (float)eps;
  json_t *act = json_object_get(root, "hidden_act");
  if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu"))) {
    exo_errf(err, errlen, EXO_CFG ": hidden_act '%s' is not supported (supported: silu)",
                  json_is_string(act) ? json_string_value(act) : "?");
    return -ENOTSUP;
  }
  int mlp_bias = 0, attn_bias = 0;
  if ((rc = exo_cfg_bool(root, "mlp_bias", 0, &mlp_bias, err, errlen)) < 0 ||
      (rc = exo_cfg_bool(root, "attention_bias", 0, &attn_bias, err, errlen)) < 0 ||
      (rc = exo_cfg_bool(root, "tie_word_embeddings", 0, &cfg->tie_word_embeddings, err,
                         errlen)) < 0)
    return rc;
  if (mlp_bias && is_llama) {
    exo_errf(err, errlen, EXO_CFG ": mlp_bias true is not supported");
    return -ENOTSUP;
  }
  /* Qwen2 always has q/k/v biases; Llama's attention_bias adds them to q/k/v and o;
   * Mistral's attention has no biases whatever the config says. */
  cfg->attention_bias = is_qwen2 || (is_llama && attn_bias);
  cfg->o_proj_bias = is_llama && attn_bias;
  if ((rc = exo_cfg_rope(root, cfg, err, errlen)) < 0 ||
      (rc = exo_cfg_sliding(root, cfg, err, errlen)) < 0 ||
      (rc = exo_cfg_dtype(root, cfg, err, errlen)) < 0)
    return rc;
  cfg->bos_token_id = -1;
  cfg->n_eos_ids = 0;
  return exo_cfg_special_ids(root, EXO_CFG, cfg, err, errlen);
}

int exo_model_config_load(const char *dir, struct exo_model_config *cfg, char *err,
                          size_t errlen)
{
  int rc;
  if (exo_model_path_is_gguf(dir))
    return exo_model_config_load_gguf(dir, cfg, err, errlen);
  json_t *root = NULL, *gen = NULL;
  json_error_t jerr;
  char *path = exo_path_join(dir, EXO_CFG);
  char *gpath = exo_path_join(dir, EXO_GEN_CFG);
  memset(cfg, 0, sizeof *cfg);
  if (!path || !gpath) {
    rc = -ENOMEM;
    goto fail;
  }
  if (access(path, R_OK) < 0) {
    rc = -errno;
    exo_errf(err, errlen, EXO_CFG ": cannot read %s: %s", path, strerror(errno));
    goto fail;
  }
  root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    rc = -EINVAL;
    exo_errf(err, errlen, EXO_CFG ":%d:%d: %s", jerr.line, jerr.column, jerr.text);
    goto fail;
  }
  if ((rc = exo_cfg_parse(root, cfg, err, errlen)) < 0)
    goto fail;
  /* generate() in transformers takes bos/eos from generation_config.json when the file
   * exists, so its values win over config.json's. */
  if (access(gpath, F_OK) == 0) {
    gen = json_load_file(gpath, JSON_REJECT_DUPLICATES, &jerr);
    if (!gen || !json_is_object(gen)) {
      rc = -EINVAL;
      exo_errf(err, errlen, EXO_GEN_CFG ":%d:%d: %s", gen ? 1 : jerr.line,
                    gen ? 1 : jerr.column, gen ? "top level is not an object" : jerr.text);
      goto fail;
    }
    if ((rc = exo_cfg_special_ids(gen, EXO_GEN_CFG, cfg, err, errlen)) < 0)
      goto fail;
  }
  rc = 0;
fail:
  json_decref(gen);
  json_decref(root);
  free(path);
  free(gpath);
  if (rc == -ENOMEM)
    exo_errf(err, errlen, EXO_CFG ": out of memory");
  return rc;
}

/* ---- weights ---------------------------------------------------------------------- */

static int exo_files_open_index(struct exo_model_files *f, char *err, size_t errlen)
{
  char *single = exo_path_join(f->dir, EXO_SINGLE);
  char *index = exo_path_join(f->dir, EXO_INDEX);
  json_t *root = NULL;
  int rc = -ENOMEM;
  if (!single || !index)
    goto out;
  /* transformers prefers model.safetensors over an index when both exist. */
  if (access(single, F_OK) == 0) {
    rc = 0;
    goto out;
  }
  if (access(index, F_OK) < 0) {
    rc = -ENOENT;
    exo_errf(err, errlen, "%s: neither " EXO_SINGLE " nor " EXO_INDEX " found", f->dir);
    goto out;
  }
  json_error_t jerr;
  root = json_load_file(index, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    rc = -EINVAL;
    exo_errf(err, errlen, EXO_INDEX ":%d:%d: %s", jerr.line, jerr.column, jerr.text);
    goto out;
  }
  json_t *wm = json_object_get(root, "weight_map");
  if (!json_is_object(wm)) {
    rc = -EINVAL;
    exo_errf(err, errlen, EXO_INDEX ": field 'weight_map' must be an object");
    goto out;
  }
  const char *k;
  json_t *v;
  json_object_foreach(wm, k, v) {
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    size_t n = s ? strlen(s) : 0;
    /* Shards must sit beside the index: no paths, so an index cannot reach elsewhere. */
    if (!s || strchr(s, '/') || n < 12 || strcmp(s + n - 12, ".safetensors")) {
      rc = -EINVAL;
      exo_errf(err, errlen, EXO_INDEX ": weight_map['%s'] must be a *.safetensors file "
                    "name in the same directory", k);
      goto out;
    }
  }
  f->weight_map = json_incref(wm);
  rc = 0;
out:
  json_decref(root);
  free(single);
  free(index);
  return rc;
}

static int exo_files_get(struct exo_model_files *f, const char *file,
                         struct exo_safetensors **st, char *err, size_t errlen)
{
  for (size_t i = 0; i < f->n_files; i++)
    if (!strcmp(f->files[i].name, file)) {
      *st = f->files[i].st;
      return 0;
    }
  if (f->n_files == f->cap_files) {
    size_t cap = f->cap_files ? 2 * f->cap_files : 4;
    struct exo_model_file *n = realloc(f->files, cap * sizeof *n);
    if (!n)
      return -ENOMEM;
    f->files = n;
    f->cap_files = cap;
  }
  char *path = exo_path_join(f->dir, file);
  char *name = strdup(file);
  int rc = -ENOMEM;
  if (path && name && (rc = exo_safetensors_open(path, st, err, errlen)) == 0) {
    f->files[f->n_files].name = name;
    f->files[f->n_files].st = *st;
    f->n_files++;
    name = NULL;
  }
  free(path);
  free(name);
  return rc;
}

static int exo_files_keep(struct exo_model_files *f, void *buf)
{
  if (f->n_bufs == f->cap_bufs) {
    size_t cap = f->cap_bufs ? 2 * f->cap_bufs : 16;
    void **n = realloc(f->bufs, cap * sizeof *n);
    if (!n)
      return -ENOMEM;
    f->bufs = n;
    f->cap_bufs = cap;
  }
  f->bufs[f->n_bufs++] = buf;
  return 0;
}

struct exo_model_files *exo_model_files_new_gguf(struct exo_gguf *g)
{
  struct exo_model_files *f = calloc(1, sizeof *f);
  if (f)
    f->gguf = g;
  return f;
}

int exo_model_files_keep(struct exo_model_files *f, void *buf)
{
  return exo_files_keep(f, buf);
}

void *exo_model_files_copy_aligned(struct exo_model_files *f, const void *src, size_t n)
{
  /* Big copies ask for transparent huge pages (this kernel grants them on madvise only):
   * copying 4.4 GB faulted 1.1 million 4 KiB pages and took ~15 s of a node's start; 2 MiB
   * pages also spare decode most TLB misses. */
  const size_t huge = (size_t)2 << 20;
  const size_t align = n >= huge ? huge : 64, len = (n + align - 1) & ~(align - 1);
  void *copy = aligned_alloc(align, len);
  if (!copy || exo_files_keep(f, copy) < 0) {
    free(copy);
    return NULL;
  }
  if (align == huge)
    (void)madvise(copy, len, MADV_HUGEPAGE); /* advisory, as below */
  memcpy(copy, src, n);
  const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t lo = ((uintptr_t)src + pg - 1) & ~(pg - 1), hi = ((uintptr_t)src + n) & ~(pg - 1);
  if (hi > lo) /* advisory: a failure costs memory, never results */
    (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
  return copy;
}

static void exo_files_free(struct exo_model_files *f)
{
  if (!f)
    return;
  for (size_t i = 0; i < f->n_files; i++) {
    exo_safetensors_close(f->files[i].st);
    free(f->files[i].name);
  }
  free(f->files);
  for (size_t i = 0; i < f->n_bufs; i++)
    free(f->bufs[i]);
  free(f->bufs);
  exo_gguf_close(f->gguf);
  json_decref(f->weight_map);
  free(f->dir);
  free(f);
}

/* Loads tensor name, which must have shape [rows, cols] (or [rows] when cols == 0), into
 * w: a matrix in its stored dtype, in place from the mapping when 64-byte aligned, else
 * an owned aligned copy; a vector as F32 (widened into an owned copy when stored half or
 * unaligned). */
static int exo_load_tensor(struct exo_model *m, const char *name, int64_t rows, int64_t cols,
                           struct exo_weight *w, char *err, size_t errlen)
{
  struct exo_model_files *f = m->files;
  const char *file = EXO_SINGLE;
  struct exo_safetensors *st;
  int rc;
  if (f->weight_map) {
    json_t *v = json_object_get(f->weight_map, name);
    if (!v) {
      exo_errf(err, errlen, EXO_INDEX ": tensor '%s' is missing from weight_map", name);
      return -ENOENT;
    }
    file = json_string_value(v);
  }
  if ((rc = exo_files_get(f, file, &st, err, errlen)) < 0)
    return rc;
  const struct exo_st_tensor *t = exo_safetensors_find(st, name);
  if (!t) {
    exo_errf(err, errlen, "%s: tensor '%s' is missing", file, name);
    return -ENOENT;
  }
  int want_dims = cols ? 2 : 1;
  if (t->n_dims != want_dims || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
    char got[160] = "";
    size_t off = 0;
    for (int d = 0; d < t->n_dims && off < sizeof got; d++)
      off += (size_t)snprintf(got + off, sizeof got - off, "%s%lld", d ? ", " : "",
                              (long long)t->shape[d]);
    if (cols)
      exo_errf(err, errlen, "%s: tensor '%s': shape [%s], expected [%lld, %lld]", file,
                    name, got, (long long)rows, (long long)cols);
    else
      exo_errf(err, errlen, "%s: tensor '%s': shape [%s], expected [%lld]", file, name,
                    got, (long long)rows);
    return -EINVAL;
  }
  if (t->dtype != EXO_ST_F32 && t->dtype != EXO_ST_F16 && t->dtype != EXO_ST_BF16) {
    exo_errf(err, errlen, "%s: tensor '%s': dtype %s is not supported (F32, F16, BF16)",
                  file, name, exo_st_dtype_name(t->dtype));
    return -ENOTSUP;
  }
  exo_safetensors_willneed(st, t);
  size_t n = (size_t)t->n_elems;
  w->rows = cols ? rows : 1;
  w->cols = cols ? cols : rows;
  w->dtype = EXO_DTYPE_F32;
  if (cols) {
    /* Matrices keep their dtype and are read in place from the page cache when 64-byte
     * aligned. safetensors aligns data to 8 bytes only, and decode read a 2048 x 2048 F32
     * matrix at 23.5 GB/s with every 512-bit load split over two cache lines against
     * 28-35 GB/s aligned (one thread, same run): such matrices are copied once. */
    w->dtype = t->dtype == EXO_ST_F16   ? EXO_DTYPE_F16
               : t->dtype == EXO_ST_BF16 ? EXO_DTYPE_BF16
                                         : EXO_DTYPE_F32;
    if ((uintptr_t)t->data % 64 == 0) {
      w->data = t->data;
      return 0;
    }
    const size_t len = n * (t->dtype == EXO_ST_F32 ? 4 : 2);
    if (!(w->data = exo_model_files_copy_aligned(f, t->data, len))) {
      exo_errf(err, errlen, "%s: tensor '%s': out of memory for %zu bytes", file, name, len);
      return -ENOMEM;
    }
    return 0;
  }
  size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
  float *buf = aligned_alloc(64, bytes ? bytes : 64);
  if (!buf || exo_files_keep(f, buf) < 0) {
    free(buf);
    exo_errf(err, errlen, "%s: tensor '%s': out of memory for %zu bytes", file, name,
                  bytes);
    return -ENOMEM;
  }
  if (t->dtype == EXO_ST_F32)
    memcpy(buf, t->data, n * sizeof(float));
  else if (t->dtype == EXO_ST_F16)
    exo_f16_to_f32_n(t->data, buf, n);
  else
    exo_bf16_to_f32_n(t->data, buf, n);
  w->data = buf;
  return 0;
}

static int exo_load_layer(struct exo_model *m, int i, char *err, size_t errlen)
{
  const struct exo_model_config *c = &m->cfg;
  struct exo_layer_weights *l = &m->layers[i - m->layer_begin];
  int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim;
  int64_t kv = (int64_t)c->n_kv_heads * c->head_dim, in = c->intermediate_size;
  struct {
    const char *suffix;
    struct exo_weight *w;
    int64_t rows, cols;
    int needed;
  } items[] = {
    {"input_layernorm.weight", &l->attn_norm, h, 0, 1},
    {"self_attn.q_proj.weight", &l->wq, q, h, 1},
    {"self_attn.k_proj.weight", &l->wk, kv, h, 1},
    {"self_attn.v_proj.weight", &l->wv, kv, h, 1},
    {"self_attn.q_proj.bias", &l->bq, q, 0, c->attention_bias},
    {"self_attn.k_proj.bias", &l->bk, kv, 0, c->attention_bias},
    {"self_attn.v_proj.bias", &l->bv, kv, 0, c->attention_bias},
    {"self_attn.o_proj.weight", &l->wo, h, q, 1},
    {"self_attn.o_proj.bias", &l->bo, h, 0, c->o_proj_bias},
    {"post_attention_layernorm.weight", &l->ffn_norm, h, 0, 1},
    {"mlp.gate_proj.weight", &l->w_gate, in, h, 1},
    {"mlp.up_proj.weight", &l->w_up, in, h, 1},
    {"mlp.down_proj.weight", &l->w_down, h, in, 1},
  };
  char name[128];
  for (size_t k = 0; k < sizeof items / sizeof items[0]; k++) {
    if (!items[k].needed)
      continue;
    snprintf(name, sizeof name, "model.layers.%d.%s", i, items[k].suffix);
    int rc = exo_load_tensor(m, name, items[k].rows, items[k].cols, items[k].w, err, errlen);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* The stored dtype of a tensor this shard loaded, so cfg.dtype reports what is on
 * disk even when config.json's dtype field disagrees or is absent. */
static void exo_note_stored_dtype(struct exo_model *m, const char *name)
{
  const char *file = EXO_SINGLE;
  struct exo_model_files *f = m->files;
  if (f->weight_map)
    file = json_string_value(json_object_get(f->weight_map, name));
  for (size_t i = 0; file && i < f->n_files; i++) {
    if (strcmp(f->files[i].name, file))
      continue;
    const struct exo_st_tensor *t = exo_safetensors_find(f->files[i].st, name);
    if (t && t->dtype == EXO_ST_F16)
      m->cfg.dtype = EXO_DTYPE_F16;
    else if (t && t->dtype == EXO_ST_BF16)
      m->cfg.dtype = EXO_DTYPE_BF16;
    else if (t)
      m->cfg.dtype = EXO_DTYPE_F32;
  }
}

int exo_model_check_range(int n_layers, int *begin, int *end, char *err, size_t errlen)
{
  if (*end == -1)
    *end = n_layers;
  if (*begin < 0 || *begin >= *end || *end > n_layers) {
    exo_errf(err, errlen, "layer range [%d, %d) is invalid for %d layers (need 0 <= a < "
             "b <= %d)", *begin, *end, n_layers, n_layers);
    return -EINVAL;
  }
  return 0;
}

int exo_model_load(const char *dir, int layer_begin, int layer_end, struct exo_model **out,
                   char *err, size_t errlen)
{
  int rc;
  struct exo_model *m = calloc(1, sizeof *m);
  *out = NULL;
  if (err && errlen)
    err[0] = '\0';
  if (!m)
    return -ENOMEM;
  if (exo_model_path_is_gguf(dir)) {
    free(m);
    return exo_model_load_gguf(dir, layer_begin, layer_end, out, err, errlen);
  }
  if ((rc = exo_model_config_load(dir, &m->cfg, err, errlen)) < 0)
    goto fail;
  int L = m->cfg.n_layers;
  if ((rc = exo_model_check_range(L, &layer_begin, &layer_end, err, errlen)))
    goto fail;
  m->layer_begin = layer_begin;
  m->layer_end = layer_end;
  m->files = calloc(1, sizeof *m->files);
  m->layers = calloc((size_t)(layer_end - layer_begin), sizeof *m->layers);
  if (!m->files || !m->layers || !(m->files->dir = strdup(dir))) {
    rc = -ENOMEM;
    goto fail;
  }
  if ((rc = exo_files_open_index(m->files, err, errlen)) < 0)
    goto fail;

  const struct exo_model_config *c = &m->cfg;
  int last = layer_end == L;
  if (layer_begin == 0 || (last && c->tie_word_embeddings)) {
    struct exo_weight e;
    if ((rc = exo_load_tensor(m, "model.embed_tokens.weight", c->vocab_size, c->hidden_size,
                              &e, err, errlen)) < 0)
      goto fail;
    if (layer_begin == 0)
      m->embed = e;
    if (last && c->tie_word_embeddings)
      m->lm_head = e; /* same data pointer: tied weights are one tensor */
  }
  for (int i = layer_begin; i < layer_end; i++)
    if ((rc = exo_load_layer(m, i, err, errlen)) < 0)
      goto fail;
  if (last) {
    if ((rc = exo_load_tensor(m, "model.norm.weight", c->hidden_size, 0, &m->final_norm, err,
                              errlen)) < 0)
      goto fail;
    if (!c->tie_word_embeddings &&
        (rc = exo_load_tensor(m, "lm_head.weight", c->vocab_size, c->hidden_size, &m->lm_head,
                              err, errlen)) < 0)
      goto fail;
  }
  char qname[96];
  snprintf(qname, sizeof qname, "model.layers.%d.self_attn.q_proj.weight", layer_begin);
  exo_note_stored_dtype(m, qname);
  *out = m;
  return 0;
fail:
  if (rc == -ENOMEM && err && errlen && !err[0])
    exo_errf(err, errlen, "%s: out of memory", dir);
  exo_model_free(m);
  return rc;
}

void exo_model_free(struct exo_model *model)
{
  if (!model)
    return;
  exo_files_free(model->files);
  free(model->layers);
  free(model);
}
