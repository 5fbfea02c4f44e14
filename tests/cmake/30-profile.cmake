# hy_io (direct-I/O reader), hy_profile (machine profile, cached JSON) and the
# `profile` / `iobench` commands. Each test uses its own files and its own
# XDG_CACHE_HOME under ${HY_TEST_WORK}; nothing is left behind.

add_executable(test_io ${CMAKE_SOURCE_DIR}/tests/test_io.c)
target_link_libraries(test_io PRIVATE hypura_core)
add_executable(test_profile ${CMAKE_SOURCE_DIR}/tests/test_profile.c)
target_link_libraries(test_profile PRIVATE hypura_core)

set(HY_PROF_WORK ${HY_TEST_WORK}/profile)
file(MAKE_DIRECTORY ${HY_PROF_WORK})

# both backends (io_uring, pread pool): whole file, aligned pieces, the odd tail at
# EOF, two threads with many tickets in flight, byte-exact against a plain read
add_test(NAME io_read COMMAND test_io read ${HY_PROF_WORK})
# HYPURA_IO_FAULT: eio@ / short@ give an error from hy_io_wait naming the offset,
# eagain@ is retried, delay_ms= overlaps, a bad spec is refused
add_test(NAME io_fault COMMAND test_io fault ${HY_PROF_WORK})
# buffered fallback where O_DIRECT is refused: forced (nodirect) on /dev/shm, and
# ramfs in a private mount namespace; alignment 1, "+buffered", unaligned reads
add_test(NAME io_buffered COMMAND test_io buffered ${HY_PROF_WORK})
set_tests_properties(io_buffered PROPERTIES SKIP_RETURN_CODE 77)

# hy_profile_get: sane values, JSON round trip, cache reuse, quick vs full,
# corrupt / stale / foreign caches rebuilt, missing-key errors, tmpfs storage,
# a filesystem without room for the test file
add_test(NAME profile_api COMMAND test_profile api ${HY_PROF_WORK})
# `hypura profile --json` schema, cached second call (faster, says so), corrupt
# cache warned about and rebuilt; `hypura iobench --json`
add_test(NAME profile_cli COMMAND test_profile cli $<TARGET_FILE:hypura> ${HY_PROF_WORK})
# inside a memory cgroup limited to 1 GiB (v1, or v2), cgroup_limit == 1 GiB;
# skipped (77) where no group can be made (not root, read-only cgroupfs)
add_test(NAME profile_cgroup COMMAND test_profile cgroup $<TARGET_FILE:hypura> ${HY_PROF_WORK})
set_tests_properties(profile_cgroup PROPERTIES SKIP_RETURN_CODE 77)

set_tests_properties(io_read io_fault io_buffered profile_api profile_cli profile_cgroup PROPERTIES
  TIMEOUT 180 LABELS "profile;io")
# the profile tests measure storage: keep them from competing with each other
set_tests_properties(profile_api profile_cli profile_cgroup PROPERTIES RESOURCE_LOCK hypura_storage_bench)

# hy_calib: the kept compute ratio per model / thread count / machine, moved halfway per run,
# out-of-range and unreadable input refused or ignored
add_executable(test_calib ${CMAKE_SOURCE_DIR}/tests/test_calib.c)
target_link_libraries(test_calib PRIVATE hypura_core)
add_test(NAME calib COMMAND test_calib ${HY_PROF_WORK})

# cli_omp's decisions as functions: the spin at start, the passive wait after a streamed plan
add_executable(test_omp ${CMAKE_SOURCE_DIR}/tests/test_omp.c ${CMAKE_SOURCE_DIR}/src/cli/cli_omp.c)
target_link_libraries(test_omp PRIVATE hypura_core)
add_test(NAME omp_decide COMMAND test_omp)

# cli_omp: hypura starts itself again with GOMP_SPINCOUNT set: long where it pays (forced here
# with HYPURA_OMP_SPIN=1), else short; never over the user's own setting, not at all with
# HYPURA_OMP_SPIN=0
add_test(NAME omp_spin COMMAND sh -c "
  HYPURA_OMP_SPIN=1 '$<TARGET_FILE:hypura>' profile 2>&1 | grep -q 'spin 3000000 times before sleeping (set by hypura' &&
  env -u HYPURA_OMP_SPIN '$<TARGET_FILE:hypura>' profile 2>&1 | grep -Eq 'spin (30000|3000000) times before sleeping [(]set by hypura' &&
  HYPURA_OMP_SPIN=0 '$<TARGET_FILE:hypura>' profile 2>&1 | grep -q \"libgomp's default\" &&
  GOMP_SPINCOUNT=7 HYPURA_OMP_SPIN=1 '$<TARGET_FILE:hypura>' profile 2>&1 | grep -q 'as given: GOMP_SPINCOUNT=7 ' &&
  HYPURA_OMP_SPIN=1 '$<TARGET_FILE:hypura>' run /nonexistent.gguf -p x 2>&1 | grep -q 'nonexistent.gguf'")
