/* tests/runtime/test_config.c: the actor-graph config loader. Owns one case per error
 * class (file under tests/runtime/configs/ or inline text) asserting the exact
 * line:column and field name, a write/re-parse round trip, the option helpers, and a
 * seeded byte-mutation loop that must never crash. */
#include "runtime/config.h"
#include "tests/test.h"

#include <errno.h>
#include <stdlib.h>

static const char *const kinds[] = {"pingpong", NULL};

static char *config_path(const char *name)
{
  static char buf[4096];
  const char *root = getenv("EXO_SOURCE_ROOT");
  snprintf(buf, sizeof buf, "%s/tests/runtime/configs/%s", root ? root : ".", name);
  return buf;
}

/* Loads configs/name, expects -EINVAL and an error ending in "name:want_pos: " + want. */
static void expect_file_error(const char *name, const char *want_pos, const char *want)
{
  struct exo_config *cfg = (struct exo_config *)1;
  char err[512] = "";
  int rc = exo_config_load(config_path(name), kinds, &cfg, err, sizeof err);
  CHECK_INT_EQ(rc, -EINVAL);
  CHECK(cfg == NULL);
  char prefix[128];
  snprintf(prefix, sizeof prefix, "%s:%s: ", name, want_pos);
  CHECK_STR_CONTAINS(err, prefix);
  CHECK_STR_CONTAINS(err, want);
}

static void expect_text_error(const char *text, const char *want_pos, const char *want)
{
  struct exo_config *cfg = NULL;
  char err[512] = "";
  int rc = exo_config_parse(text, strlen(text), "t.yaml", kinds, &cfg, err, sizeof err);
  CHECK_INT_EQ(rc, -EINVAL);
  CHECK(cfg == NULL);
  char prefix[128];
  snprintf(prefix, sizeof prefix, "t.yaml:%s: ", want_pos);
  CHECK_STR_CONTAINS(err, prefix);
  CHECK_STR_CONTAINS(err, want);
  exo_config_free(cfg);
}

static void test_error_files(void)
{
  expect_file_error("unknown_key.yaml", "4:3",
                    "node: unknown key 'lisen' (expected one of: id, listen)");
  expect_file_error("wrong_type.yaml", "3:8", "loops: expected integer, got string 'abc'");
  expect_file_error("missing_field.yaml", "3:3", "node: missing required key 'id'");
  expect_file_error("duplicate_actor.yaml", "5:11",
                    "actors[1].name: duplicate actor name 'ping' (first at line 4)");
  expect_file_error("unknown_kind.yaml", "5:11",
                    "actors[0].kind: unknown actor kind 'pinpong' (known: pingpong)");
  expect_file_error("loop_range.yaml", "6:11",
                    "actors[0].loop: loop index 2 out of range (loops: 2");
  expect_file_error("bad_address.yaml", "4:11", "node.listen: bad address scheme 'http'");
  expect_file_error("syntax.yaml", "4:7", "did not find expected ',' or ']'");

  struct exo_config *cfg = NULL;
  char err[256] = "";
  CHECK_INT_EQ(exo_config_load(config_path("no-such-file.yaml"), kinds, &cfg, err, sizeof err),
               -ENOENT);
  CHECK_STR_CONTAINS(err, "no-such-file.yaml: No such file");
}

static void test_error_inline(void)
{
  const char *base = "cluster: demo\nnode: {id: 1}\n";
  char buf[512];
  /* wrong types */
  expect_text_error("cluster: demo\nnode: {id: 1}\nloops: \"2\"\n", "3:8",
                    "loops: expected integer, got string '2'");
  expect_text_error("cluster: demo\nnode: {id: 1}\nloops: 0\n", "3:8",
                    "loops: 0 out of range 1..256");
  expect_text_error("cluster: demo\nnode: {id: -1}\n", "2:12", "node.id: -1 out of range");
  expect_text_error("cluster: demo\nnode: {id: 0}\n", "2:12", "node.id: 0 out of range 1..");
  expect_text_error("cluster: demo\nnode: {id: 4294967296}\n", "2:12",
                    "node.id: 4294967296 out of range");
  expect_text_error("cluster: [a]\nnode: {id: 1}\n", "1:10",
                    "cluster: expected string, got sequence");
  expect_text_error("cluster:\nnode: {id: 1}\n", "1:9", "cluster: expected string, got null");
  expect_text_error("cluster: demo\nnode: 5\n", "2:7", "node: expected mapping, got integer 5");
  snprintf(buf, sizeof buf, "%sactors: {name: x}\n", base);
  expect_text_error(buf, "3:9", "actors: expected sequence, got mapping");
  snprintf(buf, sizeof buf, "%sactors:\n  - name: a\n    kind: pingpong\n    loop: x\n", base);
  expect_text_error(buf, "6:11", "actors[0].loop: expected integer, got string 'x'");
  snprintf(buf, sizeof buf,
           "%sactors:\n  - name: a\n    kind: pingpong\n    options: {a: {b: 1}}\n", base);
  expect_text_error(buf, "6:18", "actors[0].options.a: expected scalar, got mapping");
  /* missing required */
  expect_text_error("node: {id: 1}\n", "1:1", "config: missing required key 'cluster'");
  snprintf(buf, sizeof buf, "%sactors:\n  - kind: pingpong\n", base);
  expect_text_error(buf, "4:5", "actors[0]: missing required key 'name'");
  /* unknown keys */
  expect_text_error("cluster: demo\nnode: {id: 1}\nnodes: 3\n", "3:1",
                    "config: unknown key 'nodes'");
  snprintf(buf, sizeof buf, "%sactors:\n  - name: a\n    knd: pingpong\n", base);
  expect_text_error(buf, "5:5", "actors[0]: unknown key 'knd'");
  snprintf(buf, sizeof buf, "%ssupervision: {strategy: one_for_one, max: 3}\n", base);
  expect_text_error(buf, "3:38", "supervision: unknown key 'max'");
  snprintf(buf, sizeof buf, "%ssupervision: {strategy: all_for_none}\n", base);
  expect_text_error(buf, "3:25", "supervision.strategy: unknown strategy 'all_for_none'");
  /* duplicate key, names, addresses */
  expect_text_error("cluster: demo\ncluster: other\nnode: {id: 1}\n", "2:1",
                    "config: duplicate key 'cluster' (first at line 1)");
  snprintf(buf, sizeof buf, "%sactors:\n  - name: \"a b\"\n    kind: pingpong\n", base);
  expect_text_error(buf, "4:11", "actors[0].name: invalid actor name 'a b'");
  snprintf(buf, sizeof buf, "%speers: [tcp://h:1, inproc://x]\n", base);
  expect_text_error(buf, "3:20", "peers[1]: bad address scheme 'inproc'");
  snprintf(buf, sizeof buf, "%speers: [tcp://h:99999]\n", base);
  expect_text_error(buf, "3:9", "peers[0]: bad port '99999'");
  snprintf(buf, sizeof buf, "%speers: [localhost:7001]\n", base);
  expect_text_error(buf, "3:9", "peers[0]: bad address 'localhost:7001': no scheme");
  snprintf(buf, sizeof buf, "%slog: loud\n", base);
  expect_text_error(buf, "3:6", "log: unknown level 'loud'");
  /* document shape */
  expect_text_error("", "1:1", "empty config");
  expect_text_error("- a\n- b\n", "1:1", "expected a mapping at the top level, got sequence");
  expect_text_error("cluster: demo\nnode: {id: 1}\n---\nx: 1\n", "4:1", "a second YAML document");
  expect_text_error("cluster: \"de\\0mo\"\nnode: {id: 1}\n", "1:10",
                    "cluster: string contains a NUL byte");
  expect_text_error("cluster: demo\n  node: 1\n", "2:7", "mapping values are not allowed");
}

static void test_valid_and_round_trip(void)
{
  struct exo_config *cfg = NULL;
  char err[512] = "";
  int rc = exo_config_load(config_path("valid.yaml"), kinds, &cfg, err, sizeof err);
  CHECK_INT_EQ(rc, 0);
  if (rc) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  CHECK(!strcmp(cfg->cluster, "demo"));
  CHECK_INT_EQ(cfg->node_id, 1);
  CHECK(!cfg->node_id_auto);
  CHECK(!strcmp(cfg->listen, "tcp://127.0.0.1:7001"));
  CHECK_INT_EQ(cfg->loops, 2);
  CHECK(!strcmp(cfg->model, "models/tiny"));
  CHECK(!strcmp(cfg->log_level, "debug"));
  CHECK_INT_EQ(cfg->n_peers, 2);
  CHECK(cfg->n_peers == 2 && !strcmp(cfg->peers[1], "ipc:///tmp/exo peer.ipc"));
  CHECK_INT_EQ(cfg->n_actors, 2);
  CHECK_INT_EQ(cfg->supervision.strategy, EXO_SUPERVISION_REST_FOR_ONE);
  CHECK_INT_EQ(cfg->supervision.intensity, 5);
  CHECK_INT_EQ(cfg->supervision.period_ms, 10000);
  const struct exo_actor_config *pong = exo_config_find_actor(cfg, "pong");
  CHECK(pong != NULL);
  CHECK(exo_config_find_actor(cfg, "nobody") == NULL);
  if (pong) {
    CHECK_INT_EQ(pong->loop, 1);
    CHECK_INT_EQ(pong->name_pos.line, 15);
    CHECK_INT_EQ(pong->name_pos.col, 11);
    const struct exo_config_option *note = exo_config_option(pong, "note");
    CHECK(note && !strcmp(note->value, "two words: quoted"));
    CHECK(note && note->key_pos.line == 20 && note->key_pos.col == 7 && note->value_pos.col == 13);
  }

  /* write, re-parse, compare */
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&text, &len);
  CHECK_INT_EQ(exo_config_write(cfg, mem), 0);
  fclose(mem);
  struct exo_config *again = NULL;
  rc = exo_config_parse(text, len, "again.yaml", kinds, &again, err, sizeof err);
  CHECK_INT_EQ(rc, 0);
  if (rc == 0) {
    CHECK(!strcmp(again->cluster, cfg->cluster));
    CHECK_INT_EQ(again->node_id, cfg->node_id);
    CHECK(!strcmp(again->listen, cfg->listen));
    CHECK_INT_EQ(again->loops, cfg->loops);
    CHECK(!strcmp(again->model, cfg->model));
    CHECK(!strcmp(again->log_level, cfg->log_level));
    CHECK_INT_EQ(again->n_peers, cfg->n_peers);
    for (size_t i = 0; i < cfg->n_peers && i < again->n_peers; i++)
      CHECK(!strcmp(again->peers[i], cfg->peers[i]));
    CHECK_INT_EQ(again->n_actors, cfg->n_actors);
    for (size_t i = 0; i < cfg->n_actors && i < again->n_actors; i++) {
      const struct exo_actor_config *a = &cfg->actors[i], *b = &again->actors[i];
      CHECK(!strcmp(a->name, b->name));
      CHECK(!strcmp(a->kind, b->kind));
      CHECK_INT_EQ(a->loop, b->loop);
      CHECK_INT_EQ(a->id, b->id);
      CHECK_INT_EQ(a->n_options, b->n_options);
      for (size_t j = 0; j < a->n_options && j < b->n_options; j++) {
        CHECK(!strcmp(a->options[j].key, b->options[j].key));
        CHECK(!strcmp(a->options[j].value, b->options[j].value));
      }
    }
    CHECK_INT_EQ(again->supervision.strategy, cfg->supervision.strategy);
    CHECK_INT_EQ(again->supervision.intensity, cfg->supervision.intensity);
    CHECK_INT_EQ(again->supervision.period_ms, cfg->supervision.period_ms);
  } else {
    fprintf(stderr, "  %s\n---\n%s\n", err, text);
  }
  exo_config_free(again);
  free(text);
  exo_config_free(cfg);

  /* defaults, id: auto, kinds == NULL accepts any kind */
  const char *minimal = "cluster: c\nnode: {id: auto}\nactors: [{name: x, kind: anything}]\n";
  rc = exo_config_parse(minimal, strlen(minimal), "m.yaml", NULL, &cfg, err, sizeof err);
  CHECK_INT_EQ(rc, 0);
  if (rc == 0) {
    CHECK(cfg->node_id_auto);
    CHECK_INT_EQ(cfg->loops, 1);
    CHECK(cfg->listen == NULL && cfg->model == NULL && cfg->log_level == NULL);
    CHECK_INT_EQ(cfg->supervision.strategy, EXO_SUPERVISION_ONE_FOR_ONE);
    CHECK_INT_EQ(cfg->supervision.intensity, 3);
    CHECK_INT_EQ(cfg->supervision.period_ms, 5000);
    CHECK_INT_EQ(cfg->actors[0].loop, 0);
  }
  exo_config_free(cfg);
  exo_config_free(NULL);
}

static void test_option_helpers(void)
{
  const char *text = "cluster: c\nnode: {id: 1}\nactors:\n"
                     "  - name: p\n    kind: pingpong\n"
                     "    options: {count: 12, big: 99999999999999999999, word: abc, empty: }\n";
  struct exo_config *cfg = NULL;
  char err[256] = "";
  int rc = exo_config_parse(text, strlen(text), "o.yaml", kinds, &cfg, err, sizeof err);
  CHECK_INT_EQ(rc, 0);
  if (rc)
    return;
  const struct exo_actor_config *a = &cfg->actors[0];
  uint64_t v = 0;
  CHECK_INT_EQ(exo_config_option_u64(cfg, a, "count", 1, 1, 100, &v, err, sizeof err), 0);
  CHECK_INT_EQ(v, 12);
  CHECK_INT_EQ(exo_config_option_u64(cfg, a, "absent", 7, 1, 100, &v, err, sizeof err), 0);
  CHECK_INT_EQ(v, 7);
  CHECK_INT_EQ(exo_config_option_u64(cfg, a, "count", 1, 20, 100, &v, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "o.yaml:6:22: actors[0].options.count: 12 out of range 20..100");
  CHECK_INT_EQ(exo_config_option_u64(cfg, a, "big", 1, 0, UINT64_MAX, &v, err, sizeof err),
               -EINVAL);
  CHECK_STR_CONTAINS(err, "actors[0].options.big: expected integer");
  CHECK_INT_EQ(exo_config_option_u64(cfg, a, "word", 1, 0, 10, &v, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "o.yaml:6:59: actors[0].options.word: expected integer, got 'abc'");
  const char *s = NULL;
  CHECK_INT_EQ(exo_config_option_str(cfg, a, "word", "d", &s, err, sizeof err), 0);
  CHECK(s && !strcmp(s, "abc"));
  CHECK_INT_EQ(exo_config_option_str(cfg, a, "none", "d", &s, err, sizeof err), 0);
  CHECK(s && !strcmp(s, "d"));
  CHECK_INT_EQ(exo_config_option_str(cfg, a, "empty", "d", &s, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "actors[0].options.empty: expected a non-empty string");
  const char *allowed[] = {"count", "big", "word", NULL};
  CHECK_INT_EQ(exo_config_check_options(cfg, a, allowed, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err,
                     "o.yaml:6:64: actors[0].options: unknown option 'empty' for kind 'pingpong'");
  const char *all[] = {"count", "big", "word", "empty", NULL};
  CHECK_INT_EQ(exo_config_check_options(cfg, a, all, err, sizeof err), 0);
  exo_config_free(cfg);

  CHECK_INT_EQ(exo_config_check_address("ipc:///tmp/x", err, sizeof err), 0);
  CHECK_INT_EQ(exo_config_check_address("tcp://[::1]:80", err, sizeof err), 0);
  CHECK_INT_EQ(exo_config_check_address("tcp://h:", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_config_check_address("tcp://:80", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_config_check_address("ipc://", err, sizeof err), -EINVAL);
}

static uint64_t xorshift64(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Mutated configs must load or fail with a positioned message; never crash or leak. */
static void test_random_mutations(void)
{
  FILE *f = fopen(config_path("valid.yaml"), "rb");
  CHECK(f != NULL);
  if (!f)
    return;
  char orig[4096];
  size_t n = fread(orig, 1, sizeof orig, f);
  fclose(f);
  static const char alphabet[] = " \n:-[]{},'\"#&*!|>%@`\t0a\\";
  uint64_t s = 12345;
  int ok = 0, bad = 0;
  char buf[4096];
  for (int iter = 0; iter < 1500; iter++) {
    memcpy(buf, orig, n);
    int m = 1 + (int)(xorshift64(&s) % 3);
    for (int k = 0; k < m; k++) {
      size_t at = xorshift64(&s) % n;
      buf[at] = alphabet[xorshift64(&s) % (sizeof alphabet - 1)];
    }
    size_t len = (xorshift64(&s) & 7) == 0 ? xorshift64(&s) % n : n;
    struct exo_config *cfg = NULL;
    char err[512] = "";
    int rc = exo_config_parse(buf, len, "f.yaml", kinds, &cfg, err, sizeof err);
    if (rc == 0) {
      ok++;
      CHECK(cfg != NULL);
      exo_config_free(cfg);
    } else {
      bad++;
      CHECK(cfg == NULL);
      CHECK_INT_EQ(rc, -EINVAL);
      CHECK(!strncmp(err, "f.yaml:", 7));
    }
  }
  CHECK(ok > 0 && bad > 0);
  fprintf(stderr, "  mutations: %d loaded, %d rejected\n", ok, bad);
}

int main(void)
{
  EXO_RUN(test_error_files);
  EXO_RUN(test_error_inline);
  EXO_RUN(test_valid_and_round_trip);
  EXO_RUN(test_option_helpers);
  EXO_RUN(test_random_mutations);
  return exo_test_result();
}
