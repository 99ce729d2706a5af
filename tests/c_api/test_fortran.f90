! The Fortran module on the host backend: a real(c_double) array staged in place in pinned
! memory, another uploaded into a device buffer, both read back with the next frame and compared
! exactly; then a tick graph's frame, and a misused call, its status and message.

! A tick's work (framestage_tick_work): counts its calls in user_data. In a module, not inside
! the program: passing an internal procedure's address needs a trampoline, an executable stack.
module tick_work
  use, intrinsic :: iso_c_binding
  implicit none
contains
  subroutine count_capture(stream, user_data) bind(c)
    type(c_ptr), value :: stream, user_data
    integer(c_int), pointer :: count
    call c_f_pointer(user_data, count)
    if (c_associated(stream)) count = count + 1
  end subroutine count_capture
end module tick_work

program test_fortran
  use, intrinsic :: iso_c_binding
  use framestage
  use tick_work
  implicit none

  integer, parameter :: n = 1000
  integer(c_size_t), parameter :: nbytes = n*8_c_size_t
  type(c_ptr) :: fs, device, mirror, host, tick
  integer(c_int), target :: captures = 0
  type(framestage_span) :: span
  type(framestage_ticket) :: ticket
  type(framestage_readback) :: from_mirror, from_device
  real(c_double), pointer :: staged(:), back(:)
  real(c_double) :: expected(n), uploaded(n), direct(n)
  character(len=:), allocatable :: text
  integer(c_int) :: kind
  integer :: i, failures

  failures = 0
  call require(framestage_create('{"backend": "host", "buffering": 2, "arena_bytes": 65536, '// &
                                 '"upload_arena_bytes": 65536, "readback_arena_bytes": 65536}', &
                                 fs), "framestage_create")
  call require(framestage_get_backend_kind(fs, kind), "framestage_get_backend_kind")
  call check(kind == FRAMESTAGE_BACKEND_HOST, "the host backend, as asked")
  call require(framestage_device_alloc(fs, nbytes, device), "framestage_device_alloc")

  ! Frame 1: the array is written once, straight into the frame's pinned arena, and staged.
  call require(framestage_begin_frame(fs), "framestage_begin_frame")
  call require(framestage_frame_alloc(fs, nbytes, 0_c_size_t, span), "framestage_frame_alloc")
  call c_f_pointer(span%data, staged, [n])
  do i = 1, n
    staged(i) = 0.5_c_double*i - 3.0_c_double
    uploaded(i) = -1.0_c_double/i
  end do
  expected = staged
  call require(framestage_stage_for_upload(fs, span), "framestage_stage_for_upload")
  call require(framestage_upload(fs, device, uploaded, nbytes), "framestage_upload")
  call require(framestage_end_frame(fs, ticket), "framestage_end_frame")
  call require(framestage_device_ptr(fs, span, mirror), "framestage_device_ptr")
  call require(framestage_ticket_wait(ticket, 10000_c_int32_t), "framestage_ticket_wait")

  ! Frame 2: both read back.
  call require(framestage_begin_frame(fs), "framestage_begin_frame")
  call require(framestage_request_readback(fs, mirror, nbytes, from_mirror), "request_readback")
  call require(framestage_request_readback(fs, device, nbytes, from_device), "request_readback")
  call require(framestage_end_frame(fs, ticket), "framestage_end_frame")
  call require(framestage_readback_get(from_mirror, 10000_c_int32_t, host), &
               "framestage_readback_get")
  call c_f_pointer(host, back, [n])
  call check(same_bits(back, expected), "the staged array read back exactly")
  call require(framestage_readback_get(from_device, 10000_c_int32_t, host), &
               "framestage_readback_get")
  call c_f_pointer(host, back, [n])
  call check(same_bits(back, uploaded), "the uploaded array read back exactly")
  call require(framestage_device_read(fs, direct, device, nbytes), "framestage_device_read")
  call check(same_bits(direct, uploaded), "framestage_device_read")

  call require(framestage_stats_json(fs, text), "framestage_stats_json")
  call check(index(text, '"frames":') > 0, "stats JSON has frames")
  call require(framestage_describe(fs, text), "framestage_describe")
  call check(index(text, 'host') > 0, "describe names the host backend")

  ! A tick graph: the work is called once, at capture; a frame ended with it delivers its upload.
  call require(framestage_capture_tick(fs, c_funloc(count_capture), c_loc(captures), tick), &
               "framestage_capture_tick")
  call check(captures == 1, "the tick's work ran once, at capture")
  call require(framestage_begin_frame(fs), "framestage_begin_frame")
  uploaded = 2.0_c_double*uploaded
  call require(framestage_upload(fs, device, uploaded, nbytes), "framestage_upload")
  call require(framestage_end_frame_tick(fs, tick, ticket), "framestage_end_frame_tick")
  call require(framestage_ticket_wait(ticket, 10000_c_int32_t), "framestage_ticket_wait")
  call require(framestage_device_read(fs, direct, device, nbytes), "framestage_device_read")
  call check(same_bits(direct, uploaded), "the tick graph's frame delivered its upload")
  call check(captures == 1, "the tick's work is replayed, not called again")
  call require(framestage_tick_graph_destroy(tick), "framestage_tick_graph_destroy")

  ! Misuse: a status, a message, and nothing changed.
  call check(framestage_end_frame(fs, ticket) == FRAMESTAGE_ERROR_MISUSE, "end_frame outside")
  text = framestage_last_error()
  call check(index(text, 'framestage: misuse:') == 1, "the message names the category")
  call check(framestage_status_string(FRAMESTAGE_ERROR_MISUSE) == 'FRAMESTAGE_ERROR_MISUSE', &
             "framestage_status_string")
  call check(framestage_create('{"buffering": 0}', mirror) == FRAMESTAGE_ERROR_BAD_CONFIG, &
             "bad config rejected")
  call check(index(framestage_last_error(), 'buffering') > 0, "the message names the key")

  call require(framestage_device_free(fs, device), "framestage_device_free")
  call require(framestage_destroy(fs), "framestage_destroy")
  ! The main program's variables live on to the end (SAVE): free it, or LeakSanitizer objects.
  deallocate (text)

  if (failures > 0) then
    print '(a,i0,a)', 'test_fortran: ', failures, ' check(s) failed'
    error stop 1
  end if
  print '(a)', 'test_fortran: all checks passed'

contains

  ! Byte for byte: what was written is what comes back.
  logical function same_bits(a, b)
    real(c_double), intent(in) :: a(:), b(:)
    same_bits = all(transfer(a, [0_c_int64_t]) == transfer(b, [0_c_int64_t]))
  end function same_bits

  subroutine require(status, what)
    integer(c_int), intent(in) :: status
    character(len=*), intent(in) :: what
    if (status /= FRAMESTAGE_OK) then
      print '(5a)', what, ' returned ', framestage_status_string(status), ': ', &
        framestage_last_error()
      error stop 1
    end if
  end subroutine require

  subroutine check(condition, what)
    logical, intent(in) :: condition
    character(len=*), intent(in) :: what
    if (.not. condition) then
      print '(2a)', 'check failed: ', what
      failures = failures + 1
    end if
  end subroutine check

end program test_fortran
