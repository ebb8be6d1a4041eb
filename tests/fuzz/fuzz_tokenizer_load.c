/* tests/fuzz/fuzz_tokenizer_load.c: the tokenizer.json loader (tensor/tokenizer.h) on
 * arbitrary bytes. A tokenizer that loads is then used: a few fixed texts and the input
 * itself are encoded, decoded one-shot and streamed. Properties: ids are inside the
 * vocab; streamed decode equals one-shot decode. */
#include "fuzz.h"

#include "tensor/tokenizer.h"

static void use(const struct exo_tokenizer *tok, const char *text, size_t len)
{
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = exo_tokenizer_encode(tok, text, len, 1, &ids, &n);
  if (rc < 0) {
    FUZZ_CHECK(rc == -EILSEQ || rc == -ENOMEM || rc == -EINVAL);
    free(ids);
    return;
  }
  int vocab = exo_tokenizer_vocab_size(tok);
  for (size_t i = 0; i < n; i++)
    FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab);
  char *out = NULL;
  size_t out_len = 0;
  rc = exo_tokenizer_decode(tok, ids, n, 0, &out, &out_len);
  FUZZ_CHECK(rc == 0 || rc == -ENOMEM);
  struct exo_token_stream *s = NULL;
  if (rc == 0 && exo_token_stream_new(tok, 0, &s) == 0) {
    size_t cap = exo_token_stream_max_chunk(tok);
    char *chunk = malloc(cap ? cap : 1);
    char *all = malloc(out_len + cap + 1);
    FUZZ_CHECK(chunk && all);
    size_t have = 0, k;
    for (size_t i = 0; i < n; i++) {
      FUZZ_CHECK(exo_token_stream_push(s, ids[i], chunk, cap, &k) == 0);
      FUZZ_CHECK(have + k <= out_len);
      memcpy(all + have, chunk, k);
      have += k;
    }
    FUZZ_CHECK(exo_token_stream_flush(s, chunk, cap, &k) == 0);
    FUZZ_CHECK(have + k == out_len);
    memcpy(all + have, chunk, k);
    FUZZ_CHECK(memcmp(all, out, out_len) == 0);
    free(chunk);
    free(all);
    exo_token_stream_free(s);
  }
  free(out);
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct exo_tokenizer *tok = NULL;
  char err[512] = "";
  int rc = exo_tokenizer_load_buffer((const char *)data, size, "fuzz.json", &tok, err, sizeof err);
  if (rc < 0) {
    FUZZ_CHECK(tok == NULL && (rc == -ENOMEM || err[0] != '\0'));
    return 0;
  }
  static const char *const texts[] = {"", "Hello, world!", " the  quick\n\nbrown fox 123",
                                      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                                      "<|begin_of_text|>hi<|im_end|>"};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    use(tok, texts[i], strlen(texts[i]));
  use(tok, (const char *)data, size > 256 ? 256 : size);
  exo_tokenizer_free(tok);
  return 0;
}
