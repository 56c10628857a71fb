#include "data/batching/token_cache.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

/* ---------- hashing ---------- */

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void absorb(an_hasher *h, uint64_t w) {
    h->h = (h->h ^ w) * 0x9E3779B97F4A7C15ull;
    h->h ^= h->h >> 29;
}

void an_hasher_init(an_hasher *h) { memset(h, 0, sizeof *h), h->h = 0x6a09e667f3bcc908ull; }

void an_hasher_bytes(an_hasher *h, const void *data, size_t n) {
    const unsigned char *p = data;
    h->len += n;
    while (n && h->n_tail > 0 && h->n_tail < 8) {
        h->tail[h->n_tail++] = *p++, n--;
        if (h->n_tail == 8) {
            uint64_t w;
            memcpy(&w, h->tail, 8);
            absorb(h, w);
            h->n_tail = 0;
        }
    }
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        absorb(h, w);
    }
    while (n-- && h->n_tail < 8) h->tail[h->n_tail++] = *p++;
}

void an_hasher_u64(an_hasher *h, uint64_t v) { an_hasher_bytes(h, &v, sizeof v); }

void an_hasher_str(an_hasher *h, const char *s) {
    an_hasher_u64(h, strlen(s));
    an_hasher_bytes(h, s, strlen(s));
}

uint64_t an_hasher_final(const an_hasher *h) {
    an_hasher c = *h;
    uint64_t w = 0;
    memcpy(&w, c.tail, c.n_tail);
    absorb(&c, w ^ ((uint64_t)c.n_tail << 56));
    return mix(c.h ^ c.len);
}

int an_hasher_file(an_hasher *h, const char *path, an_error *err) {
    an_mapped_file m;
    if (an_map_file(&m, path, err)) return -1;
    an_hasher_u64(h, m.size);
    if (m.size) an_hasher_bytes(h, m.data, m.size);
    an_unmap_file(&m);
    return 0;
}

static int is_tokenizer_file(const char *name) {
    static const char *const exact[] = {"special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                                        "encoder.json", "vocab.bpe"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcmp(name, exact[i])) return 1;
    size_t n = strlen(name);
    return !strncmp(name, "tokenizer", 9) || (n > 6 && !strcmp(name + n - 6, ".model"));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int an_hasher_tokenizer(an_hasher *h, const char *path, an_error *err) {
    if (!an_is_dir(path)) return an_hasher_file(h, path, err);
    DIR *d = opendir(path);
    if (!d) return an_fail(err, "%s: cannot list the tokenizer folder", path);
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_tokenizer_file(e->d_name)) continue;
        char **v = realloc(names, (n + 1) * sizeof *v);
        if (!v || !(v[n] = strdup(e->d_name))) {
            names = v ? v : names;
            rc = an_fail(err, "%s: out of memory", path);
            break;
        }
        names = v;
        n++;
    }
    closedir(d);
    if (!rc) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char full[4096];
        if (an_path_join(full, sizeof full, path, names[i])) rc = an_fail(err, "%s: path too long", path);
        else if (!an_is_dir(full)) {
            an_hasher_str(h, names[i]);
            rc = an_hasher_file(h, full, err);
        }
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!rc && n == 0) return an_fail(err, "%s: no tokenizer files in this folder", path);
    return rc;
}

int an_token_cache_key(const an_cache_inputs *in, uint64_t *key, an_error *err) {
    an_hasher h;
    an_hasher_init(&h);
    an_hasher_str(&h, "autoneg token cache");
    an_hasher_u64(&h, in->n_data_files);
    for (size_t i = 0; i < in->n_data_files; i++)
        if (an_hasher_file(&h, in->data_files[i], err)) return -1;
    an_hasher_u64(&h, in->tmpl ? an_template_hash(in->tmpl) : 0);
    if (in->tokenizer_path && an_hasher_tokenizer(&h, in->tokenizer_path, err)) return -1;
    an_hasher_u64(&h, in->max_len);
    an_hasher_str(&h, in->system ? in->system : "");
    *key = an_hasher_final(&h);
    return 0;
}

/* ---------- the file ---------- */

#define MAGIC "ANTOKCCH"
#define HEADER_SIZE 48

typedef struct header {
    char magic[8];
    uint32_t version, endian;
    uint64_t key, n_samples, n_tokens, checksum;
} header;

_Static_assert(sizeof(header) == HEADER_SIZE, "cache header layout");

static uint64_t payload_checksum(const void *p, size_t n) {
    an_hasher h;
    an_hasher_init(&h);
    an_hasher_bytes(&h, p, n);
    return an_hasher_final(&h);
}

int an_token_cache_save(const char *path, uint64_t key, const an_samples *s, an_error *err) {
    size_t off_bytes = (s->n + 1) * sizeof(uint64_t), tok_bytes = s->n_tokens * sizeof(int32_t);
    size_t payload = off_bytes + 2 * tok_bytes;
    unsigned char *buf = malloc(HEADER_SIZE + payload);
    if (!buf) return an_fail(err, "%s: out of memory", path);
    unsigned char *p = buf + HEADER_SIZE;
    uint64_t zero = 0;
    memcpy(p, s->n ? (const void *)s->off : (const void *)&zero, off_bytes);
    if (tok_bytes) {
        memcpy(p + off_bytes, s->ids, tok_bytes);
        memcpy(p + off_bytes + tok_bytes, s->labels, tok_bytes);
    }
    header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, MAGIC, 8);
    h.version = AN_TOKEN_CACHE_VERSION;
    h.endian = 0x01020304u;
    h.key = key;
    h.n_samples = s->n;
    h.n_tokens = s->n_tokens;
    h.checksum = payload_checksum(p, payload);
    memcpy(buf, &h, sizeof h);
    int rc = an_write_file_atomic(path, buf, HEADER_SIZE + payload, err);
    free(buf);
    return rc;
}

int an_token_cache_load(const char *path, uint64_t key, an_samples *out, an_error *err) {
    memset(out, 0, sizeof *out);
    if (!an_file_exists(path)) return 0;
    an_mapped_file m;
    if (an_map_file(&m, path, err)) return -1;
    header h;
    int rc = -1;
    if (m.size < HEADER_SIZE || memcmp(m.data, MAGIC, 8)) {
        an_fail(err, "%s: not an autoneg token cache (bad magic)", path);
        goto done;
    }
    memcpy(&h, m.data, sizeof h);
    if (h.version != AN_TOKEN_CACHE_VERSION) {
        an_fail(err, "%s: token cache version %u, this build reads version %u", path, h.version,
                AN_TOKEN_CACHE_VERSION);
        goto done;
    }
    if (h.endian != 0x01020304u) {
        an_fail(err, "%s: token cache written with another byte order", path);
        goto done;
    }
    if (h.key != key) {
        rc = 0; /* the data, template or tokenizer changed: rebuild */
        goto done;
    }
    size_t body = m.size - HEADER_SIZE;
    if (h.n_samples >= body / 8 || h.n_tokens > body / 8 ||
        (h.n_samples + 1) * 8 + h.n_tokens * 8 != body) {
        an_fail(err, "%s: token cache size %zu does not match its %llu samples and %llu tokens (truncated?)", path,
                m.size, (unsigned long long)h.n_samples, (unsigned long long)h.n_tokens);
        goto done;
    }
    const unsigned char *p = m.data + HEADER_SIZE;
    if (payload_checksum(p, body) != h.checksum) {
        an_fail(err, "%s: token cache checksum mismatch (the file is damaged; delete it to rebuild)", path);
        goto done;
    }
    size_t n = h.n_samples, nt = h.n_tokens;
    out->off = malloc((n + 1) * sizeof *out->off);
    out->ids = malloc((nt ? nt : 1) * sizeof *out->ids);
    out->labels = malloc((nt ? nt : 1) * sizeof *out->labels);
    if (!out->off || !out->ids || !out->labels) {
        an_samples_free(out);
        an_fail(err, "%s: out of memory", path);
        goto done;
    }
    memcpy(out->off, p, (n + 1) * 8);
    memcpy(out->ids, p + (n + 1) * 8, nt * 4);
    memcpy(out->labels, p + (n + 1) * 8 + nt * 4, nt * 4);
    for (size_t i = 0; i < n; i++)
        if (out->off[i] > out->off[i + 1]) {
            an_samples_free(out);
            an_fail(err, "%s: token cache offsets go backwards at sample %zu", path, i);
            goto done;
        }
    if (out->off[0] != 0 || out->off[n] != nt) {
        an_samples_free(out);
        an_fail(err, "%s: token cache offsets do not cover its %zu tokens", path, nt);
        goto done;
    }
    out->n = n;
    out->n_tokens = nt;
    out->cap_samples = n + 1;
    out->cap_tokens = nt;
    rc = 1;
done:
    an_unmap_file(&m);
    return rc;
}

int an_samples_load_or_build(const char *cache_path, const an_cache_inputs *in, const an_encoder *enc,
                             const an_pairs *pairs, an_samples *out, int *hit, size_t *n_dropped, an_error *err) {
    uint64_t key = 0;
    *hit = 0;
    if (n_dropped) *n_dropped = 0;
    memset(out, 0, sizeof *out);
    if (cache_path) {
        if (an_token_cache_key(in, &key, err)) return -1;
        int rc = an_token_cache_load(cache_path, key, out, err);
        if (rc < 0) return -1;
        if (rc == 1) {
            *hit = 1;
            return 0;
        }
    }
    if (an_samples_from_pairs(in->tmpl, enc, pairs, in->system, in->max_len, out, n_dropped, err)) {
        an_samples_free(out);
        return -1;
    }
    if (cache_path && an_token_cache_save(cache_path, key, out, err)) {
        an_samples_free(out);
        return -1;
    }
    return 0;
}
