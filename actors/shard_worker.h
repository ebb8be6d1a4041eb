/* actors/shard_worker.h: the generation protocol's wire formats (MAP, READY, PROMPT,
 * HIDDEN, TOKEN, CANCEL; docs/PROTOCOL.md "Built") and the "shard-worker" actor kind,
 * which owns one layer range of one model and, when its range ends the model, the
 * sampler beside it (logits never leave the process that computed them).
 * Payload integers are little-endian; floats are IEEE-754 binary32 little-endian.
 * Must not keep token histories beyond what sampling needs: the origin owns them. */
#ifndef EXO_ACTORS_SHARD_WORKER_H
#define EXO_ACTORS_SHARD_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/actor.h"
#include "tensor/sample.h"

/* Message types (application range). */
#define EXO_GEN_MSG_MAP 512u    /* origin -> every shard: epoch, ranges, model dir */
#define EXO_GEN_MSG_READY 513u  /* shard -> MAP's sender: i32 status, u32 0, u64 epoch, text */
#define EXO_GEN_MSG_PROMPT 514u /* origin -> first shard -> ... -> last shard */
#define EXO_GEN_MSG_HIDDEN 515u /* shard -> next shard: rows of hidden state */
#define EXO_GEN_MSG_TOKEN 516u  /* last shard -> origin and first shard */
#define EXO_GEN_MSG_CANCEL 517u /* origin -> every shard: free the request; u32 reason */

#define EXO_SHARD_ACTOR_NAME "shard" /* the name every node gives its shard-worker */
#define EXO_GEN_MAX_RANGES 64u
#define EXO_GEN_MAX_STAGES 16u /* pipeline stages whose timings a message carries */
#define EXO_GEN_MAX_PATH 4096u

/* One range of a MAP: node/actor run layers [a, b). Wire: 4 x u32. */
struct exo_gen_range {
  uint32_t node, actor, a, b;
};

/* MAP payload: u32 n_ranges, u32 path_len, n_ranges x range, path bytes (no NUL; empty
 * means the shard's configured `model`). Ranges are in pipeline order, contiguous from
 * layer 0 to the model's last. The envelope epoch is the map's epoch. */
#define EXO_GEN_MAP_HEAD 8u

/* Per-stage timing carried along a step (all ns, CLOCK_MONOTONIC of the stage's host:
 * comparable across processes of one machine only). Wire: u32 node, u32 pad, u64, u64. */
struct exo_gen_stage {
  uint32_t node;
  uint64_t transfer_in_ns; /* from the previous stage's send to this stage's receive */
  uint64_t compute_ns;     /* forward (and sampling on the last stage) */
};
#define EXO_GEN_STAGE_WIRE 24u
#define EXO_GEN_STAGES_WIRE (EXO_GEN_MAX_STAGES * EXO_GEN_STAGE_WIRE)

/* READY: the shard's epoch after the MAP (its own, newer one when it refused a stale MAP
 * with -ESTALE, so a new coordinator can outbid it). */
#define EXO_GEN_READY_HEAD 16u

/* A wire request id is origin node << 32 | request << 12 | attempt: ids that agree above
 * bit 12 are attempts of one request, and a PROMPT of one frees the caches of the others. */
#define EXO_GEN_WIRE_REQUEST(id) ((id) >> 12)

/* PROMPT payload (EXO_GEN_PROMPT_HEAD bytes, then n_prompt x i32 token ids):
 *   0 f32 temperature  4 i32 top_k  8 f32 top_p  12 f32 min_p  16 f32 repetition
 *  20 f32 presence  24 f32 frequency  28 u32 max_tokens  32 u64 seed  40 u64 sample_key
 *  48 u32 n_prompt  52 u32 origin node  56 u32 origin actor  60 u32 n_done
 *  64 u32 flags (EXO_GEN_PROMPT_F_*)  68 u32 top_logprobs (0..20)
 * sample_key is the request id the sampler's RNG is keyed by (the origin chooses it,
 * so a re-issued request draws the same tokens). n_done: how many of the ids are tokens
 * this request already generated (a re-issue sends prompt + generated as its history; the
 * penalties and max_tokens count from the original prompt, so the tokens are the same). */
#define EXO_GEN_PROMPT_HEAD 72u
#define EXO_GEN_PROMPT_F_LOGPROBS 1u
/* HIDDEN payload: u32 position, u32 rows, u32 hidden, u32 n_stages, stages, u64 sent_ns,
 * u32 dtype (EXO_GEN_WIRE_*), u32 0, then rows x hidden values of that dtype (16-byte
 * aligned within the frame). f16 halves the bytes per hop; the receiver widens to f32. */
#define EXO_GEN_HIDDEN_HEAD (16u + EXO_GEN_STAGES_WIRE + 16u)
#define EXO_GEN_WIRE_F32 0u
#define EXO_GEN_WIRE_F16 1u
/* TOKEN payload: i32 token, u32 flags, u64 position, u64 sent_ns, u32 n_stages, u32 0,
 * stages (EXO_GEN_STAGES_WIRE bytes), then with EXO_GEN_TOKEN_LOGPROBS: f32 logprob of the
 * token, u32 n_top, n_top x (i32 id, f32 logprob). position = index of the token in the
 * request's history. Logprobs are of the model's distribution (log-softmax of the raw
 * logits, before penalties and temperature), as OpenAI reports them. */
#define EXO_GEN_TOKEN_HEAD 32u
#define EXO_GEN_TOKEN_SIZE (EXO_GEN_TOKEN_HEAD + EXO_GEN_STAGES_WIRE)
#define EXO_GEN_TOKEN_MAX_SIZE (EXO_GEN_TOKEN_SIZE + 8u + 8u * 20u)
#define EXO_GEN_TOKEN_FINAL 1u    /* last token of the request */
#define EXO_GEN_TOKEN_ERROR 2u    /* the step failed on a shard; token is -errno */
/* ERROR -ENOSPC: the shard's KV budget is full now (retry later); -E2BIG: this request's
 * cache can never fit; with either, position = need KiB << 32 | budget KiB. */
#define EXO_GEN_TOKEN_EOS 4u      /* with FINAL: the token is an EOS id */
#define EXO_GEN_TOKEN_LOGPROBS 8u /* the logprob trailer follows the stages */
/* alone (no FINAL): no token; a stage holds a step of the request waiting for its turn
 * (queued behind other work), sent at most once a second so the origin does not take a
 * long queue for a lost request */
#define EXO_GEN_TOKEN_WAITING 16u

/* little-endian field access shared by shard_worker.c and origin.c */
void exo_gen_put_u32(uint8_t *p, uint32_t v);
void exo_gen_put_u64(uint8_t *p, uint64_t v);
uint32_t exo_gen_get_u32(const uint8_t *p);
uint64_t exo_gen_get_u64(const uint8_t *p);
void exo_gen_put_f32(uint8_t *p, float v);
float exo_gen_get_f32(const uint8_t *p);
void exo_gen_put_stages(uint8_t *p, const struct exo_gen_stage *s, uint32_t n);
void exo_gen_get_stages(const uint8_t *p, struct exo_gen_stage *s, uint32_t n);
uint64_t exo_gen_now_ns(void); /* CLOCK_MONOTONIC */
/* The 40 bytes PROMPT and SUBMIT share: sampling params, max_tokens at 28, seed at 32. */
#define EXO_GEN_SAMPLING_WIRE 40u
void exo_gen_put_sampling(uint8_t *p, const struct exo_sample_params *sp, uint32_t max_tokens);
void exo_gen_get_sampling(const uint8_t *p, struct exo_sample_params *sp, uint32_t *max_tokens);

/* The kind. Options: `model` (directory, default the config's `model`; MAP may name
 * another), `wire_dtype` (f32 | f16: the hidden states this shard sends; default f32). The range comes from MAP messages, so one set of running nodes serves any
 * partition (and any model) without restarting. */
extern const struct exo_actor_kind exo_shard_worker_kind;

#endif
