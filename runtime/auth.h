/* runtime/auth.h: the cluster secret and the message authentication built on it
 * (libsodium keyed BLAKE2b, 256-bit key, 256-bit tag). Owns the key file format, key
 * generation, and MAC/verify of arbitrary buffers in separate domains (frames, HELLO,
 * discovery datagrams), so a tag made for one purpose is never valid for another.
 * Must not know sockets, envelopes or peers: node.c decides what a MAC covers.
 *
 * Key file (text, mode 0600, written by `exo-actors keygen FILE`):
 *   lines starting with '#' and blank lines are ignored; exactly one line
 *   "exo-actors-key-v1 <64 lowercase hex digits>" (the 32-byte key).
 * The loader refuses a file readable or writable by group or others.
 *
 * MAC input for exo_auth_mac over parts p1..pn in domain d:
 *   BLAKE2b-256(key, "exo-actors/v1" || u8 d || for each part: u64le len || bytes).
 * Length prefixes make the concatenation unambiguous. */
#ifndef EXO_RUNTIME_AUTH_H
#define EXO_RUNTIME_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXO_AUTH_KEY_BYTES 32u
#define EXO_AUTH_MAC_BYTES 32u
#define EXO_AUTH_SESSION_BYTES 16u /* per-process session id / HELLO challenge */
#define EXO_AUTH_KEY_TAG "exo-actors-key-v1"

/* What a tag is for; part of the MAC input. Values never change (wire contract). */
enum exo_auth_domain {
  EXO_AUTH_DOMAIN_FRAME = 1,     /* reserved (v1 frames use per-link tags, below) */
  EXO_AUTH_DOMAIN_HELLO = 2,     /* HELLO handshake frames (runtime/node.c) */
  EXO_AUTH_DOMAIN_DISCOVERY = 3, /* UDP discovery announcements (actors/discovery.c) */
  EXO_AUTH_DOMAIN_LINK = 4,      /* per-link subkeys (exo_auth_link_key) */
  EXO_AUTH_DOMAIN_TEST = 255,    /* tests only */
};

struct exo_auth; /* the loaded key, in guarded (mlock'd, canary-fenced) memory */

struct exo_auth_part {
  const void *data;
  size_t len;
};

/* Writes a fresh random key to path (mode 0600). Refuses an existing file unless force
 * (then replaces it atomically via a temporary file in the same directory). Returns 0,
 * -EEXIST (exists, no force), or -errno with err "keygen PATH: ...". */
int exo_auth_keygen(const char *path, bool force, char *err, size_t errlen);

/* Loads a key file. Returns 0 with *out (free with exo_auth_free), -ENOENT/-EACCES/...
 * (open), -EPERM (file mode lets group/others read or write it), -EINVAL (format; err
 * says "PATH:LINE: ..."), -ENOMEM. */
int exo_auth_load(const char *path, struct exo_auth **out, char *err, size_t errlen);

/* From raw key bytes (tests, tools). Returns 0, -ENOMEM, -EIO (libsodium init failed). */
int exo_auth_from_bytes(const uint8_t key[EXO_AUTH_KEY_BYTES], struct exo_auth **out);

void exo_auth_free(struct exo_auth *auth); /* NULL ok; wipes the key */

/* Short public fingerprint of the key (first 8 bytes of BLAKE2b(key) in hex, 16 chars +
 * NUL) for logs: tells two operators whether their nodes hold the same key. */
void exo_auth_fingerprint(const struct exo_auth *auth, char out[17]);

/* Tag over parts[0..n) in domain. Thread-safe (the key is read only). */
void exo_auth_mac(const struct exo_auth *auth, enum exo_auth_domain domain,
                  const struct exo_auth_part *parts, size_t n, uint8_t mac[EXO_AUTH_MAC_BYTES]);
/* Constant-time check of mac against the tag of parts. Returns 0 or -EBADMSG. */
int exo_auth_verify(const struct exo_auth *auth, enum exo_auth_domain domain,
                    const struct exo_auth_part *parts, size_t n,
                    const uint8_t mac[EXO_AUTH_MAC_BYTES]);

/* Buffer helpers for datagrams laid out as [data (len bytes)][tag (EXO_AUTH_MAC_BYTES)].
 * exo_auth_sign writes the tag over buf[0, len) at buf + len; buf holds cap bytes.
 * Returns 0 with *out_len = len + EXO_AUTH_MAC_BYTES, or -ENOBUFS (cap too small).
 * exo_auth_open checks the trailing tag of buf (len bytes) and sets *data_len to the
 * bytes before it. Returns 0, -EBADMSG (short or wrong tag: trust nothing in buf). */
int exo_auth_sign(const struct exo_auth *auth, enum exo_auth_domain domain, void *buf, size_t len,
                  size_t cap, size_t *out_len);
int exo_auth_open(const struct exo_auth *auth, enum exo_auth_domain domain, const void *buf,
                  size_t len, size_t *data_len);

/* ---- per-link frame tags --------------------------------------------------------
 * Bulk frames (hidden states of MiBs) use a subkey per direction of a link and
 * XChaCha20-Poly1305 with an empty message and the frame as associated data: Poly1305
 * runs ~6-10x faster than keyed BLAKE2b here (docs/SECURITY.md). The subkey is
 * BLAKE2b-256(key, "exo-actors/v1" || domain LINK || sender session || receiver session),
 * so it is fresh for every pair of process lifetimes; the 24-byte nonce is the link
 * sequence number (u64 little-endian, then zeros), which a sender never repeats within a
 * lifetime: (subkey, nonce) is never reused. */
#define EXO_AUTH_LINK_KEY_BYTES 32u
#define EXO_AUTH_LINK_TAG_BYTES 16u

void exo_auth_link_key(const struct exo_auth *auth, const uint8_t sender[EXO_AUTH_SESSION_BYTES],
                       const uint8_t receiver[EXO_AUTH_SESSION_BYTES],
                       uint8_t out[EXO_AUTH_LINK_KEY_BYTES]);
/* Tag over buf[0, len) under link_key and seq. */
void exo_auth_link_tag(const uint8_t link_key[EXO_AUTH_LINK_KEY_BYTES], uint64_t seq,
                       const void *buf, size_t len, uint8_t tag[EXO_AUTH_LINK_TAG_BYTES]);
/* Returns 0 or -EBADMSG (constant time). */
int exo_auth_link_verify(const uint8_t link_key[EXO_AUTH_LINK_KEY_BYTES], uint64_t seq,
                         const void *buf, size_t len, const uint8_t tag[EXO_AUTH_LINK_TAG_BYTES]);

/* Fills out with n random bytes (session ids, challenges). */
void exo_auth_random(void *out, size_t n);

#endif
