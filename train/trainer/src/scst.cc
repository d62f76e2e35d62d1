#include "cmn/train/scst.h"

#include <algorithm>
#include <numeric>

#include "cmn/model/decoding.h"

namespace cmn::train {

torch::Tensor scst_loss(const torch::Tensor& log_probs, const torch::Tensor& seq, const torch::Tensor& mask,
                        const torch::Tensor& advantage) {
  TORCH_CHECK(log_probs.dim() == 3 && seq.dim() == 2 && log_probs.size(1) == seq.size(1) - 1,
              "scst_loss: log_probs [N,T,V] needs seq [N,T+1], got ", log_probs.sizes(), " and ", seq.sizes());
  auto target = seq.narrow(1, 1, seq.size(1) - 1);                                      // [N,T]
  auto m = mask.narrow(1, 1, mask.size(1) - 1).to(log_probs.dtype());                   // [N,T]
  auto token_lp = log_probs.gather(2, target.unsqueeze(2)).squeeze(2);                  // [N,T]
  auto weighted = token_lp * m * advantage.to(log_probs.dtype()).unsqueeze(1);          // [N,T]
  return -weighted.sum() / m.sum().clamp_min(1.0);
}

namespace {

std::vector<std::vector<int64_t>> decode_ids(model::BaseCMNImpl& model, const torch::Tensor& memory,
                                             const model::DecodingOptions& options) {
  model::CmnStepModel stepper(model, memory);
  auto result = model::decode(stepper, options);
  std::vector<std::vector<int64_t>> out;
  for (auto& h : result.best) out.push_back(std::move(h.ids));
  return out;
}

}  // namespace

ScstStep scst_step(model::BaseCMNImpl& model, const torch::Tensor& att_feats, const ScstOptions& options,
                   const RewardFn& reward) {
  TORCH_CHECK(options.samples >= 1, "scst.samples must be >= 1, got ", options.samples);
  const int64_t studies = att_feats.size(0), n = options.samples;
  const int64_t max_length = options.max_length > 0 ? options.max_length : model.config().max_seq_length;
  ScstStep out;
  std::vector<std::vector<int64_t>> greedy;
  {
    // Decoding as at inference: eval mode (no dropout), no gradient. The memory projections cached in eval mode
    // are of the weights before this step; reset them so the next step does not reuse them.
    torch::NoGradGuard no_grad;
    model.eval();
    model.reset_inference_cache();
    auto memory = model.encode(att_feats.detach());                           // [B,S,d]
    model::DecodingOptions g;
    g.method = model::DecodingMethod::kGreedy;
    g.beam_size = 1;
    g.max_length = max_length;
    greedy = decode_ids(model, memory, g);
    model::DecodingOptions s;
    s.method = model::DecodingMethod::kSample;
    s.beam_size = 1;
    s.max_length = max_length;
    s.temperature = options.temperature;
    s.seed = options.seed;
    out.samples = decode_ids(model, memory.repeat_interleave(n, 0), s);      // [B*n] sequences, by study
    model.reset_inference_cache();
  }
  model.train();

  std::vector<int64_t> study_of_greedy(static_cast<size_t>(studies)), study_of_sample;
  std::iota(study_of_greedy.begin(), study_of_greedy.end(), int64_t{0});
  for (int64_t b = 0; b < studies; ++b) study_of_sample.insert(study_of_sample.end(), static_cast<size_t>(n), b);
  const auto base = reward(greedy, study_of_greedy);
  out.rewards = reward(out.samples, study_of_sample);
  TORCH_CHECK(static_cast<int64_t>(base.size()) == studies && out.rewards.size() == out.samples.size(),
              "scst: the reward function returned the wrong number of rewards");

  // Teacher-forced pass over the samples: seq [N,L+1] = (0, ids...), mask 1 on bos .. the last id.
  const auto rows = static_cast<int64_t>(out.samples.size());
  int64_t longest = 1;
  for (const auto& ids : out.samples) longest = std::max<int64_t>(longest, static_cast<int64_t>(ids.size()));
  auto seq = torch::zeros({rows, longest + 1}, torch::kLong);  // [N,L+1]
  auto mask = torch::zeros({rows, longest + 1});               // [N,L+1]
  auto advantage = torch::zeros({rows});                       // [N]
  auto s = seq.accessor<int64_t, 2>();
  auto m = mask.accessor<float, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const auto& ids = out.samples[static_cast<size_t>(r)];
    m[r][0] = 1.0f;
    for (size_t t = 0; t < ids.size(); ++t) {
      s[r][static_cast<int64_t>(t) + 1] = ids[t];
      m[r][static_cast<int64_t>(t) + 1] = 1.0f;
    }
    const double b = base[static_cast<size_t>(study_of_sample[static_cast<size_t>(r)])];
    out.baselines.push_back(b);
    advantage[r] = out.rewards[static_cast<size_t>(r)] - b;
  }
  auto att_rep = att_feats.repeat_interleave(n, 0);                      // [B*n,S,d_vf]
  const auto device = att_feats.device();  // the rows above were filled on the CPU
  out.loss = scst_loss(model.forward(att_rep, seq.to(device)), seq.to(device), mask.to(device), advantage.to(device));
  out.mean_reward = std::accumulate(out.rewards.begin(), out.rewards.end(), 0.0) / static_cast<double>(rows);
  out.mean_baseline = std::accumulate(base.begin(), base.end(), 0.0) / static_cast<double>(studies);
  return out;
}

}  // namespace cmn::train
