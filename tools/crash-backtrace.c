// Preloaded by tools/gpu-check into its long GPU steps (LD_PRELOAD): a fatal signal prints the
// faulting address and the thread's stack to stderr before the process dies as it would have.
// The device machines have no gdb, and cuda-gdb hit an internal error on attach (session 11);
// this found session 12's crash inside cuMemcpyBatchAsync_v2.
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  (void)context;
  char line[160];
  const int n =
      snprintf(line, sizeof line, "crash-backtrace: signal %d (%s) at address %p, thread %d\n", sig,
               strsignal(sig), info->si_addr, (int)gettid());
  if (n > 0) write(STDERR_FILENO, line, (size_t)n);
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
  signal(sig, SIG_DFL);  // die of the same signal, so the exit status stays what it was
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  void* warm[1];
  backtrace(warm, 1);  // loads libgcc's unwinder now, not inside the handler
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_fatal_signal;
  action.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  const int signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; ++i)
    sigaction(signals[i], &action, NULL);
}
