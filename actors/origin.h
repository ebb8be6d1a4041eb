/* actors/origin.h: the client side of pipelined generation: a small node of its own
 * (one loop, actor "origin") that publishes partition maps to shard-workers, issues
 * PROMPTs, keeps each request's token history and collects TOKENs with their timings.
 * The calling thread drives it through blocking calls with timeouts; the actor does the
 * messaging on its loop. Must not compute anything of the model itself. */
#ifndef EXO_ACTORS_ORIGIN_H
#define EXO_ACTORS_ORIGIN_H

#include <stddef.h>
#include <stdint.h>

#include "actors/shard_worker.h"
#include "runtime/actor.h"
#include "tensor/sample.h"

struct exo_origin;

/* One decode (or prefill, step 0) step as the origin saw it. */
struct exo_origin_step {
  uint64_t step_ns;        /* since the previous TOKEN arrived (step 0: since PROMPT) */
  uint64_t to_origin_ns;   /* last stage's TOKEN send -> arrival here */
  uint32_t n_stages;
  struct exo_gen_stage stages[EXO_GEN_MAX_STAGES];
};

struct exo_origin_result {
  int32_t *ids; /* generated ids (caller frees with exo_origin_result_fini) */
  size_t n_ids;
  struct exo_origin_step *steps; /* n_ids entries */
};
void exo_origin_result_fini(struct exo_origin_result *r);

/* Starts a node with id node_id listening on listen (tcp://127.0.0.1:PORT), with the
 * origin actor. Returns 0, -errno with err filled. */
int exo_origin_new(uint32_t node_id, const char *listen, struct exo_origin **out, char *err,
                   size_t errlen);
void exo_origin_free(struct exo_origin *o); /* stops the node; NULL ok */

/* Connects to a shard node's address (HELLO makes it connect back). */
int exo_origin_add_peer(struct exo_origin *o, const char *addr);
/* True once HELLO from node_id arrived. */
int exo_origin_has_peer(struct exo_origin *o, uint32_t node_id);

/* Publishes ranges (pipeline order; actor ids filled by the caller, usually
 * exo_actor_id(EXO_SHARD_ACTOR_NAME)) of the model in model_dir (NULL: the shards'
 * configured model) under a new epoch, to every node in ranges plus extra[n_extra] (nodes
 * that must drop their old range), and waits for every READY. Returns 0, -ETIMEDOUT, or
 * the first failing shard's status with its message in err. */
int exo_origin_set_map(struct exo_origin *o, const char *model_dir,
                       const struct exo_gen_range *ranges, size_t n,
                       const struct exo_gen_range *extra, size_t n_extra, int timeout_ms,
                       char *err, size_t errlen);

/* Generates up to max_tokens after prompt[n_prompt] under the current map, blocking.
 * sample_key keys the sampler's RNG (0 matches single-node `generate`). on_token (may be
 * NULL) runs on the origin's loop thread for each id as it arrives. Returns 0 with res
 * filled, -ETIMEDOUT, -EIO (a shard failed: err says which), -EINVAL. */
int exo_origin_generate(struct exo_origin *o, const int32_t *prompt, size_t n_prompt,
                        const struct exo_sample_params *sp, uint32_t max_tokens,
                        uint64_t sample_key, void (*on_token)(void *arg, int32_t id),
                        void *arg, int timeout_ms, struct exo_origin_result *res, char *err,
                        size_t errlen);

extern const struct exo_actor_kind exo_origin_kind;

#endif
