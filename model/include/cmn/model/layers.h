#pragma once
// The transformer pieces of R2GenCMN (modules/base_cmn.py), with the reference's parameter names, so that
// `state_dict` keys load by name. Shapes: B = studies, T = tokens, S = visual patches, d = d_model,
// h = heads, dk = d / h, M = memory slots.
#include <cstdint>

#include <torch/torch.h>

#include "cmn/model/precision.h"

namespace cmn::model {

// LayerNorm as the reference writes it (not torch.nn.LayerNorm): a_2 * (x - mean) / (std + eps) + b_2,
// with the UNBIASED std and eps added to the std.
class LayerNormImpl : public torch::nn::Module {
 public:
  explicit LayerNormImpl(int64_t features, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);  // [..., d] -> [..., d]

  torch::Tensor a_2, b_2;  // a_2: scale, b_2: shift (Python names)
 private:
  double eps_;
};
TORCH_MODULE(LayerNorm);

// torch::nn::Linear with the same parameters ("weight" [out,in], "bias" [out]) and the same initialisation, so
// checkpoints and seeded training are unchanged, plus derived weights for reduced-precision inference
// (precision.h): forward() uses them only in eval mode with grad off; otherwise it is torch::nn::Linear's.
class LinearImpl : public torch::nn::LinearImpl {
 public:
  LinearImpl(int64_t in_features, int64_t out_features);
  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out], fp32 in and out in every precision
  // Builds the derived copies from the current weights (call again after changing them).
  void set_precision(Precision p);
  Precision precision() const { return precision_; }

 private:
  Precision precision_ = Precision::kFp32;
  torch::Tensor weight_bf16_, bias_bf16_;  // kBf16: [out,in], [out]
  c10::IValue packed_int8_;                // kInt8: LinearPackedParamsBase (quantized::linear_prepack)
};
TORCH_MODULE(Linear);

// Four d x d projections registered as the ModuleList "linears" (clones(nn.Linear, 4) in the reference):
// linears.0 = query, .1 = key, .2 = value, .3 = output. The typed handles below share those modules.
struct Projections {
  torch::nn::ModuleList list{nullptr};
  Linear q{nullptr}, k{nullptr}, v{nullptr}, out{nullptr};
};
Projections register_projections(torch::nn::Module& owner, int64_t d_model);

// Multi-head scaled dot-product attention (MultiHeadedAttention in base_cmn.py).
class MultiHeadedAttentionImpl : public torch::nn::Module {
 public:
  MultiHeadedAttentionImpl(int64_t heads, int64_t d_model, double dropout);
  // query [B,Tq,d], key/value [B,Tk,d], mask broadcastable to [B,Tq,Tk] (true = attend) or undefined.
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                        const torch::Tensor& mask = {});
  // [B,T,d] -> [B,h,T,dk]
  torch::Tensor split_heads(const torch::Tensor& x) const;
  int64_t heads() const { return heads_; }
  int64_t d_k() const { return d_k_; }

  Projections linears;  // "linears.0..3"
  torch::nn::Dropout dropout{nullptr};
  torch::Tensor last_attention;  // [B,h,Tq,Tk] of the last forward in eval mode (attention maps)
 private:
  int64_t heads_, d_k_;
};
TORCH_MODULE(MultiHeadedAttention);

// The memory's keys and values depend only on weights: kept per loaded model (not per step, not per beam).
struct MemoryKeysValues {
  torch::Tensor keys;    // [h, M, dk] = linears.1(memory_matrix) split by head
  torch::Tensor values;  // [h, M, dk] = linears.2(memory_matrix) split by head
  // The keys packed for the fused CPU memory read (fused_kernels.h), [h, ceil(M/32), dk, 32]; set on the cached
  // inference copy only (BaseCMN::memory_keys_values), undefined elsewhere: then ATen's ops run.
  torch::Tensor keys_packed;
};

// Cross-modal memory querying and responding (MultiThreadMemory): each query reads the top-k memory slots
// per head, softmax over those k scores, weighted sum of their values.
class MultiThreadMemoryImpl : public torch::nn::Module {
 public:
  MultiThreadMemoryImpl(int64_t heads, int64_t d_model, int64_t topk, double dropout = 0.1);
  // memory_matrix [M,d] -> keys/values [h,M,dk]
  MemoryKeysValues project_memory(const torch::Tensor& memory_matrix);
  // query [B,T,d] -> response [B,T,d]
  torch::Tensor forward(const torch::Tensor& query, const MemoryKeysValues& memory);

  // How the top-k values are looked up. kGather (default): index_select of the k chosen rows, nothing of
  // size M per query. kReferenceExpand: R2GenCMN's memory_querying_responding verbatim — the values expanded
  // to [B,h,T,M,dk] and torch.gather'ed; its backward scatters into a dense [B,h,T,M,dk] zero tensor
  // (> 10 GB at batch 16 x 4 views). Same numbers either way; the reference form exists only for the
  // speed/memory bench (cmn-train-bench) and the equivalence test, never for serving or training.
  enum class QueryPath { kGather, kReferenceExpand };
  void set_query_path(QueryPath path) { path_ = path; }
  QueryPath query_path() const { return path_; }

  Projections linears;  // "linears.0..3"
  torch::nn::Dropout dropout{nullptr};
 private:
  torch::Tensor forward_reference(const torch::Tensor& query, const MemoryKeysValues& memory);
  int64_t heads_, d_k_, topk_;
  QueryPath path_ = QueryPath::kGather;
};
TORCH_MODULE(MultiThreadMemory);

// w_2(dropout(relu(w_1(x)))) (PositionwiseFeedForward)
class PositionwiseFeedForwardImpl : public torch::nn::Module {
 public:
  PositionwiseFeedForwardImpl(int64_t d_model, int64_t d_ff, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  Linear w_1{nullptr}, w_2{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(PositionwiseFeedForward);

// Sinusoidal positions as a buffer `pe` [1, max_len, d]. The reference saves it in its state_dict and the
// published fixture stores it rounded to float16, so it is loaded like a weight, never recomputed after load.
class PositionalEncodingImpl : public torch::nn::Module {
 public:
  PositionalEncodingImpl(int64_t d_model, double dropout, int64_t max_len = 5000);
  torch::Tensor forward(const torch::Tensor& x, int64_t offset = 0);  // x [B,T,d] + pe[offset:offset+T]
  torch::Tensor pe;
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(PositionalEncoding);

// Pre-norm residual wrapper: only its LayerNorm has weights ("sublayer.i.norm").
class SublayerConnectionImpl : public torch::nn::Module {
 public:
  SublayerConnectionImpl(int64_t size, double dropout);
  LayerNorm norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(SublayerConnection);

class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(int64_t d_model, int64_t heads, int64_t d_ff, double dropout);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);  // [B,S,d] -> [B,S,d]
  MultiHeadedAttention self_attn{nullptr};
  PositionwiseFeedForward feed_forward{nullptr};
  torch::nn::ModuleList sublayer{nullptr};  // 2 x SublayerConnection
  SublayerConnection sub(size_t i) { return SublayerConnection(sublayer->ptr<SublayerConnectionImpl>(i)); }
};
TORCH_MODULE(EncoderLayer);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(int64_t d_model, int64_t heads, int64_t d_ff, double dropout);
  // Whole-sequence (teacher forcing): x [B,T,d], memory [B,S,d] -> [B,T,d]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& memory, const torch::Tensor& src_mask,
                        const torch::Tensor& tgt_mask);
  MultiHeadedAttention self_attn{nullptr}, src_attn{nullptr};
  PositionwiseFeedForward feed_forward{nullptr};
  torch::nn::ModuleList sublayer{nullptr};  // 3 x SublayerConnection
  SublayerConnection sub(size_t i) { return SublayerConnection(sublayer->ptr<SublayerConnectionImpl>(i)); }
};
TORCH_MODULE(DecoderLayer);

// Plain scaled dot-product attention on split heads: q [..,Tq,dk], k/v [..,Tk,dk] -> ([..,Tq,dk], p [..,Tq,Tk])
std::pair<torch::Tensor, torch::Tensor> scaled_dot_product(const torch::Tensor& q, const torch::Tensor& k,
                                                           const torch::Tensor& v, const torch::Tensor& mask,
                                                           torch::nn::Dropout& dropout);

}  // namespace cmn::model
