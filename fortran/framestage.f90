!> @file framestage.f90
!> @brief framestage for Fortran: the C interface (framestage.h) through ISO_C_BINDING.
!>
!> Names, arguments and status codes are those of framestage.h; read it for the contract of each
!> call. A coordinator is a type(c_ptr). Where C takes a NUL-terminated string or fills a
!> buffer, these take and return Fortran character strings. Host arrays are passed as they are
!> (assumed type); device addresses are type(c_ptr). C's uint64_t and uint32_t are
!> integer(c_int64_t) and integer(c_int32_t) here.
!>
!> Pinned memory (a frame_alloc span, a reservation, a readback) comes back as a type(c_ptr):
!> give it a Fortran shape with c_f_pointer, write or read it, and stop using it when its slot is
!> reused (`buffering` frames later).
module framestage
  use, intrinsic :: iso_c_binding
  implicit none
  private

  ! framestage_status
  enum, bind(c)
    enumerator :: FRAMESTAGE_OK = 0
    enumerator :: FRAMESTAGE_ERROR_BAD_CONFIG = 1
    enumerator :: FRAMESTAGE_ERROR_MISUSE = 2
    enumerator :: FRAMESTAGE_ERROR_OUT_OF_MEMORY = 3
    enumerator :: FRAMESTAGE_ERROR_CUDA = 4
    enumerator :: FRAMESTAGE_ERROR_TIMEOUT = 5
    enumerator :: FRAMESTAGE_ERROR_FAILED_STATE = 6
    enumerator :: FRAMESTAGE_ERROR_INTERNAL = 7
  end enum
  ! framestage_backend_kind
  enum, bind(c)
    enumerator :: FRAMESTAGE_BACKEND_HOST = 0
    enumerator :: FRAMESTAGE_BACKEND_CUDA = 1
  end enum

  public :: FRAMESTAGE_OK, FRAMESTAGE_ERROR_BAD_CONFIG, FRAMESTAGE_ERROR_MISUSE, &
            FRAMESTAGE_ERROR_OUT_OF_MEMORY, FRAMESTAGE_ERROR_CUDA, FRAMESTAGE_ERROR_TIMEOUT, &
            FRAMESTAGE_ERROR_FAILED_STATE, FRAMESTAGE_ERROR_INTERNAL
  public :: FRAMESTAGE_BACKEND_HOST, FRAMESTAGE_BACKEND_CUDA

  !> Bytes in a frame's pinned arena or upload arena, tagged with their frame.
  type, bind(c), public :: framestage_span
    type(c_ptr) :: data = c_null_ptr
    integer(c_size_t) :: bytes = 0
    integer(c_int64_t) :: frame = 0
  end type framestage_span

  !> A device region read back with a frame.
  type, bind(c), public :: framestage_readback
    integer(c_int64_t) :: frame = 0
    integer(c_size_t) :: bytes = 0
    integer(c_int64_t) :: internal(4) = 0
  end type framestage_readback

  !> A submitted frame: its stream (a cudaStream_t on CUDA) and event.
  type, bind(c), public :: framestage_ticket
    type(c_ptr) :: backend = c_null_ptr
    integer(c_int64_t) :: frame = 0
    integer(c_int32_t) :: slot = 0
    type(c_ptr) :: stream = c_null_ptr
    type(c_ptr) :: event = c_null_ptr
  end type framestage_ticket

  public :: framestage_last_error, framestage_status_string, framestage_device_count
  public :: framestage_create, framestage_destroy, framestage_get_backend_kind
  public :: framestage_describe
  public :: framestage_begin_frame, framestage_frame_alloc, framestage_stage_for_upload
  public :: framestage_device_ptr, framestage_upload, framestage_reserve_upload
  public :: framestage_request_readback, framestage_readback_ready, framestage_readback_get
  public :: framestage_end_frame, framestage_ticket_ready, framestage_ticket_wait
  public :: framestage_capture_tick, framestage_end_frame_tick, framestage_tick_graph_destroy
  public :: framestage_synchronize, framestage_consumer_stream, framestage_set_consumer_stream
  public :: framestage_current_frame, framestage_stats_json, framestage_config_json
  public :: framestage_device_alloc, framestage_device_free, framestage_device_write
  public :: framestage_device_read

  ! The C functions used as they are.
  interface
    integer(c_int) function framestage_device_count(count) bind(c, name="framestage_device_count")
      import :: c_int
      integer(c_int), intent(out) :: count
    end function framestage_device_count

    integer(c_int) function framestage_destroy(coordinator) bind(c, name="framestage_destroy")
      import :: c_int, c_ptr
      type(c_ptr), value :: coordinator
    end function framestage_destroy

    integer(c_int) function framestage_get_backend_kind(coordinator, kind) &
        bind(c, name="framestage_get_backend_kind")
      import :: c_int, c_ptr
      type(c_ptr), value :: coordinator
      integer(c_int), intent(out) :: kind
    end function framestage_get_backend_kind

    integer(c_int) function framestage_begin_frame(coordinator) &
        bind(c, name="framestage_begin_frame")
      import :: c_int, c_ptr
      type(c_ptr), value :: coordinator
    end function framestage_begin_frame

    !> alignment: a power of two up to 256, or 0 for 16.
    integer(c_int) function framestage_frame_alloc(coordinator, bytes, alignment, span) &
        bind(c, name="framestage_frame_alloc")
      import :: c_int, c_ptr, c_size_t, framestage_span
      type(c_ptr), value :: coordinator
      integer(c_size_t), value :: bytes, alignment
      type(framestage_span), intent(out) :: span
    end function framestage_frame_alloc

    integer(c_int) function framestage_stage_for_upload(coordinator, span) &
        bind(c, name="framestage_stage_for_upload")
      import :: c_int, c_ptr, framestage_span
      type(c_ptr), value :: coordinator
      type(framestage_span), intent(in) :: span
    end function framestage_stage_for_upload

    integer(c_int) function framestage_device_ptr(coordinator, span, device_ptr) &
        bind(c, name="framestage_device_ptr")
      import :: c_int, c_ptr, framestage_span
      type(c_ptr), value :: coordinator
      type(framestage_span), intent(in) :: span
      type(c_ptr), intent(out) :: device_ptr
    end function framestage_device_ptr

    !> src: any host array; `bytes` of it are copied before this returns.
    integer(c_int) function framestage_upload(coordinator, device_dst, src, bytes) &
        bind(c, name="framestage_upload")
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator, device_dst
      type(*), dimension(*), intent(in) :: src
      integer(c_size_t), value :: bytes
    end function framestage_upload

    integer(c_int) function framestage_reserve_upload(coordinator, device_dst, bytes, span) &
        bind(c, name="framestage_reserve_upload")
      import :: c_int, c_ptr, c_size_t, framestage_span
      type(c_ptr), value :: coordinator, device_dst
      integer(c_size_t), value :: bytes
      type(framestage_span), intent(out) :: span
    end function framestage_reserve_upload

    integer(c_int) function framestage_request_readback(coordinator, device_src, bytes, &
                                                        readback) &
        bind(c, name="framestage_request_readback")
      import :: c_int, c_ptr, c_size_t, framestage_readback
      type(c_ptr), value :: coordinator, device_src
      integer(c_size_t), value :: bytes
      type(framestage_readback), intent(out) :: readback
    end function framestage_request_readback

    integer(c_int) function framestage_readback_ready(readback, ready) &
        bind(c, name="framestage_readback_ready")
      import :: c_int, framestage_readback
      type(framestage_readback), intent(in) :: readback
      integer(c_int), intent(out) :: ready
    end function framestage_readback_ready

    !> data: the bytes' pinned host address once they have landed.
    integer(c_int) function framestage_readback_get(readback, timeout_ms, data) &
        bind(c, name="framestage_readback_get")
      import :: c_int, c_int32_t, c_ptr, framestage_readback
      type(framestage_readback), intent(in) :: readback
      integer(c_int32_t), value :: timeout_ms
      type(c_ptr), intent(out) :: data
    end function framestage_readback_get

    integer(c_int) function framestage_end_frame(coordinator, ticket) &
        bind(c, name="framestage_end_frame")
      import :: c_int, c_ptr, framestage_ticket
      type(c_ptr), value :: coordinator
      type(framestage_ticket), intent(out) :: ticket
    end function framestage_end_frame

    ! work: c_funloc of a bind(c) subroutine work(stream, user_data) with two type(c_ptr),
    ! value arguments; it enqueues the tick's kernels on stream, once, now.
    integer(c_int) function framestage_capture_tick(coordinator, work, user_data, tick) &
        bind(c, name="framestage_capture_tick")
      import :: c_int, c_ptr, c_funptr
      type(c_ptr), value :: coordinator
      type(c_funptr), value :: work
      type(c_ptr), value :: user_data
      type(c_ptr), intent(out) :: tick
    end function framestage_capture_tick

    integer(c_int) function framestage_end_frame_tick(coordinator, tick, ticket) &
        bind(c, name="framestage_end_frame_tick")
      import :: c_int, c_ptr, framestage_ticket
      type(c_ptr), value :: coordinator
      type(c_ptr), value :: tick
      type(framestage_ticket), intent(out) :: ticket
    end function framestage_end_frame_tick

    integer(c_int) function framestage_tick_graph_destroy(tick) &
        bind(c, name="framestage_tick_graph_destroy")
      import :: c_int, c_ptr
      type(c_ptr), value :: tick
    end function framestage_tick_graph_destroy

    integer(c_int) function framestage_ticket_ready(ticket, ready) &
        bind(c, name="framestage_ticket_ready")
      import :: c_int, framestage_ticket
      type(framestage_ticket), intent(in) :: ticket
      integer(c_int), intent(out) :: ready
    end function framestage_ticket_ready

    integer(c_int) function framestage_ticket_wait(ticket, timeout_ms) &
        bind(c, name="framestage_ticket_wait")
      import :: c_int, c_int32_t, framestage_ticket
      type(framestage_ticket), intent(in) :: ticket
      integer(c_int32_t), value :: timeout_ms
    end function framestage_ticket_wait

    integer(c_int) function framestage_synchronize(coordinator) &
        bind(c, name="framestage_synchronize")
      import :: c_int, c_ptr
      type(c_ptr), value :: coordinator
    end function framestage_synchronize

    integer(c_int) function framestage_consumer_stream(coordinator, stream) &
        bind(c, name="framestage_consumer_stream")
      import :: c_int, c_ptr
      type(c_ptr), value :: coordinator
      type(c_ptr), intent(out) :: stream
    end function framestage_consumer_stream

    integer(c_int) function framestage_set_consumer_stream(coordinator, stream) &
        bind(c, name="framestage_set_consumer_stream")
      import :: c_int, c_ptr
      type(c_ptr), value :: coordinator, stream
    end function framestage_set_consumer_stream

    integer(c_int) function framestage_current_frame(coordinator, frame) &
        bind(c, name="framestage_current_frame")
      import :: c_int, c_int64_t, c_ptr
      type(c_ptr), value :: coordinator
      integer(c_int64_t), intent(out) :: frame
    end function framestage_current_frame

    integer(c_int) function framestage_device_alloc(coordinator, bytes, device_ptr) &
        bind(c, name="framestage_device_alloc")
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator
      integer(c_size_t), value :: bytes
      type(c_ptr), intent(out) :: device_ptr
    end function framestage_device_alloc

    integer(c_int) function framestage_device_free(coordinator, device_ptr) &
        bind(c, name="framestage_device_free")
      import :: c_int, c_ptr
      type(c_ptr), value :: coordinator, device_ptr
    end function framestage_device_free

    !> host_src: any host array.
    integer(c_int) function framestage_device_write(coordinator, device_dst, host_src, bytes) &
        bind(c, name="framestage_device_write")
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator, device_dst
      type(*), dimension(*), intent(in) :: host_src
      integer(c_size_t), value :: bytes
    end function framestage_device_write

    !> host_dst: any host array of at least `bytes`.
    integer(c_int) function framestage_device_read(coordinator, host_dst, device_src, bytes) &
        bind(c, name="framestage_device_read")
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator
      type(*), dimension(*), intent(inout) :: host_dst
      type(c_ptr), value :: device_src
      integer(c_size_t), value :: bytes
    end function framestage_device_read
  end interface

  ! The C functions behind the wrappers that convert strings.
  interface
    type(c_ptr) function c_last_error() bind(c, name="framestage_last_error")
      import :: c_ptr
    end function c_last_error

    type(c_ptr) function c_status_string(status) bind(c, name="framestage_status_string")
      import :: c_int, c_ptr
      integer(c_int), value :: status
    end function c_status_string

    integer(c_int) function c_create(config_json, coordinator) bind(c, name="framestage_create")
      import :: c_char, c_int, c_ptr
      character(kind=c_char), dimension(*), intent(in) :: config_json
      type(c_ptr), intent(out) :: coordinator
    end function c_create

    integer(c_size_t) function c_strlen(text) bind(c, name="strlen")
      import :: c_ptr, c_size_t
      type(c_ptr), value :: text
    end function c_strlen
  end interface

  !> The shape of framestage_describe, _stats_json and _config_json: snprintf into a buffer.
  abstract interface
    integer(c_int) function c_text_writer(coordinator, buffer, capacity, length) bind(c)
      import :: c_char, c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator
      character(kind=c_char), dimension(*), intent(inout) :: buffer
      integer(c_size_t), value :: capacity
      integer(c_size_t), intent(out) :: length
    end function c_text_writer
  end interface

  interface
    integer(c_int) function c_describe(coordinator, buffer, capacity, length) &
        bind(c, name="framestage_describe")
      import :: c_char, c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator
      character(kind=c_char), dimension(*), intent(inout) :: buffer
      integer(c_size_t), value :: capacity
      integer(c_size_t), intent(out) :: length
    end function c_describe

    integer(c_int) function c_stats_json(coordinator, buffer, capacity, length) &
        bind(c, name="framestage_stats_json")
      import :: c_char, c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator
      character(kind=c_char), dimension(*), intent(inout) :: buffer
      integer(c_size_t), value :: capacity
      integer(c_size_t), intent(out) :: length
    end function c_stats_json

    integer(c_int) function c_config_json(coordinator, buffer, capacity, length) &
        bind(c, name="framestage_config_json")
      import :: c_char, c_int, c_ptr, c_size_t
      type(c_ptr), value :: coordinator
      character(kind=c_char), dimension(*), intent(inout) :: buffer
      integer(c_size_t), value :: capacity
      integer(c_size_t), intent(out) :: length
    end function c_config_json
  end interface

contains

  !> The message of the last call that failed on this thread ("" if none has).
  function framestage_last_error() result(message)
    character(len=:), allocatable :: message
    message = from_c_string(c_last_error())
  end function framestage_last_error

  !> The status's name ("FRAMESTAGE_ERROR_MISUSE").
  function framestage_status_string(status) result(name)
    integer(c_int), intent(in) :: status
    character(len=:), allocatable :: name
    name = from_c_string(c_status_string(status))
  end function framestage_status_string

  !> Makes a backend and a coordinator from JSON text ("" for every default; the keys are
  !> Config's plus "backend": "auto", "cuda" or "host").
  integer(c_int) function framestage_create(config_json, coordinator)
    character(len=*), intent(in) :: config_json
    type(c_ptr), intent(out) :: coordinator
    framestage_create = c_create(config_json//c_null_char, coordinator)
  end function framestage_create

  !> The backend, in one line, and why it was chosen.
  integer(c_int) function framestage_describe(coordinator, text)
    type(c_ptr), intent(in) :: coordinator
    character(len=:), allocatable, intent(out) :: text
    framestage_describe = read_text(c_describe, coordinator, text)
  end function framestage_describe

  !> The coordinator's statistics as JSON.
  integer(c_int) function framestage_stats_json(coordinator, json)
    type(c_ptr), intent(in) :: coordinator
    character(len=:), allocatable, intent(out) :: json
    framestage_stats_json = read_text(c_stats_json, coordinator, json)
  end function framestage_stats_json

  !> The Config in effect as JSON.
  integer(c_int) function framestage_config_json(coordinator, json)
    type(c_ptr), intent(in) :: coordinator
    character(len=:), allocatable, intent(out) :: json
    framestage_config_json = read_text(c_config_json, coordinator, json)
  end function framestage_config_json

  ! Asks for the length first, then for the text; `text` is "" on failure.
  integer(c_int) function read_text(writer, coordinator, text)
    procedure(c_text_writer) :: writer
    type(c_ptr), intent(in) :: coordinator
    character(len=:), allocatable, intent(out) :: text
    character(kind=c_char) :: empty(1)
    character(kind=c_char), allocatable :: buffer(:)
    integer(c_size_t) :: length, capacity
    integer :: i
    read_text = writer(coordinator, empty, 0_c_size_t, capacity)
    if (read_text == FRAMESTAGE_OK) then
      capacity = capacity + 1
      allocate (buffer(capacity))
      read_text = writer(coordinator, buffer, capacity, length)
    end if
    if (read_text /= FRAMESTAGE_OK) then
      text = ""
      return
    end if
    allocate (character(len=length) :: text)
    do i = 1, int(length)
      text(i:i) = buffer(i)
    end do
  end function read_text

  function from_c_string(ptr) result(text)
    type(c_ptr), intent(in) :: ptr
    character(len=:), allocatable :: text
    character(kind=c_char), pointer :: chars(:)
    integer :: i, n
    n = int(c_strlen(ptr))
    call c_f_pointer(ptr, chars, [n])
    allocate (character(len=n) :: text)
    do i = 1, n
      text(i:i) = chars(i)
    end do
  end function from_c_string

end module framestage
