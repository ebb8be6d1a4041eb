/* actors/api.c: actor kind "api": the node's OpenAI-compatible HTTP server (docs/API.md)
 * on libevent's evhttp, bound to the actor's own loop, so every HTTP callback and every
 * actor message runs on one thread and nothing here locks or blocks.
 *
 * Protocol (actors/gen_request.h):
 *   POST /v1/{chat/,}completions --SUBMIT(request_id = slot id)--> origin (same node)
 *   origin --EVENT(TOKEN)...EVENT(FINAL)--> here: SSE chunks or one JSON body
 *   client gone / stop string matched --CANCEL--> origin (answered by FINAL)
 * A request's slot lives from SUBMIT until its FINAL event (or the actor's stop), even
 * when the HTTP side finished early (stop string, disconnect), so late events are
 * recognized and dropped.
 *
 * Invariants:
 *  1. An evhttp_request is answered exactly once; r->req is NULL once it is.
 *  2. A request detached from its connection (client EOF) is ours to free; one still
 *     attached is evhttp's (evhttp_request_get_connection tells them apart).
 *  3. At most max_connections connections are tracked; a request on a connection past
 *     the limit is answered 503 and the connection closed.
 *  4. A stream's 200 is sent at the origin's first event (its ACK: queued or admitted),
 *     not at SUBMIT, so a request the origin refuses past its queue is answered 429 with
 *     Retry-After (the origin's estimate), never a 200 followed by an error chunk. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "actors/api.h"
#include "actors/cluster.h"
#include "actors/default_model.h"
#include "actors/gen_request.h"
#include "actors/origin_table.h"
#include "common/err.h"
#include "runtime/loop.h"
#include "runtime/metrics.h"
#include "runtime/node.h"
#include "tensor/model.h"
#include "tensor/tokenizer.h"

#define API_TIMER_KEEPALIVE 1u
#define API_MAX_KEYS 64u
#define API_SLOT_BITS 16u

struct api_req;

struct api_conn {
  struct evhttp_connection *evcon; /* NULL: free entry */
  struct api_req *active;          /* the request being answered on it */
};

struct api_req {
  struct api_state *s;
  uint64_t id;
  uint32_t slot;
  struct evhttp_request *req; /* NULL once answered or the client is gone (invariant 1) */
  struct api_conn *conn;
  enum exo_api_endpoint ep;
  bool stream, include_usage, logprobs;
  uint32_t top_logprobs;
  bool http_done;  /* the HTTP side finished (answered, or client gone) */
  bool started;    /* stream: the 200 and its headers went out (invariant 4) */
  bool cancelled;  /* CANCEL sent */
  char id_str[48];
  int64_t created;
  struct exo_token_stream *ts;
  char *chunk;     /* exo_token_stream_max_chunk bytes */
  char *stops[EXO_API_MAX_STOP];
  struct exo_api_stop stop;
  char *text;      /* non-stream: the whole completion */
  size_t len;
  json_t *lp;      /* non-stream logprobs */
  size_t text_offset;
  uint32_t prompt_tokens, completion_tokens;
  const char *finish;
  uint64_t t0_ns, last_ns, last_write_ns;
};

struct api_state {
  struct exo_actor *self;
  struct exo_node *node;
  struct evhttp *http;
  struct exo_cluster *cluster; /* NULL when the node's context is not a cluster */
  /* options */
  char host[128];
  uint16_t port;
  char model_dir[4096];
  char model_id[128];
  char cors[256];
  uint8_t key_hash[API_MAX_KEYS][crypto_generichash_BYTES];
  size_t n_keys;
  uint32_t max_conns, max_body, max_headers, keepalive_ms, idle_timeout_s;
  struct exo_api_limits lim;
  uint32_t max_prompt;
  /* model */
  struct exo_tokenizer *tok;
  struct exo_model_config mcfg;
  enum exo_api_template tmpl;
  char *bos;
  char tmpl_err[320];
  /* requests and connections */
  struct api_req **slots; /* max_conns */
  uint64_t next_seq;
  struct api_conn *conns; /* max_conns */
  size_t n_conns;
  int64_t started;
  /* metrics */
  struct exo_metrics *m;
  struct exo_counter *c_requests, *c_2xx, *c_4xx, *c_5xx, *c_prompt, *c_completion,
      *c_disconnects, *c_cancels, *c_rejected;
  struct exo_gauge *g_active, *g_conns;
  struct exo_histogram *h_ttft, *h_itl, *h_req, *h_step, *h_to_origin;
  uint64_t tokens_window[2]; /* tokens/s: count in the current and previous second */
  uint64_t window_s;
  struct exo_rate_window done; /* recent request ends: Retry-After when slots are full */
};

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- replies ---- */

static void add_common_headers(struct api_state *s, struct evhttp_request *req, const char *ctype)
{
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", ctype);
  if (s->cors[0]) {
    evhttp_add_header(h, "Access-Control-Allow-Origin", s->cors);
    evhttp_add_header(h, "Vary", "Origin");
  }
}

static void count_status(struct api_state *s, int status)
{
  exo_counter_add(status < 300 ? s->c_2xx : status < 500 ? s->c_4xx : s->c_5xx, 1);
}

/* Sends body (consumed) with status. */
static void reply_json(struct api_state *s, struct evhttp_request *req, int status, json_t *body)
{
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  struct evbuffer *b = evbuffer_new();
  if (!text || !b) {
    free(text);
    if (b)
      evbuffer_free(b);
    count_status(s, 500);
    evhttp_send_error(req, 500, "out of memory");
    return;
  }
  evbuffer_add(b, text, strlen(text));
  evbuffer_add(b, "\n", 1);
  free(text);
  add_common_headers(s, req, "application/json");
  count_status(s, status);
  evhttp_send_reply(req, status, NULL, b);
  evbuffer_free(b);
}

static void reply_error(struct api_state *s, struct evhttp_request *req,
                        const struct exo_api_error *e)
{
  reply_json(s, req, e->status, exo_api_error_json(e));
}

static void reply_fail(struct api_state *s, struct evhttp_request *req, int status,
                       const char *type, const char *param, const char *code, const char *msg)
{
  struct exo_api_error e;
  exo_api_fail(&e, status, type, param, code, "%s", msg);
  reply_error(s, req, &e);
}

/* ---- connections ---- */

static struct api_conn *conn_find(struct api_state *s, struct evhttp_connection *evcon)
{
  for (size_t i = 0; i < s->max_conns; i++)
    if (s->conns[i].evcon == evcon)
      return &s->conns[i];
  return NULL;
}

static void req_client_gone(struct api_req *r);

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
  struct api_state *s = arg;
  struct api_conn *c = conn_find(s, evcon);
  if (!c)
    return;
  if (c->active)
    req_client_gone(c->active);
  c->evcon = NULL;
  c->active = NULL;
  s->n_conns--;
  exo_gauge_set(s->g_conns, (int64_t)s->n_conns);
}

/* The tracked entry of req's connection, or NULL when over the limit. */
static struct api_conn *conn_track(struct api_state *s, struct evhttp_request *req)
{
  struct evhttp_connection *evcon = evhttp_request_get_connection(req);
  struct api_conn *c = conn_find(s, evcon);
  if (c || !evcon)
    return c;
  if (s->n_conns >= s->max_conns || !(c = conn_find(s, NULL)))
    return NULL;
  c->evcon = evcon;
  c->active = NULL;
  s->n_conns++;
  exo_gauge_set(s->g_conns, (int64_t)s->n_conns);
  evhttp_connection_set_closecb(evcon, on_conn_close, s);
  return c;
}

/* ---- requests ---- */

static void req_free(struct api_req *r)
{
  if (!r)
    return;
  struct api_state *s = r->s;
  if (s->slots[r->slot] == r) {
    s->slots[r->slot] = NULL;
    exo_gauge_add(s->g_active, -1);
  }
  exo_token_stream_free(r->ts);
  free(r->chunk);
  for (size_t i = 0; i < EXO_API_MAX_STOP; i++)
    free(r->stops[i]);
  free(r->text);
  json_decref(r->lp);
  free(r);
}

static int send_cancel(struct api_req *r, uint32_t reason)
{
  if (r->cancelled)
    return 0;
  r->cancelled = true;
  exo_counter_add(r->s->c_cancels, 1);
  struct exo_envelope env = {0};
  env.type = EXO_REQ_MSG_CANCEL;
  env.dst.node = exo_node_id(r->s->node);
  env.dst.actor = exo_actor_id(EXO_ORIGIN_ACTOR_NAME);
  env.request_id = r->id;
  void *buf = exo_msg_alloc(4);
  if (!buf)
    return -ENOMEM;
  uint8_t *p = buf;
  p[0] = (uint8_t)reason, p[1] = (uint8_t)(reason >> 8), p[2] = (uint8_t)(reason >> 16),
  p[3] = (uint8_t)(reason >> 24);
  return exo_actor_send_buf(r->s->self, &env, &buf, 4);
}

/* The HTTP side is over (answered or gone): the connection may take another request. */
static void req_http_done(struct api_req *r)
{
  r->http_done = true;
  r->req = NULL;
  if (r->conn && r->conn->active == r)
    r->conn->active = NULL;
  r->conn = NULL;
}

static void req_client_gone(struct api_req *r)
{
  exo_counter_add(r->s->c_disconnects, 1);
  /* invariant 2: a request evhttp detached on EOF is ours to free */
  if (r->req && !evhttp_request_get_connection(r->req))
    evhttp_request_free(r->req);
  req_http_done(r);
  send_cancel(r, 0);
}

static int sse_send(struct api_req *r, json_t *chunk)
{
  char *text = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
  json_decref(chunk);
  if (!text)
    return -ENOMEM;
  struct evbuffer *b = evbuffer_new();
  if (!b) {
    free(text);
    return -ENOMEM;
  }
  evbuffer_add(b, "data: ", 6);
  evbuffer_add(b, text, strlen(text));
  evbuffer_add(b, "\n\n", 2);
  free(text);
  evhttp_send_reply_chunk(r->req, b);
  evbuffer_free(b);
  r->last_write_ns = now_ns();
  return 0;
}

static void reply_base(struct api_req *r, struct exo_api_reply *rep)
{
  memset(rep, 0, sizeof *rep);
  rep->endpoint = r->ep;
  rep->id = r->id_str;
  rep->created = r->created;
  rep->model = r->s->model_id;
  rep->prompt_tokens = r->prompt_tokens;
  rep->completion_tokens = r->completion_tokens;
}

/* Emits text (stream: one chunk; else appended). lp_entry: this token's logprobs. */
static int req_emit(struct api_req *r, const char *text, size_t n, json_t *lp_entry)
{
  if (!r->stream) {
    if (n) {
      char *q = realloc(r->text, r->len + n + 1);
      if (!q) {
        json_decref(lp_entry);
        return -ENOMEM;
      }
      memcpy(q + r->len, text, n);
      r->len += n;
      q[r->len] = '\0';
      r->text = q;
    }
    json_decref(lp_entry);
    return 0;
  }
  if (!n && !lp_entry)
    return 0;
  struct exo_api_reply rep;
  reply_base(r, &rep);
  rep.text = text ? text : "";
  rep.len = n;
  rep.logprobs = lp_entry;
  int rc = sse_send(r, exo_api_chunk_json(&rep, false, r->include_usage));
  json_decref(lp_entry);
  return rc;
}

/* Ends the HTTP side with finish reason r->finish. */
static void req_finish_http(struct api_req *r)
{
  struct api_state *s = r->s;
  if (r->http_done)
    return;
  struct exo_api_reply rep;
  reply_base(r, &rep);
  rep.finish = r->finish;
  exo_histogram_observe(s->h_req, (double)(now_ns() - r->t0_ns) / 1e9);
  exo_counter_add(s->c_completion, r->completion_tokens);
  if (r->stream) {
    sse_send(r, exo_api_chunk_json(&rep, false, r->include_usage));
    if (r->include_usage)
      sse_send(r, exo_api_usage_chunk_json(&rep));
    struct evbuffer *b = evbuffer_new();
    if (b) {
      evbuffer_add(b, "data: [DONE]\n\n", 14);
      evhttp_send_reply_chunk(r->req, b);
      evbuffer_free(b);
    }
    evhttp_send_reply_end(r->req);
  } else {
    rep.text = r->text ? r->text : "";
    rep.len = r->len;
    rep.logprobs = r->lp;
    reply_json(s, r->req, 200, exo_api_response_json(&rep));
  }
  req_http_done(r);
}

/* retry_s > 0: a Retry-After header (a started stream gets the error event only): 429 when
 * the origin refused it past its queue, 503 (code) when it waited out queue_timeout_ms. */
static void req_fail_http_ex(struct api_req *r, int status, const char *code, const char *msg,
                             uint32_t retry_s)
{
  if (r->http_done)
    return;
  struct exo_api_error e;
  if (status == 429)
    exo_api_fail(&e, status, "rate_limit_error", NULL, "too_many_requests", "%s", msg);
  else
    exo_api_fail(&e, status, "server_error", NULL, code, "%s", msg);
  if (r->stream && r->started) {
    sse_send(r, exo_api_error_json(&e));
    evhttp_send_reply_end(r->req);
    count_status(r->s, status);
  } else {
    if (retry_s) {
      char v[16];
      snprintf(v, sizeof v, "%u", retry_s);
      evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", v);
    }
    reply_error(r->s, r->req, &e);
  }
  req_http_done(r);
}

static void req_fail_http(struct api_req *r, int status, const char *msg)
{
  req_fail_http_ex(r, status, NULL, msg, 0);
}

/* Invariant 4: the stream's status line and first chunk go out at the origin's first
 * event. */
static void stream_start(struct api_req *r)
{
  struct api_state *s = r->s;
  r->started = true;
  add_common_headers(s, r->req, "text/event-stream");
  evhttp_add_header(evhttp_request_get_output_headers(r->req), "Cache-Control", "no-cache");
  count_status(s, 200);
  evhttp_send_reply_start(r->req, 200, "OK");
  if (r->ep == EXO_API_CHAT) {
    struct exo_api_reply rep;
    reply_base(r, &rep);
    rep.text = "";
    sse_send(r, exo_api_chunk_json(&rep, true, r->include_usage));
  }
}

static json_t *token_logprobs(struct api_req *r, const struct exo_req_event *ev, size_t offset,
                              json_t *acc)
{
  struct exo_api_token_text tok = {0}, top[EXO_REQ_MAX_TOP_LOGPROBS];
  char *texts[EXO_REQ_MAX_TOP_LOGPROBS + 1] = {0};
  size_t n_top = ev->n_top < r->top_logprobs ? ev->n_top : r->top_logprobs;
  json_t *out = NULL;
  size_t len;
  if (exo_tokenizer_decode(r->s->tok, &ev->token, 1, 0, &texts[0], &len))
    goto done;
  tok = (struct exo_api_token_text){texts[0], len, ev->logprob};
  for (size_t i = 0; i < n_top; i++) {
    if (exo_tokenizer_decode(r->s->tok, &ev->top[i].id, 1, 0, &texts[i + 1], &len))
      goto done;
    top[i] = (struct exo_api_token_text){texts[i + 1], len, ev->top[i].logprob};
  }
  if (acc) {
    exo_api_logprobs_append(acc, r->ep, &tok, top, n_top, offset);
  } else if ((out = exo_api_logprobs_new(r->ep)) &&
             exo_api_logprobs_append(out, r->ep, &tok, top, n_top, offset)) {
    json_decref(out);
    out = NULL;
  }
done:
  for (size_t i = 0; i <= n_top; i++)
    free(texts[i]);
  return out;
}

static void on_token(struct api_req *r, const struct exo_req_event *ev)
{
  struct api_state *s = r->s;
  uint64_t t = now_ns();
  if (r->http_done)
    return;
  r->completion_tokens++;
  if (r->completion_tokens == 1)
    exo_histogram_observe(s->h_ttft, (double)(t - r->t0_ns) / 1e9);
  else
    exo_histogram_observe(s->h_itl, (double)(t - r->last_ns) / 1e9);
  r->last_ns = t;
  if (ev->step_ns)
    exo_histogram_observe(s->h_step, (double)ev->step_ns / 1e9);
  if (ev->to_origin_ns)
    exo_histogram_observe(s->h_to_origin, (double)ev->to_origin_ns / 1e9);
  uint64_t sec = t / 1000000000ull;
  if (sec != s->window_s) {
    s->tokens_window[1] = sec == s->window_s + 1 ? s->tokens_window[0] : 0;
    s->tokens_window[0] = 0;
    s->window_s = sec;
  }
  s->tokens_window[0]++;

  size_t n = 0;
  if (exo_token_stream_push(r->ts, ev->token, r->chunk, exo_token_stream_max_chunk(s->tok), &n)) {
    req_fail_http(r, 502, "the cluster sent a token id outside the vocabulary");
    send_cancel(r, 1);
    return;
  }
  char *out = NULL;
  size_t out_len = 0;
  int m = exo_api_stop_feed(&r->stop, r->chunk, n, &out, &out_len);
  json_t *lp = NULL;
  if (r->logprobs && m != 1)
    lp = token_logprobs(r, ev, r->text_offset, r->stream ? NULL : r->lp);
  r->text_offset += out_len;
  if (m < 0 || req_emit(r, out, out_len, lp)) {
    free(out);
    req_fail_http(r, 500, "out of memory");
    send_cancel(r, 1);
    return;
  }
  free(out);
  if (m == 1) {
    r->finish = "stop";
    req_finish_http(r);
    send_cancel(r, 1);
  }
}

static void on_final(struct api_req *r, const struct exo_req_event *ev)
{
  exo_rate_window_note(&r->s->done, now_ns());
  uint64_t retry = ev->step_ns / 1000000000ull; /* an error's retry hint (PROTOCOL.md) */
  uint32_t retry_s = retry < 1 ? 1 : retry > 3600 ? 3600 : (uint32_t)retry;
  if (ev->finish == EXO_REQ_FINISH_ERROR && ev->token == -EBUSY) {
    req_fail_http_ex(r, 429, NULL, ev->msg[0] ? ev->msg : "this node is at its request limit",
                     retry_s);
  } else if (ev->finish == EXO_REQ_FINISH_ERROR && ev->token == -ETIMEDOUT && ev->step_ns) {
    char msg[320];
    snprintf(msg, sizeof msg, "generation not started: %s",
             ev->msg[0] ? ev->msg : "it waited too long in the admission queue");
    req_fail_http_ex(r, 503, "queue_timeout", msg, retry_s);
  } else if (ev->finish == EXO_REQ_FINISH_ERROR) {
    char msg[320];
    snprintf(msg, sizeof msg, "generation failed: %s", ev->msg[0] ? ev->msg : "unknown error");
    req_fail_http(r, 503, msg);
  } else if (!r->http_done) {
    size_t n = 0;
    char *out = NULL;
    size_t out_len = 0;
    exo_token_stream_flush(r->ts, r->chunk, exo_token_stream_max_chunk(r->s->tok), &n);
    int m = exo_api_stop_feed(&r->stop, r->chunk, n, &out, &out_len);
    if (m == 0)
      m = exo_api_stop_flush(&r->stop, &out, &out_len);
    if (m >= 0 && !req_emit(r, out, out_len, NULL)) {
      r->finish = m == 1 || ev->finish == EXO_REQ_FINISH_STOP ? "stop"
                  : ev->finish == EXO_REQ_FINISH_LENGTH        ? "length"
                                                               : "cancelled";
      req_finish_http(r);
    } else {
      req_fail_http(r, 500, "out of memory");
    }
    free(out);
  }
  req_free(r);
}

static void on_event(struct api_state *s, const struct exo_msg *msg)
{
  struct exo_req_event ev;
  char err[160];
  uint32_t slot = (uint32_t)(msg->env.request_id & ((1u << API_SLOT_BITS) - 1));
  if (slot >= s->max_conns)
    return;
  struct api_req *r = s->slots[slot];
  if (!r || r->id != msg->env.request_id)
    return; /* a request we forgot (actor restarted, or its FINAL already came) */
  if (exo_req_event_decode(msg->payload, msg->env.payload_len, &ev, err, sizeof err)) {
    req_fail_http(r, 502, "malformed event from the origin");
    send_cancel(r, 1);
    return;
  }
  if (ev.prompt_tokens)
    r->prompt_tokens = ev.prompt_tokens;
  if (r->stream && !r->started && !r->http_done &&
      !((ev.flags & EXO_REQ_EV_FINAL) && ev.finish == EXO_REQ_FINISH_ERROR &&
        ev.token == -EBUSY))
    stream_start(r);
  if (ev.flags & EXO_REQ_EV_TOKEN)
    on_token(r, &ev);
  if (ev.flags & EXO_REQ_EV_FINAL)
    on_final(r, &ev);
}

/* ---- POST /v1/chat/completions, /v1/completions ---- */

static int tokenize(struct api_state *s, const struct exo_api_request *q, int32_t **ids,
                    size_t *n, struct exo_api_error *e)
{
  if (q->has_prompt_ids) {
    if (!(*ids = malloc(q->n_prompt_ids * sizeof **ids)))
      return -ENOMEM;
    memcpy(*ids, q->prompt_ids, q->n_prompt_ids * sizeof **ids);
    *n = q->n_prompt_ids;
    return 0;
  }
  const char *text = q->prompt;
  size_t len = q->prompt_len;
  char *rendered = NULL;
  int add_special = 1;
  if (q->endpoint == EXO_API_CHAT) {
    if (s->tmpl == EXO_API_TEMPLATE_NONE)
      return exo_api_fail(e, 400, "invalid_request_error", "messages",
                          "chat_template_unsupported", "This node cannot render chat for its "
                          "model: %s", s->tmpl_err);
    if (exo_api_template_render(s->tmpl, s->bos, q->messages, q->n_messages, &rendered, &len))
      return -ENOMEM;
    text = rendered;
    add_special = 0; /* the template writes BOS itself where the family has one */
  }
  int rc = exo_tokenizer_encode(s->tok, text, len, add_special, ids, n);
  free(rendered);
  if (rc == -EILSEQ)
    return exo_api_fail(e, 400, "invalid_request_error",
                        q->endpoint == EXO_API_CHAT ? "messages" : "prompt", "invalid_value",
                        "The prompt is not valid UTF-8.");
  return rc;
}

static void handle_generate(struct api_state *s, struct evhttp_request *req,
                            enum exo_api_endpoint ep, struct api_conn *conn)
{
  struct exo_api_request q;
  struct exo_api_error e;
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t len = evbuffer_get_length(in);
  int32_t *ids = NULL;
  size_t n_ids = 0;
  struct api_req *r = NULL;
  void *buf = NULL;
  int rc;
  exo_counter_add(s->c_requests, 1);
  if (len > s->max_body) {
    exo_api_fail(&e, 413, "invalid_request_error", NULL, "request_too_large",
                 "The request body is %zu bytes; this node accepts at most %u.", len,
                 s->max_body);
    reply_error(s, req, &e);
    return;
  }
  const char *body = (const char *)evbuffer_pullup(in, -1);
  rc = exo_api_request_parse(body ? body : "", len, ep, &s->lim, s->model_id, &q, &e);
  if (rc) {
    if (rc == -ENOMEM)
      exo_api_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
    reply_error(s, req, &e);
    return;
  }
  if ((rc = tokenize(s, &q, &ids, &n_ids, &e))) {
    if (rc == -ENOMEM)
      exo_api_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
    goto fail;
  }
  const char *pparam = ep == EXO_API_CHAT ? "messages" : "prompt";
  if (n_ids == 0) {
    exo_api_fail(&e, 400, "invalid_request_error", pparam, "invalid_value",
                 "The prompt is empty after tokenization.");
    goto fail;
  }
  if (n_ids > s->max_prompt || n_ids >= s->lim.context) {
    exo_api_fail(&e, 400, "invalid_request_error", pparam, "context_length_exceeded",
                 "The prompt has %zu tokens; this node accepts at most %u (context window "
                 "%u, and at least one token must be generated).", n_ids,
                 s->max_prompt < s->lim.context - 1 ? s->max_prompt : s->lim.context - 1,
                 s->lim.context);
    goto fail;
  }
  uint32_t room = s->lim.context - (uint32_t)n_ids;
  uint32_t max_tokens = q.max_tokens;
  if (max_tokens > room) {
    exo_api_fail(&e, 400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                 "This model's maximum context length is %u tokens. However, you requested "
                 "%zu tokens (%zu in the prompt, %u for the completion).", s->lim.context,
                 n_ids + max_tokens, n_ids, max_tokens);
    goto fail;
  }
  if (!max_tokens)
    max_tokens = room < s->lim.max_tokens ? room : s->lim.max_tokens;

  /* a slot: ids carry it in their low bits, so events find their request in O(1) */
  uint32_t slot;
  for (slot = 0; slot < s->max_conns && s->slots[slot]; slot++)
    ;
  if (slot == s->max_conns) {
    /* a slot frees when any request ends: expect one within the recent mean gap */
    uint32_t retry = exo_rate_window_retry_s(&s->done, 1, 1, now_ns());
    char v[16];
    snprintf(v, sizeof v, "%u", retry);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", v);
    exo_api_fail(&e, 429, "rate_limit_error", NULL, "too_many_requests",
                 "This node is serving its maximum of %u requests; retry in %u s.",
                 s->max_conns, retry);
    goto fail;
  }
  if (!(r = calloc(1, sizeof *r)) ||
      exo_token_stream_new(s->tok, 1, &r->ts) ||
      !(r->chunk = malloc(exo_token_stream_max_chunk(s->tok)))) {
    exo_api_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
    goto fail;
  }
  r->s = s;
  r->slot = slot;
  r->id = (++s->next_seq << API_SLOT_BITS) | slot;
  r->req = req;
  r->conn = conn;
  r->ep = ep;
  r->stream = q.stream;
  r->include_usage = q.include_usage;
  r->logprobs = q.logprobs;
  r->top_logprobs = q.top_logprobs;
  r->prompt_tokens = (uint32_t)n_ids;
  r->created = (int64_t)time(NULL);
  r->t0_ns = r->last_ns = r->last_write_ns = now_ns();
  snprintf(r->id_str, sizeof r->id_str, "%s-%" PRIx32 "x%016" PRIx64,
           ep == EXO_API_CHAT ? "chatcmpl" : "cmpl", exo_node_id(s->node), r->id);
  for (size_t i = 0; i < q.n_stop; i++) {
    r->stops[i] = q.stop[i];
    q.stop[i] = NULL;
  }
  exo_api_stop_init(&r->stop, (const char *const *)r->stops, q.n_stop);
  if (r->logprobs && !r->stream && !(r->lp = exo_api_logprobs_new(ep))) {
    exo_api_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
    goto fail;
  }

  struct exo_req_submit sub = {.sp = q.sp,
                               .max_tokens = max_tokens,
                               .flags = (r->logprobs ? EXO_REQ_F_LOGPROBS : 0u) | EXO_REQ_F_STATS,
                               .top_logprobs = q.top_logprobs,
                               .prompt = ids,
                               .n_prompt = n_ids};
  char err[160];
  if (exo_req_submit_encode(&sub, &buf, &len, err, sizeof err)) {
    exo_api_fail(&e, 400, "invalid_request_error", NULL, "invalid_value", "%s", err);
    goto fail;
  }
  struct exo_envelope env = {0};
  env.type = EXO_REQ_MSG_SUBMIT;
  env.dst.node = exo_node_id(s->node);
  env.dst.actor = exo_actor_id(EXO_ORIGIN_ACTOR_NAME);
  env.request_id = r->id;
  if ((rc = exo_actor_send_buf(s->self, &env, &buf, len))) {
    exo_api_fail(&e, 503, "server_error", NULL, "origin_unavailable",
                 "This node cannot take generations now (%s: %s).",
                 rc == -ENOENT ? "no origin actor on this node" : "origin's mailbox refused",
                 strerror(-rc));
    goto fail;
  }
  s->slots[slot] = r;
  exo_gauge_add(s->g_active, 1);
  exo_counter_add(s->c_prompt, n_ids);
  if (conn)
    conn->active = r;
  free(ids); /* a stream starts at the origin's first event (invariant 4) */
  exo_api_request_fini(&q);
  return;
fail:
  exo_msg_free(buf);
  if (r) { /* never placed in a slot */
    exo_token_stream_free(r->ts);
    free(r->chunk);
    for (size_t i = 0; i < EXO_API_MAX_STOP; i++)
      free(r->stops[i]);
    json_decref(r->lp);
    free(r);
  }
  free(ids);
  exo_api_request_fini(&q);
  reply_error(s, req, &e);
}

/* ---- GET endpoints ---- */

static void handle_models(struct api_state *s, struct evhttp_request *req, const char *one)
{
  json_t *model = json_pack("{s:s, s:s, s:I, s:s}", "id", s->model_id, "object", "model",
                            "created", (json_int_t)s->started, "owned_by", "exo-actors");
  if (one) {
    if (strcmp(one, s->model_id)) {
      json_decref(model);
      reply_fail(s, req, 404, "invalid_request_error", "model", "model_not_found",
                 "No such model on this node.");
      return;
    }
    reply_json(s, req, 200, model);
    return;
  }
  reply_json(s, req, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model));
}

static void handle_health(struct api_state *s, struct evhttp_request *req)
{
  bool origin = exo_node_find(s->node, EXO_ORIGIN_ACTOR_NAME) != NULL;
  reply_json(s, req, 200,
             json_pack("{s:s, s:I, s:s, s:b, s:I}", "status", "ok", "node",
                       (json_int_t)exo_node_id(s->node), "model", s->model_id, "origin",
                       origin, "active_requests", (json_int_t)exo_gauge_get(s->g_active)));
}

static double tokens_per_s(struct api_state *s)
{
  uint64_t sec = now_ns() / 1000000000ull;
  if (sec == s->window_s)
    return (double)s->tokens_window[1];
  if (sec == s->window_s + 1)
    return (double)s->tokens_window[0];
  return 0;
}

static json_t *cluster_json(struct api_state *s)
{
  struct exo_cluster_node *nodes = calloc(EXO_CLUSTER_MAX_NODES, sizeof *nodes);
  struct exo_live_map *map = calloc(1, sizeof *map);
  json_t *o = NULL, *arr = json_array(), *ranges = json_array();
  size_t n = 0;
  bool have_map = false;
  if (!nodes || !map || !arr || !ranges)
    goto out;
  if (s->cluster) {
    n = exo_cluster_copy_nodes(s->cluster, nodes, EXO_CLUSTER_MAX_NODES);
    if (n > EXO_CLUSTER_MAX_NODES)
      n = EXO_CLUSTER_MAX_NODES;
    have_map = exo_cluster_copy_live_map(s->cluster, map) == 0;
  }
  uint64_t t = now_ns();
  for (size_t i = 0; i < n; i++) {
    json_t *layers = json_array();
    for (size_t k = 0; have_map && k < map->n; k++)
      if (map->ranges[k].node == nodes[i].id)
        json_array_append_new(layers, json_pack("[i, i]", (json_int_t)map->ranges[k].a,
                                                (json_int_t)map->ranges[k].b));
    json_array_append_new(
        arr, json_pack("{s:I, s:s, s:s, s:I, s:f, s:s, s:I, s:b, s:o}", "id",
                       (json_int_t)nodes[i].id, "addr", nodes[i].addr, "model", nodes[i].model,
                       "mem_bytes", (json_int_t)nodes[i].mem_bytes, "gflops", nodes[i].gflops,
                       "health", nodes[i].health == EXO_PEER_ALIVE ? "alive" : "suspect",
                       "seen_ms_ago",
                       (json_int_t)(t > nodes[i].seen_ns ? (t - nodes[i].seen_ns) / 1000000 : 0),
                       "self", nodes[i].id == exo_node_id(s->node), "layers", layers));
  }
  for (size_t k = 0; have_map && k < map->n; k++)
    json_array_append_new(ranges, json_pack("{s:I, s:I, s:I}", "node",
                                            (json_int_t)map->ranges[k].node, "begin",
                                            (json_int_t)map->ranges[k].a, "end",
                                            (json_int_t)map->ranges[k].b));
  o = json_pack("{s:I, s:I, s:I, s:I, s:s, s:O, s:O, s:{s:f, s:I, s:s}}", "self",
                (json_int_t)exo_node_id(s->node), "epoch",
                (json_int_t)(have_map ? map->epoch : 0), "coordinator",
                (json_int_t)(have_map ? map->coordinator : 0), "n_layers",
                (have_map ? (json_int_t)map->n_layers : (json_int_t)s->mcfg.n_layers), "model",
                have_map && map->model[0] ? map->model : s->model_id, "nodes", arr, "ranges",
                ranges, "api", "tokens_per_s", tokens_per_s(s), "active_requests",
                (json_int_t)exo_gauge_get(s->g_active), "model_id", s->model_id);
out:
  json_decref(arr);
  json_decref(ranges);
  free(nodes);
  free(map);
  return o;
}

static void handle_metrics(struct api_state *s, struct evhttp_request *req)
{
  char *text = NULL;
  size_t len = 0;
  struct evbuffer *b = evbuffer_new();
  if (!b || exo_metrics_render(s->m, &text, &len)) {
    if (b)
      evbuffer_free(b);
    evhttp_send_error(req, 500, "out of memory");
    return;
  }
  evbuffer_add(b, text, len);
  free(text);
  /* node and cluster state, read at scrape time (labels: the registry has none) */
  struct exo_node_stats st;
  exo_node_stats(s->node, &st);
  evbuffer_add_printf(b,
                      "# HELP exo_node_mailbox_full_total Messages refused: mailbox full.\n"
                      "# TYPE exo_node_mailbox_full_total counter\n"
                      "exo_node_mailbox_full_total %" PRIu64 "\n"
                      "# HELP exo_node_send_failed_total Sends failed (no route, would block).\n"
                      "# TYPE exo_node_send_failed_total counter\n"
                      "exo_node_send_failed_total %" PRIu64 "\n"
                      "# HELP exo_node_delivered_total Messages delivered to actors.\n"
                      "# TYPE exo_node_delivered_total counter\n"
                      "exo_node_delivered_total %" PRIu64 "\n"
                      "# HELP exo_node_restarts_total Actor restarts.\n"
                      "# TYPE exo_node_restarts_total counter\n"
                      "exo_node_restarts_total %" PRIu64 "\n",
                      st.mailbox_full, st.send_failed, st.delivered, st.restarts);
  char drops[2048]; /* the transport's drop counters (auth, replay, throttle, malformed) */
  if (exo_node_stats_prometheus(&st, drops, sizeof drops) < sizeof drops)
    evbuffer_add(b, drops, strlen(drops));
  evbuffer_add_printf(b,
                      "# HELP exo_node_loop_deaths_total Loop threads that died (restarted).\n"
                      "# TYPE exo_node_loop_deaths_total counter\n"
                      "exo_node_loop_deaths_total %" PRIu64 "\n",
                      st.loop_deaths);
  char origin[4096]; /* the origin's admission counters and gauges */
  if (s->cluster && exo_origin_stats_prometheus(exo_cluster_origin_stats(s->cluster), origin,
                                                sizeof origin) < sizeof origin)
    evbuffer_add(b, origin, strlen(origin));
  if (s->cluster)
    evbuffer_add_printf(b, "# HELP exo_shard_kv_caches Requests holding a KV cache in this "
                           "node's shard-worker.\n# TYPE exo_shard_kv_caches gauge\n"
                           "exo_shard_kv_caches %" PRId64 "\n",
                        exo_cluster_shard_requests(s->cluster));
  json_t *c = cluster_json(s);
  if (c) {
    json_t *nodes = json_object_get(c, "nodes"), *nd;
    size_t i;
    evbuffer_add_printf(b, "# HELP exo_cluster_epoch Live partition map epoch (0: none).\n"
                           "# TYPE exo_cluster_epoch gauge\nexo_cluster_epoch %" JSON_INTEGER_FORMAT
                           "\n# HELP exo_cluster_node_up 1 alive, 0 suspect, per node.\n"
                           "# TYPE exo_cluster_node_up gauge\n",
                        json_integer_value(json_object_get(c, "epoch")));
    json_array_foreach(nodes, i, nd) {
      evbuffer_add_printf(b, "exo_cluster_node_up{node=\"%" JSON_INTEGER_FORMAT "\"} %d\n",
                          json_integer_value(json_object_get(nd, "id")),
                          !strcmp(json_string_value(json_object_get(nd, "health")), "alive"));
    }
    json_decref(c);
  }
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8");
  count_status(s, 200);
  evhttp_send_reply(req, 200, NULL, b);
  evbuffer_free(b);
}

static void handle_page(struct api_state *s, struct evhttp_request *req)
{
  struct evbuffer *b = evbuffer_new();
  if (!b) {
    evhttp_send_error(req, 500, "out of memory");
    return;
  }
  evbuffer_add_reference(b, exo_api_page_html, exo_api_page_html_len, NULL, NULL);
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
  evhttp_add_header(h, "Content-Security-Policy",
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'");
  count_status(s, 200);
  evhttp_send_reply(req, 200, NULL, b);
  evbuffer_free(b);
}

/* ---- routing ---- */

static bool authorized(struct api_state *s, struct evhttp_request *req)
{
  if (!s->n_keys)
    return true;
  const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
  if (!h || strncasecmp(h, "Bearer ", 7))
    return false;
  h += 7;
  uint8_t hash[crypto_generichash_BYTES];
  crypto_generichash(hash, sizeof hash, (const unsigned char *)h, strlen(h), NULL, 0);
  int ok = 0;
  for (size_t i = 0; i < s->n_keys; i++) /* constant time per key, no early exit */
    ok |= sodium_memcmp(hash, s->key_hash[i], sizeof hash) == 0;
  return ok;
}

static void on_request(struct evhttp_request *req, void *arg)
{
  struct api_state *s = arg;
  struct api_conn *conn = conn_track(s, req);
  if (!conn && evhttp_request_get_connection(req)) {
    exo_counter_add(s->c_rejected, 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    char msg[160];
    snprintf(msg, sizeof msg, "This node has its maximum of %u open connections; retry later.",
             s->max_conns);
    reply_fail(s, req, 503, "server_error", NULL, "too_many_connections", msg);
    return;
  }
  const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
  const char *path = u ? evhttp_uri_get_path(u) : NULL;
  if (!path || !*path)
    path = "/";
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  if (cmd == EVHTTP_REQ_OPTIONS) {
    if (!s->cors[0]) {
      reply_fail(s, req, 405, "invalid_request_error", NULL, "method_not_allowed",
                 "CORS is not enabled on this node (api option cors_origin).");
      return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Access-Control-Allow-Origin", s->cors);
    evhttp_add_header(h, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    evhttp_add_header(h, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    evhttp_add_header(h, "Access-Control-Max-Age", "600");
    evhttp_add_header(h, "Vary", "Origin");
    count_status(s, 204);
    evhttp_send_reply(req, 204, "No Content", NULL);
    return;
  }
  bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD, post = cmd == EVHTTP_REQ_POST;
  /* open: the page and liveness; everything else needs a key when keys are configured */
  if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
    if (get)
      handle_page(s, req);
    else
      reply_fail(s, req, 405, "invalid_request_error", NULL, "method_not_allowed",
                 "Use GET.");
    return;
  }
  if (!strcmp(path, "/healthz")) {
    if (get)
      handle_health(s, req);
    else
      reply_fail(s, req, 405, "invalid_request_error", NULL, "method_not_allowed",
                 "Use GET.");
    return;
  }
  if (!strcmp(path, "/favicon.ico") && get) { /* browsers ask on every page load: no icon */
    count_status(s, 204);
    evhttp_send_reply(req, 204, "No Content", NULL);
    return;
  }
  if (!authorized(s, req)) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    reply_fail(s, req, 401, "authentication_error", NULL, "invalid_api_key",
               "Missing or incorrect API key: send 'Authorization: Bearer <key>'.");
    return;
  }
  struct {
    const char *path;
    bool post;
  } const routes[] = {{"/v1/chat/completions", true}, {"/v1/completions", true},
                      {"/v1/models", false},          {"/metrics", false},
                      {"/v1/cluster", false}};
  bool known = false;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (!strcmp(path, routes[i].path)) {
      known = true;
      if (routes[i].post ? !post : !get) {
        reply_fail(s, req, 405, "invalid_request_error", NULL, "method_not_allowed",
                   routes[i].post ? "Use POST." : "Use GET.");
        return;
      }
    }
  if (!strcmp(path, "/v1/chat/completions"))
    handle_generate(s, req, EXO_API_CHAT, conn);
  else if (!strcmp(path, "/v1/completions"))
    handle_generate(s, req, EXO_API_COMPLETIONS, conn);
  else if (!strcmp(path, "/v1/models"))
    handle_models(s, req, NULL);
  else if (!strncmp(path, "/v1/models/", 11) && get)
    handle_models(s, req, path + 11);
  else if (!strcmp(path, "/metrics"))
    handle_metrics(s, req);
  else if (!strcmp(path, "/v1/cluster"))
    reply_json(s, req, 200, cluster_json(s));
  else
    reply_fail(s, req, 404, "invalid_request_error", NULL, known ? NULL : "not_found",
               "Unknown endpoint.");
}

/* ---- actor ---- */

static int load_keys(struct api_state *s, const struct exo_config *cfg,
                     const struct exo_actor_config *opts, char *err, size_t errlen)
{
  const char *list = NULL, *file = NULL;
  int rc;
  if ((rc = exo_config_option_str(cfg, opts, "api_keys", NULL, &list, err, errlen)) ||
      (rc = exo_config_option_str(cfg, opts, "api_key_file", NULL, &file, err, errlen)))
    return rc;
  char *text = NULL;
  if (file) {
    FILE *f = fopen(file, "r");
    if (!f) {
      exo_errf(err, errlen, "api actor: api_key_file %s: %s", file, strerror(errno));
      return -errno;
    }
    size_t cap = 0;
    ssize_t got = getdelim(&text, &cap, '\0', f);
    fclose(f);
    if (got < 0) {
      free(text);
      text = strdup("");
    }
  }
  const char *srcs[2] = {list, text};
  const char *seps[2] = {",", "\n\r"};
  for (int k = 0; k < 2; k++) {
    if (!srcs[k])
      continue;
    char *copy = strdup(srcs[k]), *save = NULL;
    if (!copy) {
      free(text);
      return -ENOMEM;
    }
    for (char *t = strtok_r(copy, seps[k], &save); t; t = strtok_r(NULL, seps[k], &save)) {
      while (*t == ' ' || *t == '\t')
        t++;
      size_t l = strlen(t);
      while (l && (t[l - 1] == ' ' || t[l - 1] == '\t'))
        t[--l] = '\0';
      if (!l || t[0] == '#')
        continue;
      if (s->n_keys == API_MAX_KEYS || l < 8) {
        exo_errf(err, errlen, "api actor: %s", l < 8 ? "an API key must be at least 8 characters"
                                                     : "more than 64 API keys");
        free(copy);
        free(text);
        return -EINVAL;
      }
      crypto_generichash(s->key_hash[s->n_keys++], crypto_generichash_BYTES,
                         (const unsigned char *)t, l, NULL, 0);
    }
    sodium_memzero(copy, strlen(srcs[k]));
    free(copy);
  }
  if (text) {
    sodium_memzero(text, strlen(text));
    free(text);
  }
  if (file && !s->n_keys) {
    exo_errf(err, errlen, "api actor: api_key_file %s holds no key", file);
    return -EINVAL;
  }
  return 0;
}

static int register_metrics(struct api_state *s)
{
  static const double lat[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                               0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  static const double req[] = {0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  struct exo_metrics *m = s->m;
  s->c_requests = exo_metrics_counter(m, "exo_api_requests_total",
                                      "Generation requests received (chat and completions).");
  s->c_2xx = exo_metrics_counter(m, "exo_api_responses_2xx_total", "HTTP responses 2xx.");
  s->c_4xx = exo_metrics_counter(m, "exo_api_responses_4xx_total", "HTTP responses 4xx.");
  s->c_5xx = exo_metrics_counter(m, "exo_api_responses_5xx_total", "HTTP responses 5xx.");
  s->c_prompt = exo_metrics_counter(m, "exo_api_prompt_tokens_total", "Prompt tokens submitted.");
  s->c_completion = exo_metrics_counter(m, "exo_api_completion_tokens_total",
                                        "Completion tokens returned to clients.");
  s->c_disconnects = exo_metrics_counter(m, "exo_api_client_disconnects_total",
                                         "Clients gone before their response ended.");
  s->c_cancels = exo_metrics_counter(m, "exo_api_cancels_total",
                                     "CANCELs sent to the origin (disconnects, stop strings).");
  s->c_rejected = exo_metrics_counter(m, "exo_api_rejected_connections_total",
                                      "Requests refused: connection limit.");
  s->g_active = exo_metrics_gauge(m, "exo_api_active_requests",
                                  "Requests submitted whose final event has not come.");
  s->g_conns = exo_metrics_gauge(m, "exo_api_connections", "HTTP connections tracked.");
  s->h_ttft = exo_metrics_histogram(m, "exo_api_time_to_first_token_seconds",
                                    "Request parsed to first token event.", lat, 14);
  s->h_itl = exo_metrics_histogram(m, "exo_api_inter_token_seconds",
                                   "Between consecutive token events of a request.", lat, 14);
  s->h_step = exo_metrics_histogram(m, "exo_api_origin_step_seconds",
                                    "Origin's step time per token (event step_ns).", lat, 14);
  s->h_to_origin = exo_metrics_histogram(m, "exo_api_last_hop_seconds",
                                         "Last stage to origin hop per token.", lat, 14);
  s->h_req = exo_metrics_histogram(m, "exo_api_request_seconds", "Whole request.", req, 12);
  return s->c_requests && s->c_2xx && s->c_4xx && s->c_5xx && s->c_prompt && s->c_completion &&
                 s->c_disconnects && s->c_cancels && s->c_rejected && s->g_active &&
                 s->g_conns && s->h_ttft && s->h_itl && s->h_step && s->h_to_origin && s->h_req
             ? 0
             : -ENOMEM;
}

static int load_model(struct api_state *s, const struct exo_config *cfg,
                      const struct exo_actor_config *opts, char *err, size_t errlen)
{
  const char *dir = NULL, *id = NULL, *tmpl = NULL;
  int rc;
  if ((rc = exo_config_option_str(cfg, opts, "model", cfg ? cfg->model : NULL, &dir, err,
                                  errlen)) ||
      (rc = exo_config_option_str(cfg, opts, "model_id", NULL, &id, err, errlen)) ||
      (rc = exo_config_option_str(cfg, opts, "template", "auto", &tmpl, err, errlen)))
    return rc;
  if (dir)
    snprintf(s->model_dir, sizeof s->model_dir, "%s", dir);
  else if (exo_default_model_dir(s->model_dir, sizeof s->model_dir)) {
    exo_errf(err, errlen, "api actor: no model: set the config's `model` or the api option "
             "`model` (and models/demo is not found)");
    return -ENOENT;
  }
  if (!id) {
    size_t l = strlen(s->model_dir);
    while (l > 1 && s->model_dir[l - 1] == '/')
      l--;
    const char *b = s->model_dir + l;
    while (b > s->model_dir && b[-1] != '/')
      b--;
    snprintf(s->model_id, sizeof s->model_id, "%.*s", (int)(s->model_dir + l - b), b);
  } else {
    snprintf(s->model_id, sizeof s->model_id, "%s", id);
  }
  char e2[512];
  if ((rc = exo_model_config_load(s->model_dir, &s->mcfg, e2, sizeof e2))) {
    exo_errf(err, errlen, "api actor: model %s: %s", s->model_dir, e2);
    return rc;
  }
  if ((rc = exo_model_tokenizer_load(s->model_dir, &s->tok, e2, sizeof e2))) {
    exo_errf(err, errlen, "api actor: %s", e2);
    return rc;
  }
  if (!strcmp(tmpl, "auto")) {
    if (exo_api_template_load(s->model_dir, &s->tmpl, &s->bos, s->tmpl_err,
                              sizeof s->tmpl_err) == -ENOMEM)
      return -ENOMEM;
  } else if (exo_api_template_parse(tmpl, &s->tmpl)) {
    const struct exo_config_option *o = exo_config_option(opts, "template");
    exo_errf(err, errlen, "%s:%d:%d: actors.options.template: expected auto, chatml or llama3, "
             "got \"%s\"", cfg ? cfg->path : "config", o ? o->value_pos.line : 0,
             o ? o->value_pos.col : 0, tmpl);
    return -EINVAL;
  }
  return 0;
}

static int init_inner(struct exo_actor *self, void *state, const struct exo_config *cfg,
                      const struct exo_actor_config *opts, char *err, size_t errlen)
{
  struct api_state *s = state;
  static const char *const allowed[] = {"listen", "port", "model", "model_id", "template",
                                        "api_keys", "api_key_file", "cors_origin",
                                        "max_connections", "max_body_bytes", "max_header_bytes",
                                        "max_prompt_tokens", "max_tokens", "keepalive_ms",
                                        "idle_timeout_s", NULL};
  const char *host = NULL, *cors = NULL;
  uint64_t port, v[6];
  int rc;
  s->self = self;
  s->node = exo_actor_node(self);
  s->started = (int64_t)time(NULL);
  if (sodium_init() < 0) {
    exo_errf(err, errlen, "api actor: libsodium failed to initialize");
    return -EIO;
  }
  if (opts && (rc = exo_config_check_options(cfg, opts, allowed, err, errlen)))
    return rc;
  if ((rc = exo_config_option_str(cfg, opts, "listen", "127.0.0.1", &host, err, errlen)) ||
      (rc = exo_config_option_u64(cfg, opts, "port", 8000, 0, 65535, &port, err, errlen)) ||
      (rc = exo_config_option_str(cfg, opts, "cors_origin", NULL, &cors, err, errlen)) ||
      (rc = exo_config_option_u64(cfg, opts, "max_connections", 256, 1, 4096, &v[0], err,
                                  errlen)) ||
      (rc = exo_config_option_u64(cfg, opts, "max_body_bytes", 1u << 20, 1024, 64u << 20, &v[1],
                                  err, errlen)) ||
      (rc = exo_config_option_u64(cfg, opts, "max_header_bytes", 16384, 1024, 1u << 20, &v[2],
                                  err, errlen)) ||
      (rc = exo_config_option_u64(cfg, opts, "keepalive_ms", 10000, 10, 600000, &v[3], err,
                                  errlen)) ||
      (rc = exo_config_option_u64(cfg, opts, "idle_timeout_s", 60, 1, 3600, &v[4], err,
                                  errlen)))
    return rc;
  snprintf(s->host, sizeof s->host, "%s", host);
  s->port = (uint16_t)port;
  snprintf(s->cors, sizeof s->cors, "%s", cors ? cors : "");
  s->max_conns = (uint32_t)v[0];
  /* every connection is a descriptor: raise the soft limit to the hard one when the
   * configured connections (plus the node's own sockets and files) would not fit */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
      nofile.rlim_cur < (rlim_t)s->max_conns + 128 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  s->max_body = (uint32_t)v[1];
  s->max_headers = (uint32_t)v[2];
  s->keepalive_ms = (uint32_t)v[3];
  s->idle_timeout_s = (uint32_t)v[4];
  if ((rc = load_keys(s, cfg, opts, err, errlen)) || (rc = load_model(s, cfg, opts, err, errlen)))
    return rc;
  uint32_t ctx = s->mcfg.max_position_embeddings > 1 ? (uint32_t)s->mcfg.max_position_embeddings
                                                     : 2048;
  if ((rc = exo_config_option_u64(cfg, opts, "max_prompt_tokens", ctx - 1, 1, ctx - 1, &v[0],
                                  err, errlen)) ||
      (rc = exo_config_option_u64(cfg, opts, "max_tokens", ctx, 1, ctx, &v[1], err, errlen)))
    return rc;
  s->max_prompt = (uint32_t)v[0];
  s->lim = (struct exo_api_limits){.max_tokens = (uint32_t)v[1],
                                   .context = ctx,
                                   .vocab_size = exo_tokenizer_vocab_size(s->tok)};
  if (!(s->m = exo_metrics_new()) || register_metrics(s) ||
      !(s->slots = calloc(s->max_conns, sizeof *s->slots)) ||
      !(s->conns = calloc(s->max_conns, sizeof *s->conns))) {
    exo_errf(err, errlen, "api actor: out of memory");
    return -ENOMEM;
  }
  s->cluster = exo_cluster_of(s->node);
  if (!(s->http = evhttp_new(exo_loop_base(exo_actor_loop(self))))) {
    exo_errf(err, errlen, "api actor: evhttp_new failed");
    return -ENOMEM;
  }
  /* evhttp answers bodies over twice our limit itself (413, its HTML); between one and
   * two times the limit we answer 413 with OpenAI's error JSON */
  evhttp_set_max_body_size(s->http, (ev_ssize_t)s->max_body * 2);
  evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->max_headers);
  evhttp_set_timeout(s->http, (int)s->idle_timeout_s);
  evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                          EVHTTP_REQ_OPTIONS);
  evhttp_set_gencb(s->http, on_request, s);
  if (!evhttp_bind_socket_with_handle(s->http, s->host, s->port)) {
    exo_errf(err, errlen, "api actor: cannot listen on %s:%u: %s", s->host, s->port,
             strerror(errno));
    return errno ? -errno : -EADDRINUSE;
  }
  if ((rc = exo_actor_timer_start(self, API_TIMER_KEEPALIVE, s->keepalive_ms, true))) {
    exo_errf(err, errlen, "api actor: timer: %s", strerror(-rc));
    return rc;
  }
  return 0;
}

static int api_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  struct api_state *s = state;
  if (msg->env.type == EXO_REQ_MSG_EVENT)
    on_event(s, msg);
  return 0;
}

static int api_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)self;
  struct api_state *s = state;
  if (id != API_TIMER_KEEPALIVE)
    return 0;
  uint64_t t = now_ns(), gap = (uint64_t)s->keepalive_ms * 1000000ull;
  for (uint32_t i = 0; i < s->max_conns; i++) {
    struct api_req *r = s->slots[i];
    if (!r || !r->stream || !r->started || r->http_done || t - r->last_write_ns < gap)
      continue;
    struct evbuffer *b = evbuffer_new();
    if (!b)
      continue;
    evbuffer_add(b, ": keep-alive\n\n", 14);
    evhttp_send_reply_chunk(r->req, b);
    evbuffer_free(b);
    r->last_write_ns = t;
  }
  return 0;
}

/* Releases everything; also the cleanup of a failed init (fields may be NULL). */
static void api_stop(struct exo_actor *self, void *state)
{
  (void)self;
  struct api_state *s = state;
  for (uint32_t i = 0; s->conns && i < s->max_conns; i++)
    if (s->conns[i].evcon)
      evhttp_connection_set_closecb(s->conns[i].evcon, NULL, NULL);
  for (uint32_t i = 0; s->slots && i < s->max_conns; i++) {
    struct api_req *r = s->slots[i];
    if (!r)
      continue;
    send_cancel(r, 0);
    if (r->req && !evhttp_request_get_connection(r->req))
      evhttp_request_free(r->req);
    r->req = NULL; /* attached ones go with evhttp_free */
    req_free(r);
  }
  if (s->http)
    evhttp_free(s->http);
  free(s->slots);
  free(s->conns);
  exo_metrics_free(s->m);
  exo_tokenizer_free(s->tok);
  free(s->bos);
  memset(s, 0, sizeof *s);
}

/* The runtime owes no stop after a failed init: release what init_inner took here. */
static int api_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                    const struct exo_actor_config *opts, char *err, size_t errlen)
{
  int rc = init_inner(self, state, cfg, opts, err, errlen);
  if (rc)
    api_stop(self, state);
  return rc;
}

const struct exo_actor_kind exo_api_kind = {
    .name = "api",
    .state_size = sizeof(struct api_state),
    .init = api_init,
    .message = api_message,
    .timer = api_timer,
    .stop = api_stop,
};
