/* tests/tensor/test_gguf.c: GGUF and converted models. tiny-llama converted (by
 * tensor/convert.c, the code behind `exo-actors convert`) to GGUF f32/f16/bf16 and to
 * bf16 safetensors reproduces greedy.ids; GGUF f32 logits are bit-identical to the
 * safetensors model's; q8_0/q4_0 files hold exactly ggml's blocks of the f32 weights
 * and their greedy agreement is reported; GGUF tokenizers (gpt2 and llama-bpe) encode
 * the tokenizer fixtures exactly as tokenizer.json does; and truncated or lying files
 * give an error naming the field. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor/convert.h"
#include "tensor/forward.h"
#include "tensor/gguf.h"
#include "tensor/quant.h"
#include "tensor/safetensors.h"
#include "tensor/tokenizer.h"
#include "tests/test.h"

static char g_tmp[256];
static char g_fx[1024];

static const char *tmp(const char *name)
{
  static char p[8][512];
  static int k;
  k = (k + 1) % 8;
  snprintf(p[k], sizeof p[k], "%s/%s", g_tmp, name);
  return p[k];
}

static const char *fx(const char *name)
{
  static char p[4][1200];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", g_fx, name);
  return p[k];
}

/* Greedy ids of model path: prefill the prompt, then n - 1 decode steps. Returns how
 * many of want's n ids it reproduced in a row (and fills logits0 with step 0's). */
static int greedy_match(const char *path, const int32_t *prompt, int P, const int32_t *want,
                        int N, float *logits0)
{
  struct exo_model *m = NULL;
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[512] = "";
  int ok = 0;
  if (exo_model_load(path, 0, -1, &m, err, sizeof err)) {
    fprintf(stderr, "  load %s: %s\n", path, err);
    return -1;
  }
  const int V = m->cfg.vocab_size;
  float *logits = malloc((size_t)V * sizeof *logits);
  int32_t tok[128];
  if (!logits || P + N > 128 || exo_forward_kv_new(m, 0, 256, &kv) ||
      exo_forward_scratch_new(m, P, P + N, &s, err, sizeof err))
    goto done;
  memcpy(tok, prompt, (size_t)P * sizeof *tok);
  int pos = 0, n_in = P;
  for (int j = 0; j < N; j++) {
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = n_in, .start_pos = pos};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok + pos,
                                  .logits_last_only = 1};
    if (exo_forward(m, &b, logits, s, err, sizeof err))
      break;
    if (j == 0 && logits0)
      memcpy(logits0, logits, (size_t)V * sizeof *logits);
    int best = 0;
    for (int v = 1; v < V; v++)
      if (logits[v] > logits[best])
        best = v;
    if (best != want[j])
      break;
    ok++;
    pos += n_in;
    tok[pos] = best;
    n_in = 1;
  }
done:
  free(logits);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  exo_model_free(m);
  return ok;
}

static void test_converted_greedy(void)
{
  struct exo_safetensors *ref = NULL;
  char err[512] = "";
  CHECK_INT_EQ(exo_safetensors_open(fx("tiny-llama/reference.safetensors"), &ref, err,
                                    sizeof err), 0);
  if (!ref)
    return;
  const struct exo_st_tensor *pr = exo_safetensors_find(ref, "greedy.prompt_ids"),
                             *want = exo_safetensors_find(ref, "greedy.ids");
  CHECK(pr && want);
  if (!pr || !want) {
    exo_safetensors_close(ref);
    return;
  }
  const int P = (int)pr->n_elems, N = (int)want->n_elems;
  const int32_t *prompt = pr->data, *ids = want->data;
  float base[512], other[512];
  CHECK_INT_EQ(greedy_match(fx("tiny-llama"), prompt, P, ids, N, base), N);
  static const struct {
    const char *name;
    enum exo_dtype dt;
    int gguf, must_match;
  } cases[] = {
    {"tl-f32.gguf", EXO_DTYPE_F32, 1, 1},   {"tl-f16.gguf", EXO_DTYPE_F16, 1, 1},
    {"tl-bf16.gguf", EXO_DTYPE_BF16, 1, 1}, {"tl-bf16", EXO_DTYPE_BF16, 0, 1},
    {"tl-f16", EXO_DTYPE_F16, 0, 1},        {"tl-q8_0.gguf", EXO_DTYPE_Q8_0, 1, 0},
    {"tl-q4_0.gguf", EXO_DTYPE_Q4_0, 1, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct exo_convert_stats st;
    int rc = cases[i].gguf
                 ? exo_convert_to_gguf(fx("tiny-llama"), tmp(cases[i].name), cases[i].dt, &st,
                                       err, sizeof err)
                 : exo_convert_to_safetensors(fx("tiny-llama"), tmp(cases[i].name),
                                              cases[i].dt, &st, err, sizeof err);
    CHECK_INT_EQ(rc, 0);
    if (rc) {
      fprintf(stderr, "  convert %s: %s\n", cases[i].name, err);
      continue;
    }
    CHECK_INT_EQ(st.n_tensors, 39);
    /* down_proj is 176 wide: the block formats keep it (4 layers) in F16 */
    CHECK_INT_EQ(st.n_fallback, cases[i].dt >= EXO_DTYPE_Q8_0 ? 4 : 0);
    int got = greedy_match(tmp(cases[i].name), prompt, P, ids, N, other);
    fprintf(stderr, "  %-13s greedy: %d of %d ids match\n", cases[i].name, got, N);
    if (cases[i].must_match)
      CHECK_INT_EQ(got, N);
    else
      CHECK(got >= 0); /* loads and runs; agreement is reported, not guaranteed */
    if (!strcmp(cases[i].name, "tl-f32.gguf")) /* same weights, same kernels: same bits */
      CHECK(!memcmp(base, other, sizeof base));
  }
  exo_safetensors_close(ref);
}

/* The q8_0 / q4_0 files hold exactly ggml's blocks of the f32 weights (after undoing
 * the Q/K row permutation), and vectors stay f32. */
static void test_quantized_contents(void)
{
  struct exo_model *f = NULL, *q = NULL;
  char err[512] = "";
  CHECK_INT_EQ(exo_model_load(fx("tiny-llama"), 0, -1, &f, err, sizeof err), 0);
  const char *files[] = {"tl-q8_0.gguf", "tl-q4_0.gguf"};
  for (int k = 0; k < 2 && f; k++) {
    CHECK_INT_EQ(exo_model_load(tmp(files[k]), 0, -1, &q, err, sizeof err), 0);
    if (!q)
      continue;
    const enum exo_dtype dt = k ? EXO_DTYPE_Q4_0 : EXO_DTYPE_Q8_0;
    CHECK_INT_EQ(q->cfg.dtype, dt);
    CHECK_INT_EQ(q->cfg.bos_token_id, f->cfg.bos_token_id);
    CHECK_INT_EQ(q->cfg.eos_token_ids[0], f->cfg.eos_token_ids[0]);
    CHECK_INT_EQ(q->cfg.head_dim, f->cfg.head_dim);
    CHECK_INT_EQ(q->layers[0].w_down.dtype, EXO_DTYPE_F16);
    CHECK_INT_EQ(q->layers[0].attn_norm.dtype, EXO_DTYPE_F32);
    const struct exo_weight *pairs[][2] = {{&f->layers[1].wq, &q->layers[1].wq},
                                           {&f->layers[2].wk, &q->layers[2].wk},
                                           {&f->layers[0].w_up, &q->layers[0].w_up},
                                           {&f->lm_head, &q->lm_head}};
    for (int p = 0; p < 4; p++) {
      const struct exo_weight *a = pairs[p][0], *b = pairs[p][1];
      CHECK(b->dtype == dt && a->rows == b->rows && a->cols == b->cols);
      const size_t rb = exo_dtype_row_bytes(dt, a->cols);
      unsigned char *blk = malloc(rb);
      int same = blk != NULL;
      for (int64_t r = 0; same && r < a->rows; r++) {
        const float *row = (const float *)a->data + r * a->cols;
        if (k)
          exo_q4_0_quantize(row, blk, a->cols);
        else
          exo_q8_0_quantize(row, blk, a->cols);
        same = !memcmp(blk, (const unsigned char *)b->data + (size_t)r * rb, rb);
      }
      CHECK(same);
      free(blk);
    }
    exo_model_free(q);
    q = NULL;
  }
  exo_model_free(f);
}

/* ---- tokenizer from metadata -------------------------------------------------------- */

static void check_tokenizer_cases(const struct exo_tokenizer *a, const struct exo_tokenizer *b,
                                  const char *cases_file, int *n_cases)
{
  json_error_t jerr;
  json_t *root = json_load_file(cases_file, 0, &jerr);
  CHECK(root != NULL);
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(root, "cases"), i, c) {
    const char *in = json_string_value(json_object_get(c, "input"));
    json_t *want = json_object_get(c, "ids");
    for (int special = 0; special < 2 && in; special++) {
      int32_t *ia = NULL, *ib = NULL;
      size_t na = 0, nb = 0;
      CHECK_INT_EQ(exo_tokenizer_encode(a, in, strlen(in), special, &ia, &na), 0);
      CHECK_INT_EQ(exo_tokenizer_encode(b, in, strlen(in), special, &ib, &nb), 0);
      CHECK(na == nb && (!na || !memcmp(ia, ib, na * sizeof *ia)));
      if (!special) {
        CHECK_INT_EQ(nb, json_array_size(want));
        for (size_t k = 0; k < nb && k < json_array_size(want); k++)
          CHECK_INT_EQ(ib[k], json_integer_value(json_array_get(want, k)));
        char *ta = NULL, *tb = NULL;
        size_t la, lb;
        CHECK_INT_EQ(exo_tokenizer_decode(a, ia, na, 0, &ta, &la), 0);
        CHECK_INT_EQ(exo_tokenizer_decode(b, ib, nb, 0, &tb, &lb), 0);
        CHECK(ta && tb && la == lb && !memcmp(ta, tb, la));
        free(ta);
        free(tb);
      }
      free(ia);
      free(ib);
    }
    (*n_cases)++;
  }
  json_decref(root);
}

static void test_gguf_tokenizer(void)
{
  struct exo_tokenizer *hf = NULL, *gg = NULL;
  char err[512] = "";
  int n = 0;
  /* tiny-llama's GGUF (written by the greedy case) vs its tokenizer.json: "gpt2" pre */
  CHECK_INT_EQ(exo_tokenizer_load(fx("tiny-llama/tokenizer.json"), &hf, err, sizeof err), 0);
  CHECK_INT_EQ(exo_tokenizer_load_gguf(tmp("tl-q4_0.gguf"), &gg, err, sizeof err), 0);
  if (!gg)
    fprintf(stderr, "  %s\n", err);
  if (hf && gg) {
    CHECK_INT_EQ(exo_tokenizer_vocab_size(gg), exo_tokenizer_vocab_size(hf));
    CHECK_INT_EQ(exo_tokenizer_is_special(gg, 508), 1);
    check_tokenizer_cases(hf, gg, fx("tokenizer/tokenizer_cases.json"), &n);
  }
  exo_tokenizer_free(hf);
  exo_tokenizer_free(gg);
  hf = gg = NULL;
  /* a Llama-3 style tokenizer ("llama-bpe": Split regex, ignore_merges, BOS template)
   * in a GGUF file with metadata only */
  struct exo_gguf_writer *w = NULL;
  CHECK_INT_EQ(exo_gguf_writer_new(&w), 0);
  CHECK_INT_EQ(exo_gguf_writer_add_tokenizer(w, fx("tokenizer/tokenizer_llama3_split.json"),
                                             err, sizeof err), 0);
  CHECK_INT_EQ(exo_gguf_writer_begin(w, tmp("tok3.gguf"), err, sizeof err), 0);
  CHECK_INT_EQ(exo_gguf_writer_finish(w, err, sizeof err), 0);
  exo_gguf_writer_free(w);
  CHECK_INT_EQ(exo_tokenizer_load(fx("tokenizer/tokenizer_llama3_split.json"), &hf, err,
                                  sizeof err), 0);
  CHECK_INT_EQ(exo_tokenizer_load_gguf(tmp("tok3.gguf"), &gg, err, sizeof err), 0);
  if (!gg)
    fprintf(stderr, "  %s\n", err);
  if (hf && gg) {
    CHECK_INT_EQ(exo_tokenizer_bos_id(gg), 508);
    check_tokenizer_cases(hf, gg, fx("tokenizer/tokenizer_llama3_split_cases.json"), &n);
  }
  fprintf(stderr, "  %d tokenizer cases agree\n", n);
  CHECK(n >= 60);
  exo_tokenizer_free(hf);
  exo_tokenizer_free(gg);
}

/* ---- lying files -------------------------------------------------------------------- */

struct buf {
  unsigned char b[4096];
  size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
  memcpy(b->b + b->n, p, n);
  b->n += n;
}
static void put32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void putstr(struct buf *b, const char *s)
{
  put64(b, strlen(s));
  put(b, s, strlen(s));
}

struct spec {
  const char *magic;
  uint32_t version;
  uint64_t n_tensors_claimed; /* 0: the real count */
  uint32_t kv_type;           /* type of the one metadata value (a string) */
  uint64_t kv_len_extra;      /* added to the string's length field */
  uint32_t n_dims;
  uint64_t ne0;
  uint32_t type;
  uint64_t offset;
  int dup_name;
  size_t truncate; /* cut this many bytes off the end */
};

/* A file with one metadata string and two F32 tensors "a" and "b" of ne0 values. */
static const char *lying(const char *name, struct spec s)
{
  struct buf b = {.n = 0};
  put(&b, s.magic, 4);
  put32(&b, s.version);
  put64(&b, s.n_tensors_claimed ? s.n_tensors_claimed : 2);
  put64(&b, 1);
  putstr(&b, "general.name");
  put32(&b, s.kv_type);
  put64(&b, 2 + s.kv_len_extra);
  put(&b, "ok", 2);
  for (int t = 0; t < 2; t++) {
    putstr(&b, t && !s.dup_name ? "b" : "a");
    put32(&b, t ? 1 : s.n_dims);
    for (uint32_t d = 0; d < (t ? 1 : s.n_dims) && d < 8; d++)
      put64(&b, d ? 1 : t ? 32 : s.ne0);
    put32(&b, t ? 0 : s.type);
    put64(&b, t ? 256 : s.offset);
  }
  while (b.n % 32)
    b.b[b.n++] = 0;
  memset(b.b + b.n, 0, 384);
  b.n += 384;
  const char *p = tmp(name);
  FILE *fp = fopen(p, "wb");
  fwrite(b.b, 1, b.n - s.truncate, fp);
  fclose(fp);
  return p;
}

static void expect_bad(const char *name, struct spec s, int code, const char *msg)
{
  struct exo_gguf *g = NULL;
  char err[512] = "";
  const char *p = lying(name, s);
  int rc = exo_gguf_open(p, &g, err, sizeof err);
  CHECK_INT_EQ(rc, code);
  CHECK(g == NULL);
  CHECK_STR_CONTAINS(err, msg);
  exo_gguf_close(g);
  /* and the model loader passes the same words on */
  struct exo_model *m = NULL;
  char err2[512] = "";
  CHECK(exo_model_load(p, 0, -1, &m, err2, sizeof err2) < 0);
  CHECK_STR_CONTAINS(err2, msg);
}

static void test_lying_files(void)
{
  const struct spec ok = {.magic = "GGUF", .version = 3, .kv_type = 8, .n_dims = 2,
                          .ne0 = 32, .type = 0, .offset = 0};
  struct exo_gguf *g = NULL;
  char err[512] = "";
  CHECK_INT_EQ(exo_gguf_open(lying("ok.gguf", ok), &g, err, sizeof err), 0);
  if (g) {
    const char *s;
    size_t len;
    CHECK_INT_EQ(exo_gguf_get_str(g, "general.name", &s, &len, err, sizeof err), 0);
    CHECK(len == 2 && !memcmp(s, "ok", 2));
    CHECK(exo_gguf_find(g, "a") && exo_gguf_find(g, "a")->nbytes == 128);
    int64_t v;
    CHECK_INT_EQ(exo_gguf_get_int(g, "general.name", &v, err, sizeof err), -EINVAL);
    CHECK_STR_CONTAINS(err, "metadata 'general.name' is string, expected an integer");
  }
  exo_gguf_close(g);
  struct spec s;
  s = ok, s.magic = "GGUG";
  expect_bad("magic.gguf", s, -EINVAL, "bad magic 47 47 55 47 (expected 'GGUF')");
  s = ok, s.version = 7;
  expect_bad("version.gguf", s, -EINVAL, "version 7 is not supported (2, 3)");
  s = ok, s.offset = 4096;
  expect_bad("offset.gguf", s, -EINVAL, "tensor 'a': data [4096, 4224) runs past the end");
  s = ok, s.truncate = 300;
  expect_bad("trunc.gguf", s, -EINVAL, "tensor 'a': data [0, 128) runs past the end of the "
             "file (data region is 84 bytes)");
  s = ok, s.n_dims = 5;
  expect_bad("ndims.gguf", s, -EINVAL, "tensor 'a': n_dims 5, expected 1..4");
  s = ok, s.type = 8, s.ne0 = 48;
  expect_bad("shape.gguf", s, -EINVAL, "tensor 'a': ne[0] = 48 is not a multiple of the Q8_0 "
             "block size 32");
  s = ok, s.type = 77;
  expect_bad("type.gguf", s, -EINVAL, "tensor 'a': unknown ggml type 77");
  s = ok, s.type = 12;
  expect_bad("q4k.gguf", s, -ENOTSUP, "tensor 'a': type Q4_K (12) is not supported");
  s = ok, s.dup_name = 1;
  expect_bad("dup.gguf", s, -EINVAL, "duplicate tensor name 'a'");
  s = ok, s.kv_len_extra = 1u << 20;
  expect_bad("strlen.gguf", s, -EINVAL, "metadata 'general.name': string length runs past the "
             "end of the file");
  s = ok, s.kv_type = 13;
  expect_bad("kvtype.gguf", s, -EINVAL, "metadata 'general.name': unknown value type 13");
  s = ok, s.n_tensors_claimed = 1ull << 40;
  expect_bad("count.gguf", s, -EINVAL, "more than the file's");
  s = ok, s.offset = 8;
  expect_bad("align.gguf", s, -EINVAL, "tensor 'a': offset 8 is not a multiple of the "
             "alignment 32");
  s = ok, s.offset = 224;
  expect_bad("overlap.gguf", s, -EINVAL, "tensors 'a' and 'b' overlap");
  /* every truncation of a good file is refused cleanly (ASan watches the reads) */
  int refused = 0, total = 0;
  for (size_t cut = 1; cut < 600; cut += 7) {
    s = ok, s.truncate = cut;
    const char *p = lying("cut.gguf", s);
    refused += exo_gguf_open(p, &g, err, sizeof err) < 0;
    exo_gguf_close(g);
    g = NULL;
    total++;
  }
  CHECK_INT_EQ(refused, total);
  /* a well-formed file that is no model: the loader names the missing key */
  struct exo_model *m = NULL;
  CHECK_INT_EQ(exo_model_load(lying("noarch.gguf", ok), 0, -1, &m, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "GGUF metadata 'general.architecture' is missing");
  CHECK(m == NULL);
}

int main(void)
{
  const char *f = getenv("EXO_FIXTURES");
  snprintf(g_fx, sizeof g_fx, "%s", f ? f : "tests/fixtures");
  snprintf(g_tmp, sizeof g_tmp, "/tmp/exo-test-gguf-XXXXXX");
  if (!mkdtemp(g_tmp)) {
    perror("mkdtemp");
    return 1;
  }
  EXO_RUN(test_converted_greedy);
  EXO_RUN(test_quantized_contents);
  EXO_RUN(test_gguf_tokenizer);
  EXO_RUN(test_lying_files);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", g_tmp);
  return exo_test_result();
}
