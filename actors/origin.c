/* actors/origin.c: actor kind "origin": a node's front door for generations. Serves the
 * client protocol (actors/gen_request.h) for local clients (the api actor) and remote
 * ones (`generate --config`), routes each request through the live map (actors/cluster.h),
 * and owns every request's token history, so a request survives a map change or a lost
 * message: it is re-issued from its history under a new wire id, and since sampling is
 * keyed by (seed, sample key, position) it draws the same tokens. Must not compute.
 *
 *   SUBMIT -> ACK (an EVENT with no flags) and queue, or FINAL -EBUSY past the queue
 *   admit (a free active slot; adaptive: prefill budget) -> issue: PROMPT(history, n_done)
 *     to the map's first stage (or wait for a map)
 *   TOKEN(pos == history length) -> append, EVENT to the client; FINAL -> CANCEL stages
 *   TOKEN(error -ENOSPC/-ENOBUFS: a shard's KV budget or slots are full) -> re-issue after
 *     a backoff, not counted as a failed attempt; -E2BIG: it can never fit -> error
 *   MAP_LIVE (a new epoch) or no progress for step_timeout_ms -> re-issue
 *   queued for queue_timeout_ms -> FINAL -ETIMEDOUT with a Retry-After estimate
 *
 *   queued --admit()--> active(waiting) --issue()--> prefill --TOKEN--> decode --> gone
 *                          ^---------- retry_at / new map / timeout -------'
 *
 * Requests in flight are filed by wire id in a lock-free table (actors/origin_table.h):
 * a TOKEN finds its request in O(1) with no lock, and other threads may read the table.
 * This actor's thread is its only writer; the all-requests array (SUBMIT duplicates,
 * CANCEL, the tick) and the FIFO queue are this thread's alone. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/control.h"
#include "actors/gen_request.h"
#include "actors/origin.h"
#include "actors/origin_table.h"
#include "runtime/log.h"
#include "runtime/node.h"

#define OLOG(level, ...) exo_log(level, NULL, "origin", __VA_ARGS__)
#define TICK_TIMER 1
#define TICK_MS 50

struct oreq {
  struct exo_origin_entry e; /* first: what other threads may read (origin_table.h) */
  struct exo_addr client;
  uint64_t client_req;
  struct exo_sample_params sp;
  uint32_t max_tokens, flags, top_logprobs;
  int32_t *hist;
  size_t n_hist, cap, n_prompt;
  uint64_t wire;  /* the current attempt's request id on the wire; 0 while waiting */
  uint64_t epoch; /* the current attempt's map epoch */
  struct exo_gen_range ranges[EXO_GEN_MAX_RANGES];
  size_t n_ranges;
  uint64_t submitted_ns, last_ns;
  uint32_t seq;      /* this origin's request number (wire id bits 12..31) */
  uint32_t attempts; /* issues in all (reported to the client) */
  uint32_t tries;    /* issues since the last token: max_attempts bounds these */
  uint32_t full_waits; /* refusals for a full shard since the last token (backoff) */
  uint64_t retry_at; /* parked after a refused send: re-issue then, or at a new map */
  uint64_t parked_epoch; /* the epoch of the attempt that was refused ("a new map": not it) */
  size_t idx;        /* in s->reqs */
  bool active;       /* admitted (else in s->queue) */
  bool prefilled;    /* the current attempt delivered a token */
};

struct origin_state {
  struct exo_actor *self;
  struct exo_cluster *cluster;
  struct exo_origin_table *table; /* wire id -> oreq, for the current attempts */
  struct exo_origin_stats *st;    /* the node's, for /metrics (origin_table.h) */
  struct oreq **reqs;             /* every request, active and queued */
  size_t n_reqs, cap_reqs;
  struct oreq **queue; /* FIFO of queued requests: max_queued entries */
  size_t n_queued;
  uint32_t n_active;
  uint32_t max_active, max_queued, step_timeout_ms, map_wait_ms, max_attempts;
  uint32_t queue_timeout_ms; /* a request still queued after this ends (-ETIMEDOUT) */
  bool adaptive;
  uint32_t prefill_budget, short_prompt; /* adaptive admission, tokens */
  uint64_t next_wire;
  uint64_t reissued, completed, failed, refused;
  struct exo_rate_window done; /* recent completions: Retry-After */
};

static void oreq_release(struct exo_origin_entry *e)
{
  struct oreq *r = (struct oreq *)e;
  free(r->hist);
  free(r);
}

static void event_send(struct origin_state *s, struct oreq *r, struct exo_req_event *e)
{
  e->prompt_tokens = (uint32_t)r->n_prompt;
  e->attempts = r->attempts;
  void *buf;
  size_t len;
  if (exo_req_event_encode(e, &buf, &len))
    return;
  struct exo_envelope env = {.type = EXO_REQ_MSG_EVENT, .dst = r->client,
                             .request_id = r->client_req};
  int rc = exo_actor_send_buf(s->self, &env, &buf, len);
  if (rc)
    OLOG(EXO_LOG_DEBUG, "EVENT to %u/%u: %s", r->client.node, r->client.actor, strerror(-rc));
}

static void cancel_stages(struct origin_state *s, struct oreq *r)
{
  if (!r->wire)
    return;
  for (size_t i = 0; i < r->n_ranges; i++) {
    uint8_t reason[4] = {0}; /* nanomsg frames need a payload byte */
    struct exo_addr dst = {r->ranges[i].node, r->ranges[i].actor};
    void *p = exo_msg_alloc(sizeof reason);
    if (!p)
      return;
    memcpy(p, reason, sizeof reason);
    struct exo_envelope env = {.type = EXO_GEN_MSG_CANCEL, .dst = dst, .epoch = r->epoch,
                               .request_id = r->wire};
    (void)exo_actor_send_buf(s->self, &env, &p, sizeof reason);
  }
}

/* Ends the current attempt: CANCEL to its stages, its wire id out of the table. */
static void detach(struct origin_state *s, struct oreq *r)
{
  cancel_stages(s, r);
  if (r->wire)
    (void)exo_origin_table_del(s->table, r->wire);
  r->wire = 0;
  r->epoch = 0;
  r->prefilled = false;
  atomic_store_explicit(&r->e.phase, EXO_ORIGIN_WAITING, memory_order_relaxed);
}

static void queue_remove(struct origin_state *s, size_t k)
{
  memmove(&s->queue[k], &s->queue[k + 1], (s->n_queued - k - 1) * sizeof s->queue[0]);
  s->n_queued--;
}

/* Ends r with a FINAL event and forgets it. Admission of the next request is left to
 * admit() at the end of the handler, so nothing here touches other requests. */
static void finish_ex(struct origin_state *s, struct oreq *r, enum exo_req_finish why,
                      int code, const char *text, uint64_t retry_ns)
{
  detach(s, r);
  struct exo_req_event e = {.flags = EXO_REQ_EV_FINAL, .finish = why, .step_ns = retry_ns,
                            .index = (uint32_t)(r->n_hist - r->n_prompt), .token = code};
  if (text)
    snprintf(e.msg, sizeof e.msg, "%s", text);
  event_send(s, r, &e);
  if (why == EXO_REQ_FINISH_ERROR) {
    s->failed++;
    exo_origin_stats_add(&s->st->failed, 1);
  } else {
    s->completed++;
    exo_origin_stats_add(&s->st->completed, 1);
  }
  if (r->active) {
    s->n_active--;
    exo_rate_window_note(&s->done, exo_gen_now_ns());
  } else {
    for (size_t k = 0; k < s->n_queued; k++)
      if (s->queue[k] == r) {
        queue_remove(s, k);
        break;
      }
  }
  s->reqs[r->idx] = s->reqs[--s->n_reqs];
  s->reqs[r->idx]->idx = r->idx;
  exo_origin_entry_drop(&r->e);
}

static void finish(struct origin_state *s, struct oreq *r, enum exo_req_finish why, int code,
                   const char *text)
{
  finish_ex(s, r, why, code, text, 0);
}

/* The gauges of /metrics: called at the end of every handler. */
static void publish(struct origin_state *s)
{
  if (!s->st)
    return; /* init failed before it had the cluster */
  atomic_store_explicit(&s->st->active, s->n_active, memory_order_relaxed);
  atomic_store_explicit(&s->st->queued, (uint32_t)s->n_queued, memory_order_relaxed);
}

/* Sends r's history as a PROMPT under the live map, or leaves it waiting for one. */
static void issue(struct origin_state *s, struct oreq *r)
{
  detach(s, r);
  r->retry_at = 0;
  r->last_ns = exo_gen_now_ns();
  struct exo_live_map m;
  if (exo_cluster_copy_live_map(s->cluster, &m) || m.n == 0)
    return; /* the tick fails it if no map arrives in time */
  if (++r->tries > s->max_attempts) {
    char t[128];
    snprintf(t, sizeof t, "no progress after %u attempts (the cluster keeps failing it)",
             s->max_attempts);
    finish(s, r, EXO_REQ_FINISH_ERROR, -EIO, t);
    return;
  }
  if (++r->attempts > 1) {
    s->reissued++;
    exo_origin_stats_add(&s->st->reissued, 1);
  }
  atomic_store_explicit(&r->e.attempts, r->attempts, memory_order_relaxed);
  /* wire id: origin node (32 bits: requests of several origins never collide in a shard's
   * table) | request (20) | attempt (12), so a shard that sees a new attempt frees the
   * older ones' caches even when their CANCEL was lost (EXO_GEN_WIRE_REQUEST) */
  uint64_t wire = ((uint64_t)exo_actor_addr(s->self).node << 32) | (uint64_t)r->seq << 12 |
                  (r->attempts & 0xfffu);
  if (exo_origin_table_put(s->table, wire, &r->e)) {
    finish(s, r, EXO_REQ_FINISH_ERROR, -ENOMEM, "out of memory (request table)");
    return;
  }
  r->wire = wire;
  r->epoch = m.epoch;
  r->n_ranges = m.n;
  memcpy(r->ranges, m.ranges, m.n * sizeof m.ranges[0]);
  atomic_store_explicit(&r->e.phase, EXO_ORIGIN_PREFILL, memory_order_relaxed);
  size_t len = EXO_GEN_PROMPT_HEAD + 4 * r->n_hist;
  uint8_t *p = exo_msg_alloc(len);
  if (!p) {
    finish(s, r, EXO_REQ_FINISH_ERROR, -ENOMEM, "out of memory");
    return;
  }
  memset(p, 0, EXO_GEN_PROMPT_HEAD);
  exo_gen_put_sampling(p, &r->sp, r->max_tokens);
  exo_gen_put_u64(p + 40, 0); /* sample key: same seed, same tokens, whoever asks */
  exo_gen_put_u32(p + 48, (uint32_t)r->n_hist);
  exo_gen_put_u32(p + 52, exo_actor_addr(s->self).node);
  exo_gen_put_u32(p + 56, exo_actor_addr(s->self).actor);
  exo_gen_put_u32(p + 60, (uint32_t)(r->n_hist - r->n_prompt));
  exo_gen_put_u32(p + 64, (r->flags & EXO_REQ_F_LOGPROBS) ? EXO_GEN_PROMPT_F_LOGPROBS : 0);
  exo_gen_put_u32(p + 68, r->top_logprobs);
  for (size_t k = 0; k < r->n_hist; k++)
    exo_gen_put_u32(p + EXO_GEN_PROMPT_HEAD + 4 * k, (uint32_t)r->hist[k]);
  struct exo_envelope env = {.type = EXO_GEN_MSG_PROMPT,
                             .dst = {r->ranges[0].node, r->ranges[0].actor},
                             .epoch = r->epoch, .request_id = r->wire};
  void *vp = p;
  int rc = exo_actor_send_buf(s->self, &env, &vp, len);
  if (rc) /* the tick retries after step_timeout_ms */
    OLOG(EXO_LOG_WARN, "PROMPT to node %u: %s", env.dst.node, strerror(-rc));
}

/* ---- admission ---------------------------------------------------------------------- */

/* Prompt tokens the active requests still have to prefill (a re-issue redoes the whole
 * history, so an attempt without a token counts all of it). */
static size_t pending_prefill(const struct origin_state *s)
{
  size_t n = 0;
  for (size_t i = 0; i < s->n_reqs; i++)
    if (s->reqs[i]->active && !s->reqs[i]->prefilled)
      n += s->reqs[i]->n_hist;
  return n;
}

/* Whether queued r may take a free active slot now (docs/CONFIG.md "Admission"). */
static bool admissible(const struct origin_state *s, const struct oreq *r, size_t pending)
{
  if (!s->adaptive || r->n_hist <= s->short_prompt || pending == 0)
    return true;
  return pending + r->n_hist <= s->prefill_budget;
}

/* Moves queued requests into free active slots: FIFO; adaptive: the first admissible. */
static void admit(struct origin_state *s)
{
  while (s->n_active < s->max_active && s->n_queued) {
    size_t pending = s->adaptive ? pending_prefill(s) : 0, k = 0;
    while (k < s->n_queued && !admissible(s, s->queue[k], pending))
      k++;
    if (k == s->n_queued)
      return; /* long prompts wait for the prefills ahead of them */
    struct oreq *r = s->queue[k];
    queue_remove(s, k);
    r->active = true;
    s->n_active++;
    exo_origin_stats_add(&s->st->admitted, 1);
    if (k)
      exo_origin_stats_add(&s->st->admitted_past, 1);
    issue(s, r);
  }
}

/* Seconds a refused client should wait: until the queue ahead of it should have moved
 * one place, from the recent completion rate. */
static uint32_t retry_after_s(const struct origin_state *s)
{
  return exo_rate_window_retry_s(&s->done, s->n_queued + 1, s->max_active, exo_gen_now_ns());
}

static void on_submit(struct origin_state *s, const struct exo_msg *msg)
{
  struct exo_req_submit sub;
  int32_t *ids = NULL;
  char err[256];
  struct oreq tmp = {.client = msg->env.src, .client_req = msg->env.request_id};
  uint64_t retry_ns = 0;
  int rc = exo_req_submit_decode(msg->payload, msg->env.payload_len, &sub, &ids, err,
                                 sizeof err);
  for (size_t i = 0; !rc && i < s->n_reqs; i++)
    if (s->reqs[i]->client_req == tmp.client_req && s->reqs[i]->client.node == tmp.client.node &&
        s->reqs[i]->client.actor == tmp.client.actor) {
      snprintf(err, sizeof err, "request id %" PRIu64 " is already in flight", tmp.client_req);
      rc = -EEXIST;
    }
  if (!rc) {
    /* accepted while the queue has room, or when it would be admitted at once */
    struct oreq probe = {.n_hist = sub.n_prompt};
    bool now = s->n_active < s->max_active &&
               admissible(s, &probe, s->adaptive ? pending_prefill(s) : 0);
    if (s->n_queued >= s->max_queued && !now) {
      uint32_t retry = retry_after_s(s);
      snprintf(err, sizeof err, "this node is at its request limit (%u active, %zu queued: "
               "max_active %u, max_queued %u); retry in %u s", s->n_active, s->n_queued,
               s->max_active, s->max_queued, retry);
      retry_ns = (uint64_t)retry * 1000000000ull;
      s->refused++;
      exo_origin_stats_add(&s->st->refused, 1);
      rc = -EBUSY;
    }
  }
  struct oreq *r = NULL;
  if (!rc && s->n_reqs == s->cap_reqs) {
    size_t cap = s->cap_reqs * 2 + 16;
    struct oreq **grown = realloc(s->reqs, cap * sizeof *grown);
    if (grown) {
      s->reqs = grown;
      s->cap_reqs = cap;
    }
  }
  if (!rc && (s->n_reqs == s->cap_reqs || !(r = calloc(1, sizeof *r)))) {
    snprintf(err, sizeof err, "out of memory");
    rc = -ENOMEM;
  }
  if (rc) {
    free(ids);
    struct exo_req_event e = {.flags = EXO_REQ_EV_FINAL, .finish = EXO_REQ_FINISH_ERROR,
                              .token = rc, .step_ns = retry_ns};
    snprintf(e.msg, sizeof e.msg, "%s", err);
    event_send(s, &tmp, &e);
    return;
  }
  *r = tmp;
  r->sp = sub.sp;
  r->max_tokens = sub.max_tokens;
  r->flags = sub.flags;
  r->top_logprobs = sub.top_logprobs;
  r->hist = ids;
  r->n_hist = r->n_prompt = r->cap = sub.n_prompt;
  r->submitted_ns = r->last_ns = exo_gen_now_ns();
  r->seq = (uint32_t)(s->next_wire++ & 0xfffffu);
  exo_origin_entry_init(&r->e, oreq_release);
  r->e.client_req = r->client_req;
  r->e.client_node = r->client.node;
  r->e.client_actor = r->client.actor;
  r->e.n_prompt = (uint32_t)r->n_prompt;
  r->e.submitted_ns = r->submitted_ns;
  r->idx = s->n_reqs;
  s->reqs[s->n_reqs++] = r;
  s->queue[s->n_queued++] = r; /* room: max_queued + 1 entries */
  struct exo_req_event ack = {0}; /* accepted: the api may start its reply now */
  event_send(s, r, &ack);
  admit(s);
}

static bool retryable(int code)
{
  return code == -EHOSTUNREACH || code == -EAGAIN || code == -ESTALE;
}

/* A shard refused for lack of room (its request slots or its KV budget): not a fault,
 * so it does not use up attempts; wait for others to finish (doubling, 25 ms to 1.6 s). */
static bool shard_full(int code)
{
  return code == -ENOBUFS || code == -ENOSPC;
}

static void on_token(struct origin_state *s, const struct exo_msg *msg)
{
  uint64_t now = exo_gen_now_ns();
  size_t len = msg->env.payload_len;
  struct oreq *r = (struct oreq *)exo_origin_table_find(s->table, msg->env.request_id);
  if (!r || r->wire != msg->env.request_id || len < EXO_GEN_TOKEN_SIZE)
    return; /* an attempt given up on, or someone else's */
  if (msg->env.epoch != r->epoch)
    return;
  const uint8_t *p = msg->payload;
  uint32_t flags = exo_gen_get_u32(p + 4);
  int32_t token = (int32_t)exo_gen_get_u32(p);
  if (flags == EXO_GEN_TOKEN_WAITING) { /* queued at a stage: alive, not stalled */
    r->last_ns = now;
    return;
  }
  if (flags & EXO_GEN_TOKEN_ERROR) {
    char t[256];
    uint64_t need_budget = exo_gen_get_u64(p + 8);
    if (token == -E2BIG) {
      snprintf(t, sizeof t, "node %u cannot hold this request's KV cache: it needs %" PRIu64
               " KiB (%zu positions of history and up to %u new tokens) and the node's "
               "kv_budget is %" PRIu64 " KiB", msg->env.src.node, need_budget >> 32,
               r->n_hist, r->max_tokens - (uint32_t)(r->n_hist - r->n_prompt),
               need_budget & 0xffffffffu);
      finish(s, r, EXO_REQ_FINISH_ERROR, -E2BIG, t);
      return;
    }
    snprintf(t, sizeof t, "node %u failed the request: %s", msg->env.src.node,
             strerror(token < 0 ? -token : EIO));
    if (shard_full(token)) {
      uint64_t backoff = 25000000ull << (r->full_waits < 6 ? r->full_waits : 6);
      r->full_waits++;
      r->tries--; /* this attempt is not a failure */
      exo_origin_stats_add(&s->st->shard_full, 1);
      OLOG(EXO_LOG_DEBUG, "%s; waiting %" PRIu64 " ms for room", t, backoff / 1000000);
      r->parked_epoch = r->epoch;
      detach(s, r);
      r->retry_at = now + backoff;
    } else if (retryable(token)) {
      /* a stage could not reach the next one: usually a node just died, and the health
       * monitor will say so within half a second. Wait (doubling, up to 1 s) or for the
       * new map instead of spending every attempt in a burst */
      uint64_t backoff = 50000000ull << (r->tries < 4 ? r->tries : 4);
      OLOG(EXO_LOG_INFO, "%s; re-issuing in %" PRIu64 " ms or at a new map", t,
           backoff / 1000000);
      r->parked_epoch = r->epoch; /* detach forgets it */
      detach(s, r);
      r->retry_at = now + backoff;
    } else {
      finish(s, r, EXO_REQ_FINISH_ERROR, token < 0 ? token : -EIO, t);
    }
    return;
  }
  uint64_t pos = exo_gen_get_u64(p + 8);
  if (pos < r->n_hist)
    return; /* a duplicate */
  if (pos > r->n_hist || token < 0) {
    OLOG(EXO_LOG_INFO, "request %" PRIu64 ": TOKEN for position %" PRIu64 " while expecting %zu "
         "(a message was lost): re-issuing", r->client_req, pos, r->n_hist);
    issue(s, r);
    return;
  }
  if (r->n_hist == r->cap) {
    size_t cap = r->cap * 2 + 16;
    int32_t *h = realloc(r->hist, cap * sizeof *h);
    if (!h) {
      finish(s, r, EXO_REQ_FINISH_ERROR, -ENOMEM, "out of memory");
      return;
    }
    r->hist = h;
    r->cap = cap;
  }
  struct exo_req_event e = {.token = token, .flags = EXO_REQ_EV_TOKEN,
                            .index = (uint32_t)(r->n_hist - r->n_prompt)};
  e.step_ns = now - r->last_ns;
  e.to_origin_ns = now - exo_gen_get_u64(p + 16);
  if (r->flags & EXO_REQ_F_STATS) {
    e.n_stages = exo_gen_get_u32(p + 24);
    if (e.n_stages > EXO_GEN_MAX_STAGES)
      e.n_stages = EXO_GEN_MAX_STAGES;
    exo_gen_get_stages(p + EXO_GEN_TOKEN_HEAD, e.stages, e.n_stages);
  }
  if ((flags & EXO_GEN_TOKEN_LOGPROBS) && len >= EXO_GEN_TOKEN_SIZE + 8) {
    const uint8_t *q = p + EXO_GEN_TOKEN_SIZE;
    e.logprob = exo_gen_get_f32(q);
    uint32_t n_top = exo_gen_get_u32(q + 4);
    if (n_top <= EXO_REQ_MAX_TOP_LOGPROBS && len == EXO_GEN_TOKEN_SIZE + 8 + 8ull * n_top) {
      e.n_top = n_top;
      for (uint32_t k = 0; k < n_top; k++) {
        e.top[k].id = (int32_t)exo_gen_get_u32(q + 8 + 8 * k);
        e.top[k].logprob = exo_gen_get_f32(q + 12 + 8 * k);
      }
    }
  }
  r->hist[r->n_hist++] = token;
  r->last_ns = now;
  r->tries = 0;
  r->full_waits = 0;
  r->prefilled = true;
  atomic_store_explicit(&r->e.phase, EXO_ORIGIN_DECODE, memory_order_relaxed);
  atomic_store_explicit(&r->e.generated, (uint32_t)(r->n_hist - r->n_prompt),
                        memory_order_relaxed);
  if (flags & EXO_GEN_TOKEN_FINAL) {
    e.flags |= EXO_REQ_EV_FINAL;
    e.finish = (flags & EXO_GEN_TOKEN_EOS) ? EXO_REQ_FINISH_STOP : EXO_REQ_FINISH_LENGTH;
    event_send(s, r, &e);
    detach(s, r);
    s->completed++;
    exo_origin_stats_add(&s->st->completed, 1);
    s->n_active--;
    exo_rate_window_note(&s->done, now);
    s->reqs[r->idx] = s->reqs[--s->n_reqs];
    s->reqs[r->idx]->idx = r->idx;
    exo_origin_entry_drop(&r->e);
    return;
  }
  event_send(s, r, &e);
}

static void on_cancel(struct origin_state *s, const struct exo_msg *msg)
{
  for (size_t i = 0; i < s->n_reqs; i++) {
    struct oreq *r = s->reqs[i];
    if (r->client_req == msg->env.request_id && r->client.node == msg->env.src.node &&
        r->client.actor == msg->env.src.actor) {
      finish(s, r, EXO_REQ_FINISH_CANCELLED, 0, "cancelled by the client");
      return;
    }
  }
}

static void tick(struct origin_state *s)
{
  uint64_t now = exo_gen_now_ns();
  struct exo_live_map m;
  uint64_t live = exo_cluster_copy_live_map(s->cluster, &m) == 0 ? m.epoch : 0;
  for (size_t i = 0; i < s->n_reqs;) {
    struct oreq *r = s->reqs[i];
    size_t before = s->n_reqs;
    if (!r->active) {
      /* queued: admit() moves it, unless it waited too long */
      if (now - r->submitted_ns > (uint64_t)s->queue_timeout_ms * 1000000ull) {
        char t[200];
        uint32_t retry = retry_after_s(s);
        snprintf(t, sizeof t, "waited %u ms in this node's admission queue (queue_timeout_ms) "
                 "without an active slot (%u active, %zu queued); retry in %u s",
                 s->queue_timeout_ms, s->n_active, s->n_queued, retry);
        exo_origin_stats_add(&s->st->queue_timeouts, 1);
        finish_ex(s, r, EXO_REQ_FINISH_ERROR, -ETIMEDOUT, t, (uint64_t)retry * 1000000000ull);
      }
    } else if (r->retry_at) {
      if (now >= r->retry_at || (live && r->parked_epoch != live)) {
        r->retry_at = 0;
        issue(s, r);
      }
    } else if (r->epoch == 0 && now - r->last_ns > (uint64_t)s->map_wait_ms * 1000000ull) {
      char t[128];
      snprintf(t, sizeof t, "no live partition map within %u ms (too few nodes, or none "
               "can load the model)", s->map_wait_ms);
      finish(s, r, EXO_REQ_FINISH_ERROR, -ETIMEDOUT, t);
    } else if (live && r->epoch != live) {
      issue(s, r); /* the map changed (or one arrived): resume from the history */
    } else if (r->epoch && now - r->last_ns > (uint64_t)s->step_timeout_ms * 1000000ull) {
      OLOG(EXO_LOG_INFO, "request %" PRIu64 ": no token for %u ms: re-issuing", r->client_req,
           s->step_timeout_ms);
      issue(s, r);
    }
    if (s->n_reqs == before)
      i++;
  }
  admit(s);
  publish(s);
}

static int origin_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                       const struct exo_actor_config *opts, char *err, size_t errlen)
{
  struct origin_state *s = state;
  s->self = self;
  s->next_wire = 1;
  if (!(s->cluster = exo_cluster_of_actor(self, err, errlen)))
    return -ENOMEM;
  s->st = exo_cluster_origin_stats(s->cluster);
  uint64_t max_active = EXO_ORIGIN_MAX_ACTIVE, max_queued = EXO_ORIGIN_MAX_QUEUED, step = 5000,
           wait = 30000, attempts = 8, budget = 1024, short_prompt = 64, queue_ms = 60000;
  const char *mode = "fixed";
  if (cfg && opts) {
    static const char *const allowed[] = {"max_active",     "max_queued",   "admission",
                                          "prefill_budget", "short_prompt", "step_timeout_ms",
                                          "map_wait_ms",    "max_attempts", "queue_timeout_ms",
                                          NULL};
    int rc = exo_config_check_options(cfg, opts, allowed, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "max_active", max_active, 1, 4096, &max_active,
                                 err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "max_queued", max_queued, 0, 65536, &max_queued,
                                 err, errlen);
    if (!rc)
      rc = exo_config_option_str(cfg, opts, "admission", mode, &mode, err, errlen);
    if (!rc && strcmp(mode, "fixed") && strcmp(mode, "adaptive"))
      rc = exo_config_option_fail(cfg, opts, "admission", err, errlen,
                                  "expected fixed or adaptive, got '%s'", mode);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "prefill_budget", budget, 1, 1u << 24, &budget,
                                 err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "short_prompt", short_prompt, 0, 1u << 24,
                                 &short_prompt, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "step_timeout_ms", step, 10, 3600000, &step, err,
                                 errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "map_wait_ms", wait, 10, 3600000, &wait, err,
                                 errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "max_attempts", attempts, 1, 1000, &attempts, err,
                                 errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "queue_timeout_ms", queue_ms, 10, 86400000,
                                 &queue_ms, err, errlen);
    if (rc)
      return rc;
  }
  s->max_active = (uint32_t)max_active;
  s->max_queued = (uint32_t)max_queued;
  s->adaptive = !strcmp(mode, "adaptive");
  s->prefill_budget = (uint32_t)budget;
  s->short_prompt = (uint32_t)short_prompt;
  s->step_timeout_ms = (uint32_t)step;
  s->map_wait_ms = (uint32_t)wait;
  s->max_attempts = (uint32_t)attempts;
  s->queue_timeout_ms = (uint32_t)queue_ms;
  s->table = exo_origin_table_new(2 * max_active);
  s->queue = calloc(max_queued + 1, sizeof *s->queue);
  if (!s->table || !s->queue) {
    exo_origin_table_free(s->table);
    free(s->queue);
    s->table = NULL;
    s->queue = NULL;
    snprintf(err, errlen, "origin: out of memory");
    return -ENOMEM;
  }
  return exo_actor_timer_start(self, TICK_TIMER, TICK_MS, true);
}

static int origin_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  struct origin_state *s = state;
  switch (msg->env.type) {
  case EXO_REQ_MSG_SUBMIT:
    on_submit(s, msg);
    break;
  case EXO_REQ_MSG_CANCEL:
    on_cancel(s, msg);
    break;
  case EXO_GEN_MSG_TOKEN:
    on_token(s, msg);
    break;
  case EXO_CTL_MSG_MAP_LIVE:
    tick(s);
    return 0;
  default:
    return 0;
  }
  admit(s); /* a slot freed, or a prefill ended (adaptive) */
  publish(s);
  return 0;
}

static int origin_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)self;
  if (id == TICK_TIMER)
    tick(state);
  return 0;
}

static void origin_stop(struct exo_actor *self, void *state)
{
  (void)self;
  struct origin_state *s = state;
  if (s->refused)
    OLOG(EXO_LOG_INFO, "%" PRIu64 " requests refused at the admission limit", s->refused);
  while (s->n_reqs)
    finish(s, s->reqs[s->n_reqs - 1], EXO_REQ_FINISH_ERROR, -ECANCELED, "the node is stopping");
  exo_origin_table_free(s->table); /* waits for the entries' grace periods */
  free(s->reqs);
  free(s->queue);
  s->table = NULL;
  s->reqs = NULL;
  s->queue = NULL;
  s->n_queued = 0;
  s->cap_reqs = 0;
  publish(s);
}

const struct exo_actor_kind exo_origin_kind = {
  .name = "origin",
  .state_size = sizeof(struct origin_state),
  .init = origin_init,
  .message = origin_message,
  .timer = origin_timer,
  .stop = origin_stop,
};
