/* tests/fuzz/fuzz_tokenizer_text.c: encode/decode of arbitrary bytes on the fixture
 * tokenizers (tests/fixtures/tokenizer, loaded once; the first input byte picks one).
 * Properties: invalid UTF-8 is refused with -EILSEQ, never guessed; valid text encodes
 * to in-vocab ids that decode back to the same bytes (byte-level BPE with no normalizer
 * and no stripping added tokens is lossless); streamed decode equals one-shot decode. */
#include "fuzz.h"

#include "tensor/tokenizer.h"
#include "tensor/utf8.h"

#ifndef EXO_FUZZ_FIXTURES
#error "EXO_FUZZ_FIXTURES must name tests/fixtures"
#endif

static struct exo_tokenizer *toks[2];

static struct exo_tokenizer *load(const char *name)
{
  char path[4096], err[512];
  const char *dir = getenv("EXO_FIXTURES");
  snprintf(path, sizeof path, "%s/tokenizer/%s", dir ? dir : EXO_FUZZ_FIXTURES, name);
  struct exo_tokenizer *t = NULL;
  if (exo_tokenizer_load(path, &t, err, sizeof err) < 0) {
    fprintf(stderr, "fuzz_tokenizer_text: %s\n", err);
    abort();
  }
  return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (!toks[0]) {
    toks[0] = load("tokenizer.json");
    toks[1] = load("tokenizer_llama3_split.json");
  }
  if (size < 1)
    return 0;
  const struct exo_tokenizer *tok = toks[data[0] & 1];
  int add_special = (data[0] >> 1) & 1;
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = exo_tokenizer_encode(tok, text, len, 0, &ids, &n);
  FUZZ_CHECK((rc == -EILSEQ) == !exo_utf8_valid(text, len));
  if (rc == -EILSEQ) {
    free(ids);
    return 0;
  }
  FUZZ_CHECK(rc == 0);
  int vocab = exo_tokenizer_vocab_size(tok);
  for (size_t i = 0; i < n; i++)
    FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab);
  if (add_special) { /* the template only adds ids around the same encoding */
    int32_t *sp = NULL;
    size_t ns = 0;
    FUZZ_CHECK(exo_tokenizer_encode(tok, text, len, 1, &sp, &ns) == 0 && ns >= n);
    int32_t bos = exo_tokenizer_bos_id(tok);
    size_t off = bos >= 0 ? 1 : 0;
    FUZZ_CHECK(bos < 0 || sp[0] == bos);
    FUZZ_CHECK(ns >= n + off && (n == 0 || memcmp(sp + off, ids, n * sizeof *ids) == 0));
    free(sp);
  }
  char *out = NULL;
  size_t out_len = 0;
  FUZZ_CHECK(exo_tokenizer_decode(tok, ids, n, 0, &out, &out_len) == 0);
  if (out_len != len || memcmp(out, text, len) != 0) {
    fprintf(stderr, "round trip changed %zu bytes into %zu bytes\n", len, out_len);
    abort();
  }
  struct exo_token_stream *s = NULL;
  FUZZ_CHECK(exo_token_stream_new(tok, 0, &s) == 0);
  size_t cap = exo_token_stream_max_chunk(tok);
  char *chunk = malloc(cap);
  char *all = malloc(out_len + cap + 1);
  FUZZ_CHECK(chunk && all);
  size_t have = 0, k;
  for (size_t i = 0; i < n; i++) {
    FUZZ_CHECK(exo_token_stream_push(s, ids[i], chunk, cap, &k) == 0);
    FUZZ_CHECK(have + k <= out_len);
    memcpy(all + have, chunk, k);
    have += k;
  }
  FUZZ_CHECK(exo_token_stream_flush(s, chunk, cap, &k) == 0 && have + k == out_len);
  memcpy(all + have, chunk, k);
  FUZZ_CHECK(memcmp(all, out, out_len) == 0);
  free(chunk);
  free(all);
  exo_token_stream_free(s);
  free(out);
  free(ids);
  return 0;
}
