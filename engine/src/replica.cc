#include "cmn/engine/replica.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "cmn/model/r2gencmn.h"
#include "replica_impl.h"
#include "stable_tokens.h"

namespace cmn::engine {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

TokenAttention to_token_attention(const torch::Tensor& t) {
  TokenAttention a;
  if (!t.defined()) return a;
  const auto cpu = t.to(torch::kCPU, torch::kFloat).contiguous();           // [layers,T,S]
  a.layers = cpu.size(0);
  a.tokens = cpu.size(1);
  a.patches = cpu.size(2);
  a.values.assign(cpu.data_ptr<float>(), cpu.data_ptr<float>() + cpu.numel());
  return a;
}

struct Replica::Impl : ReplicaImpl {};

absl::StatusOr<torch::Tensor> pack_images(const std::vector<const std::vector<preprocessing::FloatImage>*>& studies,
                                          int64_t views) {
  const auto& first = studies.front()->empty() ? preprocessing::FloatImage{} : studies.front()->front();
  const int64_t h = first.height, w = first.width;
  auto images = torch::empty({static_cast<int64_t>(studies.size()), views, 3, h, w});  // [B,V,3,H,W] on the CPU
  for (size_t s = 0; s < studies.size(); ++s) {
    const auto& study = *studies[s];
    if (static_cast<int64_t>(study.size()) != views) {
      return absl::InvalidArgumentError(absl::StrCat("study ", s, " has ", study.size(),
                                                     " images but the model takes ", views));
    }
    for (int64_t v = 0; v < views; ++v) {
      const auto& image = study[static_cast<size_t>(v)];
      if (image.channels != 3 || image.height != h || image.width != w || h <= 0 || w <= 0 ||
          image.data.size() != static_cast<size_t>(3 * h * w)) {
        return absl::InvalidArgumentError(absl::StrCat("study ", s, " view ", v, " is ", image.channels, "x",
                                                       image.height, "x", image.width, " (", image.data.size(),
                                                       " values) but the batch takes 3x", h, "x", w));
      }
      std::memcpy(images[static_cast<int64_t>(s)][v].data_ptr<float>(), image.data.data(),
                  image.data.size() * sizeof(float));
    }
  }
  return images;
}

ReplicaImpl& Replica::internals() { return *impl_; }

Replica::Replica(std::shared_ptr<const Model> model, std::unique_ptr<Impl> impl)
    : model_(std::move(model)), impl_(std::move(impl)) {}
Replica::~Replica() = default;

std::string Replica::device() const { return impl_->device.str(); }
model::Precision Replica::precision() const { return impl_->network->precision(); }

absl::StatusOr<std::unique_ptr<Replica>> Replica::create(std::shared_ptr<const Model> model, const std::string& device,
                                                         model::Precision precision) {
  if (model == nullptr) return absl::InvalidArgumentError("Replica::create: no model");
  auto impl = std::make_unique<Impl>();
  try {
    impl->device = torch::Device(device);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("device '", device, "' is not one of cpu, cuda, cuda:N"));
  }
  if (impl->device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device '", device, "' asked for, but CUDA is not available: this LibTorch was built without CUDA or no GPU "
          "is visible (build against a CUDA LibTorch, e.g. the one inside PyTorch, or use device cpu)"));
    }
    const int64_t index = impl->device.has_index() ? impl->device.index() : 0;
    if (index >= static_cast<int64_t>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(absl::StrCat("device '", device, "' asked for, but only ",
                                                        torch::cuda::device_count(), " CUDA devices are visible"));
    }
  } else if (!impl->device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("device '", device, "' is not one of cpu, cuda, cuda:N"));
  }
  if (std::string missing = model::precision_unavailable(precision, device); !missing.empty()) {
    return absl::FailedPreconditionError(missing);
  }
  try {
    if (impl->device.is_cpu() && precision == model::Precision::kFp32) {
      impl->network = model::R2GenCMN(model->network());  // shares the weights (and their caches)
    } else {
      // A copy of the weights on the device (and in the replica's precision); the caches are filled there on
      // first use.
      impl->network = model::R2GenCMN(model->config());
      torch::NoGradGuard no_grad;
      auto src_params = model->network()->named_parameters(/*recurse=*/true);
      for (auto& p : impl->network->named_parameters(true)) p.value().copy_(src_params[p.key()]);
      auto src_buffers = model->network()->named_buffers(true);
      for (auto& b : impl->network->named_buffers(true)) b.value().copy_(src_buffers[b.key()]);
      impl->network->to(impl->device);
      impl->network->eval();
      impl->network->reset_inference_cache();
      impl->network->set_precision(precision);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("cannot place the model on '", device, "': ", e.msg()));
  }
  return std::unique_ptr<Replica>(new Replica(std::move(model), std::move(impl)));
}

absl::StatusOr<BatchResult> Replica::run(const std::vector<std::vector<preprocessing::FloatImage>>& studies,
                                         const model::DecodingOptions& decoding, const std::vector<StudyOptions>& options,
                                         StepObserver* observer) {
  if (studies.empty()) return BatchResult{};
  std::vector<const std::vector<preprocessing::FloatImage>*> views_of;
  for (const auto& study : studies) views_of.push_back(&study);
  auto images = pack_images(views_of, model_->config().effective_views());
  if (!images.ok()) return images.status();
  return run(*images, decoding, options, observer);
}

absl::StatusOr<BatchResult> Replica::run(const at::Tensor& images, const model::DecodingOptions& decoding,
                                         const std::vector<StudyOptions>& options, StepObserver* observer) {
  if (absl::Status valid = validate_decoding(decoding); !valid.ok()) return valid;
  const int64_t views = model_->config().effective_views();
  if (!images.defined() || images.dim() != 5 || images.size(1) != views || images.size(2) != 3) {
    return absl::InvalidArgumentError(absl::StrCat("expected images [B,", views, ",3,H,W] for this model, got ",
                                                   images.defined() ? c10::str(images.sizes()) : "none"));
  }
  const size_t batch = static_cast<size_t>(images.size(0));
  if (!options.empty() && options.size() != batch) {
    return absl::InvalidArgumentError(absl::StrCat(options.size(), " study options for ", batch, " studies"));
  }
  auto& network = *impl_->network;
  int64_t most_similar = 0;  // "similar prior cases" from the retrieval index: refused before any pass runs
  for (const auto& o : options) most_similar = std::max(most_similar, o.similar);
  if (most_similar > 0 && (!network.has_alignment() || !network.alignment->has_index())) {
    return absl::FailedPreconditionError("similar reports asked for, but this model has no retrieval index "
                                         "(train it with model.align_queries > 0 and align.retrieval_index: true)");
  }
  BatchResult out;
  try {
    c10::InferenceMode guard;
    at::init_num_threads();  // the calling thread's OpenMP team takes the size set with at::set_num_threads
    model::PassHooks hooks;
    hooks.decode_threads = decode_threads_;
    hooks.after_visual = [observer] {
      if (observer != nullptr && !observer->keep_going(0)) throw BatchStopped{};
    };
    std::vector<bool> progress(batch, false);
    for (size_t s = 0; s < options.size(); ++s) progress[s] = options[s].progress;
    hooks.wrap_decoder = [&](model::StepModel& decoder) -> std::unique_ptr<model::StepModel> {
      return std::make_unique<ObservedStepModel>(decoder, observer, progress);
    };
    auto pass = network.infer(images.to(impl_->device), decoding, hooks);       // memory [B,S,d]
    out.visual_s = pass.visual_s;
    out.encode_s = pass.encode_s;
    out.decode_s = pass.decode_s;
    out.steps = pass.decoded.steps;
    out.studies.resize(batch);
    for (size_t s = 0; s < batch; ++s) {
      auto& h = pass.decoded.best[s];
      out.studies[s].ids = std::move(h.ids);
      out.studies[s].token_log_probs = std::move(h.token_log_probs);
      out.studies[s].score = h.score;
    }
    std::vector<std::vector<int64_t>> reports;
    for (const auto& study : out.studies) reports.push_back(study.ids);
    if (auto c = network.consistency(pass.memory, reports)) {  // [B] from the pass's memory; none without the head
      for (size_t s = 0; s < batch; ++s) out.studies[s].consistency = (*c)[s];
    }
    if (most_similar > 0) {  // over the same memory
      auto found = model::similar_reports(*network.alignment, pass.memory, most_similar);
      for (size_t s = 0; s < batch; ++s) {
        auto& mine = found[s];
        mine.resize(std::min(mine.size(), static_cast<size_t>(options[s].similar)));
        for (auto& f : mine) out.studies[s].similar.push_back({std::move(f.ids), f.similarity});
      }
    }

    // Attention maps from the kept encoder memory: only the decoder runs again, one row per study that asked.
    std::vector<int64_t> wanted;
    std::vector<std::vector<int64_t>> chosen;
    for (size_t s = 0; s < options.size(); ++s) {
      if (!options[s].attention) continue;
      wanted.push_back(static_cast<int64_t>(s));
      chosen.push_back(out.studies[s].ids);
      if (!chosen.back().empty() && chosen.back().back() == 0) chosen.back().pop_back();  // eos step not plotted
    }
    if (!wanted.empty()) {
      const auto start = Clock::now();
      const auto rows = torch::tensor(wanted, torch::kLong).to(pass.memory.device());
      const auto maps = model::decoder_cross_attention(*network.encoder_decoder,
                                                       pass.memory.index_select(0, rows), chosen);  // [B',S,d]
      for (size_t i = 0; i < wanted.size(); ++i) {
        out.studies[static_cast<size_t>(wanted[i])].attention = to_token_attention(maps[i]);
      }
      out.attention_s = seconds_since(start);
    }
    return out;
  } catch (const BatchStopped&) {
    return absl::CancelledError("the batch was stopped between steps: no study of it is wanted any more");
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.msg()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.what()));
  }
}

absl::StatusOr<std::vector<ScoredReport>> Replica::score(
    const std::vector<std::vector<preprocessing::FloatImage>>& studies, const std::vector<std::vector<int64_t>>& reports) {
  if (studies.size() != reports.size()) {
    return absl::InvalidArgumentError(absl::StrCat(reports.size(), " reports for ", studies.size(), " studies"));
  }
  if (studies.empty()) return std::vector<ScoredReport>{};
  // The decoder's positions (PositionalEncoding's 5000) bound a report; the tokenizer never makes one that long.
  constexpr size_t kMaxTokens = 4096;
  for (size_t s = 0; s < reports.size(); ++s) {
    if (reports[s].size() > kMaxTokens) {
      return absl::InvalidArgumentError(absl::StrCat("report of study ", s, " has ", reports[s].size(),
                                                     " tokens; at most ", kMaxTokens, " can be scored"));
    }
  }
  std::vector<const std::vector<preprocessing::FloatImage>*> views_of;
  for (const auto& study : studies) views_of.push_back(&study);
  auto images = pack_images(views_of, model_->config().effective_views());
  if (!images.ok()) return images.status();
  try {
    c10::InferenceMode guard;
    at::init_num_threads();
    auto scored = impl_->network->score_reports(images->to(impl_->device), reports);
    std::vector<ScoredReport> out(scored.size());
    for (size_t s = 0; s < scored.size(); ++s) {
      out[s].token_log_probs = std::move(scored[s].token_log_probs);
      for (float lp : out[s].token_log_probs) out[s].log_prob += lp;
      out[s].consistency = scored[s].consistency;
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.msg()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.what()));
  }
}

}  // namespace cmn::engine
