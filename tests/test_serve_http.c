/* `autoneg serve` end to end over real sockets: the binary serves TinyStories-656K on a free port of
 * 127.0.0.1, and a small HTTP client here talks to it: a completion (its text against
 * an_session_generate's for the same seed, in this process), streaming (chunked server-sent events
 * whose text is the same), models, 401 without the key, 404, 413 for a body announced too large,
 * malformed JSON, a slow client that never finishes its request (others are served meanwhile, and it
 * is closed after --timeout), a client that goes away (its generation is cancelled: /metrics counts
 * it), 150 clients at once (all queued, all answered), and SIGTERM during a generation: the server stops accepting and exits 0 in bounded time. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "infer/session.h"
#include "tests/cli_run.h"
#include "tests/test.h"

#define KEY "test-key-123"

static pid_t server_pid;
static int port;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Starts the server; its port comes from the "listening on" line on stderr. */
static int start_server(const char *err_path) {
    const char *build = getenv("BUILD");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/autoneg", build && *build ? build : "build");
    server_pid = fork();
    if (server_pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 1);
        execl(bin, bin, "serve", "--model", test_shared("models/TinyStories-656K"), "--port", "0", "--api-key", KEY,
              "--timeout", "3", "--drain", "1", "--parallel", "1", "--max-n", "16", "--max-body", "65536", (char *)NULL);
        _exit(127);
    }
    for (double t0 = now_s(); now_s() - t0 < 30;) {
        char *s = test_slurp(err_path);
        const char *p = strstr(s, "listening on http://127.0.0.1:");
        if (p) port = atoi(p + strlen("listening on http://127.0.0.1:"));
        int ready = strstr(s, "ready:") != NULL;
        free(s);
        if (port && ready) return 0;
        usleep(20000);
    }
    return -1;
}

static int connect_server(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {20, 0}; /* no read waits longer: a hang fails the check, not the run */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        s += k;
        n -= (size_t)k;
    }
    return 0;
}

typedef struct http_reply {
    int status;
    char *head, *body; /* the body de-chunked */
} http_reply;

static void http_reply_free(http_reply *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Undoes Transfer-Encoding: chunked in place. */
static void dechunk(char *b) {
    char *in = b, *out = b;
    for (;;) {
        char *end;
        long n = strtol(in, &end, 16);
        if (end == in || n <= 0) break;
        in = strstr(end, "\r\n");
        if (!in) break;
        in += 2;
        memmove(out, in, (size_t)n);
        out += n;
        in += n + 2;
    }
    *out = 0;
}

/* One request (Connection: close) and its whole reply. */
static http_reply request(const char *method, const char *path, const char *body, const char *key) {
    http_reply r = {0, NULL, NULL};
    int fd = connect_server();
    if (fd < 0) return r;
    char head[1024];
    snprintf(head, sizeof head,
             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%sContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n",
             method, path, key ? "Authorization: Bearer " : "", key ? key : "", key ? "\r\n" : "", body ? strlen(body) : 0);
    send_all(fd, head, strlen(head));
    if (body) send_all(fd, body, strlen(body));
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    ssize_t k;
    while ((k = recv(fd, buf + n, cap - n - 1, 0)) > 0) {
        n += (size_t)k;
        if (cap - n < 4096) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    close(fd);
    char *sep = strstr(buf, "\r\n\r\n");
    if (sep) {
        *sep = 0;
        r.head = strdup(buf);
        r.body = strdup(sep + 4);
        sscanf(buf, "HTTP/1.%*d %d", &r.status);
        if (strcasestr(r.head, "transfer-encoding: chunked")) dechunk(r.body);
    }
    free(buf);
    return r;
}

static char *metric_line(const char *name) {
    http_reply r = request("GET", "/metrics", NULL, KEY);
    char *out = NULL;
    char at_line_start[128];
    snprintf(at_line_start, sizeof at_line_start, "\n%s", name); /* not the # HELP line */
    const char *p = r.body ? strstr(r.body, at_line_start) : NULL;
    if (p) out = strndup(p + 1, strcspn(p + 1, "\n"));
    http_reply_free(&r);
    return out ? out : strdup("");
}

static void test_api(void) {
    http_reply r = request("GET", "/health", NULL, NULL);
    CHECK(r.status == 200 && r.body && strstr(r.body, "\"ok\""));
    http_reply_free(&r);
    r = request("GET", "/v1/models", NULL, NULL);
    CHECK(r.status == 401 && r.body && strstr(r.body, "invalid_api_key"));
    CHECK(r.head && strcasestr(r.head, "WWW-Authenticate: Bearer"));
    http_reply_free(&r);
    r = request("GET", "/v1/models", NULL, "wrong");
    CHECK(r.status == 401);
    http_reply_free(&r);
    r = request("GET", "/v1/models", NULL, KEY);
    CHECK(r.status == 200 && r.body && strstr(r.body, "\"id\":\"TinyStories-656K\""));
    http_reply_free(&r);
    r = request("GET", "/v1/nothing", NULL, KEY);
    CHECK(r.status == 404 && r.body && strstr(r.body, "\"error\""));
    http_reply_free(&r);
    r = request("POST", "/v1/completions", "{\"prompt\": ", KEY);
    CHECK(r.status == 400 && r.body && strstr(r.body, "not valid JSON"));
    http_reply_free(&r);
    r = request("GET", "/", NULL, NULL);
    CHECK(r.status == 200 && r.head && strcasestr(r.head, "text/html"));
    http_reply_free(&r);

    /* a body announced past --max-body (64 KiB) is refused before it is sent */
    int fd = connect_server();
    const char *big = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " KEY "\r\n"
                      "Content-Length: 100000000\r\n\r\n";
    send_all(fd, big, strlen(big));
    char buf[4096];
    ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
    buf[k > 0 ? k : 0] = 0;
    CHECK_MSG(strstr(buf, " 413 ") && strstr(buf, "--max-body"), "%s", buf);
    close(fd);

    /* a chunked body (no length announced) past the limit: read, dropped, then 413 */
    fd = connect_server();
    const char *chunked = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " KEY "\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n";
    send_all(fd, chunked, strlen(chunked));
    size_t n = 70000;
    char *chunk = malloc(n + 64);
    int h = snprintf(chunk, 64, "%zx\r\n", n);
    memset(chunk + h, ' ', n);
    memcpy(chunk + h + n, "\r\n0\r\n\r\n", 7);
    send_all(fd, chunk, (size_t)h + n + 7);
    free(chunk);
    k = recv(fd, buf, sizeof buf - 1, 0);
    buf[k > 0 ? k : 0] = 0;
    CHECK_MSG(strstr(buf, " 413 ") != NULL, "%s", buf);
    close(fd);
}

static void test_generation(void) {
    an_session s;
    an_error err;
    if (an_session_open(&s, an_ops_cpu(), test_shared("models/TinyStories-656K"), NULL, NULL, NULL, &err)) {
        test_fail_at(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    an_gen_opts o = an_gen_defaults();
    o.sampling = (an_sampler_params){1.0f, 0, 1.0f, 0.0f, 1.0f}; /* OpenAI's defaults */
    o.seed = 42;
    o.max_tokens = 30;
    an_text_result ref = {0};
    const char *prompt[] = {"The dog"};
    CHECK(an_session_generate(&s, prompt, 1, 1, &o, &ref, &err) == 0);
    http_reply r = request("POST", "/v1/completions", "{\"prompt\": \"The dog\", \"seed\": 42, \"max_tokens\": 30}", KEY);
    CHECK(r.status == 200);
    cJSON *j = r.body ? cJSON_Parse(r.body) : NULL;
    const cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "text");
    CHECK_STR(cJSON_IsString(t) ? t->valuestring : NULL, ref.text);
    cJSON_Delete(j);
    http_reply_free(&r);
    /* streamed: chunked SSE, the same text */
    r = request("POST", "/v1/completions", "{\"prompt\": \"The dog\", \"seed\": 42, \"max_tokens\": 30, \"stream\": true}", KEY);
    CHECK(r.status == 200 && r.head && strcasestr(r.head, "text/event-stream"));
    char text[4096] = "";
    int done = 0;
    for (char *ev = r.body; ev && *ev;) {
        char *end = strstr(ev, "\n\n");
        if (!end) break;
        *end = 0;
        if (!strcmp(ev, "data: [DONE]")) done = 1;
        else if (!strncmp(ev, "data: ", 6)) {
            cJSON *e = cJSON_Parse(ev + 6);
            const cJSON *x = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(e, "choices"), 0), "text");
            if (cJSON_IsString(x)) strncat(text, x->valuestring, sizeof text - strlen(text) - 1);
            cJSON_Delete(e);
        }
        ev = end + 2;
    }
    CHECK(done);
    CHECK_STR(text, ref.text);
    http_reply_free(&r);
    an_text_results_free(&ref, 1);
    an_session_close(&s);
}

/* A client that sends half a request and waits: others are served, and it is closed after --timeout. */
static void test_slow_client(void) {
    int slow = connect_server();
    const char *half = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro";
    CHECK(slow >= 0 && send_all(slow, half, strlen(half)) == 0);
    double t0 = now_s();
    http_reply r = request("POST", "/v1/negatives", "{\"prompts\": [\"a cat\"], \"max_tokens\": 8}", KEY);
    CHECK(r.status == 200 && r.body && strstr(r.body, "\"negatives\""));
    http_reply_free(&r);
    CHECK_MSG(now_s() - t0 < 2.5, "another client waited %.2f s behind the slow one", now_s() - t0);
    /* the slow one is closed by the server after about 3 s idle (--timeout 3) */
    char buf[256];
    ssize_t k = recv(slow, buf, sizeof buf, 0);
    double waited = now_s() - t0;
    CHECK_MSG(k <= 0 && waited > 2.0 && waited < 12.0, "recv %zd after %.2f s", k, waited);
    close(slow);
}

/* A client that goes away: its generation (16 samples, one at a time) is cancelled. */
static void test_disconnect_cancels(void) {
    char *before = metric_line("autoneg_cancelled_total ");
    int fd = connect_server();
    const char *body = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 400, \"n\": 16, \"stream\": true}";
    char head[512];
    snprintf(head, sizeof head,
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " KEY "\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    send_all(fd, head, strlen(head));
    char buf[2048];
    ssize_t k = recv(fd, buf, sizeof buf - 1, 0); /* the headers and the first events */
    CHECK(k > 0);
    close(fd);
    int cancelled = 0;
    for (double t0 = now_s(); now_s() - t0 < 10 && !cancelled;) {
        usleep(100000);
        char *after = metric_line("autoneg_cancelled_total ");
        cancelled = atoi(after + strlen("autoneg_cancelled_total ")) > atoi(before + strlen("autoneg_cancelled_total "));
        free(after);
    }
    CHECK_MSG(cancelled, "no generation was cancelled after the client went away");
    char *jobs = metric_line("autoneg_http_jobs ");
    for (double t0 = now_s(); now_s() - t0 < 10 && strcmp(jobs, "autoneg_http_jobs 0");) {
        free(jobs);
        usleep(100000);
        jobs = metric_line("autoneg_http_jobs ");
    }
    CHECK_STR(jobs, "autoneg_http_jobs 0");
    free(jobs);
    free(before);
}

/* 150 clients at once, each a generation (the server decodes one at a time: --parallel 1): every one
 * is queued and answered 200, none refused. */
static void test_many_clients(void) {
    enum { N = 150 };
    int fds[N], ok = 0;
    const char *body = "{\"prompts\": [\"a cat\"], \"max_tokens\": 4}";
    char req[512];
    snprintf(req, sizeof req,
             "POST /v1/negatives HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " KEY
             "\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    for (int i = 0; i < N; i++) {
        fds[i] = connect_server();
        if (fds[i] >= 0) send_all(fds[i], req, strlen(req));
    }
    for (int i = 0; i < N; i++) {
        char buf[4096];
        size_t n = 0;
        ssize_t k;
        while (fds[i] >= 0 && n < sizeof buf - 1 && (k = recv(fds[i], buf + n, sizeof buf - 1 - n, 0)) > 0) n += (size_t)k;
        buf[n] = 0;
        ok += n >= 12 && !memcmp(buf, "HTTP/1.1 200", 12) && strstr(buf, "\"negatives\"") != NULL;
        if (fds[i] >= 0) close(fds[i]);
    }
    CHECK_MSG(ok == N, "%d of %d concurrent requests answered 200", ok, N);
}

/* SIGTERM during a long generation: the stream ends, the server exits 0 within --drain + a margin,
 * and nothing listens afterwards. */
static void test_sigterm(void) {
    int fd = connect_server();
    const char *body = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 400, \"n\": 16, \"stream\": true}";
    char head[512];
    snprintf(head, sizeof head,
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " KEY "\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    send_all(fd, head, strlen(head));
    char buf[65536];
    ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
    CHECK(k > 0);
    double t0 = now_s();
    kill(server_pid, SIGTERM);
    int st = -1;
    pid_t w = 0;
    while (now_s() - t0 < 15 && (w = waitpid(server_pid, &st, WNOHANG)) == 0) usleep(20000);
    double took = now_s() - t0;
    if (w == 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, &st, 0);
    }
    CHECK_MSG(w == server_pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the server did not exit 0 within 15 s after SIGTERM");
    CHECK_MSG(took < 8, "shutdown took %.1f s (--drain 1)", took);
    /* the stream was ended (not left hanging): reading reaches the end */
    while ((k = recv(fd, buf, sizeof buf, 0)) > 0) {
    }
    CHECK(k == 0);
    close(fd);
    CHECK(connect_server() < 0);
    server_pid = 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const char *err_path = test_tmp_path("serve.err");
    if (start_server(err_path)) {
        char *s = test_slurp(err_path);
        test_fail_at(__FILE__, __LINE__, "the server did not start: %s", s);
        free(s);
        if (server_pid > 0) kill(server_pid, SIGKILL);
        return test_finish();
    }
    RUN(test_api);
    RUN(test_generation);
    RUN(test_slow_client);
    RUN(test_disconnect_cancels);
    RUN(test_many_clients);
    RUN(test_sigterm);
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
    }
    return test_finish();
}
