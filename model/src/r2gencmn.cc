#include "cmn/model/r2gencmn.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>

#include <torch/cuda.h>

#include "cmn/model/checkpoint.h"
#include "cmn/model/runtime.h"

namespace cmn::model {

R2GenCMNImpl::R2GenCMNImpl(const ModelConfig& config) : config_(config) {
  validate_model_config(config_);
  visual_extractor = register_module("visual_extractor", VisualExtractor(config_.visual_extractor));
  encoder_decoder = register_module("encoder_decoder", BaseCMN(config_));
  if (config_.align_queries > 0) alignment = register_module("alignment", Alignment(config_));
}

void R2GenCMNImpl::set_retrieval_index(const torch::Tensor& embeddings, const torch::Tensor& tokens) {
  TORCH_CHECK(has_alignment(), "a retrieval index needs the alignment head (align_queries > 0)");
  alignment->set_index(embeddings, tokens);
  config_.align_index_size = embeddings.size(0);
  config_.align_index_length = tokens.size(1);
}

std::optional<std::vector<double>> R2GenCMNImpl::consistency(const torch::Tensor& memory,
                                                             const std::vector<std::vector<int64_t>>& reports) {
  if (!has_alignment()) return std::nullopt;
  return model::consistency(*alignment, *encoder_decoder, memory, reports);
}

VisualFeatures R2GenCMNImpl::extract(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 5 && images.size(1) == config_.effective_views() && images.size(2) == 3,
              "expected images [B,", config_.effective_views(), ",3,H,W], got ", images.sizes());
  return visual_extractor->extract(images);
}

torch::Tensor R2GenCMNImpl::forward(const torch::Tensor& images, const torch::Tensor& targets) {
  auto feats = extract(images);
  return encoder_decoder->forward(feats.att, targets);
}

namespace {
using Clock = std::chrono::steady_clock;
// Stage times are wall times; on CUDA the stage's kernels must have finished first.
double seconds_since(Clock::time_point start, const torch::Tensor& on) {
  if (on.defined() && on.is_cuda()) torch::cuda::synchronize();
  return std::chrono::duration<double>(Clock::now() - start).count();
}
}  // namespace

PassResult R2GenCMNImpl::infer(const torch::Tensor& images, const DecodingOptions& options, const PassHooks& hooks) {
  const auto start = Clock::now();
  auto feats = extract(images);                                              // att [B,V*49,2048]
  const double visual_s = seconds_since(start, feats.att);
  if (hooks.after_visual) hooks.after_visual();
  PassResult result = infer_features(feats.att, options, hooks);
  result.visual_s = visual_s;
  return result;
}

PassResult R2GenCMNImpl::infer_features(const torch::Tensor& att, const DecodingOptions& options,
                                        const PassHooks& hooks) {
  PassResult result;
  auto start = Clock::now();
  result.memory = encoder_decoder->encode(att);                              // [B,S,d]
  result.encode_s = seconds_since(start, result.memory);
  start = Clock::now();
  // at::set_num_threads sets the calling thread's OpenMP team size (and LibTorch's pool): restored on the way out.
  ScopedThreads decode_threads(hooks.decode_threads);
  CmnStepModel decoder(*encoder_decoder, result.memory);
  if (hooks.wrap_decoder) {
    auto wrapped = hooks.wrap_decoder(decoder);
    result.decoded = decode(*wrapped, options);
  } else {
    result.decoded = decode(decoder, options);
  }
  result.decode_s = seconds_since(start, result.memory);
  return result;
}

std::vector<R2GenCMNImpl::ReportScore> R2GenCMNImpl::score_reports(const torch::Tensor& images,
                                                                     const std::vector<std::vector<int64_t>>& reports) {
  const auto b = static_cast<int64_t>(reports.size());
  TORCH_CHECK(images.size(0) == b, "score_reports: ", b, " reports for ", images.size(0), " studies");
  const auto memory = encoder_decoder->encode(extract(images).att);           // [B,S,d]
  size_t longest = 0;
  for (const auto& r : reports) longest = std::max(longest, r.size());
  // seq [B,L] = (0, w1..wn, 0, pad 0...) as in training: the decoder reads 0..wn and is scored on w1..wn, 0.
  auto seq = torch::zeros({b, static_cast<int64_t>(longest) + 2}, torch::kLong);
  auto a = seq.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const auto& r = reports[static_cast<size_t>(i)];
    for (size_t t = 0; t < r.size(); ++t) a[i][static_cast<int64_t>(t) + 1] = r[t];
  }
  const auto targets = seq.narrow(1, 1, seq.size(1) - 1);                       // [B,L-1]
  const auto lp = encoder_decoder->teacher_forced(memory, seq.to(memory.device()))  // [B,L-1,V+1]
                      .gather(2, targets.to(memory.device()).unsqueeze(2)).squeeze(2)
                      .to(torch::kCPU, torch::kFloat);                          // [B,L-1]
  const auto c = consistency(memory, reports);
  std::vector<ReportScore> out(reports.size());
  for (int64_t i = 0; i < b; ++i) {
    const auto n = static_cast<int64_t>(reports[static_cast<size_t>(i)].size()) + 1;  // its ids, then the end token
    const auto row = lp[i].narrow(0, 0, n).contiguous();
    out[static_cast<size_t>(i)].token_log_probs.assign(row.data_ptr<float>(), row.data_ptr<float>() + n);
    if (c) out[static_cast<size_t>(i)].consistency = (*c)[static_cast<size_t>(i)];
  }
  return out;
}

DecodeResult R2GenCMNImpl::generate(const torch::Tensor& images, const DecodingOptions& options) {
  return infer(images, options).decoded;
}

std::vector<torch::Tensor> decoder_cross_attention(BaseCMNImpl& model, const torch::Tensor& memory,
                                                   const std::vector<std::vector<int64_t>>& ids) {
  const auto b = static_cast<int64_t>(ids.size());
  size_t longest = 0;
  for (const auto& s : ids) longest = std::max(longest, s.size());
  std::vector<torch::Tensor> out(ids.size());  // undefined where T_s = 0
  if (longest == 0) return out;
  // What the decoder read at each step: bos, then the token chosen at the step before. The decoder is causal,
  // so one pass over these inputs gives every step's attention at once (not one decoder call per token).
  auto input = torch::zeros({b, static_cast<int64_t>(longest)}, torch::kLong);  // [B,T], 0 = padding
  auto in = input.accessor<int64_t, 2>();
  for (int64_t s = 0; s < b; ++s) {
    const auto& seq = ids[static_cast<size_t>(s)];
    for (size_t t = 1; t < seq.size(); ++t) in[s][static_cast<int64_t>(t)] = seq[t - 1];
  }
  const auto maps = model.cross_attention(memory, input.to(memory.device()));  // [layers,B,T,S]
  for (int64_t s = 0; s < b; ++s) {
    const auto len = static_cast<int64_t>(ids[static_cast<size_t>(s)].size());
    if (len > 0) out[static_cast<size_t>(s)] = maps.select(1, s).narrow(1, 0, len);  // [layers,T_s,S]
  }
  return out;
}

void R2GenCMNImpl::reset_inference_cache() {
  visual_extractor->reset_inference_cache();
  encoder_decoder->reset_inference_cache();
}

void R2GenCMNImpl::set_precision(Precision p) {
  // The trunk: bf16 folded convolutions for kBf16; int8 has no trunk path of its own and keeps fp32 there.
  visual_extractor->set_precision(p == Precision::kBf16 ? Precision::kBf16 : Precision::kFp32);
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(module)) linear->set_precision(p);
  }
  encoder_decoder->reset_inference_cache();  // the memory keys/values are projected by Linears
  precision_ = p;
}

R2GenCMN load_r2gencmn(const std::string& path, ModelConfig config) {
  auto ckpt = read_checkpoint(path);
  const torch::Tensor* logit = nullptr;
  for (const auto& [key, tensor] : ckpt.state_dict) {
    if (key == "encoder_decoder.logit.weight") logit = &tensor;
  }
  TORCH_CHECK(logit != nullptr, "checkpoint '", path, "' has no encoder_decoder.logit.weight: not an R2GenCMN model");
  const int64_t vocab_in_file = logit->size(0) - 1;
  if (config.vocab_size == 0) config.vocab_size = vocab_in_file;
  TORCH_CHECK(config.vocab_size == vocab_in_file, "checkpoint '", path, "' has a vocabulary of ", vocab_in_file,
              " tokens but the tokenizer/config gives ", config.vocab_size,
              " (was the vocabulary built from the same annotation.json and threshold?)");
  R2GenCMN model(config);
  try {
    load_state_dict(*model, ckpt.state_dict);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint '", path, "' does not fit the model: ", e.msg());
  }
  model->eval();
  model->reset_inference_cache();
  return model;
}

}  // namespace cmn::model
