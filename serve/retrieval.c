/* Retrieval in the server (serve/serve.h, an_server_add_index): the indexes that runs trained with
 * data.retrieve store beside their adapters, by adapter name, and the input /v1/negatives gives the
 * template: the negatives of the K most similar training prompts in front of the prompt, as
 * `autoneg generate` builds it (infer/retrieval_pairs.h). The base's index is its session's (a model
 * folder that holds one). A query holds the index lock, so DELETE /v1/adapters cannot free an index
 * in use; a query is a few milliseconds even on the civitai index. */
#include <stdlib.h>
#include <string.h>

#include "infer/retrieval_pairs.h"
#include "serve/serve_impl.h"

struct an_serve_index {
    char *name;
    an_retrieval *retr;
    struct an_serve_index *next;
};

int an_server_add_index(an_server *sv, const char *name, const char *dir, an_error *err) {
    if (!an_retrieval_in_dir(dir)) return 0;
    an_retrieval *r = an_retrieval_load(dir, err);
    if (!r) return -1;
    an_serve_index *x = calloc(1, sizeof *x);
    if (!x || !(x->name = strdup(name))) {
        free(x);
        an_retrieval_free(r);
        return an_fail(err, "serve: out of memory");
    }
    x->retr = r;
    pthread_mutex_lock(&sv->index_mu);
    x->next = sv->indexes;
    sv->indexes = x;
    pthread_mutex_unlock(&sv->index_mu);
    return 0;
}

/* unlinks *p from the list and frees it */
static void drop_at(an_serve_index **p) {
    an_serve_index *x = *p;
    *p = x->next;
    an_retrieval_free(x->retr);
    free(x->name);
    free(x);
}

void an_serve_drop_index(an_server *sv, const char *name) {
    pthread_mutex_lock(&sv->index_mu);
    for (an_serve_index **p = &sv->indexes; *p; p = &(*p)->next)
        if (!strcmp((*p)->name, name)) {
            drop_at(p);
            break;
        }
    pthread_mutex_unlock(&sv->index_mu);
}

void an_serve_free_indexes(an_server *sv) {
    while (sv->indexes) drop_at(&sv->indexes);
}

/* the index of adapter (NULL: the base); called with index_mu held */
static const an_retrieval *find(const an_server *sv, const char *adapter) {
    if (!adapter) return sv->session ? sv->session->retr : NULL;
    for (const an_serve_index *x = sv->indexes; x; x = x->next)
        if (!strcmp(x->name, adapter)) return x->retr;
    return NULL;
}

int an_serve_has_index(an_server *sv, const char *adapter) {
    pthread_mutex_lock(&sv->index_mu);
    int has = find(sv, adapter) != NULL;
    pthread_mutex_unlock(&sv->index_mu);
    return has;
}

char *an_serve_retrieval_input(an_server *sv, const char *adapter, const char *prompt, int k, an_error *err) {
    pthread_mutex_lock(&sv->index_mu);
    const an_retrieval *r = find(sv, adapter);
    if (k < 0) k = r ? r->k : 0; /* the K the run was trained with */
    char *in = NULL;
    if (!r || k == 0) {
        if (!(in = strdup(prompt))) an_fail(err, "serve: out of memory");
    } else {
        long idx[AN_RETRIEVAL_MAX_K];
        long m = an_retrieval_neighbours(r, prompt, NULL, -1, k, idx, NULL, err);
        if (m >= 0) in = an_retrieval_input(r, prompt, idx, m, err);
    }
    pthread_mutex_unlock(&sv->index_mu);
    return in;
}
