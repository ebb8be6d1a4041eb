/* tests/tensor/test_model_load.c: config.json parsing (both layouts, refusals), weight
 * loading of the fixtures and of make-model output (F32/F16/BF16, sharded), layer-range
 * loading, named errors for damaged models, and a peak-RSS check of a half-model load.
 * Writes only inside its own mkdtemp directory and removes it. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tensor/dtype.h"
#include "tensor/quant.h"
#include "tensor/model.h"
#include "tensor/model_writer.h"
#include "tensor/safetensors.h"
#include "tests/test.h"

static char tmpdir[256];

static const char *fixtures(void)
{
  const char *f = getenv("EXO_FIXTURES");
  return f ? f : "tests/fixtures";
}

static char *fixture(const char *model)
{
  static char p[512];
  snprintf(p, sizeof p, "%s/%s", fixtures(), model);
  return p;
}

static char *tmp(const char *name)
{
  static char p[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
  return p[k];
}

static int64_t wsize(const struct exo_weight *w)
{
  return w->rows * w->cols;
}

static int weq(const struct exo_weight *a, const struct exo_weight *b)
{
  if (!a->data || !b->data)
    return a->data == b->data;
  return a->rows == b->rows && a->cols == b->cols && a->dtype == b->dtype &&
         !memcmp(a->data, b->data, exo_dtype_row_bytes(a->dtype, a->cols) * (size_t)a->rows);
}

static double wstd(const struct exo_weight *w)
{
  const float *v = w->data;
  int64_t n = wsize(w);
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++)
    s += v[i];
  double mean = s / (double)n;
  for (int64_t i = 0; i < n; i++)
    s2 += (v[i] - mean) * (v[i] - mean);
  return sqrt(s2 / (double)(n - 1));
}

static double wmean(const struct exo_weight *w)
{
  const float *v = w->data;
  double s = 0;
  for (int64_t i = 0; i < wsize(w); i++)
    s += v[i];
  return s / (double)wsize(w);
}

/* Every weight slot of a layer, for whole-model comparisons. */
static const struct exo_weight *layer_slot(const struct exo_layer_weights *l, int k)
{
  const struct exo_weight *s[] = {&l->attn_norm, &l->wq, &l->wk, &l->wv, &l->bq, &l->bk,
                                  &l->bv, &l->wo, &l->ffn_norm, &l->w_gate, &l->w_up,
                                  &l->w_down, &l->bo};
  return k < 13 ? s[k] : NULL;
}

/* Copies a fixture model into tmpdir/name, config.json taken from cfg_file. */
static char *clone_fixture(const char *model, const char *name, const char *cfg_file)
{
  char *dir = tmp(name);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "rm -rf '%s' && mkdir -p '%s' && cp '%s/model.safetensors' '%s/generation_config.json' "
           "'%s/' && cp '%s/%s' '%s/config.json'", dir, dir, fixture(model), fixture(model), dir,
           fixture(model), cfg_file, dir);
  return system(cmd) == 0 ? dir : NULL;
}

/* Sets (or with v NULL deletes) key of dir/file's top-level object; steals v. */
static int json_file_set(const char *dir, const char *file, const char *key, json_t *v)
{
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  json_t *root = json_load_file(path, 0, NULL);
  if (!root)
    root = json_object();
  int rc = v ? json_object_set_new(root, key, v) : json_object_del(root, key);
  if (rc == 0)
    rc = json_dump_file(root, path, JSON_INDENT(2));
  json_decref(root);
  return rc;
}

static int cfg_set(const char *dir, const char *key, json_t *v)
{
  return json_file_set(dir, "config.json", key, v);
}

static void expect_load_fail(const char *dir, int a, int b, const char *n1, const char *n2)
{
  struct exo_model *m = (void *)1;
  char err[512] = "";
  int rc = exo_model_load(dir, a, b, &m, err, sizeof err);
  CHECK(rc < 0);
  CHECK(m == NULL);
  CHECK_STR_CONTAINS(err, n1);
  if (n2)
    CHECK_STR_CONTAINS(err, n2);
  if (rc == 0)
    exo_model_free(m);
}

static struct exo_model *load_ok(const char *dir, int a, int b)
{
  struct exo_model *m = NULL;
  char err[512] = "";
  int rc = exo_model_load(dir, a, b, &m, err, sizeof err);
  CHECK_INT_EQ(rc, 0);
  if (rc)
    fprintf(stderr, "load %s [%d, %d): %s\n", dir, a, b, err);
  return m;
}

/* Each loaded tensor equals the bytes in model.safetensors; std matches reference.json. */
static void check_against_file(const struct exo_model *m, const char *dir)
{
  char path[600], err[512], name[128];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  struct exo_safetensors *st = NULL;
  CHECK_INT_EQ(exo_safetensors_open(path, &st, err, sizeof err), 0);
  if (!st)
    return;
  static const char *sfx[] = {"input_layernorm.weight", "self_attn.q_proj.weight",
                              "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                              "self_attn.q_proj.bias", "self_attn.k_proj.bias",
                              "self_attn.v_proj.bias", "self_attn.o_proj.weight",
                              "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                              "mlp.up_proj.weight", "mlp.down_proj.weight",
                              "self_attn.o_proj.bias"};
  int compared = 0;
  for (int i = m->layer_begin; i < m->layer_end; i++)
    for (int k = 0; k < 13; k++) {
      const struct exo_weight *w = layer_slot(&m->layers[i - m->layer_begin], k);
      snprintf(name, sizeof name, "model.layers.%d.%s", i, sfx[k]);
      const struct exo_st_tensor *t = exo_safetensors_find(st, name);
      CHECK((t != NULL) == (w->data != NULL));
      if (t && w->data) {
        CHECK_INT_EQ(t->nbytes, wsize(w) * 4);
        CHECK(!memcmp(t->data, w->data, t->nbytes));
        compared++;
      }
    }
  CHECK(compared >= 9 * (m->layer_end - m->layer_begin));
  const struct exo_st_tensor *t = exo_safetensors_find(st, "model.embed_tokens.weight");
  if (m->embed.data)
    CHECK(t && !memcmp(t->data, m->embed.data, t->nbytes));
  t = exo_safetensors_find(st, "model.norm.weight");
  if (m->final_norm.data)
    CHECK(t && !memcmp(t->data, m->final_norm.data, t->nbytes));
  exo_safetensors_close(st);
}

static void test_fixture_llama(void)
{
  struct exo_model *m = load_ok(fixture("tiny-llama"), 0, -1);
  if (!m)
    return;
  const struct exo_model_config *c = &m->cfg;
  CHECK(!strcmp(c->architecture, "LlamaForCausalLM"));
  CHECK(c->vocab_size == 512 && c->hidden_size == 64 && c->intermediate_size == 176);
  CHECK(c->n_layers == 4 && c->n_heads == 4 && c->n_kv_heads == 2 && c->head_dim == 16);
  CHECK(c->max_position_embeddings == 256);
  CHECK_NEAR(c->rms_norm_eps, 1e-5, 1e-12);
  CHECK_NEAR(c->rope_theta, 10000.0, 0);
  CHECK_INT_EQ(c->rope_scaling, EXO_ROPE_SCALING_NONE);
  CHECK(!c->tie_word_embeddings && !c->attention_bias && !c->o_proj_bias);
  CHECK(c->bos_token_id == 508 && c->n_eos_ids == 1 && c->eos_token_ids[0] == 509);
  CHECK_INT_EQ(c->dtype, EXO_DTYPE_F32);
  CHECK(m->layer_begin == 0 && m->layer_end == 4);
  CHECK(m->embed.data && m->final_norm.data && m->lm_head.data);
  CHECK(m->lm_head.data != m->embed.data);
  CHECK(m->embed.rows == 512 && m->embed.cols == 64 && m->embed.dtype == EXO_DTYPE_F32);
  CHECK(m->final_norm.rows == 1 && m->final_norm.cols == 64);
  CHECK(m->layers[3].w_down.rows == 64 && m->layers[3].w_down.cols == 176);
  CHECK(m->layers[0].bq.data == NULL && m->layers[0].bo.data == NULL);
  /* reference.json -> init.per_param_std */
  CHECK_NEAR(wstd(&m->embed), 0.25026237964630127, 1e-5);
  CHECK_NEAR(wstd(&m->layers[0].wq), 0.12591861188411713, 1e-5);
  CHECK_NEAR(wstd(&m->layers[0].wv), 0.12624861299991608, 1e-5);
  check_against_file(m, fixture("tiny-llama"));
  exo_model_free(m);
  exo_model_free(NULL);
}

static void test_fixture_qwen2_ranges(void)
{
  struct exo_model *full = load_ok(fixture("tiny-qwen2"), 0, 3);
  if (!full)
    return;
  CHECK(full->cfg.tie_word_embeddings && full->cfg.attention_bias && !full->cfg.o_proj_bias);
  CHECK_NEAR(full->cfg.rope_theta, 1e6, 0);
  CHECK_NEAR(full->cfg.rms_norm_eps, 1e-6, 1e-13);
  CHECK(full->lm_head.data == full->embed.data); /* tied: one tensor */
  CHECK(full->layers[0].bq.data && full->layers[0].bk.data && full->layers[0].bv.data);
  CHECK(full->layers[0].bk.rows == 1 && full->layers[0].bk.cols == 32);
  CHECK_NEAR(wstd(&full->layers[0].bq), 0.0988127812743187, 1e-5);
  CHECK_NEAR(wstd(&full->embed), 0.2513636350631714, 1e-5);
  check_against_file(full, fixture("tiny-qwen2"));

  struct exo_model *first = load_ok(fixture("tiny-qwen2"), 0, 1);
  struct exo_model *mid = load_ok(fixture("tiny-qwen2"), 1, 2);
  struct exo_model *last = load_ok(fixture("tiny-qwen2"), 2, -1);
  if (first && mid && last) {
    CHECK(first->embed.data && !first->lm_head.data && !first->final_norm.data);
    CHECK(!mid->embed.data && !mid->lm_head.data && !mid->final_norm.data);
    CHECK(!last->embed.data && last->lm_head.data && last->final_norm.data);
    CHECK(weq(&last->lm_head, &full->embed)); /* tied: last shard's head is the embedding */
    CHECK(mid->layer_begin == 1 && mid->layer_end == 2);
    for (int k = 0; k < 13; k++) {
      CHECK(weq(layer_slot(&first->layers[0], k), layer_slot(&full->layers[0], k)));
      CHECK(weq(layer_slot(&mid->layers[0], k), layer_slot(&full->layers[1], k)));
      CHECK(weq(layer_slot(&last->layers[0], k), layer_slot(&full->layers[2], k)));
    }
    check_against_file(mid, fixture("tiny-qwen2"));
  }
  exo_model_free(first);
  exo_model_free(mid);
  exo_model_free(last);
  exo_model_free(full);

  struct exo_model *l = load_ok(fixture("tiny-llama"), 3, 4);
  if (l) { /* untied last shard: stored lm_head, no embedding */
    CHECK(!l->embed.data && l->lm_head.data && l->final_norm.data);
    exo_model_free(l);
  }
  expect_load_fail(fixture("tiny-llama"), -1, 2, "layer range [-1, 2)", "4 layers");
  expect_load_fail(fixture("tiny-llama"), 2, 2, "layer range [2, 2)", NULL);
  expect_load_fail(fixture("tiny-llama"), 0, 5, "layer range [0, 5)", NULL);
}

static void test_legacy_config(void)
{
  static const char *models[] = {"tiny-llama", "tiny-qwen2"};
  for (int i = 0; i < 2; i++) {
    struct exo_model_config a, b;
    char err[512] = "";
    CHECK_INT_EQ(exo_model_config_load(fixture(models[i]), &a, err, sizeof err), 0);
    char *dir = clone_fixture(models[i], "legacy", "config.legacy.json");
    CHECK(dir != NULL);
    if (!dir)
      return;
    CHECK_INT_EQ(exo_model_config_load(dir, &b, err, sizeof err), 0);
    CHECK(!memcmp(&a, &b, sizeof a));
    struct exo_model *m = load_ok(dir, 0, -1);
    exo_model_free(m);
  }
}

static void test_config_variants(void)
{
  char dir[512];
  struct exo_model_config c;
  char err[512] = "";
  char *cloned = clone_fixture("tiny-llama", "cfg", "config.legacy.json");
  if (!cloned)
    return;
  snprintf(dir, sizeof dir, "%s", cloned);
  /* llama3 scaling, legacy layout with the older "type" key */
  cfg_set(dir, "rope_scaling", json_pack("{s:s, s:f, s:f, s:f, s:i}", "type", "llama3", "factor",
                                         8.0, "low_freq_factor", 1.0, "high_freq_factor", 4.0,
                                         "original_max_position_embeddings", 8192));
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK_INT_EQ(c.rope_scaling, EXO_ROPE_SCALING_LLAMA3);
  CHECK(c.rope_factor == 8.0f && c.rope_low_freq_factor == 1.0f &&
        c.rope_high_freq_factor == 4.0f && c.rope_original_max_position == 8192);
  /* transformers-5 layout wins over the old keys */
  cfg_set(dir, "rope_parameters", json_pack("{s:s, s:f, s:f}", "rope_type", "linear",
                                            "rope_theta", 500000.0, "factor", 2.0));
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK_INT_EQ(c.rope_scaling, EXO_ROPE_SCALING_LINEAR);
  CHECK(c.rope_factor == 2.0f && c.rope_theta == 500000.0f);
  cfg_set(dir, "rope_parameters", json_pack("{s:s, s:f, s:f}", "rope_type", "yarn",
                                            "rope_theta", 500000.0, "factor", 2.0));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "config.json: rope_parameters.rope_type 'yarn' is not supported "
                          "(supported: default, linear, llama3)");
  cfg_set(dir, "rope_parameters", NULL);
  cfg_set(dir, "rope_scaling", json_pack("{s:s, s:f}", "type", "dynamic", "factor", 2.0));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "rope_scaling.type 'dynamic' is not supported");
  cfg_set(dir, "rope_scaling", json_pack("{s:s}", "rope_type", "llama3"));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "'rope_scaling.factor' is missing");
  cfg_set(dir, "rope_scaling", json_null());

  /* eos list in config.json; generation_config.json wins when present */
  cfg_set(dir, "eos_token_id", json_pack("[i, i]", 509, 511));
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK(c.n_eos_ids == 1 && c.eos_token_ids[0] == 509);
  json_file_set(dir, "generation_config.json", "eos_token_id", json_pack("[i, i, i]", 1, 2, 3));
  json_file_set(dir, "generation_config.json", "bos_token_id", json_null());
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK(c.n_eos_ids == 3 && c.eos_token_ids[2] == 3 && c.bos_token_id == -1);
  unlink(tmp("cfg/generation_config.json"));
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK(c.n_eos_ids == 2 && c.eos_token_ids[1] == 511 && c.bos_token_id == 508);
  cfg_set(dir, "eos_token_id", json_integer(512));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "config.json: field 'eos_token_id'");
  cfg_set(dir, "eos_token_id", json_null());
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK_INT_EQ(c.n_eos_ids, 0);

  /* head_dim absent: hidden / heads; explicit head_dim kept */
  cfg_set(dir, "head_dim", NULL);
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK_INT_EQ(c.head_dim, 16);
  cfg_set(dir, "num_attention_heads", json_integer(3));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "hidden_size 64 is not divisible by num_attention_heads 3");
  cfg_set(dir, "head_dim", json_integer(16));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "num_attention_heads 3 is not a multiple of num_key_value_heads 2");
  cfg_set(dir, "num_attention_heads", json_integer(4));
  cfg_set(dir, "hidden_size", json_integer(-64));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "config.json: field 'hidden_size' is -64");
  cfg_set(dir, "hidden_size", NULL);
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "config.json: field 'hidden_size' is missing");
  cfg_set(dir, "hidden_size", json_string("64"));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "'hidden_size' must be an integer");
  cfg_set(dir, "hidden_size", json_integer(64));

  cfg_set(dir, "architectures", json_pack("[s]", "GPT2LMHeadModel"));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "config.json: architecture 'GPT2LMHeadModel' is not supported "
                          "(supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  expect_load_fail(dir, 0, -1, "architecture 'GPT2LMHeadModel'", NULL);

  /* Mistral: sliding window used whenever set; absent means HF's default 4096 */
  cfg_set(dir, "architectures", json_pack("[s]", "MistralForCausalLM"));
  cfg_set(dir, "max_position_embeddings", json_integer(32768));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "sliding_window 4096 < max_position_embeddings 32768");
  cfg_set(dir, "sliding_window", json_null());
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK(!c.attention_bias);
  cfg_set(dir, "sliding_window", json_integer(32768));
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  /* Qwen2: only with use_sliding_window (or sliding layer_types) */
  cfg_set(dir, "architectures", json_pack("[s]", "Qwen2ForCausalLM"));
  cfg_set(dir, "sliding_window", json_integer(4096));
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK(c.attention_bias);
  cfg_set(dir, "use_sliding_window", json_true());
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "sliding-window attention");
  cfg_set(dir, "use_sliding_window", json_false());
  cfg_set(dir, "layer_types", json_pack("[s, s]", "full_attention", "sliding_attention"));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "sliding-window attention");
  cfg_set(dir, "layer_types", NULL);

  /* Llama attention_bias: q/k/v and o biases required */
  cfg_set(dir, "architectures", json_pack("[s]", "LlamaForCausalLM"));
  cfg_set(dir, "max_position_embeddings", json_integer(256));
  cfg_set(dir, "attention_bias", json_true());
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK(c.attention_bias && c.o_proj_bias);
  expect_load_fail(dir, 0, 1, "model.safetensors: tensor 'model.layers.0.self_attn.q_proj.bias' "
                              "is missing", NULL);
  cfg_set(dir, "attention_bias", json_false());
  cfg_set(dir, "hidden_act", json_string("gelu"));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "hidden_act 'gelu' is not supported");
  cfg_set(dir, "hidden_act", json_string("silu"));
  cfg_set(dir, "torch_dtype", json_string("float64"));
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "field 'torch_dtype' is 'float64'");
  cfg_set(dir, "torch_dtype", json_string("bfloat16"));
  CHECK_INT_EQ(exo_model_config_load(dir, &c, err, sizeof err), 0);
  CHECK_INT_EQ(c.dtype, EXO_DTYPE_BF16);
  struct exo_model *m = load_ok(dir, 0, 1); /* cfg.dtype reports the stored F32 */
  if (m)
    CHECK_INT_EQ(m->cfg.dtype, EXO_DTYPE_F32);
  exo_model_free(m);

  FILE *fp = fopen(tmp("cfg/config.json"), "w");
  if (fp) {
    fputs("{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"hidden_size\": 64,,\n}\n", fp);
    fclose(fp);
  }
  CHECK(exo_model_config_load(dir, &c, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "config.json:3:");
  CHECK(exo_model_config_load(tmp("nonexistent"), &c, err, sizeof err) == -ENOENT);
  CHECK_STR_CONTAINS(err, "config.json: cannot read");
}

static struct exo_model_spec small_spec(enum exo_model_arch arch, enum exo_dtype dt)
{
  struct exo_model_spec s = {.arch = arch, .vocab_size = 96, .hidden_size = 32,
                             .intermediate_size = 48, .n_layers = 3, .n_heads = 4,
                             .n_kv_heads = 2, .dtype = dt, .seed = 42, .n_shards = 1,
                             .tie_word_embeddings = arch == EXO_MODEL_ARCH_QWEN2};
  return s;
}

static struct exo_model *write_and_load(const char *name, const struct exo_model_spec *s)
{
  char err[512] = "";
  struct exo_model_write_stats st;
  int rc = exo_model_write_random(tmp(name), s, &st, err, sizeof err);
  CHECK_INT_EQ(rc, 0);
  if (rc) {
    fprintf(stderr, "write %s: %s\n", name, err);
    return NULL;
  }
  CHECK_INT_EQ(st.n_files, s->n_shards > 1 ? s->n_shards : 1);
  return load_ok(tmp(name), 0, -1);
}

static int model_equal(const struct exo_model *a, const struct exo_model *b)
{
  int ok = weq(&a->embed, &b->embed) && weq(&a->final_norm, &b->final_norm) &&
           weq(&a->lm_head, &b->lm_head) && a->layer_end - a->layer_begin ==
                                                b->layer_end - b->layer_begin;
  for (int i = 0; ok && i < a->layer_end - a->layer_begin; i++)
    for (int k = 0; k < 13; k++)
      ok = ok && weq(layer_slot(&a->layers[i], k), layer_slot(&b->layers[i], k));
  return ok;
}

/* Every element of h equals f rounded to dt by dtype.c and widened back. Matrices
 * stay half in memory (dtype dt, widened here row by row); vectors arrive as F32. */
static int narrowed_equal(const struct exo_weight *f, const struct exo_weight *h,
                          enum exo_dtype dt)
{
  if (!f->data || !h->data)
    return f->data == h->data;
  if (h->dtype != (h->rows > 1 ? dt : EXO_DTYPE_F32) || h->rows != f->rows ||
      h->cols != f->cols)
    return 0;
  const float *x = f->data;
  float *y = malloc((size_t)h->cols * sizeof *y);
  int ok = y != NULL;
  for (int64_t r = 0; ok && r < h->rows; r++) {
    exo_weight_row_f32(h, r, y);
    for (int64_t i = 0; ok && i < h->cols; i++) {
      float v = x[r * h->cols + i];
      float want = dt == EXO_DTYPE_F16 ? exo_f16_to_f32(exo_f32_to_f16(v))
                                       : exo_bf16_to_f32(exo_f32_to_bf16(v));
      ok = !memcmp(&want, &y[i], 4);
    }
  }
  free(y);
  return ok;
}

static void test_writer_round_trip(void)
{
  for (int arch = 0; arch < 2; arch++) {
    struct exo_model_spec s = small_spec((enum exo_model_arch)arch, EXO_DTYPE_F32);
    struct exo_model *f32 = write_and_load("w32", &s);
    s.dtype = EXO_DTYPE_BF16;
    struct exo_model *bf = write_and_load("wbf16", &s);
    s.dtype = EXO_DTYPE_F16;
    struct exo_model *hf = write_and_load("wf16", &s);
    s.dtype = EXO_DTYPE_F32;
    s.n_shards = 3;
    struct exo_model *sh = write_and_load("wshard", &s);
    if (f32 && bf && hf && sh) {
      CHECK_INT_EQ(bf->cfg.dtype, EXO_DTYPE_BF16);
      CHECK_INT_EQ(hf->cfg.dtype, EXO_DTYPE_F16);
      CHECK(f32->cfg.attention_bias == (arch == EXO_MODEL_ARCH_QWEN2));
      CHECK(f32->cfg.tie_word_embeddings == (arch == EXO_MODEL_ARCH_QWEN2));
      CHECK(model_equal(f32, sh));
      CHECK(!model_equal(f32, bf));
      int ok = narrowed_equal(&f32->embed, &bf->embed, EXO_DTYPE_BF16) &&
               narrowed_equal(&f32->embed, &hf->embed, EXO_DTYPE_F16) &&
               narrowed_equal(&f32->lm_head, &hf->lm_head, EXO_DTYPE_F16);
      for (int i = 0; i < 3; i++)
        for (int k = 0; k < 13; k++) {
          ok = ok && narrowed_equal(layer_slot(&f32->layers[i], k),
                                    layer_slot(&bf->layers[i], k), EXO_DTYPE_BF16);
          ok = ok && narrowed_equal(layer_slot(&f32->layers[i], k),
                                    layer_slot(&hf->layers[i], k), EXO_DTYPE_F16);
        }
      CHECK(ok);
      /* scales as documented: norms 1 + 0.2 N, matrices N / sqrt(in) */
      CHECK_NEAR(wmean(&f32->layers[0].attn_norm), 1.0, 0.15);
      CHECK_NEAR(wstd(&f32->layers[0].w_gate), 1.0 / sqrt(32.0), 0.02);
      CHECK_NEAR(wstd(&f32->layers[0].w_down), 1.0 / sqrt(48.0), 0.02);
      CHECK(!weq(&f32->layers[0].wq, &f32->layers[1].wq));
    }
    exo_model_free(f32);
    exo_model_free(bf);
    exo_model_free(hf);
    exo_model_free(sh);
  }
  /* A shard range opens only the files it needs: drop the last shard, layer 0 still loads. */
  struct exo_model_spec s = small_spec(EXO_MODEL_ARCH_LLAMA, EXO_DTYPE_BF16);
  s.n_shards = 3;
  s.n_layers = 6;
  struct exo_model *all = write_and_load("wshard6", &s);
  CHECK(all != NULL);
  exo_model_free(all);
  CHECK_INT_EQ(unlink(tmp("wshard6/model-00003-of-00003.safetensors")), 0);
  struct exo_model *m0 = load_ok(tmp("wshard6"), 0, 1);
  exo_model_free(m0);
  expect_load_fail(tmp("wshard6"), 0, -1, "model-00003-of-00003.safetensors", "cannot open");
  /* invalid specs */
  char err[256];
  s.n_heads = 5;
  CHECK(exo_model_write_random(tmp("bad"), &s, NULL, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "hidden 32 is not divisible by heads 5");
}

/* The exo-actors make-model command writes what the library writer writes. */
static void test_make_model_cli(void)
{
  const char *root = getenv("EXO_BUILD_ROOT");
  if (!root) {
    fprintf(stderr, "  EXO_BUILD_ROOT unset: run through meson test\n");
    CHECK(root != NULL);
    return;
  }
  char cmd[1536];
  snprintf(cmd, sizeof cmd, "'%s/actors/exo-actors' make-model --out '%s' --hidden 32 "
           "--intermediate 48 --layers 3 --heads 4 --kv-heads 2 --vocab 96 --dtype bf16 "
           "--seed 42 --arch qwen2 --tie --shards 2 > /dev/null", root, tmp("cli"));
  CHECK_INT_EQ(system(cmd), 0);
  struct exo_model_spec s = small_spec(EXO_MODEL_ARCH_QWEN2, EXO_DTYPE_BF16);
  struct exo_model *lib = write_and_load("clilib", &s);
  struct exo_model *cli = load_ok(tmp("cli"), 0, -1);
  if (lib && cli)
    CHECK(model_equal(lib, cli));
  exo_model_free(lib);
  exo_model_free(cli);
  snprintf(cmd, sizeof cmd, "'%s/actors/exo-actors' make-model --out '%s' --hidden 32 "
           "--layers 3 2> /dev/null", root, tmp("cli2"));
  int st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2); /* --intermediate missing */
}

static void test_damaged_models(void)
{
  struct exo_model_spec s = small_spec(EXO_MODEL_ARCH_LLAMA, EXO_DTYPE_F32);
  char err[512] = "";
  CHECK_INT_EQ(exo_model_write_random(tmp("dmg"), &s, NULL, err, sizeof err), 0);
  char dir[512];
  snprintf(dir, sizeof dir, "%s", tmp("dmg"));
  /* config says intermediate 50 but the file holds 48 */
  cfg_set(dir, "intermediate_size", json_integer(50));
  expect_load_fail(dir, 1, 2, "model.safetensors: tensor 'model.layers.1.mlp.gate_proj.weight': "
                              "shape [48, 32], expected [50, 32]", NULL);
  cfg_set(dir, "intermediate_size", json_integer(48));
  cfg_set(dir, "num_key_value_heads", json_integer(4));
  expect_load_fail(dir, 0, -1, "tensor 'model.layers.0.self_attn.k_proj.weight': shape [16, 32], "
                               "expected [32, 32]", NULL);
  cfg_set(dir, "num_key_value_heads", json_integer(2));
  /* tied file, config not tied: lm_head.weight missing, named */
  s.tie_word_embeddings = 1;
  CHECK_INT_EQ(exo_model_write_random(tmp("dmg"), &s, NULL, err, sizeof err), 0);
  cfg_set(dir, "tie_word_embeddings", json_false());
  expect_load_fail(dir, 2, 3, "model.safetensors: tensor 'lm_head.weight' is missing", NULL);
  struct exo_model *m = load_ok(dir, 0, 2); /* ranges without the head still load */
  exo_model_free(m);
  /* neither weights file */
  CHECK_INT_EQ(unlink(tmp("dmg/model.safetensors")), 0);
  expect_load_fail(dir, 0, -1, "neither model.safetensors nor model.safetensors.index.json", NULL);
  /* sharded index problems */
  s.n_shards = 2;
  CHECK_INT_EQ(exo_model_write_random(dir, &s, NULL, err, sizeof err), 0);
  json_t *idx = json_load_file(tmp("dmg/model.safetensors.index.json"), 0, NULL);
  json_t *wm = json_object_get(idx, "weight_map");
  json_object_del(wm, "model.layers.1.mlp.up_proj.weight");
  json_dump_file(idx, tmp("dmg/model.safetensors.index.json"), 0);
  expect_load_fail(dir, 0, -1, "model.safetensors.index.json: tensor "
                               "'model.layers.1.mlp.up_proj.weight' is missing from weight_map", NULL);
  json_object_set_new(wm, "model.layers.1.mlp.up_proj.weight", json_string("../x.safetensors"));
  json_dump_file(idx, tmp("dmg/model.safetensors.index.json"), 0);
  expect_load_fail(dir, 0, 1, "weight_map['model.layers.1.mlp.up_proj.weight']", NULL);
  json_object_set_new(wm, "model.layers.1.mlp.up_proj.weight",
                      json_string("model-00001-of-00002.safetensors"));
  json_dump_file(idx, tmp("dmg/model.safetensors.index.json"), 0);
  json_decref(idx);
  /* a corrupted shard header is reported with the shard's name */
  FILE *fp = fopen(tmp("dmg/model-00002-of-00002.safetensors"), "r+b");
  if (fp) {
    fseek(fp, 9, SEEK_SET);
    fputc('#', fp);
    fclose(fp);
  }
  expect_load_fail(dir, 2, 3, "model-00002-of-00002.safetensors: header JSON", NULL);
}

static long rss_kb(void)
{
  FILE *fp = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (fp && fgets(line, sizeof line, fp))
    if (!strncmp(line, "VmRSS:", 6))
      kb = strtol(line + 6, NULL, 10);
    else if (getenv("EXO_RSS_DEBUG") && !strncmp(line, "Rss", 3))
      fputs(line, stderr);
  if (fp)
    fclose(fp);
  return kb;
}

/* Loading layers [0, 11) of a 22-layer model and touching every loaded weight (as a
 * forward pass does) must grow RSS by about those bytes, not by the file's. */
static void test_half_model_rss(void)
{
  struct exo_model_spec s = {.arch = EXO_MODEL_ARCH_LLAMA, .vocab_size = 256,
                             .hidden_size = 256, .intermediate_size = 1024, .n_layers = 22,
                             .n_heads = 4, .n_kv_heads = 2, .dtype = EXO_DTYPE_F32, .seed = 9};
  char err[512] = "";
  struct exo_model_write_stats st;
  CHECK_INT_EQ(exo_model_write_random(tmp("big"), &s, &st, err, sizeof err), 0);
  long before = rss_kb();
  struct exo_model *m = load_ok(tmp("big"), 0, 11);
  if (!m)
    return;
  double sum = 0;
  int64_t bytes = wsize(&m->embed) * 4;
  const float *e = m->embed.data;
  for (int64_t j = 0; j < wsize(&m->embed); j++)
    sum += e[j];
  for (int i = 0; i < 11; i++)
    for (int k = 0; k < 13; k++) {
      const struct exo_weight *w = layer_slot(&m->layers[i], k);
      const float *v = w->data;
      for (int64_t j = 0; v && j < wsize(w); j++)
        sum += v[j];
      if (v)
        bytes += wsize(w) * 4;
    }
  long after = rss_kb();
  long grown = after - before;
  fprintf(stderr, "  rss: file %.1f MiB, needed %.1f MiB, grew %.1f MiB (sum %g)\n",
          st.bytes / 1048576.0, bytes / 1048576.0, grown / 1024.0, sum);
  CHECK(bytes < (int64_t)st.bytes * 6 / 10);
  int64_t budget = bytes * 12 / 10;
#if defined(__SANITIZE_ADDRESS__)
  budget += bytes / 8; /* ASan maps one shadow byte per 8 bytes the loop reads */
#endif
  CHECK(grown * 1024 <= budget);
  CHECK(grown * 1024 >= bytes * 8 / 10); /* the measurement does see the touched pages */
  exo_model_free(m);
}

int main(void)
{
  const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(tmpdir, sizeof tmpdir, "%s/exo-model-XXXXXX", base);
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  EXO_RUN(test_fixture_llama);
  EXO_RUN(test_fixture_qwen2_ranges);
  EXO_RUN(test_legacy_config);
  EXO_RUN(test_config_variants);
  EXO_RUN(test_writer_round_trip);
  EXO_RUN(test_make_model_cli);
  EXO_RUN(test_damaged_models);
  EXO_RUN(test_half_model_rss);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "warning: could not remove %s\n", tmpdir);
  return exo_test_result();
}
