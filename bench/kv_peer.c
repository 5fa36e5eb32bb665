/* The raw NATS KV peer of bench/propagation.py: the same fan-out as verge's
 * global scope without verge. One writer and W watchers, each watcher a
 * process of its own with its own connection (as each verge node is a
 * process with its own state connection and watcher thread), on a fresh
 * bucket (history 1, like verge's). The writer puts WRITES values,
 * INTERVAL_MS apart, each carrying the wall-clock µs taken just before
 * kvStore_Put (what verge's record carries: its write time, taken just
 * before its kvStore_Put); a watcher records now - that time when
 * kvWatcher_Next hands it the entry (verge's watcher applies it to the
 * replica at that point).
 *
 *   kv_peer URL WATCHERS WRITES INTERVAL_MS [KEYS [LOGDIR [SILENT]]]
 *
 * SILENT more watchers take part without reporting: verge's writing node
 * watches its bucket too (its replica is fed by the same watcher), so the
 * server delivers each of its writes N times for N-1 measured receivers;
 * SILENT = 1 gives the peer the same fan-out.
 *
 * With LOGDIR each watcher also appends, per entry, after taking its
 * time, a JSON line like verge's "state: replica applied" to a file of its
 * own there: the same instrument (one write(2) per entry, which delays
 * the watchers served after it on a shared core) on both sides.
 *
 * Write i goes to key k.<i mod KEYS> (default: every write a new key). The
 * number of keys matters: nats-server 2.9 delivers each entry to a watcher
 * later the more subjects the bucket holds (measured: ~0.9 ms at 100 keys,
 * ~3.6 ms at 1,000 with 9 watchers), so both sides of the bench write the
 * same fixed set of keys.
 *
 * Prints one lag in µs per (write, watcher) on stdout; errors on stderr.
 * Exit status 1 if a watcher missed a write within 10 s. */
#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VALUE_BYTES 40 /* ~ a verge record of a short string: 24-byte header + value */
#define WARMUP_WRITES 50

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *what, natsStatus s)
{
    fprintf(stderr, "kv_peer: %s: %s (%s)\n", what, natsStatus_GetText(s), nats_GetLastError(NULL));
    exit(2);
}

static void connect_js(const char *url, natsConnection **nc, jsCtx **js)
{
    natsStatus s = natsConnection_ConnectTo(nc, url);
    if (s != NATS_OK)
        die("connect", s);
    jsOptions o;
    jsOptions_Init(&o);
    if ((s = natsConnection_JetStream(js, *nc, &o)) != NATS_OK)
        die("jetstream", s);
}

/* A watcher process: says "loaded" on ready_fd once the bucket's initial
 * values are in, then records a lag per entry until it has `writes` of
 * them (or 10 s after the writer said it is done: a byte on done_fd),
 * prints them and exits. */
static int watcher_main(const char *url, const char *bucket, size_t writes, int go_fd, int ready_fd, int done_fd,
                        const char *logdir)
{
    int logfd = -1;
    if (logdir) {
        char path[512];
        snprintf(path, sizeof(path), "%s/kv_peer.%d.log", logdir, (int)getpid());
        if ((logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
            return 2;
    }
    char go;
    if (read(go_fd, &go, 1) != 1) /* the bucket exists */
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);    /* one write per line: the watchers share the pipe */
    fcntl(done_fd, F_SETFL, O_NONBLOCK); /* polled between entries, never waited on */
    natsConnection *nc;
    jsCtx *js;
    kvStore *kv;
    kvWatcher *w;
    connect_js(url, &nc, &js);
    natsStatus s = js_KeyValue(&kv, js, bucket);
    if (s != NATS_OK)
        die("bind bucket", s);
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    if ((s = kvStore_WatchAll(&w, kv, &wo)) != NATS_OK)
        die("watch", s);
    uint64_t *lags = calloc(writes ? writes : 1, sizeof(*lags));
    size_t n = 0;
    uint64_t deadline = 0;
    while (n < writes) {
        kvEntry *e = NULL;
        s = kvWatcher_Next(&e, w, 100);
        if (s == NATS_OK && !e) { /* the initial values are in */
            if (write(ready_fd, "r", 1) != 1)
                return 2;
            continue;
        }
        if (s == NATS_OK) {
            uint64_t now = wall_us(), t0 = 0;
            if (kvEntry_Operation(e) == kvOp_Put && kvEntry_ValueLen(e) >= 8)
                memcpy(&t0, kvEntry_Value(e), 8);
            if (t0)
                lags[n++] = now > t0 ? now - t0 : 0;
            if (t0 && logfd >= 0)
                dprintf(logfd,
                        "{\"time\":\"-\",\"level\":\"debug\",\"msg\":\"state: replica applied\",\"bucket\":\"%s\","
                        "\"key\":\"%s\",\"rev\":\"%llu\",\"lag_us\":\"%llu\"}\n",
                        bucket, kvEntry_Key(e), (unsigned long long)kvEntry_Revision(e),
                        (unsigned long long)lags[n - 1]);
            kvEntry_Destroy(e);
            continue;
        }
        if (s != NATS_TIMEOUT)
            break;
        char c;
        if (!deadline && read(done_fd, &c, 1) == 1)
            deadline = wall_us() + 10 * 1000000u;
        if (deadline && wall_us() > deadline)
            break;
    }
    for (size_t i = 0; i < n; i++)
        printf("%llu\n", (unsigned long long)lags[i]);
    fflush(stdout);
    if (n < writes)
        fprintf(stderr, "kv_peer: a watcher saw %zu of %zu writes\n", n, writes);
    kvWatcher_Destroy(w);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    free(lags);
    if (logfd >= 0)
        close(logfd);
    return n < writes;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 8) {
        fprintf(stderr, "usage: kv_peer URL WATCHERS WRITES INTERVAL_MS [KEYS [LOGDIR [SILENT]]]\n");
        return 2;
    }
    const char *url = argv[1];
    int nw = atoi(argv[2]);
    size_t writes = (size_t)atoi(argv[3]);
    long interval_ms = atol(argv[4]);
    size_t keys = argc >= 6 ? (size_t)atoi(argv[5]) : 0;
    const char *logdir = argc >= 7 && strcmp(argv[6], "-") != 0 ? argv[6] : NULL;
    int silent = argc == 8 ? atoi(argv[7]) : 0;
    char bucket[64];
    snprintf(bucket, sizeof(bucket), "kvpeer_%d", (int)getpid());

    /* the watchers, forked before anyone here touches libnats (its threads
     * would not survive a fork); each waits for a byte on go before it
     * connects */
    int go[2], ready[2], done[2];
    if (pipe(go) != 0 || pipe(ready) != 0 || pipe(done) != 0)
        return 2;
    fflush(stdout);
    nw += silent;
    pid_t *kids = calloc((size_t)nw, sizeof(*kids));
    for (int i = 0; i < nw; i++) {
        kids[i] = fork();
        if (kids[i] < 0)
            return 2;
        if (kids[i] == 0) {
            close(go[1]);
            close(ready[0]);
            close(done[1]);
            if (i >= nw - silent && !freopen("/dev/null", "w", stdout)) /* a silent one */
                _exit(2);
            _exit(watcher_main(url, bucket, writes, go[0], ready[1], done[0], i >= nw - silent ? NULL : logdir));
        }
    }
    close(go[0]);
    close(ready[1]);
    close(done[0]);
    signal(SIGPIPE, SIG_IGN);

    natsConnection *nc;
    jsCtx *js;
    connect_js(url, &nc, &js);
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = bucket;
    cfg.History = 1;
    kvStore *kv;
    natsStatus s = js_CreateKeyValue(&kv, js, &cfg);
    if (s != NATS_OK)
        die("create bucket", s);
    for (int i = 0; i < nw; i++)
        if (write(go[1], "g", 1) != 1)
            return 2;
    for (int i = 0; i < nw; i++) {
        char c;
        if (read(ready[0], &c, 1) != 1) {
            fprintf(stderr, "kv_peer: a watcher died before it was ready\n");
            return 2;
        }
    }

    uint8_t val[VALUE_BYTES];
    memset(val, 0, sizeof(val));
    /* warm-up, not measured (a zero time): the first entries after the
     * consumers were made took up to a second to reach some of 29
     * watchers, which verge's long-lived nodes never see in the bench */
    for (size_t i = 0; i < WARMUP_WRITES; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k.%zu", keys ? i % keys : i);
        if ((s = kvStore_Put(NULL, kv, key, val, (int)sizeof(val))) != NATS_OK)
            die("put", s);
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    struct timespec settle = {0, 500 * 1000000L};
    nanosleep(&settle, NULL);
    memset(val, 'v', sizeof(val));
    for (size_t i = 0; i < writes; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k.%zu", keys ? i % keys : i);
        uint64_t t0 = wall_us();
        memcpy(val, &t0, 8);
        if ((s = kvStore_Put(NULL, kv, key, val, (int)sizeof(val))) != NATS_OK)
            die("put", s);
        struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < nw; i++) /* watchers that have everything are gone already (EPIPE) */
        if (write(done[1], "d", 1) != 1)
            break;

    int rc = 0;
    for (int i = 0; i < nw; i++) {
        int st = 0;
        waitpid(kids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = 1;
    }
    free(kids);
    js_DeleteKeyValue(js, bucket);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return rc;
}
