// cmn-dicom-fuzzer: libFuzzer over the DICOM reader (read_dicom_info, read_dicom_image): any byte string must
// give a value or an error status, never a crash, a sanitizer report, a hang or an out-of-memory.
//
// Build (clang only; not part of the default build or of scripts/setup.sh's package list):
//   apt-get install clang libclang-rt-14-dev        # Debian 12: clang 14 and its libFuzzer/ASan runtimes
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
//         -DCMN_FUZZ=ON -DCMN_BUILD_TESTS=OFF
//   cmake --build build-fuzz --target cmn_dicom_fuzzer -j1
// Run, seeded with the shared test files (new inputs go to the first, writable, directory):
//   mkdir -p fuzz-corpus && ./build-fuzz/preprocessing/fuzz/cmn-dicom-fuzzer fuzz-corpus \
//       ../shared/data/dicom/chest ../shared/data/dicom/other_radiographs \
//       -max_total_time=600 -rss_limit_mb=2048 -timeout=30
// Small seeds in more transfer syntaxes make the run far faster than the multi-megabyte shared files alone,
// e.g. with DCMTK's tools: dcmscale +Sxv 64 IN small.dcm; dcmcjpeg +el / dcmcjpls / dcmcrle small.dcm OUT;
// dcmconv +tb / +td / +ti small.dcm OUT.
//
// Only cmn's code is instrumented (coverage and AddressSanitizer); DCMTK, OpenJPEG and OpenCV are the Debian
// builds, so a memory error inside them shows only when it reaches an intercepted call (memcpy, malloc, ...)
// or crashes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "cmn/preprocessing/dicom.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  cmn::preprocessing::DicomReadOptions options;
  options.max_pixels = 16'000'000;  // the largest seed has 5 million; keeps each run within the RSS limit
  auto info = cmn::preprocessing::read_dicom_info(bytes, "fuzz");
  if (info.ok()) {
    (void)cmn::preprocessing::view_name(info->view);
  }
  auto image = cmn::preprocessing::read_dicom_image(bytes, "fuzz", options);
  if (image.ok() && (image->grey8.type() != CV_8UC1 || image->grey8.rows != image->info.rows ||
                     image->grey8.cols != image->info.columns)) {
    __builtin_trap();  // a decoded image must be 8-bit grey of the declared size
  }
  // Draft decoding (libjpeg-turbo's scaled IDCT, OpenJPEG's reduce factor) on the same bytes. A small
  // draft_min_side, so that the seeds' small images are reduced too: the result is ceil(rows / s) x
  // ceil(columns / s) for a power of two s <= 2^16, and s == 1 unless that still leaves >= draft_min_side.
  options.draft_min_side = 8;
  auto draft = cmn::preprocessing::read_dicom_image(bytes, "fuzz", options);
  if (draft.ok()) {
    const int64_t rows = draft->info.rows, columns = draft->info.columns;
    bool size_ok = false;
    for (int64_t s = 1; s <= (int64_t{1} << 16) && !size_ok; s *= 2) {
      size_ok = draft->grey8.rows == (rows + s - 1) / s && draft->grey8.cols == (columns + s - 1) / s &&
                (s == 1 || std::min(draft->grey8.rows, draft->grey8.cols) >= options.draft_min_side);
    }
    if (draft->grey8.type() != CV_8UC1 || !size_ok) __builtin_trap();
  }
  return 0;
}
