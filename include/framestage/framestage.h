/**
 * @file framestage.h
 * @brief The C interface to framestage, for C codes and (through ISO_C_BINDING) Fortran.
 *
 * A `framestage_coordinator` owns a backend (CUDA or host emulation) and a Coordinator on it.
 * The frame workflow is the C++ one: framestage_begin_frame(); any number of frame_alloc,
 * stage_for_upload, upload, reserve_upload and request_readback calls; framestage_end_frame().
 * See coordinator.hpp for what each step does and orders.
 *
 * **Errors:** every function returns a framestage_status. On failure it also sets a message,
 * read with framestage_last_error() on the same thread, and leaves its output arguments as they
 * were. Categories match framestage::ErrorCategory; a misused call changes nothing, and after a
 * frame call fails with FRAMESTAGE_ERROR_CUDA the coordinator is failed: every later frame call
 * on it returns FRAMESTAGE_ERROR_FAILED_STATE carrying the first error.
 *
 * **Thread safety:** as the C++ Coordinator. frame_alloc, stage_for_upload, device_ptr, upload,
 * reserve_upload and request_readback may be called from many threads at once inside a frame;
 * device_alloc and device_free may be called from any thread; every other function that takes
 * a coordinator belongs to one owner thread. The readback and ticket functions may be called
 * from any thread, but not concurrently with the begin_frame that reuses their slot. Messages
 * are per thread.
 *
 * **Memory:** "device" pointers are CUDA device addresses on the CUDA backend and host memory
 * on the host backend; host code must only read them through framestage. Pinned pointers
 * (frame spans, reservations, readbacks) are host memory valid until their slot is reused,
 * `buffering` frames later.
 */
#ifndef FRAMESTAGE_FRAMESTAGE_H
#define FRAMESTAGE_FRAMESTAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief What a call returned; the error values mirror framestage::ErrorCategory. */
typedef enum framestage_status {
  FRAMESTAGE_OK = 0,
  FRAMESTAGE_ERROR_BAD_CONFIG = 1,    /**< invalid config JSON, key or value */
  FRAMESTAGE_ERROR_MISUSE = 2,        /**< a call out of order, or a forbidden argument */
  FRAMESTAGE_ERROR_OUT_OF_MEMORY = 3, /**< an arena, table or allocation did not fit */
  FRAMESTAGE_ERROR_CUDA = 4,          /**< the CUDA runtime (or emulated device) failed */
  FRAMESTAGE_ERROR_TIMEOUT = 5,       /**< a wait ran past its limit; the call may be retried */
  FRAMESTAGE_ERROR_FAILED_STATE = 6,  /**< the coordinator failed earlier (see the message) */
  FRAMESTAGE_ERROR_INTERNAL = 7       /**< anything else (a bug: please report the message) */
} framestage_status;

/** @brief Which backend a coordinator runs on. */
typedef enum framestage_backend_kind {
  FRAMESTAGE_BACKEND_HOST = 0, /**< host emulation: "device" memory is host memory */
  FRAMESTAGE_BACKEND_CUDA = 1
} framestage_backend_kind;

/** @brief Opaque: a backend and the coordinator on it. */
typedef struct framestage_coordinator framestage_coordinator;

/**
 * @brief Bytes in a frame's pinned arena (framestage_frame_alloc) or upload arena
 * (framestage_reserve_upload), tagged with their frame. Plain values: copy freely; do not edit.
 */
typedef struct framestage_span {
  void* data;     /**< pinned host memory, writable until end_frame */
  size_t bytes;   /**< as asked for */
  uint64_t frame; /**< the frame it belongs to (1 for the first) */
} framestage_span;

/**
 * @brief A device region read back with a frame (framestage_request_readback). Plain values: copy
 * freely; framestage_readback_get gives the host address of the bytes once they have landed.
 */
typedef struct framestage_readback {
  uint64_t frame;       /**< the frame it was read with */
  size_t bytes;         /**< as asked for */
  uint64_t internal[4]; /**< the coordinator's; do not touch */
} framestage_readback;

/** @brief A submitted frame (framestage_end_frame). Plain values. */
typedef struct framestage_ticket {
  void* backend;  /**< internal */
  uint64_t frame; /**< the frame's number (1 for the first) */
  uint32_t slot;
  /** The consumer stream: launch kernels that read the frame here (a cudaStream_t on CUDA). */
  void* stream;
  void* event; /**< completes when every byte of the frame has arrived (a cudaEvent_t on CUDA) */
} framestage_ticket;

/**
 * @brief The message of the last call that failed on this thread ("framestage: misuse: ...");
 * "" if none has. Successful calls leave it as it was.
 * @return A string owned by the thread, valid until its next failing framestage call.
 */
const char* framestage_last_error(void);

/** @brief The status's name ("FRAMESTAGE_ERROR_MISUSE"); static storage. */
const char* framestage_status_string(framestage_status status);

/**
 * @brief CUDA devices this build of framestage can use: 0 without CUDA or without a device.
 * @param[out] count
 */
framestage_status framestage_device_count(int* count);

/**
 * @brief Makes a backend and a coordinator from a JSON object.
 *
 * The keys are Config's (config.hpp: "buffering", "arena_bytes", "device", ...), plus
 * "backend": "auto" (the default: CUDA on `device` if present, host emulation otherwise),
 * "cuda" (fails with FRAMESTAGE_ERROR_CUDA if no device) or "host".
 * @param config_json NUL-terminated JSON text; NULL or "" for every default.
 * @param[out] out the new coordinator, to be released with framestage_destroy.
 * @return FRAMESTAGE_ERROR_BAD_CONFIG naming a bad key or value; FRAMESTAGE_ERROR_OUT_OF_MEMORY
 *         if the arenas do not fit; FRAMESTAGE_ERROR_CUDA.
 */
framestage_status framestage_create(const char* config_json, framestage_coordinator** out);

/**
 * @brief Waits for every frame in flight, then frees the coordinator, the device memory from
 * framestage_device_alloc still allocated, and the backend. NULL is accepted.
 */
framestage_status framestage_destroy(framestage_coordinator* coordinator);

/** @param[out] kind the backend the coordinator runs on. */
framestage_status framestage_get_backend_kind(const framestage_coordinator* coordinator,
                                              framestage_backend_kind* kind);

/**
 * @brief One line naming the backend ("CUDA device 0: NVIDIA H100 ...", "host emulation ..."),
 * and why it was chosen, written as snprintf does.
 * @param buffer receives min(length, capacity - 1) characters and a NUL; may be NULL if
 *        capacity is 0.
 * @param[out] length the full length, without the NUL (may be NULL).
 */
framestage_status framestage_describe(const framestage_coordinator* coordinator, char* buffer,
                                      size_t capacity, size_t* length);

/** @brief Opens the next frame, waiting until its slot is free (slot_timeout_ms). */
framestage_status framestage_begin_frame(framestage_coordinator* coordinator);

/**
 * @brief `bytes` (> 0) uninitialised bytes in the frame's pinned arena.
 * @param alignment a power of two up to 256; 0 means 16 (enough for any C scalar).
 * @param[out] span the bytes, writable until end_frame and valid until the slot is reused.
 */
framestage_status framestage_frame_alloc(framestage_coordinator* coordinator, size_t bytes,
                                         size_t alignment, framestage_span* span);

/**
 * @brief Copies `span` (from framestage_frame_alloc in this frame) to the same offset of the
 * slot's device mirror at end_frame; framestage_device_ptr gives the address.
 */
framestage_status framestage_stage_for_upload(framestage_coordinator* coordinator,
                                              const framestage_span* span);

/**
 * @param[out] device_ptr the device address of `span`'s mirror, for kernels on the ticket's
 *             stream. The span's frame must be open or the last one ended, and its slot not yet
 *             reused.
 */
framestage_status framestage_device_ptr(const framestage_coordinator* coordinator,
                                        const framestage_span* span, void** device_ptr);

/**
 * @brief Copies `bytes` from `src` (any host memory, reusable on return) into pinned memory and
 * delivers them to `device_dst`. Inside a frame, with that frame; of overlapping uploads the
 * last one issued wins. Between frames (from the owner thread only), as a one-off frame of its
 * own, as Coordinator::upload: the bytes are there before any work enqueued on the consumer
 * stream after the call; it waits for a slot as framestage_begin_frame does
 * (FRAMESTAGE_ERROR_TIMEOUT, nothing uploaded), and the frame number advances by one.
 */
framestage_status framestage_upload(framestage_coordinator* coordinator, void* device_dst,
                                    const void* src, size_t bytes);

/**
 * @brief `bytes` (> 0) of pinned space, 16-byte aligned, that the caller fills before
 * end_frame, which delivers them to `device_dst`: the data is written once, with no host copy.
 */
framestage_status framestage_reserve_upload(framestage_coordinator* coordinator, void* device_dst,
                                            size_t bytes, framestage_span* span);

/**
 * @brief Reads `bytes` (> 0) at `device_src` back to pinned host memory with this frame: at
 * end_frame, after the work enqueued on the consumer stream before it and before this frame's
 * uploads land.
 * @param[out] readback poll it with framestage_readback_ready, wait with _get.
 */
framestage_status framestage_request_readback(framestage_coordinator* coordinator,
                                              const void* device_src, size_t bytes,
                                              framestage_readback* readback);

/**
 * @param[out] ready 1 once the bytes are in host memory, 0 before (and before end_frame).
 * @return FRAMESTAGE_ERROR_MISUSE once the slot has been reused.
 */
framestage_status framestage_readback_ready(const framestage_readback* readback, int* ready);

/**
 * @brief Waits up to `timeout_ms` for the bytes, and gives their address.
 * @param[out] data the bytes' pinned host address, valid until the slot is reused.
 * @return FRAMESTAGE_ERROR_MISUSE before the frame's end_frame or after its slot was reused;
 *         FRAMESTAGE_ERROR_TIMEOUT.
 */
framestage_status framestage_readback_get(const framestage_readback* readback, uint32_t timeout_ms,
                                          const void** data);

/**
 * @brief Plans and submits the frame's transfers and closes it.
 * @param[out] ticket the frame's stream and event (may be NULL).
 */
framestage_status framestage_end_frame(framestage_coordinator* coordinator,
                                       framestage_ticket* ticket);

/** @brief A captured tick (framestage_capture_tick); destroy it with
 * framestage_tick_graph_destroy. Owner thread only. */
typedef struct framestage_tick_graph framestage_tick_graph;

/** @brief A tick's work: enqueues the tick's kernels on `stream` (a cudaStream_t on CUDA);
 * `user_data` is what framestage_capture_tick was given. It must not synchronise or allocate. */
typedef void (*framestage_tick_work)(void* stream, void* user_data);

/**
 * @brief Captures a tick once (Coordinator::capture_tick): calls `work(stream, user_data)` now,
 * and what it enqueues on `stream` runs after the transfers of every frame ended with
 * framestage_end_frame_tick. Its kernels read fixed addresses: upload into persistent device
 * memory (framestage_device_alloc), not a frame's mirror. Between frames only.
 * @param[out] tick the graph, owned by the caller; it must not outlive the coordinator.
 * @return FRAMESTAGE_ERROR_MISUSE inside a frame, for a NULL `work` or `tick`, or if `work`
 *         broke the capture; FRAMESTAGE_ERROR_CUDA.
 */
framestage_status framestage_capture_tick(framestage_coordinator* coordinator,
                                          framestage_tick_work work, void* user_data,
                                          framestage_tick_graph** tick);

/**
 * @brief framestage_end_frame, with the frame's transfers and the tick's captured work run as
 * one graph launch on the consumer stream (Coordinator::end_frame(TickGraph&)).
 * @param[out] ticket the frame's stream and event (may be NULL); the event completes when the
 *             whole launch, captured work included, has run.
 * @return FRAMESTAGE_ERROR_MISUSE without an open frame, or for a NULL `tick` or one captured
 *         by another coordinator; FRAMESTAGE_ERROR_CUDA.
 */
framestage_status framestage_end_frame_tick(framestage_coordinator* coordinator,
                                            framestage_tick_graph* tick, framestage_ticket* ticket);

/** @brief Frees a tick graph (NULL is accepted); launches in flight run to their end. */
framestage_status framestage_tick_graph_destroy(framestage_tick_graph* tick);

/** @param[out] ready 1 once every byte of the ticket's frame has arrived, else 0. */
framestage_status framestage_ticket_ready(const framestage_ticket* ticket, int* ready);

/** @brief Waits up to `timeout_ms` for the ticket's frame (FRAMESTAGE_ERROR_TIMEOUT after). */
framestage_status framestage_ticket_wait(const framestage_ticket* ticket, uint32_t timeout_ms);

/** @brief Waits until every frame submitted so far has arrived and its readers have run. */
framestage_status framestage_synchronize(framestage_coordinator* coordinator);

/** @param[out] stream the consumer stream (a cudaStream_t on CUDA). */
framestage_status framestage_consumer_stream(const framestage_coordinator* coordinator,
                                             void** stream);

/**
 * @brief Runs frames' scatters and direct copies on `stream` (NULL: the coordinator's own).
 * Between frames only; the stream must outlive its use.
 */
framestage_status framestage_set_consumer_stream(framestage_coordinator* coordinator, void* stream);

/** @param[out] frame the open frame, or the last one ended (0 before the first). */
framestage_status framestage_current_frame(const framestage_coordinator* coordinator,
                                           uint64_t* frame);

/**
 * @brief The coordinator's statistics (CoordinatorStats::to_json), written as snprintf does:
 * `buffer` gets min(length, capacity - 1) characters and a NUL. Call with capacity 0 to size.
 * @param[out] length the full length, without the NUL (may be NULL).
 */
framestage_status framestage_stats_json(const framestage_coordinator* coordinator, char* buffer,
                                        size_t capacity, size_t* length);

/** @brief The Config in effect (Config::to_json), written as framestage_stats_json. */
framestage_status framestage_config_json(const framestage_coordinator* coordinator, char* buffer,
                                         size_t capacity, size_t* length);

/**
 * @brief `bytes` (> 0) of device memory from the coordinator's backend, 256-byte aligned.
 * Ownership: the caller's until framestage_device_free; framestage_destroy frees what is left.
 * Thread safety: any thread.
 */
framestage_status framestage_device_alloc(framestage_coordinator* coordinator, size_t bytes,
                                          void** device_ptr);

/**
 * @brief Frees memory from this coordinator's framestage_device_alloc once no enqueued work
 * uses it (wait for that first). NULL is accepted; any other pointer is FRAMESTAGE_ERROR_MISUSE.
 */
framestage_status framestage_device_free(framestage_coordinator* coordinator, void* device_ptr);

/**
 * @brief Synchronous copy to device memory, for setting up and checking, not per tick: waits
 * for the work on the consumer stream, copies, and waits for the copy. Owner thread only.
 */
framestage_status framestage_device_write(framestage_coordinator* coordinator, void* device_dst,
                                          const void* host_src, size_t bytes);

/**
 * @brief Synchronous copy from device memory, for checks: waits for the work on the consumer
 * stream (every ended frame's transfers, and the kernels launched there), then copies. Owner
 * thread only.
 */
framestage_status framestage_device_read(framestage_coordinator* coordinator, void* host_dst,
                                         const void* device_src, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif /* FRAMESTAGE_FRAMESTAGE_H */
