/* runtime/config.c: loads the actor-graph config (schema in docs/CONFIG.md) with libyaml's
 * document API and our own schema walk. libcyaml was suggested, but it reports schema
 * errors (wrong type, unknown key, missing field) without reliable line:column; walking
 * libyaml's node tree keeps every node's start mark, so every error names its place.
 * Invariants: the first error wins and is reported as "path:line:col: field: message";
 * on error nothing is returned and everything is freed; no limit is taken on trust
 * (file size, actor count, integer ranges, string bytes). Must not know actor kinds. */
#include "runtime/config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "runtime/envelope.h"
#include "runtime/fault.h"
#include "runtime/log.h"

#define CONFIG_MAX_FILE (1u << 20)

struct walker {
  const char *path;
  yaml_document_t *doc;
  const char *const *kinds;
  char *err;
  size_t errlen;
};

static void put_err(char *err, size_t errlen, const char *path, int line, int col, const char *fmt,
                    va_list ap)
{
  if (!err || !errlen)
    return;
  int n = snprintf(err, errlen, "%s:%d:%d: ", path, line, col);
  if (n >= 0 && (size_t)n < errlen)
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

static int fail_mark(struct walker *w, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_mark(struct walker *w, yaml_mark_t m, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  put_err(w->err, w->errlen, w->path, (int)m.line + 1, (int)m.column + 1, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

static int fail_pos(const char *path, struct exo_config_pos p, char *err, size_t errlen,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail_pos(const char *path, struct exo_config_pos p, char *err, size_t errlen,
                    const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  put_err(err, errlen, path, p.line, p.col, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

static struct exo_config_pos pos_of(const yaml_node_t *n)
{
  struct exo_config_pos p = {(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};
  return p;
}

static yaml_node_t *node_at(struct walker *w, int index)
{
  return yaml_document_get_node(w->doc, index);
}

static const char *scalar_text(const yaml_node_t *n)
{
  return (const char *)n->data.scalar.value;
}

static bool scalar_is_null(const yaml_node_t *n)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return false;
  const char *s = scalar_text(n);
  return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* A plain scalar of decimal digits (optional leading '-') fitting in u64; *neg for '-'. */
static bool scalar_integer(const yaml_node_t *n, uint64_t *v, bool *neg)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return false;
  const char *s = scalar_text(n);
  *neg = false;
  if (*s == '-' || *s == '+') {
    *neg = *s == '-';
    s++;
  }
  if (!*s)
    return false;
  uint64_t x = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return false;
    if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, (uint64_t)(*s - '0'), &x))
      return false;
  }
  *v = x;
  return true;
}

/* "string 'abc'", "integer 5", "null", "mapping", "sequence" for messages. */
static const char *describe(const yaml_node_t *n, char *buf, size_t size)
{
  uint64_t v;
  bool neg;
  switch (n->type) {
  case YAML_MAPPING_NODE:
    return "mapping";
  case YAML_SEQUENCE_NODE:
    return "sequence";
  case YAML_SCALAR_NODE:
    if (scalar_is_null(n))
      return "null";
    if (scalar_integer(n, &v, &neg)) {
      snprintf(buf, size, "integer %s", scalar_text(n));
      return buf;
    }
    if (n->data.scalar.length > 40)
      snprintf(buf, size, "string '%.37s...'", scalar_text(n));
    else
      snprintf(buf, size, "string '%s'", scalar_text(n));
    return buf;
  default:
    return "nothing";
  }
}

static int expect_type(struct walker *w, yaml_node_t *n, yaml_node_type_t type, const char *field)
{
  if (n->type == type && !(type == YAML_SCALAR_NODE && scalar_is_null(n)))
    return 0;
  char buf[64];
  const char *want = type == YAML_MAPPING_NODE    ? "mapping"
                     : type == YAML_SEQUENCE_NODE ? "sequence"
                                                  : "string";
  return fail_mark(w, n->start_mark, "%s: expected %s, got %s", field, want,
                   describe(n, buf, sizeof buf));
}

/* A non-null scalar without NUL bytes, copied into *out (replacing any old value). */
static int get_str(struct walker *w, yaml_node_t *n, const char *field, char **out)
{
  int rc = expect_type(w, n, YAML_SCALAR_NODE, field);
  if (rc < 0)
    return rc;
  if (strlen(scalar_text(n)) != n->data.scalar.length)
    return fail_mark(w, n->start_mark, "%s: string contains a NUL byte", field);
  char *s = strdup(scalar_text(n));
  if (!s)
    return -ENOMEM;
  free(*out);
  *out = s;
  return 0;
}

static int get_u32(struct walker *w, yaml_node_t *n, const char *field, uint32_t min, uint32_t max,
                   uint32_t *out)
{
  uint64_t v;
  bool neg;
  char buf[64];
  if (!scalar_integer(n, &v, &neg))
    return fail_mark(w, n->start_mark, "%s: expected integer, got %s", field,
                     describe(n, buf, sizeof buf));
  if (neg || v < min || v > max)
    return fail_mark(w, n->start_mark, "%s: %s out of range %" PRIu32 "..%" PRIu32, field,
                     scalar_text(n), min, max);
  *out = (uint32_t)v;
  return 0;
}

/* Iterates a mapping's pairs, rejecting non-scalar keys, duplicate keys and keys not in
 * allowed (NULL-terminated; NULL allows any). Calls fn(w, ctx, key, value) per pair. */
typedef int (*pair_fn)(struct walker *w, void *ctx, yaml_node_t *key, yaml_node_t *value);

static int walk_mapping(struct walker *w, yaml_node_t *map, const char *field,
                        const char *const *allowed, pair_fn fn, void *ctx)
{
  int rc = expect_type(w, map, YAML_MAPPING_NODE, field);
  if (rc < 0)
    return rc;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node_at(w, p->key), *v = node_at(w, p->value);
    if (!k || !v)
      return fail_mark(w, map->start_mark, "%s: malformed mapping", field);
    char buf[64];
    if (k->type != YAML_SCALAR_NODE)
      return fail_mark(w, k->start_mark, "%s: expected a string key, got %s", field,
                       describe(k, buf, sizeof buf));
    const char *key = scalar_text(k);
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
      yaml_node_t *k2 = node_at(w, q->key);
      if (k2 && k2->type == YAML_SCALAR_NODE && !strcmp(scalar_text(k2), key))
        return fail_mark(w, k->start_mark, "%s: duplicate key '%s' (first at line %d)", field, key,
                         (int)k2->start_mark.line + 1);
    }
    if (allowed) {
      bool ok = false;
      for (const char *const *a = allowed; *a && !ok; a++)
        ok = !strcmp(*a, key);
      if (!ok) {
        char list[256] = "";
        size_t used = 0;
        for (const char *const *a = allowed; *a; a++) {
          int n = snprintf(list + used, sizeof list - used, "%s%s", a == allowed ? "" : ", ", *a);
          if (n < 0 || (size_t)n >= sizeof list - used)
            break;
          used += (size_t)n;
        }
        return fail_mark(w, k->start_mark, "%s: unknown key '%.64s' (expected one of: %s)", field,
                         key, list);
      }
    }
    rc = fn(w, ctx, k, v);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Finds key in a mapping already walked (keys are unique by then). */
static yaml_node_t *map_get(struct walker *w, yaml_node_t *map, const char *key)
{
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node_at(w, p->key);
    if (k && k->type == YAML_SCALAR_NODE && !strcmp(scalar_text(k), key))
      return node_at(w, p->value);
  }
  return NULL;
}

static int require_keys(struct walker *w, yaml_node_t *map, const char *field,
                        const char *const *required)
{
  for (const char *const *r = required; *r; r++)
    if (!map_get(w, map, *r))
      return fail_mark(w, map->start_mark, "%s: missing required key '%s'", field, *r);
  return 0;
}

/* ---- addresses ------------------------------------------------------------------- */

int exo_config_check_address(const char *addr, char *err, size_t errlen)
{
  if (!strncmp(addr, "ipc://", 6)) {
    if (!addr[6]) {
      snprintf(err, errlen, "empty ipc path in '%s'", addr);
      return -EINVAL;
    }
    return 0;
  }
  if (strncmp(addr, "tcp://", 6) != 0) {
    const char *sep = strstr(addr, "://");
    if (sep)
      snprintf(err, errlen,
               "bad address scheme '%.*s' in '%s' (expected tcp://HOST:PORT or ipc://PATH)",
               (int)(sep - addr > 16 ? 16 : sep - addr), addr, addr);
    else
      snprintf(err, errlen, "bad address '%s': no scheme (expected tcp://HOST:PORT or ipc://PATH)",
               addr);
    return -EINVAL;
  }
  const char *host = addr + 6, *colon = strrchr(host, ':');
  if (!colon || colon == host) {
    snprintf(err, errlen, "bad tcp address '%s' (expected tcp://HOST:PORT)", addr);
    return -EINVAL;
  }
  const char *port = colon + 1;
  unsigned long v = 0;
  size_t nd = 0;
  for (; port[nd] >= '0' && port[nd] <= '9' && nd < 6; nd++)
    v = v * 10 + (unsigned long)(port[nd] - '0');
  if (nd == 0 || port[nd] || v < 1 || v > 65535) {
    snprintf(err, errlen, "bad port '%s' in '%s' (expected 1..65535)", port, addr);
    return -EINVAL;
  }
  return 0;
}

static int get_address(struct walker *w, yaml_node_t *n, const char *field, char **out)
{
  int rc = get_str(w, n, field, out);
  if (rc < 0)
    return rc;
  char msg[256];
  if (exo_config_check_address(*out, msg, sizeof msg) < 0)
    return fail_mark(w, n->start_mark, "%s: %s", field, msg);
  return 0;
}

/* ---- schema walk ------------------------------------------------------------------ */

static const char *const top_keys[] = {"cluster", "node",   "loops",       "model", "log",
                                       "peers",   "actors", "supervision", "key",   "faults",
                                       NULL};
static const char *const top_required[] = {"cluster", "node", NULL};
static const char *const node_keys[] = {"id", "listen", NULL};
static const char *const node_required[] = {"id", NULL};
static const char *const actor_keys[] = {"name", "kind", "loop", "options", NULL};
static const char *const actor_required[] = {"name", "kind", NULL};
static const char *const supervision_keys[] = {"strategy", "intensity", "period_ms",
                                               "watchdog_ms", NULL};

static const char *const strategy_names[] = {"one_for_one", "one_for_all", "rest_for_one"};

const char *exo_supervision_strategy_name(enum exo_supervision_strategy s)
{
  return (unsigned)s < 3 ? strategy_names[s] : "?";
}

static int node_pair(struct walker *w, void *ctx, yaml_node_t *k, yaml_node_t *v)
{
  struct exo_config *cfg = ctx;
  const char *key = scalar_text(k);
  if (!strcmp(key, "id")) {
    if (v->type == YAML_SCALAR_NODE && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        !strcmp(scalar_text(v), "auto")) {
      cfg->node_id_auto = true;
      cfg->node_id = 0;
      return 0;
    }
    return get_u32(w, v, "node.id", 1, UINT32_MAX, &cfg->node_id); /* 0 means "no node" on the wire */
  }
  return get_address(w, v, "node.listen", &cfg->listen);
}

static int supervision_pair(struct walker *w, void *ctx, yaml_node_t *k, yaml_node_t *v)
{
  struct exo_supervision_config *s = ctx;
  const char *key = scalar_text(k);
  if (!strcmp(key, "intensity"))
    return get_u32(w, v, "supervision.intensity", 0, 1000, &s->intensity);
  if (!strcmp(key, "period_ms"))
    return get_u32(w, v, "supervision.period_ms", 1, 3600000, &s->period_ms);
  if (!strcmp(key, "watchdog_ms"))
    return get_u32(w, v, "supervision.watchdog_ms", 10, 3600000, &s->watchdog_ms);
  char *name = NULL;
  int rc = get_str(w, v, "supervision.strategy", &name);
  if (rc < 0)
    return rc;
  rc = -EINVAL;
  for (unsigned i = 0; i < 3; i++)
    if (!strcmp(name, strategy_names[i])) {
      s->strategy = (enum exo_supervision_strategy)i;
      rc = 0;
    }
  if (rc < 0)
    fail_mark(w, v->start_mark,
              "supervision.strategy: unknown strategy '%.64s' (expected one_for_one, "
              "one_for_all or rest_for_one)",
              name);
  free(name);
  return rc;
}

struct actor_ctx {
  struct exo_actor_config *a;
  char field[48]; /* "actors[i]" */
};

static int option_pair(struct walker *w, void *ctx, yaml_node_t *k, yaml_node_t *v)
{
  struct actor_ctx *ac = ctx;
  struct exo_config_option *o = &ac->a->options[ac->a->n_options];
  char field[160];
  snprintf(field, sizeof field, "%s.options.%.64s", ac->field, scalar_text(k));
  if (v->type != YAML_SCALAR_NODE) {
    char buf[64];
    return fail_mark(w, v->start_mark, "%s: expected scalar, got %s", field,
                     describe(v, buf, sizeof buf));
  }
  /* A null option is an empty string: "key:" in a free map reads naturally as "unset". */
  if (strlen(scalar_text(v)) != v->data.scalar.length)
    return fail_mark(w, v->start_mark, "%s: string contains a NUL byte", field);
  o->key = strdup(scalar_text(k));
  o->value = strdup(scalar_is_null(v) ? "" : scalar_text(v));
  if (!o->key || !o->value) {
    free(o->key);
    free(o->value);
    o->key = o->value = NULL;
    return -ENOMEM;
  }
  o->key_pos = pos_of(k);
  o->value_pos = pos_of(v);
  ac->a->n_options++;
  return 0;
}

static bool kind_known(const char *const *kinds, const char *kind)
{
  if (!kinds)
    return true;
  for (const char *const *k = kinds; *k; k++)
    if (!strcmp(*k, kind))
      return true;
  return false;
}

static int actor_pair(struct walker *w, void *ctx, yaml_node_t *k, yaml_node_t *v)
{
  struct actor_ctx *ac = ctx;
  struct exo_actor_config *a = ac->a;
  const char *key = scalar_text(k);
  char field[96];
  snprintf(field, sizeof field, "%s.%s", ac->field, key);
  if (!strcmp(key, "name")) {
    int rc = get_str(w, v, field, &a->name);
    if (rc < 0)
      return rc;
    size_t n = strlen(a->name);
    bool ok = n >= 1 && n <= EXO_CONFIG_MAX_NAME;
    for (size_t i = 0; ok && i < n; i++) {
      char c = a->name[i];
      ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
    }
    if (!ok)
      return fail_mark(w, v->start_mark,
                       "%s: invalid actor name '%.64s' (1..%u of A-Z a-z 0-9 _ - .)", field,
                       a->name, EXO_CONFIG_MAX_NAME);
    a->name_pos = pos_of(v);
    a->id = exo_actor_id(a->name);
    return 0;
  }
  if (!strcmp(key, "kind")) {
    int rc = get_str(w, v, field, &a->kind);
    if (rc < 0)
      return rc;
    a->kind_pos = pos_of(v);
    if (!kind_known(w->kinds, a->kind)) {
      char list[256] = "";
      size_t used = 0;
      for (const char *const *kk = w->kinds; *kk; kk++) {
        int n = snprintf(list + used, sizeof list - used, "%s%s", kk == w->kinds ? "" : ", ", *kk);
        if (n < 0 || (size_t)n >= sizeof list - used)
          break;
        used += (size_t)n;
      }
      return fail_mark(w, v->start_mark, "%s: unknown actor kind '%.64s' (known: %s)", field,
                       a->kind, used ? list : "none");
    }
    return 0;
  }
  if (!strcmp(key, "loop")) {
    a->loop_pos = pos_of(v);
    return get_u32(w, v, field, 0, EXO_CONFIG_MAX_LOOPS - 1, &a->loop);
  }
  /* options */
  int rc = expect_type(w, v, YAML_MAPPING_NODE, field);
  if (rc < 0)
    return rc;
  size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
  if (n) {
    a->options = calloc(n, sizeof *a->options);
    if (!a->options)
      return -ENOMEM;
  }
  return walk_mapping(w, v, field, NULL, option_pair, ac);
}

static int walk_actors(struct walker *w, struct exo_config *cfg, yaml_node_t *seq)
{
  int rc = expect_type(w, seq, YAML_SEQUENCE_NODE, "actors");
  if (rc < 0)
    return rc;
  size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
  if (n > EXO_CONFIG_MAX_ACTORS)
    return fail_mark(w, seq->start_mark, "actors: %zu actors exceed the limit %u", n,
                     EXO_CONFIG_MAX_ACTORS);
  if (!n)
    return 0;
  cfg->actors = calloc(n, sizeof *cfg->actors);
  if (!cfg->actors)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *item = node_at(w, seq->data.sequence.items.start[i]);
    struct actor_ctx ac = {.a = &cfg->actors[i]};
    snprintf(ac.field, sizeof ac.field, "actors[%zu]", i);
    cfg->n_actors = i + 1; /* so free sees the partly filled entry */
    if (!item)
      return fail_mark(w, seq->start_mark, "%s: malformed sequence", ac.field);
    ac.a->pos = pos_of(item);
    ac.a->loop_pos = ac.a->pos;
    rc = walk_mapping(w, item, ac.field, actor_keys, actor_pair, &ac);
    if (rc < 0)
      return rc;
    rc = require_keys(w, item, ac.field, actor_required);
    if (rc < 0)
      return rc;
  }
  return 0;
}

static int walk_peers(struct walker *w, struct exo_config *cfg, yaml_node_t *seq)
{
  int rc = expect_type(w, seq, YAML_SEQUENCE_NODE, "peers");
  if (rc < 0)
    return rc;
  size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
  if (n > EXO_CONFIG_MAX_ACTORS)
    return fail_mark(w, seq->start_mark, "peers: %zu peers exceed the limit %u", n,
                     EXO_CONFIG_MAX_ACTORS);
  if (!n)
    return 0;
  cfg->peers = calloc(n, sizeof *cfg->peers);
  if (!cfg->peers)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    yaml_node_t *item = node_at(w, seq->data.sequence.items.start[i]);
    char field[32];
    snprintf(field, sizeof field, "peers[%zu]", i);
    cfg->n_peers = i + 1;
    if (!item)
      return fail_mark(w, seq->start_mark, "%s: malformed sequence", field);
    rc = get_address(w, item, field, &cfg->peers[i]);
    if (rc < 0)
      return rc;
  }
  return 0;
}

static int top_pair(struct walker *w, void *ctx, yaml_node_t *k, yaml_node_t *v)
{
  struct exo_config *cfg = ctx;
  const char *key = scalar_text(k);
  if (!strcmp(key, "cluster"))
    return get_str(w, v, "cluster", &cfg->cluster);
  if (!strcmp(key, "model"))
    return get_str(w, v, "model", &cfg->model);
  if (!strcmp(key, "faults")) { /* transport fault spec, checked here (runtime/fault.h) */
    cfg->faults_pos = pos_of(v);
    int rc = get_str(w, v, "faults", &cfg->faults);
    char ferr[256];
    if (rc == 0 && exo_faults_check(cfg->faults, ferr, sizeof ferr) < 0)
      return fail_mark(w, v->start_mark, "%s", ferr);
    return rc;
  }
  if (!strcmp(key, "key")) { /* cluster key file (docs/SECURITY.md) */
    cfg->key_pos = pos_of(v);
    int rc = get_str(w, v, "key", &cfg->key);
    if (rc == 0 && !cfg->key[0])
      return fail_mark(w, v->start_mark, "key: empty path (name a file from `exo-actors keygen`)");
    if (rc < 0 || cfg->key[0] == '/') {
      free(cfg->key_path);
      cfg->key_path = rc < 0 ? NULL : strdup(cfg->key);
      return rc < 0 ? rc : cfg->key_path ? 0 : -ENOMEM;
    }
    const char *slash = strrchr(cfg->path, '/');
    int dlen = slash ? (int)(slash - cfg->path) + 1 : 0;
    free(cfg->key_path);
    cfg->key_path = NULL;
    if (asprintf(&cfg->key_path, "%.*s%s", dlen, cfg->path, cfg->key) < 0) {
      cfg->key_path = NULL;
      return -ENOMEM;
    }
    return 0;
  }
  if (!strcmp(key, "loops"))
    return get_u32(w, v, "loops", 1, EXO_CONFIG_MAX_LOOPS, &cfg->loops);
  if (!strcmp(key, "log")) {
    int rc = get_str(w, v, "log", &cfg->log_level);
    enum exo_log_level lvl;
    if (rc == 0 && exo_log_level_parse(cfg->log_level, &lvl) < 0)
      return fail_mark(w, v->start_mark,
                       "log: unknown level '%.64s' (expected error, warn, info or debug)",
                       cfg->log_level);
    return rc;
  }
  if (!strcmp(key, "peers"))
    return walk_peers(w, cfg, v);
  if (!strcmp(key, "actors"))
    return walk_actors(w, cfg, v);
  if (!strcmp(key, "node")) {
    int rc = walk_mapping(w, v, "node", node_keys, node_pair, cfg);
    return rc < 0 ? rc : require_keys(w, v, "node", node_required);
  }
  return walk_mapping(w, v, "supervision", supervision_keys, supervision_pair, &cfg->supervision);
}

/* Checks that need the whole file: loop indexes against loops, unique names and ids. */
static int check_graph(struct exo_config *cfg, char *err, size_t errlen)
{
  for (size_t i = 0; i < cfg->n_actors; i++) {
    struct exo_actor_config *a = &cfg->actors[i];
    if (a->loop >= cfg->loops)
      return fail_pos(cfg->path, a->loop_pos, err, errlen,
                      "actors[%zu].loop: loop index %" PRIu32 " out of range (loops: %" PRIu32
                      ", so 0..%" PRIu32 ")",
                      i, a->loop, cfg->loops, cfg->loops - 1);
    for (size_t j = 0; j < i; j++) {
      struct exo_actor_config *b = &cfg->actors[j];
      if (!strcmp(a->name, b->name))
        return fail_pos(cfg->path, a->name_pos, err, errlen,
                        "actors[%zu].name: duplicate actor name '%s' (first at line %d)", i,
                        a->name, b->name_pos.line);
      if (a->id == b->id)
        return fail_pos(cfg->path, a->name_pos, err, errlen,
                        "actors[%zu].name: actor id 0x%08" PRIx32
                        " of '%s' collides with '%s' at line %d; rename one",
                        i, a->id, a->name, b->name, b->name_pos.line);
    }
  }
  return 0;
}

static int syntax_error(const char *path, yaml_parser_t *p, char *err, size_t errlen)
{
  if (p->error == YAML_MEMORY_ERROR)
    return -ENOMEM;
  const char *problem = p->problem ? p->problem : "invalid YAML";
  if (p->error == YAML_READER_ERROR) {
    snprintf(err, errlen, "%s: byte offset %zu: %s", path, p->problem_offset, problem);
    return -EINVAL;
  }
  if (p->context)
    snprintf(err, errlen, "%s:%d:%d: %s (%s started at %d:%d)", path, (int)p->problem_mark.line + 1,
             (int)p->problem_mark.column + 1, problem, p->context, (int)p->context_mark.line + 1,
             (int)p->context_mark.column + 1);
  else
    snprintf(err, errlen, "%s:%d:%d: %s", path, (int)p->problem_mark.line + 1,
             (int)p->problem_mark.column + 1, problem);
  return -EINVAL;
}

int exo_config_parse(const char *text, size_t len, const char *name, const char *const *kinds,
                     struct exo_config **out, char *err, size_t errlen)
{
  if (err && errlen)
    err[0] = 0;
  *out = NULL;
  yaml_parser_t parser;
  yaml_document_t doc, doc2;
  bool have_doc = false, have_doc2 = false;
  int rc = -ENOMEM;
  struct exo_config *cfg = calloc(1, sizeof *cfg);
  if (!cfg)
    return -ENOMEM;
  cfg->path = strdup(name ? name : "<config>");
  cfg->loops = 1;
  cfg->supervision.strategy = EXO_SUPERVISION_ONE_FOR_ONE;
  cfg->supervision.intensity = 3;
  cfg->supervision.period_ms = 5000;
  if (!cfg->path || !yaml_parser_initialize(&parser))
    goto fail_cfg;
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &doc)) {
    rc = syntax_error(cfg->path, &parser, err, errlen);
    goto fail_parser;
  }
  have_doc = true;
  struct walker w = {cfg->path, &doc, kinds, err, errlen};
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (!root) {
    rc = fail_mark(&w, doc.start_mark,
                   "empty config (expected a mapping with 'cluster' and 'node')");
    goto fail_parser;
  }
  if (!yaml_parser_load(&parser, &doc2)) {
    rc = syntax_error(cfg->path, &parser, err, errlen);
    goto fail_parser;
  }
  have_doc2 = true;
  yaml_node_t *root2 = yaml_document_get_root_node(&doc2);
  if (root2) {
    rc = fail_mark(&w, root2->start_mark, "a second YAML document; the config is one document");
    goto fail_parser;
  }
  char buf[64];
  if (root->type != YAML_MAPPING_NODE) {
    rc = fail_mark(&w, root->start_mark, "expected a mapping at the top level, got %s",
                   describe(root, buf, sizeof buf));
    goto fail_parser;
  }
  rc = walk_mapping(&w, root, "config", top_keys, top_pair, cfg);
  if (rc < 0)
    goto fail_parser;
  rc = require_keys(&w, root, "config", top_required);
  if (rc < 0)
    goto fail_parser;
  rc = check_graph(cfg, err, errlen);
  if (rc < 0)
    goto fail_parser;
  yaml_document_delete(&doc2);
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  *out = cfg;
  return 0;

fail_parser:
  if (have_doc2)
    yaml_document_delete(&doc2);
  if (have_doc)
    yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
fail_cfg:
  if (rc == -ENOMEM && err && errlen)
    snprintf(err, errlen, "%s: out of memory", name ? name : "<config>");
  exo_config_free(cfg);
  return rc;
}

int exo_config_load(const char *path, const char *const *kinds, struct exo_config **out, char *err,
                    size_t errlen)
{
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    return -e;
  }
  char *buf = malloc(CONFIG_MAX_FILE + 1);
  if (!buf) {
    fclose(f);
    return -ENOMEM;
  }
  size_t n = fread(buf, 1, CONFIG_MAX_FILE + 1, f);
  int rc;
  if (ferror(f)) {
    snprintf(err, errlen, "%s: read error", path);
    rc = -EIO;
  } else if (n > CONFIG_MAX_FILE) {
    snprintf(err, errlen, "%s: larger than the %u-byte limit for a config", path, CONFIG_MAX_FILE);
    rc = -EFBIG;
  } else {
    rc = exo_config_parse(buf, n, path, kinds, out, err, errlen);
  }
  free(buf);
  fclose(f);
  return rc;
}

void exo_config_free(struct exo_config *cfg)
{
  if (!cfg)
    return;
  for (size_t i = 0; i < cfg->n_actors; i++) {
    struct exo_actor_config *a = &cfg->actors[i];
    for (size_t j = 0; j < a->n_options; j++) {
      free(a->options[j].key);
      free(a->options[j].value);
    }
    free(a->options);
    free(a->name);
    free(a->kind);
  }
  free(cfg->actors);
  for (size_t i = 0; i < cfg->n_peers; i++)
    free(cfg->peers[i]);
  free(cfg->peers);
  free(cfg->path);
  free(cfg->cluster);
  free(cfg->listen);
  free(cfg->model);
  free(cfg->log_level);
  free(cfg->faults);
  free(cfg->key);
  free(cfg->key_path);
  free(cfg);
}

/* ---- lookups and option helpers -------------------------------------------------- */

const struct exo_actor_config *exo_config_find_actor(const struct exo_config *cfg, const char *name)
{
  for (size_t i = 0; i < cfg->n_actors; i++)
    if (!strcmp(cfg->actors[i].name, name))
      return &cfg->actors[i];
  return NULL;
}

const struct exo_config_option *exo_config_option(const struct exo_actor_config *actor,
                                                  const char *key)
{
  for (size_t i = 0; i < actor->n_options; i++)
    if (!strcmp(actor->options[i].key, key))
      return &actor->options[i];
  return NULL;
}

static size_t actor_index(const struct exo_config *cfg, const struct exo_actor_config *a)
{
  return (size_t)(a - cfg->actors);
}

int exo_config_option_u64(const struct exo_config *cfg, const struct exo_actor_config *actor,
                          const char *key, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                          char *err, size_t errlen)
{
  const struct exo_config_option *o = exo_config_option(actor, key);
  if (!o) {
    *out = def;
    return 0;
  }
  uint64_t v = 0;
  const char *s = o->value;
  bool ok = *s != 0;
  for (; ok && *s; s++) {
    ok = *s >= '0' && *s <= '9';
    if (ok)
      ok = !__builtin_mul_overflow(v, 10, &v) &&
           !__builtin_add_overflow(v, (uint64_t)(*s - '0'), &v);
  }
  if (!ok)
    return fail_pos(cfg->path, o->value_pos, err, errlen,
                    "actors[%zu].options.%s: expected integer, got '%.64s'",
                    actor_index(cfg, actor), key, o->value);
  if (v < min || v > max)
    return fail_pos(cfg->path, o->value_pos, err, errlen,
                    "actors[%zu].options.%s: %" PRIu64 " out of range %" PRIu64 "..%" PRIu64,
                    actor_index(cfg, actor), key, v, min, max);
  *out = v;
  return 0;
}

int exo_config_option_fail(const struct exo_config *cfg, const struct exo_actor_config *actor,
                           const char *key, char *err, size_t errlen, const char *fmt, ...)
{
  const struct exo_config_option *o = exo_config_option(actor, key);
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  return fail_pos(cfg->path, o ? o->value_pos : actor->pos, err, errlen,
                  "actors[%zu].options.%s: %s", actor_index(cfg, actor), key, text);
}

int exo_config_option_str(const struct exo_config *cfg, const struct exo_actor_config *actor,
                          const char *key, const char *def, const char **out, char *err,
                          size_t errlen)
{
  const struct exo_config_option *o = exo_config_option(actor, key);
  if (!o) {
    *out = def;
    return 0;
  }
  if (!o->value[0])
    return fail_pos(cfg->path, o->value_pos, err, errlen,
                    "actors[%zu].options.%s: expected a non-empty string", actor_index(cfg, actor),
                    key);
  *out = o->value;
  return 0;
}

int exo_config_check_options(const struct exo_config *cfg, const struct exo_actor_config *actor,
                             const char *const *allowed, char *err, size_t errlen)
{
  for (size_t i = 0; i < actor->n_options; i++) {
    bool ok = false;
    for (const char *const *a = allowed; *a && !ok; a++)
      ok = !strcmp(*a, actor->options[i].key);
    if (!ok)
      return fail_pos(cfg->path, actor->options[i].key_pos, err, errlen,
                      "actors[%zu].options: unknown option '%.64s' for kind '%s'",
                      actor_index(cfg, actor), actor->options[i].key, actor->kind);
  }
  return 0;
}

/* ---- canonical YAML out -------------------------------------------------------------- */

/* Plain when the text re-reads as the same string in every place we read strings;
 * double-quoted with escapes otherwise. */
static void write_scalar(FILE *out, const char *s)
{
  static const char *const special[] = {"",      "~",   "null", "Null", "NULL", "true",
                                        "false", "yes", "no",   "on",   "off",  NULL};
  bool plain = true;
  for (const char *const *sp = special; *sp && plain; sp++)
    plain = strcmp(s, *sp) != 0;
  for (const char *p = s; *p && plain; p++) {
    char c = *p;
    plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '.' || c == '/' || (p != s && (c == '-' || c == ':' || c == '@'));
  }
  if (plain && strchr(s, ':') && (strstr(s, "://") == NULL || s[strlen(s) - 1] == ':'))
    plain = false; /* keep "a:b" quoted; URLs are fine plain, but a trailing ':' would start
                    * a mapping ("x://y:" came back unparsable; found by tests/fuzz) */
  if (plain) {
    fputs(s, out);
    return;
  }
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(out, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(out, "\\x%02x", *p);
    else
      fputc(*p, out);
  }
  fputc('"', out);
}

int exo_config_write(const struct exo_config *cfg, FILE *out)
{
  fputs("cluster: ", out);
  write_scalar(out, cfg->cluster);
  if (cfg->key) {
    fputs("\nkey: ", out);
    write_scalar(out, cfg->key);
  }
  fputs("\nnode:\n", out);
  if (cfg->node_id_auto)
    fputs("  id: auto\n", out);
  else
    fprintf(out, "  id: %" PRIu32 "\n", cfg->node_id);
  if (cfg->listen) {
    fputs("  listen: ", out);
    write_scalar(out, cfg->listen);
    fputc('\n', out);
  }
  fprintf(out, "loops: %" PRIu32 "\n", cfg->loops);
  if (cfg->model) {
    fputs("model: ", out);
    write_scalar(out, cfg->model);
    fputc('\n', out);
  }
  if (cfg->log_level)
    fprintf(out, "log: %s\n", cfg->log_level);
  if (cfg->n_peers) {
    fputs("peers:\n", out);
    for (size_t i = 0; i < cfg->n_peers; i++) {
      fputs("  - ", out);
      write_scalar(out, cfg->peers[i]);
      fputc('\n', out);
    }
  }
  if (cfg->n_actors) {
    fputs("actors:\n", out);
    for (size_t i = 0; i < cfg->n_actors; i++) {
      const struct exo_actor_config *a = &cfg->actors[i];
      fprintf(out, "  - name: %s  # id 0x%08" PRIx32 "\n    kind: ", a->name, a->id);
      write_scalar(out, a->kind);
      fprintf(out, "\n    loop: %" PRIu32 "\n", a->loop);
      if (a->n_options) {
        fputs("    options:\n", out);
        for (size_t j = 0; j < a->n_options; j++) {
          fputs("      ", out);
          write_scalar(out, a->options[j].key);
          fputs(": ", out);
          write_scalar(out, a->options[j].value);
          fputc('\n', out);
        }
      }
    }
  }
  fprintf(out, "supervision:\n  strategy: %s\n  intensity: %" PRIu32 "\n  period_ms: %" PRIu32 "\n",
          exo_supervision_strategy_name(cfg->supervision.strategy), cfg->supervision.intensity,
          cfg->supervision.period_ms);
  fprintf(out, "  watchdog_ms: %" PRIu32 "\n",
          cfg->supervision.watchdog_ms ? cfg->supervision.watchdog_ms
                                       : EXO_SUPERVISION_WATCHDOG_MS);
  if (cfg->faults) {
    fputs("faults: ", out);
    write_scalar(out, cfg->faults);
    fputc('\n', out);
  }
  return ferror(out) ? -EIO : 0;
}
