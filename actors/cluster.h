/* actors/cluster.h: what one node knows of its cluster, shared by its actors through
 * RCU snapshots (runtime/shared.h): the topology (nodes heard of, with their announced
 * resources and health) and the live partition map. Readers on any loop take no lock;
 * writers (discovery, health-monitor, partitioner) are few and rare, serialized by one
 * writer mutex, and publish whole new snapshots. Must not send messages or block readers.
 * One per node, reached with exo_cluster_of(node) (the node's application context). */
#ifndef EXO_ACTORS_CLUSTER_H
#define EXO_ACTORS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/shard_worker.h"

struct exo_node;
struct exo_config;
struct exo_actor;

#define EXO_CLUSTER_MAX_NODES 64u
#define EXO_CLUSTER_ADDR_MAX 128u
#define EXO_CLUSTER_MODEL_MAX 128u

enum exo_peer_health {
  EXO_PEER_ALIVE = 0,   /* heard recently (or this node) */
  EXO_PEER_SUSPECT = 1, /* the failure detector suspects it: excluded from maps */
};

struct exo_cluster_node {
  uint32_t id;
  char addr[EXO_CLUSTER_ADDR_MAX];   /* its listen address (tcp://host:port) */
  char model[EXO_CLUSTER_MODEL_MAX]; /* model id it serves */
  uint64_t mem_bytes;                /* memory it offers for layers */
  double gflops;                     /* its measured compute estimate */
  uint64_t instance;                 /* random per process: tells a restart from a twin */
  enum exo_peer_health health;
  uint64_t seen_ns;   /* CLOCK_MONOTONIC of the last announcement or heartbeat */
  uint64_t health_ns; /* when health last changed */
};

/* Immutable once published. nodes sorted by id; this node is among them. */
struct exo_topology {
  uint32_t self;
  size_t n;
  struct exo_cluster_node nodes[];
};

/* The partition map every node applies, published when it goes live. */
struct exo_live_map {
  uint64_t epoch;   /* 0: none yet */
  uint32_t coordinator;
  uint32_t n_layers;
  size_t n;                                     /* ranges, pipeline order */
  struct exo_gen_range ranges[EXO_GEN_MAX_RANGES];
  char model[EXO_GEN_MAX_PATH + 1];             /* as sent in MAP ("" = shards' own) */
  uint64_t live_ns;                             /* when this node applied it */
};

struct exo_cluster;

/* The node's cluster state, created on first use, which must come before exo_node_start
 * (it becomes the node's context; `exo-actors run` does it). NULL on allocation failure,
 * when the node's context is something else, or when first called after the start. */
struct exo_cluster *exo_cluster_of(struct exo_node *node);

/* exo_cluster_of for an actor's init: NULL with err filled when the node has none. */
struct exo_cluster *exo_cluster_of_actor(struct exo_actor *self, char *err, size_t errlen);

/* ---- readers (any thread registered with exo_shared_thread_register; inside
 * exo_shared_read_lock .. unlock; pointers valid until unlock) ---- */
const struct exo_topology *exo_cluster_topology(struct exo_cluster *c, uint64_t *version);
const struct exo_live_map *exo_cluster_live_map(struct exo_cluster *c);
/* Copies (no read section needed): 0, or -ENOENT before the first publish. */
int exo_cluster_copy_live_map(struct exo_cluster *c, struct exo_live_map *out);
/* Copies node id into *out (seen_ns from heartbeats included): 0, or -ENOENT. For paths
 * that run per message (a heartbeat, an announcement), where copying the whole table
 * would be most of their cost. */
int exo_cluster_find_node(struct exo_cluster *c, uint32_t id, struct exo_cluster_node *out);
/* Copies up to max nodes into out; returns the count (may exceed max). */
size_t exo_cluster_copy_nodes(struct exo_cluster *c, struct exo_cluster_node *out, size_t max);

/* ---- writers (any registered thread, outside a read section) ---- */
/* Adds or updates a node from its announcement (keeps its health unless it was absent).
 * Returns 1 when something the partitioner cares about changed, 0 when not, -ENOSPC
 * (table full), -ENOMEM. */
int exo_cluster_upsert(struct exo_cluster *c, const struct exo_cluster_node *n);
/* Marks id alive/suspect; returns 1 if its health changed, 0 if not, -ENOENT. */
int exo_cluster_set_health(struct exo_cluster *c, uint32_t id, enum exo_peer_health h);
/* Records a heartbeat or any sign of life (seen_ns = now); no publish (atomic field in a
 * side table, not the snapshot). */
void exo_cluster_touch(struct exo_cluster *c, uint32_t id);
/* Publishes map as live. Returns 0, -ESTALE (epoch not above the live one), -ENOMEM. */
int exo_cluster_publish_map(struct exo_cluster *c, const struct exo_live_map *map);
/* Highest map epoch this node has seen (live or offered), for a new coordinator. */
uint64_t exo_cluster_max_epoch(struct exo_cluster *c);
/* Requests holding a KV cache in this node's shard-worker (a gauge for /metrics: a
 * finished or cancelled request must bring it back down on every node). */
void exo_cluster_shard_requests_add(struct exo_cluster *c, int delta);
int64_t exo_cluster_shard_requests(struct exo_cluster *c);
void exo_cluster_note_epoch(struct exo_cluster *c, uint64_t epoch);
/* The node's origin counters (struct exo_origin_stats, actors/origin_table.h): the origin
 * writes them, /metrics reads them. Lives as long as c. */
struct exo_origin_stats;
struct exo_origin_stats *exo_cluster_origin_stats(struct exo_cluster *c);

#endif
