! The Fortran module from an installed framestage: upload an array and read it back.
program consumer_fortran
  use, intrinsic :: iso_c_binding
  use framestage
  implicit none
  type(c_ptr) :: fs, device
  type(framestage_ticket) :: ticket
  real(c_float) :: values(8), back(8)
  integer(c_size_t), parameter :: nbytes = 32
  integer :: i

  values = [(real(i, c_float), i=1, 8)]
  back = 0
  if (framestage_create('{"backend": "host", "arena_bytes": 65536}', fs) /= FRAMESTAGE_OK) &
    call fail()
  if (framestage_device_alloc(fs, nbytes, device) /= FRAMESTAGE_OK) call fail()
  if (framestage_begin_frame(fs) /= FRAMESTAGE_OK) call fail()
  if (framestage_upload(fs, device, values, nbytes) /= FRAMESTAGE_OK) call fail()
  if (framestage_end_frame(fs, ticket) /= FRAMESTAGE_OK) call fail()
  if (framestage_ticket_wait(ticket, 10000_c_int32_t) /= FRAMESTAGE_OK) call fail()
  if (framestage_device_read(fs, back, device, nbytes) /= FRAMESTAGE_OK) call fail()
  if (framestage_destroy(fs) /= FRAMESTAGE_OK) call fail()
  if (any(back /= values)) then
    print '(a)', 'consumer_fortran: wrong contents'
    error stop 1
  end if
  print '(a)', 'consumer_fortran: ok'

contains

  subroutine fail()
    print '(2a)', 'consumer_fortran: ', framestage_last_error()
    error stop 1
  end subroutine fail

end program consumer_fortran
