/* The GGUF v3 byte writer (see gguf_writer.h). */
#include "model/io/gguf_writer.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int an_gguf_out_open(an_gguf_out *w, const char *path, an_error *err) {
    memset(w, 0, sizeof *w);
    w->path = path;
    if (snprintf(w->tmp_path, sizeof w->tmp_path, "%s.tmp", path) >= (int)sizeof w->tmp_path)
        return an_fail(err, "%s: path too long", path);
    if (!(w->f = fopen(w->tmp_path, "wb")))
        return an_fail(err, "%s: cannot create %s: %s", path, w->tmp_path, strerror(errno));
    return 0;
}

void an_gguf_out_abort(an_gguf_out *w) {
    if (!w->f) return;
    fclose(w->f);
    w->f = NULL;
    unlink(w->tmp_path);
}

int an_gguf_out_finish(an_gguf_out *w, an_error *err) {
    if (!w->failed && fflush(w->f) != 0) w->failed = errno ? errno : EIO;
    if (!w->failed && fsync(fileno(w->f)) != 0) w->failed = errno ? errno : EIO;
    if (fclose(w->f) != 0 && !w->failed) w->failed = errno ? errno : EIO;
    w->f = NULL;
    if (w->failed) {
        an_fail(err, "%s: write failed: %s", w->path,
                w->failed == EINVAL ? "a tokenizer value could not be read" : strerror(w->failed));
        unlink(w->tmp_path);
        return -1;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        an_fail(err, "%s: cannot rename %s into place: %s", w->path, w->tmp_path, strerror(errno));
        unlink(w->tmp_path);
        return -1;
    }
    return 0;
}

void an_gguf_put(an_gguf_out *w, const void *p, size_t n) {
    if (w->failed || !n) return;
    if (fwrite(p, 1, n, w->f) != n) w->failed = errno ? errno : EIO;
    w->pos += n;
}

void an_gguf_put_le(an_gguf_out *w, uint64_t v, int bytes) {
    unsigned char b[8];
    for (int i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    an_gguf_put(w, b, (size_t)bytes);
}

static void put_str(an_gguf_out *w, const char *s, uint64_t len) {
    an_gguf_put_le(w, len, 8);
    an_gguf_put(w, s, (size_t)len);
}

void an_gguf_put_header(an_gguf_out *w, uint64_t n_tensors, uint64_t n_kv) {
    an_gguf_put(w, "GGUF", 4);
    an_gguf_put_le(w, 3, 4);
    an_gguf_put_le(w, n_tensors, 8);
    an_gguf_put_le(w, n_kv, 8);
}

static void put_key(an_gguf_out *w, const char *key, an_gguf_type t) {
    put_str(w, key, strlen(key));
    an_gguf_put_le(w, (uint32_t)t, 4);
}

void an_gguf_kv_u32(an_gguf_out *w, const char *key, uint32_t v) {
    put_key(w, key, AN_GGUF_U32);
    an_gguf_put_le(w, v, 4);
}

void an_gguf_kv_f32(an_gguf_out *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_key(w, key, AN_GGUF_F32);
    an_gguf_put_le(w, u, 4);
}

void an_gguf_kv_str(an_gguf_out *w, const char *key, const char *s) {
    put_key(w, key, AN_GGUF_STRING);
    put_str(w, s, strlen(s));
}

/* A value's payload (without its type), re-encoded from the reader's decoded form, so what is copied is
 * exactly what the reader checked. */
static void put_value(an_gguf_out *w, const an_gguf_value *v) {
    int nb = an_gguf_scalar_size(v->type);
    if (v->type == AN_GGUF_F32) {
        float f = (float)v->v.f; /* widened exactly when read */
        uint32_t u;
        memcpy(&u, &f, 4);
        an_gguf_put_le(w, u, 4);
    } else if (v->type == AN_GGUF_F64) {
        uint64_t u;
        memcpy(&u, &v->v.f, 8);
        an_gguf_put_le(w, u, 8);
    } else if (v->type == AN_GGUF_I8 || v->type == AN_GGUF_I16 || v->type == AN_GGUF_I32 || v->type == AN_GGUF_I64) {
        an_gguf_put_le(w, (uint64_t)v->v.i, nb);
    } else if (nb) {
        an_gguf_put_le(w, v->v.u, nb);
    } else if (v->type == AN_GGUF_STRING) {
        put_str(w, v->v.str.ptr, v->v.str.len);
    } else if (v->type == AN_GGUF_ARRAY) {
        an_gguf_put_le(w, (uint32_t)v->v.arr.elem, 4);
        an_gguf_put_le(w, v->v.arr.n, 8);
        for (uint64_t i = 0; i < v->v.arr.n; i++) {
            an_gguf_value e;
            if (an_gguf_array_get(v, i, &e)) {
                w->failed = EINVAL;
                return;
            }
            put_value(w, &e);
        }
    }
}

void an_gguf_kv_copy(an_gguf_out *w, const an_gguf_kv *kv) {
    put_key(w, kv->key, kv->value.type);
    put_value(w, &kv->value);
}

uint64_t an_gguf_layout(an_gguf_wtensor *ts, int n) {
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        ts[i].offset = off;
        off += (ts[i].nbytes + AN_GGUF_ALIGN - 1) / AN_GGUF_ALIGN * AN_GGUF_ALIGN;
    }
    return off;
}

static const unsigned char zeros[AN_GGUF_ALIGN];

void an_gguf_put_tensor_infos(an_gguf_out *w, const an_gguf_wtensor *ts, int n) {
    for (int i = 0; i < n; i++) {
        put_str(w, ts[i].name, strlen(ts[i].name));
        an_gguf_put_le(w, (uint32_t)ts[i].n_dims, 4);
        for (int d = 0; d < ts[i].n_dims; d++) an_gguf_put_le(w, (uint64_t)ts[i].ne[d], 8);
        an_gguf_put_le(w, ts[i].type, 4);
        an_gguf_put_le(w, ts[i].offset, 8);
    }
    an_gguf_put(w, zeros, (size_t)((AN_GGUF_ALIGN - w->pos % AN_GGUF_ALIGN) % AN_GGUF_ALIGN));
}

void an_gguf_put_tensor_data(an_gguf_out *w, const void *bytes, size_t nbytes) {
    an_gguf_put(w, bytes, nbytes);
    an_gguf_put(w, zeros, (size_t)((AN_GGUF_ALIGN - nbytes % AN_GGUF_ALIGN) % AN_GGUF_ALIGN));
}
