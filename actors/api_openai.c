/* actors/api_openai.c: the OpenAI wire format: request bodies parsed and validated with
 * jansson into struct exo_api_request (every refusal names its field, OpenAI-style), and
 * the response, chunk and error JSON. Pure functions of their inputs: must not touch
 * sockets, the clock or the tokenizer (callers pass text), so the fuzz harness can drive
 * exo_api_request_parse with any bytes. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/api.h"
#include "tensor/utf8.h"

#define INVALID "invalid_request_error"

int exo_api_fail(struct exo_api_error *e, int status, const char *type, const char *param,
                 const char *code, const char *fmt, ...)
{
  va_list ap;
  e->status = status;
  e->type = type;
  e->code = code;
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

/* A message or param may quote the client's bytes (or be cut inside a character): JSON
 * wants UTF-8, so every byte that does not start a valid sequence becomes U+FFFD. */
static void utf8_clean(const char *in, char *out, size_t cap)
{
  size_t o = 0, n = strlen(in);
  for (size_t i = 0; i < n && o + 4 < cap;) {
    uint32_t cp;
    size_t len = 0;
    if (exo_utf8_decode((const uint8_t *)in + i, n - i, &cp, &len) == EXO_UTF8_OK && len) {
      memcpy(out + o, in + i, len);
      o += len;
      i += len;
    } else {
      o += exo_utf8_encode(0xfffd, out + o);
      i++;
    }
  }
  out[o] = '\0';
}

json_t *exo_api_error_json(const struct exo_api_error *e)
{
  char msg[3 * sizeof e->message + 4], param[3 * sizeof e->param + 4];
  utf8_clean(e->message, msg, sizeof msg);
  utf8_clean(e->param, param, sizeof param);
  return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", msg, "type",
                   e->type ? e->type : INVALID, "param", param[0] ? param : NULL, "code",
                   e->code);
}

void exo_api_request_fini(struct exo_api_request *req)
{
  if (!req)
    return;
  for (size_t i = 0; i < req->n_messages; i++)
    free(req->messages[i].content);
  free(req->messages);
  free(req->prompt);
  free(req->prompt_ids);
  for (size_t i = 0; i < req->n_stop; i++)
    free(req->stop[i]);
  memset(req, 0, sizeof *req);
}

static const char *type_name(const json_t *v)
{
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return "an object";
  case JSON_ARRAY:
    return "an array";
  case JSON_STRING:
    return "a string";
  case JSON_INTEGER:
    return "an integer";
  case JSON_REAL:
    return "a number";
  case JSON_TRUE:
  case JSON_FALSE:
    return "a boolean";
  case JSON_NULL:
    return "null";
  }
  return "?";
}

static int type_fail(struct exo_api_error *e, const char *param, const char *want,
                     const json_t *got)
{
  return exo_api_fail(e, 400, INVALID, param, "invalid_type",
                      "Invalid type for '%s': expected %s, but got %s.", param, want,
                      type_name(got));
}

/* Field present and not null. */
static json_t *field(json_t *o, const char *k)
{
  json_t *v = json_object_get(o, k);
  return v && !json_is_null(v) ? v : NULL;
}

static int get_number(json_t *o, const char *k, double lo, double hi, float *out,
                      struct exo_api_error *e)
{
  json_t *v = field(o, k);
  if (!v)
    return 0;
  if (!json_is_number(v))
    return type_fail(e, k, "a number", v);
  double d = json_number_value(v);
  if (!(d >= lo && d <= hi))
    return exo_api_fail(e, 400, INVALID, k, "invalid_value",
                        "%g is out of range for '%s': expected %g to %g.", d, k, lo, hi);
  *out = (float)d;
  return 0;
}

/* present: set when the field is given (not null). */
static int get_int(json_t *o, const char *k, long long lo, long long hi, long long *out,
                   bool *present, struct exo_api_error *e)
{
  json_t *v = field(o, k);
  if (present)
    *present = v != NULL;
  if (!v)
    return 0;
  if (!json_is_integer(v))
    return type_fail(e, k, "an integer", v);
  long long x = json_integer_value(v);
  if (x < lo || x > hi)
    return exo_api_fail(e, 400, INVALID, k, "invalid_value",
                        "%lld is out of range for '%s': expected %lld to %lld.", x, k, lo, hi);
  *out = x;
  return 0;
}

static int get_bool(json_t *o, const char *k, bool *out, struct exo_api_error *e)
{
  json_t *v = field(o, k);
  if (!v)
    return 0;
  if (!json_is_boolean(v))
    return type_fail(e, k, "a boolean", v);
  *out = json_is_true(v);
  return 0;
}

/* A message's content: a string, or an array of {"type":"text","text":...} parts. */
static int parse_content(json_t *c, size_t i, struct exo_api_message *m, struct exo_api_error *e)
{
  char param[64];
  snprintf(param, sizeof param, "messages[%zu].content", i);
  if (json_is_string(c)) {
    m->len = json_string_length(c);
    if (!(m->content = malloc(m->len + 1)))
      return -ENOMEM;
    memcpy(m->content, json_string_value(c), m->len);
    m->content[m->len] = '\0';
    return 0;
  }
  if (!json_is_array(c))
    return type_fail(e, param, "a string or an array of text parts", c);
  size_t total = 0, j;
  json_t *part;
  json_array_foreach(c, j, part) {
    json_t *ty = json_object_get(part, "type"), *tx = json_object_get(part, "text");
    snprintf(param, sizeof param, "messages[%zu].content[%zu]", i, j);
    if (!json_is_object(part))
      return type_fail(e, param, "an object", part);
    if (!json_is_string(ty) || strcmp(json_string_value(ty), "text"))
      return exo_api_fail(e, 400, INVALID, param, "invalid_value",
                          "Only content parts of type 'text' are supported ('%s').", param);
    if (!json_is_string(tx))
      return type_fail(e, param, "a text part with a string 'text'", tx ? tx : part);
    total += json_string_length(tx);
  }
  if (!(m->content = malloc(total + 1)))
    return -ENOMEM;
  m->len = 0;
  json_array_foreach(c, j, part) {
    json_t *tx = json_object_get(part, "text");
    memcpy(m->content + m->len, json_string_value(tx), json_string_length(tx));
    m->len += json_string_length(tx);
  }
  m->content[m->len] = '\0';
  return 0;
}

static int parse_messages(json_t *root, struct exo_api_request *r, struct exo_api_error *e)
{
  json_t *ms = field(root, "messages");
  if (!ms)
    return exo_api_fail(e, 400, INVALID, "messages", "missing_required_parameter",
                        "Missing required parameter: 'messages'.");
  if (!json_is_array(ms))
    return type_fail(e, "messages", "an array", ms);
  size_t n = json_array_size(ms);
  if (n == 0)
    return exo_api_fail(e, 400, INVALID, "messages", "empty_array",
                        "Invalid 'messages': empty array. Expected an array with minimum "
                        "length 1.");
  if (n > EXO_API_MAX_MESSAGES)
    return exo_api_fail(e, 400, INVALID, "messages", "array_above_max_length",
                        "Invalid 'messages': %zu messages, at most %u allowed.", n,
                        EXO_API_MAX_MESSAGES);
  if (!(r->messages = calloc(n, sizeof *r->messages)))
    return -ENOMEM;
  static const struct {
    const char *name;
    enum exo_api_role role;
  } roles[] = {{"system", EXO_API_ROLE_SYSTEM},       {"user", EXO_API_ROLE_USER},
               {"assistant", EXO_API_ROLE_ASSISTANT}, {"developer", EXO_API_ROLE_DEVELOPER},
               {"tool", EXO_API_ROLE_TOOL}};
  for (size_t i = 0; i < n; i++) {
    json_t *m = json_array_get(ms, i);
    char param[64];
    snprintf(param, sizeof param, "messages[%zu]", i);
    if (!json_is_object(m))
      return type_fail(e, param, "an object", m);
    json_t *role = json_object_get(m, "role");
    snprintf(param, sizeof param, "messages[%zu].role", i);
    if (!json_is_string(role))
      return role ? type_fail(e, param, "a string", role)
                  : exo_api_fail(e, 400, INVALID, param, "missing_required_parameter",
                                 "Missing required parameter: '%s'.", param);
    size_t k;
    for (k = 0; k < sizeof roles / sizeof roles[0]; k++)
      if (!strcmp(json_string_value(role), roles[k].name))
        break;
    if (k == sizeof roles / sizeof roles[0])
      return exo_api_fail(e, 400, INVALID, param, "invalid_value",
                          "Invalid value for '%s': expected one of 'system', 'developer', "
                          "'user', 'assistant', 'tool'.", param);
    struct exo_api_message *dst = &r->messages[r->n_messages++];
    dst->role = roles[k].role;
    json_t *c = field(m, "content");
    if (!c) {
      if (dst->role != EXO_API_ROLE_ASSISTANT) {
        snprintf(param, sizeof param, "messages[%zu].content", i);
        return exo_api_fail(e, 400, INVALID, param, "missing_required_parameter",
                            "Missing required parameter: '%s'.", param);
      }
      if (!(dst->content = strdup("")))
        return -ENOMEM;
      continue;
    }
    int rc = parse_content(c, i, dst, e);
    if (rc)
      return rc;
  }
  return 0;
}

static int parse_prompt(json_t *root, const struct exo_api_limits *lim,
                        struct exo_api_request *r, struct exo_api_error *e)
{
  json_t *p = field(root, "prompt");
  if (!p)
    return exo_api_fail(e, 400, INVALID, "prompt", "missing_required_parameter",
                        "Missing required parameter: 'prompt'.");
  if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
    p = json_array_get(p, 0); /* ["text"]: one prompt, as n=1 needs */
  if (json_is_string(p)) {
    r->prompt_len = json_string_length(p);
    if (!(r->prompt = malloc(r->prompt_len + 1)))
      return -ENOMEM;
    memcpy(r->prompt, json_string_value(p), r->prompt_len + 1);
    return 0;
  }
  if (!json_is_array(p))
    return type_fail(e, "prompt", "a string or an array of token ids", p);
  size_t n = json_array_size(p);
  if (n == 0)
    return exo_api_fail(e, 400, INVALID, "prompt", "empty_array",
                        "Invalid 'prompt': empty array.");
  if (n > lim->context)
    return exo_api_fail(e, 400, INVALID, "prompt", "context_length_exceeded",
                        "This model's maximum context length is %u tokens; the prompt has %zu.",
                        lim->context, n);
  if (!(r->prompt_ids = malloc(n * sizeof *r->prompt_ids)))
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(p, i);
    if (!json_is_integer(v))
      return exo_api_fail(e, 400, INVALID, "prompt", "invalid_type",
                          "Invalid 'prompt[%zu]': a prompt array holds one string or token "
                          "ids (integers); got %s.", i, type_name(v));
    json_int_t id = json_integer_value(v);
    if (id < 0 || id >= lim->vocab_size)
      return exo_api_fail(e, 400, INVALID, "prompt", "invalid_value",
                          "Invalid 'prompt[%zu]': token id %lld outside the vocabulary "
                          "(0..%d).", i, (long long)id, lim->vocab_size - 1);
    r->prompt_ids[i] = (int32_t)id;
  }
  r->n_prompt_ids = n;
  r->has_prompt_ids = true;
  return 0;
}

static int parse_stop(json_t *root, struct exo_api_request *r, struct exo_api_error *e)
{
  json_t *s = field(root, "stop");
  if (!s)
    return 0;
  json_t *one[1] = {s};
  json_t **items = one;
  size_t n = 1;
  if (json_is_array(s)) {
    n = json_array_size(s);
    if (n > EXO_API_MAX_STOP)
      return exo_api_fail(e, 400, INVALID, "stop", "array_above_max_length",
                          "Invalid 'stop': at most %u stop sequences, got %zu.",
                          EXO_API_MAX_STOP, n);
    items = NULL;
  } else if (!json_is_string(s)) {
    return type_fail(e, "stop", "a string or an array of strings", s);
  }
  for (size_t i = 0; i < n; i++) {
    json_t *v = items ? items[i] : json_array_get(s, i);
    if (!json_is_string(v))
      return type_fail(e, "stop", "a string or an array of strings", v);
    size_t l = json_string_length(v);
    if (l == 0 || l >= EXO_API_MAX_STOP_BYTES || strlen(json_string_value(v)) != l)
      return exo_api_fail(e, 400, INVALID, "stop", "invalid_value",
                          "Invalid 'stop': each stop sequence must be 1 to %u bytes without "
                          "NUL (got %zu).", EXO_API_MAX_STOP_BYTES - 1, l);
    if (!(r->stop[r->n_stop] = strdup(json_string_value(v))))
      return -ENOMEM;
    r->n_stop++;
  }
  return 0;
}

static int parse_body(json_t *root, enum exo_api_endpoint ep, const struct exo_api_limits *lim,
                      const char *model_id, struct exo_api_request *r, struct exo_api_error *e)
{
  int rc;
  json_t *model = field(root, "model");
  if (!model)
    return exo_api_fail(e, 400, INVALID, "model", "missing_required_parameter",
                        "Missing required parameter: 'model'.");
  if (!json_is_string(model))
    return type_fail(e, "model", "a string", model);
  if (strcmp(json_string_value(model), model_id))
    return exo_api_fail(e, 404, INVALID, "model", "model_not_found",
                        "The model '%.100s' does not exist; this node serves '%.100s'.",
                        json_string_value(model), model_id);
  snprintf(r->model, sizeof r->model, "%s", model_id);

  if ((rc = ep == EXO_API_CHAT ? parse_messages(root, r, e) : parse_prompt(root, lim, r, e)))
    return rc;

  /* max_completion_tokens wins over the deprecated max_tokens, as OpenAI does */
  long long x = 0;
  bool has = false;
  const char *mt = field(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if ((rc = get_int(root, mt, 1, lim->max_tokens, &x, &has, e)))
    return rc;
  r->max_tokens = has ? (uint32_t)x : 0;

  exo_sample_params_default(&r->sp);
  r->sp.temperature = 1.0f; /* OpenAI's default; 0 asks for greedy */
  if ((rc = get_number(root, "temperature", 0, 2, &r->sp.temperature, e)) ||
      (rc = get_number(root, "top_p", 0, 1, &r->sp.top_p, e)) ||
      (rc = get_number(root, "min_p", 0, 1, &r->sp.min_p, e)) ||
      (rc = get_number(root, "presence_penalty", -2, 2, &r->sp.presence_penalty, e)) ||
      (rc = get_number(root, "frequency_penalty", -2, 2, &r->sp.frequency_penalty, e)) ||
      (rc = get_number(root, "repetition_penalty", 0.01, 100, &r->sp.repetition_penalty, e)))
    return rc;
  if (field(root, "top_p") && r->sp.top_p <= 0)
    return exo_api_fail(e, 400, INVALID, "top_p", "invalid_value",
                        "0 is out of range for 'top_p': expected a value above 0 and at most 1.");
  if ((rc = get_int(root, "top_k", -1, 1 << 30, &x, &has, e)))
    return rc;
  if (has)
    r->sp.top_k = x < 0 ? 0 : (int)x; /* -1: off, as vLLM spells it */
  if ((rc = get_int(root, "seed", INT64_MIN, INT64_MAX, &x, &has, e)))
    return rc;
  if (has)
    r->sp.seed = (uint64_t)x;
  if ((rc = get_int(root, "n", 1, 1, &x, NULL, e))) {
    e->code = "unsupported_value";
    snprintf(e->message, sizeof e->message, "Only n=1 is supported.");
    return rc;
  }
  if ((rc = parse_stop(root, r, e)) || (rc = get_bool(root, "stream", &r->stream, e)))
    return rc;
  json_t *so = field(root, "stream_options");
  if (so) {
    if (!json_is_object(so))
      return type_fail(e, "stream_options", "an object", so);
    if (!r->stream)
      return exo_api_fail(e, 400, INVALID, "stream_options", "invalid_value",
                          "The 'stream_options' parameter is only allowed when 'stream' is "
                          "enabled.");
    json_t *iu = field(so, "include_usage");
    if (iu && !json_is_boolean(iu))
      return type_fail(e, "stream_options.include_usage", "a boolean", iu);
    r->include_usage = iu && json_is_true(iu);
  }
  if (ep == EXO_API_CHAT) {
    if ((rc = get_bool(root, "logprobs", &r->logprobs, e)) ||
        (rc = get_int(root, "top_logprobs", 0, EXO_API_MAX_TOP_LOGPROBS, &x, &has, e)))
      return rc;
    if (has && !r->logprobs)
      return exo_api_fail(e, 400, INVALID, "top_logprobs", "invalid_value",
                          "'top_logprobs' requires 'logprobs' to be true.");
    r->top_logprobs = has ? (uint32_t)x : 0;
  } else {
    if ((rc = get_int(root, "logprobs", 0, EXO_API_MAX_TOP_LOGPROBS, &x, &has, e)))
      return rc;
    r->logprobs = has;
    r->top_logprobs = has ? (uint32_t)x : 0;
  }
  char err[160];
  if (exo_sample_params_check(&r->sp, err, sizeof err))
    return exo_api_fail(e, 400, INVALID, NULL, "invalid_value", "%s", err);
  return 0;
}

int exo_api_request_parse(const char *body, size_t len, enum exo_api_endpoint endpoint,
                          const struct exo_api_limits *lim, const char *model_id,
                          struct exo_api_request *req, struct exo_api_error *e)
{
  json_error_t je;
  memset(req, 0, sizeof *req);
  req->endpoint = endpoint;
  json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return exo_api_fail(e, 400, INVALID, NULL, "invalid_json",
                        "We could not parse the JSON body of your request: %s (line %d, "
                        "column %d).", je.text, je.line, je.column);
  int rc;
  if (!json_is_object(root))
    rc = exo_api_fail(e, 400, INVALID, NULL, "invalid_type",
                      "The request body must be a JSON object, got %s.", type_name(root));
  else
    rc = parse_body(root, endpoint, lim, model_id, req, e);
  json_decref(root);
  if (rc)
    exo_api_request_fini(req);
  return rc;
}

/* ---- responses ---- */

json_t *exo_api_usage_json(uint32_t prompt, uint32_t completion)
{
  return json_pack("{s:i, s:i, s:i}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                   (json_int_t)completion, "total_tokens", (json_int_t)prompt + completion);
}

static json_t *text_json(const char *s, size_t n)
{
  /* decoder output is valid UTF-8; a NUL inside is still text */
  json_t *v = json_stringn(s ? s : "", s ? n : 0);
  return v ? v : json_string("\xef\xbf\xbd");
}

json_t *exo_api_response_json(const struct exo_api_reply *r)
{
  json_t *choice;
  if (r->endpoint == EXO_API_CHAT)
    choice = json_pack("{s:i, s:{s:s, s:o}, s:O?, s:s?}", "index", 0, "message", "role",
                       "assistant", "content", text_json(r->text, r->len), "logprobs",
                       r->logprobs, "finish_reason", r->finish);
  else
    choice = json_pack("{s:i, s:o, s:O?, s:s?}", "index", 0, "text", text_json(r->text, r->len),
                       "logprobs", r->logprobs, "finish_reason", r->finish);
  if (!choice)
    return NULL;
  json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", r->id, "object",
                        r->endpoint == EXO_API_CHAT ? "chat.completion" : "text_completion",
                        "created", (json_int_t)r->created, "model", r->model, "choices", choice, "usage",
                        exo_api_usage_json(r->prompt_tokens, r->completion_tokens));
  return o;
}

json_t *exo_api_chunk_json(const struct exo_api_reply *r, bool role, bool usage_null)
{
  json_t *choice;
  if (r->endpoint == EXO_API_CHAT) {
    json_t *delta = json_object();
    if (!delta)
      return NULL;
    if (role)
      json_object_set_new(delta, "role", json_string("assistant"));
    if (r->text)
      json_object_set_new(delta, "content", text_json(r->text, r->len));
    choice = json_pack("{s:i, s:o, s:O?, s:s?}", "index", 0, "delta", delta, "logprobs",
                       r->logprobs, "finish_reason", r->finish);
  } else {
    choice = json_pack("{s:i, s:o, s:O?, s:s?}", "index", 0, "text", text_json(r->text, r->len),
                       "logprobs", r->logprobs, "finish_reason", r->finish);
  }
  if (!choice)
    return NULL;
  json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", r->id, "object",
                        r->endpoint == EXO_API_CHAT ? "chat.completion.chunk"
                                                    : "text_completion",
                        "created", (json_int_t)r->created, "model", r->model, "choices", choice);
  if (o && usage_null)
    json_object_set_new(o, "usage", json_null());
  return o;
}

json_t *exo_api_usage_chunk_json(const struct exo_api_reply *r)
{
  return json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", r->id, "object",
                   r->endpoint == EXO_API_CHAT ? "chat.completion.chunk" : "text_completion",
                   "created", (json_int_t)r->created, "model", r->model, "choices", "usage",
                   exo_api_usage_json(r->prompt_tokens, r->completion_tokens));
}

static json_t *bytes_json(const char *s, size_t n)
{
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    json_array_append_new(a, json_integer((unsigned char)s[i]));
  return a;
}

json_t *exo_api_logprob_entry_json(const struct exo_api_token_text *tok,
                                   const struct exo_api_token_text *top, size_t n_top)
{
  json_t *tops = json_array();
  for (size_t i = 0; tops && i < n_top; i++)
    json_array_append_new(tops, json_pack("{s:o, s:f, s:o}", "token",
                                           text_json(top[i].text, top[i].len), "logprob",
                                           (double)top[i].logprob, "bytes",
                                           bytes_json(top[i].text, top[i].len)));
  return json_pack("{s:o, s:f, s:o, s:o}", "token", text_json(tok->text, tok->len), "logprob",
                   (double)tok->logprob, "bytes", bytes_json(tok->text, tok->len),
                   "top_logprobs", tops);
}

int exo_api_logprobs_append(json_t *lp, enum exo_api_endpoint ep,
                            const struct exo_api_token_text *tok,
                            const struct exo_api_token_text *top, size_t n_top,
                            size_t text_offset)
{
  if (ep == EXO_API_CHAT) {
    json_t *content = json_object_get(lp, "content");
    json_t *entry = exo_api_logprob_entry_json(tok, top, n_top);
    if (!content || !entry || json_array_append_new(content, entry))
      return -ENOMEM;
    return 0;
  }
  /* legacy completions shape: parallel arrays */
  json_t *tops = json_object();
  for (size_t i = 0; tops && i < n_top; i++) {
    char key[256];
    size_t l = top[i].len < sizeof key - 1 ? top[i].len : sizeof key - 1;
    memcpy(key, top[i].text, l);
    key[l] = '\0';
    json_object_set_new(tops, key, json_real(top[i].logprob));
  }
  if (!tops ||
      json_array_append_new(json_object_get(lp, "tokens"), text_json(tok->text, tok->len)) ||
      json_array_append_new(json_object_get(lp, "token_logprobs"), json_real(tok->logprob)) ||
      json_array_append_new(json_object_get(lp, "top_logprobs"), tops) ||
      json_array_append_new(json_object_get(lp, "text_offset"),
                            json_integer((json_int_t)text_offset)))
    return -ENOMEM;
  return 0;
}

json_t *exo_api_logprobs_new(enum exo_api_endpoint ep)
{
  if (ep == EXO_API_CHAT)
    return json_pack("{s:[]}", "content");
  return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                   "text_offset");
}
