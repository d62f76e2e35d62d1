#pragma once
// BaseCMN (modules/base_cmn.py): patch embedding, cross-modal memory, 3-layer encoder-decoder, logit layer.
// Registered names follow the reference's state_dict under "encoder_decoder.":
//   att_embed.0 (Linear d_vf->d), cmn.linears.* (== model.cmn.linears.*, one shared module),
//   model.encoder.layers.*, model.encoder.norm, model.decoder.layers.*, model.decoder.norm,
//   model.src_embed.0.pe, model.tgt_embed.0.lut, model.tgt_embed.1.pe, logit, memory_matrix.
#include <cstdint>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/config.h"
#include "cmn/model/layers.h"

namespace cmn::model {

class EmbeddingsImpl : public torch::nn::Module {
 public:
  EmbeddingsImpl(int64_t d_model, int64_t vocab);
  torch::Tensor forward(const torch::Tensor& ids);  // [B,T] -> [B,T,d], lut(ids) * sqrt(d_model)
  torch::nn::Embedding lut{nullptr};
 private:
  double scale_;
};
TORCH_MODULE(Embeddings);

class StackImpl : public torch::nn::Module {  // Encoder / Decoder: "layers.i" + final "norm"
 public:
  torch::nn::ModuleList layers{nullptr};
  LayerNorm norm{nullptr};
};

class TransformerImpl : public torch::nn::Module {  // the reference's Transformer, "encoder_decoder.model"
 public:
  TransformerImpl(const ModelConfig& config, int64_t tgt_vocab, MultiThreadMemory cmn);
  std::shared_ptr<StackImpl> encoder, decoder;
  torch::nn::ModuleList src_embed{nullptr};  // [PositionalEncoding]
  torch::nn::ModuleList tgt_embed{nullptr};  // [Embeddings, PositionalEncoding]
  MultiThreadMemory cmn{nullptr};            // the same module as BaseCMN::cmn

  PositionalEncodingImpl& src_position() { return *src_embed->ptr<PositionalEncodingImpl>(0); }
  EmbeddingsImpl& tgt_tokens() { return *tgt_embed->ptr<EmbeddingsImpl>(0); }
  PositionalEncodingImpl& tgt_position() { return *tgt_embed->ptr<PositionalEncodingImpl>(1); }
  EncoderLayerImpl& encoder_layer(size_t i) { return *encoder->layers->ptr<EncoderLayerImpl>(i); }
  DecoderLayerImpl& decoder_layer(size_t i) { return *decoder->layers->ptr<DecoderLayerImpl>(i); }
};
TORCH_MODULE(Transformer);

// Per-request incremental decoding state. The cross-attention keys/values of the encoded image are
// computed once per study; the self-attention keys/values grow by one position per step.
struct DecoderCache {
  std::vector<torch::Tensor> cross_k, cross_v;  // per layer [B,h,S,dk], one per study (shared by its rows)
  // Per layer [N,h,capacity,dk], one row per beam; positions [0, length) are filled. Preallocated and
  // written in place (capacity doubles when full) so a step costs no O(t) concatenation.
  std::vector<torch::Tensor> self_k, self_v;
  std::vector<torch::Tensor> spare_k, spare_v;  // same shapes: beam reordering copies into these, then swaps
  int64_t studies = 0;                           // B
  int64_t rows_per_study = 1;                    // N / B (beams per study)
  int64_t length = 0;                            // t: tokens already consumed
  bool keep_attention = false;                   // keep the last step's cross-attention (attention maps)
  std::vector<torch::Tensor> cross_attention;    // per layer [N,h,S] of the last step, when kept
};

class BaseCMNImpl : public torch::nn::Module {
 public:
  explicit BaseCMNImpl(const ModelConfig& config);

  // --- encoder side ---
  // att_feats [B,S,d_vf] -> memory [B,S,d]: att_embed, + memory response, + positions, encoder layers, norm.
  torch::Tensor encode(const torch::Tensor& att_feats);

  // --- teacher forcing (training, evaluation of the likelihood) ---
  // att_feats [B,S,d_vf], seq [B,L] (0, w1..wn, 0, pad 0...) -> log-probs [B,L-1,V+1] of seq[:,1:]
  torch::Tensor forward(const torch::Tensor& att_feats, const torch::Tensor& seq);
  // The decoder half of forward: memory [B,S,d] (encode's), seq [B,L] -> log-probs [B,L-1,V+1] (alignment
  // training reads the memory too; scoring a given report reuses a pass's memory).
  torch::Tensor teacher_forced(const torch::Tensor& memory, const torch::Tensor& seq);
  // The decoder's cross-attention (src_attn, heads averaged) when it reads `input` [B,T] (bos, then the tokens
  // chosen; 0 after a study's end is padding) over `memory` [B,S,d], all positions in one causal pass, no logits:
  // -> [layers,B,T,S]. Eval mode only (attention dropout off, as in decoding).
  torch::Tensor cross_attention(const torch::Tensor& memory, const torch::Tensor& input);

  // --- incremental decoding ---
  DecoderCache start_decoding(const torch::Tensor& memory, bool keep_attention = false);
  // tokens [N] (N = B * rows_per_study) -> log-probs [N,V+1] of the next token
  torch::Tensor decode_step(const torch::Tensor& tokens, DecoderCache& cache);
  // One step over several caches side by side, each at its own length and with its own rows (in-flight
  // batching: studies that joined at different steps). tokens [N] = each cache's rows in turn
  // (N = sum of studies * rows_per_study) -> log-probs [N,V+1]. Row-wise work (embeddings, projections, memory
  // reads, feed-forward, logits) runs once over all N rows; attention runs per cache over its own keys.
  torch::Tensor decode_step(const torch::Tensor& tokens, const std::vector<DecoderCache*>& caches);
  // Keeps rows `rows` [N'] (indices into the current rows, grouped by study, N' = B * rows_per_study).
  static void select_rows(DecoderCache& cache, const torch::Tensor& rows, int64_t rows_per_study);

  // The memory's key/value projections, cached per loaded model in inference (no grad, eval mode) and
  // recomputed every call in training. Call reset_inference_cache() after changing weights.
  MemoryKeysValues memory_keys_values();
  void reset_inference_cache() { cached_memory_.reset(); }

  const ModelConfig& config() const { return config_; }
  int64_t vocab_size_with_pad() const { return tgt_vocab_; }  // V+1 (id 0 included)

  torch::nn::Sequential att_embed{nullptr};  // 0 Linear(d_vf,d), 1 ReLU, 2 Dropout(drop_prob_lm)
  MultiThreadMemory cmn{nullptr};
  Transformer model{nullptr};
  Linear logit{nullptr};
  torch::Tensor memory_matrix;               // [cmm_size, cmm_dim]

 private:
  // [B,T] token ids -> [B,T,d] embeddings + positions (from `offset`) + their memory response
  torch::Tensor embed_tokens(const torch::Tensor& ids, int64_t offset);
  ModelConfig config_;
  int64_t tgt_vocab_;
  std::optional<MemoryKeysValues> cached_memory_;
};
TORCH_MODULE(BaseCMN);

// The reference's subsequent_mask: [1,T,T], true on and below the diagonal.
torch::Tensor subsequent_mask(int64_t size, const torch::Device& device);

}  // namespace cmn::model
