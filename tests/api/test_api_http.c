/* tests/api/test_api_http.c: the api actor over real HTTP (a blocking socket client on
 * the test thread) against a node whose "origin" is a scripted fake: it answers SUBMIT
 * with EVENTs chosen by the request's seed (fast script ending in EOS, slow stream, error,
 * length, logprobs) and counts CANCELs, so disconnects, stop strings, streaming format,
 * auth, limits and the connection cap are checked without a model running. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "actors/api.h"
#include "actors/gen_request.h"
#include "actors/local_cluster.h"
#include "runtime/node.h"
#include "tensor/tokenizer.h"
#include "tests/test.h"

#define KEY "test-key-123456"
#define EOS 4093

/* ---- the fake origin ---- */
static int32_t script[64];
static size_t n_script;
static atomic_int cancels, submits;
static atomic_uint last_flags, last_max_tokens;

struct fake_req {
  bool used;
  uint64_t id;
  struct exo_addr client;
  uint64_t seed;
  uint32_t max, sent, ticks;
  bool cancel;
};
struct fake_state {
  struct fake_req r[16];
};

static void fake_send(struct exo_actor *self, struct fake_req *q, int32_t tok, uint32_t flags,
                      enum exo_req_finish fin, const char *msg)
{
  struct exo_req_event ev;
  memset(&ev, 0, sizeof ev);
  ev.token = tok;
  ev.flags = flags;
  ev.index = q->sent;
  ev.finish = fin;
  ev.prompt_tokens = 0;
  ev.step_ns = 1000000;
  if (q->seed == 4) {
    ev.logprob = -0.25f;
    ev.n_top = 2;
    ev.top[0] = (struct exo_req_top){tok, -0.25f};
    ev.top[1] = (struct exo_req_top){script[0], -2.0f};
  }
  if (msg)
    snprintf(ev.msg, sizeof ev.msg, "%s", msg);
  void *buf = NULL;
  size_t len = 0;
  if (exo_req_event_encode(&ev, &buf, &len))
    return;
  struct exo_envelope env = {0};
  env.type = EXO_REQ_MSG_EVENT;
  env.dst = q->client;
  env.request_id = q->id;
  exo_actor_send_buf(self, &env, &buf, len);
}

/* One step of request q: returns true when it has finished. */
static bool fake_step(struct exo_actor *self, struct fake_req *q)
{
  if (q->cancel) {
    fake_send(self, q, 0, EXO_REQ_EV_FINAL, EXO_REQ_FINISH_CANCELLED, NULL);
    return true;
  }
  switch (q->seed) {
  case 3: /* error */
    fake_send(self, q, -EIO, EXO_REQ_EV_FINAL, EXO_REQ_FINISH_ERROR, "boom: stage 2 lost");
    return true;
  case 2: /* slow: a token every 20 ticks (~100 ms), then length */
    if (++q->ticks % 20)
      return false;
    /* fallthrough */
  case 5: /* fast length */
    fake_send(self, q, script[q->sent % n_script],
              EXO_REQ_EV_TOKEN | (q->sent + 1 == q->max ? EXO_REQ_EV_FINAL : 0u),
              q->sent + 1 == q->max ? EXO_REQ_FINISH_LENGTH : EXO_REQ_FINISH_NONE, NULL);
    return ++q->sent == q->max;
  default: /* the script, then EOS */
    if (q->sent < n_script) {
      fake_send(self, q, script[q->sent], EXO_REQ_EV_TOKEN, EXO_REQ_FINISH_NONE, NULL);
      q->sent++;
      return false;
    }
    fake_send(self, q, EOS, EXO_REQ_EV_TOKEN | EXO_REQ_EV_FINAL, EXO_REQ_FINISH_STOP, NULL);
    return true;
  }
}

static int fake_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  struct fake_state *s = state;
  if (msg->env.type == EXO_REQ_MSG_SUBMIT) {
    struct exo_req_submit sub;
    int32_t *ids = NULL;
    char err[128];
    if (exo_req_submit_decode(msg->payload, msg->env.payload_len, &sub, &ids, err, sizeof err))
      return 0;
    free(ids);
    atomic_fetch_add(&submits, 1);
    atomic_store(&last_flags, sub.flags);
    atomic_store(&last_max_tokens, sub.max_tokens);
    for (size_t i = 0; i < 16; i++)
      if (!s->r[i].used) {
        s->r[i] = (struct fake_req){.used = true, .id = msg->env.request_id,
                                    .client = msg->env.src, .seed = sub.sp.seed,
                                    .max = sub.max_tokens};
        break;
      }
  } else if (msg->env.type == EXO_REQ_MSG_CANCEL) {
    atomic_fetch_add(&cancels, 1);
    for (size_t i = 0; i < 16; i++)
      if (s->r[i].used && s->r[i].id == msg->env.request_id)
        s->r[i].cancel = true;
  }
  return 0;
}

static int fake_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)id;
  struct fake_state *s = state;
  for (size_t i = 0; i < 16; i++)
    if (s->r[i].used && fake_step(self, &s->r[i]))
      s->r[i].used = false;
  return 0;
}

static int fake_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                     const struct exo_actor_config *opts, char *err, size_t errlen)
{
  (void)state, (void)cfg, (void)opts, (void)err, (void)errlen;
  return exo_actor_timer_start(self, 1, 5, true);
}

static const struct exo_actor_kind fake_origin_kind = {
    .name = "origin",
    .state_size = sizeof(struct fake_state),
    .init = fake_init,
    .message = fake_message,
    .timer = fake_timer,
};

/* ---- a blocking HTTP client ---- */
static int port_main, port_plain;

static int dial(int port)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
    close(fd);
    return -1;
  }
  return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

static void send_req(int fd, const char *method, const char *path, const char *extra,
                     const char *body, bool keep)
{
  char head[8192];
  size_t blen = body ? strlen(body) : 0;
  snprintf(head, sizeof head,
           "%s %s HTTP/1.1\r\nHost: x\r\n%s%sContent-Type: application/json\r\n"
           "Content-Length: %zu\r\n\r\n",
           method, path, keep ? "" : "Connection: close\r\n", extra ? extra : "", blen);
  send_all(fd, head, strlen(head));
  if (body)
    send_all(fd, body, blen);
}

struct resp {
  int status;
  char *head; /* headers text */
  char *body; /* de-chunked */
  size_t len;
};

static void resp_free(struct resp *r)
{
  free(r->head);
  free(r->body);
  memset(r, 0, sizeof *r);
}

/* Reads until EOF (Connection: close) and de-chunks. */
static void read_resp(int fd, struct resp *r)
{
  size_t cap = 1 << 16, n = 0;
  char *raw = malloc(cap);
  for (;;) {
    if (n + 4096 > cap)
      raw = realloc(raw, cap *= 2);
    ssize_t got = recv(fd, raw + n, cap - n - 1, 0);
    if (got <= 0)
      break;
    n += (size_t)got;
  }
  raw[n] = '\0';
  memset(r, 0, sizeof *r);
  char *sep = strstr(raw, "\r\n\r\n");
  if (sscanf(raw, "HTTP/1.%*d %d", &r->status) != 1 || !sep) {
    free(raw);
    return;
  }
  r->head = strndup(raw, (size_t)(sep - raw) + 2);
  char *b = sep + 4;
  if (strcasestr(r->head, "Transfer-Encoding: chunked")) {
    r->body = malloc(n + 1);
    r->len = 0;
    for (;;) {
      unsigned long sz = strtoul(b, &b, 16);
      b = strstr(b, "\r\n");
      if (!b || !sz)
        break;
      b += 2;
      memcpy(r->body + r->len, b, sz);
      r->len += sz;
      b += sz + 2;
    }
    r->body[r->len] = '\0';
  } else {
    r->body = strdup(b);
    r->len = strlen(b);
  }
  free(raw);
}

static struct resp http(int port, const char *method, const char *path, const char *extra,
                        const char *body)
{
  struct resp r = {0};
  int fd = dial(port);
  if (fd < 0)
    return r;
  send_req(fd, method, path, extra, body, false);
  read_resp(fd, &r);
  close(fd);
  return r;
}

#define AUTH "Authorization: Bearer " KEY "\r\n"

static json_t *body_json(const struct resp *r)
{
  return r->body ? json_loads(r->body, 0, NULL) : NULL;
}

static const char *err_param(json_t *j)
{
  const char *p = json_string_value(json_object_get(json_object_get(j, "error"), "param"));
  return p ? p : "";
}

static struct exo_tokenizer *tok;
static char script_text[512];

/* ---- cases ---- */

static void test_health_models(void)
{
  struct resp r = http(port_main, "GET", "/healthz", NULL, NULL);
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_CONTAINS(r.body, "\"status\":\"ok\"");
  resp_free(&r);
  r = http(port_main, "GET", "/v1/models", AUTH, NULL);
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_CONTAINS(r.body, "\"id\":\"demo\"");
  resp_free(&r);
  r = http(port_main, "GET", "/nope", AUTH, NULL);
  CHECK_INT_EQ(r.status, 404);
  resp_free(&r);
  r = http(port_main, "GET", "/v1/chat/completions", AUTH, NULL);
  CHECK_INT_EQ(r.status, 405);
  resp_free(&r);
}

static void test_auth(void)
{
  const char *body = "{\"model\":\"demo\",\"prompt\":\"x\"}";
  struct resp r = http(port_main, "POST", "/v1/completions", NULL, body);
  CHECK_INT_EQ(r.status, 401);
  CHECK_STR_CONTAINS(r.body, "invalid_api_key");
  resp_free(&r);
  r = http(port_main, "POST", "/v1/completions", "Authorization: Bearer wrong-key-0000\r\n", body);
  CHECK_INT_EQ(r.status, 401);
  resp_free(&r);
  r = http(port_main, "GET", "/metrics", NULL, NULL);
  CHECK_INT_EQ(r.status, 401);
  resp_free(&r);
  r = http(port_main, "GET", "/", NULL, NULL); /* the page is open; its calls carry the key */
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_CONTAINS(r.body, "<svg id=\"ring\"");
  resp_free(&r);
}

static void test_chat_nonstream(void)
{
  int before = atomic_load(&submits);
  struct resp r = http(port_main, "POST", "/v1/chat/completions", AUTH,
                       "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                       "\"seed\":1,\"max_tokens\":40}");
  CHECK_INT_EQ(r.status, 200);
  json_t *j = body_json(&r);
  json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
  const char *content =
      json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
  CHECK(content && !strcmp(content, script_text));
  CHECK(!strcmp(json_string_value(json_object_get(c0, "finish_reason")) ?: "", "stop"));
  /* usage: the ChatML rendering's token count, and every token event incl. EOS */
  struct exo_api_message m = {EXO_API_ROLE_USER, (char *)"Hi", 2};
  char *text;
  size_t len, n_ids;
  int32_t *ids;
  exo_api_template_render(EXO_API_TEMPLATE_CHATML, NULL, &m, 1, &text, &len);
  exo_tokenizer_encode(tok, text, len, 0, &ids, &n_ids);
  json_t *u = json_object_get(j, "usage");
  CHECK_INT_EQ(json_integer_value(json_object_get(u, "prompt_tokens")), n_ids);
  CHECK_INT_EQ(json_integer_value(json_object_get(u, "completion_tokens")), n_script + 1);
  CHECK_INT_EQ(json_integer_value(json_object_get(u, "total_tokens")), n_ids + n_script + 1);
  CHECK_INT_EQ(atomic_load(&submits), before + 1);
  CHECK_INT_EQ(atomic_load(&last_max_tokens), 40);
  free(text);
  free(ids);
  json_decref(j);
  resp_free(&r);
}

/* Splits an SSE body into data payloads; checks the framing. */
static int sse_events(const char *body, char ev[][4096], int max, int *keepalives)
{
  int n = 0;
  *keepalives = 0;
  const char *p = body;
  while (p && *p) {
    const char *end = strstr(p, "\n\n");
    if (!end)
      return -1; /* every event ends with a blank line */
    if (!strncmp(p, ": keep-alive", 12))
      (*keepalives)++;
    else if (!strncmp(p, "data: ", 6) && n < max) {
      snprintf(ev[n], 4096, "%.*s", (int)(end - p - 6), p + 6);
      n++;
    } else
      return -1;
    p = end + 2;
  }
  return n;
}

static char evs[128][4096];

static void test_chat_stream(void)
{
  struct resp r = http(port_main, "POST", "/v1/chat/completions", AUTH,
                       "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                       "\"seed\":1,\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_CONTAINS(r.head, "text/event-stream");
  int ka, n = sse_events(r.body ? r.body : "", evs, 128, &ka);
  CHECK(n >= 4);
  if (n < 4) {
    resp_free(&r);
    return;
  }
  CHECK(!strcmp(evs[n - 1], "[DONE]"));
  char text[1024] = "";
  int finishes = 0, roles = 0;
  json_t *usage = NULL;
  for (int i = 0; i < n - 1; i++) {
    json_t *j = json_loads(evs[i], 0, NULL);
    CHECK(j != NULL);
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")) ?: "", "chat.completion.chunk"));
    CHECK(json_object_get(j, "usage") != NULL); /* null or the usage */
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    if (!c0) {
      CHECK(i == n - 2); /* the usage chunk is last */
      usage = json_incref(json_object_get(j, "usage"));
    } else {
      json_t *d = json_object_get(c0, "delta");
      if (json_object_get(d, "role"))
        roles++;
      if (json_is_string(json_object_get(d, "content")))
        strncat(text, json_string_value(json_object_get(d, "content")),
                sizeof text - strlen(text) - 1);
      if (json_is_string(json_object_get(c0, "finish_reason"))) {
        finishes++;
        CHECK(!strcmp(json_string_value(json_object_get(c0, "finish_reason")), "stop"));
      }
    }
    json_decref(j);
  }
  CHECK_INT_EQ(roles, 1);
  CHECK_INT_EQ(finishes, 1);
  CHECK(!strcmp(text, script_text));
  CHECK(usage && json_integer_value(json_object_get(usage, "completion_tokens")) ==
                     (json_int_t)n_script + 1);
  json_decref(usage);
  resp_free(&r);
}

static void test_stop_across_tokens(void)
{
  /* a stop string made of the last byte of token 2's text and the first of token 3's */
  char *a, *b;
  size_t la, lb;
  exo_tokenizer_decode(tok, &script[2], 1, 1, &a, &la);
  exo_tokenizer_decode(tok, &script[3], 1, 1, &b, &lb);
  char stop[8];
  snprintf(stop, sizeof stop, "%c%c", a[la - 1], b[0]);
  const char *at = strstr(script_text, stop);
  CHECK(at != NULL);
  char expect[512];
  snprintf(expect, sizeof expect, "%.*s", (int)(at - script_text), script_text);
  free(a);
  free(b);
  int c0 = atomic_load(&cancels);
  char body[512];
  snprintf(body, sizeof body,
           "{\"model\":\"demo\",\"prompt\":\"x\",\"seed\":1,\"stop\":[\"zzz\",\"%s\"]}", stop);
  struct resp r = http(port_main, "POST", "/v1/completions", AUTH, body);
  CHECK_INT_EQ(r.status, 200);
  json_t *j = body_json(&r);
  json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
  const char *t = json_string_value(json_object_get(ch, "text"));
  CHECK(t && !strcmp(t, expect));
  if (t && strcmp(t, expect))
    fprintf(stderr, "  got '%s' want '%s' (stop '%s')\n", t, expect, stop);
  CHECK(!strcmp(json_string_value(json_object_get(ch, "finish_reason")) ?: "", "stop"));
  CHECK(!strcmp(json_string_value(json_object_get(j, "object")) ?: "", "text_completion"));
  json_decref(j);
  resp_free(&r);
  /* the CANCEL travels on the api actor's loop after the reply: give it its turn (as the
   * disconnect case below does) */
  for (int i = 0; i < 200 && atomic_load(&cancels) == c0; i++)
    usleep(10000);
  CHECK(atomic_load(&cancels) == c0 + 1); /* the cluster was told to stop */
  /* streamed: the stop string never appears, and the stream ends properly */
  snprintf(body, sizeof body,
           "{\"model\":\"demo\",\"prompt\":\"x\",\"seed\":1,\"stream\":true,\"stop\":\"%s\"}", stop);
  r = http(port_main, "POST", "/v1/completions", AUTH, body);
  int ka, n = sse_events(r.body ? r.body : "", evs, 128, &ka);
  char text[1024] = "";
  for (int i = 0; i + 1 < n; i++) {
    json_t *jj = json_loads(evs[i], 0, NULL);
    const char *x =
        json_string_value(json_object_get(json_array_get(json_object_get(jj, "choices"), 0), "text"));
    if (x)
      strncat(text, x, sizeof text - strlen(text) - 1);
    json_decref(jj);
  }
  CHECK(n > 1 && !strcmp(evs[n - 1], "[DONE]"));
  CHECK(!strcmp(text, expect));
  resp_free(&r);
}

static int metric(const char *name)
{
  struct resp r = http(port_main, "GET", "/metrics", AUTH, NULL);
  int v = -1;
  char pat[128];
  snprintf(pat, sizeof pat, "\n%s ", name);
  const char *p = r.body ? strstr(r.body, pat) : NULL;
  if (p)
    v = atoi(p + strlen(pat));
  resp_free(&r);
  return v;
}

static void test_disconnect_cancels(void)
{
  int c0 = atomic_load(&cancels), d0 = metric("exo_api_client_disconnects_total");
  int fd = dial(port_main);
  send_req(fd, "POST", "/v1/chat/completions", AUTH,
           "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
           "\"seed\":2,\"stream\":true,\"max_tokens\":100}",
           false);
  /* wait for the first content chunk (after the role chunk), then hang up */
  char buf[8192];
  size_t n = 0;
  while (n < sizeof buf - 1) {
    ssize_t got = recv(fd, buf + n, sizeof buf - 1 - n, 0);
    if (got <= 0)
      break;
    n += (size_t)got;
    buf[n] = '\0';
    if (strstr(buf, "\"content\":\"") && strstr(strstr(buf, "\"content\":\"") + 1, "\"content\""))
      break;
  }
  CHECK_STR_CONTAINS(buf, "200 OK");
  close(fd);
  for (int i = 0; i < 200 && atomic_load(&cancels) == c0; i++)
    usleep(10000);
  CHECK_INT_EQ(atomic_load(&cancels), c0 + 1);
  usleep(50000); /* the FINAL reaches the api actor */
  CHECK_INT_EQ(metric("exo_api_client_disconnects_total"), d0 + 1);
  CHECK_INT_EQ(metric("exo_api_active_requests"), 0);
}

static void test_keepalive_and_length(void)
{
  /* slow tokens (~100 ms apart) with keepalive_ms 40: comments between them */
  struct resp r = http(port_main, "POST", "/v1/completions", AUTH,
                       "{\"model\":\"demo\",\"prompt\":\"x\",\"seed\":2,\"stream\":true,"
                       "\"max_tokens\":3}");
  int ka, n = sse_events(r.body ? r.body : "", evs, 128, &ka);
  CHECK(n >= 2 && !strcmp(evs[n - 1], "[DONE]"));
  CHECK(ka >= 1);
  CHECK(n >= 2 && strstr(evs[n - 2], "\"finish_reason\":\"length\""));
  resp_free(&r);
  r = http(port_main, "POST", "/v1/completions", AUTH,
           "{\"model\":\"demo\",\"prompt\":\"x\",\"seed\":5,\"max_tokens\":4}");
  json_t *j = body_json(&r);
  json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
  CHECK(!strcmp(json_string_value(json_object_get(ch, "finish_reason")) ?: "", "length"));
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")),
               4);
  json_decref(j);
  resp_free(&r);
}

static void test_origin_error(void)
{
  struct resp r = http(port_main, "POST", "/v1/completions", AUTH,
                       "{\"model\":\"demo\",\"prompt\":\"x\",\"seed\":3}");
  CHECK_INT_EQ(r.status, 503);
  CHECK_STR_CONTAINS(r.body, "boom: stage 2 lost");
  resp_free(&r);
  r = http(port_main, "POST", "/v1/completions", AUTH,
           "{\"model\":\"demo\",\"prompt\":\"x\",\"seed\":3,\"stream\":true}");
  CHECK_INT_EQ(r.status, 200); /* headers went out before the error */
  CHECK_STR_CONTAINS(r.body, "data: {\"error\"");
  resp_free(&r);
}

static void test_logprobs(void)
{
  struct resp r = http(port_main, "POST", "/v1/chat/completions", AUTH,
                       "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                       "\"seed\":4,\"logprobs\":true,\"top_logprobs\":2}");
  CHECK_INT_EQ(r.status, 200);
  CHECK(atomic_load(&last_flags) & EXO_REQ_F_LOGPROBS);
  json_t *j = body_json(&r);
  json_t *lp = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs");
  json_t *content = json_object_get(lp, "content");
  CHECK_INT_EQ(json_array_size(content), n_script + 1);
  json_t *e0 = json_array_get(content, 0);
  CHECK_NEAR(json_real_value(json_object_get(e0, "logprob")), -0.25, 1e-6);
  CHECK_INT_EQ(json_array_size(json_object_get(e0, "top_logprobs")), 2);
  json_decref(j);
  resp_free(&r);
}

static void test_bad_requests_keep_serving(void)
{
  static const struct {
    const char *path, *body, *param;
    int status;
  } bad[] = {
      {"/v1/chat/completions", "{not json", "", 400},
      {"/v1/chat/completions", "{\"model\":\"demo\",\"messages\":[]}", "messages", 400},
      {"/v1/chat/completions",
       "{\"model\":\"demo\",\"messages\":[{\"role\":\"alien\",\"content\":\"x\"}]}",
       "messages[0].role", 400},
      {"/v1/completions", "{\"model\":\"demo\",\"prompt\":\"x\",\"max_tokens\":-5}", "max_tokens",
       400},
      {"/v1/completions", "{\"model\":\"demo\",\"prompt\":\"x\",\"temperature\":9}", "temperature",
       400},
      {"/v1/completions", "{\"model\":\"demo\",\"prompt\":\"x\",\"max_tokens\":512}", "max_tokens",
       400},
      {"/v1/completions", "{\"model\":\"other\",\"prompt\":\"x\"}", "model", 404},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct resp r = http(port_main, "POST", bad[i].path, AUTH, bad[i].body);
    CHECK_INT_EQ(r.status, bad[i].status);
    json_t *j = body_json(&r);
    CHECK(j && !strcmp(err_param(j), bad[i].param));
    json_decref(j);
    resp_free(&r);
  }
  /* a prompt over the context window (512): 600 ids */
  char *body = malloc(8192);
  strcpy(body, "{\"model\":\"demo\",\"prompt\":[1");
  for (int i = 1; i < 600; i++)
    strcat(body, ",1");
  strcat(body, "]}");
  struct resp r = http(port_main, "POST", "/v1/completions", AUTH, body);
  CHECK_INT_EQ(r.status, 400);
  CHECK_STR_CONTAINS(r.body, "context_length_exceeded");
  resp_free(&r);
  free(body);
  r = http(port_main, "GET", "/healthz", NULL, NULL);
  CHECK_INT_EQ(r.status, 200);
  resp_free(&r);
}

static void test_size_limits(void)
{
  /* max_body_bytes 4096: 5000 bytes get our JSON 413; 9000 (over 2x) evhttp's 413 */
  char *big = malloc(20000);
  memset(big, ' ', 19999);
  big[19999] = '\0';
  big[0] = '{';
  big[4998] = '}';
  big[4999] = '\0';
  struct resp r = http(port_main, "POST", "/v1/completions", AUTH, big);
  CHECK_INT_EQ(r.status, 413);
  CHECK_STR_CONTAINS(r.body, "request_too_large");
  resp_free(&r);
  memset(big, ' ', 19999);
  big[0] = '{';
  big[8998] = '}';
  big[8999] = '\0';
  r = http(port_main, "POST", "/v1/completions", AUTH, big);
  CHECK_INT_EQ(r.status, 413);
  resp_free(&r);
  /* max_header_bytes 2048 */
  char hdr[4200];
  memset(hdr, 'a', sizeof hdr);
  memcpy(hdr, "X-Big: ", 7);
  strcpy(hdr + 4000, "\r\n" AUTH);
  r = http(port_main, "GET", "/v1/models", hdr, NULL);
  CHECK_INT_EQ(r.status, 400); /* evhttp's own answer (docs/API.md) */
  resp_free(&r);
  free(big);
  r = http(port_main, "GET", "/healthz", NULL, NULL);
  CHECK_INT_EQ(r.status, 200);
  resp_free(&r);
}

static void test_connection_limit(void)
{
  /* max_connections 4: four keep-alive connections with a request each hold the slots */
  int fds[4];
  for (int i = 0; i < 4; i++) {
    fds[i] = dial(port_main);
    send_req(fds[i], "GET", "/healthz", NULL, NULL, true);
    char buf[2048];
    ssize_t got = recv(fds[i], buf, sizeof buf - 1, 0);
    buf[got > 0 ? got : 0] = '\0';
    CHECK_STR_CONTAINS(buf, "200 OK");
  }
  struct resp r = http(port_main, "GET", "/healthz", NULL, NULL);
  CHECK_INT_EQ(r.status, 503);
  CHECK_STR_CONTAINS(r.body, "too_many_connections");
  resp_free(&r);
  for (int i = 0; i < 4; i++)
    close(fds[i]);
  usleep(100000);
  r = http(port_main, "GET", "/healthz", NULL, NULL);
  CHECK_INT_EQ(r.status, 200);
  resp_free(&r);
}

static void test_cors(void)
{
  struct resp r = http(port_main, "OPTIONS", "/v1/chat/completions", NULL, NULL);
  CHECK_INT_EQ(r.status, 204);
  CHECK_STR_CONTAINS(r.head, "Access-Control-Allow-Origin: http://page.test");
  resp_free(&r);
  r = http(port_main, "GET", "/healthz", NULL, NULL);
  CHECK_STR_CONTAINS(r.head, "Access-Control-Allow-Origin: http://page.test");
  resp_free(&r);
}

static void test_defaults(void)
{
  /* the second node: no keys, no CORS, default limits */
  struct resp r = http(port_plain, "OPTIONS", "/v1/chat/completions", NULL, NULL);
  CHECK_INT_EQ(r.status, 405);
  CHECK(r.head && !strcasestr(r.head, "Access-Control-Allow-Origin"));
  resp_free(&r);
  r = http(port_plain, "GET", "/v1/models", NULL, NULL);
  CHECK_INT_EQ(r.status, 200);
  resp_free(&r);
  /* no origin actor on that node: a generation is refused, not hung */
  r = http(port_plain, "POST", "/v1/completions", NULL, "{\"model\":\"demo\",\"prompt\":\"x\"}");
  CHECK_INT_EQ(r.status, 503);
  CHECK_STR_CONTAINS(r.body, "no origin actor");
  resp_free(&r);
  /* the cluster endpoint answers even before any map */
  r = http(port_plain, "GET", "/v1/cluster", NULL, NULL);
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_CONTAINS(r.body, "\"nodes\"");
  resp_free(&r);
}

static struct exo_node *start_node(const char *yaml, struct exo_config **cfg)
{
  static const struct exo_actor_kind *const kinds[] = {&exo_api_kind, &fake_origin_kind, NULL};
  char err[512];
  struct exo_node *node = NULL;
  if (exo_config_parse(yaml, strlen(yaml), "test.yaml", NULL, cfg, err, sizeof err) ||
      exo_node_new(*cfg, kinds, &node, err, sizeof err) ||
      exo_node_start(node, err, sizeof err)) {
    fprintf(stderr, "node: %s\n", err);
    exo_node_free(node);
    return NULL;
  }
  return node;
}

int main(void)
{
  char path[4200], yaml[2048];
  const char *root = getenv("EXO_SOURCE_ROOT") ? getenv("EXO_SOURCE_ROOT") : ".";
  snprintf(path, sizeof path, "%s/models/demo/tokenizer.json", root);
  char err[256];
  if (exo_tokenizer_load(path, &tok, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  const char *say = "Hello world, this is a small test.";
  int32_t *ids;
  size_t n;
  exo_tokenizer_encode(tok, say, strlen(say), 0, &ids, &n);
  n_script = n < 64 ? n : 64;
  memcpy(script, ids, n_script * sizeof *ids);
  free(ids);
  char *t;
  size_t tl;
  exo_tokenizer_decode(tok, script, n_script, 1, &t, &tl);
  snprintf(script_text, sizeof script_text, "%s", t);
  free(t);

  exo_local_cluster_pick_port(&port_main);
  exo_local_cluster_pick_port(&port_plain);
  snprintf(yaml, sizeof yaml,
           "cluster: t\nnode: {id: 1}\nloops: 2\nmodel: %s/models/demo\nactors:\n"
           "  - {name: api, kind: api, loop: 0, options: {port: %d, api_keys: \"%s\","
           " cors_origin: \"http://page.test\", max_connections: 4, max_body_bytes: 4096,"
           " max_header_bytes: 2048, keepalive_ms: 40}}\n"
           "  - {name: origin, kind: origin, loop: 1}\n",
           root, port_main, KEY);
  struct exo_config *cfg1 = NULL, *cfg2 = NULL;
  struct exo_node *n1 = start_node(yaml, &cfg1);
  snprintf(yaml, sizeof yaml,
           "cluster: t\nnode: {id: 2}\nmodel: %s/models/demo\nactors:\n"
           "  - {name: api, kind: api, options: {port: %d}}\n",
           root, port_plain);
  struct exo_node *n2 = start_node(yaml, &cfg2);
  if (!n1 || !n2)
    return 1;
  EXO_RUN(test_health_models);
  EXO_RUN(test_auth);
  EXO_RUN(test_chat_nonstream);
  EXO_RUN(test_chat_stream);
  EXO_RUN(test_stop_across_tokens);
  EXO_RUN(test_disconnect_cancels);
  EXO_RUN(test_keepalive_and_length);
  EXO_RUN(test_origin_error);
  EXO_RUN(test_logprobs);
  EXO_RUN(test_bad_requests_keep_serving);
  EXO_RUN(test_size_limits);
  EXO_RUN(test_connection_limit);
  EXO_RUN(test_cors);
  EXO_RUN(test_defaults);
  exo_node_free(n1);
  exo_node_free(n2);
  exo_config_free(cfg1);
  exo_config_free(cfg2);
  exo_tokenizer_free(tok);
  return exo_test_result();
}
