/* tests/actors/test_announce.c: discovery announcements survive a round trip, hostile
 * datagrams are rejected with the field named, and a node id persists across restarts. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "actors/announce.h"
#include "tests/test.h"

static struct exo_announce sample(void)
{
  struct exo_announce a = {.protocol = EXO_ANNOUNCE_PROTOCOL,
                           .cluster = "home",
                           .node_id = 9007199254740991ull,
                           .instance = 18446744073709551615ull,
                           .address = "tcp://192.0.2.7:7001",
                           .memory_bytes = 17179869184ull,
                           .compute = 812.5,
                           .model_id = "demo",
                           .seq = 42};
  return a;
}

static void round_trip(void)
{
  struct exo_announce a = sample(), b;
  char buf[EXO_ANNOUNCE_MAX + 1], err[256] = "";
  int n = exo_announce_encode(&a, buf, sizeof buf);
  CHECK(n > 0);
  CHECK_INT_EQ(exo_announce_decode(buf, (size_t)n, &b, err, sizeof err), 0);
  CHECK(!strcmp(b.cluster, "home"));
  CHECK(b.node_id == a.node_id);
  CHECK(b.instance == a.instance); /* u64 exact: travels as a string */
  CHECK(b.memory_bytes == a.memory_bytes);
  CHECK(!strcmp(b.address, a.address));
  CHECK_NEAR(b.compute, 812.5, 0);
  CHECK(b.seq == 42);
  CHECK_INT_EQ(b.protocol, EXO_ANNOUNCE_PROTOCOL);
}

static void expect_reject(const char *datagram, const char *needle)
{
  struct exo_announce b;
  char err[256] = "";
  CHECK_INT_EQ(exo_announce_decode(datagram, strlen(datagram), &b, err, sizeof err), -EPROTO);
  CHECK_STR_CONTAINS(err, needle);
}

static void hostile_datagrams(void)
{
  expect_reject("{\"exo\":\"announce\"", "invalid JSON");
  expect_reject("[1,2]", "expected a JSON object");
  expect_reject("{\"exo\":\"other\"}", "not an exo-actors announcement");
  expect_reject("{\"exo\":\"announce\",\"protocol\":\"1\"}", "'protocol'");
  expect_reject("{\"exo\":\"announce\",\"protocol\":1,\"compute\":1,\"cluster\":\"c\","
                "\"address\":\"tcp://a:1\",\"model\":\"m\",\"node_id\":\"12x\","
                "\"instance\":\"1\",\"memory\":\"1\",\"seq\":\"1\"}",
                "'node_id': expected an unsigned integer, got '12x'");
  expect_reject("{\"exo\":\"announce\",\"protocol\":1,\"compute\":1,\"cluster\":\"c\","
                "\"address\":\"udp://a:1\",\"model\":\"m\",\"node_id\":\"3\","
                "\"instance\":\"1\",\"memory\":\"1\",\"seq\":\"1\"}",
                "'address'");
  expect_reject("{\"exo\":\"announce\",\"protocol\":1,\"compute\":1,\"cluster\":\"c\","
                "\"address\":\"tcp://a:1\",\"model\":\"m\",\"node_id\":\"0\","
                "\"instance\":\"1\",\"memory\":\"1\",\"seq\":\"1\"}",
                "0 is not a valid node id");
  expect_reject("{\"exo\":\"announce\",\"protocol\":1,\"compute\":1,\"cluster\":\"c\"}",
                "missing field");
  char big[EXO_ANNOUNCE_MAX + 10];
  memset(big, ' ', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  expect_reject(big, "exceeds");
  /* a cluster name longer than the field is refused, not truncated */
  char longname[400];
  snprintf(longname, sizeof longname,
           "{\"exo\":\"announce\",\"protocol\":1,\"compute\":1,\"cluster\":\"%0200d\","
           "\"address\":\"tcp://a:1\",\"model\":\"m\",\"node_id\":\"3\","
           "\"instance\":\"1\",\"memory\":\"1\",\"seq\":\"1\"}", 7);
  expect_reject(longname, "'cluster'");
}

static void node_id_persists(void)
{
  char dir[] = "/tmp/exo-test-nodeid-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[256], err[256] = "";
  snprintf(path, sizeof path, "%s/node-id", dir);
  uint64_t a = 0, b = 0;
  CHECK_INT_EQ(exo_node_id_load_or_create(path, &a, err, sizeof err), 0);
  CHECK(a != 0);
  CHECK_INT_EQ(exo_node_id_load_or_create(path, &b, err, sizeof err), 0);
  CHECK(a == b);
  FILE *f = fopen(path, "w");
  fputs("banana\n", f);
  fclose(f);
  CHECK_INT_EQ(exo_node_id_load_or_create(path, &b, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, ":1:1: expected a decimal node id in 1..2147483647");
  CHECK(a <= 0x7fffffffu); /* ids >= 2^31 are clients' */
  f = fopen(path, "w");
  fputs("4294967295\n", f); /* a u32, but in the clients' range */
  fclose(f);
  CHECK_INT_EQ(exo_node_id_load_or_create(path, &b, err, sizeof err), -EINVAL);
  unlink(path);
  rmdir(dir);
}

int main(void)
{
  EXO_RUN(round_trip);
  EXO_RUN(hostile_datagrams);
  EXO_RUN(node_id_persists);
  return exo_test_result();
}
