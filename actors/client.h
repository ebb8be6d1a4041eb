/* actors/client.h: a blocking client of a running cluster, for commands and tests: a tiny
 * node of its own (one loop, actor "client", no discovery: it is nobody's peer in the
 * topology) that connects to a node, submits a generation to that node's origin actor and
 * collects the EVENTs, or asks the coordinator to force ranges. One call at a time; the
 * calling thread waits on a condition variable while the actor does the messaging.
 * Must not know models or tokenizers. */
#ifndef EXO_ACTORS_CLIENT_H
#define EXO_ACTORS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "actors/gen_request.h"

struct exo_client;

struct exo_client_result {
  int32_t *ids; /* generated ids (exo_client_result_fini frees) */
  size_t n_ids;
  struct exo_req_event *events; /* one per id (timings, logprobs) */
  enum exo_req_finish finish;
  uint32_t attempts;
};
void exo_client_result_fini(struct exo_client_result *r);

/* Starts the client node listening on listen ("tcp://127.0.0.1:0" is not allowed by
 * nanomsg: give a port; NULL picks a free loopback one). Its node id is random above
 * 2^31 (cluster nodes use small ids). Returns 0 or -errno with err filled. */
int exo_client_new(const char *listen, struct exo_client **out, char *err, size_t errlen);
/* Same for a keyed cluster: key_path (NULL: none) is the cluster key file (runtime/auth.h);
 * without the right key a keyed cluster drops every frame of this client. */
int exo_client_new_keyed(const char *listen, const char *key_path, struct exo_client **out,
                         char *err, size_t errlen);
void exo_client_free(struct exo_client *c); /* NULL ok */

/* Connects to a node's listen address and waits (up to timeout_ms) for its HELLO; its id
 * goes to *node_id. Returns 0, -ETIMEDOUT, -EINVAL. */
int exo_client_connect(struct exo_client *c, const char *addr, int timeout_ms,
                       uint32_t *node_id, char *err, size_t errlen);

/* Generates through node_id's origin. on_event (may be NULL) runs on the client's loop
 * thread for every event. Returns 0 with res filled (finish stop/length), -ETIMEDOUT (the
 * request is cancelled), or the request's error (-errno, err says what). */
int exo_client_generate(struct exo_client *c, uint32_t node_id, const struct exo_req_submit *req,
                        void (*on_event)(void *arg, const struct exo_req_event *e), void *arg,
                        int timeout_ms, struct exo_client_result *res, char *err,
                        size_t errlen);

/* Asks node_id's partitioner (the coordinator's; another one redirects once) to make
 * ranges[n] live (n = 0: back to the configured strategy) and waits until they are.
 * Returns 0 with *epoch (may be NULL), or -errno with err. */
int exo_client_set_partition(struct exo_client *c, uint32_t node_id,
                             const struct exo_gen_range *ranges, size_t n, int timeout_ms,
                             uint64_t *epoch, char *err, size_t errlen);

#endif
