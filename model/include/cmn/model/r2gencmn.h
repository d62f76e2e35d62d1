#pragma once
// BaseCMNModel (models/models.py): visual_extractor + encoder_decoder, the whole R2GenCMN network.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/alignment.h"
#include "cmn/model/config.h"
#include "cmn/model/decoding.h"
#include "cmn/model/encoder_decoder.h"
#include "cmn/model/visual_extractor.h"

namespace cmn::model {

// Hooks into the one inference pass (R2GenCMNImpl::infer), used by engine::Replica (observers, deadlines,
// cancellation, streaming), the trainer's evaluation and cmn-bench.
struct PassHooks {
  // Called between the visual stage and the encoder; may throw to stop the pass.
  std::function<void()> after_visual;
  // Wraps the decoder's StepModel before the search uses it (e.g. to look at every step); may throw from step().
  std::function<std::unique_ptr<StepModel>(StepModel&)> wrap_decoder;
  // Intra-op threads of the decode loop (0 = as the rest of the pass). A decode step is ~100 small ops; split
  // over threads, each waits for the others at every op, and on a CPU shared with other work a thread that
  // lost its core stalls them all (issue 15 item 5: 2 threads beside two CPU hogs decoded 69x slower than
  // quiet, 1 thread 1.5x). The trunk's large convolutions keep the pass's threads.
  int decode_threads = 0;
};

struct PassResult {
  DecodeResult decoded;
  torch::Tensor memory;                          // [B,S,d] the encoder memory (attention maps replay over it)
  double visual_s = 0, encode_s = 0, decode_s = 0;  // wall time of each stage
};

class R2GenCMNImpl : public torch::nn::Module {
 public:
  explicit R2GenCMNImpl(const ModelConfig& config);

  // images [B,V,3,224,224] -> att [B,V*49,2048], fc [B,V*2048]
  VisualFeatures extract(const torch::Tensor& images);
  // images [B,V,3,224,224], targets [B,L] -> log-probs [B,L-1,V+1] (training forward)
  torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& targets);
  // THE inference pass: images [B,V,3,224,224] -> visual extractor -> encoder -> decode loop. Every inference
  // caller goes through here; inference mode is the caller's job (c10::InferenceMode).
  PassResult infer(const torch::Tensor& images, const DecodingOptions& options, const PassHooks& hooks = {});
  // The same pass from visual features already computed (a trainer with a frozen, cached trunk):
  // att [B,V*49,d_vf] -> encoder -> decode loop.
  PassResult infer_features(const torch::Tensor& att, const DecodingOptions& options, const PassHooks& hooks = {});
  // infer(images, options).decoded
  DecodeResult generate(const torch::Tensor& images, const DecodingOptions& options);

  // Teacher-forced scoring of given reports (no search): images [B,V,3,H,W], reports[b] = token ids (no bos, no
  // end token) -> per study the log-prob of each id and then of the end token, and the consistency (nullopt
  // without an alignment head). Inference mode is the caller's job.
  struct ReportScore {
    std::vector<float> token_log_probs;
    std::optional<double> consistency;
  };
  std::vector<ReportScore> score_reports(const torch::Tensor& images, const std::vector<std::vector<int64_t>>& reports);

  // Forget weight-derived caches (folded batch norm, memory projections): call after changing weights.
  void reset_inference_cache();
  // Inference precision (precision.h): rebuilds the trunk's folded weights and every Linear's derived copy from
  // the current weights. The weights themselves stay fp32; fp32 drops the copies. Check
  // precision_unavailable() first: this does not.
  void set_precision(Precision p);
  Precision precision() const { return precision_; }

  const ModelConfig& config() const { return config_; }

  // ITM probability that each report matches its study (alignment.h), from the encoder memory [B,S,d] the pass
  // kept; nullopt when the model has no alignment head (a published checkpoint, a bundle trained without it).
  std::optional<std::vector<double>> consistency(const torch::Tensor& memory,
                                                 const std::vector<std::vector<int64_t>>& reports);
  bool has_alignment() const { return !alignment.is_empty(); }
  // The retrieval index (alignment.h): stored in the weights, its size in the config (align_index_*).
  void set_retrieval_index(const torch::Tensor& embeddings, const torch::Tensor& tokens);

  VisualExtractor visual_extractor{nullptr};
  BaseCMN encoder_decoder{nullptr};
  Alignment alignment{nullptr};  // "alignment.*", only with config.align_queries > 0

 private:
  ModelConfig config_;
  Precision precision_ = Precision::kFp32;
};
TORCH_MODULE(R2GenCMN);

// The decoder's cross-attention (src_attn) for given token sequences (one per study, no final eos) over `memory`
// [B,S,d] -> per study [layers, T_s, S] (heads averaged; undefined when T_s = 0). One causal teacher-forced pass
// over each hypothesis's own prefixes: the decoding pass's numbers for it (same memory, same prefixes; equal to
// the incremental decoder's to float rounding, tests/model/attention_replay_test.cc).
std::vector<torch::Tensor> decoder_cross_attention(BaseCMNImpl& model, const torch::Tensor& memory,
                                                   const std::vector<std::vector<int64_t>>& token_ids);

// Builds the network for `config` and loads an R2GenCMN checkpoint (.pth) into it, on the CPU in eval mode.
// vocab_size 0 in `config` is taken from the checkpoint's logit layer; a different non-zero value is an
// error. Missing / unexpected / mis-shaped keys are an error listing them (see load_state_dict).
R2GenCMN load_r2gencmn(const std::string& checkpoint_path, ModelConfig config);

}  // namespace cmn::model
