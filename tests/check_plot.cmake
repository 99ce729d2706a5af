# tools/plot on a real report: a short host-backend bench of two size-sweep workloads, then both
# charts drawn. Fails unless each PNG exists and starts with the PNG signature.
file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}")
execute_process(COMMAND "${CLI}" bench --backend host --quiet --frames 3
                        --max-seconds-per-strategy 0 --json "${OUT}/report.json"
                        "${WORKLOADS}/size-sweep-4kib.json" "${WORKLOADS}/size-sweep-16kib.json"
                RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "framestage bench failed (${status})")
endif()
execute_process(COMMAND "${PLOT}" "${OUT}/report.json" -o "${OUT}" RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "tools/plot failed (${status})")
endif()
foreach(chart time_per_frame bandwidth_vs_item_size)
  set(png "${OUT}/${chart}.png")
  if(NOT EXISTS "${png}")
    message(FATAL_ERROR "tools/plot wrote no ${png}")
  endif()
  file(READ "${png}" signature LIMIT 4 HEX)
  if(NOT signature STREQUAL "89504e47")
    message(FATAL_ERROR "${png} is not a PNG (starts with ${signature})")
  endif()
endforeach()
