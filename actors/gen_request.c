/* actors/gen_request.c: codecs of the client protocol (SUBMIT, EVENT) in
 * actors/gen_request.h. Every decoded length and value is checked before use. Must not act on a request: that is the origin's job. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/gen_request.h"
#include "common/err.h"
#include "runtime/actor.h"

const char *exo_req_finish_name(enum exo_req_finish f)
{
  switch (f) {
  case EXO_REQ_FINISH_STOP:
    return "stop";
  case EXO_REQ_FINISH_LENGTH:
    return "length";
  case EXO_REQ_FINISH_CANCELLED:
    return "cancelled";
  case EXO_REQ_FINISH_ERROR:
    return "error";
  case EXO_REQ_FINISH_NONE:
    break;
  }
  return "none";
}

/* The scalar fields; the ids are checked where they are read. */
static int check_fields(const struct exo_req_submit *s, char *err, size_t errlen)
{
  if (s->n_prompt < 1 || s->n_prompt > EXO_REQ_MAX_PROMPT) {
    exo_errf(err, errlen, "n_prompt: expected 1..%u tokens, got %zu", EXO_REQ_MAX_PROMPT,
             s->n_prompt);
    return -EINVAL;
  }
  if (s->max_tokens < 1) {
    exo_errf(err, errlen, "max_tokens: expected >= 1, got 0");
    return -EINVAL;
  }
  if (s->top_logprobs > EXO_REQ_MAX_TOP_LOGPROBS) {
    exo_errf(err, errlen, "top_logprobs: expected 0..%u, got %u", EXO_REQ_MAX_TOP_LOGPROBS,
             s->top_logprobs);
    return -EINVAL;
  }
  if (s->flags & ~(uint32_t)(EXO_REQ_F_LOGPROBS | EXO_REQ_F_STATS)) {
    exo_errf(err, errlen, "flags: unknown bits 0x%x", s->flags);
    return -EINVAL;
  }
  return exo_sample_params_check(&s->sp, err, errlen);
}

int exo_req_submit_encode(const struct exo_req_submit *s, void **buf, size_t *len, char *err,
                          size_t errlen)
{
  int rc = check_fields(s, err, errlen);
  if (rc)
    return rc;
  for (size_t i = 0; i < s->n_prompt; i++)
    if (s->prompt[i] < 0) {
      exo_errf(err, errlen, "prompt[%zu]: negative token id %d", i, s->prompt[i]);
      return -EINVAL;
    }
  size_t n = EXO_REQ_SUBMIT_HEAD + 4 * s->n_prompt;
  uint8_t *p = exo_msg_alloc(n);
  if (!p)
    return -ENOMEM;
  memset(p, 0, EXO_REQ_SUBMIT_HEAD);
  exo_gen_put_sampling(p, &s->sp, s->max_tokens);
  exo_gen_put_u32(p + 40, s->flags);
  exo_gen_put_u32(p + 44, s->top_logprobs);
  exo_gen_put_u32(p + 48, (uint32_t)s->n_prompt);
  for (size_t i = 0; i < s->n_prompt; i++)
    exo_gen_put_u32(p + EXO_REQ_SUBMIT_HEAD + 4 * i, (uint32_t)s->prompt[i]);
  *buf = p;
  *len = n;
  return 0;
}

int exo_req_submit_decode(const void *payload, size_t len, struct exo_req_submit *out,
                          int32_t **ids, char *err, size_t errlen)
{
  const uint8_t *p = payload;
  *ids = NULL;
  if (len < EXO_REQ_SUBMIT_HEAD) {
    exo_errf(err, errlen, "SUBMIT: %zu bytes, shorter than its %u-byte head", len,
             EXO_REQ_SUBMIT_HEAD);
    return -EPROTO;
  }
  memset(out, 0, sizeof *out);
  exo_gen_get_sampling(p, &out->sp, &out->max_tokens);
  out->flags = exo_gen_get_u32(p + 40);
  out->top_logprobs = exo_gen_get_u32(p + 44);
  uint32_t n = exo_gen_get_u32(p + 48);
  out->n_prompt = n;
  if (n > EXO_REQ_MAX_PROMPT || len != EXO_REQ_SUBMIT_HEAD + 4 * (size_t)n) {
    exo_errf(err, errlen, "SUBMIT: n_prompt %u does not match the %zu-byte payload", n, len);
    return -EPROTO;
  }
  if (check_fields(out, err, errlen))
    return -EPROTO;
  int32_t *v = malloc((size_t)n * sizeof *v);
  if (!v)
    return -ENOMEM;
  for (uint32_t i = 0; i < n; i++) {
    v[i] = (int32_t)exo_gen_get_u32(p + EXO_REQ_SUBMIT_HEAD + 4 * (size_t)i);
    if (v[i] < 0) {
      exo_errf(err, errlen, "SUBMIT: prompt[%u]: negative token id %d", i, v[i]);
      free(v);
      return -EPROTO;
    }
  }
  out->prompt = v;
  *ids = v;
  return 0;
}

int exo_req_event_encode(const struct exo_req_event *e, void **buf, size_t *len)
{
  uint32_t n_top = e->n_top > EXO_REQ_MAX_TOP_LOGPROBS ? EXO_REQ_MAX_TOP_LOGPROBS : e->n_top;
  uint32_t n_st = e->n_stages > EXO_GEN_MAX_STAGES ? EXO_GEN_MAX_STAGES : e->n_stages;
  size_t msg_len = strnlen(e->msg, sizeof e->msg - 1);
  size_t n = EXO_REQ_EVENT_HEAD + 8 * (size_t)n_top + EXO_GEN_STAGE_WIRE * (size_t)n_st + msg_len;
  uint8_t *p = exo_msg_alloc(n);
  if (!p)
    return -ENOMEM;
  memset(p, 0, n);
  exo_gen_put_u32(p, (uint32_t)e->token);
  exo_gen_put_u32(p + 4, e->flags);
  exo_gen_put_u32(p + 8, e->index);
  exo_gen_put_u32(p + 12, (uint32_t)e->finish);
  exo_gen_put_f32(p + 16, e->logprob);
  exo_gen_put_u32(p + 20, n_top);
  exo_gen_put_u32(p + 24, n_st);
  exo_gen_put_u32(p + 28, (uint32_t)msg_len);
  exo_gen_put_u64(p + 32, e->step_ns);
  exo_gen_put_u64(p + 40, e->to_origin_ns);
  exo_gen_put_u32(p + 48, e->prompt_tokens);
  exo_gen_put_u32(p + 52, e->attempts);
  uint8_t *q = p + EXO_REQ_EVENT_HEAD;
  for (uint32_t i = 0; i < n_top; i++, q += 8) {
    exo_gen_put_u32(q, (uint32_t)e->top[i].id);
    exo_gen_put_f32(q + 4, e->top[i].logprob);
  }
  uint8_t st[EXO_GEN_STAGES_WIRE]; /* put_stages fills the whole fixed-size block */
  exo_gen_put_stages(st, e->stages, n_st);
  memcpy(q, st, EXO_GEN_STAGE_WIRE * (size_t)n_st);
  q += EXO_GEN_STAGE_WIRE * n_st;
  memcpy(q, e->msg, msg_len);
  *buf = p;
  *len = n;
  return 0;
}

int exo_req_event_decode(const void *payload, size_t len, struct exo_req_event *out, char *err,
                         size_t errlen)
{
  const uint8_t *p = payload;
  if (len < EXO_REQ_EVENT_HEAD) {
    exo_errf(err, errlen, "EVENT: %zu bytes, shorter than its %u-byte head", len,
             EXO_REQ_EVENT_HEAD);
    return -EPROTO;
  }
  memset(out, 0, sizeof *out);
  out->token = (int32_t)exo_gen_get_u32(p);
  out->flags = exo_gen_get_u32(p + 4);
  out->index = exo_gen_get_u32(p + 8);
  uint32_t finish = exo_gen_get_u32(p + 12);
  out->logprob = exo_gen_get_f32(p + 16);
  out->n_top = exo_gen_get_u32(p + 20);
  out->n_stages = exo_gen_get_u32(p + 24);
  uint32_t msg_len = exo_gen_get_u32(p + 28);
  out->step_ns = exo_gen_get_u64(p + 32);
  out->to_origin_ns = exo_gen_get_u64(p + 40);
  out->prompt_tokens = exo_gen_get_u32(p + 48);
  out->attempts = exo_gen_get_u32(p + 52);
  if (out->flags & ~(uint32_t)(EXO_REQ_EV_TOKEN | EXO_REQ_EV_FINAL)) {
    exo_errf(err, errlen, "EVENT: unknown flags 0x%x", out->flags);
    return -EPROTO;
  }
  if (finish > EXO_REQ_FINISH_ERROR || ((out->flags & EXO_REQ_EV_FINAL) != 0) != (finish != 0)) {
    exo_errf(err, errlen, "EVENT: finish %u does not match flags 0x%x", finish, out->flags);
    return -EPROTO;
  }
  out->finish = (enum exo_req_finish)finish;
  if (out->n_top > EXO_REQ_MAX_TOP_LOGPROBS || out->n_stages > EXO_GEN_MAX_STAGES ||
      msg_len >= sizeof out->msg ||
      len != EXO_REQ_EVENT_HEAD + 8 * (size_t)out->n_top +
                 EXO_GEN_STAGE_WIRE * (size_t)out->n_stages + msg_len) {
    exo_errf(err, errlen, "EVENT: n_top %u, n_stages %u, msg_len %u do not match %zu bytes",
             out->n_top, out->n_stages, msg_len, len);
    return -EPROTO;
  }
  const uint8_t *q = p + EXO_REQ_EVENT_HEAD;
  for (uint32_t i = 0; i < out->n_top; i++, q += 8) {
    out->top[i].id = (int32_t)exo_gen_get_u32(q);
    out->top[i].logprob = exo_gen_get_f32(q + 4);
  }
  exo_gen_get_stages(q, out->stages, out->n_stages);
  q += EXO_GEN_STAGE_WIRE * out->n_stages;
  memcpy(out->msg, q, msg_len);
  out->msg[msg_len] = '\0';
  return 0;
}
