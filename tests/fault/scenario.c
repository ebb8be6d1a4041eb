/* tests/fault/scenario.c: see scenario.h. Walks a libyaml document tree; every error names
 * the file, the line and column of the offending node (1-based) and what was expected.
 * Unknown keys are errors, so a typo never silently drops a fault from a timeline.
 * Must not run anything: it only fills struct exo_scenario. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "runtime/fault.h"
#include "tests/fault/scenario.h"

struct ctx {
  const char *path;
  yaml_document_t *doc;
  char *err;
  size_t errlen;
};

static int fail_at(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_at(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
  int off = snprintf(c->err, c->errlen, "%s:%zu:%zu: ", c->path,
                     n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1);
  if (off < 0 || (size_t)off >= c->errlen)
    return -EINVAL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err + off, c->errlen - (size_t)off, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

static const char *node_desc(const yaml_node_t *n)
{
  if (n->type == YAML_MAPPING_NODE)
    return "a mapping";
  if (n->type == YAML_SEQUENCE_NODE)
    return "a sequence";
  return (const char *)n->data.scalar.value;
}

static int get_int(struct ctx *c, const char *key, const yaml_node_t *n, long lo, long hi,
                   long *out)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return fail_at(c, n, "%s: expected an integer in %ld..%ld, got %s", key, lo, hi,
                   n->type == YAML_SCALAR_NODE ? "a quoted string" : node_desc(n));
  const char *s = (const char *)n->data.scalar.value;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi)
    return fail_at(c, n, "%s: expected an integer in %ld..%ld, got '%s'", key, lo, hi, s);
  *out = v;
  return 0;
}

static int get_double(struct ctx *c, const char *key, const yaml_node_t *n, double lo,
                      double hi, double *out)
{
  if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return fail_at(c, n, "%s: expected a number in [%g, %g], got %s", key, lo, hi,
                   n->type == YAML_SCALAR_NODE ? "a quoted string" : node_desc(n));
  const char *s = (const char *)n->data.scalar.value;
  char *end;
  double v = strtod(s, &end);
  if (!*s || *end || !(v >= lo && v <= hi))
    return fail_at(c, n, "%s: expected a number in [%g, %g], got '%s'", key, lo, hi, s);
  *out = v;
  return 0;
}

static int get_str(struct ctx *c, const char *key, const yaml_node_t *n, char *out, size_t cap)
{
  if (n->type != YAML_SCALAR_NODE)
    return fail_at(c, n, "%s: expected a string, got %s", key, node_desc(n));
  if (n->data.scalar.length >= cap || strlen((const char *)n->data.scalar.value) !=
                                          n->data.scalar.length)
    return fail_at(c, n, "%s: expected a string of at most %zu bytes without NUL", key,
                   cap - 1);
  memcpy(out, n->data.scalar.value, n->data.scalar.length + 1);
  return 0;
}

/* [lo, hi] or a single integer. */
static int get_range(struct ctx *c, const char *key, const yaml_node_t *n, long lo, long hi,
                     int out[2])
{
  long a, b;
  int rc;
  if (n->type == YAML_SCALAR_NODE) {
    if ((rc = get_int(c, key, n, lo, hi, &a)))
      return rc;
    out[0] = out[1] = (int)a;
    return 0;
  }
  if (n->type != YAML_SEQUENCE_NODE ||
      n->data.sequence.items.top - n->data.sequence.items.start != 2)
    return fail_at(c, n, "%s: expected an integer or [min, max], got %s", key, node_desc(n));
  yaml_node_t *x = yaml_document_get_node(c->doc, n->data.sequence.items.start[0]);
  yaml_node_t *y = yaml_document_get_node(c->doc, n->data.sequence.items.start[1]);
  if ((rc = get_int(c, key, x, lo, hi, &a)) || (rc = get_int(c, key, y, lo, hi, &b)))
    return rc;
  if (b < a)
    return fail_at(c, n, "%s: expected [min, max] with min <= max, got [%ld, %ld]", key, a, b);
  out[0] = (int)a;
  out[1] = (int)b;
  return 0;
}

static int check_node_id(struct ctx *c, const struct exo_scenario *s, const char *key,
                         const yaml_node_t *n, uint32_t *out)
{
  long v;
  int rc = get_int(c, key, n, 1, s->nodes, &v);
  if (!rc)
    *out = (uint32_t)v;
  return rc;
}

static int parse_event(struct ctx *c, struct exo_scenario *s, const yaml_node_t *m)
{
  if (m->type != YAML_MAPPING_NODE)
    return fail_at(c, m, "timeline: expected a mapping like {at_ms: 500, kill: 2}, got %s",
                   node_desc(m));
  if (s->n_ev >= EXO_SCN_MAX_EVENTS)
    return fail_at(c, m, "timeline: at most %d events", EXO_SCN_MAX_EVENTS);
  struct exo_scn_event *e = &s->ev[s->n_ev];
  memset(e, 0, sizeof *e);
  e->line = (int)m->start_mark.line + 1;
  int n_trig = 0, n_act = 0, rc;
  const yaml_node_t *node_key = NULL, *faults_val = NULL;
  long v;
  for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
    yaml_node_t *val = yaml_document_get_node(c->doc, p->value);
    if (k->type != YAML_SCALAR_NODE)
      return fail_at(c, k, "timeline: expected a key, got %s", node_desc(k));
    const char *key = (const char *)k->data.scalar.value;
    if (!strcmp(key, "at_ms") || !strcmp(key, "after_ms") || !strcmp(key, "at_tokens")) {
      if (n_trig++)
        return fail_at(c, k, "timeline: one of at_ms, after_ms, at_tokens per event");
      if ((rc = get_int(c, key, val, 0, 3600 * 1000L, &v)))
        return rc;
      e->at = (double)v;
      e->trigger = key[1] == 'f' ? EXO_SCN_AFTER_MS
                   : !strcmp(key, "at_ms") ? EXO_SCN_AT_MS
                                           : EXO_SCN_AT_TOKENS;
    } else if (!strcmp(key, "kill") || !strcmp(key, "stop") || !strcmp(key, "cont") ||
               !strcmp(key, "restart") || !strcmp(key, "partition")) {
      if (n_act++)
        return fail_at(c, k, "timeline: one action per event");
      e->action = !strcmp(key, "kill")      ? EXO_SCN_KILL
                  : !strcmp(key, "stop")    ? EXO_SCN_STOP
                  : !strcmp(key, "cont")    ? EXO_SCN_CONT
                  : !strcmp(key, "restart") ? EXO_SCN_RESTART
                                            : EXO_SCN_PARTITION;
      if ((rc = check_node_id(c, s, key, val, &e->node)))
        return rc;
    } else if (!strcmp(key, "cut") || !strcmp(key, "heal")) {
      if (n_act++)
        return fail_at(c, k, "timeline: one action per event");
      if (!strcmp(key, "heal") && val->type == YAML_SCALAR_NODE) {
        e->action = EXO_SCN_HEAL_ALL;
        if (!strcmp((const char *)val->data.scalar.value, "all"))
          e->node = 0;
        else if ((rc = check_node_id(c, s, key, val, &e->node)))
          return rc;
        continue;
      }
      e->action = key[0] == 'c' ? EXO_SCN_CUT : EXO_SCN_HEAL;
      if (val->type != YAML_SEQUENCE_NODE ||
          val->data.sequence.items.top - val->data.sequence.items.start != 2)
        return fail_at(c, val, "%s: expected [node, node]%s, got %s", key,
                       key[0] == 'h' ? ", a node or all" : "", node_desc(val));
      if ((rc = check_node_id(c, s, key,
                              yaml_document_get_node(c->doc, val->data.sequence.items.start[0]),
                              &e->node)) ||
          (rc = check_node_id(c, s, key,
                              yaml_document_get_node(c->doc, val->data.sequence.items.start[1]),
                              &e->node_b)))
        return rc;
      if (e->node == e->node_b)
        return fail_at(c, val, "%s: expected two different nodes, got [%u, %u]", key, e->node,
                       e->node_b);
    } else if (!strcmp(key, "faults")) {
      if (n_act++)
        return fail_at(c, k, "timeline: one action per event");
      e->action = EXO_SCN_FAULTS;
      if ((rc = get_str(c, key, val, e->spec, sizeof e->spec)))
        return rc;
      faults_val = val;
      if (strchr(e->spec, ';') || strstr(e->spec, "to=") || strstr(e->spec, "seed=") ||
          strstr(e->spec, "fail="))
        return fail_at(c, val, "faults: expected one rule's effects (drop=, dup=, reorder=, "
                               "corrupt=, delay=, jitter=, bw=; the harness adds to= per link "
                               "and the seed), got '%s'", e->spec);
    } else if (!strcmp(key, "node")) {
      node_key = val;
      if ((rc = check_node_id(c, s, key, val, &e->node_b)))
        return rc;
    } else {
      return fail_at(c, k, "timeline: unknown key '%s' (expected at_ms, after_ms, at_tokens, "
                           "kill, stop, cont, restart, partition, cut, heal, faults, node)",
                     key);
    }
  }
  if (!n_trig)
    return fail_at(c, m, "timeline: expected a trigger (at_ms, after_ms or at_tokens)");
  if (!n_act)
    return fail_at(c, m, "timeline: expected an action (kill, stop, cont, restart, partition, "
                         "cut, heal, faults)");
  if (node_key) {
    if (e->action != EXO_SCN_FAULTS)
      return fail_at(c, node_key, "node: only with faults (the other actions name theirs)");
    e->node = e->node_b;
    e->node_b = 0;
  }
  if (faults_val && e->spec[0]) {
    /* the same check the nodes will run, so a bad rule fails here with its position */
    /* the check the nodes will run, so a bad rule fails here with its position */
    char probe[EXO_SCN_SPEC_MAX + 16], why[256];
    snprintf(probe, sizeof probe, "to=1,%s", e->spec);
    if (exo_faults_check(probe, why, sizeof why))
      return fail_at(c, faults_val, "%s", why);
  }
  if (e->action != EXO_SCN_FAULTS && e->action != EXO_SCN_HEAL_ALL && e->action != EXO_SCN_CUT &&
      e->action != EXO_SCN_HEAL && e->node == s->origin)
    return fail_at(c, m, "timeline: node %u is the origin the clients submit through; its "
                         "death takes their requests with it (docs/FAULTS.md): fault another "
                         "node", e->node);
  s->n_ev++;
  return 0;
}

static int resolve_model(struct ctx *c, const yaml_node_t *n, const char *name, char *out,
                         size_t cap)
{
  const char *fx = getenv("EXO_FIXTURES"), *src = getenv("EXO_SOURCE_ROOT");
  char cand[PATH_MAX + 64];
  if (!strcmp(name, "demo"))
    snprintf(cand, sizeof cand, "%s/models/demo", src ? src : ".");
  else if (!strchr(name, '/') && fx)
    snprintf(cand, sizeof cand, "%s/%s", fx, name);
  else
    snprintf(cand, sizeof cand, "%s", name);
  char cfg[PATH_MAX + 80];
  snprintf(cfg, sizeof cfg, "%s/config.json", cand);
  if (access(cfg, R_OK) || strlen(cand) >= cap)
    return fail_at(c, n, "model: expected a fixture name (under $EXO_FIXTURES), demo or a "
                         "model directory, got '%s' (%s not readable)", name, cfg);
  snprintf(out, cap, "%s", cand);
  return 0;
}

static int parse_load(struct ctx *c, struct exo_scenario *s, const yaml_node_t *m)
{
  if (m->type != YAML_MAPPING_NODE)
    return fail_at(c, m, "load: expected a mapping, got %s", node_desc(m));
  int rc;
  long v;
  for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
    yaml_node_t *val = yaml_document_get_node(c->doc, p->value);
    const char *key = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
    if (!strcmp(key, "requests")) {
      if ((rc = get_int(c, key, val, 1, 4096, &v)))
        return rc;
      s->requests = (int)v;
    } else if (!strcmp(key, "concurrency")) {
      if ((rc = get_int(c, key, val, 1, 64, &v)))
        return rc;
      s->concurrency = (int)v;
    } else if (!strcmp(key, "max_tokens")) {
      if ((rc = get_range(c, key, val, 1, 4096, s->max_tokens)))
        return rc;
    } else if (!strcmp(key, "prompt_tokens")) {
      if ((rc = get_range(c, key, val, 1, 1024, s->prompt_tokens)))
        return rc;
    } else if (!strcmp(key, "greedy_fraction")) {
      if ((rc = get_double(c, key, val, 0, 1, &s->greedy_fraction)))
        return rc;
    } else if (!strcmp(key, "loop")) {
      if ((rc = get_int(c, key, val, 0, 1, &v)))
        return rc;
      s->loop = (int)v;
    } else if (!strcmp(key, "timeout_ms")) {
      if ((rc = get_int(c, key, val, 100, 3600 * 1000L, &v)))
        return rc;
      s->timeout_ms = (int)v;
    } else {
      return fail_at(c, k, "load: unknown key '%s' (expected requests, concurrency, max_tokens, "
                           "prompt_tokens, greedy_fraction, loop, timeout_ms)", key);
    }
  }
  return 0;
}

static int parse_root(struct ctx *c, struct exo_scenario *s, yaml_node_t *root)
{
  if (!root || root->type != YAML_MAPPING_NODE)
    return fail_at(c, root, "expected a mapping with nodes, model, load and timeline");
  int rc;
  long v;
  const yaml_node_t *timeline = NULL, *model = NULL, *origin = NULL;
  for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
       p++) {
    yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
    yaml_node_t *val = yaml_document_get_node(c->doc, p->value);
    if (k->type != YAML_SCALAR_NODE)
      return fail_at(c, k, "expected a key, got %s", node_desc(k));
    const char *key = (const char *)k->data.scalar.value;
    if (!strcmp(key, "name")) {
      if ((rc = get_str(c, key, val, s->name, sizeof s->name)))
        return rc;
    } else if (!strcmp(key, "nodes")) {
      if ((rc = get_int(c, key, val, 1, 16, &v)))
        return rc;
      s->nodes = (int)v;
    } else if (!strcmp(key, "model")) {
      model = val;
    } else if (!strcmp(key, "origin")) {
      origin = val;
    } else if (!strcmp(key, "origin_options")) {
      if ((rc = get_str(c, key, val, s->origin_options, sizeof s->origin_options)))
        return rc;
    } else if (!strcmp(key, "partitioner_options")) {
      if ((rc = get_str(c, key, val, s->partitioner_options, sizeof s->partitioner_options)))
        return rc;
    } else if (!strcmp(key, "batch")) {
      if ((rc = get_int(c, key, val, 1, 256, &v)))
        return rc;
      s->batch = (int)v;
    } else if (!strcmp(key, "load")) {
      if ((rc = parse_load(c, s, val)))
        return rc;
    } else if (!strcmp(key, "timeline")) {
      timeline = val;
    } else if (!strcmp(key, "soak_ms")) {
      if ((rc = get_int(c, key, val, 1000, 24 * 3600 * 1000L, &v)))
        return rc;
      s->soak_ms = (int)v;
    } else if (!strcmp(key, "expect")) {
      if (val->type != YAML_MAPPING_NODE)
        return fail_at(c, val, "expect: expected a mapping, got %s", node_desc(val));
      for (yaml_node_pair_t *q = val->data.mapping.pairs.start; q < val->data.mapping.pairs.top;
           q++) {
        yaml_node_t *k2 = yaml_document_get_node(c->doc, q->key);
        yaml_node_t *v2 = yaml_document_get_node(c->doc, q->value);
        const char *key2 =
            k2->type == YAML_SCALAR_NODE ? (const char *)k2->data.scalar.value : "";
        if (!strcmp(key2, "max_failed")) {
          if ((rc = get_int(c, key2, v2, 0, 4096, &v)))
            return rc;
          s->max_failed = (int)v;
        } else if (!strcmp(key2, "final_stages")) {
          if ((rc = get_int(c, key2, v2, 1, 16, &v)))
            return rc;
          s->final_stages = (int)v;
        } else {
          return fail_at(c, k2, "expect: unknown key '%s' (expected max_failed, final_stages)",
                         key2);
        }
      }
    } else {
      return fail_at(c, k, "unknown key '%s' (expected name, nodes, model, origin, "
                           "origin_options, partitioner_options, batch, load, timeline, "
                           "soak_ms, expect)", key);
    }
  }
  if (!s->nodes)
    return fail_at(c, root, "nodes: required");
  if (!model)
    return fail_at(c, root, "model: required");
  char name[PATH_MAX];
  if ((rc = get_str(c, "model", model, name, sizeof name)) ||
      (rc = resolve_model(c, model, name, s->model, sizeof s->model)))
    return rc;
  s->origin = 1;
  if (origin && (rc = check_node_id(c, s, "origin", origin, &s->origin)))
    return rc;
  if (s->max_tokens[0] == 0)
    s->max_tokens[0] = s->max_tokens[1] = 32;
  if (s->prompt_tokens[0] == 0) {
    s->prompt_tokens[0] = 2;
    s->prompt_tokens[1] = 12;
  }
  if (timeline) {
    if (timeline->type != YAML_SEQUENCE_NODE)
      return fail_at(c, timeline, "timeline: expected a sequence of events, got %s",
                     node_desc(timeline));
    for (yaml_node_item_t *it = timeline->data.sequence.items.start;
         it < timeline->data.sequence.items.top; it++)
      if ((rc = parse_event(c, s, yaml_document_get_node(c->doc, *it))))
        return rc;
  }
  return 0;
}

int exo_scenario_load(const char *path, struct exo_scenario *s, char *err, size_t errlen)
{
  memset(s, 0, sizeof *s);
  snprintf(s->path, sizeof s->path, "%s", path);
  const char *base = strrchr(path, '/');
  snprintf(s->name, sizeof s->name, "%s", base ? base + 1 : path);
  s->requests = 4;
  s->concurrency = 2;
  s->greedy_fraction = 0.5;
  s->timeout_ms = 60000;
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    return -e;
  }
  yaml_parser_t parser;
  yaml_document_t doc;
  int rc = 0;
  if (!yaml_parser_initialize(&parser)) {
    fclose(f);
    return -ENOMEM;
  }
  yaml_parser_set_input_file(&parser, f);
  if (!yaml_parser_load(&parser, &doc)) {
    snprintf(err, errlen, "%s:%zu:%zu: %s%s%s", path, parser.problem_mark.line + 1,
             parser.problem_mark.column + 1, parser.problem ? parser.problem : "invalid YAML",
             parser.context ? " " : "", parser.context ? parser.context : "");
    yaml_parser_delete(&parser);
    fclose(f);
    return -EINVAL;
  }
  struct ctx c = {path, &doc, err, errlen};
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (!root)
    rc = fail_at(&c, NULL, "empty scenario");
  else
    rc = parse_root(&c, s, root);
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  fclose(f);
  return rc;
}

const char *exo_scn_action_name(enum exo_scn_action a)
{
  static const char *const names[] = {"kill", "stop", "cont", "restart", "faults",
                                      "cut", "heal", "partition", "heal"};
  return (unsigned)a < sizeof names / sizeof names[0] ? names[a] : "?";
}
