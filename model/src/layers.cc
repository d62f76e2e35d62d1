#include "cmn/model/layers.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include <ATen/core/dispatch/Dispatcher.h>

#include "fused_ops.h"

namespace cmn::model {

LayerNormImpl::LayerNormImpl(int64_t features, double eps) : eps_(eps) {
  a_2 = register_parameter("a_2", torch::ones({features}));
  b_2 = register_parameter("b_2", torch::zeros({features}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  if (!is_training()) {
    if (auto y = fused::layer_norm(x, a_2, b_2, eps_); y.defined()) return y;  // one pass instead of seven ops
  }
  auto mean = x.mean(-1, /*keepdim=*/true);                 // [..., 1]
  auto std = x.std(-1, /*unbiased=*/true, /*keepdim=*/true);  // [..., 1]
  return a_2 * (x - mean) / (std + eps_) + b_2;              // [..., d]
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features)
    : torch::nn::LinearImpl(torch::nn::LinearOptions(in_features, out_features)) {}

namespace {

// The quantized engine int8 weights are packed for: FBGEMM, then QNNPACK, then oneDNN. Process-wide in LibTorch,
// so it is set once here; every packed weight then carries its own kernel. oneDNN comes last although it is the
// fastest on a repeated input: LibTorch 1.13's oneDNN dynamic linear bakes the input's quantisation scale into
// the primitive, so every new activation builds a new primitive (measured here at [10,512]x[512,512]: 0.05 ms
// on a repeated input, 0.26 ms on fresh ones; QNNPACK 0.10 ms either way, fp32 0.10 ms).
void choose_quantized_engine() {
  static std::once_flag once;
  std::call_once(once, [] {
    const auto& supported = at::globalContext().supportedQEngines();
    for (auto engine : {at::QEngine::FBGEMM, at::QEngine::QNNPACK, at::QEngine::ONEDNN}) {
      if (std::find(supported.begin(), supported.end(), engine) != supported.end()) {
        at::globalContext().setQEngine(engine);
        return;
      }
    }
  });
}

}  // namespace

void LinearImpl::set_precision(Precision p) {
  torch::NoGradGuard no_grad;
  weight_bf16_ = bias_bf16_ = torch::Tensor();
  packed_int8_ = c10::IValue();
  precision_ = p;
  if (p == Precision::kBf16) {
    weight_bf16_ = weight.detach().to(torch::kBFloat16).contiguous();  // [out,in]
    bias_bf16_ = bias.detach().to(torch::kBFloat16);                   // [out]
  } else if (p == Precision::kInt8) {
    TORCH_CHECK(weight.device().is_cpu(), "int8 linears run on the CPU only");
    choose_quantized_engine();
    // Symmetric per-output-channel int8 (zero point 0): scale = max |w| of the row / 127.
    auto w = weight.detach().contiguous();                                                  // [out,in]
    auto scale = w.abs().amax(1).clamp_min(1e-12).div_(127.0).to(torch::kDouble);          // [out]
    auto zero = torch::zeros({w.size(0)}, torch::kLong);
    auto q = torch::quantize_per_channel(w, scale, zero, /*axis=*/0, torch::kQInt8);       // [out,in] qint8
    static const auto prepack = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
    std::vector<c10::IValue> stack{q, c10::optional<torch::Tensor>(bias.detach().contiguous())};
    prepack.callBoxed(&stack);
    packed_int8_ = std::move(stack[0]);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (is_training() || torch::GradMode::is_enabled()) return torch::nn::LinearImpl::forward(x);
  if (precision_ == Precision::kFp32) {
    // A few rows (a decode step): plain dot products beat a GEMM that packs the whole weight for them.
    if (auto y = fused::linear(x, weight, bias); y.defined()) return y;
    return torch::nn::LinearImpl::forward(x);
  }
  if (precision_ == Precision::kBf16) {
    if (auto y = fused::linear_bf16(x, weight_bf16_, bias); y.defined()) return y;  // AVX512_BF16, few rows
    return torch::linear(x.to(torch::kBFloat16), weight_bf16_, bias_bf16_).to(x.scalar_type());  // [..., out]
  }
  static const auto dynamic = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_dynamic", "");
  const auto flat = x.contiguous().view({-1, x.size(-1)});                                  // [N, in]
  std::vector<c10::IValue> stack{flat, packed_int8_, /*reduce_range=*/false};
  dynamic.callBoxed(&stack);
  auto y = stack[0].toTensor();                                                             // [N, out]
  auto sizes = x.sizes().vec();
  sizes.back() = y.size(-1);
  return y.view(sizes);                                                                     // [..., out]
}

Projections register_projections(torch::nn::Module& owner, int64_t d_model) {
  Projections p;
  p.q = Linear(d_model, d_model);
  p.k = Linear(d_model, d_model);
  p.v = Linear(d_model, d_model);
  p.out = Linear(d_model, d_model);
  p.list = owner.register_module("linears", torch::nn::ModuleList(p.q, p.k, p.v, p.out));
  return p;
}

std::pair<torch::Tensor, torch::Tensor> scaled_dot_product(const torch::Tensor& q, const torch::Tensor& k,
                                                           const torch::Tensor& v, const torch::Tensor& mask,
                                                           torch::nn::Dropout& dropout) {
  const double scale = std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / scale;  // [.., Tq, Tk]
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  auto p = torch::softmax(scores, -1);                           // [.., Tq, Tk]
  if (dropout->is_training()) p = dropout(p);
  return {torch::matmul(p, v), p};                               // [.., Tq, dk]
}

MultiHeadedAttentionImpl::MultiHeadedAttentionImpl(int64_t heads, int64_t d_model, double dropout_p)
    : heads_(heads), d_k_(d_model / heads) {
  TORCH_CHECK(d_model % heads == 0, "d_model ", d_model, " is not a multiple of heads ", heads);
  linears = register_projections(*this, d_model);
  dropout = register_module("dropout", torch::nn::Dropout(dropout_p));
}

torch::Tensor MultiHeadedAttentionImpl::split_heads(const torch::Tensor& x) const {
  return x.view({x.size(0), -1, heads_, d_k_}).transpose(1, 2);  // [B,T,d] -> [B,h,T,dk]
}

torch::Tensor MultiHeadedAttentionImpl::forward(const torch::Tensor& query, const torch::Tensor& key,
                                                const torch::Tensor& value, const torch::Tensor& mask) {
  const int64_t batch = query.size(0);
  auto q = split_heads(linears.q(query));  // [B,h,Tq,dk]
  auto k = split_heads(linears.k(key));    // [B,h,Tk,dk]
  auto v = split_heads(linears.v(value));  // [B,h,Tk,dk]
  // mask [B,Tq|1,Tk] -> [B,1,Tq|1,Tk], shared by every head (mask.unsqueeze(1) in the reference)
  auto [x, p] = scaled_dot_product(q, k, v, mask.defined() ? mask.unsqueeze(1) : mask, dropout);
  if (!is_training()) last_attention = p;
  x = x.transpose(1, 2).contiguous().view({batch, -1, heads_ * d_k_});  // [B,Tq,d]
  return linears.out(x);
}

MultiThreadMemoryImpl::MultiThreadMemoryImpl(int64_t heads, int64_t d_model, int64_t topk, double dropout_p)
    : heads_(heads), d_k_(d_model / heads), topk_(topk) {
  TORCH_CHECK(d_model % heads == 0, "d_model ", d_model, " is not a multiple of heads ", heads);
  linears = register_projections(*this, d_model);
  dropout = register_module("dropout", torch::nn::Dropout(dropout_p));
}

MemoryKeysValues MultiThreadMemoryImpl::project_memory(const torch::Tensor& memory_matrix) {
  const int64_t slots = memory_matrix.size(0);
  MemoryKeysValues kv;
  kv.keys = linears.k(memory_matrix).view({slots, heads_, d_k_}).permute({1, 0, 2}).contiguous();    // [h,M,dk]
  kv.values = linears.v(memory_matrix).view({slots, heads_, d_k_}).permute({1, 0, 2}).contiguous();  // [h,M,dk]
  return kv;
}

torch::Tensor MultiThreadMemoryImpl::forward(const torch::Tensor& query, const MemoryKeysValues& memory) {
  if (path_ == QueryPath::kReferenceExpand) return forward_reference(query, memory);
  const int64_t batch = query.size(0), steps = query.size(1), rows = batch * steps;
  const int64_t slots = memory.keys.size(1);
  auto q_rows = linears.q(query);                                                       // [B,T,d]
  if (!is_training() && memory.keys_packed.defined()) {  // fused CPU read (fused_kernels.h)
    if (auto x = fused::memory_read(q_rows.view({rows, heads_ * d_k_}), memory.keys_packed, memory.values, topk_);
        x.defined()) {
      return linears.out(x.view({batch, steps, heads_ * d_k_}));                         // [B,T,d]
    }
  }
  // All (study, token) rows of one head form one matrix: one bmm per head instead of the reference's
  // per-study expand of the memory.
  auto q = q_rows.view({rows, heads_, d_k_}).transpose(0, 1);            // [h,BT,dk]
  auto scores = torch::bmm(q, memory.keys.transpose(1, 2)) /
                std::sqrt(static_cast<double>(d_k_));                    // [h,BT,M]
  auto [top_scores, top_idx] = scores.topk(topk_);                       // [h,BT,k] each
  // Gather the selected values without materialising [h,BT,M,dk]: offset each head's slot ids into the
  // flattened [h*M, dk] value table.
  auto head_offset = torch::arange(heads_, top_idx.options()).mul_(slots).view({heads_, 1, 1});
  auto flat_idx = (top_idx + head_offset).view({-1});                                  // [h*BT*k]
  auto selected = memory.values.view({heads_ * slots, d_k_}).index_select(0, flat_idx)
                      .view({heads_, rows, topk_, d_k_});                             // [h,BT,k,dk]
  auto p = torch::softmax(top_scores, -1);                                            // [h,BT,k]
  if (dropout->is_training()) {
    // Draw the dropout mask in the reference's [B,h,T,k] order, so a seeded run drops the same weights.
    p = dropout(p.view({heads_, batch, steps, topk_}).permute({1, 0, 2, 3}).contiguous())
            .permute({1, 0, 2, 3})
            .reshape({heads_, rows, topk_});                                          // [h,BT,k]
  }
  auto x = torch::matmul(p.unsqueeze(2), selected).squeeze(2);                         // [h,BT,dk]
  x = x.transpose(0, 1).contiguous().view({batch, steps, heads_ * d_k_});              // [B,T,d]
  return linears.out(x);
}

// modules/base_cmn.py, MultiThreadMemory.forward + memory_querying_responding, step for step. The only
// liberty: the reference projects memory_matrix.expand(B, M, d) through linears.1/.2 once per study; here the
// shared [h,M,dk] projection is expanded instead (a view: same values, same summed gradient).
torch::Tensor MultiThreadMemoryImpl::forward_reference(const torch::Tensor& query, const MemoryKeysValues& memory) {
  const int64_t batch = query.size(0), slots = memory.keys.size(1);
  auto q = linears.q(query).view({batch, -1, heads_, d_k_}).transpose(1, 2);      // [B,h,T,dk]
  const int64_t steps = q.size(2);
  auto key = memory.keys.unsqueeze(0).expand({batch, heads_, slots, d_k_});       // [B,h,M,dk]
  auto value = memory.values.unsqueeze(0).expand({batch, heads_, slots, d_k_});   // [B,h,M,dk]
  auto scores = torch::matmul(q, key.transpose(-2, -1)) /
                std::sqrt(static_cast<double>(d_k_));                             // [B,h,T,M]
  auto [selected_scores, idx] = scores.topk(topk_);                               // [B,h,T,k] each
  // dummy_value / dummy_idx of the reference: views, but gather's backward allocates a dense
  // zeros([B,h,T,M,dk]) and scatter_adds into it — the memory this path exists to measure.
  auto dummy_value = value.unsqueeze(2).expand({batch, heads_, steps, slots, d_k_});  // [B,h,T,M,dk]
  auto dummy_idx = idx.unsqueeze(-1).expand({batch, heads_, steps, topk_, d_k_});     // [B,h,T,k,dk]
  auto selected_value = torch::gather(dummy_value, 3, dummy_idx);                    // [B,h,T,k,dk]
  auto p = torch::softmax(selected_scores, -1);                                       // [B,h,T,k]
  if (dropout->is_training()) p = dropout(p);
  auto x = torch::matmul(p.unsqueeze(3), selected_value).squeeze(3);                  // [B,h,T,dk]
  x = x.transpose(1, 2).contiguous().view({batch, -1, heads_ * d_k_});                // [B,T,d]
  return linears.out(x);
}

PositionwiseFeedForwardImpl::PositionwiseFeedForwardImpl(int64_t d_model, int64_t d_ff, double dropout_p) {
  w_1 = register_module("w_1", Linear(d_model, d_ff));
  w_2 = register_module("w_2", Linear(d_ff, d_model));
  dropout = register_module("dropout", torch::nn::Dropout(dropout_p));
}

torch::Tensor PositionwiseFeedForwardImpl::forward(const torch::Tensor& x) {
  return w_2(dropout(torch::relu(w_1(x))));  // [..,d] -> [..,d_ff] -> [..,d]
}

PositionalEncodingImpl::PositionalEncodingImpl(int64_t d_model, double dropout_p, int64_t max_len) {
  auto table = torch::zeros({max_len, d_model});
  auto position = torch::arange(0, max_len).unsqueeze(1).to(torch::kFloat);                      // [L,1]
  auto div_term = torch::exp(torch::arange(0, d_model, 2).to(torch::kFloat) *
                             -(std::log(10000.0) / static_cast<double>(d_model)));               // [d/2]
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, torch::indexing::None, 2)},
                   torch::sin(position * div_term));
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)},
                   torch::cos(position * div_term));
  pe = register_buffer("pe", table.unsqueeze(0));  // [1,L,d]
  dropout = register_module("dropout", torch::nn::Dropout(dropout_p));
}

torch::Tensor PositionalEncodingImpl::forward(const torch::Tensor& x, int64_t offset) {
  TORCH_CHECK(offset + x.size(1) <= pe.size(1), "sequence of ", offset + x.size(1),
              " positions exceeds the positional table (", pe.size(1), ")");
  return dropout(x + pe.narrow(1, offset, x.size(1)));  // [B,T,d]
}

SublayerConnectionImpl::SublayerConnectionImpl(int64_t size, double dropout_p) {
  norm = register_module("norm", LayerNorm(size));
  dropout = register_module("dropout", torch::nn::Dropout(dropout_p));
}

EncoderLayerImpl::EncoderLayerImpl(int64_t d_model, int64_t heads, int64_t d_ff, double dropout_p) {
  self_attn = register_module("self_attn", MultiHeadedAttention(heads, d_model, dropout_p));
  feed_forward = register_module("feed_forward", PositionwiseFeedForward(d_model, d_ff, dropout_p));
  sublayer = register_module("sublayer", torch::nn::ModuleList(SublayerConnection(d_model, dropout_p),
                                                               SublayerConnection(d_model, dropout_p)));
}

torch::Tensor EncoderLayerImpl::forward(const torch::Tensor& x_in, const torch::Tensor& mask) {
  auto x = x_in;
  {  // self-attention
    auto s = sub(0);
    auto y = s->norm(x);
    x = x + s->dropout(self_attn(y, y, y, mask));
  }
  {  // feed-forward
    auto s = sub(1);
    x = x + s->dropout(feed_forward(s->norm(x)));
  }
  return x;
}

DecoderLayerImpl::DecoderLayerImpl(int64_t d_model, int64_t heads, int64_t d_ff, double dropout_p) {
  self_attn = register_module("self_attn", MultiHeadedAttention(heads, d_model, dropout_p));
  src_attn = register_module("src_attn", MultiHeadedAttention(heads, d_model, dropout_p));
  feed_forward = register_module("feed_forward", PositionwiseFeedForward(d_model, d_ff, dropout_p));
  sublayer = register_module("sublayer", torch::nn::ModuleList(SublayerConnection(d_model, dropout_p),
                                                               SublayerConnection(d_model, dropout_p),
                                                               SublayerConnection(d_model, dropout_p)));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x_in, const torch::Tensor& memory,
                                        const torch::Tensor& src_mask, const torch::Tensor& tgt_mask) {
  auto x = x_in;
  {  // masked self-attention over the report so far
    auto s = sub(0);
    auto y = s->norm(x);
    x = x + s->dropout(self_attn(y, y, y, tgt_mask));
  }
  {  // cross-attention to the encoded image patches
    auto s = sub(1);
    x = x + s->dropout(src_attn(s->norm(x), memory, memory, src_mask));
  }
  {  // feed-forward
    auto s = sub(2);
    x = x + s->dropout(feed_forward(s->norm(x)));
  }
  return x;
}

}  // namespace cmn::model
