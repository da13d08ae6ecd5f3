/*
 * The pause process of a Skiff pod sandbox.
 *
 * It holds the sandbox's namespaces open for the pod's lifetime, reaps any
 * zombie that gets re-parented to it (it is PID 1 of the pod when the PID
 * namespace is shared), and exits cleanly when the runtime asks it to stop.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo) {
    (void)signo;
    _exit(0);
}

static void reap(int signo) {
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static int install(int signo, void (*handler)(int), int flags) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}

int main(void) {
    if (install(SIGTERM, stop, 0) != 0 || install(SIGINT, stop, 0) != 0 ||
        install(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART) != 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
