/* actors/local_cluster.h: K `exo-actors run` child processes on loopback, each from a
 * generated config (temp dir, ports picked by the kernel), for `generate --nodes K` and
 * the integration tests. Owns the children and the temp dir: free stops them (SIGTERM,
 * then SIGKILL after a grace period), reaps them and removes the dir, and each child dies
 * with its parent (PR_SET_PDEATHSIG), so none is left orphaned. Must not know the
 * protocol: readiness beyond "still running" is the caller's check. */
#ifndef EXO_ACTORS_LOCAL_CLUSTER_H
#define EXO_ACTORS_LOCAL_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define EXO_LOCAL_CLUSTER_MAX 16

struct exo_local_cluster;

struct exo_local_cluster_opts {
  const char *exe;       /* the exo-actors binary */
  int n_nodes;           /* 1..EXO_LOCAL_CLUSTER_MAX */
  uint32_t first_id;     /* node ids first_id .. first_id + n_nodes - 1 */
  const char *model;     /* written as each config's `model` (may be NULL) */
  const char *log_level; /* "warn" when NULL */
  /* the control plane (see docs/CONFIG.md for the actors each node runs) */
  int udp_port;          /* > 0: UDP discovery on 127.255.255.255:port, no static peers */
  int min_nodes;         /* partitioner min_nodes (0: n_nodes) */
  int settle_ms;         /* partitioner settle_ms (0 ok: publish at once) */
  const char *strategy;  /* "even" when NULL (and no ranges) */
  const char *ranges;    /* manual "1=0:3,2=3:6": strategy manual */
  const char *cluster;   /* cluster name, "local" when NULL */
  const char *wire_dtype; /* shard-worker wire_dtype (f32 when NULL) */
  int prefill_chunk;      /* shard-worker prefill_chunk (0: its default) */
  int batch;              /* shard-worker batch (0: its default) */
  const char *node_key;   /* written as every config's `key:` (NULL: unauthenticated) */
  int shard_on_loop0;     /* shard-worker on the transport's loop (no hop; heartbeats wait
                             for compute): latency mode for small models */
  /* for the fault harness (tests/fault) */
  int api;                /* nonzero: each node also runs an api actor on a picked port */
  int fault_files;        /* nonzero: each config has faults: "@DIR/nodeID.faults" (runtime/
                             fault.h: write that file to switch the node's faults; absent: off) */
  const char *origin_options; /* the origin actor's options, a flow mapping's body
                                 ("step_timeout_ms: 1000"); NULL: defaults */
  const char *partitioner_options; /* appended to the partitioner's options (NULL: none) */
  const char *health_options; /* the health actor's options ("max_silence_ms: 2000"); NULL:
                                 defaults */
  const char *api_options;   /* appended to the api actor's options ("max_connections: 300") */
  const char *shard_options; /* appended to the shard-worker's options ("kv_budget_kb: 200") */
};

/* Picks a free tcp port on 127.0.0.1, at random below the ephemeral range (a plain bind
 * to it succeeds; then closed). 0, or -EADDRINUSE after 500 taken candidates. */
int exo_local_cluster_pick_port(int *port);

/* Writes the configs and starts the children. Returns 0 or -errno with err filled. */
int exo_local_cluster_start(const struct exo_local_cluster_opts *opts,
                            struct exo_local_cluster **out, char *err, size_t errlen);
int exo_local_cluster_size(const struct exo_local_cluster *c);
uint32_t exo_local_cluster_node_id(const struct exo_local_cluster *c, int i);
const char *exo_local_cluster_addr(const struct exo_local_cluster *c, int i);
pid_t exo_local_cluster_pid(const struct exo_local_cluster *c, int i); /* 0: not running */
const char *exo_local_cluster_dir(const struct exo_local_cluster *c); /* configs and logs */
int exo_local_cluster_api_port(const struct exo_local_cluster *c, int i); /* 0: no api */
/* Node i's fault spec file (opts.fault_files), "" without. */
const char *exo_local_cluster_fault_file(const struct exo_local_cluster *c, int i, char *buf,
                                         size_t cap);
/* Kills node i if it runs (SIGKILL, reaped) and starts it again from the same config,
 * same id and address; its log is appended to, not truncated. Returns 0 or -errno. */
int exo_local_cluster_restart(struct exo_local_cluster *c, int i, char *err, size_t errlen);
/* 0 while every child runs; -ECHILD when one has exited (err names it, its status and the
 * last line of its log). */
int exo_local_cluster_check(struct exo_local_cluster *c, char *err, size_t errlen);
/* Stops, reaps, removes the temp dir. NULL ok. */
void exo_local_cluster_free(struct exo_local_cluster *c);

#endif

/* ---- `exo-actors generate --nodes K` ----------------------------------------------- */
#include "tensor/sample.h"

struct exo_cluster_gen_opts {
  const char *exe;       /* exo-actors binary for the children */
  const char *model_dir;
  int n_nodes;           /* 0: as many as partition has ranges */
  const char *connect;   /* a running node's address: use that cluster, start none */
  const char *key_path;  /* with connect: the cluster key file (NULL: unauthenticated) */
  const char *partition; /* "a:b,b:c,..." or NULL: even split (actors/partition.c) */
  int stats;             /* per-step timing lines on stderr */
  void (*on_token)(void *arg, int32_t id); /* runs on the origin's loop thread */
  void *arg;
};

/* Starts the children, publishes the map, generates, tears everything down. *ids (caller
 * frees) receives the generated ids. Returns 0 or -errno with err filled. */
int exo_cluster_generate(const struct exo_cluster_gen_opts *o, const int32_t *prompt,
                         size_t n_prompt, const struct exo_sample_params *sp,
                         uint32_t max_tokens, int32_t **ids, size_t *n_ids, char *err,
                         size_t errlen);
