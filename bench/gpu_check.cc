// cmn-gpu-check: the dev parity fixture on a GPU, and per-stage timings there (issue 16; run by
// bench/gpu_check.sh on a GPU host with PyTorch's LibTorch). Links cmn_model alone.
//
//   cmn-gpu-check --fixture DIR [--device cuda] [--repeat 5] [--batches 1,32] [--cpu-threads N]
//   cmn-gpu-check --trim MODEL.pth OUT.pth
//
// DIR holds the parity fixture's config.json, expected.pt, inputs.pt and either its model.pth or, where only
// 64 MiB can travel to the GPU host, the encoder-decoder part of it (`--trim`: every encoder_decoder.* tensor,
// still float16, 46 MB instead of 131 MB). Checks, each printed as PASS/FAIL with its figure:
//   - encoder-decoder from the reference's visual features (expected.pt att_feats [2,196,2048]) on the device:
//     beam-3 ids identical to the reference's, each chosen token's log-prob within 1e-3; greedy ids identical;
//   - the ResNet-101 trunk on the device against the same trunk on this host's CPU (the fixture's trunk when
//     model.pth is there, else seeded random weights): features within 1e-3 relative; whole passes (trunk +
//     encoder + beam decode) from inputs.pt give identical ids on both.
// Then medians over --repeat runs of visual / encode / decode for each batch size (studies repeated from
// inputs.pt) on the device, in fp32 and then in bf16 (issue 15: studies/s per batch, and how many fixture
// reports bf16 leaves identical), and batch 1 on the CPU for the ratio. TF32 is off (fp32 means fp32 here).
// Exit 0: all checks passed; 1: a check failed or an error (one line on stderr); 2: usage or no CUDA.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "bench_util.h"
#include "cmn/model/checkpoint.h"
#include "cmn/model/precision.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/runtime.h"

namespace {

using cmn::bench::median;

using cmn::model::DecodingOptions;
using cmn::model::R2GenCMN;

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "cmn-gpu-check: " << message << "\n"
            << "usage: cmn-gpu-check --fixture DIR [--device cuda] [--repeat N] [--batches 1,32] [--cpu-threads N]\n"
               "       cmn-gpu-check --trim MODEL.pth OUT.pth\n";
  std::exit(2);
}

torch::Tensor buffer(const std::string& file, const std::string& name) {
  return torch::jit::load(file).attr(name).toTensor();
}

bool exists(const std::string& path) { return std::filesystem::exists(path); }


double max_relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got.cpu() - want.cpu()).abs().max() / want.cpu().abs().max()).item<double>();
}

int failures = 0;
void check(bool ok, const std::string& what) {
  std::cout << (ok ? "PASS " : "FAIL ") << what << std::endl;
  if (!ok) ++failures;
}

// The fixture's model, or its encoder-decoder over a trunk drawn with seed 0 (identical on every host: the
// CPU generator makes the weights, then they are copied to the device).
R2GenCMN load_fixture_model(const std::string& dir, bool& real_trunk) {
  auto config = cmn::model::read_model_config(dir + "/config.json");
  if (exists(dir + "/model.pth")) {
    real_trunk = true;
    return cmn::model::load_r2gencmn(dir + "/model.pth", config);
  }
  real_trunk = false;
  const std::string path = dir + "/encoder_decoder.pth";
  TORCH_CHECK(exists(path), "the fixture has neither model.pth nor encoder_decoder.pth: ", dir);
  auto part = cmn::model::read_checkpoint(path).state_dict;
  torch::manual_seed(0);
  R2GenCMN model(config);
  cmn::model::StateDict full;
  for (auto& kv : cmn::model::module_state_dict(*model)) {
    if (kv.first.rfind("visual_extractor.", 0) == 0) full.push_back(kv);
  }
  full.insert(full.end(), part.begin(), part.end());
  cmn::model::load_state_dict(*model, full);
  model->eval();
  model->reset_inference_cache();
  return model;
}

std::vector<int64_t> row(const torch::Tensor& seq, int64_t i) {
  auto r = seq[i].to(torch::kLong).contiguous().cpu();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

std::vector<int64_t> padded(std::vector<int64_t> ids, int64_t length) {
  ids.resize(static_cast<size_t>(length), 0);
  return ids;
}

struct Timing {
  double visual = 0, encode = 0, decode = 0;
  int64_t steps = 0;
};

Timing time_passes(R2GenCMN& model, const torch::Tensor& images, const DecodingOptions& options, int64_t repeat) {
  std::vector<double> v, e, d;
  Timing t;
  for (int64_t r = 0; r < repeat + 1; ++r) {  // run 0 warms up (cuDNN algorithm choice, allocator, caches)
    auto pass = model->infer(images, options);
    if (r == 0) continue;
    v.push_back(pass.visual_s);
    e.push_back(pass.encode_s);
    d.push_back(pass.decode_s);
    t.steps = pass.decoded.steps;
  }
  t.visual = median(v);
  t.encode = median(e);
  t.decode = median(d);
  return t;
}

int trim(const std::string& in, const std::string& out) {
  auto ckpt = cmn::model::read_checkpoint(in);
  cmn::model::StateDict part;
  for (auto& kv : ckpt.state_dict) {
    if (kv.first.rfind("encoder_decoder.", 0) == 0) part.push_back(kv);  // dtype kept (float16)
  }
  TORCH_CHECK(!part.empty(), in, " has no encoder_decoder.* tensor");
  cmn::model::write_checkpoint(out, part);
  std::cout << "wrote " << out << ": " << part.size() << " encoder_decoder tensors" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string fixture, device_name = "cuda";
  std::vector<int64_t> batches = {1, 32};
  int64_t repeat = 5, cpu_threads = 0;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) usage_error(flag + " needs a value");
        return argv[++i];
      };
      if (flag == "--trim") {
        if (i + 2 >= argc) usage_error("--trim needs MODEL.pth and OUT.pth");
        return trim(argv[i + 1], argv[i + 2]);
      } else if (flag == "--fixture") {
        fixture = value();
      } else if (flag == "--device") {
        device_name = value();
      } else if (flag == "--repeat") {
        repeat = std::stoll(value());
      } else if (flag == "--cpu-threads") {
        cpu_threads = std::stoll(value());
      } else if (flag == "--batches") {
        batches.clear();
        std::stringstream list(value());
        for (std::string b; std::getline(list, b, ',');) batches.push_back(std::stoll(b));
      } else {
        usage_error("unknown option '" + flag + "'");
      }
    }
  } catch (const std::logic_error&) {
    usage_error("a number option got something else");
  }
  if (fixture.empty()) usage_error("--fixture is required");
  if (repeat < 1) usage_error("--repeat must be >= 1");

  try {
    const torch::Device device(device_name);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      std::cerr << "cmn-gpu-check: --device " << device_name
                << ": CUDA is not available (this LibTorch was built without CUDA, or no GPU is visible)\n";
      return 2;
    }
    cmn::model::set_threads(static_cast<int>(cpu_threads));  // 0: the process's CPU budget
    // fp32 means fp32: no TF32 in cuDNN convolutions or cuBLAS matmuls (TF32 keeps 10 mantissa bits).
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
    c10::InferenceMode guard;

    bool real_trunk = false;
    auto cpu_model = load_fixture_model(fixture, real_trunk);
    auto dev_model = load_fixture_model(fixture, real_trunk);
    dev_model->to(device);
    dev_model->reset_inference_cache();
    std::cout << "device " << device.str() << "; trunk: "
              << (real_trunk ? "the fixture's" : "seeded random (the fixture's encoder-decoder only)")
              << "; CPU threads " << at::get_num_threads() << std::endl;

    const std::string expected = fixture + "/expected.pt";
    auto att = buffer(expected, "att_feats");            // [2,196,2048] the reference's visual features
    auto beam_seq = buffer(expected, "beam_seq");        // [2,60]
    auto beam_lp = buffer(expected, "beam_seq_logprobs");  // [2,60,761]
    auto greedy_seq = buffer(expected, "greedy_seq");    // [2,60]
    auto images = buffer(fixture + "/inputs.pt", "images");  // [2,4,3,224,224]

    // 1. Encoder-decoder on the device from the reference's features.
    DecodingOptions beam = cmn::model::decoding_options_from(dev_model->config());
    beam.method = cmn::model::DecodingMethod::kBeamSearch;
    beam.beam_size = 3;
    beam.max_length = beam_seq.size(1);
    auto decoded = dev_model->infer_features(att.to(device), beam).decoded;
    double worst_lp = 0;
    bool ids_equal = decoded.best.size() == 2;
    for (int64_t s = 0; s < 2 && ids_equal; ++s) {
      const auto& h = decoded.best[static_cast<size_t>(s)];
      ids_equal = padded(h.ids, beam_seq.size(1)) == row(beam_seq, s);
      for (size_t t = 0; ids_equal && t < h.ids.size(); ++t) {
        const double ref = beam_lp[s][static_cast<int64_t>(t)][h.ids[t]].item<double>();
        worst_lp = std::max(worst_lp, std::abs(h.token_log_probs[t] - ref));
      }
    }
    check(ids_equal, "beam-3 ids identical to the reference (2 studies, from its visual features)");
    std::ostringstream lp;
    lp << "beam-3 chosen-token log-probs within 1e-3 of the reference (max |diff| " << worst_lp << ")";
    check(ids_equal && worst_lp < 1e-3, lp.str());

    DecodingOptions greedy;
    greedy.method = cmn::model::DecodingMethod::kGreedy;
    greedy.beam_size = 1;
    greedy.block_trigrams = false;  // the fixture was decoded without trigram blocking
    greedy.max_length = greedy_seq.size(1);
    auto g = dev_model->infer_features(att.to(device), greedy).decoded;
    bool greedy_equal = g.best.size() == 2;
    for (int64_t s = 0; s < 2 && greedy_equal; ++s) {
      greedy_equal = padded(g.best[static_cast<size_t>(s)].ids, greedy_seq.size(1)) == row(greedy_seq, s);
    }
    check(greedy_equal, "greedy ids identical to the reference");

    // 2. The trunk and whole passes: device against this host's CPU, same weights.
    auto cpu_feats = cpu_model->extract(images).att;            // [2,196,2048]
    auto dev_feats = dev_model->extract(images.to(device)).att;  // [2,196,2048]
    const double trunk_err = max_relative_error(dev_feats, cpu_feats);
    std::ostringstream tr;
    tr << "trunk features on " << device.str() << " within 1e-3 of the CPU's (max relative " << trunk_err << ")";
    check(trunk_err < 1e-3, tr.str());
    if (real_trunk) {
      const double ref_err = max_relative_error(dev_feats, att);
      std::ostringstream rr;
      rr << "trunk features on " << device.str() << " within 1e-3 of the reference's (max relative " << ref_err << ")";
      check(ref_err < 1e-3, rr.str());
    }
    auto cpu_pass = cpu_model->infer(images, beam).decoded;
    auto dev_pass = dev_model->infer(images.to(device), beam).decoded;
    bool pass_equal = cpu_pass.best.size() == dev_pass.best.size();
    for (size_t s = 0; s < cpu_pass.best.size() && pass_equal; ++s) {
      pass_equal = cpu_pass.best[s].ids == dev_pass.best[s].ids;
    }
    check(pass_equal, "whole passes (trunk, encoder, beam 3) give the same ids on the CPU and on " + device.str());

    // 3. Per-stage timings.
    std::cout << "timings (median of " << repeat << " after a warm-up; beam 3, max length " << beam.max_length
              << ", 4 views, fp32, TF32 off):" << std::endl;
    std::printf("%-6s %-5s %6s %10s %10s %10s %10s %12s %7s %11s\n", "device", "prec", "batch", "visual_s", "encode_s",
                "decode_s", "total_s", "ms/step", "steps", "studies/s");
    auto print = [](const std::string& dev, const char* precision, int64_t batch, const Timing& t) {
      const double total = t.visual + t.encode + t.decode;
      std::printf("%-6s %-5s %6lld %10.4f %10.4f %10.4f %10.4f %12.3f %7lld %11.1f\n", dev.c_str(), precision,
                  static_cast<long long>(batch), t.visual, t.encode, t.decode, total,
                  t.steps > 0 ? 1e3 * t.decode / static_cast<double>(t.steps) : 0.0, static_cast<long long>(t.steps),
                  total > 0 ? static_cast<double>(batch) / total : 0.0);
      std::fflush(stdout);
    };
    // fp32, then bf16 (issue 15: the trunk and every Linear in bfloat16 on the device; goal on an H200: < 20 ms
    // per study at batch 1, > 500 studies/s batched). bf16's reports are compared with fp32's, not asserted.
    auto fp32_ids = dev_model->infer(images.to(device), beam).decoded;
    for (auto precision : {cmn::model::Precision::kFp32, cmn::model::Precision::kBf16}) {
      dev_model->set_precision(precision);
      for (int64_t b : batches) {
        auto batch = images.repeat({(b + 1) / 2, 1, 1, 1, 1}).narrow(0, 0, b).contiguous();
        print(device.str(), cmn::model::precision_name(precision), b,
              time_passes(dev_model, batch.to(device), beam, repeat));
      }
    }
    {
      auto bf16_ids = dev_model->infer(images.to(device), beam).decoded;
      int same = 0;
      for (size_t s = 0; s < bf16_ids.best.size() && s < fp32_ids.best.size(); ++s) {
        same += bf16_ids.best[s].ids == fp32_ids.best[s].ids;
      }
      std::cout << "bf16 on " << device.str() << ": " << same << " of " << fp32_ids.best.size()
                << " fixture reports identical to fp32's" << std::endl;
      dev_model->set_precision(cmn::model::Precision::kFp32);
    }
    print("cpu", "fp32", 1,
          time_passes(cpu_model, images.narrow(0, 0, 1).contiguous(), beam, std::min<int64_t>(repeat, 3)));
    std::cout << (failures == 0 ? "all checks passed" : std::to_string(failures) + " check(s) failed") << std::endl;
    return failures == 0 ? 0 : 1;
  } catch (const c10::Error& e) {
    std::cerr << "cmn-gpu-check: " << e.msg() << "\n";
    return 1;
  }
}
