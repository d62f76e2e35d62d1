// cmn-precision-check: how far a bf16 or int8 replica's reports are from fp32's on the same studies, and how much
// faster it is, measured in one run (issue 15 item 1: "each mode's accuracy is measured by a program").
//   cmn-precision-check --r2gencmn MODEL.pth --args config.json (--inputs inputs.pt | --random B)
//                       [--precisions bf16,int8] [--beam-size N] [--max-length N] [--threads N] [--repeat N]
// One JSON line per precision:
//   exact_reports          studies whose generated ids equal fp32's
//   token_f1_mean / _min   bag-of-tokens F1 of each study's report against fp32's (eos left out)
//   logprob_delta_mean/max |log p(fp32's token)| under this precision minus under fp32, teacher-forced over
//                          fp32's report (so the two runs score the same tokens), per token
//   visual_s, decode_s, total_s and *_ratio: medians over --repeat passes, fp32's divided by this precision's
// Builds on cmn_model alone (GPU hosts: --device is not offered; bf16 on CUDA is the same code).
#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include "bench_util.h"
#include "cmn/model/precision.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/runtime.h"

namespace {

using cmn::bench::median;

using cmn::model::Precision;

struct Args {
  std::string checkpoint, args_json, inputs, precisions = "bf16,int8";
  int64_t random_studies = 0, threads = 2, repeat = 3, beam_size = 0, max_length = 0;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "cmn-precision-check: " << message << "\n"
            << "usage: cmn-precision-check --r2gencmn MODEL.pth --args config.json (--inputs inputs.pt | --random B)"
               " [--precisions bf16,int8] [--beam-size N] [--max-length N] [--threads N] [--repeat N]\n";
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
    else if (flag == "--inputs") a.inputs = value();
    else if (flag == "--random") a.random_studies = to_int(flag, value());
    else if (flag == "--precisions") a.precisions = value();
    else if (flag == "--threads") a.threads = to_int(flag, value());
    else if (flag == "--repeat") a.repeat = to_int(flag, value());
    else if (flag == "--beam-size") a.beam_size = to_int(flag, value());
    else if (flag == "--max-length") a.max_length = to_int(flag, value());
    else usage_error("unknown flag " + flag);
  }
  if (a.checkpoint.empty() || a.args_json.empty()) usage_error("--r2gencmn and --args are required");
  if (a.inputs.empty() == (a.random_studies == 0)) usage_error("give exactly one of --inputs, --random");
  if (a.repeat < 1) usage_error("--repeat must be >= 1");
  return a;
}


// Multiset F1 of two id sequences, the end token (0) left out; two empty reports agree (1).
double token_f1(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::map<int64_t, int> count;
  int na = 0, nb = 0, common = 0;
  for (int64_t id : a) {
    if (id != 0) ++count[id], ++na;
  }
  for (int64_t id : b) {
    if (id == 0) continue;
    ++nb;
    if (auto it = count.find(id); it != count.end() && it->second > 0) --it->second, ++common;
  }
  if (na == 0 && nb == 0) return 1.0;
  if (common == 0) return 0.0;
  const double p = static_cast<double>(common) / nb, r = static_cast<double>(common) / na;
  return 2 * p * r / (p + r);
}

struct Run {
  std::vector<std::vector<int64_t>> ids;
  double visual_s = 0, decode_s = 0, total_s = 0;
};

Run run(cmn::model::R2GenCMNImpl& model, const torch::Tensor& images, const cmn::model::DecodingOptions& options,
        int64_t repeat) {
  Run out;
  std::vector<double> visual, decode, total;
  for (int64_t r = 0; r <= repeat; ++r) {  // pass 0 warms up (folding, derived weights' first use, allocator)
    auto pass = model.infer(images, options);
    if (r == 0) {
      for (auto& h : pass.decoded.best) out.ids.push_back(h.ids);
      continue;
    }
    visual.push_back(pass.visual_s);
    decode.push_back(pass.decode_s);
    total.push_back(pass.visual_s + pass.encode_s + pass.decode_s);
  }
  out.visual_s = median(visual);
  out.decode_s = median(decode);
  out.total_s = median(total);
  return out;
}

// log p of each of `ids` (teacher-forced, bos 0 first) -> [B, L] with L = the longest report, 0 past a report's end.
torch::Tensor token_log_probs(cmn::model::R2GenCMNImpl& model, const torch::Tensor& images,
                              const std::vector<std::vector<int64_t>>& ids, torch::Tensor* mask) {
  const int64_t b = static_cast<int64_t>(ids.size());
  int64_t len = 1;
  for (const auto& s : ids) len = std::max<int64_t>(len, static_cast<int64_t>(s.size()));
  auto seq = torch::zeros({b, len + 1}, torch::kLong);   // [B, L+1]: bos, then the ids
  *mask = torch::zeros({b, len}, torch::kBool);          // [B, L]
  for (int64_t s = 0; s < b; ++s) {
    const auto& row = ids[static_cast<size_t>(s)];
    for (size_t t = 0; t < row.size(); ++t) {
      seq[s][static_cast<int64_t>(t) + 1] = row[t];
      (*mask)[s][static_cast<int64_t>(t)] = true;
    }
  }
  auto log_probs = model.forward(images, seq);                                   // [B, L, V+1]
  return log_probs.gather(2, seq.narrow(1, 1, len).unsqueeze(2)).squeeze(2);  // [B, L]
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  std::vector<Precision> precisions;
  std::stringstream list(a.precisions);
  for (std::string name; std::getline(list, name, ',');) {
    const auto p = cmn::model::parse_precision(name);
    if (!p || *p == Precision::kFp32) usage_error("--precisions takes bf16 and/or int8, got '" + name + "'");
    if (const auto missing = cmn::model::precision_unavailable(*p, "cpu"); !missing.empty()) {
      std::cerr << "cmn-precision-check: " << missing << "\n";
      return 2;
    }
    precisions.push_back(*p);
  }
  try {
    cmn::model::warn_if_slow_blas();
    cmn::model::set_threads(static_cast<int>(a.threads));
    auto model = cmn::model::load_r2gencmn(a.checkpoint, cmn::model::read_model_config(a.args_json));
    const int64_t views = model->config().effective_views();
    torch::Tensor images = !a.inputs.empty() ? torch::jit::load(a.inputs).attr("images").toTensor()
                                             : torch::randn({a.random_studies, views, 3, 224, 224});
    TORCH_CHECK(images.dim() == 5 && images.size(1) == views, "images must be [B,", views, ",3,224,224], got ",
                images.sizes());
    auto options = cmn::model::decoding_options_from(model->config());
    if (a.beam_size > 0) options.beam_size = a.beam_size;
    if (a.max_length > 0) options.max_length = a.max_length;

    c10::InferenceMode guard;
    model->set_precision(Precision::kFp32);
    const Run fp32 = run(*model, images, options, a.repeat);
    torch::Tensor mask;
    const auto fp32_lp = token_log_probs(*model, images, fp32.ids, &mask);  // [B, L]
    for (Precision p : precisions) {
      model->set_precision(p);
      const Run other = run(*model, images, options, a.repeat);
      const auto other_lp = token_log_probs(*model, images, fp32.ids, &mask);
      const auto delta = (other_lp - fp32_lp).abs().masked_select(mask);  // [tokens]
      int exact = 0;
      double f1_sum = 0, f1_min = 1;
      for (size_t s = 0; s < fp32.ids.size(); ++s) {
        exact += fp32.ids[s] == other.ids[s];
        const double f1 = token_f1(fp32.ids[s], other.ids[s]);
        f1_sum += f1;
        f1_min = std::min(f1_min, f1);
      }
      const auto studies = static_cast<int64_t>(fp32.ids.size());
      std::ostringstream json;
      json.precision(5);
      json << "{\"precision\": \"" << cmn::model::precision_name(p) << "\", \"studies\": " << studies
           << ", \"beam_size\": " << options.beam_size << ", \"exact_reports\": " << exact
           << ", \"token_f1_mean\": " << f1_sum / static_cast<double>(studies) << ", \"token_f1_min\": " << f1_min
           << ", \"logprob_delta_mean\": " << delta.mean().item<double>()
           << ", \"logprob_delta_max\": " << delta.max().item<double>() << ", \"visual_s\": " << other.visual_s
           << ", \"decode_s\": " << other.decode_s << ", \"total_s\": " << other.total_s
           << ", \"fp32_visual_s\": " << fp32.visual_s << ", \"fp32_decode_s\": " << fp32.decode_s
           << ", \"fp32_total_s\": " << fp32.total_s << ", \"visual_speedup\": " << fp32.visual_s / other.visual_s
           << ", \"decode_speedup\": " << fp32.decode_s / other.decode_s
           << ", \"total_speedup\": " << fp32.total_s / other.total_s << ", \"threads\": " << at::get_num_threads()
           << "}";
      std::cout << json.str() << std::endl;
    }
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "cmn-precision-check: " << e.msg() << "\n";
    return 1;
  }
}
