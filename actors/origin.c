/* actors/origin.c: actor kind "origin" and the blocking client API around it.
 * Owns the request's history (prompt + tokens in position order) and the map epoch it
 * publishes; must not touch a job after the caller gave up on it (job->active guards).
 *
 * Protocol (shard_worker.h):
 *   SUBMIT (local, from the calling thread: a pointer to the exo_origin)
 *     map job -> MAP(epoch+1) to every target; READY from each -> done
 *     gen job -> PROMPT(history) to the first stage
 *   TOKEN(pos) -> pos == history length: append; smaller: duplicate, dropped;
 *                 larger: a lost message (fails the job: no retry yet); FINAL -> CANCEL
 *                 to every stage, done
 * Every reply is matched by epoch and request id; stale ones are dropped. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/origin.h"
#include "runtime/node.h"

#define EXO_ORIGIN_MSG_SUBMIT 530u /* local only: payload is a struct exo_origin pointer */
#define EXO_ORIGIN_ACTOR_NAME "origin"

enum origin_job_kind { JOB_NONE, JOB_MAP, JOB_GEN };

struct exo_origin {
  struct exo_node *node;
  struct exo_addr self;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* the job, under mu */
  enum origin_job_kind kind;
  bool active, done;
  int rc;
  char err[512];
  uint64_t epoch; /* last published */
  struct exo_gen_range ranges[EXO_GEN_MAX_RANGES];
  size_t n_ranges;
  /* map job */
  struct exo_gen_range targets[2 * EXO_GEN_MAX_RANGES];
  size_t n_targets, pending;
  char model_dir[EXO_GEN_MAX_PATH + 1];
  /* gen job */
  uint64_t next_request, request;
  const int32_t *prompt;
  size_t n_prompt;
  struct exo_sample_params sp;
  uint32_t max_tokens;
  uint64_t sample_key;
  void (*on_token)(void *arg, int32_t id);
  void *arg;
  uint64_t last_ns;
  struct exo_origin_result res;
};

struct origin_state {
  struct exo_origin *o;
};

void exo_origin_result_fini(struct exo_origin_result *r)
{
  if (!r)
    return;
  free(r->ids);
  free(r->steps);
  memset(r, 0, sizeof *r);
}

static void job_finish(struct exo_origin *o, int rc)
{
  if (rc && !o->rc)
    o->rc = rc;
  o->done = true;
  pthread_cond_broadcast(&o->cv);
}

static int send_bytes(struct exo_actor *self, struct exo_addr dst, uint16_t type, uint64_t epoch,
                      uint64_t req, const void *data, size_t len)
{
  void *p = exo_msg_alloc(len);
  if (!p)
    return -ENOMEM;
  memcpy(p, data, len);
  struct exo_envelope env = {.type = type, .dst = dst, .epoch = epoch, .request_id = req};
  return exo_actor_send_buf(self, &env, &p, len);
}

static void start_map(struct exo_actor *self, struct exo_origin *o)
{
  size_t pl = strlen(o->model_dir);
  size_t len = EXO_GEN_MAP_HEAD + 16 * o->n_ranges + pl;
  uint8_t *buf = malloc(len);
  if (!buf) {
    job_finish(o, -ENOMEM);
    return;
  }
  exo_gen_put_u32(buf, (uint32_t)o->n_ranges);
  exo_gen_put_u32(buf + 4, (uint32_t)pl);
  for (size_t i = 0; i < o->n_ranges; i++) {
    uint8_t *q = buf + EXO_GEN_MAP_HEAD + 16 * i;
    exo_gen_put_u32(q, o->ranges[i].node);
    exo_gen_put_u32(q + 4, o->ranges[i].actor);
    exo_gen_put_u32(q + 8, o->ranges[i].a);
    exo_gen_put_u32(q + 12, o->ranges[i].b);
  }
  memcpy(buf + EXO_GEN_MAP_HEAD + 16 * o->n_ranges, o->model_dir, pl);
  o->pending = o->n_targets;
  for (size_t i = 0; i < o->n_targets; i++) {
    struct exo_addr dst = {o->targets[i].node, o->targets[i].actor};
    int rc = send_bytes(self, dst, EXO_GEN_MSG_MAP, o->epoch, 0, buf, len);
    if (rc) {
      snprintf(o->err, sizeof o->err, "MAP to node %u: %s", dst.node, strerror(-rc));
      free(buf);
      job_finish(o, rc);
      return;
    }
  }
  free(buf);
}

static void start_gen(struct exo_actor *self, struct exo_origin *o)
{
  size_t len = EXO_GEN_PROMPT_HEAD + 4 * o->n_prompt;
  uint8_t *p = calloc(1, len);
  if (!p) {
    job_finish(o, -ENOMEM);
    return;
  }
  exo_gen_put_f32(p, o->sp.temperature);
  exo_gen_put_u32(p + 4, (uint32_t)o->sp.top_k);
  exo_gen_put_f32(p + 8, o->sp.top_p);
  exo_gen_put_f32(p + 12, o->sp.min_p);
  exo_gen_put_f32(p + 16, o->sp.repetition_penalty);
  exo_gen_put_f32(p + 20, o->sp.presence_penalty);
  exo_gen_put_f32(p + 24, o->sp.frequency_penalty);
  exo_gen_put_u32(p + 28, o->max_tokens);
  exo_gen_put_u64(p + 32, o->sp.seed);
  exo_gen_put_u64(p + 40, o->sample_key);
  exo_gen_put_u32(p + 48, (uint32_t)o->n_prompt);
  exo_gen_put_u32(p + 52, o->self.node);
  exo_gen_put_u32(p + 56, o->self.actor);
  for (size_t i = 0; i < o->n_prompt; i++)
    exo_gen_put_u32(p + EXO_GEN_PROMPT_HEAD + 4 * i, (uint32_t)o->prompt[i]);
  struct exo_addr first = {o->ranges[0].node, o->ranges[0].actor};
  o->last_ns = exo_gen_now_ns();
  int rc = send_bytes(self, first, EXO_GEN_MSG_PROMPT, o->epoch, o->request, p, len);
  free(p);
  if (rc) {
    snprintf(o->err, sizeof o->err, "PROMPT to node %u: %s", first.node, strerror(-rc));
    job_finish(o, rc);
  }
}

static void on_ready(struct exo_origin *o, const struct exo_msg *msg)
{
  if (!o->active || o->kind != JOB_MAP || msg->env.epoch != o->epoch || o->done ||
      msg->env.payload_len < 4)
    return;
  const uint8_t *p = msg->payload;
  int status = (int)exo_gen_get_u32(p);
  if (status < 0 && !o->rc) {
    size_t n = msg->env.payload_len - 4;
    if (n > 400)
      n = 400;
    snprintf(o->err, sizeof o->err, "node %u: %.*s", msg->env.src.node, (int)n,
             (const char *)p + 4);
    o->rc = status;
  }
  if (o->pending && --o->pending == 0)
    job_finish(o, 0);
}

static void on_token(struct exo_actor *self, struct exo_origin *o, const struct exo_msg *msg)
{
  uint64_t now = exo_gen_now_ns();
  if (!o->active || o->kind != JOB_GEN || o->done || msg->env.epoch != o->epoch ||
      msg->env.request_id != o->request || msg->env.payload_len != EXO_GEN_TOKEN_SIZE)
    return;
  const uint8_t *p = msg->payload;
  uint32_t flags = exo_gen_get_u32(p + 4);
  if (flags & EXO_GEN_TOKEN_ERROR) {
    int code = (int)exo_gen_get_u32(p);
    snprintf(o->err, sizeof o->err, "request failed on node %u: %s", msg->env.src.node,
             strerror(code < 0 ? -code : EIO));
    job_finish(o, -EIO);
    return;
  }
  uint64_t pos = exo_gen_get_u64(p + 8), want = o->n_prompt + o->res.n_ids;
  if (pos < want)
    return; /* duplicate */
  if (pos > want || o->res.n_ids >= o->max_tokens) {
    snprintf(o->err, sizeof o->err, "TOKEN for position %" PRIu64 " while expecting %" PRIu64
             " (a message was lost)", pos, want);
    job_finish(o, -EIO);
    return;
  }
  int32_t id = (int32_t)exo_gen_get_u32(p);
  struct exo_origin_step *st = &o->res.steps[o->res.n_ids];
  st->step_ns = now - o->last_ns;
  st->to_origin_ns = now - exo_gen_get_u64(p + 16);
  st->n_stages = exo_gen_get_u32(p + 24);
  if (st->n_stages > EXO_GEN_MAX_STAGES)
    st->n_stages = EXO_GEN_MAX_STAGES;
  exo_gen_get_stages(p + EXO_GEN_TOKEN_HEAD, st->stages, st->n_stages);
  o->last_ns = now;
  o->res.ids[o->res.n_ids++] = id;
  if (o->on_token)
    o->on_token(o->arg, id);
  if (flags & EXO_GEN_TOKEN_FINAL) {
    for (size_t i = 0; i < o->n_ranges; i++) {
      struct exo_addr dst = {o->ranges[i].node, o->ranges[i].actor};
      uint8_t reason[4] = {0}; /* 0: finished; nanomsg frames need a payload byte */
      (void)send_bytes(self, dst, EXO_GEN_MSG_CANCEL, o->epoch, o->request, reason, 4);
    }
    job_finish(o, 0);
  }
}

static int origin_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  struct origin_state *s = state;
  if (msg->env.type == EXO_ORIGIN_MSG_SUBMIT) {
    if (msg->env.src.node != exo_actor_addr(self).node ||
        msg->env.payload_len != sizeof(struct exo_origin *))
      return 0; /* never from the network */
    memcpy(&s->o, msg->payload, sizeof s->o);
    struct exo_origin *o = s->o;
    pthread_mutex_lock(&o->mu);
    if (o->active && !o->done) {
      if (o->kind == JOB_MAP)
        start_map(self, o);
      else if (o->kind == JOB_GEN)
        start_gen(self, o);
    }
    pthread_mutex_unlock(&o->mu);
    return 0;
  }
  struct exo_origin *o = s->o;
  if (!o)
    return 0;
  pthread_mutex_lock(&o->mu);
  if (msg->env.type == EXO_GEN_MSG_READY)
    on_ready(o, msg);
  else if (msg->env.type == EXO_GEN_MSG_TOKEN)
    on_token(self, o, msg);
  pthread_mutex_unlock(&o->mu);
  return 0;
}

const struct exo_actor_kind exo_origin_kind = {
  .name = "origin",
  .state_size = sizeof(struct origin_state),
  .message = origin_message,
};

int exo_origin_new(uint32_t node_id, const char *listen, struct exo_origin **out, char *err,
                   size_t errlen)
{
  struct exo_origin *o = calloc(1, sizeof *o);
  if (!o)
    return -ENOMEM;
  pthread_mutex_init(&o->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&o->cv, &ca);
  pthread_condattr_destroy(&ca);
  o->next_request = 1;
  struct exo_node_opts opts = {.node_id = node_id, .listen = listen, .loops = 1,
                               .supervision = {.intensity = 0, .period_ms = 1000}};
  struct exo_actor *a;
  int rc = exo_node_new_opts(&opts, &o->node, err, errlen);
  if (rc)
    goto fail;
  if ((rc = exo_node_spawn(o->node, EXO_ORIGIN_ACTOR_NAME, &exo_origin_kind, 0, NULL, &a, err,
                           errlen)))
    goto fail;
  o->self = exo_actor_addr(a);
  if ((rc = exo_node_start(o->node, err, errlen)))
    goto fail;
  *out = o;
  return 0;
fail:
  exo_origin_free(o);
  return rc;
}

void exo_origin_free(struct exo_origin *o)
{
  if (!o)
    return;
  exo_node_free(o->node);
  pthread_cond_destroy(&o->cv);
  pthread_mutex_destroy(&o->mu);
  exo_origin_result_fini(&o->res);
  free(o);
}

int exo_origin_add_peer(struct exo_origin *o, const char *addr)
{
  return exo_node_add_peer(o->node, addr);
}

int exo_origin_has_peer(struct exo_origin *o, uint32_t node_id)
{
  return exo_node_has_peer(o->node, node_id);
}

/* Hands the prepared job (under mu, active) to the actor and waits; returns its rc. */
static int run_job(struct exo_origin *o, int timeout_ms, char *err, size_t errlen)
{
  struct exo_origin *ptr = o;
  int rc = exo_node_send(o->node, o->self, EXO_ORIGIN_MSG_SUBMIT, &ptr, sizeof ptr);
  if (rc) {
    pthread_mutex_lock(&o->mu);
    o->active = false;
    pthread_mutex_unlock(&o->mu);
    snprintf(err, errlen, "cannot reach the origin actor: %s", strerror(-rc));
    return rc;
  }
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&o->mu);
  while (!o->done) {
    if (pthread_cond_timedwait(&o->cv, &o->mu, &dl) == ETIMEDOUT && !o->done) {
      o->rc = -ETIMEDOUT;
      snprintf(o->err, sizeof o->err, "no answer within %d ms", timeout_ms);
      break;
    }
  }
  o->active = false;
  rc = o->rc;
  if (rc)
    snprintf(err, errlen, "%s", o->err);
  pthread_mutex_unlock(&o->mu);
  return rc;
}

int exo_origin_set_map(struct exo_origin *o, const char *model_dir,
                       const struct exo_gen_range *ranges, size_t n,
                       const struct exo_gen_range *extra, size_t n_extra, int timeout_ms,
                       char *err, size_t errlen)
{
  if (n < 1 || n > EXO_GEN_MAX_RANGES || n_extra > EXO_GEN_MAX_RANGES ||
      (model_dir && strlen(model_dir) > EXO_GEN_MAX_PATH)) {
    snprintf(err, errlen, "set_map: %zu ranges (1..%u) or model path too long", n,
             EXO_GEN_MAX_RANGES);
    return -EINVAL;
  }
  pthread_mutex_lock(&o->mu);
  o->kind = JOB_MAP;
  o->active = true;
  o->done = false;
  o->rc = 0;
  o->err[0] = '\0';
  o->epoch++;
  memcpy(o->ranges, ranges, n * sizeof *ranges);
  o->n_ranges = n;
  memcpy(o->targets, ranges, n * sizeof *ranges);
  if (n_extra) /* extra may be NULL when there is none: memcpy's arguments must not be */
    memcpy(o->targets + n, extra, n_extra * sizeof *extra);
  o->n_targets = n + n_extra;
  snprintf(o->model_dir, sizeof o->model_dir, "%s", model_dir ? model_dir : "");
  pthread_mutex_unlock(&o->mu);
  return run_job(o, timeout_ms, err, errlen);
}

int exo_origin_generate(struct exo_origin *o, const int32_t *prompt, size_t n_prompt,
                        const struct exo_sample_params *sp, uint32_t max_tokens,
                        uint64_t sample_key, void (*on_token_fn)(void *arg, int32_t id),
                        void *arg, int timeout_ms, struct exo_origin_result *res, char *err,
                        size_t errlen)
{
  memset(res, 0, sizeof *res);
  if (n_prompt < 1 || n_prompt > 1000000 || max_tokens < 1 || max_tokens > 1000000 ||
      o->n_ranges == 0) {
    snprintf(err, errlen, "generate: empty prompt, bad max_tokens or no map published");
    return -EINVAL;
  }
  int32_t *ids = calloc(max_tokens, sizeof *ids);
  struct exo_origin_step *steps = calloc(max_tokens, sizeof *steps);
  if (!ids || !steps) {
    free(ids);
    free(steps);
    return -ENOMEM;
  }
  pthread_mutex_lock(&o->mu);
  exo_origin_result_fini(&o->res);
  o->res.ids = ids;
  o->res.steps = steps;
  o->kind = JOB_GEN;
  o->active = true;
  o->done = false;
  o->rc = 0;
  o->err[0] = '\0';
  o->request = o->next_request++;
  o->prompt = prompt;
  o->n_prompt = n_prompt;
  o->sp = *sp;
  o->max_tokens = max_tokens;
  o->sample_key = sample_key;
  o->on_token = on_token_fn;
  o->arg = arg;
  pthread_mutex_unlock(&o->mu);
  int rc = run_job(o, timeout_ms, err, errlen);
  pthread_mutex_lock(&o->mu);
  *res = o->res;
  memset(&o->res, 0, sizeof o->res);
  o->prompt = NULL;
  pthread_mutex_unlock(&o->mu);
  if (rc)
    exo_origin_result_fini(res);
  return rc;
}
