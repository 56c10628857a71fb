#ifndef AN_SERVE_HTTP_H
#define AN_SERVE_HTTP_H
/* The HTTP layer of `autoneg serve`: libmicrohttpd, one thread per connection, every request handed
 * to an_serve_handle (serve/serve.h). A non-streaming generation is waited for in its connection's
 * thread; a streaming one is written as its events come. A client that goes away cancels its
 * generation: its socket is watched while the generation runs. */
#include "core/error.h"
#include "serve/serve.h"

typedef struct an_http_options {
    const char *host;     /* numeric address or name to bind, e.g. "127.0.0.1", "::1", "0.0.0.0" */
    int port;             /* 0: any free port (an_http_port tells which) */
    int timeout_s;        /* a connection idle this long (a slow or stuck client) is closed */
    int max_connections;  /* connections at once; more are refused by the listening socket */
    size_t max_body;      /* set from the server's limits: larger bodies get 413 before they are read */
} an_http_options;

typedef struct an_http_server an_http_server;

an_http_server *an_http_start(an_server *sv, const an_http_options *o, an_error *err);
int an_http_port(const an_http_server *h);
/* Stops accepting new connections (the listening socket is closed); open ones go on. */
void an_http_quiesce(an_http_server *h);
/* Closes every connection and waits for their threads (cancel the jobs first: see an_server_cancel_all). */
void an_http_stop(an_http_server *h);

#endif
