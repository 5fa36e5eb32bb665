/* The ticker behind lazily armed count hooks (see fn_int.h): one POSIX
 * timer per thread that runs Lua, on the thread's own CPU clock, so that
 * it costs nothing while the thread waits and fires only on the thread
 * that burns the time (SIGEV_THREAD_ID). The timer is deleted when its
 * thread exits (a thread-specific key's destructor).
 *
 * A thread blocked in a system call consumes no CPU time, so the signal
 * rarely interrupts one; when it does, SA_RESTART restarts most, and the
 * event loops already treat EINTR as a spurious wake-up. */
#include "fn_int.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 1000000 /* one millisecond of the thread's CPU time */
#define TICK_SIGNAL (SIGRTMIN + 4)

_Thread_local struct vg__fn_call *volatile vg__fn_running;

static _Thread_local int tick_state; /* 0: not tried yet, 1: ticking, -1: cannot */
static pthread_once_t tick_once = PTHREAD_ONCE_INIT;
static pthread_key_t tick_key;
static bool tick_usable; /* the handler is installed and the key made */

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    vg__fn_tick();
    errno = saved;
}

static void tick_delete(void *timer)
{
    timer_delete((timer_t)timer);
}

static void tick_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    tick_usable = sigaction(TICK_SIGNAL, &sa, NULL) == 0 && pthread_key_create(&tick_key, tick_delete) == 0;
}

static bool tick_start(void)
{
    pthread_once(&tick_once, tick_init);
    if (!tick_usable)
        return false;
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = TICK_SIGNAL;
    sev._sigev_un._tid = gettid();
    timer_t timer;
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &timer) != 0)
        return false;
    struct itimerspec every = {.it_interval = {0, TICK_NS}, .it_value = {0, TICK_NS}};
    if (timer_settime(timer, 0, &every, NULL) != 0 || pthread_setspecific(tick_key, (void *)timer) != 0) {
        timer_delete(timer);
        return false;
    }
    return true;
}

bool vg__fn_tick_ready(void)
{
    if (tick_state == 0) {
        tick_state = tick_start() ? 1 : -1;
        if (tick_state < 0)
            vg_log(VG_LOG_WARN,
                   "no CPU-time ticker on this thread: Lua calls are counted from their first "
                   "instruction",
                   "reason", strerror(errno), NULL);
    }
    return tick_state > 0;
}
