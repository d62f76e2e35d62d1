// cmn-dicom-bench: per-image DICOM preprocessing time on one thread, one JSON line per file:
//   {"file", "columns", "rows", "transfer_syntax", "decode_window_ms", "resize_ms", "total_ms", "total_cpu_ms",
//    "decode_only_ms", "repeat"}
// decode_window = read_dicom_image from the bytes in memory (parse, decompress frame 1, grey-level policy);
// resize = to_model_input (PIL-exact resize to the model input, normalise); total = their sum per run;
// decode_only = read_dicom_stored_pixels (parse + decompress, no grey levels), timed in separate runs.
// total_cpu = the thread's CPU time for decode + window + resize: on a shared machine, wall times include the
// time other processes held the core; CPU time does not.
// --draft: also draft decoding (DicomReadOptions::draft_min_side = 224, issue 15), its runs interleaved with the
// exact ones so both see the same machine: "draft_total_ms", "draft_total_cpu_ms", "draft_speedup" (exact
// total_cpu / draft total_cpu), "draft" (what was decoded, e.g. "1/8 (231 x 245)" or "exact": no reduced
// decoding for this codec), and how far the draft is from the exact path where the model looks:
// "draft_mae" / "draft_max_abs", grey levels (0-255) between the two images resized to 224 x 224.
// Medians of --repeat runs after one warm-up run. Without files, the two chest radiographs of issue 3's goal (<= 150 ms each): the 2010 x 2446
// JPEG baseline and the 1841 x 1955 JPEG-LS from ../shared/data/dicom/chest.
//   cmn-dicom-bench [--repeat 15] [--draft] [FILE...]
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

#include "bench_util.h"
#include "cmn/preprocessing/dicom.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace {

using cmn::bench::median;


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
  bool draft = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--draft") == 0) {
      draft = true;
    } else if (std::strncmp(argv[i], "--", 2) == 0) {
      std::cerr << "usage: cmn-dicom-bench [--repeat N] [--draft] [FILE...]\n";
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
    std::vector<double> draft_ms, draft_cpu_ms;
    cmn::preprocessing::InstanceInfo info;
    cv::Mat exact_grey, draft_grey;
    std::string draft_levels;
    cmn::preprocessing::DicomReadOptions draft_options;
    draft_options.draft_min_side = 224;
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
      exact_grey = image->grey8;
      if (draft) {
        const double draft_cpu_start = thread_cpu_ms();
        const auto draft_start = std::chrono::steady_clock::now();
        auto reduced = cmn::preprocessing::read_dicom_image(bytes, file, draft_options);
        if (!reduced.ok()) {
          std::cerr << reduced.status().message() << "\n";
          ++failures;
          break;
        }
        const cmn::preprocessing::FloatImage draft_input = cmn::preprocessing::to_model_input(reduced->grey8);
        if (draft_input.data.empty()) ++failures;
        if (run > 0) {
          draft_ms.push_back(ms_since(draft_start));
          draft_cpu_ms.push_back(thread_cpu_ms() - draft_cpu_start);
        }
        draft_grey = reduced->grey8;
        draft_levels = reduced->grey_levels;
      }
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
              << median(total_ms) << ", \"total_cpu_ms\": " << median(total_cpu_ms) << ", \"decode_only_ms\": "
              << median(decode_only_ms) << ", \"repeat\": " << repeat;
    if (draft && !draft_cpu_ms.empty()) {
      // Where the model looks: both images through the same resize to the model input.
      const cv::Mat a = cmn::preprocessing::resize_bilinear_pil(exact_grey, 224, 224);
      const cv::Mat b = cmn::preprocessing::resize_bilinear_pil(draft_grey, 224, 224);
      const size_t at = draft_levels.find("draft decode ");
      const std::string what = at == std::string::npos ? "exact" : draft_levels.substr(at + 13);
      std::cout << ", \"draft\": \"" << what << "\", \"draft_total_ms\": " << median(draft_ms)
                << ", \"draft_total_cpu_ms\": " << median(draft_cpu_ms)
                << ", \"draft_speedup\": " << median(total_cpu_ms) / median(draft_cpu_ms)
                << ", \"draft_mae\": " << cv::norm(a, b, cv::NORM_L1) / static_cast<double>(a.total())
                << ", \"draft_max_abs\": " << cv::norm(a, b, cv::NORM_INF);
    }
    std::cout << "}" << std::endl;
  }
  return failures == 0 ? 0 : 1;
}
