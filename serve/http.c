/* libmicrohttpd under an_serve_handle (serve/http.h). */
#include "serve/http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve/serve_impl.h"

#if MHD_VERSION < 0x00097002
typedef int an_mhd_result;
#else
typedef enum MHD_Result an_mhd_result;
#endif

struct an_http_server {
    struct MHD_Daemon *d;
    an_server *sv;
    an_http_options o;
    int port;
    MHD_socket quiesced; /* the listening socket once quiesced, closed at stop */
};

/* One request's upload. */
typedef struct conn_req {
    an_sbuf body;
    size_t seen; /* bytes announced or received; past max_body the rest is dropped and a 413 answers */
} conn_req;

typedef struct stream_ctx {
    an_serve_job *job;
    struct MHD_Connection *conn;
} stream_ctx;

/* Whether the client closed its side or the socket failed. */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {ci->connect_fd, POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_ctx *s = cls;
    for (;;) {
        long k = an_serve_job_read(s->job, buf, max, 100);
        if (k > 0) return (ssize_t)k;
        if (k == 0) return MHD_CONTENT_READER_END_OF_STREAM;
        if (client_gone(s->conn)) {
            an_serve_job_cancel(s->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) {
    stream_ctx *s = cls;
    an_serve_job_free(s->job);
    free(s);
}

static an_mhd_result send_body(struct MHD_Connection *c, int status, const char *type, char *body, size_t len,
                               const an_http_response *resp, int need_key) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE
                                                                                               : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (resp && resp->allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (need_key && status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    an_mhd_result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static an_mhd_result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    an_http_server *h = cls;
    conn_req *cr = *con_cls;
    if (!cr) {
        if (!(cr = calloc(1, sizeof *cr))) return MHD_NO;
        *con_cls = cr;
        /* a body announced too large is refused before it is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            unsigned long long n = strtoull(cl, NULL, 10);
            if (n > h->o.max_body) {
                cr->seen = (size_t)(n > (unsigned long long)SIZE_MAX / 2 ? SIZE_MAX / 2 : n);
                an_http_request req = {method, url, NULL, 0, NULL, cr->seen};
                an_http_response resp;
                an_serve_handle(h->sv, &req, &resp);
                an_mhd_result ok = send_body(c, resp.status, resp.content_type, resp.body, resp.body_len, &resp, 0);
                resp.body = NULL;
                an_http_response_free(&resp);
                return ok;
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (cr->seen + *upload_size <= h->o.max_body) an_sbuf_add(&cr->body, upload, *upload_size);
        cr->seen += *upload_size;
        /* a chunked body (no Content-Length) past the limit is read on, dropped, for a 413 at its end;
         * one that goes on far past it would hold the thread for ever: the connection is closed */
        if (cr->seen > 4 * h->o.max_body) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    an_http_header hdr[1] = {{"Authorization", MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)}};
    an_http_request req = {method, url, hdr, hdr[0].value ? 1 : 0, cr->body.s ? cr->body.s : "",
                           cr->seen > cr->body.n ? cr->seen : cr->body.n};
    if (cr->body.oom) {
        an_sbuf_free(&cr->body);
        return send_body(c, 500, NULL, NULL, 0, NULL, 0);
    }
    an_http_response resp;
    an_serve_handle(h->sv, &req, &resp);
    an_sbuf_free(&cr->body);
    int need_key = h->sv->api_key != NULL;
    if (!resp.job) {
        an_mhd_result ok = send_body(c, resp.status, resp.content_type, resp.body, resp.body_len, &resp, need_key);
        resp.body = NULL;
        return ok;
    }
    an_serve_job *j = resp.job;
    if (an_serve_job_streaming(j)) {
        stream_ctx *s = malloc(sizeof *s);
        if (!s) {
            an_http_response_free(&resp);
            return MHD_NO;
        }
        s->job = j;
        s->conn = c;
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
        if (!r) {
            stream_free(s);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        an_mhd_result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    /* the whole body at the end: wait here (this connection's own thread), watching the client */
    int cancelled = 0;
    while (!an_serve_job_wait(j, 100))
        if (!cancelled && client_gone(c)) {
            an_serve_job_cancel(j);
            cancelled = 1;
        }
    an_sbuf body = {0};
    char buf[16384];
    long k;
    while ((k = an_serve_job_read(j, buf, sizeof buf, 1000)) > 0) an_sbuf_add(&body, buf, (size_t)k);
    int status = an_serve_job_status(j);
    const char *type = an_serve_job_content_type(j);
    an_serve_job_free(j);
    if (body.oom) {
        an_sbuf_free(&body);
        return send_body(c, 500, NULL, NULL, 0, NULL, 0);
    }
    return send_body(c, status, type, body.s, body.n, NULL, 0);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_req *cr = *con_cls;
    if (cr) {
        an_sbuf_free(&cr->body);
        free(cr);
    }
    *con_cls = NULL;
}

an_http_server *an_http_start(an_server *sv, const an_http_options *o, an_error *err) {
    an_http_server *h = calloc(1, sizeof *h);
    if (!h) return an_fail_null(err, "serve: out of memory");
    h->sv = sv;
    h->o = *o;
    h->o.max_body = sv->cfg.limits.max_body; /* one limit: the handler answers 413 past the same one */
    h->quiesced = MHD_INVALID_SOCKET;
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(o->host, NULL, &hints, &ai);
    if (gai || !ai) {
        free(h);
        return an_fail_null(err, "--host %s: %s", o->host, gai ? gai_strerror(gai) : "no address");
    }
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    int v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (v6) ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)o->port);
    else ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)o->port);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     (v6 ? MHD_USE_IPv6 : 0);
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, h, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return an_fail_null(err, "cannot listen on %s port %d (in use, or not an address of this machine?)", o->host, o->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    return h;
}

int an_http_port(const an_http_server *h) { return h->port; }

void an_http_quiesce(an_http_server *h) {
    if (h && h->quiesced == MHD_INVALID_SOCKET) h->quiesced = MHD_quiesce_daemon(h->d);
}

void an_http_stop(an_http_server *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    if (h->quiesced != MHD_INVALID_SOCKET) close(h->quiesced);
    free(h);
}
