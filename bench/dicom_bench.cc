// cmn-dicom-bench: per-image DICOM preprocessing time on one thread, one JSON line per file:
//   {"file", "columns", "rows", "transfer_syntax", "decode_window_ms", "resize_ms", "total_ms", "total_cpu_ms",
//    "decode_only_ms", "repeat"}
// decode_window = read_dicom_image from the bytes in memory (parse, decompress frame 1, grey-level policy);
// resize = to_model_input (PIL-exact resize to the model input, normalise); total = their sum per run;
// decode_only = read_dicom_stored_pixels (parse + decompress, no grey levels), timed in separate runs.
// total_cpu = the thread's CPU time for decode + window + resize: on a shared machine, wall times include the
// time other processes held the core; CPU time does not.
// Medians of --repeat runs after one warm-up run. Without files, the two chest radiographs of issue 3's goal (<= 150 ms each): the 2010 x 2446
// JPEG baseline and the 1841 x 1955 JPEG-LS from ../shared/data/dicom/chest.
//   cmn-dicom-bench [--repeat 15] [FILE...]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "cmn/preprocessing/dicom.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double thread_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) / 1e6;
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 15;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (std::strncmp(argv[i], "--", 2) == 0) {
      std::cerr << "usage: cmn-dicom-bench [--repeat N] [FILE...]\n";
      return 2;
    } else {
      files.emplace_back(argv[i]);
    }
  }
  if (files.empty()) {
    const std::string chest = std::string(CMN_SHARED_DIR) + "/data/dicom/chest/";
    files = {chest + "CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm", chest + "RG1_JLSN.dcm"};
  }
  cv::setNumThreads(1);  // one thread per image, as a worker of the batch CLI or server runs it

  int failures = 0;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream buffer;
    buffer << in.rdbuf();
    const std::string bytes = buffer.str();
    std::vector<double> decode_ms, resize_ms, total_ms, total_cpu_ms, decode_only_ms;
    cmn::preprocessing::InstanceInfo info;
    for (int run = 0; run <= repeat; ++run) {  // run 0 warms up (codec registration, dictionary, caches)
      const double cpu_start = thread_cpu_ms();
      const auto start = std::chrono::steady_clock::now();
      auto image = cmn::preprocessing::read_dicom_image(bytes, file);
      const double decoded = ms_since(start);
      if (!image.ok()) {
        std::cerr << image.status().message() << "\n";
        ++failures;
        break;
      }
      const auto resize_start = std::chrono::steady_clock::now();
      const cmn::preprocessing::FloatImage input = cmn::preprocessing::to_model_input(image->grey8);
      const double resized = ms_since(resize_start);
      const double cpu = thread_cpu_ms() - cpu_start;
      if (input.data.empty()) ++failures;
      info = image->info;
      if (run == 0) continue;
      decode_ms.push_back(decoded);
      resize_ms.push_back(resized);
      total_ms.push_back(decoded + resized);
      total_cpu_ms.push_back(cpu);
    }
    if (total_ms.empty()) continue;
    for (int run = 0; run < repeat; ++run) {
      const auto start = std::chrono::steady_clock::now();
      auto pixels = cmn::preprocessing::read_dicom_stored_pixels(bytes, file);
      decode_only_ms.push_back(ms_since(start));
      if (!pixels.ok()) ++failures;
    }
    std::cout << "{\"file\": \"" << file << "\", \"columns\": " << info.columns << ", \"rows\": " << info.rows
              << ", \"transfer_syntax\": \"" << info.transfer_syntax_uid << "\", \"decode_window_ms\": "
              << median(decode_ms) << ", \"resize_ms\": " << median(resize_ms) << ", \"total_ms\": "
              << median(total_ms) << ", \"total_cpu_ms\": " << median(total_cpu_ms) << ", \"decode_only_ms\": " << median(decode_only_ms) << ", \"repeat\": " << repeat
              << "}" << std::endl;
  }
  return failures == 0 ? 0 : 1;
}
