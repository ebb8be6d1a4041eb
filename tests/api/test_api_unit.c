/* tests/api/test_api_unit.c: the api actor's pure parts: request validation (each invalid
 * field gets its status and param), chat template detection and rendering against
 * reference strings worked out from the templates' Jinja, stop strings split across
 * token-sized pieces, and the response/chunk JSON shapes. No sockets. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/api.h"
#include "tests/test.h"

static const struct exo_api_limits lim = {.max_tokens = 512, .context = 512, .vocab_size = 4096};

static int parse(const char *body, enum exo_api_endpoint ep, struct exo_api_request *q,
                 struct exo_api_error *e)
{
  return exo_api_request_parse(body, strlen(body), ep, &lim, "demo", q, e);
}

static void test_valid_chat(void)
{
  struct exo_api_request q;
  struct exo_api_error e;
  const char *body =
      "{\"model\":\"demo\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
      "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi \"},{\"type\":\"text\","
      "\"text\":\"there\"}]}],\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,"
      "\"min_p\":0.05,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
      "\"repetition_penalty\":1.1,\"seed\":42,\"stop\":[\"a\",\"bc\"],\"stream\":true,"
      "\"stream_options\":{\"include_usage\":true},\"n\":1,\"logprobs\":true,"
      "\"top_logprobs\":3,\"user\":\"ignored\",\"tools\":null}";
  CHECK_INT_EQ(parse(body, EXO_API_CHAT, &q, &e), 0);
  CHECK_INT_EQ(q.n_messages, 2);
  CHECK(q.messages[1].role == EXO_API_ROLE_USER);
  CHECK(!strcmp(q.messages[1].content, "hi there"));
  CHECK_INT_EQ(q.max_tokens, 7);
  CHECK_NEAR(q.sp.temperature, 0.5, 1e-6);
  CHECK_NEAR(q.sp.top_p, 0.9, 1e-6);
  CHECK_INT_EQ(q.sp.top_k, 40);
  CHECK_NEAR(q.sp.min_p, 0.05, 1e-6);
  CHECK_NEAR(q.sp.repetition_penalty, 1.1, 1e-6);
  CHECK_INT_EQ(q.sp.seed, 42);
  CHECK_INT_EQ(q.n_stop, 2);
  CHECK(q.stream && q.include_usage && q.logprobs);
  CHECK_INT_EQ(q.top_logprobs, 3);
  exo_api_request_fini(&q);

  /* max_completion_tokens wins; defaults: temperature 1, no stop */
  CHECK_INT_EQ(parse("{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                     "\"max_tokens\":3,\"max_completion_tokens\":9}",
                     EXO_API_CHAT, &q, &e),
               0);
  CHECK_INT_EQ(q.max_tokens, 9);
  CHECK_NEAR(q.sp.temperature, 1.0, 0);
  CHECK_INT_EQ(q.n_stop, 0);
  exo_api_request_fini(&q);
}

static void test_valid_completions(void)
{
  struct exo_api_request q;
  struct exo_api_error e;
  CHECK_INT_EQ(parse("{\"model\":\"demo\",\"prompt\":\"Once\",\"stop\":\"\\n\",\"logprobs\":2}",
                     EXO_API_COMPLETIONS, &q, &e),
               0);
  CHECK(!strcmp(q.prompt, "Once"));
  CHECK_INT_EQ(q.n_stop, 1);
  CHECK(!strcmp(q.stop[0], "\n"));
  CHECK(q.logprobs);
  CHECK_INT_EQ(q.top_logprobs, 2);
  exo_api_request_fini(&q);
  CHECK_INT_EQ(parse("{\"model\":\"demo\",\"prompt\":[1,2,3]}", EXO_API_COMPLETIONS, &q, &e), 0);
  CHECK(q.has_prompt_ids && q.n_prompt_ids == 3 && q.prompt_ids[2] == 3);
  exo_api_request_fini(&q);
  CHECK_INT_EQ(parse("{\"model\":\"demo\",\"prompt\":[\"one\"]}", EXO_API_COMPLETIONS, &q, &e),
               0);
  CHECK(!strcmp(q.prompt, "one"));
  exo_api_request_fini(&q);
}

struct bad {
  enum exo_api_endpoint ep;
  const char *body;
  int status;
  const char *param; /* "" for none */
};

#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
static const struct bad bads[] = {
    {EXO_API_CHAT, "{", 400, ""},
    {EXO_API_CHAT, "[]", 400, ""},
    {EXO_API_CHAT, "", 400, ""},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"model\":\"demo\"," MSG "}", 400, ""},
    {EXO_API_CHAT, "{" MSG "}", 400, "model"},
    {EXO_API_CHAT, "{\"model\":5," MSG "}", 400, "model"},
    {EXO_API_CHAT, "{\"model\":\"gpt-4\"," MSG "}", 404, "model"},
    {EXO_API_CHAT, "{\"model\":\"demo\"}", 400, "messages"},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"messages\":[]}", 400, "messages"},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"messages\":{}}", 400, "messages"},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"messages\":[1]}", 400, "messages[0]"},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
     400, "messages[0].role"},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"messages\":[{\"content\":\"x\"}]}", 400,
     "messages[0].role"},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\"}]}", 400,
     "messages[0].content"},
    {EXO_API_CHAT, "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":7}]}", 400,
     "messages[0].content"},
    {EXO_API_CHAT,
     "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
     400, "messages[0].content[0]"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"max_tokens\":-1}", 400, "max_tokens"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"max_tokens\":0}", 400, "max_tokens"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"max_tokens\":513}", 400, "max_tokens"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"max_tokens\":\"5\"}", 400, "max_tokens"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"max_completion_tokens\":1.5}", 400,
     "max_completion_tokens"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"temperature\":2.5}", 400, "temperature"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"temperature\":-0.1}", 400, "temperature"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"temperature\":\"hot\"}", 400, "temperature"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"top_p\":0}", 400, "top_p"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"top_p\":1.5}", 400, "top_p"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"top_k\":-2}", 400, "top_k"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"min_p\":2}", 400, "min_p"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"presence_penalty\":3}", 400,
     "presence_penalty"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"frequency_penalty\":-3}", 400,
     "frequency_penalty"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"repetition_penalty\":0}", 400,
     "repetition_penalty"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"seed\":\"x\"}", 400, "seed"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"n\":2}", 400, "n"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"stop\":5}", 400, "stop"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400,
     "stop"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"stop\":[\"\"]}", 400, "stop"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"stream\":\"yes\"}", 400, "stream"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"stream_options\":{\"include_usage\":true}}",
     400, "stream_options"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"stream\":true,\"stream_options\":3}", 400,
     "stream_options"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"logprobs\":1}", 400, "logprobs"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"top_logprobs\":2}", 400, "top_logprobs"},
    {EXO_API_CHAT, "{\"model\":\"demo\"," MSG ",\"logprobs\":true,\"top_logprobs\":21}", 400,
     "top_logprobs"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\"}", 400, "prompt"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\",\"prompt\":5}", 400, "prompt"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\",\"prompt\":[]}", 400, "prompt"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\",\"prompt\":[1,\"a\"]}", 400, "prompt"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\",\"prompt\":[4096]}", 400, "prompt"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\",\"prompt\":[-1]}", 400, "prompt"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\",\"prompt\":\"x\",\"logprobs\":true}", 400,
     "logprobs"},
    {EXO_API_COMPLETIONS, "{\"model\":\"demo\",\"prompt\":\"x\",\"logprobs\":21}", 400,
     "logprobs"},
};

static void test_invalid(void)
{
  for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
    struct exo_api_request q;
    struct exo_api_error e;
    memset(&e, 0, sizeof e);
    int rc = parse(bads[i].body, bads[i].ep, &q, &e);
    CHECK_INT_EQ(rc, -EINVAL);
    if (rc != -EINVAL || e.status != bads[i].status || strcmp(e.param, bads[i].param))
      fprintf(stderr, "  case %zu %s: status %d param '%s' (%s)\n", i, bads[i].body, e.status,
              e.param, e.message);
    CHECK_INT_EQ(e.status, bads[i].status);
    CHECK(!strcmp(e.param, bads[i].param));
    CHECK(e.message[0] != '\0');
    json_t *j = exo_api_error_json(&e);
    CHECK(j && json_is_string(json_object_get(json_object_get(j, "error"), "message")));
    CHECK(j && json_object_get(json_object_get(j, "error"), "type"));
    CHECK(j && json_object_get(json_object_get(j, "error"), "param"));
    json_decref(j);
  }
}

static const struct exo_api_message conv[] = {
    {EXO_API_ROLE_SYSTEM, (char *)"You are terse.", 14},
    {EXO_API_ROLE_USER, (char *)"  Hi!\n", 6},
    {EXO_API_ROLE_ASSISTANT, (char *)"Hello.", 6},
    {EXO_API_ROLE_USER, (char *)"Sum 2+2", 7},
};

static void test_templates(void)
{
  char *t = NULL;
  size_t n = 0;
  /* ChatML: '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n', then the
   * generation prompt '<|im_start|>assistant\n' (content untouched) */
  CHECK_INT_EQ(exo_api_template_render(EXO_API_TEMPLATE_CHATML, NULL, conv, 4, &t, &n), 0);
  const char *chatml = "<|im_start|>system\nYou are terse.<|im_end|>\n"
                       "<|im_start|>user\n  Hi!\n<|im_end|>\n"
                       "<|im_start|>assistant\nHello.<|im_end|>\n"
                       "<|im_start|>user\nSum 2+2<|im_end|>\n"
                       "<|im_start|>assistant\n";
  CHECK(t && !strcmp(t, chatml));
  CHECK_INT_EQ(n, strlen(chatml));
  free(t);
  /* Llama-3: bos_token first; '<|start_header_id|>' + role + '<|end_header_id|>\n\n' +
   * content|trim + '<|eot_id|>'; generation prompt header for assistant */
  CHECK_INT_EQ(exo_api_template_render(EXO_API_TEMPLATE_LLAMA3, NULL, conv, 4, &t, &n), 0);
  const char *llama3 = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                       "You are terse.<|eot_id|>"
                       "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                       "<|start_header_id|>user<|end_header_id|>\n\nSum 2+2<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\n";
  CHECK(t && !strcmp(t, llama3));
  free(t);

  enum exo_api_template tt = EXO_API_TEMPLATE_NONE;
  char err[320];
  const char *demo_jinja =
      "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
      "{{ '<|im_start|>assistant\\n' }}{% endif %}";
  CHECK_INT_EQ(exo_api_template_detect(demo_jinja, &tt, err, sizeof err), 0);
  CHECK(tt == EXO_API_TEMPLATE_CHATML);
  const char *llama3_jinja =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
      "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] "
      "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
      "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
      "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
  CHECK_INT_EQ(exo_api_template_detect(llama3_jinja, &tt, err, sizeof err), 0);
  CHECK(tt == EXO_API_TEMPLATE_LLAMA3);
  CHECK_INT_EQ(exo_api_template_detect("{{ messages[0]['content'] }}[INST]", &tt, err, sizeof err),
               -ENOTSUP);
  CHECK_STR_CONTAINS(err, "template");
  CHECK_INT_EQ(exo_api_template_detect("<|start_header_id|><|end_header_id|><|eot_id|>"
                                       "Cutting Knowledge Date: December 2023",
                                       &tt, err, sizeof err),
               -ENOTSUP);
  CHECK_STR_CONTAINS(err, "Cutting Knowledge Date");

  /* the demo model's tokenizer_config.json */
  char dir[4096], *bos = NULL;
  snprintf(dir, sizeof dir, "%s/models/demo", getenv("EXO_SOURCE_ROOT") ? getenv("EXO_SOURCE_ROOT") : ".");
  CHECK_INT_EQ(exo_api_template_load(dir, &tt, &bos, err, sizeof err), 0);
  CHECK(tt == EXO_API_TEMPLATE_CHATML);
  CHECK(bos && !strcmp(bos, "<|begin_of_text|>"));
  free(bos);
  CHECK_INT_EQ(exo_api_template_load("/nonexistent", &tt, &bos, err, sizeof err), -ENOENT);
  enum exo_api_template p;
  CHECK_INT_EQ(exo_api_template_parse("llama3", &p), 0);
  CHECK_INT_EQ(exo_api_template_parse("jinja", &p), -EINVAL);
}

/* Feeds pieces one by one; returns the emitted text (caller frees) and whether it matched. */
static char *run_stop(const char *const *stops, size_t n_stop, const char *const *pieces,
                      size_t n, int *matched)
{
  struct exo_api_stop st;
  exo_api_stop_init(&st, stops, n_stop);
  char *out = NULL;
  size_t len = 0;
  *matched = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = exo_api_stop_feed(&st, pieces[i], strlen(pieces[i]), &out, &len);
    if (rc == 1)
      *matched = 1;
  }
  if (!*matched)
    exo_api_stop_flush(&st, &out, &len);
  if (!out)
    out = strdup("");
  return out;
}

static void test_stop(void)
{
  int m;
  const char *s1[] = {"END"};
  const char *p1[] = {"Hello E", "N", "D more"};
  char *o = run_stop(s1, 1, p1, 3, &m);
  CHECK(m == 1 && !strcmp(o, "Hello "));
  free(o);
  /* a false start is released once it cannot be a stop string */
  const char *p2[] = {"EN", "X", "END"};
  o = run_stop(s1, 1, p2, 3, &m);
  CHECK(m == 1 && !strcmp(o, "ENX"));
  free(o);
  /* held tail emitted at the end when no stop matched */
  const char *p3[] = {"abc E", "N"};
  o = run_stop(s1, 1, p3, 2, &m);
  CHECK(m == 0 && !strcmp(o, "abc EN"));
  free(o);
  /* earliest of several stops wins, even inside one piece */
  const char *s2[] = {"world", "lo w", "\n\n"};
  const char *p4[] = {"hel", "lo", " wor", "ld"};
  o = run_stop(s2, 3, p4, 4, &m);
  CHECK(m == 1 && !strcmp(o, "hel"));
  free(o);
  /* multi-byte UTF-8 stop split inside a character */
  const char *s3[] = {"\xc3\xa9t\xc3\xa9"};
  const char *p5[] = {"caf\xc3", "\xa9t", "\xc3\xa9!"};
  o = run_stop(s3, 1, p5, 3, &m);
  CHECK(m == 1 && !strcmp(o, "caf"));
  free(o);
  /* no stops: passthrough */
  const char *p6[] = {"a", "b"};
  o = run_stop(NULL, 0, p6, 2, &m);
  CHECK(m == 0 && !strcmp(o, "ab"));
  free(o);
}

static void test_response_json(void)
{
  struct exo_api_reply r = {.endpoint = EXO_API_CHAT, .id = "chatcmpl-1", .created = 5,
                            .model = "demo", .text = "hi", .len = 2, .finish = "stop",
                            .prompt_tokens = 3, .completion_tokens = 2};
  json_t *j = exo_api_response_json(&r);
  CHECK(j && !strcmp(json_string_value(json_object_get(j, "object")), "chat.completion"));
  json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
  CHECK(!strcmp(json_string_value(json_object_get(json_object_get(c0, "message"), "content")),
                "hi"));
  CHECK(!strcmp(json_string_value(json_object_get(c0, "finish_reason")), "stop"));
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")), 5);
  json_decref(j);
  r.finish = NULL;
  j = exo_api_chunk_json(&r, true, true);
  c0 = json_array_get(json_object_get(j, "choices"), 0);
  CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "chat.completion.chunk"));
  CHECK(json_is_null(json_object_get(c0, "finish_reason")));
  CHECK(!strcmp(json_string_value(json_object_get(json_object_get(c0, "delta"), "role")),
                "assistant"));
  CHECK(json_is_null(json_object_get(j, "usage")));
  json_decref(j);
  j = exo_api_usage_chunk_json(&r);
  CHECK(json_array_size(json_object_get(j, "choices")) == 0);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), 3);
  json_decref(j);
  /* logprobs shapes */
  json_t *lp = exo_api_logprobs_new(EXO_API_CHAT);
  struct exo_api_token_text tok = {"hi", 2, -0.5f}, top[1] = {{"ho", 2, -1.5f}};
  CHECK_INT_EQ(exo_api_logprobs_append(lp, EXO_API_CHAT, &tok, top, 1, 0), 0);
  json_t *e0 = json_array_get(json_object_get(lp, "content"), 0);
  CHECK_NEAR(json_real_value(json_object_get(e0, "logprob")), -0.5, 1e-6);
  CHECK_INT_EQ(json_array_size(json_object_get(e0, "bytes")), 2);
  CHECK_INT_EQ(json_array_size(json_object_get(e0, "top_logprobs")), 1);
  json_decref(lp);
  lp = exo_api_logprobs_new(EXO_API_COMPLETIONS);
  CHECK_INT_EQ(exo_api_logprobs_append(lp, EXO_API_COMPLETIONS, &tok, top, 1, 4), 0);
  CHECK_INT_EQ(json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 0)), 4);
  CHECK(json_object_get(json_array_get(json_object_get(lp, "top_logprobs"), 0), "ho"));
  json_decref(lp);
}

int main(void)
{
  EXO_RUN(test_valid_chat);
  EXO_RUN(test_valid_completions);
  EXO_RUN(test_invalid);
  EXO_RUN(test_templates);
  EXO_RUN(test_stop);
  EXO_RUN(test_response_json);
  return exo_test_result();
}
