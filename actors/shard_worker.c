/* actors/shard_worker.c: actor kind "shard-worker": runs layers [a, b) of a model for
 * every request in flight, one KV cache per request, and when b == L samples beside the
 * logits. Must not block on the network, keep logits past a step, or trust a frame.
 *
 * Protocol (types in shard_worker.h; every message carries the live epoch, others are
 * dropped and counted):
 *   MAP(epoch, ranges, model)  -> load own range (free all requests), READY to sender
 *   PROMPT(req)                -> keep params (+ history if last), forward PROMPT to the
 *                                 next stage (same socket as HIDDEN: it arrives first);
 *                                 first stage: prefill the whole history
 *   HIDDEN(req, pos, rows)     -> run own layers; HIDDEN to next, or sample -> TOKEN
 *   TOKEN(req, pos, id)        -> (first stage) decode step for id at pos; final: free
 *   CANCEL(req)                -> free the request
 * The sampler is co-located in the last stage rather than a separate actor: the logits
 * (vocab floats) would otherwise be copied through a mailbox every step for nothing. */
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actors/default_model.h"
#include "actors/shard_worker.h"
#include "actors/cluster.h"
#include "runtime/log.h"
#include "runtime/node.h"
#include "tensor/forward.h"
#include "tensor/matmul.h"
#include "tensor/model.h"
#include "tensor/pool.h"
#include "tensor/sample.h"

#define EXO_SHARD_MAX_REQS 64u
#define SLOG(level, ...) exo_log(level, NULL, "shard-worker", __VA_ARGS__)

void exo_gen_put_u32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
void exo_gen_put_u64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
uint32_t exo_gen_get_u32(const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v |= (uint32_t)p[i] << (8 * i);
  return v;
}
uint64_t exo_gen_get_u64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}
void exo_gen_put_f32(uint8_t *p, float v)
{
  uint32_t u;
  memcpy(&u, &v, 4);
  exo_gen_put_u32(p, u);
}
float exo_gen_get_f32(const uint8_t *p)
{
  uint32_t u = exo_gen_get_u32(p);
  float v;
  memcpy(&v, &u, 4);
  return v;
}
void exo_gen_put_stages(uint8_t *p, const struct exo_gen_stage *s, uint32_t n)
{
  memset(p, 0, EXO_GEN_STAGES_WIRE);
  for (uint32_t i = 0; i < n && i < EXO_GEN_MAX_STAGES; i++) {
    uint8_t *q = p + i * EXO_GEN_STAGE_WIRE;
    exo_gen_put_u32(q, s[i].node);
    exo_gen_put_u64(q + 8, s[i].transfer_in_ns);
    exo_gen_put_u64(q + 16, s[i].compute_ns);
  }
}
void exo_gen_get_stages(const uint8_t *p, struct exo_gen_stage *s, uint32_t n)
{
  for (uint32_t i = 0; i < n && i < EXO_GEN_MAX_STAGES; i++) {
    const uint8_t *q = p + i * EXO_GEN_STAGE_WIRE;
    s[i].node = exo_gen_get_u32(q);
    s[i].transfer_in_ns = exo_gen_get_u64(q + 8);
    s[i].compute_ns = exo_gen_get_u64(q + 16);
  }
}
uint64_t exo_gen_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void exo_gen_put_sampling(uint8_t *p, const struct exo_sample_params *sp, uint32_t max_tokens)
{
  exo_gen_put_f32(p, sp->temperature);
  exo_gen_put_u32(p + 4, (uint32_t)sp->top_k);
  exo_gen_put_f32(p + 8, sp->top_p);
  exo_gen_put_f32(p + 12, sp->min_p);
  exo_gen_put_f32(p + 16, sp->repetition_penalty);
  exo_gen_put_f32(p + 20, sp->presence_penalty);
  exo_gen_put_f32(p + 24, sp->frequency_penalty);
  exo_gen_put_u32(p + 28, max_tokens);
  exo_gen_put_u64(p + 32, sp->seed);
}

void exo_gen_get_sampling(const uint8_t *p, struct exo_sample_params *sp, uint32_t *max_tokens)
{
  sp->temperature = exo_gen_get_f32(p);
  sp->top_k = (int)exo_gen_get_u32(p + 4);
  sp->top_p = exo_gen_get_f32(p + 8);
  sp->min_p = exo_gen_get_f32(p + 12);
  sp->repetition_penalty = exo_gen_get_f32(p + 16);
  sp->presence_penalty = exo_gen_get_f32(p + 20);
  sp->frequency_penalty = exo_gen_get_f32(p + 24);
  *max_tokens = exo_gen_get_u32(p + 28);
  sp->seed = exo_gen_get_u64(p + 32);
}

struct shard_req {
  bool used;
  uint64_t id;
  struct exo_addr origin;
  struct exo_kv_cache *kv;
  struct exo_sample_params sp;
  uint64_t sample_key;
  uint32_t max_tokens, n_new;
  uint32_t flags, top_logprobs; /* EXO_GEN_PROMPT_F_*; last stage only */
  uint64_t active_ns; /* last step queued or run: the idle sweep frees silent ones */
  size_t n_prompt, n_hist, cap;
  int32_t *hist; /* last stage only: prompt + generated */
  uint64_t kv_bytes; /* reserved from kv_budget: the cache never grows past it */
};

/* One request's step waiting at this shard: n rows at pos, off of them done. */
struct pending_step {
  struct shard_req *r;
  int n, pos, off;
  bool done; /* (flush) every row ran: remove */
  int32_t *tokens; /* first stage: n ids */
  float *hidden;   /* later stages: n x hidden */
  struct exo_gen_stage stages[EXO_GEN_MAX_STAGES];
  uint32_t n_stages;
  uint64_t at_ns; /* queued then */
};
#define EXO_SHARD_MAX_PENDING (4u * EXO_SHARD_MAX_REQS)
#define EXO_SHARD_CANCELLED 256u
#define SMALL_PREFILL 64 /* rows up to which a prefill chunk uses the row kernels */
#define MAX_BATCH_ROWS 256 /* rows of one batched forward (short prefills bound the turn) */
#define EXO_SHARD_EARLY 64u
#define EARLY_TTL_NS 2000000000ull

struct early_msg {
  struct exo_envelope env;
  void *payload; /* NULL: free slot */
  uint64_t at_ns, seq;
};

struct shard_state {
  const char *model_default; /* option or config `model`; owned by cfg */
  char model_dir[EXO_GEN_MAX_PATH + 1];
  struct exo_model *m;
  struct exo_forward_scratch *scratch;
  struct exo_sampler *sampler; /* last stage only */
  uint64_t epoch;
  bool live;
  uint32_t n_ranges;
  struct exo_gen_range ranges[EXO_GEN_MAX_RANGES];
  int me; /* index into ranges, -1 when this shard has no range */
  struct exo_addr next, first;
  bool is_first, is_last;
  float *out;     /* forward output */
  size_t out_cap; /* floats */
  float *logits;  /* one row of out, for the sampler to edit */
  size_t logits_cap;
  struct pending_step pend[EXO_SHARD_MAX_PENDING]; /* arrival order */
  size_t n_pend;
  bool flush_armed;
  uint32_t max_batch, prefill_chunk; /* options batch, prefill_chunk */
  uint64_t n_forwards, n_steps, max_seen_batch; /* batching, reported at stop */
  uint64_t cancelled[EXO_SHARD_CANCELLED]; /* recent CANCELs (ring) */
  uint64_t n_cancelled;
  uint32_t idle_ttl_ms; /* option idle_ttl_ms: a request silent this long is freed */
  uint32_t sweep_ms;    /* the idle sweep's period (and WAITING's) */
  uint32_t threads;     /* option threads: matmul threads of the forward (tensor/pool.h) */
  uint64_t reaped;
  struct early_msg early[EXO_SHARD_EARLY]; /* HIDDENs that came before their turn */
  uint64_t early_seq;
  uint64_t dropped; /* stale epoch, unknown request, malformed */
  struct exo_cluster *cluster; /* NULL outside `exo-actors run` (its gauge is skipped) */
  bool wire_f16;               /* HIDDEN sent as f16 (option wire_dtype) */
  bool ready_pending;        /* READY waits for routes (see try_ready) */
  struct exo_addr ready_to;  /* the MAP's sender */
  uint32_t ready_waited_ms;
  struct shard_req reqs[EXO_SHARD_MAX_REQS];
  uint64_t kv_budget, kv_used; /* bytes: option kv_budget_kb; reserved by live caches */
};

#define READY_TIMER 1
#define FLUSH_TIMER 2
#define IDLE_TIMER 3
#define IDLE_SWEEP_MS 1000
#define READY_POLL_MS 5
#define READY_WAIT_MS 10000

static void step_drop(struct pending_step *st);
static void send_error(struct exo_actor *self, struct shard_state *s, struct exo_addr origin,
                       uint64_t req, int rc);
static void send_waiting(struct exo_actor *self, struct shard_state *s,
                         const struct shard_req *r);
static void pend_remove(struct shard_state *s, size_t i);
static int flush(struct exo_actor *self, struct shard_state *s);
static void early_clear(struct shard_state *s);

static void req_free(struct shard_state *s, struct shard_req *r)
{
  if (r->used && s->cluster)
    exo_cluster_shard_requests_add(s->cluster, -1);
  /* its waiting steps die with it (a flush in progress may hold pointers to them, so
   * they are marked, and swept by the flush) */
  for (size_t i = 0; i < s->n_pend; i++)
    if (s->pend[i].r == r) {
      step_drop(&s->pend[i]);
      s->pend[i].done = true;
    }
  exo_kv_cache_free(r->kv);
  s->kv_used -= r->used ? r->kv_bytes : 0;
  free(r->hist);
  memset(r, 0, sizeof *r);
}

static struct shard_req *req_find(struct shard_state *s, uint64_t id)
{
  for (unsigned i = 0; i < EXO_SHARD_MAX_REQS; i++)
    if (s->reqs[i].used && s->reqs[i].id == id)
      return &s->reqs[i];
  return NULL;
}

/* Finds or creates the request (with an empty KV cache of kv_positions, 0: up to the
 * context, growing). NULL when full or OOM. */
static struct shard_req *req_get(struct shard_state *s, uint64_t id, int kv_positions,
                                 uint64_t kv_bytes)
{
  struct shard_req *r = req_find(s, id);
  if (r)
    return r;
  for (unsigned i = 0; i < EXO_SHARD_MAX_REQS; i++) {
    if (s->reqs[i].used)
      continue;
    r = &s->reqs[i];
    int max_pos = s->m->cfg.max_position_embeddings > 0 ? s->m->cfg.max_position_embeddings
                                                         : 4096;
    if (exo_forward_kv_new(s->m, kv_positions, kv_positions ? kv_positions : max_pos, &r->kv))
      return NULL;
    r->kv_bytes = kv_bytes;
    s->kv_used += kv_bytes;
    r->used = true;
    r->id = id;
    r->active_ns = exo_gen_now_ns();
    if (s->cluster)
      exo_cluster_shard_requests_add(s->cluster, 1);
    return r;
  }
  return NULL;
}

static void unload(struct shard_state *s)
{
  for (unsigned i = 0; i < EXO_SHARD_MAX_REQS; i++)
    if (s->reqs[i].used)
      req_free(s, &s->reqs[i]);
  exo_sampler_free(s->sampler);
  exo_forward_scratch_free(s->scratch);
  exo_model_free(s->m);
  s->sampler = NULL;
  s->scratch = NULL;
  s->m = NULL;
  s->live = false;
  s->me = -1;
}

static int shard_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                      const struct exo_actor_config *opts, char *err, size_t errlen)
{
  struct shard_state *s = state;
  s->me = -1;
  s->max_batch = 16;
  s->prefill_chunk = 128; /* a chunk of 128 costs about one decode batch of 8 at 1B dims */
  s->threads = 1;
  s->idle_ttl_ms = 30000;
  /* KV budget default: half the machine's memory (the weights and other nodes need the
   * rest); a cap on reservations, nothing is allocated up front */
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  uint64_t kv_kb = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 2048 : 1u << 20;
  s->kv_budget = kv_kb * 1024;
  s->model_default = cfg ? cfg->model : NULL;
  s->cluster = exo_node_context(exo_actor_node(self)) ? exo_cluster_of(exo_actor_node(self))
                                                      : NULL;
  if (opts && cfg) {
    static const char *const allowed[] = {"model",         "wire_dtype",  "batch",
                                          "prefill_chunk", "idle_ttl_ms", "threads", "kv_budget_kb", NULL};
    int rc = exo_config_check_options(cfg, opts, allowed, err, errlen);
    if (rc)
      return rc;
    if ((rc = exo_config_option_str(cfg, opts, "model", s->model_default, &s->model_default,
                                    err, errlen)))
      return rc;
    const char *wd = "f32";
    if ((rc = exo_config_option_str(cfg, opts, "wire_dtype", wd, &wd, err, errlen)))
      return rc;
    if (strcmp(wd, "f32") && strcmp(wd, "f16"))
      return exo_config_option_fail(cfg, opts, "wire_dtype", err, errlen,
                                    "expected f32 or f16, got '%s'", wd);
    s->wire_f16 = !strcmp(wd, "f16");
    uint64_t batch = s->max_batch, chunk = s->prefill_chunk;
    if ((rc = exo_config_option_u64(cfg, opts, "batch", batch, 1, EXO_SHARD_MAX_REQS, &batch,
                                    err, errlen)) ||
        (rc = exo_config_option_u64(cfg, opts, "prefill_chunk", chunk, 1, 1u << 20, &chunk,
                                    err, errlen)))
      return rc;
    s->max_batch = (uint32_t)batch;
    s->prefill_chunk = (uint32_t)chunk;
    uint64_t ttl = s->idle_ttl_ms;
    if ((rc = exo_config_option_u64(cfg, opts, "idle_ttl_ms", ttl, 100, 86400000, &ttl, err,
                                    errlen)))
      return rc;
    s->idle_ttl_ms = (uint32_t)ttl;
    if ((rc = exo_config_option_u64(cfg, opts, "kv_budget_kb", kv_kb, 64, 1ull << 40, &kv_kb,
                                    err, errlen)))
      return rc;
    s->kv_budget = kv_kb * 1024;
    uint64_t threads = s->threads;
    if ((rc = exo_config_option_u64(cfg, opts, "threads", threads, 1, EXO_POOL_MAX_THREADS,
                                    &threads, err, errlen)))
      return rc;
    s->threads = (uint32_t)threads;
  }
  s->sweep_ms = s->idle_ttl_ms / 2 < IDLE_SWEEP_MS ? s->idle_ttl_ms / 2 : IDLE_SWEEP_MS;
  return exo_actor_timer_start(self, IDLE_TIMER, s->sweep_ms, true);
}

static void shard_stop(struct exo_actor *self, void *state)
{
  (void)self;
  struct shard_state *s = state;
  if (s->n_forwards)
    SLOG(EXO_LOG_INFO, "%" PRIu64 " forwards ran %" PRIu64 " request steps (largest batch %"
         PRIu64 ")", s->n_forwards, s->n_steps, s->max_seen_batch);
  unload(s);
  while (s->n_pend)
    pend_remove(s, s->n_pend - 1);
  early_clear(s);
  free(s->out);
  free(s->logits);
  s->out = s->logits = NULL;
}

/* READY for the MAP of epoch (the envelope's, so the coordinator matches it to its
 * proposal); the payload carries shard_epoch, this shard's own (newer on -ESTALE). */
static void send_ready_epochs(struct exo_actor *self, struct exo_addr dst, uint64_t epoch,
                              uint64_t shard_epoch, int status, const char *text)
{
  size_t n = strlen(text);
  if (n > 400)
    n = 400;
  struct exo_envelope env = {.type = EXO_GEN_MSG_READY, .dst = dst, .epoch = epoch};
  uint8_t *p = exo_msg_alloc(EXO_GEN_READY_HEAD + n);
  if (!p)
    return;
  exo_gen_put_u32(p, (uint32_t)status);
  exo_gen_put_u32(p + 4, 0);
  exo_gen_put_u64(p + 8, shard_epoch);
  memcpy(p + EXO_GEN_READY_HEAD, text, n);
  void *vp = p;
  int rc = exo_actor_send_buf(self, &env, &vp, EXO_GEN_READY_HEAD + n);
  if (rc)
    SLOG(EXO_LOG_WARN, "READY to node %u: %s", dst.node, strerror(-rc));
}

static void send_ready_to(struct exo_actor *self, struct exo_addr dst, uint64_t epoch,
                          int status, const char *text)
{
  send_ready_epochs(self, dst, epoch, epoch, status, text);
}

static void send_ready(struct exo_actor *self, const struct exo_msg *msg, int status,
                       const char *text)
{
  send_ready_to(self, msg->env.src, msg->env.epoch, status, text);
}

/* The node this shard must send to but cannot reach yet, or 0. */
static uint32_t unreachable_node(struct exo_actor *self, const struct shard_state *s)
{
  if (s->me < 0)
    return 0;
  struct exo_node *node = exo_actor_node(self);
  uint32_t need[2] = {s->is_last ? s->first.node : s->next.node,
                      s->is_last ? s->ready_to.node : 0};
  for (int i = 0; i < 2; i++)
    if (need[i] && need[i] != exo_node_id(node) && !exo_node_has_peer(node, need[i]))
      return need[i];
  return 0;
}

/* READY promises that this shard reaches every node its range sends to. Nodes learn each
 * other's ids through HELLO, which may still be in flight when a MAP arrives, so READY
 * waits for those routes on a timer (the loop keeps running HELLOs meanwhile), bounded. */
static void try_ready(struct exo_actor *self, struct shard_state *s)
{
  uint32_t missing = unreachable_node(self, s);
  if (missing && s->ready_waited_ms < READY_WAIT_MS) {
    if (!s->ready_pending && exo_actor_timer_start(self, READY_TIMER, READY_POLL_MS, true) == 0)
      s->ready_pending = true;
    if (s->ready_pending)
      return;
  }
  if (s->ready_pending)
    exo_actor_timer_stop(self, READY_TIMER);
  s->ready_pending = false;
  if (missing) {
    char text[96];
    snprintf(text, sizeof text, "node %u is not reachable from node %u", missing,
             exo_node_id(exo_actor_node(self)));
    send_ready_to(self, s->ready_to, s->epoch, -EHOSTUNREACH, text);
    return;
  }
  send_ready_to(self, s->ready_to, s->epoch, 0, s->me >= 0 ? "loaded" : "idle");
}

static int shard_timer(struct exo_actor *self, void *state, uint32_t id)
{
  struct shard_state *s = state;
  if (id == FLUSH_TIMER)
    return flush(self, s);
  if (id == IDLE_TIMER) {
    /* a request whose origin gave up on it (its CANCEL lost to a fault, its origin dead)
     * would hold a cache forever: nothing has come for it in idle_ttl_ms, so it is dead */
    uint64_t now = exo_gen_now_ns();
    for (unsigned i = 0; i < EXO_SHARD_MAX_REQS; i++) {
      struct shard_req *r = &s->reqs[i];
      if (!r->used)
        continue;
      /* a step queued (behind other prefills) or running (a long prefill's chunks) is not
       * idle; once it has outlasted a sweep the origin hears it waits, lest its stall
       * timeout take the queue for a loss */
      bool waiting = false;
      uint64_t since = now;
      for (size_t j = 0; j < s->n_pend && !waiting; j++)
        if (s->pend[j].r == r && !s->pend[j].done) {
          waiting = true;
          since = s->pend[j].at_ns;
        }
      if (waiting) {
        if (now - since >= (uint64_t)s->sweep_ms * 1000000u)
          send_waiting(self, s, r);
        continue;
      }
      if (now - r->active_ns <= (uint64_t)s->idle_ttl_ms * 1000000u)
        continue;
      /* nothing has reached this stage yet: the request may wait that long upstream */
      if (r->kv->n_pos == 0 && now - r->active_ns <= 10ull * s->idle_ttl_ms * 1000000u)
        continue;
      SLOG(EXO_LOG_INFO, "request %" PRIu64 " idle for %u ms: freed", r->id, s->idle_ttl_ms);
      /* its origin, if alive, re-issues it rather than wait for a token that never comes */
      send_error(self, s, r->origin, r->id, -ESTALE);
      req_free(s, r);
      s->reaped++;
    }
    return 0;
  }
  if (id == READY_TIMER && s->ready_pending) {
    s->ready_waited_ms += READY_POLL_MS;
    try_ready(self, s);
  }
  return 0;
}

static int on_map(struct exo_actor *self, struct shard_state *s, const struct exo_msg *msg)
{
  const uint8_t *p = msg->payload;
  size_t len = msg->env.payload_len;
  char err[512] = "";
  if (len < EXO_GEN_MAP_HEAD) {
    send_ready(self, msg, -EPROTO, "MAP: payload shorter than its 8-byte head");
    return 0;
  }
  uint32_t n = exo_gen_get_u32(p), path_len = exo_gen_get_u32(p + 4);
  if (n < 1 || n > EXO_GEN_MAX_RANGES || path_len > EXO_GEN_MAX_PATH ||
      len != EXO_GEN_MAP_HEAD + 16ull * n + path_len) {
    snprintf(err, sizeof err, "MAP: %u ranges, path of %u bytes do not fit a payload of %zu",
             n, path_len, len);
    send_ready(self, msg, -EPROTO, err);
    return 0;
  }
  if (s->epoch && msg->env.epoch == s->epoch && msg->env.src.node == s->ready_to.node &&
      msg->env.src.actor == s->ready_to.actor) {
    if (!s->ready_pending) /* a resent MAP (its READY was lost): answer again */
      try_ready(self, s);
    return 0;
  }
  if (msg->env.epoch <= s->epoch) {
    snprintf(err, sizeof err, "MAP epoch %" PRIu64 " is not newer than this shard's %" PRIu64,
             msg->env.epoch, s->epoch);
    send_ready_epochs(self, msg->env.src, msg->env.epoch, s->epoch, -ESTALE, err);
    return 0;
  }
  /* the range this shard held: if the new map gives it the same one of the same model,
   * its weights stay (unload below frees only the requests then) */
  struct exo_model *kept = NULL;
  struct exo_forward_scratch *kept_scratch = NULL;
  struct exo_sampler *kept_sampler = NULL;
  uint32_t kept_a = 0, kept_b = 0;
  char kept_dir[EXO_GEN_MAX_PATH + 1] = "";
  if (s->m && s->me >= 0) {
    kept = s->m;
    kept_scratch = s->scratch;
    kept_sampler = s->sampler;
    kept_a = s->ranges[s->me].a;
    kept_b = s->ranges[s->me].b;
    snprintf(kept_dir, sizeof kept_dir, "%s", s->model_dir);
    s->m = NULL;
    s->scratch = NULL;
    s->sampler = NULL;
  }
  unload(s);
  if (s->ready_pending)
    exo_actor_timer_stop(self, READY_TIMER);
  s->ready_pending = false;
  s->ready_to = msg->env.src;
  s->ready_waited_ms = 0;
  s->epoch = msg->env.epoch;
  s->n_ranges = n;
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *q = p + EXO_GEN_MAP_HEAD + 16 * i;
    s->ranges[i] = (struct exo_gen_range){exo_gen_get_u32(q), exo_gen_get_u32(q + 4),
                                          exo_gen_get_u32(q + 8), exo_gen_get_u32(q + 12)};
  }
  if (path_len) {
    memcpy(s->model_dir, p + EXO_GEN_MAP_HEAD + 16 * n, path_len);
    s->model_dir[path_len] = '\0';
  } else if (s->model_default) {
    snprintf(s->model_dir, sizeof s->model_dir, "%s", s->model_default);
  } else if (exo_default_model_dir(s->model_dir, sizeof s->model_dir)) {
    send_ready(self, msg, -EINVAL, "MAP names no model, this shard has no `model` option, "
               "and no models/demo was found");
    goto done;
  }
  struct exo_model_config mc;
  int rc = exo_model_config_load(s->model_dir, &mc, err, sizeof err);
  if (rc) {
    send_ready(self, msg, rc, err);
    goto done;
  }
  struct exo_addr me = exo_actor_addr(self);
  uint32_t expect = 0;
  for (uint32_t i = 0; i < n; i++) {
    const struct exo_gen_range *r = &s->ranges[i];
    if (r->a != expect || r->b <= r->a || r->b > (uint32_t)mc.n_layers) {
      snprintf(err, sizeof err, "MAP: range %u is [%u, %u); expected it to start at %u and "
               "end in (%u, %d]", i, r->a, r->b, expect, r->a, mc.n_layers);
      send_ready(self, msg, -EINVAL, err);
      goto done;
    }
    expect = r->b;
    if (r->node == me.node && r->actor == me.actor) {
      if (s->me >= 0) {
        send_ready(self, msg, -EINVAL, "MAP: this shard appears twice");
        goto done;
      }
      s->me = (int)i;
    }
  }
  if (expect != (uint32_t)mc.n_layers) {
    snprintf(err, sizeof err, "MAP: ranges end at layer %u; the model has %d", expect,
             mc.n_layers);
    send_ready(self, msg, -EINVAL, err);
    goto done;
  }
  if (s->me >= 0) {
    const struct exo_gen_range *r = &s->ranges[s->me];
    if (kept && r->a == kept_a && r->b == kept_b && !strcmp(kept_dir, s->model_dir)) {
      /* same weights as before this epoch: keep them, a reload could take seconds */
      s->m = kept;
      s->scratch = kept_scratch;
      kept = NULL;
      kept_scratch = NULL;
    } else if ((rc = exo_model_load(s->model_dir, (int)r->a, (int)r->b, &s->m, err,
                                    sizeof err))) {
      send_ready(self, msg, rc, err);
      goto done;
    } else if ((rc = exo_forward_scratch_new(s->m, 16, 256, &s->scratch, err, sizeof err))) {
      unload(s);
      send_ready(self, msg, rc, err);
      goto done;
    } else if ((rc = exo_forward_scratch_set_threads(s->scratch, (int)s->threads))) {
      snprintf(err, sizeof err, "cannot start %u matmul threads: %s", s->threads,
               strerror(-rc));
      unload(s);
      send_ready(self, msg, rc, err);
      goto done;
    }
    s->is_first = r->a == 0;
    s->is_last = r->b == (uint32_t)mc.n_layers;
    s->first = (struct exo_addr){s->ranges[0].node, s->ranges[0].actor};
    if (!s->is_last)
      s->next = (struct exo_addr){s->ranges[s->me + 1].node, s->ranges[s->me + 1].actor};
    if (s->is_last && kept_sampler && !kept) { /* same model: same vocabulary */
      s->sampler = kept_sampler;
      kept_sampler = NULL;
    }
    if (s->is_last && !s->sampler && exo_sampler_new(mc.vocab_size, &s->sampler)) {
      unload(s);
      send_ready(self, msg, -ENOMEM, "out of memory for the sampler");
      goto done;
    }
  }
  s->live = true;
  SLOG(EXO_LOG_INFO, "epoch %" PRIu64 ": %s", s->epoch,
          s->me >= 0 ? "range loaded" : "no range here");
  try_ready(self, s);
done:
  exo_sampler_free(kept_sampler);
  exo_forward_scratch_free(kept_scratch);
  exo_model_free(kept);
  return 0;
}

static int grow(float **buf, size_t *cap, size_t n)
{
  if (n <= *cap)
    return 0;
  float *p = realloc(*buf, n * sizeof *p);
  if (!p)
    return -ENOMEM;
  *buf = p;
  *cap = n;
  return 0;
}

/* A TOKEN to the origin that carries no token: a failure, a refusal or WAITING (flags,
 * code in the token field, position as shard_worker.h says for each). */
static void send_status(struct exo_actor *self, struct shard_state *s, struct exo_addr origin,
                        uint64_t req, int code, uint32_t flags, uint64_t position)
{
  uint8_t buf[EXO_GEN_TOKEN_SIZE] = {0};
  exo_gen_put_u32(buf, (uint32_t)code);
  exo_gen_put_u32(buf + 4, flags);
  exo_gen_put_u64(buf + 8, position);
  exo_gen_put_u64(buf + 16, exo_gen_now_ns());
  struct exo_envelope env = {.type = EXO_GEN_MSG_TOKEN, .dst = origin, .epoch = s->epoch,
                             .request_id = req};
  void *p = exo_msg_alloc(sizeof buf);
  if (!p)
    return;
  memcpy(p, buf, sizeof buf);
  (void)exo_actor_send_buf(self, &env, &p, sizeof buf);
}

/* Tells the origin that req failed at this stage (it fails the generation). */
static void send_error(struct exo_actor *self, struct shard_state *s, struct exo_addr origin,
                       uint64_t req, int rc)
{
  send_status(self, s, origin, req, rc, EXO_GEN_TOKEN_FINAL | EXO_GEN_TOKEN_ERROR, 0);
}

static void send_waiting(struct exo_actor *self, struct shard_state *s,
                         const struct shard_req *r)
{
  send_status(self, s, r->origin, r->id, 0, EXO_GEN_TOKEN_WAITING, 0);
}

/* Refuses a PROMPT whose KV cache does not fit the budget: -ENOSPC (not now: the origin
 * retries after a backoff) or -E2BIG (never); the position field carries need KiB << 32 |
 * budget KiB for the origin's message. */
static void send_kv_refusal(struct exo_actor *self, struct shard_state *s,
                            struct exo_addr origin, uint64_t req, int rc, uint64_t need)
{
  uint64_t need_kb = (need + 1023) / 1024, budget_kb = s->kv_budget / 1024;
  send_status(self, s, origin, req, rc, EXO_GEN_TOKEN_FINAL | EXO_GEN_TOKEN_ERROR,
              (need_kb < UINT32_MAX ? need_kb : UINT32_MAX) << 32 |
                  (budget_kb < UINT32_MAX ? budget_kb : UINT32_MAX));
}

/* Writes the logprob trailer of a TOKEN (see shard_worker.h) for token id from the raw
 * logits[V]: log-softmax, computed in double so a 150k vocabulary sums stably. Returns
 * its length. */
static size_t put_logprobs(uint8_t *p, const float *logits, int V, int32_t id, uint32_t n_top)
{
  float mx = logits[0];
  for (int i = 1; i < V; i++)
    if (logits[i] > mx)
      mx = logits[i];
  double sum = 0;
  for (int i = 0; i < V; i++)
    sum += exp((double)logits[i] - mx);
  double lse = mx + log(sum);
  exo_gen_put_f32(p, (float)(logits[id] - lse));
  if (n_top > 20)
    n_top = 20;
  if (n_top > (uint32_t)V)
    n_top = (uint32_t)V;
  /* top n by insertion into a small sorted list: n <= 20, one pass over V */
  int32_t ids[20];
  uint32_t n = 0;
  for (int i = 0; i < V && n_top; i++) {
    if (n == n_top && logits[i] <= logits[ids[n - 1]])
      continue;
    uint32_t j = n < n_top ? n++ : n - 1;
    while (j > 0 && logits[ids[j - 1]] < logits[i]) {
      ids[j] = ids[j - 1];
      j--;
    }
    ids[j] = i;
  }
  exo_gen_put_u32(p + 4, n);
  for (uint32_t k = 0; k < n; k++) {
    exo_gen_put_u32(p + 8 + 8 * k, (uint32_t)ids[k]);
    exo_gen_put_f32(p + 12 + 8 * k, (float)(logits[ids[k]] - lse));
  }
  return 8 + 8 * (size_t)n;
}

/* Passes on one request's step whose forward output is out[rows, cols]: HIDDEN to the next
 * stage, or (last stage, once the whole history is in the cache) the sampled TOKEN to the
 * first stage and the origin. stages[n_stages - 1] is this stage's record. */
static int emit(struct exo_actor *self, struct shard_state *s, struct shard_req *r,
                const float *out, size_t rows, size_t cols, int pos,
                struct exo_gen_stage *stages, uint32_t n_stages)
{
  const int H = s->m->cfg.hidden_size, V = s->m->cfg.vocab_size;
  int rc;
  if (!s->is_last) {
    size_t esz = s->wire_f16 ? sizeof(uint16_t) : sizeof(float);
    size_t len = EXO_GEN_HIDDEN_HEAD + rows * cols * esz;
    uint8_t *p = exo_msg_alloc(len);
    if (!p)
      return -ENOMEM;
    exo_gen_put_u32(p, (uint32_t)pos);
    exo_gen_put_u32(p + 4, (uint32_t)rows);
    exo_gen_put_u32(p + 8, (uint32_t)H);
    exo_gen_put_u32(p + 12, n_stages);
    exo_gen_put_stages(p + 16, stages, n_stages);
    if (s->wire_f16)
      exo_f16_pack(out, (uint16_t *)(void *)(p + EXO_GEN_HIDDEN_HEAD), rows * cols);
    else
      memcpy(p + EXO_GEN_HIDDEN_HEAD, out, rows * cols * sizeof(float));
    exo_gen_put_u32(p + 24 + EXO_GEN_STAGES_WIRE, s->wire_f16 ? EXO_GEN_WIRE_F16 : EXO_GEN_WIRE_F32);
    exo_gen_put_u32(p + 28 + EXO_GEN_STAGES_WIRE, 0);
    exo_gen_put_u64(p + 16 + EXO_GEN_STAGES_WIRE, exo_gen_now_ns());
    struct exo_envelope env = {.type = EXO_GEN_MSG_HIDDEN, .dst = s->next, .epoch = s->epoch,
                               .request_id = r->id, .seq = (uint64_t)pos};
    void *vp = p;
    rc = exo_actor_send_buf(self, &env, &vp, len);
    if (rc) {
      SLOG(EXO_LOG_WARN, "HIDDEN to node %u: %s", s->next.node, strerror(-rc));
      send_error(self, s, r->origin, r->id, rc);
      req_free(s, r);
    }
    return 0;
  }
  /* Last stage: sample beside the logits, once the prefill's last chunk is in. Sampling
   * is this stage's compute too (a step's overhead is what is neither). */
  if ((size_t)r->kv->n_pos < r->n_hist)
    return 0;
  uint64_t t_sample = exo_gen_now_ns();
  if (r->n_hist + 1 > r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 64;
    int32_t *h = realloc(r->hist, cap * sizeof *h);
    if (!h)
      return -ENOMEM;
    r->hist = h;
    r->cap = cap;
  }
  if (grow(&s->logits, &s->logits_cap, (size_t)V))
    return -ENOMEM;
  memcpy(s->logits, out, (size_t)V * sizeof(float)); /* sampling edits them in place */
  int32_t id;
  rc = exo_sampler_sample(s->sampler, &r->sp, s->logits, r->hist, r->n_hist, r->n_prompt,
                          r->sample_key, (int64_t)r->n_hist, &id);
  if (rc) {
    send_error(self, s, r->origin, r->id, rc);
    req_free(s, r);
    return 0;
  }
  uint64_t position = r->n_hist;
  r->hist[r->n_hist++] = id;
  r->n_new++;
  bool eos = false;
  for (int i = 0; i < s->m->cfg.n_eos_ids; i++)
    eos |= s->m->cfg.eos_token_ids[i] == id;
  int max_pos = s->m->cfg.max_position_embeddings > 0 ? s->m->cfg.max_position_embeddings : 4096;
  bool final = eos || r->n_new >= r->max_tokens || r->n_hist >= (size_t)max_pos;
  uint8_t buf[EXO_GEN_TOKEN_MAX_SIZE] = {0};
  size_t blen = EXO_GEN_TOKEN_SIZE;
  uint32_t flags = (final ? EXO_GEN_TOKEN_FINAL : 0) | (final && eos ? EXO_GEN_TOKEN_EOS : 0);
  if (r->flags & EXO_GEN_PROMPT_F_LOGPROBS) { /* of the raw logits, as OpenAI reports */
    flags |= EXO_GEN_TOKEN_LOGPROBS;
    blen += put_logprobs(buf + EXO_GEN_TOKEN_SIZE, out, V, id, r->top_logprobs);
  }
  stages[n_stages - 1].compute_ns += exo_gen_now_ns() - t_sample;
  exo_gen_put_u32(buf, (uint32_t)id);
  exo_gen_put_u32(buf + 4, flags);
  exo_gen_put_u64(buf + 8, position);
  exo_gen_put_u32(buf + 24, n_stages);
  exo_gen_put_stages(buf + EXO_GEN_TOKEN_HEAD, stages, n_stages);
  struct exo_addr origin = r->origin;
  uint64_t req_id = r->id;
  if (final) {
    req_free(s, r);
    /* the middle stages learn of the end from the origin's CANCEL; a second one from here
     * frees their caches when that one is lost */
    for (uint32_t k = 1; k + 1 < s->n_ranges; k++) {
      struct exo_envelope env = {.type = EXO_GEN_MSG_CANCEL,
                                 .dst = {s->ranges[k].node, s->ranges[k].actor},
                                 .epoch = s->epoch, .request_id = req_id};
      void *cp = exo_msg_alloc(4);
      if (cp) {
        memset(cp, 0, 4);
        (void)exo_actor_send_buf(self, &env, &cp, 4);
      }
    }
  }
  /* the first stage starts the next step at once; the origin only records */
  struct exo_addr dsts[2] = {s->first, origin};
  for (int i = 0; i < 2; i++) {
    if (i == 0 && final && s->is_first) /* one stage: its request is already freed */
      continue;
    exo_gen_put_u64(buf + 16, exo_gen_now_ns());
    struct exo_envelope env = {.type = EXO_GEN_MSG_TOKEN, .dst = dsts[i], .epoch = s->epoch,
                               .request_id = req_id, .seq = position};
    size_t n = i == 0 ? EXO_GEN_TOKEN_SIZE : blen; /* the next step needs no logprobs */
    void *p = exo_msg_alloc(n);
    if (!p)
      return -ENOMEM;
    memcpy(p, buf, n);
    rc = exo_actor_send_buf(self, &env, &p, n);
    if (rc)
      SLOG(EXO_LOG_WARN, "TOKEN to node %u: %s", dsts[i].node, strerror(-rc));
  }
  return 0;
}

/* ---- continuous batching ------------------------------------------------------------
 * Steps wait in s->pend until the flush timer (0 ms: it runs once the loop has handled
 * every message already queued), or run at once when the mailbox holds nothing more. A flush runs the single-row steps of up to max_batch
 * distinct requests as one forward (one pass over each weight matrix), then one prefill
 * chunk of at most prefill_chunk rows as a forward of its own, so a long prompt never
 * holds every stream for its whole length. Each request's rows are computed the same way
 * whatever else shares the batch (exo_forward_batch.batch_invariant), and its prefill in
 * the same chunks, so its tokens do not depend on the other requests. */

static void step_drop(struct pending_step *st)
{
  free(st->tokens);
  free(st->hidden);
  memset(st, 0, sizeof *st);
}

static void pend_remove(struct shard_state *s, size_t i)
{
  step_drop(&s->pend[i]);
  memmove(&s->pend[i], &s->pend[i + 1], (s->n_pend - i - 1) * sizeof s->pend[0]);
  memset(&s->pend[--s->n_pend], 0, sizeof s->pend[0]);
}

/* Removes the steps that ran to the end or died with their request. */
static void pend_sweep(struct shard_state *s)
{
  for (size_t i = 0; i < s->n_pend;)
    if (s->pend[i].done || !s->pend[i].r)
      pend_remove(s, i);
    else
      i++;
}

/* The position the next step of r must start at: its cache plus what waits. */
static int next_pos(const struct shard_state *s, const struct shard_req *r)
{
  int pos = r->kv->n_pos;
  for (size_t i = 0; i < s->n_pend; i++)
    if (s->pend[i].r == r && !s->pend[i].done)
      pos += s->pend[i].n - s->pend[i].off;
  return pos;
}

/* Queues a step (takes tokens / hidden) and arms the flush. */
static int enqueue(struct exo_actor *self, struct shard_state *s, struct shard_req *r,
                   int32_t *tokens, float *hidden, int n, int pos,
                   const struct exo_gen_stage *stages, uint32_t n_stages)
{
  if (s->n_pend == EXO_SHARD_MAX_PENDING)
    pend_sweep(s);
  if (s->n_pend == EXO_SHARD_MAX_PENDING) {
    free(tokens);
    free(hidden);
    send_error(self, s, r->origin, r->id, -ENOBUFS);
    req_free(s, r);
    return 0;
  }
  r->active_ns = exo_gen_now_ns();
  struct pending_step *st = &s->pend[s->n_pend++];
  *st = (struct pending_step){.r = r, .n = n, .pos = pos, .tokens = tokens, .hidden = hidden,
                              .n_stages = n_stages, .at_ns = r->active_ns};
  memcpy(st->stages, stages, n_stages * sizeof *stages);
  /* nothing else for us has arrived: no batch to wait for, so no loop turn to wait */
  if (!s->flush_armed && exo_actor_queued(self) == 0)
    return flush(self, s);
  if (!s->flush_armed && exo_actor_timer_start(self, FLUSH_TIMER, 0, false) == 0)
    s->flush_armed = true;
  return 0;
}

/* One forward over steps[k] (rows[i] rows of each from its offset), then each passed on. */
static int run_batch(struct exo_actor *self, struct shard_state *s, struct pending_step **steps,
                     const int *rows, int k)
{
  const int H = s->m->cfg.hidden_size;
  int total = 0;
  for (int i = 0; i < k; i++)
    total += rows[i];
  struct exo_forward_seq seqs[EXO_SHARD_MAX_REQS];
  int32_t *tok = NULL;
  float *hid = NULL;
  if (s->is_first && !(tok = malloc((size_t)total * sizeof *tok)))
    return -ENOMEM;
  if (!s->is_first && !(hid = malloc((size_t)total * H * sizeof *hid))) {
    free(tok);
    return -ENOMEM;
  }
  for (int i = 0, at = 0; i < k; i++) {
    struct pending_step *st = steps[i];
    seqs[i] = (struct exo_forward_seq){.kv = st->r->kv, .n_tokens = rows[i],
                                       .start_pos = st->pos + st->off};
    if (tok)
      memcpy(tok + at, st->tokens + st->off, (size_t)rows[i] * sizeof *tok);
    else
      memcpy(hid + (size_t)at * H, st->hidden + (size_t)st->off * H,
             (size_t)rows[i] * H * sizeof *hid);
    at += rows[i];
  }
  /* decode rows (one per request) go through the batch-invariant kernels, so a request's
   * tokens do not depend on who shares its batch; so do short prefill chunks (a half-weight
   * model's sgemm path widens every weight to f32 per call: 10+ ms for a 4-token prompt),
   * which share the decode batch, while long ones run alone on sgemm. Either way the choice
   * depends only on the request's own chunk, so it is the same when the request runs
   * alone. */
  int widest = 0;
  for (int i = 0; i < k; i++)
    widest = rows[i] > widest ? rows[i] : widest;
  struct exo_forward_batch b = {.n_seqs = k, .seqs = seqs, .tokens = tok, .hidden_in = hid,
                                .logits_last_only = 1,
                                .batch_invariant = widest <= SMALL_PREFILL};
  size_t out_rows = (size_t)exo_forward_out_rows(s->m, &b);
  size_t cols = (size_t)exo_forward_out_cols(s->m, &b);
  char err[256] = "";
  uint64_t t0 = exo_gen_now_ns();
  int rc = grow(&s->out, &s->out_cap, out_rows * cols);
  if (!rc)
    rc = exo_forward(s->m, &b, s->out, s->scratch, err, sizeof err);
  uint64_t compute = exo_gen_now_ns() - t0;
  s->n_forwards++;
  s->n_steps += (uint64_t)k;
  if ((uint64_t)k > s->max_seen_batch)
    s->max_seen_batch = (uint64_t)k;
  free(tok);
  free(hid);
  if (rc == -ENOMEM)
    return rc;
  if (rc) { /* no cache changed: find the culprit by running each alone */
    if (k > 1) {
      for (int i = 0; i < k; i++)
        if ((rc = run_batch(self, s, &steps[i], &rows[i], 1)) == -ENOMEM)
          return rc;
      return 0;
    }
    struct shard_req *r = steps[0]->r;
    SLOG(EXO_LOG_WARN, "request %" PRIu64 ": forward: %s", r->id, err);
    send_error(self, s, r->origin, r->id, rc);
    req_free(s, r); /* marks its steps done */
    return 0;
  }
  for (int i = 0, at = 0; i < k; i++) {
    struct pending_step *st = steps[i];
    size_t r_rows = s->is_last ? 1 : (size_t)rows[i];
    const float *o = s->out + (s->is_last ? (size_t)i : (size_t)at) * cols;
    int pos = st->pos + st->off;
    at += rows[i];
    st->off += rows[i];
    st->stages[st->n_stages - 1].compute_ns = compute;
    st->done = st->off == st->n;
    struct shard_req *r = st->r;
    r->active_ns = t0 + compute; /* the idle clock counts from its last step */
    if ((rc = emit(self, s, r, o, r_rows, cols, pos, st->stages, st->n_stages)) < 0)
      return rc;
  }
  return 0;
}

static int flush(struct exo_actor *self, struct shard_state *s)
{
  s->flush_armed = false;
  pend_sweep(s);
  if (!s->m) {
    while (s->n_pend)
      pend_remove(s, s->n_pend - 1);
    return 0;
  }
  /* the oldest waiting step of each request; decode rows and short prefill chunks (up to
   * SMALL_PREFILL rows, batch-invariant kernels) share one forward, so a burst of short
   * prompts is prefilled in one turn instead of one per turn; a longer chunk runs alone */
  struct pending_step *dec[EXO_SHARD_MAX_REQS], *pre = NULL;
  int dec_rows[EXO_SHARD_MAX_REQS], k = 0, batch_rows = 0;
  const struct shard_req *seen[EXO_SHARD_MAX_PENDING];
  size_t n_seen = 0;
  for (size_t i = 0; i < s->n_pend; i++) {
    struct pending_step *st = &s->pend[i];
    bool first_of_req = true;
    for (size_t j = 0; j < n_seen && first_of_req; j++)
      first_of_req = seen[j] != st->r;
    seen[n_seen++] = st->r;
    if (!first_of_req)
      continue;
    int chunk = st->n - st->off < (int)s->prefill_chunk ? st->n - st->off
                                                         : (int)s->prefill_chunk;
    if (chunk <= SMALL_PREFILL) {
      if (k < (int)s->max_batch && k < (int)EXO_SHARD_MAX_REQS &&
          (k == 0 || batch_rows + chunk <= MAX_BATCH_ROWS)) {
        dec[k] = st;
        dec_rows[k++] = chunk;
        batch_rows += chunk;
      }
    } else if (!pre) {
      pre = st;
    }
  }
  int rc = k ? run_batch(self, s, dec, dec_rows, k) : 0;
  /* one prefill chunk after the decode batch (unless that batch ended its request) */
  if (rc == 0 && pre && pre->r && !pre->done && s->m) {
    int chunk = pre->n - pre->off;
    if (chunk > (int)s->prefill_chunk)
      chunk = (int)s->prefill_chunk;
    rc = run_batch(self, s, &pre, &chunk, 1);
  }
  pend_sweep(s);
  if (s->n_pend && !s->flush_armed && exo_actor_timer_start(self, FLUSH_TIMER, 0, false) == 0)
    s->flush_armed = true;
  return rc;
}

static int on_prompt(struct exo_actor *self, struct shard_state *s, const struct exo_msg *msg)
{
  const uint8_t *p = msg->payload;
  size_t len = msg->env.payload_len;
  uint32_t n = len >= EXO_GEN_PROMPT_HEAD ? exo_gen_get_u32(p + 48) : 0;
  if (len < EXO_GEN_PROMPT_HEAD || n < 1 || len != EXO_GEN_PROMPT_HEAD + 4ull * n ||
      msg->env.request_id == 0) {
    SLOG(EXO_LOG_WARN, "malformed PROMPT (%zu bytes) dropped", len);
    s->dropped++;
    return 0;
  }
  struct exo_addr origin = {exo_gen_get_u32(p + 52), exo_gen_get_u32(p + 56)};
  uint64_t req_id = msg->env.request_id;
  for (unsigned i = 0; i < EXO_SHARD_CANCELLED; i++)
    if (s->cancelled[i] == req_id) {
      s->dropped++;
      return 0;
    }
  for (unsigned i = 0; i < EXO_SHARD_MAX_REQS; i++) /* older attempts of this request */
    if (s->reqs[i].used && s->reqs[i].id != req_id &&
        EXO_GEN_WIRE_REQUEST(s->reqs[i].id) == EXO_GEN_WIRE_REQUEST(req_id))
      req_free(s, &s->reqs[i]);
  if (req_find(s, req_id)) { /* a re-issue: start over from the history */
    req_free(s, req_find(s, req_id));
  }
  /* KV budget: reserve the positions this request can reach (history + tokens still to
   * come, up to the context) before allocating any of it */
  int kv_ctx = s->m->cfg.max_position_embeddings > 0 ? s->m->cfg.max_position_embeddings : 4096;
  uint32_t kv_max_new = exo_gen_get_u32(p + 28), kv_done = exo_gen_get_u32(p + 60);
  uint64_t kv_pos = (uint64_t)n + (kv_max_new > kv_done ? kv_max_new - kv_done : 0);
  if (kv_pos > (uint64_t)kv_ctx)
    kv_pos = (uint64_t)kv_ctx;
  uint64_t kv_need = kv_pos * (uint64_t)(s->m->layer_end - s->m->layer_begin) *
                     (uint64_t)(s->m->cfg.n_kv_heads * s->m->cfg.head_dim) * 2 * sizeof(float);
  if (kv_need > s->kv_budget || s->kv_used + kv_need > s->kv_budget) {
    send_kv_refusal(self, s, origin, req_id, kv_need > s->kv_budget ? -E2BIG : -ENOSPC,
                    kv_need);
    return 0;
  }
  struct shard_req *r = req_get(s, req_id, (int)kv_pos, kv_need);
  if (!r) {
    send_error(self, s, origin, req_id, -ENOBUFS);
    return 0;
  }
  r->origin = origin;
  struct exo_sample_params *sp = &r->sp;
  exo_gen_get_sampling(p, sp, &r->max_tokens);
  r->sample_key = exo_gen_get_u64(p + 40);
  uint32_t n_done = exo_gen_get_u32(p + 60);
  r->flags = exo_gen_get_u32(p + 64);
  r->top_logprobs = exo_gen_get_u32(p + 68);
  r->n_prompt = n - (n_done < n ? n_done : 0);
  r->n_new = n_done;
  char err[200];
  int max_pos = s->m->cfg.max_position_embeddings > 0 ? s->m->cfg.max_position_embeddings : 4096;
  if (exo_sample_params_check(sp, err, sizeof err) || r->max_tokens < 1 ||
      n >= (uint32_t)max_pos || n_done >= n || n_done >= r->max_tokens || r->top_logprobs > 20 ||
      (r->flags & ~EXO_GEN_PROMPT_F_LOGPROBS)) {
    SLOG(EXO_LOG_WARN, "PROMPT %" PRIu64 " refused (bad sampling params, max_tokens, "
            "n_done, logprobs or length %u)", req_id, n);
    send_error(self, s, origin, req_id, -EINVAL);
    req_free(s, r);
    return 0;
  }
  int32_t *tok = malloc((size_t)n * sizeof *tok);
  if (!tok) {
    req_free(s, r);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < n; i++) {
    tok[i] = (int32_t)exo_gen_get_u32(p + EXO_GEN_PROMPT_HEAD + 4 * i);
    if (tok[i] < 0 || tok[i] >= s->m->cfg.vocab_size) {
      free(tok);
      send_error(self, s, origin, req_id, -EINVAL);
      req_free(s, r);
      return 0;
    }
  }
  if (s->is_last) {
    r->hist = tok;
    r->n_hist = r->cap = n;
  }
  if (!s->is_last) { /* ahead of our HIDDEN on the same socket */
    struct exo_envelope env = {.type = EXO_GEN_MSG_PROMPT, .dst = s->next, .epoch = s->epoch,
                               .request_id = req_id};
    void *fw = exo_msg_alloc(len);
    if (!fw) {
      free(tok);
      return -ENOMEM;
    }
    memcpy(fw, msg->payload, len);
    int rc = exo_actor_send_buf(self, &env, &fw, len);
    if (rc)
      SLOG(EXO_LOG_WARN, "PROMPT to node %u: %s", s->next.node, strerror(-rc));
  }
  if (s->is_first) { /* the last stage keeps tok as the history: the step gets a copy */
    struct exo_gen_stage st = {.node = exo_actor_addr(self).node};
    int32_t *mine = tok;
    if (s->is_last && !(mine = malloc((size_t)n * sizeof *mine)))
      return -ENOMEM;
    if (s->is_last)
      memcpy(mine, tok, (size_t)n * sizeof *mine);
    return enqueue(self, s, r, mine, NULL, (int)n, 0, &st, 1);
  }
  if (!s->is_last)
    free(tok);
  return 0;
}

/* ---- early HIDDENs ------------------------------------------------------------------ */

static bool early_keep(struct shard_state *s, const struct exo_msg *msg)
{
  uint64_t now = exo_gen_now_ns();
  for (unsigned i = 0; i < EXO_SHARD_EARLY; i++) {
    struct early_msg *e = &s->early[i];
    if (e->payload && now - e->at_ns > EARLY_TTL_NS) { /* its turn never came */
      free(e->payload);
      e->payload = NULL;
    }
    if (e->payload)
      continue;
    if (!(e->payload = malloc(msg->env.payload_len ? msg->env.payload_len : 1)))
      return false;
    memcpy(e->payload, msg->payload, msg->env.payload_len);
    e->env = msg->env;
    e->at_ns = now;
    e->seq = s->early_seq++;
    return true;
  }
  return false; /* full: dropped, the origin re-issues */
}

static int on_hidden_ex(struct exo_actor *self, struct shard_state *s, const struct exo_msg *msg,
                        bool may_wait);

/* Runs the kept HIDDENs whose turn has come, oldest first, until none has. */
static int early_replay(struct exo_actor *self, struct shard_state *s)
{
  for (bool again = true; again;) {
    again = false;
    struct early_msg *best = NULL;
    for (unsigned i = 0; i < EXO_SHARD_EARLY; i++) {
      struct early_msg *e = &s->early[i];
      if (!e->payload || e->env.epoch != s->epoch)
        continue;
      struct shard_req *r = req_find(s, e->env.request_id);
      if (!r || e->env.payload_len < 4 ||
          exo_gen_get_u32(e->payload) != (uint32_t)next_pos(s, r))
        continue;
      if (!best || e->seq < best->seq)
        best = e;
    }
    if (best) {
      struct exo_msg m = {.env = best->env, .payload = best->payload};
      void *owned = best->payload;
      best->payload = NULL;
      int rc = on_hidden_ex(self, s, &m, false);
      free(owned);
      if (rc)
        return rc;
      again = true;
    }
  }
  return 0;
}

static void early_clear(struct shard_state *s)
{
  for (unsigned i = 0; i < EXO_SHARD_EARLY; i++) {
    free(s->early[i].payload);
    s->early[i].payload = NULL;
  }
}

static int on_hidden(struct exo_actor *self, struct shard_state *s, const struct exo_msg *msg)
{
  int rc = on_hidden_ex(self, s, msg, true);
  return rc ? rc : early_replay(self, s);
}

static int on_hidden_ex(struct exo_actor *self, struct shard_state *s, const struct exo_msg *msg,
                        bool may_wait)
{
  uint64_t now = exo_gen_now_ns();
  const uint8_t *p = msg->payload;
  size_t len = msg->env.payload_len;
  if (len < EXO_GEN_HIDDEN_HEAD) {
    s->dropped++;
    return 0;
  }
  uint32_t pos = exo_gen_get_u32(p), rows = exo_gen_get_u32(p + 4), H = exo_gen_get_u32(p + 8),
           n_st = exo_gen_get_u32(p + 12), dtype = exo_gen_get_u32(p + 24 + EXO_GEN_STAGES_WIRE);
  if (s->is_first || rows < 1 || rows > (1u << 20) || H != (uint32_t)s->m->cfg.hidden_size ||
      n_st < 1 || n_st >= EXO_GEN_MAX_STAGES || pos > INT_MAX ||
      dtype > EXO_GEN_WIRE_F16 ||
      len != EXO_GEN_HIDDEN_HEAD + (size_t)rows * H *
                 (dtype == EXO_GEN_WIRE_F16 ? sizeof(uint16_t) : sizeof(float))) {
    SLOG(EXO_LOG_WARN, "malformed HIDDEN (%zu bytes) dropped", len);
    s->dropped++;
    return 0;
  }
  /* the PROMPT makes the request; a HIDDEN never creates one (a stale attempt's would
   * leak a cache). Over TCP the PROMPT comes first, but a delaying or reordering network
   * (or the fault hooks) can swap them, or swap two prefill chunks: a HIDDEN that is early
   * (no request yet, or a later position) waits a while for its turn. */
  struct shard_req *r = req_find(s, msg->env.request_id);
  bool cancelled = false;
  for (unsigned i = 0; i < EXO_SHARD_CANCELLED && !r; i++)
    cancelled |= s->cancelled[i] == msg->env.request_id;
  bool early = !cancelled && (!r || (uint32_t)next_pos(s, r) < pos);
  if (early && may_wait && early_keep(s, msg))
    return 0;
  if (!r || (s->is_last && !r->hist) || (uint32_t)next_pos(s, r) != pos) {
    if (!early || !may_wait)
      SLOG(EXO_LOG_DEBUG, "HIDDEN for request %" PRIu64 " at %u: no such request or "
           "position (dropped)", msg->env.request_id, pos);
    s->dropped++;
    return 0;
  }
  struct exo_gen_stage st[EXO_GEN_MAX_STAGES];
  exo_gen_get_stages(p + 16, st, n_st);
  st[n_st] = (struct exo_gen_stage){.node = exo_actor_addr(self).node,
                                    .transfer_in_ns =
                                        now - exo_gen_get_u64(p + 16 + EXO_GEN_STAGES_WIRE)};
  size_t nf = (size_t)rows * H;
  float *in = malloc(nf * sizeof *in);
  if (!in)
    return -ENOMEM;
  if (dtype == EXO_GEN_WIRE_F16) /* exo_f16_unpack reads unaligned sources */
    exo_f16_unpack((const uint16_t *)(const void *)(p + EXO_GEN_HIDDEN_HEAD), in, nf);
  else
    memcpy(in, p + EXO_GEN_HIDDEN_HEAD, nf * sizeof(float)); /* frames are not float-aligned */
  return enqueue(self, s, r, NULL, in, (int)rows, (int)pos, st, n_st + 1);
}

static int on_token(struct exo_actor *self, struct shard_state *s, const struct exo_msg *msg)
{
  uint64_t now = exo_gen_now_ns();
  const uint8_t *p = msg->payload;
  if (msg->env.payload_len != EXO_GEN_TOKEN_SIZE || !s->is_first) {
    s->dropped++;
    return 0;
  }
  struct shard_req *r = req_find(s, msg->env.request_id);
  if (!r) {
    s->dropped++;
    return 0;
  }
  uint32_t flags = exo_gen_get_u32(p + 4);
  if (flags & EXO_GEN_TOKEN_FINAL) {
    req_free(s, r);
    return 0;
  }
  int32_t id = (int32_t)exo_gen_get_u32(p);
  uint64_t pos = exo_gen_get_u64(p + 8);
  if (pos != (uint64_t)next_pos(s, r) || id < 0 || id >= s->m->cfg.vocab_size) {
    s->dropped++;
    return 0;
  }
  struct exo_gen_stage st = {.node = exo_actor_addr(self).node,
                             .transfer_in_ns = now - exo_gen_get_u64(p + 16)};
  int32_t *one = malloc(sizeof *one);
  if (!one)
    return -ENOMEM;
  *one = id;
  return enqueue(self, s, r, one, NULL, 1, (int)pos, &st, 1);
}

static int shard_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  struct shard_state *s = state;
  if (msg->env.type == EXO_GEN_MSG_MAP)
    return on_map(self, s, msg);
  if (!s->live || msg->env.epoch != s->epoch) {
    s->dropped++;
    return 0;
  }
  switch (msg->env.type) {
  case EXO_GEN_MSG_CANCEL: {
    struct shard_req *r = req_find(s, msg->env.request_id);
    if (r)
      req_free(s, r);
    /* remembered: a CANCEL can overtake its PROMPT (they take different paths) */
    s->cancelled[s->n_cancelled++ % EXO_SHARD_CANCELLED] = msg->env.request_id;
    return 0;
  }
  case EXO_GEN_MSG_PROMPT:
  case EXO_GEN_MSG_HIDDEN:
  case EXO_GEN_MSG_TOKEN:
    if (s->me < 0) {
      s->dropped++;
      return 0;
    }
    if (msg->env.type == EXO_GEN_MSG_PROMPT) {
      int rc = on_prompt(self, s, msg);
      return rc ? rc : early_replay(self, s);
    }
    if (msg->env.type == EXO_GEN_MSG_HIDDEN)
      return on_hidden(self, s, msg);
    return on_token(self, s, msg);
  default:
    s->dropped++;
    return 0;
  }
}

const struct exo_actor_kind exo_shard_worker_kind = {
  .name = "shard-worker",
  .state_size = sizeof(struct shard_state),
  .init = shard_init,
  .message = shard_message,
  .timer = shard_timer,
  .stop = shard_stop,
};
