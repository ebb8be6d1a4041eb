/* tests/fuzz/fuzz.h: helpers the libFuzzer harnesses share: a memfd "file" for loaders
 * that need a path, a scratch directory for loaders that need a directory, and
 * FUZZ_CHECK for properties (a failed property aborts, which libFuzzer reports as a
 * crash). Harnesses must not keep state between inputs except what is loaded once. */
#ifndef EXO_TESTS_FUZZ_H
#define EXO_TESTS_FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                                    \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);         \
      abort();                                                                              \
    }                                                                                       \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Replaces the content of a process-wide memfd with data; *path names it for open(2)
 * and mmap. Returns 0 or -1 (then the harness skips the input). */
static inline int fuzz_memfd_file(const uint8_t *data, size_t size, char *path, size_t cap)
{
  static int fd = -1;
  if (fd < 0 && (fd = memfd_create("exo-fuzz", MFD_CLOEXEC)) < 0)
    return -1;
  (void)fchmod(fd, 0600); /* key files must not be group/other accessible */
  if (ftruncate(fd, 0) < 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
    return -1;
  snprintf(path, cap, "/proc/self/fd/%d", fd);
  return 0;
}

/* A scratch directory made once per process (removed at exit with the files named by
 * fuzz_dir_file). Returns its path or NULL. */
static char fuzz_dir_path[64];
static char fuzz_dir_files[4][64];

static inline void fuzz_dir_cleanup(void)
{
  char p[512];
  for (int i = 0; i < 4; i++)
    if (fuzz_dir_files[i][0]) {
      snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, fuzz_dir_files[i]);
      unlink(p);
    }
  rmdir(fuzz_dir_path);
}

static inline const char *fuzz_dir(void)
{
  if (!fuzz_dir_path[0]) {
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/exo-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_dir_path)) {
      fuzz_dir_path[0] = '\0';
      return NULL;
    }
    atexit(fuzz_dir_cleanup);
  }
  return fuzz_dir_path;
}

/* Writes data to DIR/name (name: one of at most 4 fixed names). Returns 0, -1. */
static inline int fuzz_dir_file(const char *name, const uint8_t *data, size_t size)
{
  const char *dir = fuzz_dir();
  if (!dir)
    return -1;
  for (int i = 0; i < 4; i++) {
    if (!strcmp(fuzz_dir_files[i], name))
      break;
    if (!fuzz_dir_files[i][0]) {
      snprintf(fuzz_dir_files[i], sizeof fuzz_dir_files[i], "%s", name);
      break;
    }
  }
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -1;
  int rc = (size && write(fd, data, size) != (ssize_t)size) ? -1 : 0;
  close(fd);
  return rc;
}

/* Removes DIR/name if present. */
static inline void fuzz_dir_remove(const char *name)
{
  char p[512];
  if (fuzz_dir()) {
    snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, name);
    unlink(p);
  }
}

#endif
