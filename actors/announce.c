/* actors/announce.c: discovery announcement codec and node-id persistence (announce.h).
 * Treats every datagram as hostile: bounded size, parsed by jansson, each field type-
 * and range-checked before it is copied into fixed-size fields. Never opens sockets. */
#include "actors/announce.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int exo_announce_encode(const struct exo_announce *a, char *buf, size_t cap)
{
  /* u64 values travel as decimal strings: JSON numbers lose precision past 2^53. */
  char id[24], inst[24], mem[24], seq[24];
  snprintf(id, sizeof id, "%" PRIu64, a->node_id);
  snprintf(inst, sizeof inst, "%" PRIu64, a->instance);
  snprintf(mem, sizeof mem, "%" PRIu64, a->memory_bytes);
  snprintf(seq, sizeof seq, "%" PRIu64, a->seq);
  json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:f, s:s, s:s}", "exo", "announce",
                        "protocol", a->protocol, "cluster", a->cluster, "node_id", id,
                        "instance", inst, "address", a->address, "memory", mem, "compute",
                        a->compute, "model", a->model_id, "seq", seq);
  if (!o)
    return -ENOMEM;
  size_t need = json_dumpb(o, NULL, 0, JSON_COMPACT);
  int rc = -ENOSPC;
  if (need > 0 && need < cap && need <= EXO_ANNOUNCE_MAX) {
    json_dumpb(o, buf, need, JSON_COMPACT);
    buf[need] = '\0';
    rc = (int)need;
  }
  json_decref(o);
  return rc;
}

static int get_string(json_t *o, const char *key, char *dst, size_t cap, char *err,
                      size_t errlen)
{
  json_t *v = json_object_get(o, key);
  if (!v) {
    snprintf(err, errlen, "announce: missing field '%s'", key);
    return -EPROTO;
  }
  if (!json_is_string(v)) {
    snprintf(err, errlen, "announce: field '%s': expected a string", key);
    return -EPROTO;
  }
  size_t len = json_string_length(v);
  if (len >= cap || memchr(json_string_value(v), '\0', len)) {
    snprintf(err, errlen, "announce: field '%s': %zu bytes, at most %zu allowed", key, len,
             cap - 1);
    return -EPROTO;
  }
  memcpy(dst, json_string_value(v), len + 1);
  return 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *out, char *err, size_t errlen)
{
  char text[24];
  int rc = get_string(o, key, text, sizeof text, err, errlen);
  if (rc)
    return rc;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (!text[0] || *end || errno || text[0] == '-') {
    snprintf(err, errlen, "announce: field '%s': expected an unsigned integer, got '%s'", key,
             text);
    return -EPROTO;
  }
  *out = v;
  return 0;
}

int exo_announce_decode(const void *buf, size_t len, struct exo_announce *a, char *err,
                        size_t errlen)
{
  memset(a, 0, sizeof *a);
  if (len > EXO_ANNOUNCE_MAX) {
    snprintf(err, errlen, "announce: datagram of %zu bytes exceeds %d", len, EXO_ANNOUNCE_MAX);
    return -EPROTO;
  }
  json_error_t jerr;
  json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!o) {
    snprintf(err, errlen, "announce: invalid JSON at column %d: %s", jerr.column, jerr.text);
    return -EPROTO;
  }
  int rc = -EPROTO;
  char tag[16];
  if (!json_is_object(o)) {
    snprintf(err, errlen, "announce: expected a JSON object");
    goto out;
  }
  if (get_string(o, "exo", tag, sizeof tag, err, errlen) || strcmp(tag, "announce")) {
    snprintf(err, errlen, "announce: not an exo-actors announcement");
    goto out;
  }
  json_t *proto = json_object_get(o, "protocol");
  if (!json_is_integer(proto) || json_integer_value(proto) < 1 ||
      json_integer_value(proto) > 65535) {
    snprintf(err, errlen, "announce: field 'protocol': expected an integer in 1..65535");
    goto out;
  }
  a->protocol = (int)json_integer_value(proto);
  json_t *compute = json_object_get(o, "compute");
  if (!json_is_number(compute) || json_number_value(compute) < 0) {
    snprintf(err, errlen, "announce: field 'compute': expected a non-negative number");
    goto out;
  }
  a->compute = json_number_value(compute);
  if (get_string(o, "cluster", a->cluster, sizeof a->cluster, err, errlen) ||
      get_string(o, "address", a->address, sizeof a->address, err, errlen) ||
      get_string(o, "model", a->model_id, sizeof a->model_id, err, errlen) ||
      get_u64(o, "node_id", &a->node_id, err, errlen) ||
      get_u64(o, "instance", &a->instance, err, errlen) ||
      get_u64(o, "memory", &a->memory_bytes, err, errlen) ||
      get_u64(o, "seq", &a->seq, err, errlen))
    goto out;
  if (a->node_id == 0) {
    snprintf(err, errlen, "announce: field 'node_id': 0 is not a valid node id");
    goto out;
  }
  if (strncmp(a->address, "tcp://", 6) && strncmp(a->address, "ipc://", 6)) {
    snprintf(err, errlen, "announce: field 'address': expected tcp:// or ipc://, got '%s'",
             a->address);
    goto out;
  }
  rc = 0;
out:
  json_decref(o);
  return rc;
}

int exo_node_id_load_or_create(const char *path, uint64_t *id, char *err, size_t errlen)
{
  FILE *f = fopen(path, "r");
  if (f) {
    char line[64] = "";
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    char *end = NULL;
    errno = 0;
    unsigned long long v = got ? strtoull(line, &end, 10) : 0;
    if (!got || errno || v == 0 || v > 0x7fffffffu || end == line || (*end && *end != '\n')) {
      snprintf(err, errlen, "%s:1:1: expected a decimal node id in 1..2147483647", path);
      return -EINVAL;
    }
    *id = v;
    return 0;
  }
  if (errno != ENOENT) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -errno;
  }
  if (sodium_init() < 0) {
    snprintf(err, errlen, "libsodium failed to initialise");
    return -EIO;
  }
  uint64_t v = 0;
  while (v == 0)
    randombytes_buf(&v, sizeof v);
  v &= 0x7fffffffu; /* node ids are u32 on the wire; ids >= 2^31 are clients' (client.h) */
  if (v == 0)
    v = 1;
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
    snprintf(err, errlen, "%s: path too long", path);
    return -ENAMETOOLONG;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
    return -errno;
  }
  char text[32];
  int n = snprintf(text, sizeof text, "%" PRIu64 "\n", v);
  int rc = 0;
  if (write(fd, text, (size_t)n) != n || fsync(fd) != 0)
    rc = errno ? -errno : -EIO;
  close(fd);
  if (!rc && rename(tmp, path) != 0)
    rc = -errno;
  if (rc) {
    snprintf(err, errlen, "%s: cannot store node id: %s", path, strerror(-rc));
    unlink(tmp);
    return rc;
  }
  *id = v;
  return 0;
}
