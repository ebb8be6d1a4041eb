/* tests/fuzz/fuzz_api_request.c: the api actor's HTTP request-body parser
 * (exo_api_request_parse, actors/api_openai.c) on arbitrary bytes, as chat and as
 * completions, then what the actor does next with an accepted body: chat template
 * rendering and the stop-string matcher over the body's own bytes.
 * Properties: a refusal is a 4xx with a message and builds error JSON; an accepted request
 * honours the limits (max_tokens, ids in the vocabulary, stop count and size, n=1). */
#include "fuzz.h"

#include "actors/api.h"

static void check_accepted(const struct exo_api_request *q, const struct exo_api_limits *lim,
                           const uint8_t *data, size_t size)
{
  FUZZ_CHECK(q->max_tokens <= lim->max_tokens);
  FUZZ_CHECK(q->n_stop <= EXO_API_MAX_STOP);
  FUZZ_CHECK(q->top_logprobs <= EXO_API_MAX_TOP_LOGPROBS);
  for (size_t i = 0; i < q->n_prompt_ids; i++)
    FUZZ_CHECK(q->prompt_ids[i] >= 0 && q->prompt_ids[i] < lim->vocab_size);
  if (q->endpoint == EXO_API_CHAT) {
    FUZZ_CHECK(q->n_messages >= 1 && q->n_messages <= EXO_API_MAX_MESSAGES);
    char *text = NULL;
    size_t len = 0;
    for (int t = EXO_API_TEMPLATE_CHATML; t <= EXO_API_TEMPLATE_LLAMA3; t++) {
      FUZZ_CHECK(exo_api_template_render((enum exo_api_template)t, NULL, q->messages,
                                         q->n_messages, &text, &len) == 0);
      FUZZ_CHECK(strlen(text) <= len); /* NULs in content are kept as text */
      free(text);
    }
  } else {
    FUZZ_CHECK(q->has_prompt_ids || q->prompt);
  }
  /* the matcher never emits a stop string: feed the body in 3-byte pieces */
  struct exo_api_stop st;
  exo_api_stop_init(&st, (const char *const *)q->stop, q->n_stop);
  char *out = NULL;
  size_t out_len = 0;
  int matched = 0;
  for (size_t i = 0; i < size && !matched; i += 3) {
    int rc = exo_api_stop_feed(&st, (const char *)data + i, size - i < 3 ? size - i : 3, &out,
                               &out_len);
    FUZZ_CHECK(rc == 0 || rc == 1);
    matched = rc == 1;
  }
  if (!matched)
    FUZZ_CHECK(exo_api_stop_flush(&st, &out, &out_len) == 0);
  for (size_t k = 0; k < q->n_stop && out; k++)
    FUZZ_CHECK(!memmem(out, out_len, q->stop[k], strlen(q->stop[k])));
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const struct exo_api_limits lim = {.max_tokens = 512, .context = 512,
                                            .vocab_size = 4096};
  for (int ep = EXO_API_CHAT; ep <= EXO_API_COMPLETIONS; ep++) {
    struct exo_api_request q;
    struct exo_api_error e;
    memset(&e, 0, sizeof e);
    int rc = exo_api_request_parse((const char *)data, size, (enum exo_api_endpoint)ep, &lim,
                                   "demo", &q, &e);
    if (rc == -ENOMEM)
      continue;
    if (rc) {
      FUZZ_CHECK(rc == -EINVAL);
      FUZZ_CHECK(e.status >= 400 && e.status < 500 && e.message[0]);
      json_t *j = exo_api_error_json(&e);
      FUZZ_CHECK(j);
      json_decref(j);
      continue;
    }
    check_accepted(&q, &lim, data, size);
    exo_api_request_fini(&q);
  }
  return 0;
}
