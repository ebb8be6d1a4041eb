/* tests/fault/scenario.h: a fault scenario as the harness runs it: the cluster (nodes,
 * model, origin), the client load, and a timeline of faults; parsed from YAML (libyaml)
 * with file:line:column errors. Owns parsing and checking only: it never starts a node
 * or touches the network (tests/fault/harness.c does). */
#ifndef EXO_TESTS_FAULT_SCENARIO_H
#define EXO_TESTS_FAULT_SCENARIO_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define EXO_SCN_MAX_EVENTS 256
#define EXO_SCN_SPEC_MAX 512

enum exo_scn_trigger {
  EXO_SCN_AT_MS,     /* ms since the fault phase's load started */
  EXO_SCN_AT_TOKENS, /* tokens received by all clients in the fault phase */
  EXO_SCN_AFTER_MS,  /* ms after the previous event fired */
};

enum exo_scn_action {
  EXO_SCN_KILL,      /* SIGKILL node */
  EXO_SCN_STOP,      /* SIGSTOP node */
  EXO_SCN_CONT,      /* SIGCONT node */
  EXO_SCN_RESTART,   /* start node again (killed first if running) */
  EXO_SCN_FAULTS,    /* transport faults `spec` on every inter-node link of node (0: all) */
  EXO_SCN_CUT,       /* drop every frame between node and node_b, both ways */
  EXO_SCN_HEAL,      /* undo CUT between node and node_b */
  EXO_SCN_PARTITION, /* cut node from every other node */
  EXO_SCN_HEAL_ALL,  /* undo every cut involving node (0: every cut) */
};

struct exo_scn_event {
  enum exo_scn_trigger trigger;
  double at;                 /* ms or tokens, per trigger */
  enum exo_scn_action action;
  uint32_t node, node_b;     /* node ids (node 0 with FAULTS/HEAL_ALL: every node) */
  char spec[EXO_SCN_SPEC_MAX]; /* FAULTS: runtime/fault.h rule effects; "" turns them off */
  int line;                  /* where it was written, for the report */
};

struct exo_scenario {
  char path[PATH_MAX];
  char name[64];
  int nodes;                 /* 1..16, ids 1..nodes */
  char model[PATH_MAX];      /* resolved directory */
  uint32_t origin;           /* the node clients submit through; never faulted */
  char origin_options[256];  /* the origin actor's options ("step_timeout_ms: 1000") */
  char partitioner_options[256]; /* extra partitioner options ("ready_timeout_ms: 3000") */
  int batch;                 /* shard-worker batch (0: default) */
  /* load */
  int requests;              /* distinct requests (each recorded fault-free first) */
  int concurrency;           /* client streams, one exo_client each */
  int max_tokens[2];         /* range, drawn per request */
  int prompt_tokens[2];      /* range, drawn per request */
  double greedy_fraction;    /* the rest are seeded (temperature 0.8, top_p 0.9) */
  int loop;                  /* nonzero: streams repeat the requests until the timeline ends */
  int timeout_ms;            /* one request's client timeout */
  /* timeline */
  struct exo_scn_event ev[EXO_SCN_MAX_EVENTS];
  int n_ev;
  int soak_ms;               /* > 0: the timeline is random faults for this long (seeded) */
  /* expectations */
  int max_failed;            /* requests allowed to fail with a clear error */
  int final_stages;          /* > 0: after the load, a request must span this many nodes */
};

/* Parses path into *s. Fixture names resolve under $EXO_FIXTURES, "demo" to
 * $EXO_SOURCE_ROOT/models/demo, anything else is a path. Returns 0 or -EINVAL/-errno with
 * err "FILE:LINE:COL: what: expected ..., got ...". */
int exo_scenario_load(const char *path, struct exo_scenario *s, char *err, size_t errlen);

const char *exo_scn_action_name(enum exo_scn_action a);

#endif
