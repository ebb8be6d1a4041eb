/* tests/actors/test_kind_options.c: a node whose config gives one of its actors a bad
 * option value does not start, and says where: "file:line:col: actors[i].options.key: ..."
 * for the checks the kinds make themselves (discovery memory / broadcast, health
 * max_silence_ms, partitioner strategy / ranges, shard-worker wire_dtype, origin admission
 * / queue_timeout_ms). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/kinds.h"
#include "actors/local_cluster.h"
#include "runtime/config.h"
#include "runtime/node.h"
#include "tests/test.h"

/* Starts a node from text; returns its start error (0 if it started) with err filled. */
static int start(const char *text, char *err, size_t errlen)
{
  struct exo_config *cfg = NULL;
  struct exo_node *node = NULL;
  int rc = exo_config_parse(text, strlen(text), "node.yaml", exo_kind_names, &cfg, err, errlen);
  if (rc) {
    fprintf(stderr, "parse: %s\n", err);
    return -1000;
  }
  if (!(rc = exo_node_new(cfg, exo_kinds, &node, err, errlen))) {
    if (!exo_cluster_of(node))
      rc = -ENOMEM;
    else
      rc = exo_node_start(node, err, errlen);
  }
  exo_node_free(node);
  exo_config_free(cfg);
  return rc;
}

static void expect_error(const char *actor_yaml, const char *want)
{
  char text[2048], err[1024] = "";
  int port = 0;
  CHECK_INT_EQ(exo_local_cluster_pick_port(&port), 0);
  snprintf(text, sizeof text,
           "cluster: t\nnode:\n  id: 1\n  listen: tcp://127.0.0.1:%d\nloops: 1\n"
           "model: \"%s/tiny-llama\"\nactors:\n%s", port, getenv("EXO_FIXTURES"), actor_yaml);
  CHECK_INT_EQ(start(text, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, want);
}

static void discovery_options(void)
{
  expect_error("  - name: discovery\n    kind: discovery\n    options: {memory: 8 GiB}\n",
               "node.yaml:10:23: actors[0].options.memory: expected bytes like 8GiB or "
               "1073741824, got '8 GiB'");
  expect_error("  - name: discovery\n    kind: discovery\n    options: {broadcast: 300.1.1.1}\n",
               "node.yaml:10:26: actors[0].options.broadcast: expected an IPv4 address or "
               "'off', got '300.1.1.1'");
}

static void health_options(void)
{
  expect_error("  - name: health\n    kind: health\n"
               "    options: {interval_ms: 100, max_silence_ms: 150}\n",
               "node.yaml:10:49: actors[0].options.max_silence_ms: 150 must exceed twice "
               "interval_ms (100)");
}

static void partitioner_options(void)
{
  expect_error("  - name: partitioner\n    kind: partitioner\n    options: {strategy: random}\n",
               "node.yaml:10:25: actors[0].options.strategy: expected ring, even or manual, "
               "got 'random'");
  expect_error("  - name: partitioner\n    kind: partitioner\n"
               "    options: {strategy: manual, ranges: \"1=0:2,2=3\"}\n",
               "actors[0].options.ranges: expected NODE=A:B,... (e.g. 1=0:11,2=11:22) exactly "
               "when strategy is manual, got '1=0:2,2=3'");
  /* manual without ranges: positioned at the actor's entry */
  expect_error("  - name: partitioner\n    kind: partitioner\n    options: {strategy: manual}\n",
               "node.yaml:8:5: actors[0].options.ranges: expected NODE=A:B");
}

static void shard_options(void)
{
  expect_error("  - name: shard\n    kind: shard-worker\n    options: {wire_dtype: f8}\n",
               "node.yaml:10:27: actors[0].options.wire_dtype: expected f32 or f16, got 'f8'");
}

static void origin_options(void)
{
  expect_error("  - name: origin\n    kind: origin\n    options: {admission: greedy}\n",
               "node.yaml:10:26: actors[0].options.admission: expected fixed or adaptive, "
               "got 'greedy'");
  expect_error("  - name: origin\n    kind: origin\n    options: {queue_timeout_ms: 5}\n",
               "node.yaml:10:33: actors[0].options.queue_timeout_ms: 5 out of range "
               "10..86400000");
}

int main(void)
{
  EXO_RUN(discovery_options);
  EXO_RUN(health_options);
  EXO_RUN(partitioner_options);
  EXO_RUN(shard_options);
  EXO_RUN(origin_options);
  return exo_test_result();
}
