#include "cmn/model/encoder_decoder.h"

#include <algorithm>
#include <cmath>

#include "fused_ops.h"

namespace cmn::model {

EmbeddingsImpl::EmbeddingsImpl(int64_t d_model, int64_t vocab) : scale_(std::sqrt(static_cast<double>(d_model))) {
  lut = register_module("lut", torch::nn::Embedding(vocab, d_model));
}

torch::Tensor EmbeddingsImpl::forward(const torch::Tensor& ids) {
  return lut(ids) * scale_;  // [B,T,d]
}

namespace {

template <typename Layer>
std::shared_ptr<StackImpl> make_stack(const ModelConfig& c) {
  auto stack = std::make_shared<StackImpl>();
  stack->layers = stack->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) {
    stack->layers->push_back(Layer(c.d_model, c.num_heads, c.d_ff, c.dropout));
  }
  stack->norm = stack->register_module("norm", LayerNorm(c.d_model));
  return stack;
}

}  // namespace

TransformerImpl::TransformerImpl(const ModelConfig& c, int64_t tgt_vocab, MultiThreadMemory shared_cmn) {
  encoder = register_module("encoder", make_stack<EncoderLayer>(c));
  decoder = register_module("decoder", make_stack<DecoderLayer>(c));
  src_embed = register_module("src_embed", torch::nn::ModuleList(PositionalEncoding(c.d_model, c.dropout)));
  tgt_embed = register_module("tgt_embed", torch::nn::ModuleList(Embeddings(c.d_model, tgt_vocab),
                                                                 PositionalEncoding(c.d_model, c.dropout)));
  cmn = register_module("cmn", std::move(shared_cmn));
}

torch::Tensor subsequent_mask(int64_t size, const torch::Device& device) {
  return torch::ones({1, size, size}, torch::TensorOptions().dtype(torch::kBool).device(device)).tril();
}

BaseCMNImpl::BaseCMNImpl(const ModelConfig& c) : config_(c) {
  TORCH_CHECK(c.vocab_size > 0, "BaseCMN needs vocab_size > 0 (set it from the tokenizer or the checkpoint)");
  tgt_vocab_ = c.vocab_size + 1;
  att_embed = register_module("att_embed", torch::nn::Sequential(Linear(c.d_vf, c.d_model),
                                                                 torch::nn::ReLU(),
                                                                 torch::nn::Dropout(c.drop_prob_lm)));
  cmn = register_module("cmn", MultiThreadMemory(c.num_heads, c.d_model, c.topk));
  model = register_module("model", Transformer(c, tgt_vocab_, cmn));
  logit = register_module("logit", Linear(c.d_model, tgt_vocab_));
  memory_matrix = register_parameter("memory_matrix", torch::empty({c.cmm_size, c.cmm_dim}));

  // Initialisation as the reference: xavier_uniform_ on every >1-D parameter of the transformer (which
  // includes the shared memory module), normal(0, 1/cmm_dim) on the memory matrix; the rest keeps
  // PyTorch's defaults (LibTorch's Linear/Embedding defaults are the same).
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) {
    if (p.dim() > 1) torch::nn::init::xavier_uniform_(p);
  }
  torch::nn::init::normal_(memory_matrix, 0.0, 1.0 / static_cast<double>(c.cmm_dim));
}

MemoryKeysValues BaseCMNImpl::memory_keys_values() {
  const bool cacheable = !is_training() && !torch::GradMode::is_enabled();
  if (!cacheable) return cmn->project_memory(memory_matrix);
  if (!cached_memory_) {
    cached_memory_ = cmn->project_memory(memory_matrix);
    if (cached_memory_->keys.device().is_cpu() && cached_memory_->keys.scalar_type() == torch::kFloat) {
      cached_memory_->keys_packed = fused::pack_memory_keys(cached_memory_->keys);  // [h,M/32,dk,32]
    }
  }
  return *cached_memory_;
}

torch::Tensor BaseCMNImpl::encode(const torch::Tensor& att_feats) {
  auto x = att_embed->forward(att_feats);                      // [B,S,d]
  x = x + cmn(x, memory_keys_values());                        // memory response to the visual patches
  x = model->src_position().forward(x);                        // + positions (src_embed)
  for (size_t i = 0; i < model->encoder->layers->size(); ++i) {
    x = model->encoder_layer(i).forward(x, /*mask=*/{});       // all patches valid: the mask is all ones
  }
  return model->encoder->norm(x);                              // [B,S,d]
}

torch::Tensor BaseCMNImpl::embed_tokens(const torch::Tensor& ids, int64_t offset) {
  auto x = model->tgt_tokens().forward(ids);                   // [B,T,d]  lut * sqrt(d)
  x = model->tgt_position().forward(x, offset);                // + positions
  return x + cmn(x, memory_keys_values());                     // + memory response, per token
}

torch::Tensor BaseCMNImpl::cross_attention(const torch::Tensor& memory, const torch::Tensor& input) {
  TORCH_CHECK(!is_training(), "cross_attention: eval mode only");
  auto key_ok = input > 0;                                     // [B,T] padding after a study's end is not a key
  key_ok.select(1, 0).fill_(true);                             // bos = 0
  auto tgt_mask = key_ok.unsqueeze(-2) & subsequent_mask(input.size(1), input.device());  // [B,T,T]
  auto x = embed_tokens(input, 0);                             // [B,T,d]
  std::vector<torch::Tensor> maps;
  for (size_t i = 0; i < model->decoder->layers->size(); ++i) {
    auto& layer = model->decoder_layer(i);
    x = layer.forward(x, memory, /*src_mask=*/{}, tgt_mask);
    maps.push_back(layer.src_attn->last_attention.mean(1));   // [B,h,T,S] -> [B,T,S]
  }
  return torch::stack(maps);                                   // [layers,B,T,S]
}

torch::Tensor BaseCMNImpl::forward(const torch::Tensor& att_feats, const torch::Tensor& seq) {
  return teacher_forced(encode(att_feats), seq);               // memory [B,S,d]
}

torch::Tensor BaseCMNImpl::teacher_forced(const torch::Tensor& memory, const torch::Tensor& seq) {
  auto input = seq.narrow(1, 0, seq.size(1) - 1);              // [B,T]   T = L-1
  // Padding mask on keys (position 0 is bos = 0, always valid) AND the causal mask.
  auto key_ok = input > 0;
  key_ok.select(1, 0).fill_(true);
  auto tgt_mask = key_ok.unsqueeze(-2) & subsequent_mask(input.size(1), input.device());  // [B,T,T]
  auto x = embed_tokens(input, 0);                             // [B,T,d]
  for (size_t i = 0; i < model->decoder->layers->size(); ++i) {
    x = model->decoder_layer(i).forward(x, memory, /*src_mask=*/{}, tgt_mask);
  }
  x = model->decoder->norm(x);
  return torch::log_softmax(logit(x), -1);                     // [B,T,V+1]
}

DecoderCache BaseCMNImpl::start_decoding(const torch::Tensor& memory, bool keep_attention) {
  DecoderCache cache;
  cache.studies = memory.size(0);
  cache.keep_attention = keep_attention;
  for (size_t i = 0; i < model->decoder->layers->size(); ++i) {
    auto& attn = *model->decoder_layer(i).src_attn;
    cache.cross_k.push_back(attn.split_heads(attn.linears.k(memory)));  // [B,h,S,dk]
    cache.cross_v.push_back(attn.split_heads(attn.linears.v(memory)));  // [B,h,S,dk]
    cache.self_k.emplace_back();
    cache.self_v.emplace_back();
    cache.spare_k.emplace_back();
    cache.spare_v.emplace_back();
  }
  if (keep_attention) cache.cross_attention.resize(cache.cross_k.size());
  return cache;
}

torch::Tensor BaseCMNImpl::decode_step(const torch::Tensor& tokens, DecoderCache& cache) {
  return decode_step(tokens, std::vector<DecoderCache*>{&cache});
}

namespace {

// Runs `each(cache, first row, rows)` for every cache and puts the [rows, ...] results one after another.
template <typename Each>
torch::Tensor per_cache(const std::vector<DecoderCache*>& caches, Each&& each) {
  if (caches.size() == 1) return each(*caches.front(), int64_t{0}, caches.front()->studies * caches.front()->rows_per_study);
  std::vector<torch::Tensor> parts;
  parts.reserve(caches.size());
  int64_t first = 0;
  for (DecoderCache* c : caches) {
    const int64_t rows = c->studies * c->rows_per_study;
    parts.push_back(each(*c, first, rows));
    first += rows;
  }
  return torch::cat(parts);
}

}  // namespace

torch::Tensor BaseCMNImpl::decode_step(const torch::Tensor& tokens, const std::vector<DecoderCache*>& caches) {
  TORCH_CHECK(!caches.empty(), "decode_step: no decoder cache");
  const int64_t n = tokens.size(0);
  int64_t rows_in_caches = 0;
  for (const DecoderCache* c : caches) rows_in_caches += c->studies * c->rows_per_study;
  TORCH_CHECK(n == rows_in_caches, "decode_step: ", n, " tokens for ", rows_in_caches, " rows of ", caches.size(),
              " decoder caches");
  const int64_t d = config_.d_model, h = config_.num_heads, dk = d / h;
  const double scale = std::sqrt(static_cast<double>(dk));

  // Only the new token: its embedding, its position (each cache's own length) and memory response (the
  // reference recomputes all t).
  auto x = model->tgt_tokens().forward(tokens.view({n, 1}));                 // [N,1,d]  lut * sqrt(d)
  x = per_cache(caches, [&](DecoderCache& c, int64_t first, int64_t rows) {
    return model->tgt_position().forward(x.narrow(0, first, rows), c.length);  // [rows,1,d]
  });
  x = x + cmn(x, memory_keys_values());                                       // [N,1,d]

  for (size_t l = 0; l < model->decoder->layers->size(); ++l) {
    auto& layer = model->decoder_layer(l);
    {  // self-attention over the cached positions plus this one
      auto& attn = *layer.self_attn;
      auto y = layer.sub(0)->norm(x);
      auto q = attn.split_heads(attn.linears.q(y));             // [N,h,1,dk]
      auto k = attn.split_heads(attn.linears.k(y));             // [N,h,1,dk]
      auto v = attn.split_heads(attn.linears.v(y));             // [N,h,1,dk]
      auto o = per_cache(caches, [&](DecoderCache& c, int64_t first, int64_t rows) {
        const int64_t t = c.length;
        auto& ck = c.self_k[l];
        auto& cv = c.self_v[l];
        if (!ck.defined() || ck.size(2) <= t) {  // first step, or full: double the capacity
          const int64_t capacity = std::max<int64_t>(64, 2 * (t + 1));
          auto grow = [&](const torch::Tensor& old) {
            auto fresh = torch::empty({rows, h, capacity, dk}, k.options());
            if (old.defined() && t > 0) fresh.narrow(2, 0, t).copy_(old.narrow(2, 0, t));
            return fresh;
          };
          ck = grow(ck);
          cv = grow(cv);
          c.spare_k[l] = torch::Tensor();  // re-made at the new capacity when next needed
          c.spare_v[l] = torch::Tensor();
        }
        ck.narrow(2, t, 1).copy_(k.narrow(0, first, rows));
        cv.narrow(2, t, 1).copy_(v.narrow(0, first, rows));
        const auto q_rows = q.narrow(0, first, rows);           // [rows,h,1,dk]
        // Fused (CPU fp32): per row and head, scores, softmax and sum in one pass, heads side by side [rows,d].
        if (auto fused_o = fused::self_attention(q_rows, ck, cv, t + 1, h); fused_o.defined()) {
          return fused_o.view({rows, 1, d});
        }
        auto keys = ck.narrow(2, 0, t + 1);                     // [rows,h,t+1,dk] (a view)
        auto values = cv.narrow(2, 0, t + 1);
        auto p = torch::softmax(torch::matmul(q_rows, keys.transpose(-2, -1)) / scale, -1);  // [rows,h,1,t+1]
        return torch::matmul(p, values).transpose(1, 2).reshape({rows, 1, d});  // [rows,1,d]
      });
      x = x + attn.linears.out(o);                              // [N,1,d]
    }
    {  // cross-attention: the r rows of a study share its image keys/values, so they go in as r queries
      auto& attn = *layer.src_attn;
      auto y = layer.sub(1)->norm(x);
      auto q_all = attn.linears.q(y);                           // [N,1,d]
      auto o = per_cache(caches, [&](DecoderCache& c, int64_t first, int64_t rows) {
        const int64_t b = c.studies, r = c.rows_per_study;
        const auto q_rows = q_all.narrow(0, first, rows);       // [rows,1,d]
        torch::Tensor kept;
        if (auto fused_o = fused::cross_attention(q_rows, c.cross_k[l], c.cross_v[l], r,
                                                  c.keep_attention ? &kept : nullptr);
            fused_o.defined()) {
          if (c.keep_attention) c.cross_attention[l] = kept;  // [rows,h,S]
          return fused_o.view({rows, 1, d});
        }
        auto q = q_rows.view({b, r, h, dk}).permute({0, 2, 1, 3});  // [B,h,r,dk]
        auto p = torch::softmax(torch::matmul(q, c.cross_k[l].transpose(-2, -1)) / scale, -1);  // [B,h,r,S]
        if (c.keep_attention) c.cross_attention[l] = p.permute({0, 2, 1, 3}).reshape({rows, h, -1});
        return torch::matmul(p, c.cross_v[l]).permute({0, 2, 1, 3}).reshape({rows, 1, d});  // [rows,1,d]
      });
      x = x + attn.linears.out(o);                              // [N,1,d]
    }
    {  // feed-forward
      x = x + layer.feed_forward(layer.sub(2)->norm(x));
    }
  }
  x = model->decoder->norm(x);                                  // [N,1,d]
  for (DecoderCache* c : caches) ++c->length;
  return torch::log_softmax(logit(x.squeeze(1)), -1);           // [N,V+1]
}

void BaseCMNImpl::select_rows(DecoderCache& cache, const torch::Tensor& rows, int64_t rows_per_study) {
  TORCH_CHECK(rows.size(0) == cache.studies * rows_per_study, "select_rows: ", rows.size(0), " rows for ",
              cache.studies, " studies x ", rows_per_study);
  const int64_t t = cache.length;
  // Beams often keep their places: then there is nothing to move.
  const bool identity = rows.size(0) == cache.studies * cache.rows_per_study &&
                        rows.equal(torch::arange(rows.size(0), rows.options()));
  if (!identity && t > 0) {
    auto rows_cpu = rows.to(torch::kCPU).contiguous();
    const auto* src_row = rows_cpu.data_ptr<int64_t>();
    const int64_t n_new = rows_cpu.size(0);
    for (size_t l = 0; l < cache.self_k.size(); ++l) {
      for (auto [buf, spare] : {std::pair{&cache.self_k[l], &cache.spare_k[l]},
                                std::pair{&cache.self_v[l], &cache.spare_v[l]}}) {
        if (!buf->defined()) continue;
        // One copy per kept row of its filled positions [h,t,dk] into the spare buffer, then swap: the
        // cost is one pass over the cache, not an index_select plus a copy back.
        if (!spare->defined() || spare->size(0) != n_new || spare->size(2) != buf->size(2)) {
          *spare = torch::empty({n_new, buf->size(1), buf->size(2), buf->size(3)}, buf->options());
        }
        for (int64_t i = 0; i < n_new; ++i) {
          (*spare)[i].narrow(1, 0, t).copy_((*buf)[src_row[i]].narrow(1, 0, t));
        }
        std::swap(*buf, *spare);
      }
    }
  }
  for (auto& a : cache.cross_attention) {
    if (a.defined()) a = a.index_select(0, rows);
  }
  cache.rows_per_study = rows_per_study;
}

}  // namespace cmn::model
