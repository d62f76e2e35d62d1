// cmn-bench: medians over --repeat runs of each stage of report generation, as one JSON line:
//   {"preprocess_s", "visual_s", "encode_s", "decode_s", "total_s", "studies", "threads", "device", ...}
// Builds on cmn_model alone (LibTorch only: GPU hosts); with cmn_preprocessing it also reads image files.
//   cmn-bench --r2gencmn MODEL.pth --args config.json [--images A.png ... | --inputs inputs.pt | --random B]
//             [--repeat 5] [--threads 2] [--beam-size 3] [--max-length 60] [--batch B] [--device cpu|cuda]
//             [--precision fp32|bf16|int8] [--decode-threads N] [--kernels fused|aten|both]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include "bench_util.h"
#include "cmn/model/fused_kernels.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/runtime.h"
#ifdef CMN_HAVE_PREPROCESSING
#include "cmn/preprocessing/image_pipeline.h"
#endif

namespace {

using cmn::bench::median;

struct Args {
  std::string checkpoint, args_json, inputs, device = "cpu", precision = "fp32", kernels = "fused";
  std::vector<std::string> images;
  int64_t random_studies = 0, repeat = 5, threads = 2, batch = 0, decode_threads = 0;
  std::optional<int64_t> beam_size, max_length;
  std::string method;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "cmn-bench: " << message << "\n"
            << "usage: cmn-bench --r2gencmn MODEL.pth --args config.json [--images A.png ... | --inputs inputs.pt |"
               " --random B] [--repeat N] [--threads N] [--beam-size N] [--max-length N] [--sample-method M]"
               " [--batch B] [--device cpu|cuda] [--precision fp32|bf16|int8] [--decode-threads N]"
               " [--kernels fused|aten|both]\n";
  std::exit(2);
}

int64_t to_int(const std::string& flag, const char* value) {
  const auto v = cmn::bench::non_negative_int(value);
  if (!v) usage_error(flag + " needs a non-negative integer, got '" + value + "'");
  return *v;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--r2gencmn") a.checkpoint = value();
    else if (flag == "--args") a.args_json = value();
    else if (flag == "--annotation") value();  // accepted for symmetry with cmn-generate; the bench needs no text
    else if (flag == "--inputs") a.inputs = value();
    else if (flag == "--random") a.random_studies = to_int(flag, value());
    else if (flag == "--repeat") a.repeat = to_int(flag, value());
    else if (flag == "--threads") a.threads = to_int(flag, value());
    else if (flag == "--batch") a.batch = to_int(flag, value());
    else if (flag == "--beam-size") a.beam_size = to_int(flag, value());
    else if (flag == "--max-length") a.max_length = to_int(flag, value());
    else if (flag == "--sample-method") a.method = value();
    else if (flag == "--device") a.device = value();
    else if (flag == "--precision") a.precision = value();
    else if (flag == "--decode-threads") a.decode_threads = to_int(flag, value());
    else if (flag == "--kernels") a.kernels = value();
    else if (flag == "--images") {
      while (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) a.images.push_back(argv[++i]);
    } else if (flag == "--help" || flag == "-h") {
      usage_error("help");
    } else {
      usage_error("unknown option '" + flag + "'");
    }
  }
  if (a.checkpoint.empty() || a.args_json.empty()) usage_error("--r2gencmn and --args are required");
  const int sources = !a.images.empty() + !a.inputs.empty() + (a.random_studies > 0);
  if (sources != 1) usage_error("give exactly one of --images, --inputs, --random");
  if (a.repeat < 1) usage_error("--repeat must be >= 1");
  return a;
}


#ifdef CMN_HAVE_PREPROCESSING
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  try {
    cmn::model::warn_if_slow_blas();
    cmn::model::set_threads(static_cast<int>(a.threads));
    const torch::Device device(a.device);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      std::cerr << "cmn-bench: --device " << a.device
                << ": CUDA is not available (this LibTorch was built without CUDA, or no GPU is visible)\n";
      return 2;
    }
    const auto precision = cmn::model::parse_precision(a.precision);
    if (!precision) usage_error("--precision must be fp32, bf16 or int8, got '" + a.precision + "'");
    if (const auto missing = cmn::model::precision_unavailable(*precision, a.device); !missing.empty()) {
      std::cerr << "cmn-bench: " << missing << "\n";
      return 2;
    }
    auto config = cmn::model::read_model_config(a.args_json);
    auto model = cmn::model::load_r2gencmn(a.checkpoint, config);
    model->to(device);
    model->reset_inference_cache();
    model->set_precision(*precision);
    const int64_t views = model->config().effective_views();

    // Preprocessed images [B,V,3,224,224], with the time it took to make them from files (0 for tensors).
    std::vector<double> preprocess;
    torch::Tensor images;
    if (!a.inputs.empty()) {
      images = torch::jit::load(a.inputs).attr("images").toTensor();
    } else if (a.random_studies > 0) {
      images = torch::randn({a.random_studies, views, 3, 224, 224});
    } else {
#ifdef CMN_HAVE_PREPROCESSING
      if (a.images.size() % static_cast<size_t>(views) != 0) usage_error("image count is not a multiple of views");
      const int64_t studies = static_cast<int64_t>(a.images.size()) / views;
      for (int64_t r = 0; r < a.repeat; ++r) {
        const double t0 = now_s();
        images = torch::empty({studies, views, 3, 224, 224});
        for (size_t i = 0; i < a.images.size(); ++i) {
          auto img = cmn::preprocessing::load_model_input(a.images[i]);
          if (!img.ok()) {
            std::cerr << "cmn-bench: " << img.status().message() << "\n";
            return 1;
          }
          std::memcpy(images[static_cast<int64_t>(i) / views][static_cast<int64_t>(i) % views].data_ptr<float>(),
                      img->data.data(), img->data.size() * sizeof(float));
        }
        preprocess.push_back(now_s() - t0);
      }
#else
      usage_error("this cmn-bench was built without cmn_preprocessing: use --inputs or --random");
#endif
    }
    TORCH_CHECK(images.dim() == 5 && images.size(1) == views, "images must be [B,", views, ",3,224,224], got ",
                images.sizes());
    if (a.batch > 0) {  // repeat the studies to the requested batch size
      const int64_t have = images.size(0);
      images = images.repeat({(a.batch + have - 1) / have, 1, 1, 1, 1}).narrow(0, 0, a.batch);
    }
    images = images.to(device).contiguous();
    const int64_t studies = images.size(0);

    auto options = cmn::model::decoding_options_from(model->config());
    if (a.beam_size) options.beam_size = *a.beam_size;
    if (a.max_length) options.max_length = *a.max_length;
    if (!a.method.empty()) {
      const auto method = cmn::model::parse_decoding_method(a.method);
      if (!method) usage_error("--sample-method must be beam_search, greedy or sample, got '" + a.method + "'");
      options.method = *method;
    }

    // --kernels both: the fused CPU kernels (fused_kernels.h) and ATen's ops alternate run by run, so their ratio
    // comes from one noisy machine at one time.
    if (a.kernels != "fused" && a.kernels != "aten" && a.kernels != "both") {
      usage_error("--kernels must be fused, aten or both, got '" + a.kernels + "'");
    }
    std::vector<std::string> modes;
    if (a.kernels != "fused") modes.push_back("aten");
    if (a.kernels != "aten") modes.push_back("fused");
    struct Times {
      std::vector<double> visual, encode, decode, total;
    };
    std::map<std::string, Times> times;
    int64_t steps = 0;
    c10::InferenceMode guard;
    for (int64_t r = 0; r < a.repeat + 1; ++r) {  // run 0 warms up (folding, allocator, caches)
      for (const auto& mode : modes) {
        cmn::model::set_fused_kernels(mode == "fused");
        // The one inference pass (R2GenCMNImpl::infer) with its own stage timings (synchronised on CUDA).
        cmn::model::PassHooks hooks;
        hooks.decode_threads = static_cast<int>(a.decode_threads);
        auto pass = model->infer(images, options, hooks);
        const auto& result = pass.decoded;
        if (r == 0) continue;
        steps = result.steps;
        auto& t = times[mode];
        t.visual.push_back(pass.visual_s);
        t.encode.push_back(pass.encode_s);
        t.decode.push_back(pass.decode_s);
        t.total.push_back(pass.visual_s + pass.encode_s + pass.decode_s);
      }
    }
    cmn::model::set_fused_kernels(true);
    const auto& main_times = times[modes.back()];
    const auto& visual = main_times.visual;
    const auto& encode = main_times.encode;
    const auto& decode = main_times.decode;
    const auto& total = main_times.total;
    const double pre = preprocess.empty() ? 0.0 : median(preprocess);
    std::ostringstream json;
    json.precision(6);
    json << "{\"preprocess_s\": " << pre << ", \"visual_s\": " << median(visual) << ", \"encode_s\": " << median(encode)
         << ", \"decode_s\": " << median(decode) << ", \"total_s\": " << median(total) + pre
         << ", \"per_study_total_s\": " << (median(total) + pre) / static_cast<double>(studies)
         << ", \"per_study_decode_s\": " << median(decode) / static_cast<double>(studies) << ", \"studies\": " << studies
         << ", \"views\": " << views << ", \"beam_size\": " << options.beam_size << ", \"max_length\": "
         << options.max_length << ", \"decode_steps\": " << steps << ", \"repeat\": " << a.repeat
         << ", \"threads\": " << at::get_num_threads() << ", \"decode_threads\": " << a.decode_threads << ", \"device\": \"" << device.str()
         << "\", \"precision\": \"" << cmn::model::precision_name(*precision)
         << "\", \"blas\": \"" << cmn::model::active_blas().library << "\", \"kernels\": \"" << modes.back()
         << "\", \"kernels_isa\": \"" << cmn::model::fused_kernels_isa() << "\", \"decode_step_ms\": "
         << 1000.0 * median(decode) / static_cast<double>(std::max<int64_t>(1, steps));
    if (modes.size() == 2) {  // the ATen run of the same repeats, and fused / ATen ratios of the medians
      const auto& at = times["aten"];
      json << ", \"aten\": {\"visual_s\": " << median(at.visual) << ", \"encode_s\": " << median(at.encode)
           << ", \"decode_s\": " << median(at.decode) << ", \"decode_step_ms\": "
           << 1000.0 * median(at.decode) / static_cast<double>(std::max<int64_t>(1, steps))
           << "}, \"decode_speedup\": " << median(at.decode) / median(decode)
           << ", \"encode_speedup\": " << median(at.encode) / median(encode);
    }
    json << "}";
    std::cout << json.str() << std::endl;
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "cmn-bench: " << e.msg() << "\n";
    return 1;
  }
}
