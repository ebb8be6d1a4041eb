/* tests/tensor/test_forward_batch.c: exo_forward with batch_invariant on the fixture
 * models (tiny-llama, tiny-qwen2), their matrices also re-stored in memory as F16, BF16,
 * Q8_0 and Q4_0: k = 1..8 sequences with prompts of different lengths, prefilled in one
 * call and decoded together (so at different KV lengths), give every logit bit-identical
 * to each sequence run alone; and the fixtures' greedy ids and step logits with the flag.
 * Takes --cpu PATH like test_matmul (sets EXO_CPU before the first product). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/dtype.h"
#include "tensor/forward.h"
#include "tensor/matmul.h"
#include "tensor/model.h"
#include "tensor/quant.h"
#include "tensor/safetensors.h"
#include "tests/test.h"

#define TOL 1e-4
#define MAX_SEQS 8
#define DECODE_STEPS 3

static char g_dir[1024];
static const char *g_name;

static struct exo_model *load(void)
{
  struct exo_model *m = NULL;
  char err[512] = "";
  int rc = exo_model_load(g_dir, 0, -1, &m, err, sizeof err);
  if (rc)
    fprintf(stderr, "load %s: %d %s\n", g_dir, rc, err);
  return m;
}

/* The model's matrices re-stored as dt (in buffers of this struct; the originals are
 * put back before exo_model_free). Block formats keep matrices whose width is not a
 * multiple of 32 in F32, as convert keeps them in F16. */
struct restore {
  struct exo_weight *w[64];
  const void *orig[64];
  enum exo_dtype orig_dt[64];
  void *buf[64];
  int n;
};

static int requant(struct restore *rs, struct exo_weight *w, enum exo_dtype dt)
{
  if (dt == EXO_DTYPE_F32 || exo_dtype_row_bytes(dt, w->cols) == 0)
    return 0;
  if (rs->n == 64)
    return -ENOSPC;
  const size_t rb = exo_dtype_row_bytes(dt, w->cols);
  unsigned char *buf = malloc(rb * (size_t)w->rows);
  float *row = malloc((size_t)w->cols * sizeof *row);
  if (!buf || !row) {
    free(buf);
    free(row);
    return -ENOMEM;
  }
  for (int64_t r = 0; r < w->rows; r++) {
    exo_weight_row_f32(w, r, row);
    unsigned char *p = buf + (size_t)r * rb;
    if (dt == EXO_DTYPE_Q8_0)
      exo_q8_0_quantize(row, p, w->cols);
    else if (dt == EXO_DTYPE_Q4_0)
      exo_q4_0_quantize(row, p, w->cols);
    else
      for (int64_t j = 0; j < w->cols; j++) {
        uint16_t h = dt == EXO_DTYPE_F16 ? exo_f32_to_f16(row[j]) : exo_f32_to_bf16(row[j]);
        memcpy(p + 2 * j, &h, 2);
      }
  }
  free(row);
  rs->w[rs->n] = w;
  rs->orig[rs->n] = w->data;
  rs->orig_dt[rs->n] = w->dtype;
  rs->buf[rs->n++] = buf;
  w->data = buf;
  w->dtype = dt;
  return 0;
}

static int requant_model(struct restore *rs, struct exo_model *m, enum exo_dtype dt)
{
  int rc = 0;
  for (int l = 0; l < m->layer_end - m->layer_begin && !rc; l++) {
    struct exo_layer_weights *w = &m->layers[l];
    struct exo_weight *mats[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up,
                                 &w->w_down};
    for (size_t i = 0; i < sizeof mats / sizeof *mats && !rc; i++)
      rc = requant(rs, mats[i], dt);
  }
  return rc ? rc : requant(rs, &m->lm_head, dt);
}

static void restore_model(struct restore *rs)
{
  for (int i = 0; i < rs->n; i++) {
    rs->w[i]->data = rs->orig[i];
    rs->w[i]->dtype = rs->orig_dt[i];
    free(rs->buf[i]);
  }
  rs->n = 0;
}

static int argmax(const float *v, int n)
{
  int best = 0;
  for (int i = 1; i < n; i++)
    if (v[i] > v[best])
      best = i;
  return best;
}

/* Sequence i's prompt: 1 + 5 * i tokens (so the batch holds KV lengths 1 .. 36). */
static int prompt_len(int i)
{
  return 1 + 5 * i;
}

static int32_t prompt_tok(int i, int t, int vocab)
{
  return (int32_t)((i * 131 + t * 17 + 3) % vocab);
}

/* Runs the sequences ids[0..k) through prefill (one call for all) then DECODE_STEPS
 * greedy decode steps (one call each), all with the flag; logits [k][1 + DECODE_STEPS][V]
 * in slot order. */
static int run_batch(const struct exo_model *m, const int *ids, int k, float *logits)
{
  const int V = m->cfg.vocab_size;
  struct exo_kv_cache *kv[MAX_SEQS] = {0};
  struct exo_forward_seq seqs[MAX_SEQS];
  struct exo_forward_scratch *s = NULL;
  int32_t tok[MAX_SEQS * 64];
  float *out = malloc((size_t)k * V * sizeof *out);
  char err[256] = "";
  int rc = out ? 0 : -ENOMEM, total = 0;
  for (int i = 0; i < k && !rc; i++) {
    rc = exo_forward_kv_new(m, 0, 128, &kv[i]);
    seqs[i] = (struct exo_forward_seq){.kv = kv[i], .n_tokens = prompt_len(ids[i])};
    for (int t = 0; t < prompt_len(ids[i]); t++)
      tok[total++] = prompt_tok(ids[i], t, V);
  }
  if (!rc)
    rc = exo_forward_scratch_new(m, total, 64, &s, err, sizeof err);
  for (int step = 0; step <= DECODE_STEPS && !rc; step++) {
    struct exo_forward_batch b = {.n_seqs = k, .seqs = seqs, .tokens = tok,
                                  .logits_last_only = 1, .batch_invariant = 1};
    rc = exo_forward(m, &b, out, s, err, sizeof err);
    for (int i = 0; i < k && !rc; i++) {
      memcpy(logits + ((size_t)i * (1 + DECODE_STEPS) + step) * V, out + (size_t)i * V,
             (size_t)V * sizeof *out);
      tok[i] = argmax(out + (size_t)i * V, V);
      seqs[i].start_pos += seqs[i].n_tokens;
      seqs[i].n_tokens = 1;
    }
  }
  if (rc)
    fprintf(stderr, "run_batch k %d: %d %s\n", k, rc, err);
  exo_forward_scratch_free(s);
  for (int i = 0; i < k; i++)
    exo_kv_cache_free(kv[i]);
  free(out);
  return rc;
}

static void check_invariance(enum exo_dtype dt)
{
  struct exo_model *m = load();
  CHECK(m != NULL);
  if (!m)
    return;
  struct restore rs = {.n = 0};
  const int V = m->cfg.vocab_size;
  const size_t per = (size_t)(1 + DECODE_STEPS) * V;
  float *alone = malloc(MAX_SEQS * per * sizeof(float));
  float *batch = malloc(MAX_SEQS * per * sizeof(float));
  CHECK(alone && batch);
  CHECK_INT_EQ(requant_model(&rs, m, dt), 0);
  for (int i = 0; i < MAX_SEQS && alone && batch; i++)
    CHECK_INT_EQ(run_batch(m, &i, 1, alone + (size_t)i * per), 0);
  /* Batches of the first k sequences, then all 8 in reverse order (every slot moves). */
  int ids[MAX_SEQS];
  for (int k = 1; k <= MAX_SEQS + 1 && alone && batch; k++) {
    const int n = k <= MAX_SEQS ? k : MAX_SEQS;
    for (int i = 0; i < n; i++)
      ids[i] = k <= MAX_SEQS ? i : MAX_SEQS - 1 - i;
    CHECK_INT_EQ(run_batch(m, ids, n, batch), 0);
    for (int i = 0; i < n; i++)
      if (memcmp(batch + (size_t)i * per, alone + (size_t)ids[i] * per,
                 per * sizeof(float))) {
        fprintf(stderr, "  %s %s: sequence %d in a batch of %d differs from alone\n", g_name,
                exo_dtype_name(dt), ids[i], n);
        CHECK(0);
      }
  }
  /* Not vacuous: the sequences' logits differ from each other. */
  if (alone && batch)
    CHECK(memcmp(alone, alone + per, per * sizeof(float)) != 0);
  restore_model(&rs);
  free(alone);
  free(batch);
  exo_model_free(m);
}

static void test_invariant_f32(void) { check_invariance(EXO_DTYPE_F32); }
static void test_invariant_f16(void) { check_invariance(EXO_DTYPE_F16); }
static void test_invariant_bf16(void) { check_invariance(EXO_DTYPE_BF16); }
static void test_invariant_q8_0(void) { check_invariance(EXO_DTYPE_Q8_0); }
static void test_invariant_q4_0(void) { check_invariance(EXO_DTYPE_Q4_0); }

/* The fixture's greedy generation (prefill + cached decode steps) with the flag: the
 * same ids, step logits within TOL of Hugging Face's; and a prompt prefilled in two
 * chunks gives the bits of one chunk (rows never see their neighbours). */
static void test_greedy_flag(void)
{
  char path[1100], err[512] = "";
  struct exo_safetensors *ref = NULL;
  snprintf(path, sizeof path, "%s/reference.safetensors", g_dir);
  CHECK_INT_EQ(exo_safetensors_open(path, &ref, err, sizeof err), 0);
  struct exo_model *m = load();
  const struct exo_st_tensor *prompt = ref ? exo_safetensors_find(ref, "greedy.prompt_ids") : NULL,
                             *want = ref ? exo_safetensors_find(ref, "greedy.ids") : NULL,
                             *sl = ref ? exo_safetensors_find(ref, "greedy.step_logits") : NULL;
  CHECK(m && prompt && want && sl);
  if (!m || !prompt || !want || !sl || prompt->n_elems < 2 || prompt->n_elems > 32) {
    exo_model_free(m);
    exo_safetensors_close(ref);
    return;
  }
  const int V = m->cfg.vocab_size, P = (int)prompt->n_elems, N = (int)want->n_elems;
  struct exo_kv_cache *kv = NULL, *kv2 = NULL;
  struct exo_forward_scratch *s = NULL;
  float *logits = malloc((size_t)V * sizeof(float)), *l2 = malloc((size_t)V * sizeof(float));
  CHECK_INT_EQ(exo_forward_kv_new(m, 0, 256, &kv), 0);
  CHECK_INT_EQ(exo_forward_kv_new(m, 0, 256, &kv2), 0);
  CHECK_INT_EQ(exo_forward_scratch_new(m, P, P + N, &s, err, sizeof err), 0);
  int32_t tok[128];
  memcpy(tok, prompt->data, (size_t)P * sizeof(int32_t));
  int pos = 0, n_in = P;
  double worst = 0;
  for (int j = 0; j < N && j + P < 128 && kv && s && logits; j++) {
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = n_in, .start_pos = pos};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok + pos,
                                  .logits_last_only = 1, .batch_invariant = 1};
    CHECK_INT_EQ(exo_forward(m, &b, logits, s, err, sizeof err), 0);
    for (int v = 0; v < V; v++) {
      double d = fabs((double)logits[v] - ((const float *)sl->data)[(size_t)j * V + v]);
      if (!(d <= worst))
        worst = d;
    }
    const int best = argmax(logits, V);
    CHECK_INT_EQ(best, ((const int32_t *)want->data)[j]);
    if (j == 0 && kv2 && l2) { /* the same prompt in chunks of 1 and P - 1 */
      for (int c = 0; c < 2; c++) {
        struct exo_forward_seq q2 = {.kv = kv2, .n_tokens = c ? P - 1 : 1, .start_pos = c};
        struct exo_forward_batch b2 = {.n_seqs = 1, .seqs = &q2, .tokens = tok + c,
                                       .logits_last_only = 1, .batch_invariant = 1};
        CHECK_INT_EQ(exo_forward(m, &b2, l2, s, err, sizeof err), 0);
      }
      CHECK(memcmp(l2, logits, (size_t)V * sizeof(float)) == 0);
    }
    pos += n_in;
    tok[pos] = best;
    n_in = 1;
  }
  CHECK_NEAR(worst, 0.0, TOL);
  fprintf(stderr, "  %s greedy with batch_invariant: step logits max diff %.3g\n", g_name,
          worst);
  free(logits);
  free(l2);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  exo_kv_cache_free(kv2);
  exo_model_free(m);
  exo_safetensors_close(ref);
}

int main(int argc, char **argv)
{
  if (argc == 3 && !strcmp(argv[1], "--cpu")) /* before the first exo_cpu_path() */
    setenv("EXO_CPU", argv[2], 1);
  const char *fx = getenv("EXO_FIXTURES");
  if (!fx)
    fx = "tests/fixtures";
  static const char *models[] = {"tiny-llama", "tiny-qwen2"};
  for (size_t i = 0; i < 2; i++) {
    g_name = models[i];
    snprintf(g_dir, sizeof g_dir, "%s/%s", fx, g_name);
    fprintf(stderr, "== %s (path %s)\n", g_name, exo_cpu_path_name(exo_cpu_path()));
    EXO_RUN(test_invariant_f32);
    EXO_RUN(test_invariant_f16);
    EXO_RUN(test_invariant_bf16);
    EXO_RUN(test_invariant_q8_0);
    EXO_RUN(test_invariant_q4_0);
    EXO_RUN(test_greedy_flag);
  }
  return exo_test_result();
}
