/* The C API (framestage.h) from C: every function on the host backend, contents checked byte
 * for byte, and errors by status and message fragment. Plain C11, no test framework: each
 * check prints what failed and the test exits non-zero at the end. */
#include <framestage/framestage.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(condition)                                                                           \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #condition, \
              framestage_last_error());                                                            \
      ++failures;                                                                                  \
    }                                                                                              \
  } while (0)

/* A call that must succeed; the test stops at once if it does not, as later steps need it. */
#define REQUIRE_OK(call)                                                        \
  do {                                                                          \
    framestage_status status_ = (call);                                         \
    if (status_ != FRAMESTAGE_OK) {                                             \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call, \
              framestage_status_string(status_), framestage_last_error());      \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

/* A call that must fail with `expected`, leaving a message that contains `fragment`. */
#define CHECK_FAILS(call, expected, fragment)                                                \
  do {                                                                                       \
    framestage_status status_ = (call);                                                      \
    if (status_ != (expected) || strstr(framestage_last_error(), (fragment)) == NULL) {      \
      fprintf(stderr, "%s:%d: %s returned %s (\"%s\"), expected %s with \"%s\"\n", __FILE__, \
              __LINE__, #call, framestage_status_string(status_), framestage_last_error(),   \
              framestage_status_string(expected), fragment);                                 \
      ++failures;                                                                            \
    }                                                                                        \
  } while (0)

static const char* kHostConfig =
    "{\"backend\": \"host\", \"buffering\": \"double\", \"arena_bytes\": 65536, "
    "\"upload_arena_bytes\": 65536, \"readback_arena_bytes\": 65536}";

enum { kCount = 1000 };

static void test_config_errors(void) {
  framestage_coordinator* c = NULL;
  CHECK_FAILS(framestage_create("{\"buffering\": 9}", &c), FRAMESTAGE_ERROR_BAD_CONFIG,
              "buffering");
  CHECK_FAILS(framestage_create("{\"no_such_key\": 1}", &c), FRAMESTAGE_ERROR_BAD_CONFIG,
              "no_such_key");
  CHECK_FAILS(framestage_create("{\"backend\": \"quantum\"}", &c), FRAMESTAGE_ERROR_BAD_CONFIG,
              "\"backend\": expected \"auto\", \"cuda\" or \"host\"");
  CHECK_FAILS(framestage_create("{\"backend\": 3}", &c), FRAMESTAGE_ERROR_BAD_CONFIG, "backend");
  CHECK_FAILS(framestage_create("not json", &c), FRAMESTAGE_ERROR_BAD_CONFIG, "bad_config");
  CHECK_FAILS(framestage_create("{}", NULL), FRAMESTAGE_ERROR_MISUSE, "out is NULL");
  CHECK(c == NULL); /* failed calls leave outputs alone */
  CHECK(strstr(framestage_last_error(), "framestage: misuse:") == framestage_last_error());
}

static void test_defaults_and_describe(void) {
  framestage_coordinator* c = NULL;
  /* NULL and "" both mean every default; "auto" runs on the host backend without a GPU. */
  REQUIRE_OK(framestage_create(NULL, &c));
  framestage_backend_kind kind = FRAMESTAGE_BACKEND_CUDA;
  REQUIRE_OK(framestage_get_backend_kind(c, &kind));
  int devices = -1;
  REQUIRE_OK(framestage_device_count(&devices));
  CHECK(devices >= 0);
  CHECK(kind == (devices > 0 ? FRAMESTAGE_BACKEND_CUDA : FRAMESTAGE_BACKEND_HOST));
  REQUIRE_OK(framestage_destroy(c));

  REQUIRE_OK(framestage_create("", &c));
  size_t length = 0;
  REQUIRE_OK(framestage_describe(c, NULL, 0, &length));
  CHECK(length > 0);
  char small[8];
  REQUIRE_OK(framestage_describe(c, small, sizeof small, &length));
  CHECK(strlen(small) == sizeof small - 1); /* truncated as snprintf does */
  CHECK_FAILS(framestage_describe(c, NULL, 4, &length), FRAMESTAGE_ERROR_MISUSE, "buffer is NULL");
  char config[1024];
  REQUIRE_OK(framestage_config_json(c, config, sizeof config, &length));
  CHECK(length < sizeof config && strstr(config, "\"buffering\": 3") != NULL);
  REQUIRE_OK(framestage_destroy(c));
  REQUIRE_OK(framestage_destroy(NULL));
}

static void test_host_backend_by_name(void) {
  framestage_coordinator* c = NULL;
  REQUIRE_OK(framestage_create(kHostConfig, &c));
  framestage_backend_kind kind = FRAMESTAGE_BACKEND_CUDA;
  REQUIRE_OK(framestage_get_backend_kind(c, &kind));
  CHECK(kind == FRAMESTAGE_BACKEND_HOST);
  char text[256];
  REQUIRE_OK(framestage_describe(c, text, sizeof text, NULL));
  CHECK(strstr(text, "\"backend\": \"host\"") != NULL);
  char config[1024];
  REQUIRE_OK(framestage_config_json(c, config, sizeof config, NULL));
  CHECK(strstr(config, "\"buffering\": 2") != NULL); /* the rest went to Config */
  REQUIRE_OK(framestage_destroy(c));
}

/* Frame 1 stages an array (the mirror) and uploads another into a device buffer; frame 2 reads
 * both back; the bytes must match exactly. */
static void test_stage_upload_readback(void) {
  framestage_coordinator* c = NULL;
  REQUIRE_OK(framestage_create(kHostConfig, &c));

  void* device = NULL;
  REQUIRE_OK(framestage_device_alloc(c, kCount * sizeof(double), &device));
  double uploaded[kCount];
  for (int i = 0; i < kCount; ++i)
    uploaded[i] = 0.25 * i - 7.0;

  REQUIRE_OK(framestage_begin_frame(c));
  uint64_t frame = 0;
  REQUIRE_OK(framestage_current_frame(c, &frame));
  CHECK(frame == 1);
  framestage_span staged;
  REQUIRE_OK(framestage_frame_alloc(c, kCount * sizeof(float), 0, &staged));
  CHECK(staged.bytes == kCount * sizeof(float) && staged.frame == 1);
  CHECK((uintptr_t)staged.data % 16 == 0);
  float* values = (float*)staged.data;
  for (int i = 0; i < kCount; ++i)
    values[i] = (float)i * 1.5f;
  REQUIRE_OK(framestage_stage_for_upload(c, &staged));
  REQUIRE_OK(framestage_upload(c, device, uploaded, sizeof uploaded));
  framestage_ticket ticket;
  REQUIRE_OK(framestage_end_frame(c, &ticket));
  CHECK(ticket.frame == 1);
  void* mirror = NULL;
  REQUIRE_OK(framestage_device_ptr(c, &staged, &mirror));
  CHECK(mirror != NULL);
  REQUIRE_OK(framestage_ticket_wait(&ticket, 10000));
  int ready = 0;
  REQUIRE_OK(framestage_ticket_ready(&ticket, &ready));
  CHECK(ready == 1);

  REQUIRE_OK(framestage_begin_frame(c));
  framestage_readback from_mirror;
  framestage_readback from_device;
  REQUIRE_OK(framestage_request_readback(c, mirror, kCount * sizeof(float), &from_mirror));
  REQUIRE_OK(framestage_request_readback(c, device, sizeof uploaded, &from_device));
  const void* early = NULL;
  CHECK_FAILS(framestage_readback_get(&from_mirror, 10, &early), FRAMESTAGE_ERROR_MISUSE,
              "readback");
  REQUIRE_OK(framestage_end_frame(c, NULL));
  const void* host = NULL;
  REQUIRE_OK(framestage_readback_get(&from_mirror, 10000, &host));
  CHECK(memcmp(host, values, kCount * sizeof(float)) == 0);
  REQUIRE_OK(framestage_readback_get(&from_device, 10000, &host));
  CHECK(memcmp(host, uploaded, sizeof uploaded) == 0);
  REQUIRE_OK(framestage_readback_ready(&from_device, &ready));
  CHECK(ready == 1);

  double back[kCount];
  REQUIRE_OK(framestage_device_read(c, back, device, sizeof back));
  CHECK(memcmp(back, uploaded, sizeof back) == 0);

  /* Frames 3 and 4 reuse both slots: the readbacks of frame 2 are gone, not another frame's. */
  for (int i = 0; i < 2; ++i) {
    REQUIRE_OK(framestage_begin_frame(c));
    REQUIRE_OK(framestage_end_frame(c, NULL));
  }
  CHECK_FAILS(framestage_readback_get(&from_device, 10, &host), FRAMESTAGE_ERROR_MISUSE, "");

  size_t length = 0;
  REQUIRE_OK(framestage_stats_json(c, NULL, 0, &length));
  char* stats = malloc(length + 1);
  REQUIRE_OK(framestage_stats_json(c, stats, length + 1, &length));
  CHECK(strlen(stats) == length);
  CHECK(strstr(stats, "\"frames\":4") != NULL || strstr(stats, "\"frames\": 4") != NULL);
  CHECK(strstr(stats, "\"readbacks\"") != NULL);
  free(stats);

  REQUIRE_OK(framestage_device_free(c, device));
  REQUIRE_OK(framestage_destroy(c));
}

/* reserve_upload: filled in place, delivered at end_frame; device_write/read round trip. */
static void test_reserve_upload_and_device_io(void) {
  framestage_coordinator* c = NULL;
  REQUIRE_OK(framestage_create(kHostConfig, &c));
  int32_t* device = NULL;
  REQUIRE_OK(framestage_device_alloc(c, 64 * sizeof(int32_t), (void**)&device));
  int32_t zeros[64] = {0};
  REQUIRE_OK(framestage_device_write(c, device, zeros, sizeof zeros));

  REQUIRE_OK(framestage_begin_frame(c));
  framestage_span reserved;
  REQUIRE_OK(framestage_reserve_upload(c, device + 8, 16 * sizeof(int32_t), &reserved));
  CHECK((uintptr_t)reserved.data % 16 == 0);
  for (int i = 0; i < 16; ++i)
    ((int32_t*)reserved.data)[i] = 100 + i;
  framestage_span aligned;
  REQUIRE_OK(framestage_frame_alloc(c, 3, 256, &aligned));
  CHECK((uintptr_t)aligned.data % 256 == 0 && aligned.bytes == 3);
  CHECK_FAILS(framestage_frame_alloc(c, 8, 24, &aligned), FRAMESTAGE_ERROR_MISUSE, "alignment");
  CHECK_FAILS(framestage_frame_alloc(c, 0, 0, &aligned), FRAMESTAGE_ERROR_MISUSE, "count");
  CHECK_FAILS(framestage_frame_alloc(c, (size_t)1 << 20, 0, &aligned),
              FRAMESTAGE_ERROR_OUT_OF_MEMORY, "");
  framestage_ticket ticket;
  REQUIRE_OK(framestage_end_frame(c, &ticket));
  REQUIRE_OK(framestage_ticket_wait(&ticket, 10000));

  int32_t back[64];
  REQUIRE_OK(framestage_device_read(c, back, device, sizeof back));
  for (int i = 0; i < 64; ++i)
    CHECK(back[i] == (i >= 8 && i < 24 ? 100 + i - 8 : 0));

  void* stream = NULL;
  REQUIRE_OK(framestage_consumer_stream(c, &stream));
  CHECK(stream != NULL);
  REQUIRE_OK(framestage_set_consumer_stream(c, NULL));
  REQUIRE_OK(framestage_synchronize(c));
  /* Left allocated on purpose: destroy frees it. */
  (void)device;
  REQUIRE_OK(framestage_destroy(c));
}

/* framestage_upload between frames: a one-off frame of its own (frame number + 1), delivered
 * before work enqueued on the consumer stream afterwards (synchronize, then read it); the calls
 * whose space is filled after the call stay misuse between frames. */
static void test_upload_between_frames(void) {
  framestage_coordinator* c = NULL;
  REQUIRE_OK(framestage_create(kHostConfig, &c));
  int32_t* device = NULL;
  REQUIRE_OK(framestage_device_alloc(c, 32 * sizeof(int32_t), (void**)&device));
  int32_t values[32];
  for (int i = 0; i < 32; ++i)
    values[i] = 7 * i - 50;
  REQUIRE_OK(framestage_upload(c, device, values, sizeof values));
  uint64_t frame = 0;
  REQUIRE_OK(framestage_current_frame(c, &frame));
  CHECK(frame == 1);
  for (int i = 0; i < 32; ++i)
    values[i] = -1; /* the source is reusable on return */
  REQUIRE_OK(framestage_synchronize(c));
  int32_t back[32];
  REQUIRE_OK(framestage_device_read(c, back, device, sizeof back));
  for (int i = 0; i < 32; ++i)
    CHECK(back[i] == 7 * i - 50);

  framestage_span span;
  CHECK_FAILS(framestage_reserve_upload(c, device, 16, &span), FRAMESTAGE_ERROR_MISUSE,
              "reserve_upload outside a frame");
  framestage_readback readback;
  CHECK_FAILS(framestage_request_readback(c, device, 16, &readback), FRAMESTAGE_ERROR_MISUSE,
              "readback outside a frame");
  CHECK_FAILS(framestage_upload(c, NULL, values, sizeof values), FRAMESTAGE_ERROR_MISUSE,
              "null destination");
  REQUIRE_OK(framestage_current_frame(c, &frame));
  CHECK(frame == 1); /* misuse opened no frame */
  REQUIRE_OK(framestage_begin_frame(c));
  REQUIRE_OK(framestage_current_frame(c, &frame));
  CHECK(frame == 2);
  REQUIRE_OK(framestage_end_frame(c, NULL));
  REQUIRE_OK(framestage_destroy(c));
}

/* A tick graph from C: the work runs once, at capture, with the user data; every frame ended
 * with it delivers its uploads byte for byte and counts as a graph frame; misuse by status. */
static void count_capture(void* stream, void* user_data) {
  CHECK(stream != NULL);
  ++*(int*)user_data;
}

static void test_tick_graph(void) {
  framestage_coordinator* c = NULL;
  REQUIRE_OK(framestage_create(kHostConfig, &c));
  int32_t* device = NULL;
  REQUIRE_OK(framestage_device_alloc(c, 64 * sizeof(int32_t), (void**)&device));
  int captured = 0;
  framestage_tick_graph* tick = NULL;
  CHECK_FAILS(framestage_capture_tick(c, NULL, &captured, &tick), FRAMESTAGE_ERROR_MISUSE,
              "work is NULL");
  CHECK_FAILS(framestage_capture_tick(c, count_capture, &captured, NULL), FRAMESTAGE_ERROR_MISUSE,
              "tick is NULL");
  REQUIRE_OK(framestage_capture_tick(c, count_capture, &captured, &tick));
  CHECK(captured == 1);
  for (int32_t frame = 1; frame <= 4; ++frame) {
    REQUIRE_OK(framestage_begin_frame(c));
    CHECK_FAILS(framestage_capture_tick(c, count_capture, &captured, &tick),
                FRAMESTAGE_ERROR_MISUSE, "capture_tick inside frame");
    int32_t values[64];
    for (int i = 0; i < 64; ++i)
      values[i] = frame * 100 + i;
    REQUIRE_OK(
        framestage_upload(c, device + frame, values, (size_t)(64 - frame) * sizeof(int32_t)));
    CHECK_FAILS(framestage_end_frame_tick(c, NULL, NULL), FRAMESTAGE_ERROR_MISUSE, "tick is NULL");
    framestage_ticket ticket;
    REQUIRE_OK(framestage_end_frame_tick(c, tick, &ticket));
    REQUIRE_OK(framestage_ticket_wait(&ticket, 1000));
    int32_t back[64];
    REQUIRE_OK(framestage_device_read(c, back, device, sizeof back));
    for (int i = frame; i < 64; ++i)
      CHECK(back[i] == frame * 100 + (i - frame));
  }
  CHECK(captured == 1); /* captured once, replayed by every frame */
  char stats[4096];
  REQUIRE_OK(framestage_stats_json(c, stats, sizeof stats, NULL));
  CHECK(strstr(stats, "\"tick_graph_frames\": 4") != NULL);
  REQUIRE_OK(framestage_tick_graph_destroy(tick));
  REQUIRE_OK(framestage_tick_graph_destroy(NULL));
  REQUIRE_OK(framestage_destroy(c));
}

static void test_misuse(void) {
  CHECK_FAILS(framestage_begin_frame(NULL), FRAMESTAGE_ERROR_MISUSE, "coordinator is NULL");
  framestage_coordinator* c = NULL;
  REQUIRE_OK(framestage_create(kHostConfig, &c));
  CHECK_FAILS(framestage_end_frame(c, NULL), FRAMESTAGE_ERROR_MISUSE, "misuse");
  framestage_span span;
  CHECK_FAILS(framestage_frame_alloc(c, 16, 0, &span), FRAMESTAGE_ERROR_MISUSE, "frame_alloc");
  REQUIRE_OK(framestage_begin_frame(c));
  CHECK_FAILS(framestage_begin_frame(c), FRAMESTAGE_ERROR_MISUSE, "begin_frame");
  int not_in_arena[4] = {0};
  framestage_span foreign = {not_in_arena, sizeof not_in_arena, 1};
  CHECK_FAILS(framestage_stage_for_upload(c, &foreign), FRAMESTAGE_ERROR_MISUSE, "arena");
  CHECK_FAILS(framestage_upload(c, NULL, not_in_arena, sizeof not_in_arena),
              FRAMESTAGE_ERROR_MISUSE, "");
  CHECK_FAILS(framestage_upload(c, not_in_arena, NULL, 4), FRAMESTAGE_ERROR_MISUSE, "src is NULL");
  CHECK_FAILS(framestage_set_consumer_stream(c, NULL), FRAMESTAGE_ERROR_MISUSE, "between frames");
  CHECK_FAILS(framestage_device_free(c, not_in_arena), FRAMESTAGE_ERROR_MISUSE,
              "framestage_device_free");
  CHECK_FAILS(framestage_device_alloc(c, 0, (void**)&span.data), FRAMESTAGE_ERROR_MISUSE,
              "bytes must be > 0");
  framestage_ticket empty = {0};
  CHECK_FAILS(framestage_ticket_wait(&empty, 1), FRAMESTAGE_ERROR_MISUSE, "ticket is empty");
  REQUIRE_OK(framestage_end_frame(c, NULL)); /* misuse changed nothing: the frame still ends */
  CHECK(strcmp(framestage_status_string(FRAMESTAGE_ERROR_TIMEOUT), "FRAMESTAGE_ERROR_TIMEOUT") ==
        0);
  REQUIRE_OK(framestage_destroy(c));
}

/* Threads that fill one frame at once, each with its own error message. */
enum { kThreads = 4, kPerThread = 64 };

typedef struct {
  framestage_coordinator* coordinator;
  int32_t* device; /* kThreads * kPerThread elements */
  int index;
  int ok;
} worker_args;

static void* fill_frame(void* argument) {
  worker_args* w = (worker_args*)argument;
  w->ok = strcmp(framestage_last_error(), "") == 0; /* a new thread starts with no message */
  int32_t values[kPerThread];
  for (int i = 0; i < kPerThread; ++i)
    values[i] = w->index * 1000 + i;
  w->ok &= framestage_upload(w->coordinator, w->device + w->index * kPerThread, values,
                             sizeof values) == FRAMESTAGE_OK;
  framestage_span span;
  w->ok &= framestage_frame_alloc(w->coordinator, sizeof values, 0, &span) == FRAMESTAGE_OK;
  if (w->ok) {
    memcpy(span.data, values, sizeof values);
    w->ok &= framestage_stage_for_upload(w->coordinator, &span) == FRAMESTAGE_OK;
  }
  if (w->index == 0) {
    /* Only this thread's message changes. */
    w->ok &= framestage_frame_alloc(w->coordinator, 8, 3, &span) == FRAMESTAGE_ERROR_MISUSE;
    w->ok &= strstr(framestage_last_error(), "alignment") != NULL;
  } else {
    w->ok &= strcmp(framestage_last_error(), "") == 0;
  }
  return NULL;
}

static void test_threads(void) {
  framestage_coordinator* c = NULL;
  REQUIRE_OK(framestage_create(kHostConfig, &c));
  int32_t* device = NULL;
  REQUIRE_OK(framestage_device_alloc(c, kThreads * kPerThread * sizeof(int32_t), (void**)&device));
  REQUIRE_OK(framestage_begin_frame(c));
  pthread_t threads[kThreads];
  worker_args args[kThreads];
  for (int t = 0; t < kThreads; ++t) {
    args[t] = (worker_args){c, device, t, 0};
    CHECK(pthread_create(&threads[t], NULL, fill_frame, &args[t]) == 0);
  }
  for (int t = 0; t < kThreads; ++t) {
    CHECK(pthread_join(threads[t], NULL) == 0);
    CHECK(args[t].ok);
  }
  REQUIRE_OK(framestage_end_frame(c, NULL));
  int32_t back[kThreads * kPerThread];
  REQUIRE_OK(framestage_device_read(c, back, device, sizeof back));
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    CHECK(back[i] == (i / kPerThread) * 1000 + i % kPerThread);
  }
  REQUIRE_OK(framestage_destroy(c));
}

static void test_cuda_backend_by_name(void) {
  int devices = 0;
  REQUIRE_OK(framestage_device_count(&devices));
  framestage_coordinator* c = NULL;
  if (devices == 0) {
    CHECK_FAILS(framestage_create("{\"backend\": \"cuda\"}", &c), FRAMESTAGE_ERROR_CUDA,
                "\"backend\": \"cuda\" asked for");
    CHECK(c == NULL);
    return;
  }
  REQUIRE_OK(framestage_create("{\"backend\": \"cuda\", \"arena_bytes\": 65536}", &c));
  framestage_backend_kind kind = FRAMESTAGE_BACKEND_HOST;
  REQUIRE_OK(framestage_get_backend_kind(c, &kind));
  CHECK(kind == FRAMESTAGE_BACKEND_CUDA);
  REQUIRE_OK(framestage_destroy(c));
}

int main(void) {
  CHECK(strcmp(framestage_last_error(), "") == 0);
  test_config_errors();
  test_defaults_and_describe();
  test_host_backend_by_name();
  test_stage_upload_readback();
  test_reserve_upload_and_device_io();
  test_upload_between_frames();
  test_tick_graph();
  test_misuse();
  test_threads();
  test_cuda_backend_by_name();
  if (failures > 0) {
    fprintf(stderr, "test_c_api: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_c_api: all checks passed\n");
  return 0;
}
