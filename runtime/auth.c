/* runtime/auth.c: cluster key files and keyed-BLAKE2b MACs (format in auth.h).
 * The key lives in sodium_malloc memory (guard pages, mlock) and is made read-only after
 * loading, so a stray write faults instead of silently changing the cluster secret.
 * Must not log the key or anything derived from it except the public fingerprint. */
#include "runtime/auth.h"

#include "common/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#define AUTH_CONTEXT "exo-actors/v1"
#define KEY_FILE_MAX 4096 /* a key file is ~100 bytes; anything bigger is not one */

struct exo_auth {
  uint8_t key[EXO_AUTH_KEY_BYTES];
};

static int auth_init(void)
{
  return sodium_init() < 0 ? -EIO : 0; /* 1 (already done) is fine */
}

int exo_auth_from_bytes(const uint8_t key[EXO_AUTH_KEY_BYTES], struct exo_auth **out)
{
  *out = NULL;
  if (auth_init() < 0)
    return -EIO;
  struct exo_auth *a = sodium_malloc(sizeof *a);
  if (!a)
    return -ENOMEM;
  memcpy(a->key, key, EXO_AUTH_KEY_BYTES);
  (void)sodium_mprotect_readonly(a);
  *out = a;
  return 0;
}

void exo_auth_free(struct exo_auth *auth)
{
  if (auth)
    sodium_free(auth); /* zeroes the memory before unmapping */
}

void exo_auth_random(void *out, size_t n)
{
  (void)auth_init();
  randombytes_buf(out, n);
}

void exo_auth_fingerprint(const struct exo_auth *auth, char out[17])
{
  uint8_t h[8];
  crypto_generichash(h, sizeof h, auth->key, sizeof auth->key, NULL, 0);
  sodium_bin2hex(out, 17, h, sizeof h);
}

void exo_auth_mac(const struct exo_auth *auth, enum exo_auth_domain domain,
                  const struct exo_auth_part *parts, size_t n, uint8_t mac[EXO_AUTH_MAC_BYTES])
{
  crypto_generichash_state st;
  crypto_generichash_init(&st, auth->key, EXO_AUTH_KEY_BYTES, EXO_AUTH_MAC_BYTES);
  uint8_t d = (uint8_t)domain;
  crypto_generichash_update(&st, (const uint8_t *)AUTH_CONTEXT, sizeof AUTH_CONTEXT - 1);
  crypto_generichash_update(&st, &d, 1);
  for (size_t i = 0; i < n; i++) {
    uint8_t le[8];
    uint64_t len = parts[i].len;
    for (int b = 0; b < 8; b++)
      le[b] = (uint8_t)(len >> (8 * b));
    crypto_generichash_update(&st, le, sizeof le);
    if (parts[i].len)
      crypto_generichash_update(&st, parts[i].data, parts[i].len);
  }
  crypto_generichash_final(&st, mac, EXO_AUTH_MAC_BYTES);
  sodium_memzero(&st, sizeof st);
}

int exo_auth_verify(const struct exo_auth *auth, enum exo_auth_domain domain,
                    const struct exo_auth_part *parts, size_t n,
                    const uint8_t mac[EXO_AUTH_MAC_BYTES])
{
  uint8_t want[EXO_AUTH_MAC_BYTES];
  exo_auth_mac(auth, domain, parts, n, want);
  return crypto_verify_32(want, mac) == 0 ? 0 : -EBADMSG;
}

int exo_auth_sign(const struct exo_auth *auth, enum exo_auth_domain domain, void *buf, size_t len,
                  size_t cap, size_t *out_len)
{
  if (cap < EXO_AUTH_MAC_BYTES || len > cap - EXO_AUTH_MAC_BYTES)
    return -ENOBUFS;
  struct exo_auth_part p = {buf, len};
  exo_auth_mac(auth, domain, &p, 1, (uint8_t *)buf + len);
  *out_len = len + EXO_AUTH_MAC_BYTES;
  return 0;
}

int exo_auth_open(const struct exo_auth *auth, enum exo_auth_domain domain, const void *buf,
                  size_t len, size_t *data_len)
{
  if (len < EXO_AUTH_MAC_BYTES)
    return -EBADMSG;
  size_t n = len - EXO_AUTH_MAC_BYTES;
  struct exo_auth_part p = {buf, n};
  int rc = exo_auth_verify(auth, domain, &p, 1, (const uint8_t *)buf + n);
  if (rc == 0)
    *data_len = n;
  return rc;
}

/* ---- per-link frame tags ---- */

void exo_auth_link_key(const struct exo_auth *auth, const uint8_t sender[EXO_AUTH_SESSION_BYTES],
                       const uint8_t receiver[EXO_AUTH_SESSION_BYTES],
                       uint8_t out[EXO_AUTH_LINK_KEY_BYTES])
{
  struct exo_auth_part parts[2] = {{sender, EXO_AUTH_SESSION_BYTES},
                                   {receiver, EXO_AUTH_SESSION_BYTES}};
  _Static_assert(EXO_AUTH_LINK_KEY_BYTES == EXO_AUTH_MAC_BYTES, "subkey is one MAC");
  exo_auth_mac(auth, EXO_AUTH_DOMAIN_LINK, parts, 2, out);
}

static void link_nonce(uint64_t seq, uint8_t n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES])
{
  memset(n, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  for (int i = 0; i < 8; i++)
    n[i] = (uint8_t)(seq >> (8 * i));
}

void exo_auth_link_tag(const uint8_t link_key[EXO_AUTH_LINK_KEY_BYTES], uint64_t seq,
                       const void *buf, size_t len, uint8_t tag[EXO_AUTH_LINK_TAG_BYTES])
{
  _Static_assert(EXO_AUTH_LINK_TAG_BYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES, "tag");
  _Static_assert(EXO_AUTH_LINK_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key");
  uint8_t n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
  unsigned long long tlen;
  uint8_t none[1] = {0}; /* the message is empty; libsodium's prototypes still want pointers */
  link_nonce(seq, n);
  crypto_aead_xchacha20poly1305_ietf_encrypt_detached(none, tag, &tlen, none, 0, buf, len, NULL,
                                                      n, link_key);
}

int exo_auth_link_verify(const uint8_t link_key[EXO_AUTH_LINK_KEY_BYTES], uint64_t seq,
                         const void *buf, size_t len, const uint8_t tag[EXO_AUTH_LINK_TAG_BYTES])
{
  uint8_t n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
  uint8_t none[1] = {0};
  link_nonce(seq, n);
  return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(none, NULL, none, 0, tag, buf, len,
                                                             n, link_key) == 0
             ? 0
             : -EBADMSG;
}

/* ---- key files ---- */

static int write_all(int fd, const char *s, size_t n)
{
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

int exo_auth_keygen(const char *path, bool force, char *err, size_t errlen)
{
  if (auth_init() < 0) {
    exo_errf(err, errlen, "keygen %s: libsodium failed to initialise", path);
    return -EIO;
  }
  uint8_t key[EXO_AUTH_KEY_BYTES];
  char hex[2 * EXO_AUTH_KEY_BYTES + 1];
  char text[256];
  char tmp[4096];
  int fd = -1, rc = 0;
  bool created = false; /* target exists because of us: remove it on failure */
  randombytes_buf(key, sizeof key);
  sodium_bin2hex(hex, sizeof hex, key, sizeof key);
  int n = snprintf(text, sizeof text,
                   "# exo-actors cluster key: every node of one cluster needs the same file.\n"
                   "# Keep it secret (mode 0600). Format: docs/SECURITY.md.\n"
                   "%s %s\n",
                   EXO_AUTH_KEY_TAG, hex);
  const char *target = path;
  tmp[0] = '\0';
  if (force) {
    /* Replace atomically: never leave a half-written key where nodes look for it. */
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
      exo_errf(err, errlen, "keygen %s: path too long", path);
      rc = -ENAMETOOLONG;
      goto out;
    }
    target = tmp;
  }
  fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  created = fd >= 0;
  if (fd < 0) {
    rc = -errno;
    if (rc == -EEXIST)
      exo_errf(err, errlen, "keygen %s: file exists (use --force to replace it)", path);
    else
      exo_errf(err, errlen, "keygen %s: %s", target, strerror(errno));
    goto out;
  }
  /* The umask may have masked 0600 further, never widened it; make it exact anyway. */
  if (fchmod(fd, 0600) < 0 || (rc = write_all(fd, text, (size_t)n)) < 0 || fsync(fd) < 0) {
    rc = rc < 0 ? rc : -errno;
    exo_errf(err, errlen, "keygen %s: write: %s", target, strerror(-rc));
    goto out;
  }
  if (close(fd) < 0) {
    fd = -1;
    rc = -errno;
    exo_errf(err, errlen, "keygen %s: close: %s", target, strerror(-rc));
    goto out;
  }
  fd = -1;
  if (force && rename(tmp, path) < 0) {
    rc = -errno;
    exo_errf(err, errlen, "keygen %s: rename from %s: %s", path, tmp, strerror(-rc));
    goto out;
  }
  created = false;
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  if (rc < 0 && created)
    unlink(target);
  sodium_memzero(key, sizeof key);
  sodium_memzero(hex, sizeof hex);
  sodium_memzero(text, sizeof text);
  return rc;
}

/* Parses the text of a key file into key. Returns 0 or -EINVAL with err. */
static int parse_key_text(const char *path, char *text, uint8_t key[EXO_AUTH_KEY_BYTES], char *err,
                          size_t errlen)
{
  int found = 0;
  int lineno = 0;
  char *save = NULL;
  /* strtok_r would merge empty lines and miscount; walk lines by hand. */
  for (char *line = text; line; line = save) {
    lineno++;
    char *nl = strchr(line, '\n');
    save = nl ? nl + 1 : NULL;
    if (nl)
      *nl = '\0';
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r')
      line[--len] = '\0';
    const char *p = line;
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p == '\0' || *p == '#')
      continue;
    size_t tag = sizeof EXO_AUTH_KEY_TAG - 1;
    if (strncmp(p, EXO_AUTH_KEY_TAG, tag) != 0 || (p[tag] != ' ' && p[tag] != '\t')) {
      exo_errf(err, errlen, "%s:%d: expected \"%s <64 hex digits>\"", path, lineno,
               EXO_AUTH_KEY_TAG);
      return -EINVAL;
    }
    if (found) {
      exo_errf(err, errlen, "%s:%d: a second key line (a key file holds exactly one key)", path,
               lineno);
      return -EINVAL;
    }
    p += tag;
    while (*p == ' ' || *p == '\t')
      p++;
    size_t hexlen = strcspn(p, " \t");
    const char *rest = p + hexlen;
    while (*rest == ' ' || *rest == '\t')
      rest++;
    size_t bin_len = 0;
    if (hexlen != 2 * EXO_AUTH_KEY_BYTES || *rest ||
        sodium_hex2bin(key, EXO_AUTH_KEY_BYTES, p, hexlen, NULL, &bin_len, NULL) != 0 ||
        bin_len != EXO_AUTH_KEY_BYTES) {
      exo_errf(err, errlen, "%s:%d: key must be exactly %u hex digits (got %zu characters)", path,
               lineno, 2 * EXO_AUTH_KEY_BYTES, hexlen);
      return -EINVAL;
    }
    found = 1;
  }
  if (!found) {
    exo_errf(err, errlen, "%s: no \"%s\" line (not a key file? create one with `exo-actors "
                          "keygen`)",
             path, EXO_AUTH_KEY_TAG);
    return -EINVAL;
  }
  return 0;
}

int exo_auth_load(const char *path, struct exo_auth **out, char *err, size_t errlen)
{
  *out = NULL;
  if (auth_init() < 0) {
    exo_errf(err, errlen, "key %s: libsodium failed to initialise", path);
    return -EIO;
  }
  char text[KEY_FILE_MAX + 1];
  uint8_t key[EXO_AUTH_KEY_BYTES];
  int rc;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    rc = -errno;
    exo_errf(err, errlen, "key %s: %s", path, strerror(errno));
    return rc;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    exo_errf(err, errlen, "key %s: %s", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    exo_errf(err, errlen, "key %s: not a regular file", path);
    rc = -EINVAL;
    goto out;
  }
  if (st.st_mode & 077) {
    exo_errf(err, errlen, "key %s: mode %04o lets group or others access the cluster secret "
                          "(chmod 600 %s)",
             path, (unsigned)(st.st_mode & 07777), path);
    rc = -EPERM;
    goto out;
  }
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, text + n, sizeof text - 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -errno;
      exo_errf(err, errlen, "key %s: read: %s", path, strerror(errno));
      goto out;
    }
    if (r == 0)
      break;
    n += (size_t)r;
    if (n == sizeof text - 1) {
      exo_errf(err, errlen, "key %s: larger than %d bytes (not a key file)", path, KEY_FILE_MAX);
      rc = -EINVAL;
      goto out;
    }
  }
  text[n] = '\0';
  if (memchr(text, '\0', n)) {
    exo_errf(err, errlen, "key %s: binary data (not a key file)", path);
    rc = -EINVAL;
    goto out;
  }
  rc = parse_key_text(path, text, key, err, errlen);
  if (rc < 0)
    goto out;
  rc = exo_auth_from_bytes(key, out);
  if (rc < 0)
    exo_errf(err, errlen, "key %s: %s", path, strerror(-rc));
out:
  close(fd);
  sodium_memzero(text, sizeof text);
  sodium_memzero(key, sizeof key);
  return rc;
}
