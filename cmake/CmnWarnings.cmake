# Warnings for cmn's own targets (third-party headers are included as SYSTEM).
function(cmn_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()
