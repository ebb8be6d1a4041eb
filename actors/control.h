/* actors/control.h: the cluster control plane's actor kinds and message types:
 * discovery (who is out there), health (who still answers), partitioner (which layers
 * each live node owns; the lowest live id coordinates). They share what they learn
 * through actors/cluster.h. Payload layouts are documented in docs/PROTOCOL.md.
 * Must not carry per-token traffic: that is shard_worker.h's and gen_request.h's. */
#ifndef EXO_ACTORS_CONTROL_H
#define EXO_ACTORS_CONTROL_H

#include "runtime/actor.h"

#define EXO_DISCOVERY_ACTOR_NAME "discovery"
#define EXO_HEALTH_ACTOR_NAME "health"
#define EXO_PARTITIONER_ACTOR_NAME "partitioner"

/* discovery -> discovery of every peer: the announcement JSON (actors/announce.h), the same
 * bytes a UDP datagram carries, for networks without broadcast (static peers). */
#define EXO_CTL_MSG_ANNOUNCE 520u
/* health -> health: u64 instance of the sender (a heartbeat; nothing else) */
#define EXO_CTL_MSG_HEARTBEAT 521u
/* coordinator's partitioner -> every partitioner: the MAP payload of shard_worker.h plus
 * u32 n_layers, u32 coordinator after it; envelope epoch = the map's. Goes live on arrival. */
#define EXO_CTL_MSG_LIVE 522u
/* anyone -> the coordinator's partitioner: force manual ranges (the MAP range list:
 * u32 n, n x (u32 node, u32 actor, u32 a, u32 b)), or n = 0 to return to the configured
 * strategy. Answered with PARTITION_DONE once a map with those ranges is live, or failed. */
#define EXO_CTL_MSG_SET_PARTITION 523u
/* partitioner -> SET_PARTITION's sender: i32 status, u32 0, u64 epoch, text */
#define EXO_CTL_MSG_PARTITION_DONE 524u
/* partitioner -> the node's own origin actor: a new map went live (empty payload byte) */
#define EXO_CTL_MSG_MAP_LIVE 525u
/* partitioner -> the coordinator: LIVE of the envelope's epoch applied (1 byte); the
 * coordinator answers SET_PARTITION only once every node has, so a request sent right
 * after finds the new map wherever it enters */
#define EXO_CTL_MSG_LIVE_ACK 526u

extern const struct exo_actor_kind exo_discovery_kind;
extern const struct exo_actor_kind exo_health_kind;
extern const struct exo_actor_kind exo_partitioner_kind;

#endif
