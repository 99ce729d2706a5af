/* The C API from an installed framestage: stage an array and read it back. */
#include <framestage/framestage.h>

#include <stdio.h>
#include <string.h>

#define TRY(call)                                                            \
  do {                                                                       \
    if ((call) != FRAMESTAGE_OK) {                                           \
      printf("consumer_c: %s failed: %s\n", #call, framestage_last_error()); \
      return 1;                                                              \
    }                                                                        \
  } while (0)

int main(void) {
  framestage_coordinator* c = NULL;
  TRY(framestage_create("{\"backend\": \"host\", \"arena_bytes\": 65536}", &c));
  TRY(framestage_begin_frame(c));
  framestage_span span;
  TRY(framestage_frame_alloc(c, 4 * sizeof(int), 0, &span));
  const int values[4] = {5, 6, 7, 8};
  memcpy(span.data, values, sizeof values);
  TRY(framestage_stage_for_upload(c, &span));
  framestage_ticket ticket;
  TRY(framestage_end_frame(c, &ticket));
  void* mirror = NULL;
  TRY(framestage_device_ptr(c, &span, &mirror));
  TRY(framestage_begin_frame(c));
  framestage_readback readback;
  TRY(framestage_request_readback(c, mirror, sizeof values, &readback));
  TRY(framestage_end_frame(c, NULL));
  const void* back = NULL;
  TRY(framestage_readback_get(&readback, 10000, &back));
  const int equal = memcmp(back, values, sizeof values) == 0;
  TRY(framestage_destroy(c));
  puts(equal ? "consumer_c: ok" : "consumer_c: wrong contents");
  return equal ? 0 : 1;
}
