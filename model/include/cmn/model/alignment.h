#pragma once
// Image-report alignment (issue 14): a BLIP-2-style Q-Former head beside R2GenCMN's encoder-decoder.
//
//   image side : `align_queries` learned queries [Q,d] attend to each other and cross-attend to the encoder memory
//                [B,S,d] (the patch embeddings after att_embed, the memory response and the encoder: what the
//                decoder itself reads), `align_layers` layers -> query outputs [B,Q,d]
//   text side  : a learned [CLS] + the report's tokens through the DECODER's token embedding and positions
//                (shared weights, nothing duplicated), bidirectional self-attention, `align_layers` layers
//                -> [B,1+T,d]
//   ITC        : vision_proj / text_proj to a shared `align_dim` space, L2-normalised; image-text similarity is
//                the best of the Q query similarities (BLIP-2), over a learned temperature `temp`
//   ITM        : the text (its encoder output) cross-attends to the query outputs, `align_layers` fusion layers,
//                its [CLS] -> itm_head -> 2 logits (mismatched, matched)
// ITG, BLIP-2's third loss, is the report generation the decoder already trains.
//
// Registered under "alignment." in R2GenCMN only when config.align_queries > 0: a checkpoint or bundle without it
// loads as before, and then no consistency is computed (absent, never faked).
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/config.h"
#include "cmn/model/encoder_decoder.h"
#include "cmn/model/layers.h"

namespace cmn::model {

class AlignmentImpl : public torch::nn::Module {
 public:
  explicit AlignmentImpl(const ModelConfig& config);

  // memory [B,S,d] -> query outputs [B,Q,d]
  torch::Tensor image_queries(const torch::Tensor& memory);
  // ids [B,T] report tokens (no bos; 0 = end / padding) -> ([B,1+T,d] text states, [B,1+T] key mask, [CLS] true)
  std::pair<torch::Tensor, torch::Tensor> encode_text(const torch::Tensor& ids, BaseCMNImpl& decoder_side);
  // query outputs [B,Q,d] -> [B,Q,e], L2-normalised
  torch::Tensor image_embedding(const torch::Tensor& queries);
  // text states [B,1+T,d] -> [B,e] ([CLS]), L2-normalised
  torch::Tensor text_embedding(const torch::Tensor& text);
  // image embeddings [B,Q,e], text embeddings [N,e] -> [B,N]: max over queries of the cosine (no temperature)
  static torch::Tensor similarity(const torch::Tensor& image_emb, const torch::Tensor& text_emb);
  // query outputs [B,Q,d], text states [B,1+T,d] + mask [B,1+T] (pairs row by row) -> [B,2] logits
  torch::Tensor itm_logits(const torch::Tensor& queries, const torch::Tensor& text, const torch::Tensor& text_mask);
  // The learned temperature, 1 / exp(logit_scale), kept in [0.001, 0.5] as BLIP-2 keeps its own. Learned in log
  // space (CLIP's logit_scale) so that an Adam step changes it by a factor, not by an amount: BLIP-2's raw `temp`
  // under cmn's learning rate (1e-3, ten times BLIP-2's) ran from 0.07 to the 0.5 clamp within the first epoch on
  // the phantoms, before the features could tell studies apart, and left ITC a near-uniform softmax to learn from.
  torch::Tensor temperature() const { return torch::exp(-logit_scale.clamp(std::log(2.0), std::log(1000.0))); }

  int64_t num_queries() const { return num_queries_; }

  // Retrieval index (config align_index_size > 0): embeddings [N,e] (text_embedding of each stored report) and the
  // reports' token ids [N,T] (0-padded). Replaces whatever index there was (shapes may change).
  void set_index(const torch::Tensor& embeddings, const torch::Tensor& tokens);
  bool has_index() const { return index_embeddings.defined() && index_embeddings.size(0) > 0; }
  torch::Tensor index_embeddings;    // buffer [N,e]
  torch::Tensor index_tokens;        // buffer [N,T] int64

  torch::Tensor query_tokens;        // [Q,d]  (BLIP-2: query_tokens)
  torch::nn::ModuleList image_layers{nullptr};  // DecoderLayer: self-attention of the queries, cross-attention
  LayerNorm image_norm{nullptr};
  torch::Tensor cls_token;           // [1,d]
  torch::nn::ModuleList text_layers{nullptr};   // EncoderLayer, bidirectional
  LayerNorm text_norm{nullptr};
  Linear vision_proj{nullptr}, text_proj{nullptr};  // d -> align_dim
  torch::nn::ModuleList fusion_layers{nullptr}; // DecoderLayer: text over the query outputs
  LayerNorm fusion_norm{nullptr};
  Linear itm_head{nullptr};          // d -> 2
  torch::Tensor logit_scale;         // [] log(1 / temperature), initial log(1 / 0.07) (BLIP-2's initial temp)

 private:
  int64_t num_queries_;
};
TORCH_MODULE(Alignment);

struct AlignmentLosses {
  torch::Tensor itc;       // [] image-text contrastive, both directions averaged
  torch::Tensor itm;       // [] binary matching over positives and mined hard negatives
  double itc_accuracy = 0; // share of images whose most similar in-batch report is theirs (or an identical one)
};

// ITC + ITM on a training batch: memory [B,S,d] (encoder output, with gradient), targets [B,L] as the trainer
// feeds the decoder (0, w1..wn, 0, pad 0...). In-batch negatives; studies whose reports are token-for-token
// identical, or marked in `same_findings` ([B,B] bool, optional: e.g. equal labeler findings), count as positives
// of each other (ITC targets spread over them; never mined as ITM negatives). Hard negatives as BLIP-2: for each
// image a report drawn from softmax(similarity) over the other ones, and for each report an image likewise
// (torch's global generator: seeded runs repeat). B >= 2.
AlignmentLosses alignment_losses(AlignmentImpl& align, BaseCMNImpl& decoder_side, const torch::Tensor& memory,
                                 const torch::Tensor& targets, const torch::Tensor& same_findings = {});

// BLIP-2's hard negatives for ITM, given the ITC logits [B,B] (image i vs report j) and `same` [B,B] (bool,
// symmetric: positives of each other): for each study with another report in the batch, a report drawn with
// weight softmax(logits[i]) over the others, and an image drawn likewise from softmax(logits[:,i]).
struct HardNegatives {
  torch::Tensor rows;    // [M] studies that got negatives (those with a non-identical report in the batch)
  torch::Tensor texts;   // [M] the report mined for image rows[m]
  torch::Tensor images;  // [M] the image mined for report rows[m]
};
HardNegatives mine_hard_negatives(const torch::Tensor& logits, const torch::Tensor& same);

// ITM probability that each report matches its study: memory [B,S,d], reports[b] = token ids (a final 0 and
// anything after it are ignored) -> B values in [0,1]. An empty report scores too (its [CLS] alone).
std::vector<double> consistency(AlignmentImpl& align, BaseCMNImpl& decoder_side, const torch::Tensor& memory,
                                const std::vector<std::vector<int64_t>>& reports);

// Text embeddings [N,e] of reports [N,T] (0-padded ids, no bos), `batch` at a time, without gradient.
torch::Tensor embed_reports(AlignmentImpl& align, BaseCMNImpl& decoder_side, const torch::Tensor& ids, int64_t batch = 256);

struct SimilarReport {
  std::vector<int64_t> ids;  // the stored report's token ids
  double similarity = 0;     // ITC similarity (cosine of the best query), before the temperature
};
// The k stored reports most similar to each study (memory [B,S,d]), best first; k is capped at the index size.
std::vector<std::vector<SimilarReport>> similar_reports(AlignmentImpl& align, const torch::Tensor& memory, int64_t k);

// reports[b] -> [B,T] ids (0-padded to the longest, cut at the first 0) on `device`.
torch::Tensor pad_reports(const std::vector<std::vector<int64_t>>& reports, const torch::Device& device);

}  // namespace cmn::model
