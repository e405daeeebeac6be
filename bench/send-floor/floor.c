// The kernel's floor for fan-out on loopback: CPU of one thread that sends a
// LEN-byte message to each of N loopback TCP sockets, ROUNDS times at 15 Hz,
// while another thread reads them all (epoll). No WebSocket, no user-space
// work: what any relay pays at least for one send per viewer per frame.
//
//   floor [send|sendfile] [rounds]      (N=300, LEN=17000 as in fanout-vs-node.sh)
//
// sendfile: the message written once per round to a fresh memfd, then
// sendfile(2) to every socket (page references instead of a copy).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define N 300
#define LEN 17000
static int cli[N], srv[N];
static volatile int stop;

static void *reader(void *arg) {
  (void)arg;
  int ep = epoll_create1(0);
  for (int i = 0; i < N; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = cli[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cli[i], &ev);
  }
  static char buf[65536];
  struct epoll_event evs[64];
  while (!stop) {
    int n = epoll_wait(ep, evs, 64, 100);
    for (int i = 0; i < n; i++)
      while (recv(evs[i].data.fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
      }
  }
  return 0;
}

static double thread_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "send";
  int rounds = argc > 2 ? atoi(argv[2]) : 300;
  int use_sendfile = !strcmp(mode, "sendfile");
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  socklen_t al = sizeof a;
  if (bind(l, (void *)&a, sizeof a) || listen(l, 1024) || getsockname(l, (void *)&a, &al)) {
    perror("listen");
    return 1;
  }
  for (int i = 0; i < N; i++) {
    cli[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(cli[i], (void *)&a, sizeof a) || (srv[i] = accept(l, 0, 0)) < 0) {
      perror("connect");
      return 1;
    }
    int one = 1, sndbuf = 262144; // as dreamstream: TCP_NODELAY, stream.socket_send_buffer
    setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(srv[i], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    fcntl(srv[i], F_SETFL, O_NONBLOCK);
  }
  pthread_t t;
  pthread_create(&t, 0, reader, 0);
  char *msg = malloc(LEN);
  memset(msg, 'x', LEN);
  long whole = 0, short_ = 0;
  struct timespec tick = {0, 1000000000L / 15};
  double c0 = thread_cpu();
  for (int r = 0; r < rounds; r++) {
    msg[0] = (char)r;
    int mfd = -1;
    if (use_sendfile) {
      mfd = memfd_create("frame", MFD_CLOEXEC);
      if (mfd < 0 || write(mfd, msg, LEN) != LEN) {
        perror("memfd");
        return 1;
      }
    }
    for (int i = 0; i < N; i++) {
      off_t off = 0;
      ssize_t n = use_sendfile ? sendfile(srv[i], mfd, &off, LEN) : send(srv[i], msg, LEN, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n == LEN) whole++; else short_++;
    }
    if (mfd >= 0) close(mfd);
    nanosleep(&tick, 0);
  }
  double c1 = thread_cpu();
  stop = 1;
  pthread_join(t, 0);
  printf("%s: %ld messages (%ld short), %.2f us CPU per message\n", mode, whole, short_,
         (c1 - c0) / (whole + short_) * 1e6);
  return 0;
}
