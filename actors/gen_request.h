/* actors/gen_request.h: the client side of a node: how a client (the node's `api` actor,
 * or a `generate --config` process on another machine) asks a node's "origin" actor for a
 * generation and hears back, token by token. Wire formats and their codecs only; the
 * origin actor (actors/origin.c) serves them. Must not know HTTP, templates or tokenizers:
 * a request is token ids in, token ids out.
 *
 *   client --SUBMIT(request_id = client's id)--> origin
 *   origin --EVENT(request_id = client's id)--> client   (one per token; the last FINAL)
 *   client --CANCEL(request_id)--> origin                 (answered by a FINAL EVENT)
 * A client id is unique per client address (node, actor); the origin keys requests by
 * (client address, client id). Every SUBMIT ends in exactly one FINAL event.
 * Admission (actors/origin.c): an accepted SUBMIT is first answered by an EVENT with no
 * flags (ACK: queued or admitted); one refused past the origin's queue by a FINAL with
 * token -EBUSY whose step_ns is the origin's suggested retry delay (whole seconds); one
 * queued past queue_timeout_ms ends with a FINAL -ETIMEDOUT carrying such a delay too. */
#ifndef EXO_ACTORS_GEN_REQUEST_H
#define EXO_ACTORS_GEN_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "actors/shard_worker.h"
#include "tensor/sample.h"

#define EXO_ORIGIN_ACTOR_NAME "origin" /* the name every node gives its origin actor */

#define EXO_REQ_MSG_SUBMIT 540u /* client -> origin */
#define EXO_REQ_MSG_EVENT 541u  /* origin -> client */
#define EXO_REQ_MSG_CANCEL 542u /* client -> origin: u32 reason (any; 0 = client gone) */

#define EXO_REQ_MAX_TOP_LOGPROBS 20u
#define EXO_REQ_MAX_PROMPT (1u << 20) /* token ids */

/* SUBMIT payload (EXO_REQ_SUBMIT_HEAD bytes, then n_prompt x i32):
 *   0 f32 temperature  4 i32 top_k  8 f32 top_p  12 f32 min_p  16 f32 repetition
 *  20 f32 presence  24 f32 frequency  28 u32 max_tokens  32 u64 seed
 *  40 u32 flags (EXO_REQ_F_*)  44 u32 top_logprobs (0..20)  48 u32 n_prompt  52 u32 0 */
#define EXO_REQ_SUBMIT_HEAD 56u
#define EXO_REQ_F_LOGPROBS 1u /* events carry the chosen token's logprob (+ top_logprobs) */
#define EXO_REQ_F_STATS 2u    /* events carry per-stage timings */

struct exo_req_submit {
  struct exo_sample_params sp;
  uint32_t max_tokens; /* >= 1 */
  uint32_t flags;
  uint32_t top_logprobs;
  const int32_t *prompt; /* decode: the ids it returned */
  size_t n_prompt;       /* 1..EXO_REQ_MAX_PROMPT */
};

/* EVENT payload (EXO_REQ_EVENT_HEAD bytes, then n_top x (i32 id, f32 logprob), then
 * n_stages x EXO_GEN_STAGE_WIRE, then msg_len bytes of text (no NUL)):
 *   0 i32 token (the id; with FINISH_ERROR: -errno)  4 u32 flags  8 u32 index (0-based
 *   count of generated tokens before this one)  12 u32 finish (EXO_REQ_FINISH_*, 0 unless
 *   FINAL)  16 f32 logprob  20 u32 n_top  24 u32 n_stages  28 u32 msg_len
 *  32 u64 step_ns (origin's view: since the previous token or the submit)
 *  40 u64 to_origin_ns (last stage -> origin)  48 u32 prompt_tokens  52 u32 attempts */
#define EXO_REQ_EVENT_HEAD 56u
#define EXO_REQ_EV_TOKEN 1u /* token holds a generated id (absent on errors and cancels) */
#define EXO_REQ_EV_FINAL 2u /* the request's last event */

enum exo_req_finish {
  EXO_REQ_FINISH_NONE = 0,
  EXO_REQ_FINISH_STOP = 1,      /* the model's EOS (the EOS id itself is the last token) */
  EXO_REQ_FINISH_LENGTH = 2,    /* max_tokens or the context window */
  EXO_REQ_FINISH_CANCELLED = 3, /* the client's CANCEL */
  EXO_REQ_FINISH_ERROR = 4,     /* token = -errno; text says what */
};
const char *exo_req_finish_name(enum exo_req_finish f); /* "stop", "length", ... */

struct exo_req_top {
  int32_t id;
  float logprob;
};

struct exo_req_event {
  int32_t token;
  uint32_t flags;
  uint32_t index;
  enum exo_req_finish finish;
  float logprob;
  uint32_t n_top;
  struct exo_req_top top[EXO_REQ_MAX_TOP_LOGPROBS];
  uint32_t n_stages;
  struct exo_gen_stage stages[EXO_GEN_MAX_STAGES];
  uint64_t step_ns, to_origin_ns;
  uint32_t prompt_tokens; /* the request's prompt length (usage) */
  uint32_t attempts;      /* 1 + times the origin re-issued the request (epoch change, loss) */
  char msg[256];          /* NUL-terminated; errors only */
};

/* Encoders return a buffer from exo_msg_alloc (for exo_actor_send_buf) in *buf and its
 * length, or -EINVAL (bad field, err says which) / -ENOMEM. */
int exo_req_submit_encode(const struct exo_req_submit *s, void **buf, size_t *len, char *err,
                          size_t errlen);
int exo_req_event_encode(const struct exo_req_event *e, void **buf, size_t *len);

/* Decoders check every length and value; -EPROTO with err naming the field. */
/* *ids (caller frees; out->prompt points at it) receives the prompt. */
int exo_req_submit_decode(const void *payload, size_t len, struct exo_req_submit *out,
                          int32_t **ids, char *err, size_t errlen);
int exo_req_event_decode(const void *payload, size_t len, struct exo_req_event *out, char *err,
                         size_t errlen);

#endif
