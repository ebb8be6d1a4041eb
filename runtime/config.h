/* runtime/config.h: the actor-graph config of one node (schema in docs/CONFIG.md), parsed
 * from YAML into an immutable struct. Owns validation with positioned errors
 * "file:line:column: field: message" (1-based). Must not know actor kinds: the set of
 * registered kind names is a parameter, and per-kind options stay raw (key, value,
 * position) so the kind's init validates them with the same positioned errors. */
#ifndef EXO_RUNTIME_CONFIG_H
#define EXO_RUNTIME_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EXO_CONFIG_MAX_LOOPS 256u
#define EXO_CONFIG_MAX_ACTORS 4096u
#define EXO_CONFIG_MAX_NAME 63u /* actor names: [A-Za-z0-9_.-], 1..63 chars */

struct exo_config_pos {
  int line, col; /* 1-based */
};

/* One per-kind option: a scalar value kept as text. */
struct exo_config_option {
  char *key;
  char *value;
  struct exo_config_pos key_pos, value_pos;
};

struct exo_actor_config {
  char *name;    /* unique within the node */
  char *kind;    /* one of the registered kinds */
  uint32_t loop; /* loop index < exo_config.loops */
  uint32_t id;   /* exo_actor_id(name): the actor's wire id */
  struct exo_config_option *options;
  size_t n_options;
  struct exo_config_pos pos, name_pos, kind_pos, loop_pos;
};

enum exo_supervision_strategy {
  EXO_SUPERVISION_ONE_FOR_ONE = 0,  /* restart the failed actor */
  EXO_SUPERVISION_ONE_FOR_ALL = 1,  /* restart every actor of the node */
  EXO_SUPERVISION_REST_FOR_ONE = 2, /* restart the failed one and those listed after it */
};

struct exo_supervision_config {
  enum exo_supervision_strategy strategy; /* default one_for_one */
  uint32_t intensity;                     /* restarts allowed per period; default 3 */
  uint32_t period_ms;                     /* default 5000 */
  uint32_t watchdog_ms; /* a handler running longer escalates; 0: EXO_SUPERVISION_WATCHDOG_MS */
};
/* Default stall limit: a shard's 256-token prefill chunk of a 1B model takes ~5 s here. */
#define EXO_SUPERVISION_WATCHDOG_MS 30000u

struct exo_config {
  char *path; /* the name errors use */
  char *cluster;
  uint32_t node_id;  /* 0 when node_id_auto */
  bool node_id_auto; /* `id: auto`: the discovery layer assigns a persistent id */
  char *listen;      /* tcp://host:port or ipc://path, NULL when absent */
  uint32_t loops;    /* 1..EXO_CONFIG_MAX_LOOPS, default 1 */
  char *model;       /* NULL when absent */
  char *log_level;   /* "error" | "warn" | "info" | "debug", NULL when absent */
  char *faults;      /* `faults:` transport fault spec (runtime/fault.h), NULL: none */
  struct exo_config_pos faults_pos;
  char *key;         /* `key:` as written (cluster key file), NULL: unauthenticated */
  char *key_path;    /* key resolved: a relative path is relative to the config's dir */
  struct exo_config_pos key_pos;
  char **peers;      /* addresses, same rules as listen */
  size_t n_peers;
  struct exo_actor_config *actors;
  size_t n_actors;
  struct exo_supervision_config supervision;
};

/* Parses and validates the file at path. kinds: NULL-terminated list of registered kind
 * names (NULL accepts any kind). On success *out is a new config the caller frees with
 * exo_config_free. Returns 0, -ENOENT/-EACCES/... (file), -EINVAL (invalid, err holds
 * "path:line:col: message"), -ENOMEM. */
int exo_config_load(const char *path, const char *const *kinds, struct exo_config **out, char *err,
                    size_t errlen);

/* Same from a buffer; name is used in errors and stored as cfg->path. */
int exo_config_parse(const char *text, size_t len, const char *name, const char *const *kinds,
                     struct exo_config **out, char *err, size_t errlen);

void exo_config_free(struct exo_config *cfg); /* NULL ok */

/* Writes cfg as canonical YAML of the same schema (re-parses to an equal config), with
 * each actor's wire id as a comment. Returns 0 or -EIO. */
int exo_config_write(const struct exo_config *cfg, FILE *out);

const struct exo_actor_config *exo_config_find_actor(const struct exo_config *cfg,
                                                     const char *name);
/* The option's entry, or NULL. */
const struct exo_config_option *exo_config_option(const struct exo_actor_config *actor,
                                                  const char *key);

/* For kinds validating their options, errors positioned like the loader's:
 * option_u64: *out = the option parsed as a decimal integer in [min, max], or def when
 * absent. option_str: *out = the option's text (owned by cfg), or def when absent.
 * check_options: every option key is in allowed (NULL-terminated).
 * Each returns 0 or -EINVAL with err "path:line:col: actors[i].options.key: ...". */
int exo_config_option_u64(const struct exo_config *cfg, const struct exo_actor_config *actor,
                          const char *key, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                          char *err, size_t errlen);
int exo_config_option_str(const struct exo_config *cfg, const struct exo_actor_config *actor,
                          const char *key, const char *def, const char **out, char *err,
                          size_t errlen);
int exo_config_check_options(const struct exo_config *cfg, const struct exo_actor_config *actor,
                             const char *const *allowed, char *err, size_t errlen);
/* For a kind's own checks of an option's value: err = "path:line:col: actors[i].options.key:
 * " + the formatted text, positioned at the option's value (at the actor's entry when the
 * option is absent). Returns -EINVAL. */
int exo_config_option_fail(const struct exo_config *cfg, const struct exo_actor_config *actor,
                           const char *key, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

const char *exo_supervision_strategy_name(enum exo_supervision_strategy s);

/* Checks a nanomsg address for inter-node frames: tcp://HOST:PORT (port 1..65535) or
 * ipc://PATH. Returns 0 or -EINVAL with a message (no position) in err. */
int exo_config_check_address(const char *addr, char *err, size_t errlen);

#endif
