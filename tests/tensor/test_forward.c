/* tests/tensor/test_forward.c: the forward pass against Hugging Face's reference tensors
 * (tests/fixtures/tiny-llama, tiny-qwen2): per-layer hidden states, logits, greedy ids,
 * KV-cache decode vs full forward, split layer ranges, batching, cache rollback, and
 * precise errors for bad batches. Every case runs on both fixture models. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/forward.h"
#include "tensor/model.h"
#include "tensor/ops.h"
#include "tensor/safetensors.h"
#include "tests/test.h"

#define TOL 1e-4

static const char *g_name; /* fixture model the cases run on */
static char g_dir[1024];
static struct exo_safetensors *g_ref;

static const struct exo_st_tensor *ref_tensor(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static const struct exo_st_tensor *ref_tensor(const char *fmt, ...)
{
  char name[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  const struct exo_st_tensor *t = exo_safetensors_find(g_ref, name);
  if (!t)
    fprintf(stderr, "reference tensor %s missing\n", name);
  return t;
}

static struct exo_model *load(int a, int b)
{
  struct exo_model *m = NULL;
  char err[512] = "";
  int rc = exo_model_load(g_dir, a, b, &m, err, sizeof err);
  if (rc)
    fprintf(stderr, "load %s [%d,%d): %d %s\n", g_dir, a, b, rc, err);
  return m;
}

static double max_diff(const float *a, const float *b, size_t n)
{
  double d = 0.0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)a[i] - (double)b[i]);
    if (!(e <= d))
      d = e; /* NaN propagates as a failure */
  }
  return d;
}

/* One sequence through model m from a fresh cache. in is token ids (a == 0) or a
 * hidden state; returns malloc'd output [rows, cols], NULL on failure. */
static float *run_one(const struct exo_model *m, const int32_t *ids, const float *hidden, int n,
                      int last_only, int no_head)
{
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  float *out = NULL;
  char err[256] = "";
  if (exo_forward_kv_new(m, 0, m->cfg.max_position_embeddings, &kv) ||
      exo_forward_scratch_new(m, n, n, &s, err, sizeof err))
    goto done;
  struct exo_forward_seq seq = {.kv = kv, .n_tokens = n, .start_pos = 0};
  struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = ids, .hidden_in = hidden,
                                .logits_last_only = last_only, .no_head = no_head};
  out = malloc((size_t)exo_forward_out_rows(m, &b) * exo_forward_out_cols(m, &b) *
               sizeof(float));
  if (out && exo_forward(m, &b, out, s, err, sizeof err)) {
    free(out);
    out = NULL;
  }
done:
  if (!out)
    fprintf(stderr, "run_one failed: %s\n", err);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  return out;
}

/* Logits of every position and the last layer's raw output, against the reference;
 * the final norm of our raw output against hidden.L. */
static void test_full_forward(void)
{
  struct exo_model *m = load(0, -1);
  CHECK(m != NULL);
  if (!m)
    return;
  const int L = m->cfg.n_layers, V = m->cfg.vocab_size, H = m->cfg.hidden_size;
  for (int i = 0; i < 3; i++) {
    const struct exo_st_tensor *ids = ref_tensor("s%d.input_ids", i);
    const struct exo_st_tensor *lg = ref_tensor("s%d.logits", i);
    const struct exo_st_tensor *pre = ref_tensor("s%d.final_prenorm", i);
    const struct exo_st_tensor *hl = ref_tensor("s%d.hidden.%d", i, L);
    CHECK(ids && lg && pre && hl);
    if (!ids || !lg || !pre || !hl)
      continue;
    const int T = (int)ids->n_elems;
    float *logits = run_one(m, ids->data, NULL, T, 0, 0);
    float *raw = run_one(m, ids->data, NULL, T, 0, 1);
    CHECK(logits && raw);
    if (logits && raw) {
      double d = max_diff(logits, lg->data, (size_t)T * V);
      CHECK_NEAR(d, 0.0, TOL);
      CHECK_NEAR(max_diff(raw, pre->data, (size_t)T * H), 0.0, TOL);
      exo_rmsnorm(raw, raw, m->final_norm.data, T, H, m->cfg.rms_norm_eps);
      CHECK_NEAR(max_diff(raw, hl->data, (size_t)T * H), 0.0, TOL);
      fprintf(stderr, "  %s s%d: logits max diff %.3g\n", g_name, i, d);
    }
    free(logits);
    free(raw);
  }
  exo_model_free(m);
}

/* hidden.0 is the embedding; layers [0, l) give hidden.l; [a, b) fed hidden.a gives
 * hidden.b (or final_prenorm for b == L): every per-layer state of every sequence. */
static void test_layer_hidden_states(void)
{
  struct exo_model_config cfg;
  char err[256];
  CHECK_INT_EQ(exo_model_config_load(g_dir, &cfg, err, sizeof err), 0);
  const int L = cfg.n_layers, H = cfg.hidden_size;
  struct exo_model *m0 = load(0, 1);
  CHECK(m0 != NULL);
  for (int i = 0; i < 3 && m0; i++) {
    const struct exo_st_tensor *ids = ref_tensor("s%d.input_ids", i);
    const struct exo_st_tensor *h0 = ref_tensor("s%d.hidden.0", i);
    if (!ids || !h0) {
      CHECK(0);
      continue;
    }
    for (int t = 0; t < ids->n_elems; t++)
      CHECK_NEAR(max_diff((const float *)m0->embed.data + (size_t)((const int32_t *)ids->data)[t] * H,
                          (const float *)h0->data + (size_t)t * H, (size_t)H),
                 0.0, 0.0);
  }
  exo_model_free(m0);
  for (int a = 0; a < L; a++)
    for (int b = a + 1; b <= L; b++) {
      struct exo_model *m = load(a, b);
      CHECK(m != NULL);
      if (!m)
        continue;
      for (int i = 0; i < 3; i++) {
        const struct exo_st_tensor *ids = ref_tensor("s%d.input_ids", i);
        const struct exo_st_tensor *in = ref_tensor("s%d.hidden.%d", i, a);
        const struct exo_st_tensor *want =
            b < L ? ref_tensor("s%d.hidden.%d", i, b) : ref_tensor("s%d.final_prenorm", i);
        if (!ids || !in || !want) {
          CHECK(0);
          continue;
        }
        const int T = (int)ids->n_elems;
        float *got = a == 0 ? run_one(m, ids->data, NULL, T, 0, 1)
                            : run_one(m, NULL, in->data, T, 0, 1);
        CHECK(got != NULL);
        if (got) {
          double d = max_diff(got, want->data, (size_t)T * H);
          if (d > TOL)
            fprintf(stderr, "  [%d,%d) s%d: hidden max diff %.3g\n", a, b, i, d);
          CHECK_NEAR(d, 0.0, TOL);
        }
        free(got);
      }
      exo_model_free(m);
    }
}

/* Layers [0, k) then [k, L) on the handed-over hidden state equal [0, L), for every k. */
static void test_split_ranges(void)
{
  struct exo_model *full = load(0, -1);
  const struct exo_st_tensor *ids = ref_tensor("s2.input_ids");
  CHECK(full && ids);
  if (!full || !ids) {
    exo_model_free(full);
    return;
  }
  const int L = full->cfg.n_layers, V = full->cfg.vocab_size, T = (int)ids->n_elems;
  float *want = run_one(full, ids->data, NULL, T, 0, 0);
  CHECK(want != NULL);
  for (int k = 1; k < L && want; k++) {
    struct exo_model *lo = load(0, k), *hi = load(k, -1);
    CHECK(lo && hi);
    if (lo && hi) {
      CHECK(lo->final_norm.data == NULL && lo->lm_head.data == NULL && hi->embed.data == NULL);
      float *mid = run_one(lo, ids->data, NULL, T, 0, 0);
      float *got = mid ? run_one(hi, NULL, mid, T, 0, 0) : NULL;
      CHECK(got != NULL);
      if (got)
        CHECK_NEAR(max_diff(got, want, (size_t)T * V), 0.0, 1e-5);
      free(mid);
      free(got);
    }
    exo_model_free(lo);
    exo_model_free(hi);
  }
  free(want);
  exo_model_free(full);
}

/* Token-by-token decode through the cache equals the full forward at every position,
 * and the last step equals HF's own cached decode. */
static void test_kv_decode(void)
{
  struct exo_model *m = load(0, -1);
  const struct exo_st_tensor *ids = ref_tensor("s2.input_ids"), *lg = ref_tensor("s2.logits"),
                             *kvl = ref_tensor("s2.kv_last_logits");
  CHECK(m && ids && lg && kvl);
  if (!m || !ids || !lg || !kvl) {
    exo_model_free(m);
    return;
  }
  const int V = m->cfg.vocab_size, T = (int)ids->n_elems;
  float *full = run_one(m, ids->data, NULL, T, 0, 0);
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[256] = "";
  float *step = malloc((size_t)V * sizeof(float));
  CHECK(full && step);
  CHECK_INT_EQ(exo_forward_kv_new(m, 4, 256, &kv), 0); /* small start: exercises growth */
  CHECK_INT_EQ(exo_forward_scratch_new(m, 1, 1, &s, err, sizeof err), 0);
  double worst = 0.0;
  for (int t = 0; t < T && full && step && kv && s; t++) {
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = 1, .start_pos = t};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq,
                                  .tokens = (const int32_t *)ids->data + t,
                                  .logits_last_only = 1};
    CHECK_INT_EQ(exo_forward(m, &b, step, s, err, sizeof err), 0);
    double d = max_diff(step, full + (size_t)t * V, (size_t)V);
    if (d > worst)
      worst = d;
    if (t == T - 1)
      CHECK_NEAR(max_diff(step, kvl->data, (size_t)V), 0.0, TOL);
  }
  CHECK_NEAR(worst, 0.0, TOL);
  CHECK(kv && kv->n_pos == T);
  CHECK(kv && kv->capacity >= T && exo_kv_cache_bytes(kv) ==
                                        exo_kv_cache_bytes_for(kv->n_layers, kv->kv_dim, kv->capacity));
  fprintf(stderr, "  %s decode vs full: max diff %.3g\n", g_name, worst);
  free(step);
  free(full);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  exo_model_free(m);
}

/* Greedy generation (prefill + 24 cached decode steps) reproduces greedy.ids and the
 * step logits HF took each token from. */
static void test_greedy(void)
{
  struct exo_model *m = load(0, -1);
  const struct exo_st_tensor *prompt = ref_tensor("greedy.prompt_ids"),
                             *want = ref_tensor("greedy.ids"),
                             *sl = ref_tensor("greedy.step_logits");
  CHECK(m && prompt && want && sl);
  if (!m || !prompt || !want || !sl) {
    exo_model_free(m);
    return;
  }
  const int V = m->cfg.vocab_size, P = (int)prompt->n_elems, N = (int)want->n_elems;
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[256] = "";
  float *logits = malloc((size_t)V * sizeof(float));
  CHECK_INT_EQ(exo_forward_kv_new(m, 0, 256, &kv), 0);
  CHECK_INT_EQ(exo_forward_scratch_new(m, P, P + N, &s, err, sizeof err), 0);
  int32_t tok[64];
  memcpy(tok, prompt->data, (size_t)P * sizeof(int32_t));
  int pos = 0, n_in = P;
  for (int j = 0; j < N && kv && s && logits; j++) {
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = n_in, .start_pos = pos};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok + pos,
                                  .logits_last_only = 1};
    CHECK_INT_EQ(exo_forward(m, &b, logits, s, err, sizeof err), 0);
    CHECK_NEAR(max_diff(logits, (const float *)sl->data + (size_t)j * V, (size_t)V), 0.0, TOL);
    int best = 0;
    for (int v = 1; v < V; v++)
      if (logits[v] > logits[best])
        best = v;
    CHECK_INT_EQ(best, ((const int32_t *)want->data)[j]);
    pos += n_in;
    tok[pos] = best;
    n_in = 1;
  }
  free(logits);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  exo_model_free(m);
}

/* s0, s1, s2 (lengths 1, 7, 33) prefilled in one batch, then decoded together at
 * different positions, equal each run alone. */
static void test_batch(void)
{
  struct exo_model *m = load(0, -1);
  CHECK(m != NULL);
  if (!m)
    return;
  const int V = m->cfg.vocab_size;
  const struct exo_st_tensor *ids[3];
  int32_t all[64];
  int len[3], total = 0;
  for (int i = 0; i < 3; i++) {
    ids[i] = ref_tensor("s%d.input_ids", i);
    if (!ids[i]) {
      CHECK(0);
      exo_model_free(m);
      return;
    }
    len[i] = (int)ids[i]->n_elems;
    memcpy(all + total, ids[i]->data, (size_t)len[i] * sizeof(int32_t));
    total += len[i];
  }
  struct exo_kv_cache *kv[3] = {NULL, NULL, NULL};
  struct exo_forward_scratch *s = NULL;
  char err[256] = "";
  struct exo_forward_seq seqs[3];
  for (int i = 0; i < 3; i++) {
    CHECK_INT_EQ(exo_forward_kv_new(m, 0, 256, &kv[i]), 0);
    seqs[i] = (struct exo_forward_seq){.kv = kv[i], .n_tokens = len[i], .start_pos = 0};
  }
  CHECK_INT_EQ(exo_forward_scratch_new(m, 8, 8, &s, err, sizeof err), 0); /* grows */
  float *out = malloc((size_t)total * V * sizeof(float));
  struct exo_forward_batch b = {.n_seqs = 3, .seqs = seqs, .tokens = all};
  CHECK_INT_EQ(exo_forward(m, &b, out, s, err, sizeof err), 0);
  int row = 0;
  for (int i = 0; i < 3; i++) {
    float *alone = run_one(m, ids[i]->data, NULL, len[i], 0, 0);
    CHECK(alone != NULL);
    if (alone)
      CHECK_NEAR(max_diff(out + (size_t)row * V, alone, (size_t)len[i] * V), 0.0, 1e-5);
    free(alone);
    row += len[i];
  }
  /* One decode step for all three, at positions 1, 7 and 33. */
  int32_t next[3] = {5, 6, 7};
  for (int i = 0; i < 3; i++)
    seqs[i] = (struct exo_forward_seq){.kv = kv[i], .n_tokens = 1, .start_pos = len[i]};
  b = (struct exo_forward_batch){.n_seqs = 3, .seqs = seqs, .tokens = next,
                                 .logits_last_only = 1};
  CHECK_INT_EQ(exo_forward_out_rows(m, &b), 3);
  CHECK_INT_EQ(exo_forward(m, &b, out, s, err, sizeof err), 0);
  for (int i = 0; i < 3; i++) {
    int32_t seq[64];
    memcpy(seq, ids[i]->data, (size_t)len[i] * sizeof(int32_t));
    seq[len[i]] = next[i];
    float *alone = run_one(m, seq, NULL, len[i] + 1, 1, 0);
    CHECK(alone != NULL);
    if (alone)
      CHECK_NEAR(max_diff(out + (size_t)i * V, alone, (size_t)V), 0.0, 1e-5);
    free(alone);
  }
  free(out);
  for (int i = 0; i < 3; i++)
    exo_kv_cache_free(kv[i]);
  exo_forward_scratch_free(s);
  exo_model_free(m);
}

/* Decode 5 tokens, truncate back, decode them again: identical logits. Truncating
 * deeper and re-prefilling a chunk gives the same too. */
static void test_truncate_redecode(void)
{
  struct exo_model *m = load(0, -1);
  const struct exo_st_tensor *ids = ref_tensor("s2.input_ids");
  CHECK(m && ids);
  if (!m || !ids) {
    exo_model_free(m);
    return;
  }
  const int V = m->cfg.vocab_size;
  const int32_t *tok = ids->data;
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[256] = "";
  CHECK_INT_EQ(exo_forward_kv_new(m, 0, 256, &kv), 0);
  CHECK_INT_EQ(exo_forward_scratch_new(m, 20, 64, &s, err, sizeof err), 0);
  float *first = malloc((size_t)5 * V * sizeof(float)), *again = malloc((size_t)V * sizeof(float));
  if (!kv || !s || !first || !again)
    goto done;
  struct exo_forward_seq seq = {.kv = kv, .n_tokens = 20, .start_pos = 0};
  struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok, .logits_last_only = 1};
  CHECK_INT_EQ(exo_forward(m, &b, again, s, err, sizeof err), 0);
  for (int t = 20; t < 25; t++) {
    seq = (struct exo_forward_seq){.kv = kv, .n_tokens = 1, .start_pos = t};
    b.tokens = tok + t;
    CHECK_INT_EQ(exo_forward(m, &b, first + (size_t)(t - 20) * V, s, err, sizeof err), 0);
  }
  CHECK_INT_EQ(kv->n_pos, 25);
  CHECK_INT_EQ(exo_kv_cache_truncate(kv, 26), -EINVAL);
  CHECK_INT_EQ(exo_kv_cache_truncate(kv, -1), -EINVAL);
  CHECK_INT_EQ(exo_kv_cache_truncate(kv, 20), 0);
  for (int t = 20; t < 25; t++) {
    seq = (struct exo_forward_seq){.kv = kv, .n_tokens = 1, .start_pos = t};
    b.tokens = tok + t;
    CHECK_INT_EQ(exo_forward(m, &b, again, s, err, sizeof err), 0);
    CHECK_NEAR(max_diff(again, first + (size_t)(t - 20) * V, (size_t)V), 0.0, 0.0);
  }
  CHECK_INT_EQ(exo_kv_cache_truncate(kv, 10), 0);
  seq = (struct exo_forward_seq){.kv = kv, .n_tokens = 15, .start_pos = 10};
  b.tokens = tok + 10;
  CHECK_INT_EQ(exo_forward(m, &b, again, s, err, sizeof err), 0);
  CHECK_NEAR(max_diff(again, first + (size_t)4 * V, (size_t)V), 0.0, 1e-5);
done:
  free(first);
  free(again);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  exo_model_free(m);
}

/* A 150-token sequence three ways: one prefill (blocked sgemm attention across several
 * query blocks), token by token (dot-product attention), and chunks 40 + 70 + 40 that
 * start mid-sequence. All logits agree. */
static void test_long_prefill_paths(void)
{
  struct exo_model *m = load(0, -1);
  const struct exo_st_tensor *ids = ref_tensor("s2.input_ids");
  CHECK(m && ids);
  if (!m || !ids) {
    exo_model_free(m);
    return;
  }
  enum { T = 150 };
  const int V = m->cfg.vocab_size;
  int32_t tok[T];
  for (int t = 0; t < T; t++)
    tok[t] = ((const int32_t *)ids->data)[t % ids->n_elems] ^ (t / 33);
  float *full = run_one(m, tok, NULL, T, 0, 0);
  float *step = malloc((size_t)T * V * sizeof(float));
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[256] = "";
  CHECK_INT_EQ(exo_forward_kv_new(m, 0, 256, &kv), 0);
  CHECK_INT_EQ(exo_forward_scratch_new(m, 1, 1, &s, err, sizeof err), 0);
  if (!full || !step || !kv || !s)
    goto done;
  for (int t = 0; t < T; t++) {
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = 1, .start_pos = t};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok + t};
    CHECK_INT_EQ(exo_forward(m, &b, step + (size_t)t * V, s, err, sizeof err), 0);
  }
  CHECK_NEAR(max_diff(full, step, (size_t)T * V), 0.0, TOL);
  CHECK_INT_EQ(exo_kv_cache_truncate(kv, 0), 0);
  static const int chunk[3] = {40, 70, 40};
  for (int i = 0, pos = 0; i < 3; pos += chunk[i++]) {
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = chunk[i], .start_pos = pos};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok + pos};
    CHECK_INT_EQ(exo_forward(m, &b, step + (size_t)pos * V, s, err, sizeof err), 0);
  }
  CHECK_NEAR(max_diff(full, step, (size_t)T * V), 0.0, TOL);
done:
  free(full);
  free(step);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  exo_model_free(m);
}

/* Bad batches are refused with a message naming the problem, and leave caches as
 * they were. */
static void test_errors(void)
{
  struct exo_model *m = load(0, 2), *hi = load(2, -1), *full = load(0, -1);
  CHECK(m && hi && full);
  if (!m || !hi || !full)
    goto out;
  struct exo_kv_cache *kv = NULL, *kv_hi = NULL, *kv_small = NULL;
  struct exo_forward_scratch *s = NULL, *s_hi = NULL;
  char err[256] = "";
  float out[4 * 64];
  CHECK_INT_EQ(exo_forward_kv_new(m, 0, 256, &kv), 0);
  CHECK_INT_EQ(exo_forward_kv_new(hi, 0, 256, &kv_hi), 0);
  CHECK_INT_EQ(exo_forward_kv_new(m, 2, 3, &kv_small), 0);
  CHECK_INT_EQ(exo_forward_scratch_new(m, 4, 4, &s, err, sizeof err), 0);
  CHECK_INT_EQ(exo_forward_scratch_new(hi, 4, 4, &s_hi, err, sizeof err), 0);
  if (!kv || !kv_hi || !kv_small || !s || !s_hi)
    goto done;
  int32_t bad[2] = {3, 512};
  struct exo_forward_seq seq = {.kv = kv, .n_tokens = 2, .start_pos = 0};
  struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = bad};
  CHECK_INT_EQ(exo_forward(m, &b, out, s, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "token 1: id 512 outside the vocabulary [0, 512)");
  CHECK_INT_EQ(kv->n_pos, 0);
  bad[1] = 4;
  seq.start_pos = 3;
  CHECK_INT_EQ(exo_forward(m, &b, out, s, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "start_pos 3 but its KV cache holds 0 positions");
  seq.start_pos = 0;
  seq.n_tokens = 0;
  CHECK_INT_EQ(exo_forward(m, &b, out, s, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "n_tokens 0");
  /* A range that starts past layer 0 needs hidden_in, and a cache of its own shape. */
  struct exo_forward_seq seq_hi = {.kv = kv_hi, .n_tokens = 1, .start_pos = 0};
  struct exo_forward_batch bh = {.n_seqs = 1, .seqs = &seq_hi, .tokens = bad};
  CHECK_INT_EQ(exo_forward(hi, &bh, out, s_hi, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "hidden_in is required");
  CHECK_INT_EQ(exo_forward(hi, &bh, out, s, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "scratch was made for another model");
  /* Two sequences sharing one cache, and a cache at its ceiling. */
  struct exo_forward_seq two[2] = {{.kv = kv, .n_tokens = 1, .start_pos = 0},
                                   {.kv = kv, .n_tokens = 1, .start_pos = 0}};
  b = (struct exo_forward_batch){.n_seqs = 2, .seqs = two, .tokens = bad};
  CHECK_INT_EQ(exo_forward(m, &b, out, s, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "share a KV cache");
  int32_t four[4] = {1, 2, 3, 4};
  seq = (struct exo_forward_seq){.kv = kv_small, .n_tokens = 4, .start_pos = 0};
  b = (struct exo_forward_batch){.n_seqs = 1, .seqs = &seq, .tokens = four};
  CHECK_INT_EQ(exo_forward(m, &b, out, s, err, sizeof err), -ENOSPC);
  CHECK_STR_CONTAINS(err, "position 3 beyond the cache's limit of 3");
  CHECK_INT_EQ(kv_small->n_pos, 0);
  CHECK_INT_EQ(exo_kv_cache_reserve(kv_small, 4), -ENOSPC);
  CHECK_INT_EQ(exo_kv_cache_reserve(kv_small, 3), 0);
  CHECK_INT_EQ(kv_small->capacity, 3);
  /* A weight of a dtype the kernels cannot take is refused when the scratch is made:
   * a half norm vector, and a block format on rows not a multiple of 32 wide. */
  struct exo_forward_scratch *s_bad = NULL;
  enum exo_dtype saved = full->layers[1].ffn_norm.dtype;
  full->layers[1].ffn_norm.dtype = EXO_DTYPE_BF16;
  CHECK_INT_EQ(exo_forward_scratch_new(full, 1, 1, &s_bad, err, sizeof err), -ENOTSUP);
  CHECK_STR_CONTAINS(err, "layer 1: weight post_attention_layernorm is not F32");
  CHECK(s_bad == NULL);
  full->layers[1].ffn_norm.dtype = saved;
  saved = full->layers[1].w_down.dtype;
  if (full->layers[1].w_down.cols % 32) { /* tiny-llama: 176 columns */
    full->layers[1].w_down.dtype = EXO_DTYPE_Q8_0;
    CHECK_INT_EQ(exo_forward_scratch_new(full, 1, 1, &s_bad, err, sizeof err), -ENOTSUP);
    CHECK_STR_CONTAINS(err, "layer 1: weight down_proj: dtype 3 cannot hold rows of");
    CHECK(s_bad == NULL);
  }
  full->layers[1].w_down.dtype = (enum exo_dtype)99;
  CHECK_INT_EQ(exo_forward_scratch_new(full, 1, 1, &s_bad, err, sizeof err), -ENOTSUP);
  CHECK_STR_CONTAINS(err, "layer 1: weight down_proj: dtype 99 cannot hold rows of");
  CHECK(s_bad == NULL);
  full->layers[1].w_down.dtype = saved;
done:
  exo_forward_scratch_free(s);
  exo_forward_scratch_free(s_hi);
  exo_kv_cache_free(kv);
  exo_kv_cache_free(kv_hi);
  exo_kv_cache_free(kv_small);
out:
  exo_model_free(m);
  exo_model_free(hi);
  exo_model_free(full);
}

/* RoPE frequencies equal HF's, and llama3 scaling keeps high, divides low and blends
 * the middle band (hand-checked endpoints). */
static void test_rope_freq(void)
{
  struct exo_model_config cfg;
  char err[256];
  CHECK_INT_EQ(exo_model_config_load(g_dir, &cfg, err, sizeof err), 0);
  const struct exo_st_tensor *ref = ref_tensor("rope.inv_freq");
  float f[64];
  CHECK(ref && cfg.head_dim <= 128);
  if (!ref)
    return;
  CHECK_INT_EQ(exo_rope_inv_freq(&cfg, f), 0);
  for (int j = 0; j < cfg.head_dim / 2; j++)
    CHECK_NEAR(f[j], ((const float *)ref->data)[j], 1e-7 * ((const float *)ref->data)[j]);
  struct exo_model_config l3 = cfg;
  l3.head_dim = 16;
  l3.rope_theta = 10000.0f;
  l3.rope_scaling = EXO_ROPE_SCALING_LLAMA3;
  l3.rope_factor = 8.0f;
  l3.rope_low_freq_factor = 1.0f;
  l3.rope_high_freq_factor = 4.0f;
  l3.rope_original_max_position = 64;
  float g[8], base[8];
  struct exo_model_config plain = l3;
  plain.rope_scaling = EXO_ROPE_SCALING_NONE;
  CHECK_INT_EQ(exo_rope_inv_freq(&plain, base), 0);
  CHECK_INT_EQ(exo_rope_inv_freq(&l3, g), 0);
  for (int j = 0; j < 8; j++) {
    const double wl = 2 * M_PI / base[j];
    double want;
    if (wl < 64.0 / 4.0)
      want = base[j];
    else if (wl > 64.0)
      want = base[j] / 8.0;
    else {
      double sm = (64.0 / wl - 1.0) / 3.0;
      want = (1 - sm) * base[j] / 8.0 + sm * base[j];
    }
    CHECK_NEAR(g[j], want, 1e-6 * want);
  }
  CHECK(g[0] == base[0]);             /* wavelength 6.3 < 16: untouched */
  CHECK_NEAR(g[7], base[7] / 8, 1e-9); /* wavelength ~ 19000 > 64: divided */
  l3.rope_high_freq_factor = 0.5f;    /* high <= low is meaningless */
  CHECK_INT_EQ(exo_rope_inv_freq(&l3, g), -EINVAL);
}

int main(void)
{
  const char *fx = getenv("EXO_FIXTURES");
  if (!fx)
    fx = "tests/fixtures";
  static const char *models[] = {"tiny-llama", "tiny-qwen2"};
  for (size_t i = 0; i < 2; i++) {
    g_name = models[i];
    snprintf(g_dir, sizeof g_dir, "%s/%s", fx, g_name);
    char path[1100], err[512] = "";
    snprintf(path, sizeof path, "%s/reference.safetensors", g_dir);
    if (exo_safetensors_open(path, &g_ref, err, sizeof err)) {
      fprintf(stderr, "cannot open %s: %s\n", path, err);
      return 1;
    }
    fprintf(stderr, "== %s\n", g_name);
    EXO_RUN(test_full_forward);
    EXO_RUN(test_layer_hidden_states);
    EXO_RUN(test_split_ranges);
    EXO_RUN(test_kv_decode);
    EXO_RUN(test_greedy);
    EXO_RUN(test_batch);
    EXO_RUN(test_truncate_redecode);
    EXO_RUN(test_long_prefill_paths);
    EXO_RUN(test_errors);
    EXO_RUN(test_rope_freq);
    exo_safetensors_close(g_ref);
    g_ref = NULL;
  }
  return exo_test_result();
}
