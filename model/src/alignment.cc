#include "cmn/model/alignment.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cmn::model {

namespace {
torch::nn::ModuleList decoder_layers(const ModelConfig& c) {
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < c.align_layers; ++i) list->push_back(DecoderLayer(c.d_model, c.num_heads, c.d_ff, c.dropout));
  return list;
}
}  // namespace

AlignmentImpl::AlignmentImpl(const ModelConfig& c) : num_queries_(c.align_queries) {
  TORCH_CHECK(c.align_queries > 0, "AlignmentImpl needs align_queries > 0");
  // BLIP-2 draws its query tokens from N(0, 0.02); the [CLS] token likewise.
  query_tokens = register_parameter("query_tokens", torch::randn({c.align_queries, c.d_model}) * 0.02);
  image_layers = register_module("image_layers", decoder_layers(c));
  image_norm = register_module("image_norm", LayerNorm(c.d_model));
  cls_token = register_parameter("cls_token", torch::randn({1, c.d_model}) * 0.02);
  torch::nn::ModuleList text;
  for (int64_t i = 0; i < c.align_layers; ++i) text->push_back(EncoderLayer(c.d_model, c.num_heads, c.d_ff, c.dropout));
  text_layers = register_module("text_layers", text);
  text_norm = register_module("text_norm", LayerNorm(c.d_model));
  vision_proj = register_module("vision_proj", Linear(c.d_model, c.align_dim));
  text_proj = register_module("text_proj", Linear(c.d_model, c.align_dim));
  fusion_layers = register_module("fusion_layers", decoder_layers(c));
  fusion_norm = register_module("fusion_norm", LayerNorm(c.d_model));
  itm_head = register_module("itm_head", Linear(c.d_model, 2));
  logit_scale = register_parameter("logit_scale", torch::full({}, std::log(1.0 / 0.07)));
  if (c.align_index_size > 0) {  // shapes only: the values come from the checkpoint
    index_embeddings = register_buffer("index_embeddings", torch::zeros({c.align_index_size, c.align_dim}));
    index_tokens = register_buffer("index_tokens", torch::zeros({c.align_index_size, c.align_index_length}, torch::kLong));
  }
}

void AlignmentImpl::set_index(const torch::Tensor& embeddings, const torch::Tensor& tokens) {
  TORCH_CHECK(embeddings.dim() == 2 && tokens.dim() == 2 && embeddings.size(0) == tokens.size(0),
              "set_index: embeddings [N,e] and tokens [N,T], got ", embeddings.sizes(), " and ", tokens.sizes());
  torch::NoGradGuard no_grad;
  if (index_embeddings.defined()) {
    // The registered buffers share their TensorImpl with these members: set_ swaps storage and shape in place.
    index_embeddings.set_(embeddings.detach().clone());
    index_tokens.set_(tokens.detach().to(torch::kLong).clone());
  } else {
    index_embeddings = register_buffer("index_embeddings", embeddings.detach().clone());
    index_tokens = register_buffer("index_tokens", tokens.detach().to(torch::kLong).clone());
  }
}

torch::Tensor embed_reports(AlignmentImpl& align, BaseCMNImpl& dec, const torch::Tensor& ids, int64_t batch) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t first = 0; first < ids.size(0); first += batch) {
    const auto chunk = ids.narrow(0, first, std::min(batch, ids.size(0) - first));  // [b,T]
    out.push_back(align.text_embedding(align.encode_text(chunk, dec).first));          // [b,e]
  }
  return out.empty() ? torch::zeros({0, align.text_proj->weight.size(0)}) : torch::cat(out, 0);
}

std::vector<std::vector<SimilarReport>> similar_reports(AlignmentImpl& align, const torch::Tensor& memory, int64_t k) {
  TORCH_CHECK(align.has_index(), "this model has no retrieval index (cmn-train align.retrieval_index: true)");
  const auto image = align.image_embedding(align.image_queries(memory));                  // [B,Q,e]
  const auto sim = AlignmentImpl::similarity(image, align.index_embeddings.to(image.dtype()));  // [B,N]
  const auto [values, rows] = sim.to(torch::kFloat).topk(std::min<int64_t>(k, sim.size(1)), 1);  // [B,k]
  const auto v = values.to(torch::kCPU), r = rows.to(torch::kCPU);
  const auto tokens = align.index_tokens.to(torch::kCPU);
  std::vector<std::vector<SimilarReport>> out(static_cast<size_t>(memory.size(0)));
  for (int64_t b = 0; b < v.size(0); ++b) {
    for (int64_t j = 0; j < v.size(1); ++j) {
      SimilarReport s;
      const auto row = tokens[r[b][j].item<int64_t>()];
      for (int64_t t = 0; t < row.size(0) && row[t].item<int64_t>() != 0; ++t) s.ids.push_back(row[t].item<int64_t>());
      s.similarity = v[b][j].item<double>();
      out[static_cast<size_t>(b)].push_back(std::move(s));
    }
  }
  return out;
}

torch::Tensor AlignmentImpl::image_queries(const torch::Tensor& memory) {
  auto x = query_tokens.unsqueeze(0).expand({memory.size(0), -1, -1});  // [B,Q,d]
  for (size_t i = 0; i < image_layers->size(); ++i) {
    // queries attend to each other (no mask) and to every patch (no mask)
    x = image_layers->ptr<DecoderLayerImpl>(i)->forward(x, memory, /*src_mask=*/{}, /*tgt_mask=*/{});
  }
  return image_norm(x);  // [B,Q,d]
}

std::pair<torch::Tensor, torch::Tensor> AlignmentImpl::encode_text(const torch::Tensor& ids, BaseCMNImpl& dec) {
  const auto b = ids.size(0);
  // The decoder's own token embedding and positions (lut * sqrt(d) + pe): one vocabulary, trained by both losses.
  auto tokens = dec.model->tgt_position().forward(dec.model->tgt_tokens().forward(ids), /*offset=*/0);  // [B,T,d]
  auto x = torch::cat({cls_token.unsqueeze(0).expand({b, -1, -1}), tokens}, 1);                    // [B,1+T,d]
  auto mask = torch::cat({torch::ones({b, 1}, ids.options().dtype(torch::kBool)), ids > 0}, 1);      // [B,1+T]
  const auto key_mask = mask.unsqueeze(1);                                                          // [B,1,1+T]
  for (size_t i = 0; i < text_layers->size(); ++i) x = text_layers->ptr<EncoderLayerImpl>(i)->forward(x, key_mask);
  return {text_norm(x), mask};
}

torch::Tensor AlignmentImpl::image_embedding(const torch::Tensor& queries) {
  return torch::nn::functional::normalize(vision_proj(queries), torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

torch::Tensor AlignmentImpl::text_embedding(const torch::Tensor& text) {
  return torch::nn::functional::normalize(text_proj(text.select(1, 0)),  // [CLS] [B,d] -> [B,e]
                                          torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

torch::Tensor AlignmentImpl::similarity(const torch::Tensor& image_emb, const torch::Tensor& text_emb) {
  // [B,Q,e] x [e,N] -> [B,Q,N], best query per pair -> [B,N]
  return std::get<0>(torch::matmul(image_emb, text_emb.t()).max(1));
}

torch::Tensor AlignmentImpl::itm_logits(const torch::Tensor& queries, const torch::Tensor& text,
                                        const torch::Tensor& text_mask) {
  auto x = text;                                   // [B,1+T,d]
  const auto key_mask = text_mask.unsqueeze(1);    // [B,1,1+T]: padding is no key of the text's self-attention
  for (size_t i = 0; i < fusion_layers->size(); ++i) {
    x = fusion_layers->ptr<DecoderLayerImpl>(i)->forward(x, queries, /*src_mask=*/{}, key_mask);
  }
  return itm_head(fusion_norm(x).select(1, 0));    // [CLS] [B,d] -> [B,2]
}

torch::Tensor pad_reports(const std::vector<std::vector<int64_t>>& reports, const torch::Device& device) {
  size_t longest = 1;  // at least one (padding) column: an empty report is [CLS] alone
  std::vector<size_t> lengths;
  for (const auto& r : reports) {
    const size_t n = static_cast<size_t>(std::find(r.begin(), r.end(), int64_t{0}) - r.begin());
    lengths.push_back(n);
    longest = std::max(longest, n);
  }
  auto ids = torch::zeros({static_cast<int64_t>(reports.size()), static_cast<int64_t>(longest)}, torch::kLong);
  auto a = ids.accessor<int64_t, 2>();
  for (size_t b = 0; b < reports.size(); ++b) {
    for (size_t t = 0; t < lengths[b]; ++t) a[static_cast<int64_t>(b)][static_cast<int64_t>(t)] = reports[b][t];
  }
  return ids.to(device);
}

HardNegatives mine_hard_negatives(const torch::Tensor& logits, const torch::Tensor& same) {
  torch::NoGradGuard no_grad;
  HardNegatives out;
  out.rows = (~same).any(1).nonzero().squeeze(1);                         // [M] studies with a candidate
  if (out.rows.numel() == 0) {                                            // every report identical: nothing to mine
    out.texts = out.images = out.rows;
    return out;
  }
  // softmax over the candidates alone (the others at -inf): an identical report that takes all the mass of a
  // plain softmax must not flatten what is left into underflow.
  const auto l = logits.detach().to(torch::kFloat);
  const auto w_i2t = torch::softmax(l.masked_fill(same, -std::numeric_limits<float>::infinity()), 1);      // [B,B]
  const auto w_t2i = torch::softmax(l.t().masked_fill(same, -std::numeric_limits<float>::infinity()), 1);  // [B,B]
  out.texts = torch::multinomial(w_i2t.index_select(0, out.rows), 1).squeeze(1);   // [M]
  out.images = torch::multinomial(w_t2i.index_select(0, out.rows), 1).squeeze(1);  // [M] (`same` is symmetric)
  return out;
}

AlignmentLosses alignment_losses(AlignmentImpl& align, BaseCMNImpl& dec, const torch::Tensor& memory,
                                 const torch::Tensor& targets, const torch::Tensor& same_findings) {
  const auto b = memory.size(0);
  TORCH_CHECK(b >= 2, "alignment losses need at least 2 studies per batch (in-batch negatives), got ", b);
  const auto ids = targets.narrow(1, 1, targets.size(1) - 1);             // [B,T] w1..wn, 0, pad
  const auto queries = align.image_queries(memory);                       // [B,Q,d]
  auto [text, mask] = align.encode_text(ids, dec);                        // [B,1+T,d], [B,1+T]
  const auto sim = AlignmentImpl::similarity(align.image_embedding(queries), align.text_embedding(text));  // [B,B]

  // Identical reports (the same tokens) are positives of each other: a normal study's report is often word for
  // word another's, and pushing them apart would teach the model to tell the images by noise. So are reports the
  // caller knows to state the same findings (`same_findings`): otherwise every rephrasing is a false negative, and
  // hard-negative mining picks exactly those (MedCLIP's point).
  auto same = (ids.unsqueeze(1) == ids.unsqueeze(0)).all(-1);             // [B,B] bool, diagonal true
  if (same_findings.defined()) same = same | same_findings.to(same.device(), torch::kBool);
  const auto targets_itc = same.to(sim.scalar_type()) / same.sum(1, /*keepdim=*/true).to(sim.scalar_type());
  const auto logits = sim / align.temperature();                          // [B,B] image i vs report j
  const auto i2t = -(torch::log_softmax(logits, 1) * targets_itc).sum(1).mean();
  const auto t2i = -(torch::log_softmax(logits.t(), 1) * targets_itc).sum(1).mean();  // same is symmetric

  AlignmentLosses out;
  out.itc = (i2t + t2i) / 2;
  {
    torch::NoGradGuard no_grad;
    const auto best = logits.argmax(1);                                   // [B]
    out.itc_accuracy = same.gather(1, best.unsqueeze(1)).to(torch::kFloat).mean().item<double>();
  }

  // ITM on the positives and BLIP-2's hard negatives.
  const auto mined = mine_hard_negatives(logits, same);
  std::vector<torch::Tensor> q{queries}, t{text}, m{mask};
  if (mined.rows.numel() > 0) {
    q.push_back(queries.index_select(0, mined.rows));    // image i with a mined report
    t.push_back(text.index_select(0, mined.texts));
    m.push_back(mask.index_select(0, mined.texts));
    q.push_back(queries.index_select(0, mined.images));  // report j with a mined image
    t.push_back(text.index_select(0, mined.rows));
    m.push_back(mask.index_select(0, mined.rows));
  }
  const auto itm = align.itm_logits(torch::cat(q, 0), torch::cat(t, 0), torch::cat(m, 0));  // [B+2M,2]
  auto labels = torch::zeros({itm.size(0)}, torch::TensorOptions().dtype(torch::kLong).device(itm.device()));
  labels.narrow(0, 0, b).fill_(1);
  out.itm = torch::nn::functional::cross_entropy(itm, labels);
  return out;
}

std::vector<double> consistency(AlignmentImpl& align, BaseCMNImpl& dec, const torch::Tensor& memory,
                                const std::vector<std::vector<int64_t>>& reports) {
  TORCH_CHECK(static_cast<int64_t>(reports.size()) == memory.size(0), "consistency: ", reports.size(),
              " reports for ", memory.size(0), " studies");
  if (reports.empty()) return {};
  const auto ids = pad_reports(reports, memory.device());                  // [B,T]
  auto [text, mask] = align.encode_text(ids, dec);
  const auto p = torch::softmax(align.itm_logits(align.image_queries(memory), text, mask).to(torch::kFloat), 1)
                     .select(1, 1).to(torch::kCPU).contiguous();             // [B] P(matched) (a strided view)
  return std::vector<double>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
}

}  // namespace cmn::model
